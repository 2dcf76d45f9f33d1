//! Kaniko's `--context` schemes: `tar://` (a file, gzip or plain, and stdin),
//! `https://`/`http://` tarballs, `git://` repositories, and `--dockerfile -`.
//! Each build's files are checked by the oracle against the same context
//! built from a directory.

mod common;

use common::files::{FileServer, GitServer, Node, Reply};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

const DOCKERFILE: &str = "FROM scratch\nCOPY . /ctx/\n";

/// A context with a nested file, an executable, a link and an ignored file.
fn sample_context(dir: &Path) {
    write_context(
        dir,
        &[
            ("Dockerfile", DOCKERFILE),
            ("a.txt", "alpha\n"),
            ("sub/deep/b.txt", "beta\n"),
            ("run.sh", "#!/bin/sh\necho hi\n"),
            ("secret.key", "not for the image\n"),
            (".dockerignore", "secret.key\n"),
        ],
    );
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a.txt", dir.join("link")).unwrap();
}

/// `tar` (GNU tar, not Kiln) packs `dir`'s contents; `flags` as `-czf`.
fn pack(dir: &Path, flags: &str, out: &Path) {
    let tar = require("tar", "apt-get install tar");
    run_ok(
        Command::new(tar).args([
            flags,
            out.to_str().unwrap(),
            "-C",
            dir.to_str().unwrap(),
            ".",
        ]),
        "tar",
    );
}

/// The sample context in `work/ctx`, built from the directory: the files every
/// other way of sending it must give, and the context as a gzip'd tarball.
fn reference(reg: &TestRegistry, work: &Path) -> (Vec<(String, Flat)>, std::path::PathBuf) {
    let ctx = work.join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    sample_context(&ctx);
    assert_ok(&build_with(&ctx, &format!("{}/ctx/dir:1", reg.host), &[]));
    let want = ctx_files(reg, "ctx/dir:1");
    let gz = work.join("ctx.tar.gz");
    pack(&ctx, "-czf", &gz);
    (want, gz)
}

/// The files under /ctx, with the times that differ between builds left out.
fn ctx_files(reg: &TestRegistry, repo_tag: &str) -> Vec<(String, Flat)> {
    pull(reg, repo_tag)
        .files
        .into_iter()
        .filter(|(k, _)| k.starts_with("ctx/"))
        .collect()
}

#[test]
fn tar_contexts_from_a_file_gzip_or_plain_and_from_stdin() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let (want, gz) = reference(&reg, work.path());
    let ctx = work.path().join("ctx");
    let names: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.contains(&"ctx/sub/deep/b.txt") && names.contains(&"ctx/link"));
    assert!(!names.contains(&"ctx/secret.key"), "{names:?}");

    let plain = work.path().join("ctx.tar");
    pack(&ctx, "-cf", &plain);
    for (tag, file) in [("gz", &gz), ("plain", &plain)] {
        let dest = format!("{}/ctx/{tag}:1", reg.host);
        let context = format!("tar://{}", file.display());
        assert_ok(&executor(&["--context", &context, "--destination", &dest]));
        assert_eq!(
            ctx_files(&reg, &format!("ctx/{tag}:1")),
            want,
            "tar://{tag}"
        );
    }

    // tar://stdin, as `kubectl run --stdin` feeds it; the scratch root (where
    // the context was unpacked) is gone afterwards.
    let scratch = work.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let dest = format!("{}/ctx/stdin:1", reg.host);
    let out = Command::new(env!("CARGO_BIN_EXE_executor"))
        .args(["--context", "tar://stdin", "--destination", &dest])
        .args(["--kaniko-dir", scratch.to_str().unwrap()])
        .stdin(std::fs::File::open(&gz).unwrap())
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(ctx_files(&reg, "ctx/stdin:1"), want, "tar://stdin");
    assert_eq!(leftovers(&scratch), Vec::<String>::new());

    // --context-sub-path inside a tarball.
    let outer = work.path().join("outer");
    std::fs::create_dir(&outer).unwrap();
    std::fs::rename(&ctx, outer.join("app")).unwrap();
    let nested = work.path().join("nested.tgz");
    pack(&outer, "-czf", &nested);
    let dest = format!("{}/ctx/sub:1", reg.host);
    let context = format!("tar://{}", nested.display());
    assert_ok(&executor(&[
        "--context",
        &context,
        "--context-sub-path",
        "app",
        "--destination",
        &dest,
    ]));
    assert_eq!(ctx_files(&reg, "ctx/sub:1"), want, "--context-sub-path");
}

