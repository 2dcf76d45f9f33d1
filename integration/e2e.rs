//! End to end: the executor builds against a real registry and Docker runs the result.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;

const SEED: &str = "FROM {BASE}\nWORKDIR /usr/local/app\nCOPY main /usr/local/app/main\nENTRYPOINT [\"/usr/local/app/main\"]\n";

fn seed_context(dir: &std::path::Path, base: &str, message: &str) {
    write_context(
        dir,
        &[
            ("Dockerfile", &SEED.replace("{BASE}", base)),
            ("main", &format!("#!/bin/sh\necho {message}\n")),
        ],
    );
    std::fs::set_permissions(dir.join("main"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
}

#[test]
fn seed_scenario_is_pushed_and_runs() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "ones/plugin-host-node:v6.33.1");
    let ctx = tempfile::tempdir().unwrap();
    let base = format!("{}/ones/plugin-host-node:v6.33.1", reg.host);
    seed_context(ctx.path(), &base, "hello from the seed");
    let dest = format!("{}/ones/app:1", reg.host);
    let digest_file = ctx.path().join("digest");
    let out = executor(&[
        "--dockerfile",
        "Dockerfile",
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
        "--digest-file",
        digest_file.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("COPY main /usr/local/app/main"),
        "one log line per step: {stderr}"
    );
    assert_eq!(
        stderr.matches(": uploaded").count(),
        2,
        "only WORKDIR and COPY layers travel: {stderr}"
    );
    assert_eq!(
        stderr.matches(": mounted").count(),
        3,
        "base layers are cross-mounted: {stderr}"
    );
    let digest = std::fs::read_to_string(&digest_file).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&digest),
        "digest printed"
    );

    assert_eq!(docker_run(&dest, &[]), "hello from the seed\n");

    let img = pull(&reg, "ones/app:1");
    let cfg = &img.config.config;
    assert_eq!(
        cfg.entrypoint.as_deref(),
        Some(&["/usr/local/app/main".to_string()][..])
    );
    assert_eq!(cfg.working_dir.as_deref(), Some("/usr/local/app"));
    assert_eq!(cfg.cmd, None);
    assert_eq!(img.config.rootfs.diff_ids.len(), 5);
    assert_eq!(img.manifest.layers.len(), 5);
    let hist: Vec<bool> = img.config.history.iter().map(|h| h.empty_layer).collect();
    assert_eq!(
        hist.iter().filter(|e| !**e).count(),
        5,
        "history matches layers: {hist:?}"
    );
    let main = &img.files["usr/local/app/main"];
    assert_eq!(
        (main.kind, main.mode, main.uid, main.gid),
        ('f', 0o755, 0, 0)
    );
    assert_eq!(img.files["usr/local/app"].kind, 'd');
    assert_eq!(img.files["usr/bin/suid"].mode, 0o4755, "setuid kept");
    assert_eq!(
        img.files["usr/bin/suid-link"].digest, img.files["usr/bin/suid"].digest,
        "hardlink kept"
    );
    assert_eq!(img.files["bin"].link, "usr/bin");
    assert!(!img.files.contains_key("etc/doomed"), "whiteout honoured");
    assert!(
        !img.files.contains_key("opt/old/a") && img.files.contains_key("opt/old/b"),
        "opaque dir honoured"
    );
}

#[test]
fn multi_stage_copy_from_pushes_only_the_target() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let ctx = tempfile::tempdir().unwrap();
    let df = format!(
        "ARG BASE={}/base:1\nFROM $BASE AS builder\nCOPY msg.txt /app/msg\nCOPY sub/ /app/sub/\n\nFROM scratch\nCOPY --from=builder /usr/bin/busybox /bin/busybox\nCOPY --from=builder /app/ /data/\nENTRYPOINT [\"/bin/busybox\", \"cat\", \"/data/msg\", \"/data/sub/inner.txt\"]\n",
        reg.host
    );
    write_context(
        ctx.path(),
        &[
            ("Dockerfile", &df),
            ("msg.txt", "from builder\n"),
            ("sub/inner.txt", "inner\n"),
        ],
    );
    let dest = format!("{}/multi:1", reg.host);
    let out = executor(&[
        "--context",
        &format!("dir://{}", ctx.path().display()),
        "--destination",
        &dest,
    ]);
    assert_ok(&out);
    assert_eq!(docker_run(&dest, &[]), "from builder\ninner\n");
    let img = pull(&reg, "multi:1");
    assert_eq!(img.manifest.layers.len(), 2, "scratch + two COPY layers");
    assert!(img.files.contains_key("bin/busybox") && img.files.contains_key("data/sub/inner.txt"));
    assert!(
        !img.files.contains_key("usr/bin/sh"),
        "builder's files are not in the target"
    );
    assert_eq!(
        img.config.config.env.as_deref(),
        Some(
            &["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()][..]
        )
    );
}

