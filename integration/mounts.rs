//! `RUN --mount` beyond what the differential suite compares with BuildKit:
//! secrets kept out of every layer, config, cache entry and log; caches kept
//! in `--cache-dir` across builds and shared safely by builds running at once;
//! the cache key following a bind's content; refusals naming their line.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

const SECRET: &str = "kiln-mounts-secret-5b1e9c";

fn context(reg: &TestRegistry, dockerfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    push_busybox_base(reg, "base:1");
    let ctx = tempfile::tempdir().unwrap();
    let df = dockerfile.replace("{BASE}", &format!("{}/base:1", reg.host));
    write_context(ctx.path(), &[("Dockerfile", &df)]);
    write_context(ctx.path(), files);
    ctx
}

fn build_in(ctx: &Path, dest: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let c = ctx.display().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_executor"));
    cmd.args(["--context", &c, "--destination", dest])
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run executor")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether any file under `dir` holds `needle`.
fn dir_holds(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                dir_holds(&p, needle)
            } else {
                m.is_file() && contains(&std::fs::read(&p).unwrap_or_default(), needle)
            }
        })
    })
}

/// A secret given as a file and as a variable, used as a file and as a
/// variable, with the layer cache and `--cache-dir` on: its bytes are in no
/// blob, manifest or cache entry the registry holds, no file of the cache
/// dir, and not in the log, even when the command fails.
#[test]
fn secrets_reach_no_layer_config_cache_entry_or_log() {
    let reg = TestRegistry::start();
    // The Dockerfile names only the secret's digest: the log shows each step.
    let df = "FROM {BASE}\nRUN --mount=type=secret,id=file,required busybox sha256sum < /run/secrets/file > /sum-file\nRUN --mount=type=secret,id=var,env=TOKEN,required printf %s \"$TOKEN\" | busybox sha256sum > /sum-var\n";
    let ctx = context(&reg, df, &[]);
    let secret_dir = tempfile::tempdir().unwrap();
    let file = secret_dir.path().join("s");
    std::fs::write(&file, SECRET).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let src = format!("--secret=id=file,src={}", file.display());
    let dest = format!("{}/app:1", reg.host);
    let args = [
        src.as_str(),
        "--secret=id=var,env=KILN_TEST_TOKEN",
        "--cache",
        "--cache-dir",
        cache_dir.path().to_str().unwrap(),
        "--verbosity=debug",
    ];
    let out = build_in(ctx.path(), &dest, &args, &[("KILN_TEST_TOKEN", SECRET)]);
    assert_ok(&out);
    let img = pull(&reg, "app:1");
    let seen = format!("{}  -\n", &sha256_of(SECRET.as_bytes())["sha256:".len()..]);
    for f in ["sum-file", "sum-var"] {
        assert_eq!(img.files[f].digest, sha256_of(seen.as_bytes()), "/{f}");
    }
    assert!(!img.files.contains_key("run/secrets"));
    assert!(!stderr(&out).contains(SECRET), "the log shows the secret");
    assert!(
        !registry_holds(&reg, SECRET.as_bytes()),
        "the registry holds the secret"
    );
    assert!(
        !dir_holds(cache_dir.path(), SECRET.as_bytes()),
        "--cache-dir holds the secret"
    );
    // The secret's value is not in the key: another value hits the cache.
    let again = build_in(ctx.path(), &dest, &args, &[("KILN_TEST_TOKEN", "other")]);
    assert_ok(&again);
    assert!(stderr(&again).contains("cache hit"), "{}", stderr(&again));
    // A failing command's error names the command, not the secret.
    let failing = context(
        &reg,
        "FROM {BASE}\nRUN --mount=type=secret,id=var,env=TOKEN false\n",
        &[],
    );
    let out = build_in(
        failing.path(),
        &dest,
        &["--secret=id=var,env=KILN_TEST_TOKEN"],
        &[("KILN_TEST_TOKEN", SECRET)],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("Dockerfile:2") && !e.contains(SECRET), "{e}");
}

