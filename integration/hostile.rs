//! Hostile layers: `..` and absolute names, writes through symlinks that point out
//! of the root, hardlinks to host files, loops, truncated archives. Nothing may be
//! created, changed or read outside the scratch root; the scratch root is removed.
//! And another local user: nothing Kiln keeps (scratch, cache dir) is in its reach.

mod common;

use common::*;
use kiln::layer::writer::LayerFile;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

enum Raw<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

/// Writes a layer with names exactly as given (the tar crate's builder refuses `..`).
fn raw_layer(dir: &Path, name: &str, entries: &[Raw<'_>], truncate: bool) -> LayerFile {
    let layer = tar_layer(dir, name, |b| {
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (path, link, data, kind, mode): (&str, Option<&str>, &[u8], tar::EntryType, u32) =
                match e {
                    Raw::Dir(p) => (p, None, b"", tar::EntryType::Directory, 0o755),
                    Raw::File(p, d) => (p, None, d, tar::EntryType::Regular, 0o644),
                    Raw::Symlink(p, t) => (p, Some(t), b"", tar::EntryType::Symlink, 0o777),
                    Raw::Hardlink(p, t) => (p, Some(t), b"", tar::EntryType::Link, 0o644),
                };
            let gnu = h.as_gnu_mut().expect("gnu header");
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(t) = link {
                gnu.linkname[..t.len()].copy_from_slice(t.as_bytes());
            }
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            h.set_cksum();
            b.append(&h, data).expect("append raw entry");
        }
    });
    if truncate {
        let blob = std::fs::read(&layer.path).unwrap();
        let cut = &blob[..blob.len() / 2];
        std::fs::write(&layer.path, cut).unwrap();
        return LayerFile {
            digest: kiln::image::Digest::sha256_of(cut),
            size: cut.len() as u64,
            ..layer
        };
    }
    layer
}

fn list(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.path().display().to_string())
        .collect()
}

fn build(reg: &TestRegistry, df: &str, scratch: &Path, dest: &str) -> std::process::Output {
    build_files(
        &[("Dockerfile", df), ("a.txt", "a\n")],
        &format!("{}/{dest}", reg.host),
        &["--kaniko-dir", scratch.to_str().unwrap()],
    )
}

#[test]
fn escapes_are_confined_to_the_scratch_root() {
    let reg = TestRegistry::start();
    let outside = tempfile::tempdir().unwrap();
    let out_abs = outside.path().to_str().unwrap().to_string();
    let out_rel = out_abs.trim_start_matches('/').to_string();
    let up = format!("../../../../../../../..{out_abs}");
    let dir = tempfile::tempdir().unwrap();
    let l1 = raw_layer(
        dir.path(),
        "l1",
        &[
            Raw::Dir("etc"),
            Raw::File("etc/passwd", b"root:x:0:0::/:/bin/sh\n"),
            Raw::Symlink("esc", &out_abs),
            Raw::Symlink("rel", &up),
        ],
        false,
    );
    let dotdot = format!("{up}/dotdot");
    let absolute = format!("{out_abs}/absolute");
    let l2 = raw_layer(
        dir.path(),
        "l2",
        &[
            Raw::File(&dotdot, b"dotdot\n"),
            Raw::File(&absolute, b"absolute\n"),
            Raw::File("esc/through-absolute-link", b"abs link\n"),
            Raw::File("rel/through-relative-link", b"rel link\n"),
            Raw::Hardlink("passwd-link", "/etc/passwd"),
        ],
        false,
    );
    push_image(&reg, "hostile:1", &[l1.clone(), l2], serde_json::json!({}));
    let scratch = tempfile::tempdir().unwrap();
    let hostile = format!("{}/hostile:1", reg.host);

    // Unpacked (COPY --from an image).
    let out = build(
        &reg,
        &format!("FROM scratch\nCOPY --from={hostile} / /h/\n"),
        scratch.path(),
        "unpacked:1",
    );
    assert_ok(&out);
    assert!(
        list(outside.path()).is_empty(),
        "nothing written outside: {:?}",
        list(outside.path())
    );
    assert!(
        list(scratch.path()).is_empty(),
        "scratch root removed: {:?}",
        list(scratch.path())
    );
    let img = pull(&reg, "unpacked:1");
    for name in ["dotdot", "absolute"] {
        assert!(
            img.files.contains_key(&format!("h/{out_rel}/{name}")),
            "{name} landed inside the root: {:?}",
            img.files.keys().collect::<Vec<_>>()
        );
    }
    // A layer's parents are its own directories (BuildKit, Docker): the links of
    // the lower layer are replaced, never followed.
    for path in ["h/esc/through-absolute-link", "h/rel/through-relative-link"] {
        assert_eq!(img.files[path].kind, 'f', "{path}");
    }
    assert_eq!(img.files["h/esc"].kind, 'd');
    assert_eq!(
        img.files["h/passwd-link"].digest, img.files["h/etc/passwd"].digest,
        "absolute hardlink resolved in the root"
    );

    // Only indexed (FROM an image with the links, COPY through them).
    push_image(&reg, "links:1", &[l1], serde_json::json!({}));
    let out = build(
        &reg,
        &format!(
            "FROM {}/links:1\nCOPY a.txt /esc/copied\nCOPY a.txt /rel/copied-rel\n",
            reg.host
        ),
        scratch.path(),
        "indexed:1",
    );
    assert_ok(&out);
    assert!(
        list(outside.path()).is_empty(),
        "nothing written outside: {:?}",
        list(outside.path())
    );
    let img = pull(&reg, "indexed:1");
    assert!(img.files.contains_key(&format!("{out_rel}/copied")));
    assert!(img.files.contains_key(&format!("{out_rel}/copied-rel")));
}