#[test]
fn copy_resolves_symlinked_parents_and_owners() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let ctx = tempfile::tempdir().unwrap();
    let df = format!(
        "FROM {}/base:1\nCOPY tool /bin/tool\nCOPY pidfile /var/run/\nCOPY --chown=app:staff --chmod=0600 secret /home/app/secret\nUSER app\nWORKDIR /work\nLABEL a=b\nEXPOSE 8080 53/udp\nENV GREETING=hi\nCMD echo $GREETING\n",
        reg.host
    );
    write_context(
        ctx.path(),
        &[
            ("Dockerfile", &df),
            ("tool", "t\n"),
            ("pidfile", "1\n"),
            ("secret", "s\n"),
        ],
    );
    let dest = format!("{}/owners:1", reg.host);
    assert_ok(&executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
    ]));
    let img = pull(&reg, "owners:1");
    assert!(
        img.files.contains_key("usr/bin/tool"),
        "/bin -> usr/bin resolved inside the root"
    );
    assert!(
        img.files.contains_key("run/pidfile"),
        "/var/run -> ../run resolved"
    );
    assert_eq!(
        img.files["bin"].link, "usr/bin",
        "the symlink itself is untouched"
    );
    let s = &img.files["home/app/secret"];
    assert_eq!((s.mode, s.uid, s.gid), (0o600, 1000, 50));
    let home = &img.files["home/app"];
    assert_eq!(
        (home.uid, home.gid),
        (1000, 50),
        "created parents get the --chown owner"
    );
    let w = &img.files["work"];
    assert_eq!((w.kind, w.uid), ('d', 1000), "WORKDIR created as USER");
    let cfg = &img.config.config;
    assert_eq!(cfg.user.as_deref(), Some("app"));
    assert_eq!(
        cfg.cmd.as_deref(),
        Some(&["/bin/sh".to_string(), "-c".into(), "echo $GREETING".into()][..])
    );
    assert!(cfg.exposed_ports.as_ref().unwrap().contains_key("53/udp"));
    assert_eq!(cfg.labels.as_ref().unwrap()["a"], "b");
    assert_eq!(docker_run(&dest, &[]), "hi\n");
}

#[test]
fn invalid_destination_is_refused_before_building() {
    let ctx = tempfile::tempdir().unwrap();
    write_context(ctx.path(), &[("Dockerfile", "FROM scratch\n")]);
    let out = executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        "Not A/Reference",
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("--destination Not A/Reference"),
        "{e}"
    );
    assert!(!e.contains("[1/"), "nothing was built: {e}");
}