#[test]
fn a_hostile_context_tarball_writes_nothing_outside_its_directory() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let python = require("python3", "apt-get install python3");
    let tarball = work.path().join("evil.tar");
    // `..` climbing out, an absolute name, and a link to / written through.
    let script = r#"
import io, sys, tarfile
t = tarfile.open(sys.argv[1], "w")
def add(name, data=b"x", **kw):
    i = tarfile.TarInfo(name)
    for k, v in kw.items(): setattr(i, k, v)
    if i.isreg(): i.size = len(data)
    t.addfile(i, io.BytesIO(data) if i.isreg() else None)
add("Dockerfile", b"FROM scratch\nCOPY . /ctx/\n")
add("../../escaped-dotdot")
add("/escaped-absolute")
add("up", type=tarfile.SYMTYPE, linkname="/")
add("up/escaped-through-link")
t.close()
"#;
    run_ok(
        Command::new(python).args(["-c", script, tarball.to_str().unwrap()]),
        "python tarfile",
    );
    let scratch = work.path().join("k/scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let dest = format!("{}/ctx/evil:1", reg.host);
    let context = format!("tar://{}", tarball.display());
    let out = executor(&[
        "--context",
        &context,
        "--destination",
        &dest,
        "--kaniko-dir",
        scratch.to_str().unwrap(),
    ]);
    assert_ok(&out);
    for name in ["escaped-dotdot", "escaped-absolute", "escaped-through-link"] {
        for dir in [work.path(), &work.path().join("k"), Path::new("/")] {
            assert!(!dir.join(name).exists(), "{name} in {}", dir.display());
        }
    }
    // Inside, as BuildKit's chroot would have put them.
    let files = pull(&reg, "ctx/evil:1").files;
    for name in [
        "ctx/escaped-dotdot",
        "ctx/escaped-absolute",
        "ctx/escaped-through-link",
    ] {
        assert!(files.contains_key(name), "{name}: {:?}", files.keys());
    }
}