/// `--cache-dir` keeps a cache mount between builds (a Pod's PVC); without
/// it, each build starts with an empty cache.
#[test]
fn cache_mounts_persist_in_the_cache_dir() {
    let reg = TestRegistry::start();
    let ctx = context(
        &reg,
        "FROM {BASE}\nARG RUN=1\nRUN --mount=type=cache,target=/root/.cache/tool echo $RUN >> /root/.cache/tool/runs && cat /root/.cache/tool/runs > /runs\n",
        &[],
    );
    let cache_dir = tempfile::tempdir().unwrap();
    let dir = cache_dir.path().to_str().unwrap();
    let dest = format!("{}/app:1", reg.host);
    for run in ["1", "2"] {
        let arg = format!("RUN={run}");
        assert_ok(&build_in(
            ctx.path(),
            &dest,
            &["--cache-dir", dir, "--build-arg", &arg],
            &[],
        ));
    }
    assert_eq!(
        pull(&reg, "app:1").files["runs"].digest,
        sha256_of(b"1\n2\n")
    );
    assert_ok(&build_in(ctx.path(), &dest, &["--build-arg", "RUN=3"], &[]));
    assert_eq!(pull(&reg, "app:1").files["runs"].digest, sha256_of(b"3\n"));
}

/// Cache mounts kept in a registry repository outlive the pod: a build with
/// nothing local reads what the last one left; nothing of the cache reaches
/// the image; builds at once each store a whole version (the last writer
/// wins), which the next build reads; `--cache` with a cache repository and no
/// `--cache-dir` keeps them in `<cache repository>/mounts`.
#[test]
fn cache_mounts_outlive_the_pod_in_the_registry() {
    let reg = TestRegistry::start();
    let ctx = context(
        &reg,
        "FROM {BASE}\nARG RUN=1\nRUN --mount=type=cache,target=/root/.cache/tool echo $RUN >> /root/.cache/tool/runs && cat /root/.cache/tool/runs > /runs\n",
        &[],
    );
    let dest = format!("{}/app:1", reg.host);
    let kept = format!("{}/kept", reg.host);
    let build = |run: &str, flags: &[&str]| {
        let arg = format!("RUN={run}");
        let mut args = flags.to_vec();
        args.extend(["--build-arg", &arg]);
        build_in(ctx.path(), &dest, &args, &[])
    };
    for run in ["1", "2"] {
        assert_ok(&build(run, &["--cache-mount-repo", &kept]));
    }
    let img = pull(&reg, "app:1");
    assert_eq!(img.files["runs"].digest, sha256_of(b"1\n2\n"));
    let leaked: Vec<&String> = img
        .layers
        .iter()
        .flatten()
        .filter(|e| e.contains("tool/runs"))
        .collect();
    assert!(leaked.is_empty(), "the cache reached the image: {leaked:?}");
    // Two pods at once, both from the second version.
    let at_once: Vec<_> = ["3a", "3b"]
        .into_iter()
        .map(|run| {
            let (ctx, dest, kept) = (ctx.path().to_path_buf(), dest.clone(), kept.clone());
            std::thread::spawn(move || {
                let arg = format!("RUN={run}");
                build_in(
                    &ctx,
                    &dest,
                    &["--cache-mount-repo", &kept, "--build-arg", &arg],
                    &[],
                )
            })
        })
        .collect();
    for b in at_once {
        assert_ok(&b.join().unwrap());
    }
    assert_ok(&build("4", &["--cache-mount-repo", &kept]));
    let runs = pull(&reg, "app:1").files["runs"].digest.clone();
    assert!(
        runs == sha256_of(b"1\n2\n3a\n4\n") || runs == sha256_of(b"1\n2\n3b\n4\n"),
        "the fifth build read no whole version"
    );
    // --cache, a cache repository, no --cache-dir: kept beside the layers.
    let layers = format!("{}/layers", reg.host);
    for run in ["5", "6"] {
        assert_ok(&build(run, &["--cache", "--cache-repo", &layers]));
    }
    assert_eq!(
        pull(&reg, "app:1").files["runs"].digest,
        sha256_of(b"5\n6\n")
    );
}

