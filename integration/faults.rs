//! Registry faults through a fault-injecting proxy in front of the real registry:
//! transient failures are retried, permanent ones fail cleanly, a failed build
//! never moves a tag, and corrupt blobs are caught by digest.

mod common;

use common::proxy::{Fault, FaultProxy};
use common::*;
use std::time::Duration;

fn context(base: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    write_context(ctx.path(), &[("Dockerfile", &format!("FROM {base}\nWORKDIR /app\nCOPY a.txt /app/a.txt\nCMD [\"/bin/cat\", \"/app/a.txt\"]\n")), ("a.txt", "through the proxy\n")]);
    ctx
}

/// A context whose Dockerfile needs no base: one file on scratch.
fn scratch_context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    write_context(
        ctx.path(),
        &[
            ("Dockerfile", "FROM scratch\nCOPY a.txt /\n"),
            ("a.txt", "a\n"),
        ],
    );
    ctx
}

#[test]
fn transient_faults_are_retried() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let proxy = FaultProxy::start(&reg.host);
    proxy.add("GET", "/v2/base/manifests/1", Fault::Reset, 1);
    proxy.add("GET", "/v2/base/manifests/1", Fault::Status(503, None), 1);
    proxy.add("GET", "/v2/base/blobs/", Fault::Status(500, None), 2);
    proxy.add(
        "GET",
        "/v2/base/blobs/",
        Fault::Delay(Duration::from_millis(300)),
        1,
    );
    proxy.add("HEAD", "/v2/app/blobs/", Fault::Status(429, Some(1)), 1);
    proxy.add("PUT", "/v2/app/blobs/uploads/", Fault::Status(502, None), 1);
    proxy.add("PUT", "/v2/app/manifests/1", Fault::Status(500, None), 2);
    let ctx = context(&format!("{}/base:1", proxy.host));
    let out = executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &format!("{}/app:1", proxy.host),
        "--push-retry",
        "3",
    ]);
    assert_ok(&out);
    assert!(
        proxy.pending().is_empty(),
        "every fault was hit: {:?}",
        proxy.pending()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("retry"),
        "retries are logged"
    );
    assert_eq!(
        docker_run(&format!("{}/app:1", reg.host), &[]),
        "through the proxy\n"
    );
}

#[test]
fn faults_beyond_the_budget_fail_and_never_move_the_tag() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let ctx = context(&format!("{}/base:1", reg.host));
    let out = build_with(ctx.path(), &format!("{}/app:1", reg.host), &[]);
    assert_ok(&out);
    let before = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let proxy = FaultProxy::start(&reg.host);
    proxy.add("PUT", "/v2/app/manifests/", Fault::Status(500, None), 100);
    write_context(ctx.path(), &[("a.txt", "a new version\n")]);
    let out = executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &format!("{}/app:1", proxy.host),
        "--push-retry",
        "2",
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("500") && e.contains("app"),
        "names the registry answer and repository: {e}"
    );
    assert_eq!(
        proxy.count("PUT /v2/app/manifests/"),
        3,
        "one try and two retries"
    );
    assert_eq!(
        tag_digest(&reg, "app:1"),
        before,
        "the tag still points at the previous image"
    );
}

#[test]
fn denied_and_missing_fail_at_once() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let proxy = FaultProxy::start(&reg.host);
    proxy.add("GET", "/v2/base/manifests/", Fault::Status(403, None), 100);
    let ctx = context(&format!("{}/base:1", proxy.host));
    let out = build_with(ctx.path(), &format!("{}/app:1", reg.host), &[]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("403")
            && e.contains(&format!("{}/base", proxy.host))
            && e.contains("Dockerfile:1"),
        "{e}"
    );
    assert_eq!(
        proxy.count("GET /v2/base/manifests/"),
        1,
        "403 is not retried"
    );

    let ctx = context(&format!("{}/nosuch:1", reg.host));
    let out = build_with(ctx.path(), &format!("{}/app:1", reg.host), &[]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("404") && e.contains("nosuch"),
        "{e}"
    );
}

#[test]
fn corrupt_blobs_are_rejected_by_digest() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let proxy = FaultProxy::start(&reg.host);
    proxy.add("GET", "/v2/base/blobs/sha256:", Fault::Corrupt, 100);
    let ctx = context(&format!("{}/base:1", proxy.host));
    let out = build_with(ctx.path(), &format!("{}/app:1", reg.host), &[]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("has digest sha256:") && e.contains("expected sha256:"),
        "both digests named: {e}"
    );
    assert_nothing_pushed(&reg, "app:1", "denied or missing");
}

