use super::*;
use std::fs;

fn listing(out: &BTreeMap<PathKey, Planned>) -> Vec<String> {
    out.iter()
        .map(|(k, p)| {
            let kind = match &p.body {
                EntryBody::Dir => "dir".to_string(),
                EntryBody::File { .. } | EntryBody::Bytes(_) => "file".into(),
                EntryBody::Symlink(t) => format!("-> {t}"),
                EntryBody::Hardlink(t) => format!("=> {t}"),
                EntryBody::Fifo => "fifo".into(),
                EntryBody::Char(a, b) => format!("char {a}:{b}"),
                EntryBody::Block(a, b) => format!("block {a}:{b}"),
            };
            format!("{} {kind}", k.0)
        })
        .collect()
}

fn fifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
}

/// What the tests' command does: modify, delete, remake a directory, make
/// new entries, a hard link, a symlink, a FIFO.
fn a_command(r: &Path) {
    fs::write(r.join("a/keep"), b"22").unwrap();
    fs::remove_file(r.join("a/gone")).unwrap();
    fs::remove_dir_all(r.join("b")).unwrap();
    fs::create_dir_all(r.join("b/x")).unwrap();
    fs::write(r.join("b/x/new"), b"n").unwrap();
    fs::remove_dir_all(r.join("c")).unwrap();
    fs::write(r.join("new"), b"n").unwrap();
    fs::hard_link(r.join("new"), r.join("new2")).unwrap();
    std::os::unix::fs::symlink("new", r.join("link")).unwrap();
    fifo(&r.join("b/x/pipe"));
}

#[test]
fn a_commands_change_as_the_overlay_reader_gives_it() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    for f in [
        "a/keep",
        "a/gone",
        "b/x/old",
        "c/f",
        "kaniko/executor",
        "same",
    ] {
        let p = r.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"1").unwrap();
    }
    fifo(&r.join("a/pipe"));
    let keep = Keep::new(["kaniko".to_string()]);
    let before = Snapshot::take(r, &keep).unwrap();
    assert!(before.index.get("kaniko").is_none());
    // Modify, delete, remake a directory, make new entries, a hard link, a
    // symlink; touch what the executor keeps.
    a_command(r);
    fs::write(r.join("kaniko/executor"), b"x").unwrap();
    let none = HashSet::new();
    let (out, after) = changes(r, &before, &keep, &none).unwrap();
    assert_eq!(
        listing(&out),
        [
            ".wh.c file",
            "a dir",
            "a/.wh.gone file",
            "a/keep file",
            "b dir",
            "b/x dir",
            "b/x/.wh.old file",
            "b/x/new file",
            "b/x/pipe fifo",
            "link -> new",
            "new file",
            "new2 => new",
        ]
    );
    // Nothing changed since: an empty change.
    let (out, _) = changes(r, &after, &keep, &none).unwrap();
    assert!(out.is_empty(), "{:?}", listing(&out));
}

#[test]
fn touched_paths_give_the_change_the_walk_gives() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    for f in ["a/keep", "a/gone", "b/x/old", "c/f", "same", "u/v/w"] {
        let p = r.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"1").unwrap();
    }
    let none = HashSet::new();
    let before = Snapshot::take(r, &Keep::default()).unwrap();
    let mut record = Record::default();
    let mut touch = |p: &str| {
        let stamp = fs::symlink_metadata(r.join(p)).ok().map(|m| Stamp::of(&m));
        record.first.entry(p.to_string()).or_insert(stamp);
    };
    for p in [
        "a/keep", "a/gone", "b", "b/x", "b/x/old", "b/x/new", "c/f", "c", "new", "new2", "link",
        "b/x/pipe", "same", "u/v/w",
    ] {
        touch(p);
    }
    a_command(r);
    // Opened for writing, left as it was: no change.
    fs::OpenOptions::new()
        .append(true)
        .open(r.join("same"))
        .unwrap();
    // A change the disk does not show (an emulated chown).
    record.forced.insert("u/v/w".to_string());
    let (walked, _) = changes(r, &before, &Keep::default(), &none).unwrap();
    let touched = touched_changes(r, &before.index, &record, &none).unwrap();
    let mut expected = listing(&walked);
    expected.extend(["u dir".to_string(), "u/v dir".into(), "u/v/w file".into()]);
    expected.sort();
    assert_eq!(listing(&touched), expected);
    // Nothing touched: nothing changed, nothing walked.
    let empty = touched_changes(r, &before.index, &Record::default(), &none).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn mount_points_are_read_with_their_escapes() {
    let table = "22 1 0:21 / / rw - overlay overlay rw\n\
                     23 22 0:22 / /proc rw - proc proc rw\n\
                     24 22 8:1 /x /etc/my\\040hosts rw - ext4 /dev/sda1 rw\n";
    assert_eq!(mount_points(table), ["/proc", "/etc/my hosts"]);
}
