//! What layers mean, checked with the independent oracle (integration/oracle) and
//! `docker run`: names are bytes, xattrs travel with `COPY --from`, and a layer's
//! parents are its own directories (overlay rule), as BuildKit v0.21 builds them.

mod common;

use common::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn header(mode: u32, size: usize) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(mode);
    h.set_size(size as u64);
    h.set_mtime(1_700_000_000);
    h
}

fn file(b: &mut tar::Builder<&mut Vec<u8>>, name: &[u8], data: &[u8]) {
    let mut h = header(0o644, data.len());
    b.append_data(&mut h, Path::new(OsStr::from_bytes(name)), data)
        .expect("append file");
}

fn symlink(b: &mut tar::Builder<&mut Vec<u8>>, name: &[u8], target: &[u8]) {
    let mut h = header(0o777, 0);
    h.set_entry_type(tar::EntryType::Symlink);
    b.append_link(
        &mut h,
        Path::new(OsStr::from_bytes(name)),
        Path::new(OsStr::from_bytes(target)),
    )
    .expect("append symlink");
}

fn directory(b: &mut tar::Builder<&mut Vec<u8>>, name: &str) {
    let mut h = header(0o755, 0);
    h.set_entry_type(tar::EntryType::Directory);
    b.append_data(&mut h, name, std::io::empty())
        .expect("append dir");
}

fn build(reg: &TestRegistry, ctx: &Path, dockerfile: &str, dest: &str) {
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    assert_ok(&build_with(ctx, &format!("{}/{dest}", reg.host), &[]));
}

/// `caf\xe9.txt` and `caf\xe8.txt` are two files in a layer and in a context;
/// neither collapses into `caf\u{FFFD}.txt`, and a link to one still finds it.
#[test]
fn names_are_bytes_end_to_end() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let dir = tempfile::tempdir().unwrap();
    let layer = tar_layer(dir.path(), "bytes", |b| {
        directory(b, "data");
        file(b, b"data/caf\xe9.txt", b"e9\n");
        file(b, b"data/caf\xe8.txt", b"e8\n");
        symlink(b, b"data/link", b"caf\xe9.txt");
    });
    push_image(&reg, "bytes:1", &[layer], serde_json::json!({}));
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(c.join(OsStr::from_bytes(b"caf\xe9.txt")), "ctx e9\n").unwrap();
    std::fs::write(c.join(OsStr::from_bytes(b"caf\xe8.txt")), "ctx e8\n").unwrap();
    std::fs::create_dir(c.join(OsStr::from_bytes(b"d\xff"))).unwrap();
    std::fs::write(c.join(OsStr::from_bytes(b"d\xff/x")), "x\n").unwrap();
    build(
        &reg,
        c,
        &format!(
            "FROM {r}/base:1\nCOPY --from={r}/bytes:1 /data/ /data/\nCOPY . /ctx/\n",
            r = reg.host
        ),
        "bytes-out:1",
    );
    let img = pull(&reg, "bytes-out:1");
    let digest = |p: &str| {
        img.files
            .get(p)
            .unwrap_or_else(|| panic!("{p} missing; image has {:?}", img.files.keys()))
            .digest
            .clone()
    };
    assert_eq!(digest("data/caf\\xe9.txt"), sha256_of(b"e9\n"));
    assert_eq!(digest("data/caf\\xe8.txt"), sha256_of(b"e8\n"));
    assert_eq!(img.files["data/link"].link, "caf\\xe9.txt");
    assert_eq!(digest("ctx/caf\\xe9.txt"), sha256_of(b"ctx e9\n"));
    assert_eq!(digest("ctx/caf\\xe8.txt"), sha256_of(b"ctx e8\n"));
    assert_eq!(digest("ctx/d\\xff/x"), sha256_of(b"x\n"));
    assert!(
        !img.files.keys().any(|k| k.contains('\u{FFFD}')),
        "a name was made lossy: {:?}",
        img.files.keys()
    );
    // BuildKit reads the Dockerfile as bytes too: a word with them names the file.
    std::fs::write(
        c.join("Dockerfile"),
        b"FROM scratch\n# caf\xe9 in a comment\nCOPY caf\xe9.txt /only\xe9/\n".as_slice(),
    )
    .unwrap();
    assert_ok(&build_with(c, &format!("{}/bytes-df:1", reg.host), &[]));
    let df = pull(&reg, "bytes-df:1");
    assert_eq!(
        df.files.keys().collect::<Vec<_>>(),
        ["only\\xe9", "only\\xe9/caf\\xe9.txt"]
    );
    let image = format!("{}/bytes-out:1", reg.host);
    assert_eq!(docker_run(&image, &["cat", "/data/link"]), "e9\n");
}

