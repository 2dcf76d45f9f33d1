//! ADD beyond what the differential suite compares: URL failures (each also
//! refused by BuildKit v0.21, as `testdata/references/add/` records) name the
//! line, the URL and the cause, push nothing and leave nothing behind; retries
//! ride out a short body; the cache keys URLs by content or by `--checksum`; an
//! archive corrupt halfway fails.

mod common;

use common::files::{FileServer, Reply};
use common::*;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// A context with the Dockerfile `df` (`{BASE}` and `{HTTP}` filled in) and a.txt.
fn context(reg: &TestRegistry, server: &FileServer, df: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    let df = df
        .replace("{BASE}", &format!("{}/base:1", reg.host))
        .replace("{HTTP}", &server.base);
    write_context(ctx.path(), &[("Dockerfile", &df), ("a.txt", "alpha\n")]);
    ctx
}

/// Builds `ctx` with Kiln (scratch under `scratch`) to `repo:1`.
fn kiln(reg: &TestRegistry, ctx: &Path, scratch: &Path, repo: &str, extra: &[&str]) -> Output {
    let dest = format!("{}/{repo}:1", reg.host);
    let mut args = vec![
        "--context",
        ctx.to_str().unwrap(),
        "--destination",
        &dest,
        "--kaniko-dir",
        scratch.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    executor(&args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn url_and_archive_failures_name_the_line_and_cause() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let tool = b"tool-bytes\n".to_vec();
    let actual = sha256_of(&tool);
    let zeros = format!("sha256:{}", "0".repeat(64));
    // An archive whose first entries read, then the gzip stream stops.
    let big: Vec<u8> = Noise::bytes(7, 256 << 10);
    let whole = {
        let mut out = Vec::new();
        let mut b = tar::Builder::new(&mut out);
        for name in ["one", "two"] {
            let mut h = tar::Header::new_gnu();
            h.set_size(big.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &big[..]).unwrap();
        }
        b.finish().unwrap();
        drop(b);
        common::archives::gzip(&out)
    };
    let cut = whole[..whole.len() * 3 / 4].to_vec();
    let server = FileServer::start(&[
        ("/tool", Reply::File(tool.clone(), None)),
        ("/short", Reply::Truncated(tool.clone(), 4)),
    ]);
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            "ADD {HTTP}/missing /x/".into(),
            vec!["{HTTP}/missing".into(), "404".into()],
        ),
        (
            format!("ADD --checksum={zeros} {{HTTP}}/tool /x/"),
            vec![zeros.clone(), actual.clone(), "checksum mismatch".into()],
        ),
        ("ADD {HTTP}/short /x/".into(), vec!["{HTTP}/short".into()]),
        (
            "ADD http://kiln-test-host.invalid/x /x/".into(),
            vec!["http://kiln-test-host.invalid/x".into(), "dns".into()],
        ),
        (
            format!("ADD --checksum={zeros} a.txt /x/"),
            vec!["non-HTTP(S)".into()],
        ),
        (
            "ADD cut.tar.gz /x/".into(),
            vec!["archive cut.tar.gz".into()],
        ),
    ];
    for (i, (line, causes)) in cases.iter().enumerate() {
        let df = format!("FROM {{BASE}}\n{line}\n");
        let ctx = context(&reg, &server, &df);
        std::fs::write(ctx.path().join("cut.tar.gz"), &cut).unwrap();
        let repo = format!("fail{i}");
        // BuildKit v0.21 refuses each of them too (recorded: its error, or
        // nothing where it built).
        let ph = Placeholders::default()
            .text(&reg.host, "{REG}")
            .text(&server.base, "{HTTP}");
        let bk: Option<String> = recorded("add", &repo, &df, || {
            let out = buildkit_command(
                ctx.path(),
                &ctx.path().join("Dockerfile"),
                &format!("{}/bk-{repo}:1", reg.host),
            )
            .output()
            .unwrap();
            (!out.status.success()).then(|| reference::refusal(&stderr(&out), &ph))
        });
        assert!(bk.is_some(), "BuildKit built {line}");
        let scratch = tempfile::tempdir().unwrap();
        let out = kiln(
            &reg,
            ctx.path(),
            scratch.path(),
            &repo,
            &["--push-retry", "1"],
        );
        let err = stderr(&out);
        assert!(!out.status.success(), "Kiln built {line}: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(last.contains("Dockerfile:2: "), "{line}: {err}");
        for cause in causes {
            let cause = cause.replace("{HTTP}", &server.base);
            assert!(last.contains(&cause), "{line}: names {cause:?}: {err}");
        }
        assert_nothing_pushed(&reg, &format!("{repo}:1"), line);
        assert_eq!(leftovers(scratch.path()), Vec::<String>::new(), "{line}");
    }
    // Kiln asked for the short body. (Two requests were counted while BuildKit
    // built these cases too; Kiln itself does not retry a body that ends early.)
    assert!(server.hits("/short") >= 1, "{}", server.hits("/short"));
}

/// Bodies that arrive slowly or whole only on a second try are downloaded in
/// full; the image holds exactly the served bytes.
#[test]
fn slow_and_retried_downloads_arrive_whole() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let body = Noise::bytes(3, 64 << 10);
    let server = FileServer::start(&[
        (
            "/slow",
            Reply::Slow(body.clone(), Duration::from_millis(300)),
        ),
        ("/flaky", Reply::Status(503)),
    ]);
    let ctx = context(
        &reg,
        &server,
        "FROM {BASE}\nADD {HTTP}/slow {HTTP}/flaky /d/\n",
    );
    // The 503 turns into the file once asked for: the retry gets it.
    let flip = || {
        while server.hits("/flaky") == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        server.set("/flaky", Reply::File(body.clone(), None));
    };
    let scratch = tempfile::tempdir().unwrap();
    let out = std::thread::scope(|sc| {
        sc.spawn(flip);
        kiln(&reg, ctx.path(), scratch.path(), "slow", &[])
    });
    assert_ok(&out);
    let img = pull(&reg, "slow:1");
    for f in ["d/slow", "d/flaky"] {
        assert_eq!(img.files[f].digest, sha256_of(&body), "{f}");
        assert_eq!(img.files[f].mode, 0o600, "{f}");
    }
    assert!(server.hits("/flaky") >= 2);
}

