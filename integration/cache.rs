//! The layer cache against a real registry: hits, misses, what changes a key,
//! TTL, an unreachable cache, fresh pods and the warmer.

mod common;

use common::*;
use kiln::layer::writer::{Compression, EntryBody, EntryMeta, LayerWriter};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

const DOCKERFILE: &str = "FROM {BASE}\nARG V=1\nWORKDIR /usr/local/app\nCOPY . /usr/local/app/\nENTRYPOINT [\"/usr/local/app/main\"]\n";

fn setup(reg: &TestRegistry) -> tempfile::TempDir {
    push_busybox_base(reg, "ones/base:1");
    let ctx = tempfile::tempdir().unwrap();
    let df = DOCKERFILE.replace("{BASE}", &format!("{}/ones/base:1", reg.host));
    write_context(
        ctx.path(),
        &[
            ("Dockerfile", &df),
            ("main", "#!/bin/sh\necho cached build\n"),
            ("data.txt", "data\n"),
        ],
    );
    std::fs::set_permissions(
        ctx.path().join("main"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    ctx
}

fn build(reg: &TestRegistry, ctx: &Path, extra: &[&str]) -> Output {
    let dest = format!("{}/ones/app:1", reg.host);
    let mut args = vec![
        "--context",
        ctx.to_str().unwrap(),
        "--destination",
        &dest,
        "--cache",
    ];
    args.extend_from_slice(extra);
    let out = executor(&args);
    assert_ok(&out);
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether the COPY step (the last layer step) was a cache hit.
fn copy_hit(o: &Output) -> bool {
    let e = stderr(o);
    let last = e
        .lines()
        .rfind(|l| l.contains("cache hit") || l.contains("cache miss"))
        .map(str::to_string);
    last.expect("cache lines logged").contains("cache hit")
}

#[test]
fn unchanged_rebuild_is_identical_and_uploads_nothing() {
    let reg = TestRegistry::start();
    let ctx = setup(&reg);
    let first = build(&reg, ctx.path(), &[]);
    assert_eq!(
        stderr(&first).matches("cache miss").count(),
        2,
        "{}",
        stderr(&first)
    );
    let second = build(&reg, ctx.path(), &[]);
    let e = stderr(&second);
    assert_eq!(e.matches("cache hit").count(), 2, "{e}");
    assert!(
        !e.contains(": uploaded"),
        "no layer blob travels on a full hit: {e}"
    );
    assert!(
        !e.contains("downloading layer"),
        "no base layer is downloaded: {e}"
    );
    assert_eq!(first.stdout, second.stdout, "identical image digest");
    assert_eq!(
        docker_run(&format!("{}/ones/app:1", reg.host), &[]),
        "cached build\n"
    );
}

#[test]
fn key_follows_inputs_not_mtimes() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test changes file owners: run it as root (CI does)"
    );
    let reg = TestRegistry::start();
    let ctx = setup(&reg);
    let p = ctx.path();
    build(&reg, p, &[]);
    // mtime only: still a hit.
    let f = std::fs::File::options()
        .append(true)
        .open(p.join("data.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
        .unwrap();
    assert!(
        copy_hit(&build(&reg, p, &[])),
        "touching mtimes keeps the key"
    );
    // content
    std::fs::write(p.join("data.txt"), "changed\n").unwrap();
    assert!(!copy_hit(&build(&reg, p, &[])), "content changes the key");
    assert!(copy_hit(&build(&reg, p, &[])));
    // mode
    std::fs::set_permissions(p.join("data.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!copy_hit(&build(&reg, p, &[])), "mode changes the key");
    // owner
    nix::unistd::chown(
        &p.join("data.txt"),
        Some(nix::unistd::Uid::from_raw(1234)),
        None,
    )
    .unwrap();
    assert!(!copy_hit(&build(&reg, p, &[])), "owner changes the key");
    // a build arg the stage declares
    assert!(
        !copy_hit(&build(&reg, p, &["--build-arg", "V=2"])),
        "a used build arg changes the key"
    );
    assert!(copy_hit(&build(&reg, p, &["--build-arg", "V=2"])));
    // .dockerignore changing the source set
    std::fs::write(p.join(".dockerignore"), "data.txt\n").unwrap();
    assert!(
        !copy_hit(&build(&reg, p, &["--build-arg", "V=2"])),
        ".dockerignore changes the key"
    );
}

#[test]
fn expired_entry_is_a_miss() {
    let reg = TestRegistry::start();
    let ctx = setup(&reg);
    build(&reg, ctx.path(), &[]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = build(&reg, ctx.path(), &["--cache-ttl=1s"]);
    assert!(!copy_hit(&out), "{}", stderr(&out));
    assert!(stderr(&out).contains("expired"));
    assert!(
        copy_hit(&build(&reg, ctx.path(), &[])),
        "the default TTL still hits"
    );
}

#[test]
fn unreachable_cache_repo_warns_and_builds() {
    let reg = TestRegistry::start();
    let ctx = setup(&reg);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let repo = format!("127.0.0.1:{closed}/cache");
    let out = build(
        &reg,
        ctx.path(),
        &["--cache-repo", &repo, "--push-retry", "0"],
    );
    assert!(
        stderr(&out).contains("WARN cache repository unusable"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        docker_run(&format!("{}/ones/app:1", reg.host), &[]),
        "cached build\n"
    );
}

#[test]
fn fresh_pod_with_warm_cache_downloads_no_base_layer() {
    let reg = TestRegistry::start();
    let ctx = setup(&reg);
    let first = build(&reg, ctx.path(), &[]);
    assert!(
        stderr(&first).contains("downloading layer"),
        "the first build needs the base's file index"
    );
    std::fs::write(ctx.path().join("main"), "#!/bin/sh\necho new binary\n").unwrap();
    let out = build(&reg, ctx.path(), &[]);
    let e = stderr(&out);
    assert!(!copy_hit(&out));
    assert!(
        !e.contains("downloading layer"),
        "file indexes come from the cache repo: {e}"
    );
    assert_eq!(
        e.matches(": uploaded").count(),
        1,
        "only the new COPY layer travels: {e}"
    );
    assert_eq!(
        docker_run(&format!("{}/ones/app:1", reg.host), &[]),
        "new binary\n"
    );
}

#[test]
fn no_push_cache_reads_but_does_not_write() {
    let reg = TestRegistry::start();
    let ctx = setup(&reg);
    build(&reg, ctx.path(), &["--no-push-cache"]);
    let tags = runtime()
        .block_on(client().tags(&reg.reference("ones/app/cache:x")))
        .unwrap();
    assert!(tags.is_empty(), "no cache entries: {tags:?}");
}

#[test]
fn warmer_fills_cache_dir_for_builds_without_downloads() {
    let reg = TestRegistry::start();
    let ctx = setup(&reg);
    let dir = tempfile::tempdir().unwrap();
    let out = executor(&[
        "warmer",
        "--dockerfile",
        ctx.path().join("Dockerfile").to_str().unwrap(),
        "--cache-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert!(
        dir.path().join("blobs").read_dir().unwrap().count() >= 3,
        "base layers kept"
    );
    assert!(
        dir.path().join("index").read_dir().unwrap().count() >= 3,
        "file indexes kept"
    );
    let dest = format!("{}/ones/warm:1", reg.host);
    let out = executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
        "--cache-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert!(
        !stderr(&out).contains("downloading layer"),
        "{}",
        stderr(&out)
    );
    assert_eq!(docker_run(&dest, &[]), "cached build\n");
}

/// RUN steps are cached: an unchanged rebuild runs nothing and gives the same
/// digest; a changed build arg in scope runs the step again.
#[test]
fn run_steps_are_cached_by_command_and_args() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "ones/base:1");
    let ctx = tempfile::tempdir().unwrap();
    let df = format!(
        "FROM {}/ones/base:1\nARG V=1\nRUN echo ran >&2 && echo $V > /v && date +%s%N > /t\nCMD [\"/bin/cat\", \"/v\"]\n",
        reg.host
    );
    write_context(ctx.path(), &[("Dockerfile", &df)]);
    let first = build(&reg, ctx.path(), &[]);
    assert!(stderr(&first).contains("\nran\n"), "{}", stderr(&first));
    let second = build(&reg, ctx.path(), &[]);
    let e = stderr(&second);
    assert!(!e.contains("\nran\n"), "the command did not run again: {e}");
    assert!(e.contains("cache hit"), "{e}");
    assert_eq!(first.stdout, second.stdout, "identical image digest");
    let third = build(&reg, ctx.path(), &["--build-arg", "V=2"]);
    assert!(stderr(&third).contains("\nran\n"), "{}", stderr(&third));
    assert_eq!(docker_run(&format!("{}/ones/app:1", reg.host), &[]), "2\n");
}

/// The first change after priming a `--cache-dir` starts from the base's kept
/// tree: its steps before the change are cache hits, so more of its layers come
/// from the registry than the primed tree holds; it clones the base's tree and
/// unpacks the hits' layer alone (it unpacked the whole base again), and keeps
/// the longer tree as links to the base's.
#[test]
fn the_first_change_after_priming_starts_from_the_kept_base_tree() {
    use std::os::unix::fs::MetadataExt;
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "ones/base:1");
    let cache_dir = tempfile::tempdir().unwrap();
    let cd = cache_dir.path().to_str().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let df = format!(
        "FROM {}/ones/base:1\nRUN echo dep > /dep\nARG V\nRUN cat /dep > /v && echo $V >> /v\n",
        reg.host
    );
    write_context(ctx.path(), &[("Dockerfile", &df)]);
    let primed = build(&reg, ctx.path(), &["--cache-dir", cd, "--build-arg", "V=1"]);
    let base_layers = stderr(&primed)
        .lines()
        .find_map(|l| {
            l.strip_prefix("INFO unpacked ")?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .unwrap_or_else(|| panic!("the base unpacked: {}", stderr(&primed)));
    let changed = build(&reg, ctx.path(), &["--cache-dir", cd, "--build-arg", "V=2"]);
    let e = stderr(&changed);
    assert!(e.contains("CACHED"), "the dependency step is a hit: {e}");
    let unpacked: Vec<&str> = e
        .lines()
        .filter(|l| l.starts_with("INFO unpacked "))
        .collect();
    assert!(
        unpacked.len() == 1 && unpacked[0].starts_with("INFO unpacked 1 layers ("),
        "only the hit's layer is unpacked on the base's tree ({base_layers} base layers): {unpacked:?}"
    );
    assert_eq!(
        docker_run(&format!("{}/ones/app:1", reg.host), &["cat", "/v"]),
        "dep\n2\n"
    );
    // Two trees (the base's; the base's and the hit's), sharing the base's files.
    let trees: Vec<_> = std::fs::read_dir(cache_dir.path().join("trees"))
        .unwrap()
        .flatten()
        .map(|t| t.path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(trees.len(), 2, "{trees:?}");
    let inode =
        |t: &std::path::PathBuf| std::fs::metadata(t.join("usr/bin/busybox")).unwrap().ino();
    assert_eq!(
        inode(&trees[0]),
        inode(&trees[1]),
        "the longer tree links the base's files"
    );
}

/// `--cache-dir` keeps the base unpacked (hard links into it give each build its
/// root), and nothing a build does to its root reaches the kept tree.
#[test]
fn cache_dir_keeps_the_unpacked_base_and_builds_cannot_change_it() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "ones/base:1");
    let cache_dir = tempfile::tempdir().unwrap();
    let cd = cache_dir.path().to_str().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let base = format!("{}/ones/base:1", reg.host);
    // Replaces a base file in the stage's root (the applier) and appends to
    // another in a RUN (overlay), then reads both.
    let df = format!(
        "FROM {base}\nCOPY passwd /etc/passwd\nRUN echo appended >> /etc/group && cat /etc/passwd /etc/group > /seen\n"
    );
    write_context(
        ctx.path(),
        &[
            ("Dockerfile", &df),
            ("passwd", "root:x:0:0:replaced:/root:/bin/sh\n"),
        ],
    );
    let dest = format!("{}/ones/app:1", reg.host);
    let c = ctx.path().to_str().unwrap();
    for _ in 0..2 {
        assert_ok(&executor(&[
            "--context",
            c,
            "--destination",
            &dest,
            "--cache-dir",
            cd,
        ]));
    }
    let trees: Vec<_> = std::fs::read_dir(cache_dir.path().join("trees"))
        .expect("trees kept")
        .flatten()
        .collect();
    assert_eq!(trees.len(), 1, "one tree for the base");
    let tree = trees[0].path();
    let passwd = std::fs::read_to_string(tree.join("etc/passwd")).unwrap();
    assert!(
        !passwd.contains("replaced"),
        "the kept tree's passwd changed: {passwd}"
    );
    let group = std::fs::read_to_string(tree.join("etc/group")).unwrap();
    assert!(
        !group.contains("appended"),
        "the kept tree's group changed: {group}"
    );
    // A build from the kept tree sees the base as it is.
    let df = format!("FROM {base}\nRUN cat /etc/passwd /etc/group > /seen\n");
    std::fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    let out = executor(&[
        "--context",
        c,
        "--destination",
        &format!("{}/ones/app:2", reg.host),
        "--cache-dir",
        cd,
    ]);
    assert_ok(&out);
    assert!(
        !stderr(&out).contains("downloading layer"),
        "{}",
        stderr(&out)
    );
    let got = pull(&reg, "ones/app:2");
    let want = pull(&reg, "ones/base:1");
    let expected = [
        std::fs::read(tree.join("etc/passwd")).unwrap(),
        std::fs::read(tree.join("etc/group")).unwrap(),
    ]
    .concat();
    assert_eq!(got.files["seen"].digest, sha256_of(&expected));
    assert_eq!(
        want.files["etc/passwd"].digest,
        sha256_of(&std::fs::read(tree.join("etc/passwd")).unwrap())
    );
}

/// The plain log of a multi-stage build ends every step with its wall time
/// (`[n/total] DONE 0.3s`, `CACHED` for a step the cache served) and closes
/// with the total, each phase's bytes and time, and the three slowest steps.
#[test]
fn plain_log_times_every_step_and_sums_up() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "ones/base:1");
    let ctx = tempfile::tempdir().unwrap();
    let df = format!(
        "FROM {0}/ones/base:1 AS tool\nRUN echo built > /tool && sleep 1\nFROM {0}/ones/base:1\nENV A=1\nCOPY --from=tool /tool /tool\nCOPY data.txt /data.txt\n",
        reg.host
    );
    write_context(ctx.path(), &[("Dockerfile", &df), ("data.txt", "one\n")]);
    let first = build(&reg, ctx.path(), &["--log-format=text"]);
    // One context file changes: the RUN and the first COPY are served by the cache.
    std::fs::write(ctx.path().join("data.txt"), "two\n").unwrap();
    let second = build(&reg, ctx.path(), &["--log-format=text"]);
    let e = stderr(&second);
    let step_re = |l: &str| -> Option<(usize, usize, String, f64)> {
        let rest = l.strip_prefix("INFO [")?;
        let (n, rest) = rest.split_once('/')?;
        let (total, rest) = rest.split_once("] ")?;
        let (word, secs) = rest.split_once(' ')?;
        let secs = secs.strip_suffix('s')?.parse().ok()?;
        Some((n.parse().ok()?, total.parse().ok()?, word.to_string(), secs))
    };
    let ends: Vec<_> = e.lines().filter_map(step_re).collect();
    let words: Vec<(usize, &str)> = ends.iter().map(|(n, _, w, _)| (*n, w.as_str())).collect();
    // Stage `tool` runs before the last stage reads it, so the numbers come in order.
    assert_eq!(
        words,
        [
            (1, "DONE"),
            (2, "CACHED"),
            (3, "DONE"),
            (4, "DONE"),
            (5, "CACHED"),
            (6, "DONE")
        ],
        "one end line per step, the cache's hits marked: {e}"
    );
    assert!(ends.iter().all(|(_, total, _, _)| *total == 6), "{e}");
    for n in 1..=6 {
        let start = e
            .lines()
            .position(|l| l.starts_with(&format!("INFO [{n}/6] ")) && step_re(l).is_none());
        let end = e.lines().position(|l| step_re(l).is_some_and(|s| s.0 == n));
        assert!(start < end, "step {n} starts before it ends: {e}");
    }
    let first_ends: Vec<_> = stderr(&first).lines().filter_map(step_re).collect();
    let run = first_ends
        .iter()
        .find(|s| s.0 == 2)
        .expect("RUN's end line");
    assert!(
        run.2 == "DONE" && run.3 >= 1.0,
        "the first build ran the RUN (a second's sleep): {}",
        stderr(&first)
    );
    let summary = e
        .lines()
        .find(|l| l.starts_with("INFO total "))
        .unwrap_or_else(|| panic!("a summary line: {e}"));
    assert!(
        summary.contains(": 6 steps (2 cached)")
            && summary.contains("pulled ")
            && summary.contains("unpacked ")
            && summary.contains("pushed 1 layer,"),
        "{summary}"
    );
    let slowest = e
        .lines()
        .find(|l| l.starts_with("INFO slowest steps: "))
        .unwrap_or_else(|| panic!("the slowest steps: {e}"));
    assert_eq!(
        slowest.matches("s), [").count(),
        2,
        "three steps: {slowest}"
    );
    assert!(
        stderr(&first).contains("INFO slowest steps: [2/6] RUN ("),
        "the RUN's second of sleep is the slowest: {}",
        stderr(&first)
    );
    // The phases report their own time and bytes as they end.
    let pushed = e
        .lines()
        .find(|l| l.contains("blobs in place in "))
        .unwrap_or_else(|| panic!("the push's line: {e}"));
    assert!(
        pushed.contains("1 of 5"),
        "only the new COPY layer travels: {pushed}"
    );
    assert!(
        stderr(&first)
            .lines()
            .any(|l| l.starts_with("INFO downloaded layer ") && l.contains(" bytes) in ")),
        "{}",
        stderr(&first)
    );
    assert!(
        stderr(&first)
            .lines()
            .any(|l| l.starts_with("INFO unpacked 3 layers (")),
        "{}",
        stderr(&first)
    );
    // JSON lines carry the same as fields.
    std::fs::write(ctx.path().join("data.txt"), "three\n").unwrap();
    let json = build(&reg, ctx.path(), &["--log-format=json"]);
    let lines: Vec<serde_json::Value> = stderr(&json)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ends: Vec<_> = lines
        .iter()
        .filter(|v| v["seconds"].is_f64() && v["step"].is_u64())
        .collect();
    assert_eq!(ends.len(), 6, "{}", stderr(&json));
    assert_eq!(
        ends.iter().filter(|v| v["cached"] == true).count(),
        2,
        "{}",
        stderr(&json)
    );
    let total = lines
        .iter()
        .find(|v| v["total_seconds"].is_f64())
        .unwrap_or_else(|| panic!("{}", stderr(&json)));
    assert_eq!(total["cached_steps"], 2, "{total}");
    assert_eq!(
        total["slowest"].as_array().map(Vec::len),
        Some(3),
        "{total}"
    );
    assert!(
        total["pull"]["seconds"].is_f64() && total["push"]["bytes"].is_u64(),
        "{total}"
    );
}

/// A RUN on the busybox base, so the base is unpacked; `V` makes it miss.
fn run_context(reg: &TestRegistry) -> tempfile::TempDir {
    push_busybox_base(reg, "ones/base:1");
    let ctx = tempfile::tempdir().unwrap();
    let df = format!("FROM {}/ones/base:1\nARG V=1\nRUN echo $V > /v\n", reg.host);
    write_context(ctx.path(), &[("Dockerfile", &df)]);
    ctx
}

/// Builds `ctx` with `--cache` in a fresh pod (no `--cache-dir`), `V` set.
fn fresh_pod(reg: &TestRegistry, ctx: &Path, v: &str) -> Output {
    let arg = format!("V={v}");
    let repo = format!("{}/ones/cache", reg.host);
    build(
        reg,
        ctx,
        &[
            "--build-arg",
            &arg,
            "--cache-repo",
            &repo,
            "--verbosity",
            "debug",
        ],
    )
}

/// The tag of a layer's zstd copy in the cache repository.
fn copy_tag(diff_id: &kiln::image::Digest) -> String {
    format!("zstd-{}", diff_id.as_str().trim_start_matches("sha256:"))
}

/// The flattened image without the step's own file.
fn base_files(reg: &TestRegistry) -> std::collections::BTreeMap<String, Flat> {
    let mut files = pull(reg, "ones/app:1").files;
    files.remove("v");
    files
}

#[test]
fn fresh_pods_unpack_the_zstd_copies_the_first_one_made() {
    let reg = TestRegistry::start();
    let ctx = run_context(&reg);
    let first = fresh_pod(&reg, ctx.path(), "1");
    let e = stderr(&first);
    assert_eq!(e.matches("zstd copy of sha256:").count(), 3, "{e}");
    let from_gzip = base_files(&reg);
    let diff_ids = pull(&reg, "ones/base:1").config.rootfs.diff_ids;

    let second = fresh_pod(&reg, ctx.path(), "2");
    let e = stderr(&second);
    for l in pull(&reg, "ones/base:1").manifest.layers {
        assert!(
            !e.contains(&format!("downloading layer {}", l.digest)),
            "the gzip layer is not fetched: {e}"
        );
    }
    assert_eq!(e.matches("from its zstd copy").count(), 3, "{e}");
    assert!(!e.contains("zstd copy of sha256:"), "made once: {e}");
    let tag = format!("ones/cache:{}", copy_tag(&diff_ids[0]));
    let raw = runtime()
        .block_on(client().manifest(&reg.reference(&tag)))
        .unwrap();
    let copy: serde_json::Value = serde_json::from_slice(&raw.bytes).unwrap();
    assert_eq!(
        copy["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(base_files(&reg), from_gzip, "the same root as from gzip");
    assert_eq!(
        docker_run(&format!("{}/ones/app:1", reg.host), &["cat", "/v"]),
        "2\n"
    );
}

#[test]
fn a_copy_that_is_not_its_layer_is_refused_and_the_gzip_layer_used() {
    let reg = TestRegistry::start();
    let ctx = run_context(&reg);
    fresh_pod(&reg, ctx.path(), "1");
    let from_gzip = base_files(&reg);
    let diff_id = pull(&reg, "ones/base:1").config.rootfs.diff_ids[0].clone();
    // The first layer's copy swapped for another tar, under the same tag.
    let dir = tempfile::tempdir().unwrap();
    let mut w = LayerWriter::create_with(&dir.path().join("evil"), Compression::Zstd(3)).unwrap();
    let meta = EntryMeta {
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
        xattrs: Vec::new(),
    };
    w.append("evil", &meta, &EntryBody::Bytes(b"not the base\n".to_vec()))
        .unwrap();
    let evil = w.finish().unwrap();
    let layer = PushLayer {
        file: &evil,
        media_type: "application/vnd.oci.image.layer.v1.tar+zstd",
        urls: None,
    };
    let tag = format!("ones/cache:{}", copy_tag(&diff_id));
    push_image_layers(&reg, &tag, &[layer], serde_json::json!({}));

    let out = fresh_pod(&reg, ctx.path(), "2");
    let e = stderr(&out);
    assert!(
        e.contains(&format!("not its diff_id {diff_id} (refused)")),
        "{e}"
    );
    assert!(e.contains("using the layer itself"), "{e}");
    assert_eq!(base_files(&reg), from_gzip, "nothing of the copy is left");
    // The refused copy is made again from the gzip layer.
    assert_eq!(e.matches("zstd copy of sha256:").count(), 1, "{e}");
    let again = fresh_pod(&reg, ctx.path(), "3");
    assert_eq!(stderr(&again).matches("from its zstd copy").count(), 3);
    assert_eq!(base_files(&reg), from_gzip);
}

/// Stages whose steps differ but whose COPY makes the same layer store entries
/// that name one blob, all at once at the end of the build: every entry is
/// stored (the registry saw the blob placed once, not rewritten under a
/// manifest that names it), and a rebuild takes every step from the cache.
#[test]
fn entries_sharing_one_layer_are_all_stored() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "ones/base:1");
    let ctx = tempfile::tempdir().unwrap();
    let stages = 8;
    let mut df = String::new();
    for n in 0..stages {
        df += &format!(
            "FROM {}/ones/base:1 AS s{n}\nRUN echo {n} > /n\nCOPY data.txt /shared\n",
            reg.host
        );
    }
    df += &format!("FROM {}/ones/base:1\n", reg.host);
    for n in 0..stages {
        df += &format!("COPY --from=s{n} /shared /s{n}\n");
    }
    write_context(
        ctx.path(),
        &[("Dockerfile", &df), ("data.txt", "one layer\n")],
    );
    let first = stderr(&build(&reg, ctx.path(), &[]));
    assert!(!first.contains("WARN"), "{first}");
    let again = build(&reg, ctx.path(), &[]);
    let e = stderr(&again);
    assert_eq!(e.matches("cache miss").count(), 0, "{e}");
    assert_eq!(e.matches("cache hit").count(), 3 * stages, "{e}");
    assert_eq!(
        docker_run(&format!("{}/ones/app:1", reg.host), &["cat", "/s7"]),
        "one layer\n"
    );
}