#[test]
fn tarball_output_loads_into_docker() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let ctx = tempfile::tempdir().unwrap();
    seed_context(
        ctx.path(),
        &format!("{}/base:1", reg.host),
        "from a tarball",
    );
    let tar = ctx.path().join("image.tar");
    let oci = ctx.path().join("oci");
    let out = executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--no-push",
        "--destination",
        "kiln-test/tarball:1",
        "--tar-path",
        tar.to_str().unwrap(),
        "--oci-layout-path",
        oci.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert!(oci.join("index.json").exists() && oci.join("oci-layout").exists());
    require_docker_engine();
    let load = docker()
        .args(["load", "-i", tar.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "docker load: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    let run = docker()
        .args([
            "run",
            "--rm",
            "--network",
            "host",
            "index.docker.io/kiln-test/tarball:1",
        ])
        .output()
        .unwrap();
    let run = if run.status.success() {
        run
    } else {
        docker()
            .args(["run", "--rm", "--network", "host", "kiln-test/tarball:1"])
            .output()
            .unwrap()
    };
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "from a tarball\n",
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let _ = docker().args(["rmi", "-f", "kiln-test/tarball:1"]).output();
}

#[test]
fn failures_name_the_line_and_push_nothing() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let cases = [
        (
            "FROM {B}\nRUN echo hi\nRUN exit 7\n",
            "Dockerfile:3",
            "exit code: 7",
        ),
        (
            "FROM {B}\nRUN --mount=type=ssh ssh-add -l\n",
            "Dockerfile:2",
            "RUN --mount=type=ssh is not supported yet",
        ),
        ("FROM {B}\nCOPY missing /x\n", "Dockerfile:2", "missing"),
        (
            "FROM {B}\nCOPY --from=nowhere /a /b\n",
            "Dockerfile:2",
            "nowhere",
        ),
        (
            "FROM {B}\nFROBNICATE\n",
            "Dockerfile:2",
            "unknown instruction",
        ),
        (
            "FROM {B}\nCOPY ignored.txt /x\n",
            "Dockerfile:2",
            ".dockerignore",
        ),
        (
            "FROM {B} AS one\nONBUILD RUN exit 5\nFROM one\n",
            "Dockerfile:3",
            "exit code: 5",
        ),
        ("FROM {B}\nENTRYPOINT [\"unterminated\n", "", ""),
        ("COPY a b\n", "Dockerfile:1", "FROM"),
        ("FROM Bad::Ref\n", "Dockerfile:1", "invalid image reference"),
    ];
    for (i, (df, line, what)) in cases.iter().enumerate() {
        let ctx = tempfile::tempdir().unwrap();
        write_context(
            ctx.path(),
            &[
                (
                    "Dockerfile",
                    &df.replace("{B}", &format!("{}/base:1", reg.host)),
                ),
                ("ignored.txt", "x"),
                (".dockerignore", "ignored.txt\n"),
            ],
        );
        let dest = format!("{}/fail{i}:1", reg.host);
        let out = executor(&[
            "--context",
            ctx.path().to_str().unwrap(),
            "--destination",
            &dest,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if line.is_empty() {
            // Invalid JSON is shell form in BuildKit: valid, and pushed.
            assert_ok(&out);
            continue;
        }
        assert!(!out.status.success(), "case {i} must fail: {stderr}");
        assert!(
            stderr.contains(line) && stderr.contains(what),
            "case {i}: wanted {line} and {what:?} in: {stderr}"
        );
        assert_nothing_pushed(&reg, &format!("fail{i}:1"), &format!("case {i}"));
    }
}

/// Random data takes Kiln's stored-block path in gzip; Docker's own decoder must
/// read it back byte for byte.
#[test]
fn incompressible_layers_decode_in_docker() {
    use sha2::{Digest, Sha256};
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let ctx = tempfile::tempdir().unwrap();
    let noise = Noise::bytes(0x9e3779b97f4a7c15, 3 * 1024 * 1024 + 17);
    // Noise, then text, then noise: stored and deflated chunks alternate.
    let mut mixed = noise.clone();
    mixed.extend(std::iter::repeat_n(b"some text ".iter().copied(), 60_000).flatten());
    mixed.extend_from_slice(&noise[..1_000_000]);
    std::fs::write(ctx.path().join("mixed.bin"), &mixed).unwrap();
    let df = format!("FROM {}/base:1\nCOPY mixed.bin /data/mixed.bin\nENTRYPOINT [\"/bin/busybox\", \"sha256sum\", \"/data/mixed.bin\"]\n", reg.host);
    std::fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    let dest = format!("{}/noise:1", reg.host);
    assert_ok(&executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
    ]));
    let want = hex::encode(Sha256::digest(&mixed));
    let got = docker_run(&dest, &[]);
    assert!(
        got.starts_with(&want),
        "docker read {got:?}, expected {want}"
    );
}