#[test]
fn https_and_http_tarball_contexts() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let (want, gz) = reference(&reg, work.path());
    let server = FileServer::start(&[
        (
            "/ctx.tar.gz",
            Reply::File(std::fs::read(&gz).unwrap(), None),
        ),
        ("/gone.tar.gz", Reply::Status(404)),
    ]);
    let dest = format!("{}/ctx/url:1", reg.host);
    assert_ok(&executor(&[
        "--context",
        &server.url("/ctx.tar.gz"),
        "--destination",
        &dest,
    ]));
    assert_eq!(ctx_files(&reg, "ctx/url:1"), want);

    let dest = format!("{}/ctx/gone:1", reg.host);
    let out = executor(&[
        "--context",
        &server.url("/gone.tar.gz"),
        "--destination",
        &dest,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/gone.tar.gz") && err.contains("404"), "{err}");
    assert_nothing_pushed(&reg, "ctx/gone:1", "the context was not found");
}

#[test]
fn git_contexts_take_kanikos_ref_and_commit_syntax() {
    let reg = TestRegistry::start();
    let git = GitServer::start_with(&[("Dockerfile", DOCKERFILE)]);
    // Kaniko's git://HOST/PATH, fetched over plain HTTP as GIT_PULL_METHOD says.
    let repo = git.url.strip_prefix("http://").unwrap();
    let build = |context: &str, tag: &str, extra: &[&str]| {
        let dest = format!("{}/ctx/git:{tag}", reg.host);
        let out = Command::new(env!("CARGO_BIN_EXE_executor"))
            .args(["--context", context, "--destination", &dest])
            .args(extra)
            .env("GIT_PULL_METHOD", "http")
            .output()
            .unwrap();
        assert_ok(&out);
        pull(&reg, &format!("ctx/git:{tag}")).files
    };
    // The default branch's head has the second commit's b.txt.
    let head = build(&format!("git://{repo}"), "head", &[]);
    assert!(head.contains_key("ctx/b.txt") && head.contains_key("ctx/sub/deep/f"));
    assert_eq!(head["ctx/run.sh"].mode & 0o777, 0o755);
    assert_eq!(head["ctx/link"].link, "a.txt");
    // Kaniko's clone keeps .git, at the commit built.
    assert!(head.contains_key("ctx/.git/HEAD"), "{:?}", head.keys());
    // A tag by its full name, and a branch with the commit to check out.
    let tag = build(&format!("git://{repo}#refs/tags/v1"), "tag", &[]);
    assert!(tag.contains_key("ctx/a.txt") && !tag.contains_key("ctx/b.txt"));
    let commit = build(
        &format!("git://{repo}#refs/heads/main#{}", git.v1),
        "commit",
        &[],
    );
    assert!(!commit.contains_key("ctx/b.txt"));
    // --git branch=NAME picks the branch.
    let branch = build(&format!("git://{repo}"), "branch", &["--git", "branch=v1"]);
    assert!(!branch.contains_key("ctx/b.txt"));

    let dest = format!("{}/ctx/git:bad", reg.host);
    let out = Command::new(env!("CARGO_BIN_EXE_executor"))
        .args([
            "--context",
            &format!("git://{repo}#nosuch"),
            "--destination",
            &dest,
        ])
        .env("GIT_PULL_METHOD", "http")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("\"nosuch\"") && err.contains("r.git"), "{err}");
    let out = executor(&[
        "--context",
        "git://h/r",
        "--git",
        "recurse-submodules=true",
        "--no-push",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--git recurse-submodules=true: submodules"),
        "{err}"
    );
}

#[test]
fn a_dockerfile_from_stdin_and_refused_contexts() {
    let reg = TestRegistry::start();
    let ctx = tempfile::tempdir().unwrap();
    write_context(ctx.path(), &[("a.txt", "alpha\n")]);
    let dest = format!("{}/ctx/stdin-df:1", reg.host);
    let mut child = Command::new(env!("CARGO_BIN_EXE_executor"))
        .args(["--context", ctx.path().to_str().unwrap()])
        .args(["--dockerfile", "-", "--destination", &dest])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"FROM scratch\nCOPY a.txt /from-stdin.txt\n",
    )
    .unwrap();
    drop(child.stdin.take());
    assert_ok(&child.wait_with_output().unwrap());
    assert!(pull(&reg, "ctx/stdin-df:1")
        .files
        .contains_key("from-stdin.txt"));

    for (args, want) in [
        (
            vec!["--context", "ftp://host/ctx.tar.gz"],
            "--context ftp://host/ctx.tar.gz: unknown scheme ftp://",
        ),
        (
            vec!["--context", "tar://stdin", "--dockerfile", "-"],
            "--dockerfile -: stdin carries the tar://stdin context",
        ),
        (
            vec!["--context", "tar:///nonexistent/ctx.tgz"],
            "/nonexistent/ctx.tgz",
        ),
    ] {
        let mut a = args.clone();
        a.push("--no-push");
        let out = executor(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
    }
}

/// `s3://`, `gs://` and Azure contexts, read by object_store from local fakes
/// of each cloud's HTTP API (a plain file server: the fakes check no
/// signature), pointed at by the variables each cloud's tools use for
/// emulators; Kaniko's `--bucket` and its default object name.
#[test]
fn bucket_contexts_from_s3_gcs_and_azure() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let (want, gz) = reference(&reg, work.path());
    let body = std::fs::read(&gz).unwrap();
    let server = FileServer::start(&[
        ("/ctx-bucket/builds/ctx.tar.gz", Reply::Object(body.clone())),
        ("/gcs-bucket/ctx.tar.gz", Reply::Object(body.clone())),
        ("/gcs-bucket/context.tar.gz", Reply::Object(body.clone())),
        (
            "/devstoreaccount1/ctx-container/app/ctx.tar.gz",
            Reply::Object(body),
        ),
    ]);
    let gcs_key = format!(
        r#"{{"gcs_base_url":"{}","disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}}"#,
        server.base
    );
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, String)>);
    let cases: Vec<Case> = vec![
        (
            "s3",
            vec!["--context", "s3://ctx-bucket/builds/ctx.tar.gz"],
            vec![
                ("S3_ENDPOINT", server.base.clone()),
                ("S3_FORCE_PATH_STYLE", "true".into()),
                ("AWS_ACCESS_KEY_ID", "test".into()),
                ("AWS_SECRET_ACCESS_KEY", "test".into()),
                ("AWS_REGION", "us-east-1".into()),
            ],
        ),
        (
            "gs",
            vec!["--context", "gs://gcs-bucket/ctx.tar.gz"],
            vec![("GOOGLE_SERVICE_ACCOUNT_KEY", gcs_key.clone())],
        ),
        (
            "bucket",
            vec!["--bucket", "gcs-bucket"],
            vec![("GOOGLE_SERVICE_ACCOUNT_KEY", gcs_key)],
        ),
        (
            "azure",
            vec![
                "--context",
                "https://devstoreaccount1.blob.core.windows.net/ctx-container/app/ctx.tar.gz",
            ],
            vec![
                ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
                ("AZURITE_BLOB_STORAGE_URL", server.base.clone()),
            ],
        ),
    ];
    for (tag, args, env) in cases {
        let dest = format!("{}/ctx/{tag}:1", reg.host);
        let out = Command::new(env!("CARGO_BIN_EXE_executor"))
            .args(&args)
            .args(["--destination", &dest])
            .envs(env)
            .output()
            .unwrap();
        assert_ok(&out);
        assert_eq!(ctx_files(&reg, &format!("ctx/{tag}:1")), want, "{tag}");
    }
    // A missing object: the URL and the cause, nothing pushed.
    let dest = format!("{}/ctx/missing:1", reg.host);
    let out = Command::new(env!("CARGO_BIN_EXE_executor"))
        .args([
            "--context",
            "s3://ctx-bucket/nothere.tar.gz",
            "--destination",
            &dest,
        ])
        .env("S3_ENDPOINT", &server.base)
        .env("S3_FORCE_PATH_STYLE", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--context s3://ctx-bucket/nothere.tar.gz:"),
        "{err}"
    );
    assert_nothing_pushed(&reg, "ctx/missing:1", "the context was not found");
}