/// SIGTERM or SIGINT in the middle of a download: the executor exits non-zero,
/// removes its scratch root and pushes nothing.
/// Starts a build (with a `--kaniko-dir` of `scratch`) and returns once it is held
/// in the proxy's delayed base download, its scratch root made.
fn held_build(
    reg: &TestRegistry,
    proxy: &FaultProxy,
    scratch: &std::path::Path,
) -> (
    tempfile::TempDir,
    std::process::Child,
    std::process::ChildStderr,
    String,
) {
    let ctx = context(&format!("{}/base:1", proxy.host));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
        .args([
            "--context",
            ctx.path().to_str().unwrap(),
            "--destination",
            &format!("{}/app:1", reg.host),
            "--kaniko-dir",
            scratch.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let before = proxy.count("GET /v2/base/blobs/sha256:");
    // Wait until the build logged its first step and is held in the delayed download.
    let mut err = child.stderr.take().unwrap();
    let mut seen = String::new();
    while !seen.contains("FROM") {
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut err, &mut buf).unwrap();
        assert!(n > 0, "executor ended early: {seen} {:?}", child.try_wait());
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    while proxy.count("GET /v2/base/blobs/sha256:") == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the build never reached the delayed download"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let listing: Vec<_> = std::fs::read_dir(scratch)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    if listing.len() != 1 {
        let _ = child.kill();
        panic!(
            "a scratch root exists while building: {listing:?} {} {seen}",
            scratch.display()
        );
    }
    (ctx, child, err, seen)
}

/// After `kill -9` the scratch root stays; the next build removes it (the lock
/// of a dead process is free), and leaves a running build's alone.
#[test]
fn the_next_build_removes_what_kill_9_left() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let proxy = FaultProxy::start(&reg.host);
    proxy.add(
        "GET",
        "/v2/base/blobs/sha256:",
        Fault::Delay(Duration::from_secs(30)),
        100,
    );
    let scratch = tempfile::tempdir().unwrap();
    let (_ctx, mut killed, _err, _) = held_build(&reg, &proxy, scratch.path());
    killed.kill().unwrap();
    killed.wait().unwrap();
    let (_ctx2, mut running, _err2, _) = held_build(&reg, &proxy, scratch.path());
    let left: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(left.len(), 1, "the killed build's dir is gone: {left:?}");
    let ctx = context(&format!("{}/base:1", reg.host));
    let out = executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--no-push",
        "--kaniko-dir",
        scratch.path().to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert_eq!(
        std::fs::read_dir(scratch.path()).unwrap().count(),
        1,
        "the running build's dir is kept"
    );
    running.kill().unwrap();
    running.wait().unwrap();
}

#[test]
fn signals_clean_the_scratch_root() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let proxy = FaultProxy::start(&reg.host);
    proxy.add(
        "GET",
        "/v2/base/blobs/sha256:",
        Fault::Delay(Duration::from_secs(30)),
        100,
    );
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let scratch = tempfile::tempdir().unwrap();
        let (_ctx, mut child, mut err, seen) = held_build(&reg, &proxy, scratch.path());
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let status = child.wait().unwrap();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        assert_eq!(
            status.code(),
            Some(130),
            "{signal}: exit code ({status:?}); stderr: {seen}{rest}"
        );
        assert_eq!(
            std::fs::read_dir(scratch.path()).unwrap().count(),
            0,
            "{signal}: scratch root removed"
        );
        assert_nothing_pushed(&reg, "app:1", "interrupted");
    }
}

/// Two destinations, the second refusing uploads: the first tag does not move,
/// because manifests go up only once every destination has every blob.
#[test]
fn no_tag_moves_until_every_destination_has_every_blob() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let ctx = context(&format!("{}/base:1", reg.host));
    let out = build_with(ctx.path(), &format!("{}/app:1", reg.host), &[]);
    assert_ok(&out);
    let before = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let proxy = FaultProxy::start(&reg.host);
    proxy.add(
        "POST",
        "/v2/second/blobs/uploads/",
        Fault::Status(403, None),
        100,
    );
    write_context(ctx.path(), &[("a.txt", "a new version\n")]);
    let out = executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &format!("{}/app:1", reg.host),
        "--destination",
        &format!("{}/second:1", proxy.host),
        "--skip-push-permission-check",
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail: {e}");
    assert!(e.contains("403") && e.contains("second"), "{e}");
    assert_eq!(
        tag_digest(&reg, "app:1"),
        before,
        "the first destination's tag did not move"
    );

    // Without --skip-push-permission-check the refusal comes before the build.
    let out = executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &format!("{}/app:1", reg.host),
        "--destination",
        &format!("{}/second:1", proxy.host),
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("checking push access") && !e.contains("COPY"),
        "{e}"
    );
}