/// With `--cache`, a URL is keyed by its content: an unchanged file is a hit
/// (downloaded to learn that), a changed one a miss; with `--checksum` the
/// digest stands for the content and a hit downloads nothing.
#[test]
fn cache_keys_urls_by_content_or_checksum() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let v1 = b"version one\n".to_vec();
    let server = FileServer::start(&[
        ("/plain", Reply::File(v1.clone(), None)),
        ("/summed", Reply::File(v1.clone(), None)),
    ]);
    let df = format!(
        "FROM {{BASE}}\nADD {{HTTP}}/plain /p/\nADD --checksum={} {{HTTP}}/summed /s/\n",
        sha256_of(&v1)
    );
    let ctx = context(&reg, &server, &df);
    let scratch = tempfile::tempdir().unwrap();
    let build = || {
        let out = kiln(&reg, ctx.path(), scratch.path(), "cached", &["--cache"]);
        assert_ok(&out);
        stderr(&out)
    };
    let first = build();
    assert_eq!(first.matches("cache miss").count(), 2, "{first}");
    let second = build();
    assert_eq!(second.matches("cache hit").count(), 2, "{second}");
    assert_eq!(
        server.hits("/plain"),
        2,
        "no checksum: fetched to learn its digest"
    );
    assert_eq!(
        server.hits("/summed"),
        1,
        "--checksum: a hit fetches nothing"
    );
    // New content behind the same URL: a miss (and so the step after it),
    // and the new bytes in the image.
    let v2 = b"version two\n".to_vec();
    server.set("/plain", Reply::File(v2.clone(), None));
    let third = build();
    assert_eq!(third.matches("cache miss").count(), 2, "{third}");
    assert_eq!(
        pull(&reg, "cached:1").files["p/plain"].digest,
        sha256_of(&v2)
    );
}

/// A git source: `--keep-git-dir` leaves `.git` with HEAD at the commit, as
/// BuildKit does; with `--cache` the step is keyed by the commit (an unchanged
/// one is a hit); a ref the repository lacks names the remote and the ref.
#[test]
fn git_sources_keep_their_dir_and_cache_by_commit() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let git = common::files::GitServer::start();
    let server = FileServer::start(&[]);
    let df = format!(
        "FROM {{BASE}}\nADD --keep-git-dir=true {}#v1 /kept/\n",
        git.url
    );
    let ctx = context(&reg, &server, &df);
    let scratch = tempfile::tempdir().unwrap();
    let build = || {
        let out = kiln(&reg, ctx.path(), scratch.path(), "git", &["--cache"]);
        assert_ok(&out);
        stderr(&out)
    };
    let first = build();
    assert_eq!(first.matches("cache miss").count(), 1, "{first}");
    let img = pull(&reg, "git:1");
    assert_eq!(
        img.files["kept/.git/HEAD"].digest,
        sha256_of(format!("{}\n", git.v1).as_bytes())
    );
    assert_eq!(img.files["kept/a.txt"].digest, sha256_of(b"hello\n"));
    assert!(!img.files.contains_key("kept/b.txt"), "v1 has no b.txt");
    let second = build();
    assert_eq!(second.matches("cache hit").count(), 1, "{second}");

    let missing = context(
        &reg,
        &server,
        &format!("FROM {{BASE}}\nADD {}#nope /x/\n", git.url),
    );
    let out = kiln(&reg, missing.path(), scratch.path(), "nogit", &[]);
    let err = stderr(&out);
    assert!(!out.status.success());
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("Dockerfile:2: ") && last.contains(&git.url) && last.contains("\"nope\""),
        "{err}"
    );
    assert_nothing_pushed(&reg, "nogit:1", "a missing ref");
    assert_eq!(leftovers(scratch.path()), Vec::<String>::new());
}

