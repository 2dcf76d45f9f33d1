//! ADD's archives: whether a file is one (by content, as BuildKit decides) and
//! unpacking one into an empty directory with the layer applier's confinement.
//!
//! BuildKit v0.21 unpacks in a chroot at the destination, so the directory is
//! the archive's `/`: `..` stops there, absolute and relative symlinks resolve
//! inside it, and writes through a symlink the archive made land inside it.
//! The same rules here come from [`resolve_on_disk`]; the last component is
//! created without following links. Owners, modes and times are the archive's
//! (kept in the returned index: an unprivileged unpack cannot set owners).

use super::apply::{remove_any, set_mtime, ScratchRoot};
use super::index::{FsIndex, Node, NodeKind};
use super::{join_rel, resolve_on_disk, split_parent};
use crate::layer::reader::{self, Entry, Kind, ReadError};
use crate::pathname::{display, to_path};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{symlink, MetadataExt};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive {archive}: {source}")]
    Read {
        archive: String,
        source: std::io::Error,
    },
    #[error("archive {archive}: {path}: {reason}")]
    Entry {
        archive: String,
        path: String,
        reason: String,
    },
}

/// Whether `path` is a tar archive, plain or compressed with gzip, bzip2, xz or
/// zstd: its first header must read as one (BuildKit's `isArchivePath`). A file
/// named `.tar.gz` that is not one is copied as a file.
pub(crate) fn is_archive(path: &std::path::Path) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    let Ok(stream) = reader::open_decompressed(path) else {
        return false;
    };
    let mut archive = tar::Archive::new(stream);
    // The tar crate checks the header's checksum, as Go's reader does.
    matches!(archive.entries().map(|mut e| e.next()), Ok(Some(Ok(_))))
}

/// Whether the file, once decompressed, starts as a tar: a first header whose
/// checksum holds (unsigned or signed, as Go's reader takes), an end block, or
/// nothing (an empty archive). A context that is not one is then named so,
/// rather than by the tar reader's "failed to read entire block".
pub(crate) fn starts_as_tar(path: &std::path::Path) -> io::Result<bool> {
    let mut stream = reader::open_decompressed(path)?;
    let mut block = [0u8; 512];
    let mut n = 0;
    while n < block.len() {
        match stream.read(&mut block[n..])? {
            0 => break,
            k => n += k,
        }
    }
    if n == 0 || block.iter().all(|&b| b == 0) {
        return Ok(true);
    }
    if n < block.len() {
        return Ok(false);
    }
    let Ok(stored) = tar::Header::from_byte_slice(&block).cksum() else {
        return Ok(false);
    };
    let field = 148..156;
    let (mut unsigned, mut signed) = (0u32, 0i32);
    for (i, &b) in block.iter().enumerate() {
        let b = if field.contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i32::from(b as i8);
    }
    Ok(stored == unsigned || i32::try_from(stored) == Ok(signed))
}

/// What an unpack has made so far.
#[derive(Default)]
struct Unpack {
    index: FsIndex,
    /// Directories and their archive times, set last (deepest first).
    dir_times: Vec<(String, u64)>,
    /// Paths that share an inode: a hard link's header sets the file's owner
    /// and mode, which every name of it shows.
    inodes: HashMap<(u64, u64), Vec<String>>,
    skipped_devices: usize,
}