/// A base that is an OCI index resolves to the build platform (or --custom-platform).
#[test]
fn image_indexes_resolve_to_the_platform() {
    use kiln::image::spec::{Descriptor, Platform, MT_DOCKER_MANIFEST, MT_OCI_INDEX};
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let layer = make_layer(
            dir.path(),
            arch,
            &[E::File("plat", 0o644, format!("{arch}\n").into_bytes())],
        );
        let digest = push_image(
            &reg,
            &format!("multi:{arch}"),
            &[layer],
            serde_json::json!({}),
        );
        let raw = runtime()
            .block_on(client().manifest(&reg.reference(&format!("multi:{arch}"))))
            .unwrap();
        entries.push(Descriptor {
            media_type: MT_DOCKER_MANIFEST.into(),
            digest: digest.parse().expect("digest"),
            size: raw.bytes.len() as u64,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: (arch == "arm64").then(|| "v8".into()),
            }),
            annotations: None,
            urls: None,
        });
    }
    let index =
        serde_json::json!({ "schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries });
    runtime()
        .block_on(client().put_manifest(
            &reg.reference("multi:latest"),
            index.to_string().as_bytes(),
            MT_OCI_INDEX,
        ))
        .unwrap();

    let ctx = tempfile::tempdir().unwrap();
    write_context(
        ctx.path(),
        &[
            (
                "Dockerfile",
                &format!("FROM {}/multi:latest\nCOPY a /a\n", reg.host),
            ),
            ("a", "a\n"),
        ],
    );
    for (flags, want) in [
        (vec![], "amd64\n"),
        (vec!["--custom-platform", "linux/arm64"], "arm64\n"),
    ] {
        let tag = want.trim();
        assert_ok(&build_with(
            ctx.path(),
            &format!("{}/out:{tag}", reg.host),
            &flags,
        ));
        let img = pull(&reg, &format!("out:{tag}"));
        assert_eq!(
            img.files["plat"].digest,
            kiln::image::Digest::sha256_of(want.as_bytes()).to_string(),
            "{flags:?}"
        );
        assert_eq!(
            img.config.architecture, tag,
            "an explicit platform labels the result, as BuildKit labels it"
        );
    }
    let out = build_with(
        ctx.path(),
        &format!("{}/out:s390x", reg.host),
        &["--custom-platform", "linux/s390x"],
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && e.contains("no manifest for platform linux/s390x")
            && e.contains("linux/arm64"),
        "{e}"
    );
}

/// `--reproducible`: two builds at different times, of files with different
/// mtimes, give one digest (timestamps zeroed in layers and config, as Kaniko
/// does); without it the digests differ, so the check can fail.
#[test]
fn reproducible_builds_give_one_digest() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let ctx = tempfile::tempdir().unwrap();
    write_context(
        ctx.path(),
        &[
            (
                "Dockerfile",
                &format!(
                    "FROM {}/base:1\nCOPY a.txt dir /app/\nWORKDIR /w\n",
                    reg.host
                ),
            ),
            ("a.txt", "same bytes\n"),
            ("dir/b.txt", "b\n"),
        ],
    );
    let touch = |stamp: &str| {
        for f in ["a.txt", "dir/b.txt", "dir"] {
            let st = std::process::Command::new("touch")
                .args(["-d", stamp])
                .arg(ctx.path().join(f))
                .status()
                .unwrap();
            assert!(st.success());
        }
    };
    let mut digests = Vec::new();
    for (i, (stamp, flags)) in [
        ("2001-01-01 00:00:00", &["--reproducible"][..]),
        ("2011-11-11 11:11:11", &["--reproducible"][..]),
        ("2021-02-02 02:02:02", &[][..]),
    ]
    .iter()
    .enumerate()
    {
        touch(stamp);
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        assert_ok(&build_with(
            ctx.path(),
            &format!("{}/repro:{i}", reg.host),
            flags,
        ));
        digests.push(tag_digest(&reg, &format!("repro:{i}")));
    }
    assert_eq!(digests[0], digests[1], "--reproducible gives one digest");
    assert_ne!(digests[0], digests[2], "without it, times show");
}