/// Builds running at once on one `--cache-dir`: `locked` runs one step at a
/// time (no update is lost), `private` gives each its own cache, `shared`
/// lets all write to one.
#[test]
fn concurrent_builds_share_one_cache_dir_safely() {
    let reg = TestRegistry::start();
    let ctx = context(
        &reg,
        "FROM {BASE}\nARG N\nRUN --mount=type=cache,target=/l,sharing=locked n=$(cat /l/n 2>/dev/null || echo 0); sleep 0.3; echo $((n+1)) > /l/n\nRUN --mount=type=cache,target=/p,sharing=private test ! -e /p/busy && touch /p/busy && sleep 0.3 && rm /p/busy\nRUN --mount=type=cache,target=/s echo $N >> /s/who\n",
        &[],
    );
    let cache_dir = tempfile::tempdir().unwrap();
    let dir = cache_dir.path().to_str().unwrap().to_string();
    let builds: Vec<_> = (1..=3)
        .map(|n| {
            let (ctx, dir) = (ctx.path().to_path_buf(), dir.clone());
            let dest = format!("{}/app:{n}", reg.host);
            std::thread::spawn(move || {
                let arg = format!("N={n}");
                build_in(
                    &ctx,
                    &dest,
                    &["--cache-dir", &dir, "--build-arg", &arg],
                    &[],
                )
            })
        })
        .collect();
    for b in builds {
        assert_ok(&b.join().unwrap());
    }
    let reader = context(
        &reg,
        "FROM {BASE}\nRUN --mount=type=cache,target=/l,sharing=locked --mount=type=cache,target=/s cp /l/n /n && sort /s/who > /who\n",
        &[],
    );
    let dest = format!("{}/reader:1", reg.host);
    assert_ok(&build_in(reader.path(), &dest, &["--cache-dir", &dir], &[]));
    let img = pull(&reg, "reader:1");
    assert_eq!(
        img.files["n"].digest,
        sha256_of(b"3\n"),
        "a locked update was lost"
    );
    assert_eq!(img.files["who"].digest, sha256_of(b"1\n2\n3\n"));
}

/// A bind's content is part of the step's key: the RUN runs again when the
/// context files it binds change, and not when others do.
#[test]
fn a_bind_mount_reruns_its_step_when_its_source_changes() {
    let reg = TestRegistry::start();
    let ctx = context(
        &reg,
        "FROM {BASE}\nRUN --mount=source=src,target=/src cat /src/in > /out && echo ran >&2\n",
        &[("src/in", "one\n"), ("other", "x\n")],
    );
    let dest = format!("{}/app:1", reg.host);
    let ran = |o: &Output| stderr(o).contains("\nran\n");
    let first = build_in(ctx.path(), &dest, &["--cache"], &[]);
    assert_ok(&first);
    assert!(ran(&first));
    write_context(ctx.path(), &[("other", "y\n")]);
    let second = build_in(ctx.path(), &dest, &["--cache"], &[]);
    assert!(!ran(&second), "an unrelated file reran the step");
    write_context(ctx.path(), &[("src/in", "two\n")]);
    let third = build_in(ctx.path(), &dest, &["--cache"], &[]);
    assert!(ran(&third), "the bound file changed: {}", stderr(&third));
    assert_eq!(pull(&reg, "app:1").files["out"].digest, sha256_of(b"two\n"));
}

/// `type=ssh` is refused at plan time, naming the line; nothing is pushed.
/// A secret file that does not exist is a flag error.
#[test]
fn ssh_mounts_and_missing_secret_files_are_refused() {
    let reg = TestRegistry::start();
    let ctx = context(
        &reg,
        "FROM {BASE}\nRUN true\nRUN --mount=type=ssh ssh-add -l\n",
        &[],
    );
    let dest = format!("{}/app:1", reg.host);
    let out = build_in(ctx.path(), &dest, &[], &[]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("Dockerfile:3: RUN --mount=type=ssh is not supported"),
        "{e}"
    );
    assert_nothing_pushed(&reg, "app:1", "ssh mount");
    let out = build_in(
        ctx.path(),
        &dest,
        &["--secret", "id=x,src=/nonexistent/s"],
        &[],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("--secret") && e.contains("/nonexistent/s"),
        "{e}"
    );
}
