use super::*;

#[test]
fn a_fresh_root_sets_what_a_setgid_directory_would_pass_on() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("layer.tar");
    {
        let mut b = tar::Builder::new(fs::File::create(&blob).unwrap());
        let mut add = |path: &str, kind, mode, gid, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(gid);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data).unwrap();
        };
        add("shared", tar::EntryType::Directory, 0o2775, 1234, b"");
        add("shared/sub", tar::EntryType::Directory, 0o755, 0, b"");
        add("shared/sub/f", tar::EntryType::Regular, 0o644, 0, b"f");
        add("shared/g", tar::EntryType::Regular, 0o644, 0, b"g");
        add("plain/h", tar::EntryType::Regular, 0o640, 0, b"h");
        b.finish().unwrap();
    }
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    // As root (the CI runs the tests so): owners are given.
    assert!(super::super::caps::FileCaps::effective().chown);
    ScratchRoot::new(&root).apply_layer(&blob, "test").unwrap();
    let meta = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(
        (meta("shared").mode() & 0o7777, meta("shared").gid()),
        (0o2775, 1234)
    );
    // Made in a setgid directory: no inherited setgid bit, no inherited group.
    assert_eq!(
        (meta("shared/sub").mode() & 0o7777, meta("shared/sub").gid()),
        (0o755, 0)
    );
    assert_eq!(meta("shared/sub/f").gid(), 0);
    assert_eq!(meta("shared/g").gid(), 0);
    assert_eq!(meta("plain/h").mode() & 0o7777, 0o640);
    assert_eq!(fs::read(root.join("shared/sub/f")).unwrap(), b"f");
}

#[test]
fn unprivileged_skips_device_nodes_and_makes_fifos() {
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("layer.tar");
    {
        let mut b = tar::Builder::new(fs::File::create(&blob).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Char);
        h.set_device_major(8).unwrap();
        h.set_device_minor(0).unwrap();
        h.set_mode(0o600);
        h.set_size(0);
        b.append_data(&mut h, "dev/sda", std::io::empty()).unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Link);
        l.set_size(0);
        b.append_link(&mut l, "dev/sda-again", "dev/sda").unwrap();
        let mut p = tar::Header::new_gnu();
        p.set_entry_type(tar::EntryType::Fifo);
        p.set_mode(0o640);
        p.set_size(0);
        b.append_data(&mut p, "d/pipe", std::io::empty()).unwrap();
        let mut f = tar::Header::new_gnu();
        f.set_mode(0o644);
        f.set_size(2);
        b.append_data(&mut f, "ok", &b"ok"[..]).unwrap();
        b.finish().unwrap();
    }
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let report = ScratchRoot::unprivileged(&root)
        .apply_layer(&blob, "test")
        .unwrap();
    // The device and its hard link are skipped; a FIFO needs no privilege.
    assert_eq!(report.skipped_devices, 2);
    assert!(!root.join("dev/sda").exists());
    assert!(!root.join("dev/sda-again").exists());
    let pipe = fs::symlink_metadata(root.join("d/pipe")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&pipe.file_type()));
    assert_eq!(pipe.permissions().mode() & 0o7777, 0o640);
    assert_eq!(fs::read(root.join("ok")).unwrap(), b"ok");

    // The same layer as root would unpack it: owners set, the device made.
    let root2 = dir.path().join("root2");
    fs::create_dir(&root2).unwrap();
    let rec = std::sync::Arc::new(sys::recording::Recording::with_all_caps());
    let report = ScratchRoot::with_syscalls(&root2, Box::new(rec.clone()))
        .apply_layer(&blob, "test")
        .unwrap();
    assert_eq!(report.skipped_devices, 0);
    let calls = rec.calls();
    assert!(
        calls.contains(&sys::recording::Call::Mknod(
            root2.join("dev/sda"),
            Node::Char(8, 0),
            0o600
        )),
        "{calls:?}"
    );
    assert!(
        calls.contains(&sys::recording::Call::Mknod(
            root2.join("d/pipe"),
            Node::Fifo,
            0o640
        )),
        "{calls:?}"
    );
    assert!(root2.join("dev/sda-again").exists());
    assert!(
        calls.contains(&sys::recording::Call::Lchown(root2.join("ok"), 0, 0)),
        "{calls:?}"
    );
}