#[test]
fn hardlinks_to_host_files_fail_without_touching_them() {
    let reg = TestRegistry::start();
    let host_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(host_file.path(), "host secret\n").unwrap();
    let host_abs = host_file.path().to_str().unwrap().to_string();
    let before = std::fs::metadata(host_file.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rel = format!("../../../../../../..{host_abs}");
    for (i, target) in [host_abs.as_str(), rel.as_str()].iter().enumerate() {
        let l = raw_layer(
            dir.path(),
            &format!("l{i}"),
            &[Raw::Hardlink("steal", target)],
            false,
        );
        push_image(&reg, &format!("steal{i}:1"), &[l], serde_json::json!({}));
        let scratch = tempfile::tempdir().unwrap();
        let out = build(
            &reg,
            &format!(
                "FROM scratch\nCOPY --from={}/steal{i}:1 /steal /x\n",
                reg.host
            ),
            scratch.path(),
            &format!("stolen{i}:1"),
        );
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "a hardlink to a host file must not resolve: {e}"
        );
        assert!(
            e.contains("\"steal\"") && e.contains("hard link target") && e.contains("not found"),
            "fails because the target is not in the root: {e}"
        );
        assert!(
            list(scratch.path()).is_empty(),
            "scratch root removed on failure"
        );
        let after = std::fs::metadata(host_file.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (before.nlink(), before.len()),
            (after.nlink(), after.len()),
            "host file untouched"
        );
        assert_nothing_pushed(&reg, &format!("stolen{i}:1"), "host hardlink");
    }
}

#[test]
fn truncated_layers_and_link_loops_fail_cleanly() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let l = raw_layer(
        dir.path(),
        "trunc",
        &[Raw::File("data", &big), Raw::File("after", b"x")],
        true,
    );
    let digest = l.digest.clone();
    push_image(&reg, "trunc:1", &[l], serde_json::json!({}));
    let scratch = tempfile::tempdir().unwrap();
    let out = build(
        &reg,
        &format!("FROM scratch\nCOPY --from={}/trunc:1 /after /x\n", reg.host),
        scratch.path(),
        "t:1",
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains(digest.as_str()) && e.contains("Dockerfile:2"),
        "the error names the layer and line: {e}"
    );
    assert!(list(scratch.path()).is_empty());

    let l = raw_layer(
        dir.path(),
        "loop",
        &[Raw::Symlink("a", "b"), Raw::Symlink("b", "a")],
        false,
    );
    push_image(&reg, "loop:1", &[l], serde_json::json!({}));
    let out = build(
        &reg,
        &format!("FROM {}/loop:1\nCOPY a.txt /a/x\n", reg.host),
        scratch.path(),
        "l:1",
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("too many levels of symbolic links"),
        "{e}"
    );
}