/// Kaniko's output and logging flags: name files with and without the tag,
/// written under `--no-push` too; `--context-sub-path`; `--verbosity=warn`
/// hides info lines; `--log-timestamp` starts lines with the time; a knob
/// Kiln has no use for gets a notice, one it cannot honour stops the build.
#[test]
fn kaniko_output_and_logging_flags() {
    let ctx = tempfile::tempdir().unwrap();
    write_context(
        ctx.path(),
        &[
            ("app/Dockerfile", "FROM scratch\nCOPY f /f\n"),
            ("app/f", "x\n"),
        ],
    );
    let out_dir = tempfile::tempdir().unwrap();
    let name = out_dir.path().join("name");
    let tagged = out_dir.path().join("tagged");
    let c = ctx.path().display().to_string();
    let n = format!("--image-name-with-digest-file={}", name.display());
    let t = format!("--image-name-tag-with-digest-file={}", tagged.display());
    let out = executor(&[
        "--context",
        &c,
        "--context-sub-path=app",
        "--no-push=TRUE",
        "--destination=r.example/team/app:v1",
        "--destination=r.example/team/app",
        &n,
        &t,
        "--log-timestamp",
        "--snapshotMode=redo",
    ]);
    assert_ok(&out);
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        std::fs::read_to_string(&name).unwrap(),
        format!("r.example/team/app@{digest}\nr.example/team/app@{digest}\n")
    );
    assert_eq!(
        std::fs::read_to_string(&tagged).unwrap(),
        format!("r.example/team/app:v1@{digest}\nr.example/team/app:latest@{digest}\n")
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("20") && first.contains("Z INFO "),
        "{err}"
    );
    assert!(err.contains("--snapshot-mode: "), "{err}");
    let quiet = executor(&[
        "--context",
        &c,
        "--context-sub-path=app",
        "--no-push",
        "--verbosity=warn",
    ]);
    assert_ok(&quiet);
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("INFO"),
        "warn shows no info lines"
    );
    let refused = executor(&[
        "--context",
        &c,
        "--context-sub-path=app",
        "--no-push",
        "--compression=lz4",
    ]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--compression lz4") && err.contains("gzip or zstd"),
        "{err}"
    );
}

/// The README's first command, as written there (the executor under test for
/// `cargo run`, the tarball in a temporary directory): the tarball loads with
/// the `--destination` name and the image runs and prints the message.
#[test]
fn the_readme_example_loads_and_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("cargo run --release --bin executor -- "))
        .expect("the README's first command");
    let mut args: Vec<String> = line
        .trim_start_matches("cargo run --release --bin executor -- ")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let out_dir = tempfile::tempdir().unwrap();
    let tar = out_dir.path().join("example.tar");
    let at = args
        .iter()
        .position(|a| a == "--tar-path")
        .expect("--tar-path");
    args[at + 1] = tar.to_str().unwrap().to_string();
    let dest = args
        .iter()
        .position(|a| a == "--destination")
        .map(|i| args[i + 1].clone())
        .expect("the example names its image");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
        .args(&args)
        .current_dir(root)
        .output()
        .unwrap();
    assert_ok(&out);
    require_docker_engine();
    let name = dest.trim_end_matches(":latest");
    let _ = docker().args(["rmi", "-f", name]).output();
    let load = run_ok(
        docker().args(["load", "-i", tar.to_str().unwrap()]),
        "docker load",
    );
    assert!(
        String::from_utf8_lossy(&load.stdout).contains(&format!("Loaded image: {dest}")),
        "{}",
        String::from_utf8_lossy(&load.stdout)
    );
    let run = run_ok(docker().args(["run", "--rm", name]), "docker run");
    let _ = docker().args(["rmi", "-f", name]).output();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "hello from a Kiln-built image\n"
    );
    assert!(readme.contains("docker load -i example.tar && docker run --rm kiln-example"));
}