/// Runs the executor on `context` (plain-HTTP git as `GIT_PULL_METHOD=http`),
/// expecting it to fail; returns its stderr after checking nothing was pushed.
fn refused(reg: &TestRegistry, context: &str, repo: &str) -> String {
    let dest = format!("{}/{repo}:1", reg.host);
    let out = Command::new(env!("CARGO_BIN_EXE_executor"))
        .args(["--context", context, "--destination", &dest])
        .env("GIT_PULL_METHOD", "http")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{context} built: {err}");
    assert_nothing_pushed(reg, &format!("{repo}:1"), context);
    err
}

/// A context URL redirected to `file:///etc/passwd` is refused at once, the
/// location and its scheme named as BuildKit names them; never followed.
#[test]
fn a_context_url_redirected_to_a_file_url_is_refused() {
    let reg = TestRegistry::start();
    let server = FileServer::start(&[("/ctx.tar.gz", Reply::Redirect("file:///etc/passwd"))]);
    let err = refused(&reg, &server.url("/ctx.tar.gz"), "ctx/redirect");
    let want = format!(
        "{}: redirect to file:///etc/passwd: unsupported protocol scheme \"file\"",
        server.url("/ctx.tar.gz")
    );
    assert!(err.contains(&want), "{err}");
    assert_eq!(server.hits("/ctx.tar.gz"), 1, "asked once, not retried");
}