/// A layer larger than the free space under the scratch root fails with a message
/// naming the cause, removes the scratch root and pushes nothing.
#[test]
fn full_disk_fails_clearly() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts a small tmpfs: run it as root (CI does)"
    );
    let reg = TestRegistry::start();
    let small = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(small.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "mount -t tmpfs failed");
    let ctx = tempfile::tempdir().unwrap();
    let noise: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(ctx.path().join("big.bin"), noise).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY big.bin /big.bin\n",
    )
    .unwrap();
    let out = executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &format!("{}/full:1", reg.host),
        "--kaniko-dir",
        small.path().to_str().unwrap(),
    ]);
    let leftover = list(small.path());
    let _ = std::process::Command::new("umount")
        .arg(small.path())
        .status();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("No space left on device") && e.contains("Dockerfile:2"),
        "{e}"
    );
    assert!(leftover.is_empty(), "scratch root removed: {leftover:?}");
    assert_nothing_pushed(&reg, "full:1", "disk full");
}

/// A registry (through the proxy) that serves a manifest whose layer "digests" are
/// host paths: `/…/host.tar.gz` (a real gzip'd tar on the host) and `sha256:../../…`.
#[test]
fn digests_are_parsed_never_used_as_paths() {
    let reg = TestRegistry::start();
    let proxy = common::proxy::FaultProxy::start(&reg.host);
    let outside = tempfile::tempdir().unwrap();
    // A real layer on the host, where a digest-as-path would find it.
    let host_layer = raw_layer(
        outside.path(),
        "host.tar.gz",
        &[Raw::File("stolen", b"host secret\n")],
        false,
    );
    let before = list(outside.path());
    let cfg = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [host_layer.diff_id.as_str()]},
    })
    .to_string();
    let cfg_digest = kiln::image::Digest::sha256_of(cfg.as_bytes());
    let forged = |layer_digest: &str| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": cfg_digest.as_str(), "size": cfg.len()},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "digest": layer_digest, "size": host_layer.size}],
        })
        .to_string()
        .into_bytes()
    };
    let mt = "application/vnd.docker.distribution.manifest.v2+json";
    let up = format!(
        "sha256:../../../../../../../..{}/escaped",
        outside.path().display()
    );
    proxy.add(
        "GET",
        "/v2/evil/manifests/abs",
        common::proxy::Fault::Body(mt, forged(host_layer.path.to_str().unwrap())),
        100,
    );
    proxy.add(
        "GET",
        "/v2/evil/manifests/up",
        common::proxy::Fault::Body(mt, forged(&up)),
        100,
    );
    proxy.add(
        "GET",
        &format!("/v2/evil/blobs/{cfg_digest}"),
        common::proxy::Fault::Body("application/octet-stream", cfg.clone().into_bytes()),
        100,
    );
    for tag in ["abs", "up"] {
        let scratch = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let ctx = tempfile::tempdir().unwrap();
        let image = format!("{}/evil:{tag}", proxy.host);
        write_context(
            ctx.path(),
            &[(
                "Dockerfile",
                &format!("FROM scratch\nCOPY --from={image} / /h/\n"),
            )],
        );
        let out = executor(&[
            "--context",
            ctx.path().to_str().unwrap(),
            "--destination",
            &format!("{}/stolen:{tag}", reg.host),
            "--kaniko-dir",
            scratch.path().to_str().unwrap(),
            "--cache-dir",
            cache_dir.path().to_str().unwrap(),
        ]);
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{tag}: must fail: {e}");
        assert!(
            e.contains("Dockerfile:2") && e.contains("invalid digest"),
            "{tag}: names the line and the bad digest: {e}"
        );
        assert_eq!(
            list(outside.path()),
            before,
            "{tag}: nothing written outside"
        );
        assert!(
            list(scratch.path()).is_empty(),
            "{tag}: scratch root removed"
        );
        assert_nothing_pushed(&reg, &format!("stolen:{tag}"), tag);
    }
}