impl ScratchRoot {
    /// Unpacks the archive at `archive` into this (empty) root; `label` names
    /// it in errors. Returns every path made, with the archive's metadata.
    pub(crate) fn unpack_archive(
        &self,
        archive: &std::path::Path,
        label: &str,
        now: u64,
    ) -> Result<FsIndex, ArchiveError> {
        let mut st = Unpack::default();
        st.index.insert(String::new(), Node::dir(0o755, 0, 0, now));
        reader::for_each_archive_entry(archive, label, |e, data| {
            self.unpack_entry(&e, data, &mut st, now)
                .map_err(|reason| ReadError::Entry {
                    layer: label.to_string(),
                    path: display(&e.path),
                    reason,
                })
        })
        .map_err(|err| match err {
            ReadError::Entry {
                layer,
                path,
                reason,
            } => ArchiveError::Entry {
                archive: layer,
                path,
                reason,
            },
            ReadError::Io { layer, source } => ArchiveError::Read {
                archive: layer,
                source,
            },
            // Archives are read without a diff_id to check.
            other @ ReadError::DiffId { .. } => ArchiveError::Read {
                archive: label.to_string(),
                source: io::Error::other(other.to_string()),
            },
        })?;
        for (rel, mtime) in st.dir_times.iter().rev() {
            match set_mtime(&self.host_path(rel), *mtime) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(ArchiveError::Entry {
                        archive: label.to_string(),
                        path: display(rel),
                        reason: e.to_string(),
                    })
                }
                _ => {}
            }
        }
        if st.skipped_devices > 0 {
            crate::log_warn!(
                "archive {label}: {} device nodes skipped (making them needs root)",
                st.skipped_devices
            );
        }
        Ok(st.index)
    }

    fn unpack_entry(
        &self,
        e: &Entry,
        data: &mut dyn Read,
        st: &mut Unpack,
        now: u64,
    ) -> Result<(), String> {
        // The archive's own `.`: the destination keeps its metadata (BuildKit).
        if e.path.is_empty() {
            return Ok(());
        }
        let (parent, name) = split_parent(&e.path);
        let parent = resolve_on_disk(self.path(), parent, true).map_err(|e| e.to_string())?;
        self.make_parents(&parent, st, now)?;
        let rel = join_rel(&parent, name);
        let host = self.host_path(&rel);
        let is_dir = e.kind == Kind::Dir;
        if let Ok(m) = fs::symlink_metadata(&host) {
            if !(is_dir && m.is_dir()) {
                remove_any(&host).map_err(|e| e.to_string())?;
                st.index.remove_tree(&rel, &Default::default());
            }
        }
        let mut size = e.size;
        let kind = match &e.kind {
            Kind::Dir => {
                if !host.is_dir() {
                    fs::create_dir(&host).map_err(|e| e.to_string())?;
                }
                NodeKind::Dir
            }
            Kind::File => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&host)
                    .map_err(|e| e.to_string())?;
                io::copy(data, &mut f).map_err(|e| e.to_string())?;
                NodeKind::File
            }
            Kind::Symlink(target) => {
                symlink(to_path(target), &host).map_err(|e| e.to_string())?;
                NodeKind::Symlink(target.clone())
            }
            Kind::Hardlink(target) => {
                // link(2) in the chroot: parents resolve, the target itself does not.
                let source =
                    resolve_on_disk(self.path(), target, false).map_err(|e| e.to_string())?;
                let source_host = self.host_path(&source);
                fs::hard_link(&source_host, &host)
                    .map_err(|err| format!("hard link to /{}: {err}", display(target)))?;
                match st.index.get(&source) {
                    Some(n) => {
                        size = n.size;
                        n.kind.clone()
                    }
                    None => NodeKind::File,
                }
            }
            Kind::Char(..) | Kind::Block(..) | Kind::Fifo => {
                if !self.make_node(&host, e).map_err(|e| e.to_string())? {
                    st.skipped_devices += 1;
                    return Ok(());
                }
                match e.kind {
                    Kind::Char(major, minor) => NodeKind::Char(major, minor),
                    Kind::Block(major, minor) => NodeKind::Block(major, minor),
                    _ => NodeKind::Fifo,
                }
            }
        };
        self.set_meta(&host, e, is_dir).map_err(|e| e.to_string())?;
        let symlink = matches!(kind, NodeKind::Symlink(_));
        let node = Node {
            kind,
            // A symlink's mode is not its own to set: 0777 on every file system.
            mode: if symlink { 0o777 } else { e.mode & 0o7777 },
            uid: e.uid,
            gid: e.gid,
            size,
            mtime: e.mtime,
            xattrs: e.xattrs.clone(),
        };
        if is_dir {
            st.dir_times.push((rel.clone(), e.mtime));
        } else {
            // The link's own time (set_mtime does not follow it).
            set_mtime(&host, e.mtime).map_err(|e| e.to_string())?;
        }
        self.record(st, rel, node, &host);
        Ok(())
    }

    /// Records `rel`; a file with other names gets the same metadata under each.
    fn record(&self, st: &mut Unpack, rel: String, node: Node, host: &std::path::Path) {
        if node.kind == NodeKind::File {
            if let Ok(m) = fs::symlink_metadata(host) {
                let names = st.inodes.entry((m.dev(), m.ino())).or_default();
                for other in names.iter() {
                    let size = st.index.get(other).map_or(node.size, |n| n.size);
                    st.index.insert(
                        other.clone(),
                        Node {
                            size,
                            ..node.clone()
                        },
                    );
                }
                names.push(rel.clone());
            }
        }
        st.index.insert(rel, node);
    }

    /// The missing directories of `parent`: 0755, root's, made now (go-archive's
    /// implied directories).
    fn make_parents(&self, parent: &str, st: &mut Unpack, now: u64) -> Result<(), String> {
        let mut cur = String::new();
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            cur = join_rel(&cur, part);
            let host = self.host_path(&cur);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(format!("/{} is not a directory", display(&cur))),
                Err(_) => {
                    fs::create_dir(&host).map_err(|e| e.to_string())?;
                    st.index.insert(cur.clone(), Node::dir(0o755, 0, 0, now));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn only_tars_start_as_tar() {
        let dir = tempfile::tempdir().unwrap();
        let check = |name: &str, data: &[u8]| {
            let p = dir.path().join(name);
            fs::write(&p, data).unwrap();
            starts_as_tar(&p).unwrap()
        };
        let gzip = |data: &[u8]| {
            use std::io::Write;
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(data).unwrap();
            z.finish().unwrap()
        };
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_cksum();
        tar.append_data(&mut h, "a", &b"hi"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let html = b"<!DOCTYPE html><html><body>Not a tarball</body></html>\n".repeat(20);
        assert!(check("t.tar", &tar));
        assert!(check("t.tgz", &gzip(&tar)));
        assert!(check("empty", b""));
        assert!(check("end-block", &[0; 1024]));
        assert!(!check("short.html", b"<html></html>\n"));
        assert!(!check("long.html", &html));
        assert!(!check("html.gz", &gzip(&html)));
    }

    fn entry(
        b: &mut tar::Builder<fs::File>,
        name: &str,
        kind: tar::EntryType,
        data: &[u8],
        link: &str,
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o750
        } else {
            0o640
        });
        h.set_uid(1000);
        h.set_gid(1001);
        h.set_mtime(1_420_070_400);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            h.set_link_name_literal(link).unwrap();
        }
        // The names are written raw: `..` and absolute names are the point.
        let raw = &mut h.as_old_mut().name;
        raw.fill(0);
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn archive(dir: &Path, entries: &[(&str, tar::EntryType, &[u8], &str)]) -> std::path::PathBuf {
        let path = dir.join("a.tar");
        let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
        for (name, kind, data, link) in entries {
            entry(&mut b, name, *kind, data, link);
        }
        b.finish().unwrap();
        path
    }

    #[test]
    fn hostile_names_and_links_stay_inside_the_root() {
        use tar::EntryType as T;
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let a = archive(
            dir.path(),
            &[
                ("../escape", T::Regular, b"1", ""),
                ("/abs/file", T::Regular, b"2", ""),
                ("up", T::Symlink, b"", "../../../.."),
                ("up/through-up", T::Regular, b"3", ""),
                ("real/", T::Directory, b"", ""),
                ("l", T::Symlink, b"", "/real"),
                ("l/through-abs", T::Regular, b"4", ""),
                ("out", T::Symlink, b"", outside.to_str().unwrap()),
                ("out/x", T::Regular, b"5", ""),
            ],
        );
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let idx = ScratchRoot::unprivileged(&root)
            .unpack_archive(&a, "a.tar", 7)
            .unwrap();
        assert_eq!(fs::read(root.join("escape")).unwrap(), b"1");
        assert_eq!(fs::read(root.join("abs/file")).unwrap(), b"2");
        assert_eq!(fs::read(root.join("through-up")).unwrap(), b"3");
        assert_eq!(fs::read(root.join("real/through-abs")).unwrap(), b"4");
        // An absolute target is the root's: the host's directory stays empty.
        let inside = root.join(outside.strip_prefix("/").unwrap()).join("x");
        assert_eq!(fs::read(inside).unwrap(), b"5");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        assert!(!dir.path().join("escape").exists());
        // The archive's owners and modes; implied parents are root's 0755, now.
        let n = idx.get("real/through-abs").unwrap();
        assert_eq!(
            (n.mode, n.uid, n.gid, n.mtime),
            (0o640, 1000, 1001, 1_420_070_400)
        );
        assert_eq!(idx.get("abs").unwrap(), &Node::dir(0o755, 0, 0, 7));
        assert_eq!(idx.get("l").unwrap().mode, 0o777);
    }

    #[test]
    fn hard_links_resolve_inside_and_share_metadata() {
        use tar::EntryType as T;
        let dir = tempfile::tempdir().unwrap();
        let a = archive(
            dir.path(),
            &[("f", T::Regular, b"data", ""), ("h", T::Link, b"", "/f")],
        );
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let idx = ScratchRoot::unprivileged(&root)
            .unpack_archive(&a, "a.tar", 0)
            .unwrap();
        assert_eq!(
            fs::metadata(root.join("h")).unwrap().ino(),
            fs::metadata(root.join("f")).unwrap().ino()
        );
        assert_eq!(idx.get("h").unwrap().size, 4);

        // A link out of the root names a file the root does not have.
        let out = archive(dir.path(), &[("h", T::Link, b"", "../../../etc/passwd")]);
        let root2 = dir.path().join("root2");
        fs::create_dir(&root2).unwrap();
        let err = ScratchRoot::unprivileged(&root2)
            .unpack_archive(&out, "out.tar", 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("out.tar") && err.contains("/etc/passwd"),
            "{err}"
        );
    }

    #[test]
    fn archives_are_known_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(dir.path(), &[("f", tar::EntryType::Regular, b"x", "")]);
        assert!(is_archive(&a));
        let fake = dir.path().join("fake.tar.gz");
        fs::write(&fake, b"not an archive\n").unwrap();
        assert!(!is_archive(&fake));
        let empty = dir.path().join("empty.tar");
        fs::write(&empty, b"").unwrap();
        assert!(!is_archive(&empty));
        let gz = dir.path().join("a.tgz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &fs::read(&a).unwrap()).unwrap();
        fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert!(is_archive(&gz));
        let bz = dir.path().join("a.tar.bz2");
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        std::io::Write::write_all(&mut enc, &fs::read(&a).unwrap()).unwrap();
        fs::write(&bz, enc.finish().unwrap()).unwrap();
        assert!(is_archive(&bz));
    }
}