/// The argument vector Skaffold's kaniko builder makes (`pkg/skaffold/build/
/// kaniko/args.go`: flag and value as separate words, `--snapshotMode`,
/// `--tarPath`, `--whitelist-var-run`, the context as `dir://`), and Kaniko's
/// `--annotation` on the manifest.
#[test]
fn skaffold_kaniko_args_and_annotations() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "ones/base:1");
    let ctx = tempfile::tempdir().unwrap();
    write_context(
        ctx.path(),
        &[(
            "Dockerfile",
            &format!(
                "FROM {}/ones/base:1 AS app\nARG GREETING\nRUN echo $GREETING > /greeting\n",
                reg.host
            ),
        )],
    );
    let out_dir = tempfile::tempdir().unwrap();
    let file = |n: &str| out_dir.path().join(n).to_str().unwrap().to_string();
    let tag = format!("{}/skaffold/app:v1", reg.host);
    let context = format!("dir://{}", ctx.path().display());
    let cache_repo = format!("{}/skaffold/cache", reg.host);
    let args = [
        "--destination",
        &tag,
        "--dockerfile",
        "Dockerfile",
        "--context",
        &context,
        "--build-arg",
        "GREETING=hi from skaffold",
        "--cache",
        "--cache-repo",
        &cache_repo,
        "--cache-ttl",
        "6h",
        "--target",
        "app",
        "--cleanup",
        "--digest-file",
        &file("digest"),
        "--force",
        "--image-name-with-digest-file",
        &file("names"),
        "--insecure",
        "--insecure-pull",
        "--log-format",
        "text",
        "--log-timestamp",
        "--reproducible",
        "--skip-tls-verify",
        "--skip-tls-verify-registry",
        &reg.host,
        "--skip-tls-verify-pull",
        "--skip-unused-stages",
        "--snapshotMode",
        "redo",
        "--tarPath",
        &file("image.tar"),
        "--use-new-run",
        "--verbosity",
        "info",
        "--whitelist-var-run",
        "--insecure-registry",
        &reg.host,
        "--label",
        "team=kiln",
        "--annotation",
        "org.opencontainers.image.source=https://example.test/app",
    ];
    let out = executor(&args);
    assert_ok(&out);
    let digest = std::fs::read_to_string(file("digest")).unwrap();
    assert_eq!(tag_digest(&reg, "skaffold/app:v1"), digest);
    assert_eq!(
        std::fs::read_to_string(file("names")).unwrap(),
        format!("{}/skaffold/app@{digest}\n", reg.host)
    );
    assert!(std::path::Path::new(&file("image.tar")).exists());
    let img = pull(&reg, "skaffold/app:v1");
    assert_eq!(
        img.files["greeting"].size,
        "hi from skaffold\n".len() as u64
    );
    assert_eq!(
        img.raw_config["config"]["Labels"]["team"].as_str(),
        Some("kiln")
    );
    let annotations = img.manifest.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("org.opencontainers.image.source")
            .map(String::as_str),
        Some("https://example.test/app")
    );
    // Knobs Kiln has no use for were named once each, not silently dropped.
    let err = String::from_utf8_lossy(&out.stderr);
    for knob in [
        "--snapshot-mode",
        "--use-new-run",
        "--force",
        "--ignore-var-run",
    ] {
        assert!(err.contains(knob), "{knob}: {err}");
    }
}