/// `.wh..` and `.wh...` would remove the directory itself or its parent (the
/// scratch root): refused, naming the entry.
#[test]
fn whiteouts_of_dot_and_dotdot_are_refused() {
    let reg = TestRegistry::start();
    for (i, name) in ["a/.wh...", "a/.wh..", ".wh..."].iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let l1 = raw_layer(
            dir.path(),
            "l1",
            &[Raw::Dir("a"), Raw::File("a/keep", b"keep\n")],
            false,
        );
        let l2 = raw_layer(dir.path(), "l2", &[Raw::File(name, b"")], false);
        push_image(&reg, &format!("wh:{i}"), &[l1, l2], serde_json::json!({}));
        let scratch = tempfile::tempdir().unwrap();
        let sentinel = scratch.path().join("sentinel");
        std::fs::write(&sentinel, "x").unwrap();
        let out = build(
            &reg,
            &format!("FROM scratch\nCOPY --from={}/wh:{i} / /h/\n", reg.host),
            scratch.path(),
            &format!("wh-out:{i}"),
        );
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: must fail: {e}");
        assert!(
            e.contains("Dockerfile:2") && e.contains("names no file"),
            "{name}: {e}"
        );
        assert!(
            sentinel.exists(),
            "{name}: the scratch root's parent is intact"
        );
    }
}

/// Builds sharing one `--cache-dir` (one PVC, many pods) all succeed.
#[test]
fn concurrent_builds_share_a_cache_dir() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "shared:1");
    let cache_dir = tempfile::tempdir().unwrap();
    let image = format!("{}/shared:1", reg.host);
    let children: Vec<_> = (0..4)
        .map(|i| {
            let ctx = tempfile::tempdir().unwrap();
            write_context(
                ctx.path(),
                &[(
                    "Dockerfile",
                    &format!("FROM {image}\nCOPY --from={image} /etc /copied-etc\n"),
                )],
            );
            let child = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
                .args(["--context", ctx.path().to_str().unwrap()])
                // Distinct images and repositories: this is about the cache dir, not
                // about the registry's own races between identical uploads.
                .args(["--destination", &format!("{}/shared-out-{i}:1", reg.host)])
                .args(["--label", &format!("build={i}")])
                .args(["--cache-dir", cache_dir.path().to_str().unwrap()])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn executor");
            (ctx, child)
        })
        .collect();
    for (i, (_ctx, child)) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "build {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let leftovers: Vec<String> = list(cache_dir.path())
        .into_iter()
        .filter(|p| p.contains(".part"))
        .collect();
    assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");
    let pulled = pull(&reg, "shared-out-3:1");
    assert!(pulled.files.contains_key("copied-etc/passwd"));
}

/// `COPY --from` keeps the layer's owners and modes (BuildKit), whoever runs the
/// executor: root, root with every capability dropped (a Pod with `drop: [ALL]`),
/// or an unprivileged user. The unpack adapts to capabilities, not to the uid.
#[test]
fn copy_from_keeps_owners_and_modes_whatever_the_privileges() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let layer = make_layer(
        dir.path(),
        "l1",
        &[
            E::Dir("etc", 0o755),
            E::Owned("etc/shadow", 0o640, 0, 42, b"root:*:1::::::\n".to_vec()),
            E::Owned("etc/gshadow", 0o640, 0, 42, b"root:*::\n".to_vec()),
            E::Owned("big-uid", 0o644, 3_000_000, 3_000_001, b"pax\n".to_vec()),
            E::File("secret", 0o000, b"hidden\n".to_vec()),
            E::Dir("ro", 0o555),
            E::File("ro/inside", 0o444, b"inside\n".to_vec()),
        ],
    );
    push_image(&reg, "owned:1", &[layer], serde_json::json!({}));
    let setpriv = require("setpriv", "apt-get install util-linux");
    let settings: [(&str, &[&str]); 3] = [
        ("root", &[]),
        (
            "root without capabilities",
            &["--bounding-set=-all", "--inh-caps=-all"],
        ),
        (
            "uid 65532",
            &[
                "--reuid=65532",
                "--regid=65532",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ],
        ),
    ];
    for (i, (name, privs)) in settings.iter().enumerate() {
        let work = tempfile::tempdir().unwrap();
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let ctx = work.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        write_context(
            &ctx,
            &[(
                "Dockerfile",
                &format!("FROM scratch\nCOPY --from={}/owned:1 / /\n", reg.host),
            )],
        );
        let scratch = work.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o777)).unwrap();
        let dest = format!("{}/owned-out:{i}", reg.host);
        let out = std::process::Command::new(&setpriv)
            .args(*privs)
            .arg(env!("CARGO_BIN_EXE_executor"))
            .args(["--context", ctx.to_str().unwrap(), "--destination", &dest])
            .args(["--kaniko-dir", scratch.to_str().unwrap()])
            .env("DOCKER_CONFIG", work.path())
            .output()
            .expect("run executor under setpriv");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let img = pull(&reg, &format!("owned-out:{i}"));
        let f = |p: &str| {
            let e = &img.files[p];
            (e.mode, e.uid, e.gid)
        };
        assert_eq!(f("etc/shadow"), (0o640, 0, 42), "{name}");
        assert_eq!(f("etc/gshadow"), (0o640, 0, 42), "{name}");
        assert_eq!(f("big-uid"), (0o644, 3_000_000, 3_000_001), "{name}");
        assert_eq!(f("secret"), (0o000, 0, 0), "{name}");
        assert_eq!(f("ro"), (0o555, 0, 0), "{name}");
        assert_eq!(f("ro/inside"), (0o444, 0, 0), "{name}");
        assert_eq!(img.files["secret"].size, 7, "{name}: contents read");
    }
}