/// An HTML page (a login or error page) served as the context is named as
/// not a tar archive, with the URL and its Content-Type; so is such a file
/// given as `tar://`.
#[test]
fn an_html_page_as_context_is_not_a_tar_archive() {
    let reg = TestRegistry::start();
    let page = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>\n".to_vec();
    let server = FileServer::start(&[(
        "/ctx.tar.gz",
        Reply::Typed(page.clone(), "text/html; charset=utf-8"),
    )]);
    let url = server.url("/ctx.tar.gz");
    let err = refused(&reg, &url, "ctx/html");
    let want = format!("--context {url}: the download is not a tar archive");
    assert!(err.contains(&want), "{err}");
    assert!(
        err.contains("Content-Type: text/html; charset=utf-8"),
        "{err}"
    );
    assert!(!err.contains("failed to read entire block"), "{err}");

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("page.tar");
    std::fs::write(&file, &page).unwrap();
    let context = format!("tar://{}", file.display());
    let err = refused(&reg, &context, "ctx/html-file");
    assert!(
        err.contains(&format!(
            "--context {context}: the file is not a tar archive"
        )),
        "{err}"
    );
}

/// An `https://` context on a plain-HTTP server that closes the TLS handshake
/// fails at once (one TLS hello: no retries) and says the server speaks plain
/// HTTP.
#[test]
fn an_https_context_on_a_plain_http_server_fails_at_once() {
    let reg = TestRegistry::start();
    let server = FileServer::start(&[("/ctx.tar.gz", Reply::Status(404))]);
    let url = server.url("/ctx.tar.gz").replacen("http://", "https://", 1);
    let err = refused(&reg, &url, "ctx/plain");
    assert!(
        err.contains(&format!(
            "{url}: the server speaks plain HTTP, not HTTPS: use an http:// URL"
        )),
        "{err}"
    );
    assert_eq!(server.tls_hellos(), 1, "one TLS hello, no retries: {err}");
    assert!(!err.contains("retry"), "{err}");
}

/// A git context whose tree holds `..` (below a directory) or `.git` — names
/// git never makes but a hostile server can send — is refused, naming the
/// repository and the path; nothing is written through them.
#[test]
fn a_git_context_whose_tree_has_dot_dot_or_dot_git_is_refused() {
    let reg = TestRegistry::start();
    let git = GitServer::start_with(&[("Dockerfile", DOCKERFILE)]);
    git.craft_branch(
        "climb",
        &[
            ("Dockerfile", Node::Blob(DOCKERFILE)),
            (
                "sub",
                Node::Tree(vec![(
                    "..",
                    Node::Tree(vec![("escaped", Node::Blob("out\n"))]),
                )]),
            ),
        ],
    );
    git.craft_branch(
        "dotgit",
        &[
            ("Dockerfile", Node::Blob(DOCKERFILE)),
            (".git", Node::Tree(vec![("config", Node::Blob("[core]\n"))])),
        ],
    );
    let repo = git.url.strip_prefix("http://").unwrap();
    for (branch, path) in [("climb", "\"sub/..\""), ("dotgit", "\".git\"")] {
        let err = refused(&reg, &format!("git://{repo}#{branch}"), "ctx/git-bad");
        assert!(
            err.contains(&git.url) && err.contains(&format!("the tree holds {path}")),
            "{branch}: {err}"
        );
    }
}