/// Kaniko's `--ignore-path`: what a RUN writes there stays out of its layer.
#[test]
fn ignore_path_leaves_run_changes_out() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "ones/base:1");
    let files = [(
        "Dockerfile",
        format!(
            "FROM {}/ones/base:1\nRUN mkdir -p /var/cache/app && echo x > /var/cache/app/blob && echo y > /kept\n",
            reg.host
        ),
    )];
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let dest = format!("{}/ignored/app:1", reg.host);
    assert_ok(&build_files(
        &files,
        &dest,
        &["--ignore-path", "/var/cache/"],
    ));
    let img = pull(&reg, "ignored/app:1");
    assert!(img.files.contains_key("kept"));
    assert!(
        !img.files.contains_key("var/cache/app/blob"),
        "{:?}",
        img.files.keys()
    );
    let out = build_files(&files, &dest, &["--ignore-path", "/"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ignore-path /: ignoring /"));
}

/// `--single-snapshot`: the stage's own layers become one above the base's,
/// and the filesystem the oracle flattens is the one the layered build gives
/// (files replaced, removed from the stage and from the base, a directory
/// removed and made again); the history marks one entry as the layer's.
#[test]
fn single_snapshot_merges_the_stage_layers_into_one() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "ones/base:1");
    let files = [
        (
            "Dockerfile".to_string(),
            format!(
                "FROM {}/ones/base:1\n\
                 RUN mkdir -p /app/d && echo a > /app/a && echo old > /app/old && echo x > /app/d/x\n\
                 COPY f /app/f\n\
                 RUN rm /app/old /etc/group && echo b > /app/a && rm -r /app/d && mkdir /app/d && echo y > /app/d/y\n\
                 RUN ln /app/a /app/a-link\n\
                 WORKDIR /w\n",
                reg.host
            ),
        ),
        ("f".to_string(), "copied\n".to_string()),
    ];
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let layered = format!("{}/snap/layered:1", reg.host);
    let single = format!("{}/snap/single:1", reg.host);
    assert_ok(&build_files(&files, &layered, &[]));
    assert_ok(&build_files(&files, &single, &["--single-snapshot"]));
    let a = pull(&reg, "snap/layered:1");
    let b = pull(&reg, "snap/single:1");
    let base_layers = 3;
    assert_eq!(a.manifest.layers.len(), base_layers + 5, "layered");
    assert_eq!(b.manifest.layers.len(), base_layers + 1, "merged");
    assert_eq!(a.files, b.files, "the same filesystem");
    assert!(!b.files.contains_key("etc/group") && !b.files.contains_key("app/d/x"));
    // Docker applies the merged layer the same way.
    assert_eq!(
        docker_run(
            &layered,
            &[
                "sh",
                "-c",
                "cat /app/a /app/d/y; ls /app/d; test -e /etc/group || echo gone"
            ]
        ),
        "b\ny\ny\ngone\n",
        "layered"
    );
    assert_eq!(
        docker_run(
            &single,
            &[
                "sh",
                "-c",
                "cat /app/a /app/d/y; ls /app/d; test -e /etc/group || echo gone"
            ]
        ),
        "b\ny\ny\ngone\n"
    );
    let with_layer = b.raw_config["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"].as_bool() != Some(true))
        .count();
    assert_eq!(
        with_layer,
        b.manifest.layers.len(),
        "one history entry per layer"
    );
    assert_eq!(
        b.raw_config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        base_layers + 1
    );
}

/// `--compression=zstd`: new layers are zstd, the image goes OCI (base layers
/// under OCI's gzip type), and the oracle (reading zstd with Debian's
/// python3-zstandard) flattens it to what the gzip build gives.
#[test]
fn zstd_layers_make_an_oci_image_with_the_same_files() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "ones/base:1");
    let files = [
        (
            "Dockerfile".to_string(),
            format!(
                "FROM {}/ones/base:1\nRUN mkdir /app && echo built > /app/built && rm /etc/group\nCOPY f /app/f\n",
                reg.host
            ),
        ),
        ("f".to_string(), "copied\n".repeat(1000)),
    ];
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let gz = format!("{}/comp/gzip:1", reg.host);
    let zst = format!("{}/comp/zstd:1", reg.host);
    assert_ok(&build_files(&files, &gz, &[]));
    assert_ok(&build_files(
        &files,
        &zst,
        &["--compression=zstd", "--compression-level=5"],
    ));
    let a = pull(&reg, "comp/gzip:1");
    let b = pull(&reg, "comp/zstd:1");
    assert_eq!(a.files, b.files);
    assert_eq!(
        b.manifest.media_type.as_deref(),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    let types: Vec<&str> = b
        .manifest
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ]
    );
    assert_eq!(
        b.manifest.config.media_type,
        "application/vnd.oci.image.config.v1+json"
    );
}

/// Stages FROM one base fetch its manifest and config at once into the session's
/// one blob dir (issue 31: `bad config: EOF while parsing a value` when one fetch
/// truncated the file another was reading). Many fetches of one large config
/// into one dir, several rounds: every one must read a whole config.
#[test]
fn concurrent_fetches_of_one_base_read_whole_configs() {
    let reg = TestRegistry::start();
    // A config of a few MB arrives in many chunks, so writes and reads overlap.
    let big = "x".repeat(4 << 20);
    push_busybox_base_with(
        &reg,
        "base:1",
        serde_json::json!({ "Labels": { "big": big } }),
    );
    let reference = reg.reference("base:1");
    let platform = kiln::image::spec::Platform::parse("linux/amd64").unwrap();
    let registry = client();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        for round in 0..4 {
            let fetches = (0..24)
                .map(|_| kiln::source::remote::fetch(&registry, &reference, &platform, dir.path()));
            for (i, r) in futures_util::future::join_all(fetches)
                .await
                .into_iter()
                .enumerate()
            {
                let image = r.unwrap_or_else(|e| panic!("round {round}, fetch {i}: {e}"));
                assert_eq!(image.layers.len(), 3);
            }
        }
    });
    // Nothing of the fetches is left behind in the shared dir.
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
}