/// A gzip'd tar with the given (path, is_dir) entries, long names as GNU/PAX allow.
fn long_name_layer(dir: &Path, name: &str, entries: &[(String, bool)]) -> LayerFile {
    tar_layer(dir, name, |b| {
        for (path, is_dir) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(if *is_dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_mode(if *is_dir { 0o755 } else { 0o644 });
            let data: &[u8] = if *is_dir { b"" } else { b"deep\n" };
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data).expect("append");
        }
    })
}

/// Cost grows linearly with depth: 1,900 nested directories unpack well within a
/// minute (each entry used to re-check every ancestor on disk: minutes), and a
/// path longer than PATH_MAX is refused by name instead of filling memory.
#[test]
fn deep_trees_unpack_in_linear_time() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut entries = Vec::new();
    let mut p = String::from("deep");
    // 1,900 levels: 3,800 bytes, within PATH_MAX with the scratch root in front.
    for _ in 0..1900 {
        entries.push((p.clone(), true));
        p.push_str("/d");
    }
    entries.push((format!("{p}/leaf"), false));
    let deep = long_name_layer(dir.path(), "deep", &entries);
    push_image(&reg, "deep:1", &[deep], serde_json::json!({}));
    let ctx = tempfile::tempdir().unwrap();
    write_context(
        ctx.path(),
        &[(
            "Dockerfile",
            &format!(
                "FROM scratch\nCOPY --from={}/deep:1 /deep /deep\n",
                reg.host
            ),
        )],
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
        .args(["--context", ctx.path().to_str().unwrap(), "--no-push"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("1,900 nested directories took over a minute to unpack");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let too_long = format!("{}/f", "x/".repeat(2100));
    let long = long_name_layer(dir.path(), "long", &[(too_long, false)]);
    push_image(&reg, "long:1", &[long], serde_json::json!({}));
    write_context(
        ctx.path(),
        &[(
            "Dockerfile",
            &format!("FROM scratch\nCOPY --from={}/long:1 / /x/\n", reg.host),
        )],
    );
    let out = executor(&["--context", ctx.path().to_str().unwrap(), "--no-push"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("Dockerfile:2") && e.contains("longer than 4096 bytes"),
        "{e}"
    );
}

/// A context file that shrinks, or is swapped for a symlink to a host file, after
/// COPY planned it: the build fails naming the file, and nothing is pushed. The
/// change is made once the layer file exists (planning is over) while a large
/// file ahead of it is still being compressed.
#[test]
fn context_files_changed_after_planning_fail_the_build() {
    let reg = TestRegistry::start();
    let host_secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(host_secret.path(), vec![b's'; 1_000_000]).unwrap();
    for (i, change) in ["shrink", "symlink"].iter().enumerate() {
        let ctx = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        write_context(
            ctx.path(),
            &[("Dockerfile", "FROM scratch\nCOPY . /dst/\n")],
        );
        // 48 MiB that gzip cannot shrink: seconds of work before the victim is read.
        let big = Noise::bytes(0x9E37_79B9_7F4A_7C15, 48 << 20);
        std::fs::write(ctx.path().join("a-big"), &big).unwrap();
        let victim = ctx.path().join("z-victim");
        std::fs::write(&victim, vec![b'v'; 1_000_000]).unwrap();
        let dest = format!("{}/changed:{i}", reg.host);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
            .args([
                "--context",
                ctx.path().to_str().unwrap(),
                "--destination",
                &dest,
            ])
            .args(["--kaniko-dir", scratch.path().to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let layer_started = || {
            walkdir::WalkDir::new(scratch.path())
                .into_iter()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("layer-"))
        };
        while !layer_started() {
            assert!(
                std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none(),
                "{change}: the build never started its layer"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if *change == "shrink" {
            std::fs::write(&victim, vec![b'v'; 100]).unwrap();
        } else {
            std::fs::remove_file(&victim).unwrap();
            std::os::unix::fs::symlink(host_secret.path(), &victim).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{change}: the build succeeded: {err}"
        );
        assert!(
            err.contains("z-victim") && err.contains("Dockerfile:2"),
            "{change}: the file and line are named: {err}"
        );
        let cause = if *change == "shrink" {
            "found 100 bytes"
        } else {
            "found a symbolic link"
        };
        assert!(err.contains(cause), "{change}: the cause is named: {err}");
        assert_nothing_pushed(&reg, &format!("changed:{i}"), change);
    }
}

/// RUN runs on the stage's root, never the host's: what a command writes to /,
/// through a link to a host path or under /proc's root view stays out of the
/// host, and the scratch dir is gone afterwards.
#[test]
fn run_never_touches_the_host_root() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let marker = format!("/tmp/kiln-run-escape-{}", std::process::id());
    let scratch = tempfile::tempdir().unwrap();
    let df = format!(
        "FROM {}/base:1\nRUN echo inside > {marker} && ln -s / /hostroot && echo x > /hostroot{marker}-link && cat /proc/1/root{marker} > /seen\n",
        reg.host
    );
    let ctx = tempfile::tempdir().unwrap();
    write_context(ctx.path(), &[("Dockerfile", &df)]);
    let out = build_with(
        ctx.path(),
        &format!("{}/app:1", reg.host),
        &["--kaniko-dir", scratch.path().to_str().unwrap()],
    );
    assert_ok(&out);
    assert!(!Path::new(&marker).exists(), "{marker} written on the host");
    assert!(!Path::new(&format!("{marker}-link")).exists());
    let img = pull(&reg, "app:1");
    assert!(img.files.contains_key(marker.trim_start_matches('/')));
    assert_eq!(
        std::fs::read_dir(scratch.path()).unwrap().count(),
        0,
        "scratch left behind"
    );
}

/// What `nobody` got out of running `args`, unless it was refused with EACCES.
fn nobody_got(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(require("setpriv", "apt-get install util-linux"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(args)
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    (out.status.success() || !err.contains("Permission denied")).then(|| {
        format!(
            "nobody ran {args:?}: {}, stdout {:?}, stderr {err:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `p`'s mode unless it is `want`.
fn mode_not(p: &Path, want: u32, what: &str) -> Option<String> {
    let m = mode_of(p);
    (m != want).then(|| format!("{what} {} is {m:04o}, not {want:04o}", p.display()))
}

/// Directories directly in `dir`.
fn subdirs(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.path())
        .collect()
}

/// Issue 26, as an attack by another local user: a RUN leaves a setuid-root
/// busybox in a cache mount, which `nobody` could run with euid 0 while
/// `--cache-dir` was 0755. Every directory Kiln makes for its own state is 0700
/// now (the kaniko dir and cache dir Kiln made, the scratch dir and what sits
/// directly in them), so `nobody` reaches neither the cache nor, while the RUN
/// sleeps, the scratch dir's unpacked root; the cache's own root keeps
/// BuildKit's 0755 for the step. Every hole found is listed, not just the first.
#[test]
fn other_users_reach_nothing_kiln_keeps() {
    use std::os::unix::fs::MetadataExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs a build as root and probes it as nobody: run it as root (CI does)"
    );
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let t = tempfile::tempdir().unwrap();
    // nobody may walk into the test's dir: only Kiln's modes stop it.
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (kaniko, cache) = (t.path().join("kaniko"), t.path().join("cache"));
    let ctx = t.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    let df = format!(
        "FROM {}/base:1\nRUN --mount=type=cache,target=/c /bin/busybox cp /bin/busybox /c/sh && /bin/busybox chmod 4755 /c/sh && /bin/busybox sleep 8\n",
        reg.host
    );
    write_context(&ctx, &[("Dockerfile", &df)]);
    let log = t.path().join("log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
        .args(["--context", ctx.to_str().unwrap()])
        .args(["--destination", &format!("{}/app:1", reg.host)])
        .args(["--kaniko-dir", kaniko.to_str().unwrap()])
        .args(["--cache-dir", cache.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start executor");
    // Wait for the RUN to have made its setuid copy; it then sleeps.
    let started = std::time::Instant::now();
    let (scratch, suid) = loop {
        let scratch = std::fs::read_dir(&kaniko).ok().and_then(|rd| {
            rd.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("kiln-"))
            })
        });
        let suid = walkdir::WalkDir::new(cache.join("mounts"))
            .into_iter()
            .flatten()
            .map(|e| e.into_path())
            .find(|p| p.ends_with("sh") && mode_of(p) == 0o4755);
        if let (Some(scratch), Some(suid)) = (scratch, suid) {
            break (scratch, suid);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the build ended ({status}) before its RUN made the setuid copy:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(180),
            "no setuid copy in {}",
            cache.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut holes = Vec::new();
    // While the RUN runs: the scratch dir and all in it are out of reach.
    let passwd = scratch.join("stage-0/rootfs/etc/passwd");
    assert!(passwd.is_file(), "the stage's root is unpacked in scratch");
    holes.extend(nobody_got(&["ls", kaniko.to_str().unwrap()]));
    holes.extend(nobody_got(&["ls", scratch.to_str().unwrap()]));
    holes.extend(nobody_got(&["cat", passwd.to_str().unwrap()]));
    holes.extend(mode_not(&scratch, 0o700, "the scratch dir"));
    for d in subdirs(&scratch) {
        holes.extend(mode_not(&d, 0o700, "a dir in scratch"));
    }
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "executor failed:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The payload is there, setuid root, and the cache's root as BuildKit makes it.
    assert_eq!(std::fs::metadata(&suid).unwrap().uid(), 0);
    let instance = suid.parent().unwrap();
    assert_eq!(
        mode_of(instance),
        0o755,
        "the cache's root keeps BuildKit's mode"
    );
    // Every container Kiln made on the way to it is 0700.
    holes.extend(mode_not(&kaniko, 0o700, "the --kaniko-dir Kiln made"));
    holes.extend(mode_not(&cache, 0o700, "the --cache-dir Kiln made"));
    let tops = subdirs(&cache);
    assert!(tops.iter().any(|d| d.ends_with("mounts")), "{tops:?}");
    for d in tops.iter().chain(&subdirs(&cache.join("mounts"))) {
        holes.extend(mode_not(d, 0o700, "a dir in the cache dir"));
    }
    // Kiln's own files there (blobs, file indexes) are not for others either.
    for dir in ["blobs", "index"].map(|d| cache.join(d)) {
        for f in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if mode_of(&f.path()) & 0o077 != 0 {
                holes.push(format!(
                    "{} is {:04o}",
                    f.path().display(),
                    mode_of(&f.path())
                ));
            }
        }
    }
    // nobody can neither run the setuid copy nor even see it.
    let suid = suid.to_str().unwrap();
    holes.extend(nobody_got(&["stat", suid]));
    // From a shell already running as nobody: setpriv given the path itself
    // reaches it before it drops root.
    holes.extend(nobody_got(&["/bin/sh", "-c", "exec \"$0\" -c id", suid]));
    assert!(
        holes.is_empty(),
        "other users reach Kiln's state:\n{}",
        holes.join("\n")
    );
}