/// `security.capability` and `user.*` xattrs of a layer survive `COPY --from`,
/// whatever the privileges Kiln runs with, as BuildKit keeps them.
#[test]
fn copy_from_keeps_xattrs() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // cap_net_raw+ep, VFS_CAP_REVISION_2.
    let cap: Vec<u8> = vec![
        0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let layer = tar_layer(dir.path(), "xattrs", |b| {
        directory(b, "bin");
        b.append_pax_extensions([
            ("SCHILY.xattr.security.capability", cap.as_slice()),
            ("SCHILY.xattr.user.note", b"kept".as_slice()),
        ])
        .expect("pax");
        file(b, b"bin/ping", b"#!/bin/sh\n");
    });
    push_image(&reg, "xattrs:1", &[layer], serde_json::json!({}));
    let ctx = tempfile::tempdir().unwrap();
    let setpriv = require("setpriv", "apt-get install util-linux");
    for (i, privs) in [
        &[][..],
        &[
            "--reuid=65532",
            "--regid=65532",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ][..],
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!(
                "FROM scratch\nCOPY --from={}/xattrs:1 /bin/ /sbin/\n",
                reg.host
            ),
        )
        .unwrap();
        let work = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            work.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let out = std::process::Command::new(&setpriv)
            .args(*privs)
            .arg(env!("CARGO_BIN_EXE_executor"))
            .args(["--context", ctx.path().to_str().unwrap()])
            .args(["--destination", &format!("{}/xattrs-out:{i}", reg.host)])
            .args(["--kaniko-dir", work.path().to_str().unwrap()])
            .env("DOCKER_CONFIG", work.path())
            .output()
            .expect("run executor");
        assert_ok(&out);
        let img = pull(&reg, &format!("xattrs-out:{i}"));
        let ping = &img.files["sbin/ping"];
        assert_eq!(
            ping.xattrs.get("security.capability"),
            Some(&hex::encode(&cap)),
            "run {i}: {ping:?}"
        );
        assert_eq!(
            ping.xattrs.get("user.note"),
            Some(&hex::encode(b"kept")),
            "run {i}"
        );
    }
}

/// A layer that writes `lnk/newfile` and whites out `lnk/x` while a lower layer
/// has `lnk -> real`: BuildKit v0.21 (overlayfs, checked by hand) and Docker make
/// `lnk` a directory holding only `newfile`, and leave `real/x` alone. The file
/// index (COPY destinations) and the unpacked root (COPY --from sources) agree.
#[test]
fn a_layers_parents_are_its_own_directories() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let lower = tar_layer(dir.path(), "lower", |b| {
        directory(b, "real");
        file(b, b"real/x", b"x\n");
        file(b, b"real/y", b"y\n");
        symlink(b, b"lnk", b"real");
        symlink(b, b"abs", b"/real");
    });
    let upper = tar_layer(dir.path(), "upper", |b| {
        file(b, b"lnk/newfile", b"new\n");
        file(b, b"lnk/.wh.x", b"");
        file(b, b"abs/absfile", b"abs\n");
    });
    // The busybox base first, so the result runs.
    let busybox = tempfile::tempdir().unwrap();
    let bb = make_layer(
        busybox.path(),
        "bb",
        &[
            E::Dir("usr", 0o755),
            E::Dir("usr/bin", 0o755),
            E::Host("usr/bin/busybox", 0o755, common::busybox()),
            E::Link("usr/bin/sh", "busybox"),
            E::Link("usr/bin/ls", "busybox"),
            E::Link("bin", "usr/bin"),
        ],
    );
    push_image(
        &reg,
        "overlay:1",
        &[bb, lower, upper],
        serde_json::json!({}),
    );
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("a.txt"), "a\n").unwrap();
    build(
        &reg,
        ctx.path(),
        &format!(
            "FROM {r}/overlay:1 AS base\n\
             FROM {r}/overlay:1\n\
             COPY a.txt /lnk/copied\n\
             COPY --from=base /lnk/ /from-lnk/\n\
             COPY --from=base /real/ /from-real/\n",
            r = reg.host
        ),
        "overlay-out:1",
    );
    let img = pull(&reg, "overlay-out:1");
    assert_eq!(img.files["lnk"].kind, 'd');
    assert_eq!(img.under("lnk"), ["copied", "newfile"]);
    assert_eq!(img.files["abs"].kind, 'd');
    assert_eq!(img.under("abs"), ["absfile"]);
    assert_eq!(img.under("real"), ["x", "y"]);
    assert_eq!(img.under("from-lnk"), ["newfile"]);
    assert_eq!(img.under("from-real"), ["x", "y"]);
    let listing = docker_run(
        &format!("{}/overlay-out:1", reg.host),
        &["ls", "/lnk", "/real", "/from-lnk"],
    );
    assert_eq!(
        listing,
        "/from-lnk:\nnewfile\n\n/lnk:\ncopied\nnewfile\n\n/real:\nx\ny\n"
    );
}
