//! Multi-platform builds (issue 29): `--custom-platform=linux/amd64,linux/arm64`
//! pushes one OCI index. Each platform's image is compared with BuildKit v0.21's
//! (`--opt platform=…`, recorded in `testdata/references/platforms/`): files,
//! owners, config, platform. RUN in the arm64 stage
//! runs through binfmt_misc (qemu-user-static registered with the F flag; .ci/binfmt
//! does it), in the namespace sandbox that pivots into the stage's root.
//!
//! The base is Debian's busybox-static twice: the host's for amd64 and the arm64
//! package from the Debian mirror (integration/fixtures/busybox-arch.sh, cached
//! under /var/tmp), pushed as one index.

mod common;

use common::*;
use kiln::image::spec::{Descriptor, Platform, MT_DOCKER_MANIFEST, MT_OCI_INDEX};
use std::path::{Path, PathBuf};
use std::process::Command;

const PLATFORMS: &str = "linux/amd64,linux/arm64";
const ARCHES: [(&str, &str); 2] = [("amd64", "x86_64"), ("arm64", "aarch64")];

/// Debian's busybox-static for `arch`: the host's package for amd64, else
/// fetched by integration/fixtures/busybox-arch.sh and kept under /var/tmp
/// keyed by that script's content.
fn busybox_for(arch: &str) -> PathBuf {
    use sha2::Digest;
    if arch == "amd64" {
        return busybox();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/fixtures/busybox-arch.sh");
    let mut h = sha2::Sha256::new();
    h.update(std::fs::read(&script).expect("read busybox-arch.sh"));
    h.update(arch.as_bytes());
    let key = hex::encode(h.finalize());
    let dir = PathBuf::from("/var/tmp/kilnfixtures");
    std::fs::create_dir_all(&dir).expect("mkdir /var/tmp/kilnfixtures");
    let out = dir.join(format!("busybox-{arch}-{}", &key[..16]));
    let lock = std::fs::File::create(dir.join(format!("busybox-{arch}-{}.lock", &key[..16])))
        .expect("lock file");
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("flock");
    if !out.exists() {
        run_ok(
            Command::new("bash").arg(&script).arg(arch).arg(&out),
            "fetching busybox-static for the fixture",
        );
    }
    out
}

/// Fails unless aarch64 binaries run here through binfmt_misc with the F flag.
fn require_aarch64_handler() {
    let entry = Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64");
    let text = std::fs::read_to_string(entry).unwrap_or_default();
    assert!(
        text.starts_with("enabled") && text.lines().any(|l| l.starts_with("flags:") && l.contains('F')),
        "no aarch64 handler with the F flag in /proc/sys/fs/binfmt_misc ({text:?}): run .ci/binfmt (qemu-user-static; .ci/run does this)"
    );
}

/// The multi-arch base: per architecture a usr-merged busybox root (`sh`,
/// `uname`, `cat`, `echo`, `mkdir` linked to it) and /etc/passwd, pushed as
/// `base:ARCH`, and the index of both as `base:multi`. Returns `HOST/base:multi`.
fn push_multiarch_base(reg: &TestRegistry) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = Vec::new();
    for (arch, _) in ARCHES {
        let layer = make_layer(
            dir.path(),
            arch,
            &[
                E::Link("bin", "usr/bin"),
                E::Dir("etc", 0o755),
                E::File(
                    "etc/passwd",
                    0o644,
                    b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
                ),
                E::Dir("tmp", 0o1777),
                E::Dir("usr", 0o755),
                E::Dir("usr/bin", 0o755),
                E::Host("usr/bin/busybox", 0o755, busybox_for(arch)),
                E::Link("usr/bin/cat", "busybox"),
                E::Link("usr/bin/echo", "busybox"),
                E::Link("usr/bin/mkdir", "busybox"),
                E::Link("usr/bin/sh", "busybox"),
                E::Link("usr/bin/uname", "busybox"),
            ],
        );
        let tag = format!("base:{arch}");
        let digest = push_image(
            reg,
            &tag,
            &[layer],
            serde_json::json!({"architecture": arch}),
        );
        let raw = runtime()
            .block_on(client().manifest(&reg.reference(&tag)))
            .unwrap();
        entries.push(Descriptor {
            media_type: MT_DOCKER_MANIFEST.into(),
            digest: digest.parse().expect("digest"),
            size: raw.bytes.len() as u64,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: None,
            }),
            annotations: None,
            urls: None,
        });
    }
    let index =
        serde_json::json!({ "schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries });
    runtime()
        .block_on(client().put_manifest(
            &reg.reference("base:multi"),
            index.to_string().as_bytes(),
            MT_OCI_INDEX,
        ))
        .unwrap();
    format!("{}/base:multi", reg.host)
}

/// A context holding `dockerfile` (`{BASE}` replaced) and a file `f`.
fn context(dockerfile: &str, base: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    write_context(
        ctx.path(),
        &[
            ("Dockerfile", &dockerfile.replace("{BASE}", base)),
            ("f", "f\n"),
        ],
    );
    ctx
}

/// Kiln's multi-platform build of `ctx` to `HOST/kiln-NAME:1`; its log.
fn kiln_build(reg: &TestRegistry, ctx: &Path, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["--custom-platform", PLATFORMS];
    args.extend_from_slice(extra);
    let out = build_with(ctx, &format!("{}/kiln-{name}:1", reg.host), &args);
    assert_ok(&out);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The manifest `HOST/REPO_TAG` names, as JSON.
fn manifest_json(reg: &TestRegistry, repo_tag: &str) -> serde_json::Value {
    let raw = runtime()
        .block_on(client().manifest(&reg.reference(repo_tag)))
        .expect("manifest");
    serde_json::from_slice(&raw.bytes).expect("manifest json")
}

/// The pushed index: one manifest per platform, each descriptor with its platform.
fn assert_index(reg: &TestRegistry, repo_tag: &str) {
    let index = manifest_json(reg, repo_tag);
    assert_eq!(index["mediaType"], MT_OCI_INDEX, "{index}");
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or(""),
                m["platform"]["architecture"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{index}");
}

/// Config fields Kiln and BuildKit must agree on: all but the times (the
/// layers' diff_ids hold file times too, so only their number counts).
fn comparable_config(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    let layers = v["rootfs"]["diff_ids"].as_array().map_or(0, Vec::len);
    v["rootfs"]["diff_ids"] = layers.into();
    if let Some(o) = v.as_object_mut() {
        o.remove("created");
    }
    if let Some(h) = v["history"].as_array_mut() {
        for e in h {
            if let Some(o) = e.as_object_mut() {
                o.remove("created");
            }
        }
    }
    v
}

/// BuildKit's build of the same context for both platforms (recorded in
/// `testdata/references/platforms/`, see `common::reference`); then per
/// platform the same files (type, mode, owner, content) and config (platform
/// included), but for the content of the files `varies` names. Kiln's
/// images, and BuildKit's as recorded.
fn compare_with_buildkit(
    reg: &TestRegistry,
    ctx: &Path,
    name: &str,
    varies: &[&str],
) -> Vec<(Pulled, Image)> {
    let dockerfile = std::fs::read_to_string(ctx.join("Dockerfile")).expect("read Dockerfile");
    // The busybox of each architecture is the host's or the mirror's.
    let mut ph = Placeholders::default()
        .text(&reg.host, "{REG}")
        .content(dockerfile.as_bytes(), "{DOCKERFILE}");
    for (arch, _) in ARCHES {
        let bytes = std::fs::read(busybox_for(arch)).expect("read busybox");
        ph = ph.content(&bytes, &format!("{{BUSYBOX_{arch}}}"));
    }
    let recorded_images: Vec<Image> = recorded("platforms", name, &ph.apply(&dockerfile), || {
        let mut cmd = buildkit_command(
            ctx,
            &ctx.join("Dockerfile"),
            &format!("{}/bk-{name}:1", reg.host),
        );
        cmd.args(["--opt", &format!("platform={PLATFORMS}")]);
        run_ok(&mut cmd, "BuildKit");
        ARCHES
            .iter()
            .map(|(arch, _)| {
                Image::of(
                    &pull_arch(reg, &format!("bk-{name}:1"), arch),
                    &ph,
                    0,
                    varies,
                )
            })
            .collect()
    });
    let mut out = Vec::new();
    for ((arch, _), bk) in ARCHES.iter().zip(recorded_images) {
        let pulled = pull_arch(reg, &format!("kiln-{name}:1"), arch);
        let kiln = Image::of(&pulled, &ph, 0, varies);
        for (path, f) in &bk.files {
            assert_eq!(kiln.files.get(path), Some(f), "{name} {arch}: /{path}");
        }
        let extra: Vec<&String> = kiln
            .files
            .keys()
            .filter(|p| !bk.files.contains_key(*p))
            .collect();
        assert!(extra.is_empty(), "{name} {arch}: only Kiln has {extra:?}");
        assert_eq!(
            comparable_config(&kiln.raw_config),
            comparable_config(&bk.raw_config),
            "{name} {arch}: config (Kiln, then BuildKit)"
        );
        assert_eq!(pulled.config.architecture, *arch, "{name}");
        out.push((pulled, bk));
    }
    out
}

/// The content digest of `text`, as the oracle reports a file's.
fn digest_of(text: &str) -> String {
    sha256_of(text.as_bytes())
}

/// `docker run --platform P IMAGE ARGS` after a pull for that platform.
fn docker_run_platform(image: &str, platform: &str, args: &[&str]) -> String {
    require_docker_engine();
    run_ok(
        docker().args(["pull", "-q", "--platform", platform, image]),
        &format!("docker pull --platform {platform} {image}"),
    );
    let out = docker()
        .args([
            "run",
            "--rm",
            "--network",
            "host",
            "--platform",
            platform,
            image,
        ])
        .args(args)
        .output()
        .expect("docker run");
    let _ = docker().args(["rmi", "-f", image]).output();
    assert!(
        out.status.success(),
        "docker run --platform {platform} {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `RUN uname -m` runs natively for amd64 and through qemu for arm64; the
/// pushed index runs under docker on both platforms.
#[test]
fn run_is_emulated_for_arm64() {
    require_aarch64_handler();
    let reg = TestRegistry::start();
    let base = push_multiarch_base(&reg);
    let ctx = context(
        "FROM {BASE}\nRUN uname -m > /arch\nCMD [\"cat\", \"/arch\"]\n",
        &base,
    );
    let digest_file = ctx.path().join("digest");
    let log = kiln_build(
        &reg,
        ctx.path(),
        "uname",
        &["--digest-file", digest_file.to_str().unwrap()],
    );
    assert!(
        log.contains("[linux/arm64 "),
        "steps name their platform: {log}"
    );
    // So do their end lines and the summary, or two platforms' `[2/3] DONE`
    // could not be told apart.
    let ends: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("] DONE ") || l.contains("] CACHED ") || l.contains("slowest steps:")
        })
        .collect();
    assert!(!ends.is_empty(), "{log}");
    for line in ends {
        assert!(line.contains("[linux/"), "names no platform: {line}");
    }
    assert_index(&reg, "kiln-uname:1");
    assert_eq!(
        std::fs::read_to_string(&digest_file).unwrap(),
        tag_digest(&reg, "kiln-uname:1"),
        "--digest-file gives the index's digest"
    );
    for (kiln, _) in compare_with_buildkit(&reg, ctx.path(), "uname", &[]) {
        let machine = ARCHES
            .iter()
            .find(|(a, _)| *a == kiln.config.architecture)
            .map(|(_, m)| *m)
            .unwrap();
        assert_eq!(
            kiln.files["arch"].digest,
            digest_of(&format!("{machine}\n"))
        );
    }
    let image = format!("{}/kiln-uname:1", reg.host);
    for (arch, machine) in ARCHES {
        let platform = format!("linux/{arch}");
        assert_eq!(
            docker_run_platform(&image, &platform, &[]),
            format!("{machine}\n")
        );
        assert_eq!(
            docker_run_platform(&image, &platform, &["uname", "-m"]),
            format!("{machine}\n"),
            "the image's own binaries for {platform}"
        );
    }
}

/// The predefined ARGs RUN sees per platform: TARGET* the platform built,
/// BUILD* this machine.
#[test]
fn predefined_args_per_platform() {
    require_aarch64_handler();
    let reg = TestRegistry::start();
    let base = push_multiarch_base(&reg);
    let ctx = context(
        "FROM {BASE}\nARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDOS BUILDARCH\nRUN echo \"$TARGETPLATFORM $TARGETOS $TARGETARCH [$TARGETVARIANT] $BUILDPLATFORM $BUILDOS $BUILDARCH\" > /args\n",
        &base,
    );
    kiln_build(&reg, ctx.path(), "args", &[]);
    for (kiln, _) in compare_with_buildkit(&reg, ctx.path(), "args", &[]) {
        let a = &kiln.config.architecture;
        assert_eq!(
            kiln.files["args"].digest,
            digest_of(&format!("linux/{a} linux {a} [] linux/amd64 linux amd64\n")),
            "{a}"
        );
    }
}

/// A COPY-only build: the same for both platforms but the base; and it needs
/// no emulator, even for a platform none is registered for.
#[test]
fn copy_only_needs_no_emulator() {
    let reg = TestRegistry::start();
    let base = push_multiarch_base(&reg);
    let ctx = context("FROM {BASE}\nCOPY f /f\nWORKDIR /w\nENV A=1\n", &base);
    let oci = tempfile::tempdir().unwrap();
    let layout = oci.path().join("layout");
    let archive = oci.path().join("image.tar");
    kiln_build(
        &reg,
        ctx.path(),
        "copy",
        &[
            "--oci-layout-path",
            layout.to_str().unwrap(),
            "--tar-path",
            archive.to_str().unwrap(),
        ],
    );
    // --tar-path: the same layout, as an OCI archive.
    let mut names = Vec::new();
    let mut tar = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for e in tar.entries().unwrap() {
        let e = e.unwrap();
        names.push(
            e.path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string(),
        );
    }
    let index_blob = format!(
        "blobs/sha256/{}",
        tag_digest(&reg, "kiln-copy:1").trim_start_matches("sha256:")
    );
    for want in ["oci-layout", "index.json", index_blob.as_str()] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    assert_index(&reg, "kiln-copy:1");
    compare_with_buildkit(&reg, ctx.path(), "copy", &[]);
    // The layout names the index the registry got.
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["manifests"][0]["mediaType"], MT_OCI_INDEX);
    assert_eq!(
        top["manifests"][0]["digest"].as_str().unwrap(),
        tag_digest(&reg, "kiln-copy:1")
    );

    assert!(
        !Path::new("/proc/sys/fs/binfmt_misc/qemu-s390x").exists(),
        "this test needs s390x unregistered"
    );
    let out = build_files(
        &[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "f\n")],
        &format!("{}/kiln-s390x:1", reg.host),
        &["--custom-platform", "linux/amd64,linux/s390x"],
    );
    assert_ok(&out);
    let s390x = pull_arch(&reg, "kiln-s390x:1", "s390x");
    assert_eq!(s390x.config.architecture, "s390x");
    assert_eq!(s390x.files["f"].digest, digest_of("f\n"));
}

/// RUN for a platform no handler is registered for fails at plan time, naming
/// the platform and how to register one, with nothing pushed.
#[test]
fn no_emulator_fails_at_plan_time() {
    assert!(
        !Path::new("/proc/sys/fs/binfmt_misc/qemu-s390x").exists(),
        "this test needs s390x unregistered"
    );
    let reg = TestRegistry::start();
    let base = push_multiarch_base(&reg);
    let ctx = context("FROM {BASE}\nCOPY f /f\nRUN echo ran\n", &base);
    let out = build_with(
        ctx.path(),
        &format!("{}/kiln-noemu:1", reg.host),
        &["--custom-platform", "linux/amd64,linux/s390x"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("linux/s390x") && err.contains("binfmt") && err.contains("tonistiigi/binfmt"),
        "{err}"
    );
    assert!(!err.contains("[linux/amd64 "), "no step ran: {err}");
    assert_nothing_pushed(&reg, "kiln-noemu:1", "no emulator");
}

/// The cross-compile pattern: a `FROM --platform=$BUILDPLATFORM` stage whose
/// first steps do not read the target are made once for both platforms (their
/// RUN's output shows once); the "compiler" step writes TARGETARCH (a shell
/// stand-in for `GOARCH=$TARGETARCH go build`), copied into each platform's base.
#[test]
fn cross_compile_stage_is_shared() {
    let reg = TestRegistry::start();
    let base = push_multiarch_base(&reg);
    let ctx = context(
        "FROM --platform=$BUILDPLATFORM {BASE} AS build\nRUN echo shared-step-$((6*7)) && uname -m > /host\nARG TARGETOS TARGETARCH\nRUN echo \"$TARGETOS/$TARGETARCH built on $(cat /host)\" > /app\nFROM {BASE}\nCOPY --from=build /app /app\nCMD [\"cat\", \"/app\"]\n",
        &base,
    );
    let log = kiln_build(&reg, ctx.path(), "cross", &[]);
    assert_eq!(
        log.matches("shared-step-42").count(),
        1,
        "the shared RUN runs once: {log}"
    );
    for (kiln, _) in compare_with_buildkit(&reg, ctx.path(), "cross", &[]) {
        let a = &kiln.config.architecture;
        assert_eq!(
            kiln.files["app"].digest,
            digest_of(&format!("linux/{a} built on x86_64\n"))
        );
    }
    let image = format!("{}/kiln-cross:1", reg.host);
    for (arch, _) in ARCHES {
        let platform = format!("linux/{arch}");
        assert_eq!(
            docker_run_platform(&image, &platform, &[]),
            format!("{platform} built on x86_64\n")
        );
    }
}

/// One foreign platform (Kaniko's single `--custom-platform`) on every RUN
/// rung: namespaces as root on this host (D), as a non-root user in its own
/// user namespace (E) and in Kiln's image (B); traced under Docker's default
/// seccomp (A), and in the container's own root (A's in-place rung). The interpreter the kernel
/// opened at registration (the F flag) still runs after the sandbox's pivot
/// into the stage's root, and in a container that has no qemu.
#[test]
fn emulated_run_in_every_setting() {
    require_aarch64_handler();
    let reg = TestRegistry::start();
    let base = push_multiarch_base(&reg);
    let ctx = context("FROM {BASE}\nRUN uname -m > /arch\n", &base);
    for setting in Setting::RUN_CAPABLE {
        let repo = setting.repo("emulated");
        let dest = format!("{}/{repo}", reg.host);
        let out = setting.build(ctx.path(), &dest, &["--custom-platform", "linux/arm64"]);
        assert_ok(&out);
        let log = String::from_utf8_lossy(&out.stderr);
        let rung = log
            .lines()
            .find(|l| l.contains("RUN runs"))
            .unwrap_or_default();
        if setting == Setting::A {
            assert!(rung.contains("traced"), "A runs traced here: {rung}");
        }
        let img = pull_arch(&reg, &repo, "arm64");
        assert_eq!(img.config.architecture, "arm64", "{setting:?}");
        assert_eq!(
            img.files["arch"].digest,
            digest_of("aarch64\n"),
            "{setting:?}"
        );
    }
    // The in-place rung (setting A where ptrace is denied; chosen here by name).
    let scratch = tempfile::tempdir().unwrap();
    let vol = format!("{}:/scratch", scratch.path().display());
    let dest = format!("{}/emulated-inplace:1", reg.host);
    let out = in_executor_image_with(
        &[
            "-v",
            &vol,
            "-e",
            "KANIKO_DIR=/scratch",
            "-e",
            "KILN_RUN_RUNG=in-place",
        ],
        ctx.path(),
        &dest,
        &["--custom-platform", "linux/arm64"],
    );
    assert_ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("this container's own root"), "{log}");
    let img = pull_arch(&reg, "emulated-inplace:1", "arm64");
    assert_eq!(img.files["arch"].digest, digest_of("aarch64\n"), "in place");
}

/// The Go and node image of the RUN workloads (integration/workloads.rs):
/// Debian bookworm with golang-go, cached under /var/tmp.
const TOOLS: &[&str] = &["golang-go", "nodejs", "libcap2-bin"];

/// A Go program cross-compiled in a `FROM --platform=$BUILDPLATFORM` stage with
/// `GOOS=$TARGETOS GOARCH=$TARGETARCH`, copied into the multi-arch base: no
/// emulator runs the compiler, the same binary as BuildKit's per platform,
/// and each platform's image runs under docker.
#[test]
fn go_cross_compile_matches_buildkit() {
    let reg = TestRegistry::start();
    let base = push_multiarch_base(&reg);
    push_debian_base(&reg, "tools:1", TOOLS);
    let df = format!(
        "FROM --platform=$BUILDPLATFORM {r}/tools:1 AS build\nWORKDIR /src\nCOPY go.mod main.go ./\nRUN echo shared-step-$((6*7)) && go version > /go-version\nARG TARGETOS TARGETARCH\nRUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -o /out/hello .\nFROM {{BASE}}\nCOPY --from=build /out/hello /hello\nENTRYPOINT [\"/hello\"]\n",
        r = reg.host
    );
    let ctx = context(&df, &base);
    write_context(
        ctx.path(),
        &[
            ("go.mod", "module hello\n\ngo 1.19\n"),
            (
                "main.go",
                "package main\n\nimport (\n\t\"fmt\"\n\t\"runtime\"\n)\n\nfunc main() { fmt.Printf(\"hello from %s/%s\\n\", runtime.GOOS, runtime.GOARCH) }\n",
            ),
        ],
    );
    let log = kiln_build(&reg, ctx.path(), "go", &[]);
    assert_eq!(
        log.matches("shared-step-42").count(),
        1,
        "the shared RUN runs once: {log}"
    );
    // The program is as the fixture's Go toolchain (the mirror's of the day)
    // compiles it: its content is not recorded; running it checks it.
    compare_with_buildkit(&reg, ctx.path(), "go", &["hello"]);
    let image = format!("{}/kiln-go:1", reg.host);
    for (arch, _) in ARCHES {
        let platform = format!("linux/{arch}");
        assert_eq!(
            docker_run_platform(&image, &platform, &[]),
            format!("hello from {platform}\n")
        );
    }
}

/// With `--cache`, each platform's steps are entries of their own (the key
/// carries the platform): a rebuild takes every RUN from the cache, and each
/// platform's image keeps its own layer.
#[test]
fn each_platforms_steps_are_cached() {
    require_aarch64_handler();
    let reg = TestRegistry::start();
    let base = push_multiarch_base(&reg);
    let ctx = context("FROM {BASE}\nRUN uname -m > /arch\nCOPY f /f\n", &base);
    let repo = format!("{}/cache", reg.host);
    let cache = ["--cache", "--cache-repo", repo.as_str()];
    let first = kiln_build(&reg, ctx.path(), "cached", &cache);
    assert_eq!(first.matches("cache miss").count(), 4, "{first}");
    let digest = tag_digest(&reg, "kiln-cached:1");
    let again = kiln_build(&reg, ctx.path(), "cached", &cache);
    assert_eq!(again.matches("cache hit").count(), 4, "{again}");
    assert_eq!(again.matches("cache miss").count(), 0, "{again}");
    for (arch, machine) in ARCHES {
        let img = pull_arch(&reg, "kiln-cached:1", arch);
        assert_eq!(
            img.files["arch"].digest,
            digest_of(&format!("{machine}\n")),
            "{arch}"
        );
    }
    // An unchanged rebuild gives the same index, as it gives the same image.
    assert_eq!(digest, tag_digest(&reg, "kiln-cached:1"));
}

/// A step that fails for one platform fails the build: no tag moves, not even
/// for the platform that built.
#[test]
fn a_failing_platform_pushes_nothing() {
    require_aarch64_handler();
    let reg = TestRegistry::start();
    let base = push_multiarch_base(&reg);
    let ctx = context(
        "FROM {BASE}\nCOPY f /f\nRUN test \"$(uname -m)\" = x86_64 || { echo not-on-$(uname -m); exit 3; }\n",
        &base,
    );
    let out = build_with(
        ctx.path(),
        &format!("{}/kiln-fails:1", reg.host),
        &["--custom-platform", PLATFORMS],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("not-on-aarch64")
            && err.contains("did not complete successfully: exit code: 3"),
        "{err}"
    );
    assert_nothing_pushed(&reg, "kiln-fails:1", "one platform failed");
}