/// Blobs longer than their descriptors and manifests beyond 4 MiB are cut off.
#[test]
fn declared_sizes_are_enforced() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let raw = runtime()
        .block_on(client().manifest(&reg.reference("base:1")))
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&raw.bytes).unwrap();
    let first = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let proxy = FaultProxy::start(&reg.host);
    // 64 MiB where the descriptor says about 1 MiB.
    proxy.add(
        "GET",
        &format!("/v2/base/blobs/{first}"),
        Fault::Body("application/octet-stream", vec![0u8; 64 << 20]),
        100,
    );
    proxy.add(
        "GET",
        "/v2/huge/manifests/1",
        Fault::Body(
            "application/vnd.docker.distribution.manifest.v2+json",
            vec![b' '; 5 << 20],
        ),
        100,
    );
    let ctx = tempfile::tempdir().unwrap();
    write_context(
        ctx.path(),
        &[(
            "Dockerfile",
            &format!(
                "FROM scratch\nCOPY --from={}/base:1 /etc /etc\n",
                proxy.host
            ),
        )],
    );
    let out = executor(&["--context", ctx.path().to_str().unwrap(), "--no-push"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && e.contains("Dockerfile:2")
            && e.contains(&first)
            && e.contains("larger than"),
        "{e}"
    );
    write_context(
        ctx.path(),
        &[("Dockerfile", &format!("FROM {}/huge:1\n", proxy.host))],
    );
    let out = executor(&["--context", ctx.path().to_str().unwrap(), "--no-push"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && e.contains("Dockerfile:1")
            && e.contains("larger than 4194304 bytes"),
        "{e}"
    );
}

/// A token endpoint's 503 and 429 are retried like the registry's own.
#[test]
fn token_endpoint_failures_are_retried() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let tokens = FaultProxy::start(&reg.host);
    tokens.add("GET", "/token", Fault::Status(503, None), 1);
    tokens.add("GET", "/token", Fault::Status(429, Some(0)), 1);
    tokens.add(
        "GET",
        "/token",
        Fault::Body("application/json", br#"{"token":"t0ken"}"#.to_vec()),
        100,
    );
    let proxy = FaultProxy::start(&reg.host);
    proxy.add(
        "GET",
        "/v2/",
        Fault::Challenge(format!("http://{}/token", tokens.host)),
        1,
    );
    let ctx = context(&format!("{}/base:1", proxy.host));
    let out = executor(&["--context", ctx.path().to_str().unwrap(), "--no-push"]);
    assert_ok(&out);
    assert_eq!(tokens.count("GET /token"), 3, "two failures, then a token");
}

/// SIGTERM while every worker is busy compressing a large layer: the executor
/// still exits promptly (Kubernetes' grace period is 30 s) and removes its scratch.
#[test]
fn sigterm_during_compression_exits_promptly() {
    let ctx = tempfile::tempdir().unwrap();
    // 256 MB of compressible text: deflating it keeps both cores busy for about
    // seven seconds (measured: 300 MB in 8 s), and CI's disk stays free.
    // One 1 MiB block repeated: deflate's 32 KiB window never sees the repeats.
    {
        let mut x = Noise(0x9e37_79b9_7f4a_7c15);
        let block: Vec<u8> = (0..1 << 20)
            .map(|i| {
                let r = x.next_u64();
                if i % 64 == 63 {
                    b'\n'
                } else {
                    b'a' + (r % 16) as u8
                }
            })
            .collect();
        let mut f = std::fs::File::create(ctx.path().join("big.txt")).unwrap();
        for _ in 0..256 {
            std::io::Write::write_all(&mut f, &block).unwrap();
        }
    }
    write_context(
        ctx.path(),
        &[("Dockerfile", "FROM scratch\nCOPY big.txt /big.txt\n")],
    );
    let scratch = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
        .args(["--context", ctx.path().to_str().unwrap(), "--no-push"])
        .args(["--kaniko-dir", scratch.path().to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut seen = String::new();
    while !seen.contains("COPY big.txt") {
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut err, &mut buf).unwrap();
        assert!(n > 0, "executor ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    std::thread::sleep(Duration::from_millis(700));
    assert!(child.try_wait().unwrap().is_none(), "still compressing");
    let sent = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM"
    );
    assert_eq!(
        std::fs::read_dir(scratch.path()).unwrap().count(),
        0,
        "scratch root removed"
    );
}

/// A download that stops sending mid-body is given up after 60 s without a byte
/// (not reqwest's 300 s), said to have timed out, and tried again.
#[test]
fn stalled_downloads_time_out_after_a_minute_idle() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let proxy = FaultProxy::start(&reg.host);
    proxy.add(
        "GET",
        "/v2/base/blobs/sha256:",
        Fault::Stall(Duration::from_secs(200)),
        1,
    );
    let ctx = tempfile::tempdir().unwrap();
    write_context(
        ctx.path(),
        &[(
            "Dockerfile",
            &format!(
                "FROM {}/base:1 AS base\nFROM scratch\nCOPY --from=base /etc/passwd /etc/group /etc/\n",
                proxy.host
            ),
        )],
    );
    let started = std::time::Instant::now();
    let out = build_with(ctx.path(), &format!("{}/stalled:1", reg.host), &[]);
    let took = started.elapsed();
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("timed out (no data for 60 s)"),
        "the stall is named: {err}"
    );
    assert!(
        took >= Duration::from_secs(59) && took < Duration::from_secs(150),
        "gave up after the idle minute, not reqwest's 300 s: {took:?}"
    );
    assert!(proxy.pending().is_empty(), "the stall was served");
    let img = pull(&reg, "stalled:1");
    assert_eq!(
        img.files["etc/group"].digest,
        sha256_of(b"root:x:0:\napp:x:1000:\nstaff:x:50:\n")
    );
}

/// Independent stages run at once, as BuildKit runs them: with stage a's base
/// manifest held back 3 s, stage b fetches its own base meanwhile. Run one after
/// another, b's manifest would be asked for only after a's config.
#[test]
fn independent_stages_run_concurrently() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base-a:1");
    push_busybox_base(&reg, "base-b:1");
    let proxy = FaultProxy::start(&reg.host);
    proxy.add(
        "GET",
        "/v2/base-a/manifests/1",
        Fault::Delay(Duration::from_secs(3)),
        1,
    );
    let ctx = tempfile::tempdir().unwrap();
    let h = &proxy.host;
    write_context(
        ctx.path(),
        &[
            ("Dockerfile", &format!("FROM {h}/base-a:1 AS a\nCOPY x /x\nFROM {h}/base-b:1 AS b\nCOPY y /y\nFROM {h}/base-b:1\nCOPY --from=a /x /x\nCOPY --from=b /y /y\nCMD [\"/bin/cat\", \"/x\", \"/y\"]\n")),
            ("x", "from a\n"),
            ("y", "from b\n"),
        ],
    );
    let out = build_with(ctx.path(), &format!("{}/app:1", reg.host), &[]);
    assert_ok(&out);
    let log = proxy.log.lock().unwrap().clone();
    let first = |needle: &str| {
        log.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no request for {needle}: {log:#?}"))
    };
    let b_manifest = first("GET /v2/base-b/manifests/1");
    let a_config = first("GET /v2/base-a/blobs/");
    assert!(
        b_manifest < a_config,
        "stage b started while stage a waited: {log:#?}"
    );
    assert_eq!(
        docker_run(&format!("{}/app:1", reg.host), &[]),
        "from a\nfrom b\n"
    );
}

/// A tag the registry keeps immutable (ECR's answer, injected in front of a
/// real registry): an error naming it, unless --push-ignore-immutable-tag-errors
/// lets the push count as done, as Kaniko does.
#[test]
fn immutable_tags_fail_unless_told_to_ignore_them() {
    let reg = TestRegistry::start();
    let proxy = FaultProxy::start(&reg.host);
    const ECR: &str = r#"{"errors":[{"code":"TAG_INVALID","message":"The image tag '1' already exists in the 'app' repository and cannot be overwritten because the repository is immutable."}]}"#;
    proxy.add("PUT", "/v2/app/manifests/1", Fault::Reply(400, ECR), 2);
    let ctx = scratch_context();
    let dest = format!("{}/app:1", proxy.host);
    let args = [
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
    ];
    let out = executor(&args);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("cannot be overwritten because the repository is immutable"),
        "{e}"
    );
    let out = executor(&[&args[..], &["--push-ignore-immutable-tag-errors"]].concat());
    assert_ok(&out);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("the tag is immutable there and was not moved"),
        "{e}"
    );
    assert!(
        proxy.pending().is_empty(),
        "both pushes met the immutable tag"
    );
}