/// Kaniko's fork's `--dryrun` prints the plan — the stages the target needs,
/// with their steps — and stops: nothing is fetched (the base's registry does
/// not exist), built or pushed; `--pre-cleanup` (also `KANIKO_PRE_CLEANUP`)
/// gets a notice as Kiln's other unused knobs do.
#[test]
fn kaniko_fork_dryrun_and_pre_cleanup() {
    let ctx = tempfile::tempdir().unwrap();
    write_context(
        ctx.path(),
        &[
            (
                "Dockerfile",
                "FROM nowhere.invalid/base:1 AS build\nRUN make\nFROM nowhere.invalid/other:1 AS unused\nFROM scratch\nCOPY --from=build /out /out\n",
            ),
            ("f", "x\n"),
        ],
    );
    let c = ctx.path().display().to_string();
    let out = executor(&[
        "--context",
        &c,
        "--destination=nowhere.invalid/app:1",
        "--dryrun",
        "--pre-cleanup",
    ]);
    assert_ok(&out);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        plan,
        "stage 0: FROM nowhere.invalid/base:1 AS build\n  RUN make\nstage 2 (target): FROM scratch\n  COPY --from=build /out /out\n"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--pre-cleanup: ") && err.contains("ignored"),
        "{err}"
    );
    // The environment variable the fork documents, and no destination needed.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
        .args(["--context", &c, "--dryrun=true"])
        .env("KANIKO_PRE_CLEANUP", "true")
        .output()
        .expect("run executor");
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pre-cleanup: "));
}

/// Kaniko's fork's `--image-format=docker|oci` sets the manifest's, config's and
/// every layer's media types, the base's included; zstd under `docker` falls
/// back to gzip with a warning, as the fork does.
#[test]
fn kaniko_fork_image_format() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let ctx = tempfile::tempdir().unwrap();
    write_context(
        ctx.path(),
        &[
            (
                "Dockerfile",
                &format!("FROM {}/base:1\nCOPY f /f\n", reg.host),
            ),
            (
                "oci/Dockerfile",
                &format!("FROM {}/oci:1\nCOPY f /g\n", reg.host),
            ),
            ("f", "x\n"),
            ("oci/f", "y\n"),
        ],
    );
    let build = |dir: &std::path::Path, dest: &str, extra: &[&str]| {
        let c = dir.display().to_string();
        let d = format!("{}/{dest}", reg.host);
        let mut args = vec!["--context", c.as_str(), "--destination", d.as_str()];
        args.extend(extra);
        let out = executor(&args);
        assert_ok(&out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let types = |img: &Pulled| {
        let mut t = vec![
            img.manifest.media_type.clone().unwrap_or_default(),
            img.manifest.config.media_type.clone(),
        ];
        t.extend(img.manifest.layers.iter().map(|l| l.media_type.clone()));
        t.dedup();
        t
    };
    // The busybox base is Docker's: --image-format=oci makes all of it OCI's.
    build(ctx.path(), "oci:1", &["--image-format=oci"]);
    let oci = pull(&reg, "oci:1");
    assert_eq!(oci.manifest.layers.len(), 4);
    assert_eq!(
        types(&oci),
        [
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip"
        ]
    );
    // Without the flag the result keeps its base's format.
    build(&ctx.path().join("oci"), "keeps:1", &[]);
    assert_eq!(types(&pull(&reg, "keeps:1")), types(&oci));
    // From that OCI base, --image-format=docker makes all of it Docker's, and
    // zstd, which Docker's types cannot name, is gzip.
    let err = build(
        &ctx.path().join("oci"),
        "docker:1",
        &["--image-format", "docker", "--compression=zstd"],
    );
    assert!(err.contains("no zstd layer media type"), "{err}");
    let docker = pull(&reg, "docker:1");
    assert_eq!(
        types(&docker),
        [
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        ]
    );
    assert_eq!(docker.files["g"].size, 2);
    let bad = executor(&["--context", ".", "--no-push", "--image-format=v2"]);
    assert!(!bad.status.success());
}