/// URL downloads go through `HTTP_PROXY` (a host that does not resolve is
/// reached only through it) unless `NO_PROXY` names the host.
#[test]
fn url_downloads_follow_proxy_settings() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let body = b"through the proxy\n".to_vec();
    // A forward proxy is asked for the whole URL.
    let proxy = FileServer::start(&[(
        "http://kiln-proxied.invalid/tool",
        Reply::File(body.clone(), None),
    )]);
    let ctx = context(
        &reg,
        &proxy,
        "FROM {BASE}\nADD http://kiln-proxied.invalid/tool /t/\n",
    );
    let run = |no_proxy: &str, repo: &str| {
        let dest = format!("{}/{repo}:1", reg.host);
        std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
            .args([
                "--context",
                ctx.path().to_str().unwrap(),
                "--destination",
                &dest,
            ])
            .env("HTTP_PROXY", &proxy.base)
            .env("NO_PROXY", no_proxy)
            .output()
            .expect("run executor")
    };
    assert_ok(&run("127.0.0.1", "proxied"));
    assert_eq!(
        pull(&reg, "proxied:1").files["t/tool"].digest,
        sha256_of(&body)
    );
    assert_eq!(proxy.hits("http://kiln-proxied.invalid/tool"), 1);
    let direct = run("127.0.0.1,kiln-proxied.invalid", "direct");
    assert!(
        !direct.status.success(),
        "NO_PROXY: asked directly, the host does not resolve"
    );
    assert_eq!(proxy.hits("http://kiln-proxied.invalid/tool"), 1);
}

/// ADD's URL and git sources share the context's refusals: a redirect to a
/// `file:` URL, an `https://` URL on a plain-HTTP server (one TLS hello, no
/// retries) and a git tree holding `..` each fail at once, naming the line
/// and the cause; nothing is pushed or left behind.
#[test]
fn add_refuses_file_redirects_plain_http_servers_and_trees_that_climb_out() {
    use common::files::{GitServer, Node};
    let reg = TestRegistry::start();
    let server = FileServer::start(&[
        ("/tool", Reply::Redirect("file:///etc/passwd")),
        ("/plain", Reply::Status(404)),
    ]);
    let git = GitServer::start();
    git.craft_branch(
        "climb",
        &[("..", Node::Tree(vec![("escaped", Node::Blob("out\n"))]))],
    );
    let https = server.base.replacen("http://", "https://", 1);
    let cases = [
        (
            "ADD {HTTP}/tool /x/".to_string(),
            "{HTTP}/tool: redirect to file:///etc/passwd: unsupported protocol scheme \"file\""
                .to_string(),
        ),
        (
            format!("ADD {https}/plain /x/"),
            format!("{https}/plain: the server speaks plain HTTP, not HTTPS"),
        ),
        (
            format!("ADD {}#climb /src/", git.url),
            format!("{}: the tree holds \"..\"", git.url),
        ),
    ];
    for (i, (line, cause)) in cases.iter().enumerate() {
        let df = format!("FROM scratch\n{line}\n");
        let ctx = context(&reg, &server, &df);
        let scratch = tempfile::tempdir().unwrap();
        let repo = format!("refused{i}");
        let out = kiln(&reg, ctx.path(), scratch.path(), &repo, &[]);
        let err = stderr(&out);
        assert!(!out.status.success(), "Kiln built {line}: {err}");
        let last = err.lines().last().unwrap_or_default();
        let cause = cause.replace("{HTTP}", &server.base);
        assert!(
            last.contains("Dockerfile:2: ") && last.contains(&cause),
            "{line}: names {cause:?}: {err}"
        );
        assert_nothing_pushed(&reg, &format!("{repo}:1"), line);
        assert_eq!(leftovers(scratch.path()), Vec::<String>::new(), "{line}");
    }
    assert_eq!(server.hits("/tool"), 1, "the redirect was not retried");
    assert_eq!(server.tls_hellos(), 1, "one TLS hello, no retries");
}