/// The push check's upload session is kept for the first layer uploaded there;
/// when the registry no longer takes it, the layer goes up through a session
/// of its own and the push succeeds.
#[test]
fn a_layer_whose_kept_upload_session_fails_is_still_uploaded() {
    let files = [
        ("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n"),
        ("a.txt", "a layer of its own\n"),
    ];
    let ctx = tempfile::tempdir().unwrap();
    write_context(ctx.path(), &files);
    // Reproducible, so a first registry gives the layer's digest in advance.
    let first = TestRegistry::start();
    let out = build_with(
        ctx.path(),
        &format!("{}/app:1", first.host),
        &["--reproducible"],
    );
    assert_ok(&out);
    let pulled = pull(&first, "app:1");
    let layer = pulled.manifest.layers[0].digest.to_string();

    let reg = TestRegistry::start();
    let proxy = FaultProxy::start(&reg.host);
    // Only the layer's PUT (its digest is in the query), the first time.
    proxy.add(
        "PUT",
        &format!("digest={layer}"),
        Fault::Status(404, None),
        1,
    );
    let out = executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &format!("{}/app:1", proxy.host),
        "--reproducible",
        "--push-retry",
        "0",
    ]);
    assert_ok(&out);
    assert!(proxy.pending().is_empty(), "the kept session's PUT failed");
    assert_eq!(
        proxy.count(&format!("digest={layer}")),
        2,
        "the layer went up again through a session of its own"
    );
    assert_eq!(tag_digest(&reg, "app:1"), tag_digest(&first, "app:1"));
    assert_eq!(
        pull(&reg, "app:1").files["a.txt"].digest,
        sha256_of(b"a layer of its own\n")
    );
}

/// Cache entries are stored while the manifest goes up: when it fails, the tag
/// does not move (nothing a pull or a later build takes for the image), and
/// the next build reuses the entry and pushes the same image.
#[test]
fn a_failed_manifest_push_leaves_only_cache_entries() {
    let reg = TestRegistry::start();
    let proxy = FaultProxy::start(&reg.host);
    let files = [
        ("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n"),
        ("a.txt", "kept in the cache\n"),
    ];
    let ctx = tempfile::tempdir().unwrap();
    write_context(ctx.path(), &files);
    proxy.add("PUT", "/v2/app/manifests/1", Fault::Status(500, None), 100);
    let build = |host: &str| {
        executor(&[
            "--context",
            ctx.path().to_str().unwrap(),
            "--destination",
            &format!("{host}/app:1"),
            "--cache",
            "--push-retry",
            "0",
        ])
    };
    let out = build(&proxy.host);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("500"), "{e}");
    assert_nothing_pushed(&reg, "app:1", "the manifest was refused");

    let out = build(&reg.host);
    assert_ok(&out);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("cache hit"),
        "the failed build's entry is used: {e}"
    );
    assert_eq!(
        pull(&reg, "app:1").files["a.txt"].digest,
        sha256_of(b"kept in the cache\n")
    );
}

/// A manifest put refused as distribution's filesystem storage refuses it
/// when another client rewrote a blob's link at that moment (an empty link:
/// DIGEST_INVALID beside MANIFEST_BLOB_UNKNOWN) is tried again; a blob that
/// is really missing (MANIFEST_BLOB_UNKNOWN alone) fails at once.
#[test]
fn a_manifest_put_that_met_a_link_being_rewritten_is_tried_again() {
    let reg = TestRegistry::start();
    let proxy = FaultProxy::start(&reg.host);
    const RACE: &str = r#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"},{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:423426987450336bf09c7736fb0c82c8a1fabf1cfb0660492e69f7e5b86ed486"}]}"#;
    const MISSING: &str = r#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:423426987450336bf09c7736fb0c82c8a1fabf1cfb0660492e69f7e5b86ed486"}]}"#;
    proxy.add("PUT", "/v2/app/manifests/1", Fault::Reply(400, RACE), 2);
    proxy.add("PUT", "/v2/app/manifests/2", Fault::Reply(400, MISSING), 1);
    let ctx = scratch_context();
    let push = |tag: &str| {
        executor(&[
            "--context",
            ctx.path().to_str().unwrap(),
            "--destination",
            &format!("{}/app:{tag}", proxy.host),
        ])
    };
    let out = push("1");
    assert_ok(&out);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("pushing manifest 1") && e.contains("retry 2"),
        "{e}"
    );
    assert_eq!(proxy.count("PUT /v2/app/manifests/1"), 3, "{e}");
    assert!(tag_digest(&reg, "app:1").starts_with("sha256:"));

    let out = push("2");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{e}");
    assert!(
        e.contains("MANIFEST_BLOB_UNKNOWN") && e.contains("pushing manifest 2"),
        "{e}"
    );
    assert_eq!(
        proxy.count("PUT /v2/app/manifests/2"),
        1,
        "a missing blob is not retried: {e}"
    );
}
