//! A step's change, read from the overlay upper dir it wrote: the layer's entries
//! as BuildKit's overlay differ writes them. A deletion (a 0:0 character device)
//! becomes a `.wh.` whiteout; a directory that hides what was below (the
//! `trusted.` or `user.overlay.opaque` xattr) becomes whiteouts of each entry it
//! hides; a copy-up that still matches the lower entry is left out, but every
//! parent of a change is in; overlay's own xattrs never reach the layer.

use crate::layer::entries::{PathKey, Planned};
use crate::layer::writer::{EntryBody, EntryMeta};
use crate::rootfs::index::{FsIndex, NodeKind};
use crate::rootfs::meta::get_xattr;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum UpperError {
    #[error("reading the step's changes at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The entries of the layer `upper` stands for. `lower` tells which directories
/// existed before (only those need an opaque marker); `skip` lists mount points
/// the sandbox made, which are not the command's doing.
pub(crate) fn changes(
    upper: &Path,
    lower_root: &Path,
    lower: &FsIndex,
    skip: &[String],
) -> Result<BTreeMap<PathKey, Planned>, UpperError> {
    let mut out = BTreeMap::new();
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    let below = Below {
        root: lower_root,
        index: lower,
    };
    walk(upper, "", &below, skip, &mut links, &mut out)?;
    Ok(out)
}

/// The lower layer: its index, and its files on disk.
struct Below<'a> {
    root: &'a Path,
    index: &'a FsIndex,
}

/// Whether two files hold the same bytes (false when either cannot be read).
/// A file rewritten within the second its lower copy was made, at the same
/// size, matches it in everything the index keeps (tar times are seconds).
fn same_bytes(a: &Path, root: &Path, rel: &str) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // The lower file is read only where every parent is a real directory and
    // the file no link: a link there would lead out of the root.
    let mut dir = root.to_path_buf();
    let mut parts: Vec<&str> = rel.split('/').collect();
    let Some(name) = parts.pop() else {
        return false;
    };
    for p in parts {
        dir.push(crate::pathname::to_path(p));
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return false;
        }
    }
    let nofollow = |p: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(p)
    };
    let (Ok(fa), Ok(fb)) = (
        nofollow(a),
        nofollow(&dir.join(crate::pathname::to_path(name))),
    ) else {
        return false;
    };
    let (mut ra, mut rb) = (std::io::BufReader::new(fa), std::io::BufReader::new(fb));
    let (mut ba, mut bb) = ([0u8; 8192], [0u8; 8192]);
    loop {
        let Ok(n) = ra.read(&mut ba) else {
            return false;
        };
        if n == 0 {
            return matches!(rb.read(&mut bb), Ok(0));
        }
        if rb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// Walks one directory of the upper dir; true when it put anything in `out`.
/// A directory with a change below it is always in the layer, as containerd's
/// change writer (BuildKit's) includes parents: without it, an image store that
/// unpacks each layer on its own (Docker's overlay2) would show it as root:root
/// 0755 and the current time.
fn walk(
    dir: &Path,
    rel: &str,
    lower: &Below<'_>,
    skip: &[String],
    links: &mut HashMap<(u64, u64), String>,
    out: &mut BTreeMap<PathKey, Planned>,
) -> Result<bool, UpperError> {
    let mut emitted = false;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| UpperError::Io { path, source }
    };
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    names.sort();
    for name in names {
        let host = dir.join(&name);
        let name = crate::pathname::from_os(&name);
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if skip.contains(&path) {
            continue;
        }
        let m = std::fs::symlink_metadata(&host).map_err(io(&host))?;
        let ft = m.file_type();
        let below = lower.index.get(&path);
        // A directory the sandbox put a mount point in keeps its time, as
        // BuildKit restores it when it removes its stubs.
        let stub_parent = skip
            .iter()
            .any(|k| k.rsplit_once('/').map(|(d, _)| d) == Some(path.as_str()));
        let mtime = match below {
            Some(n) if stub_parent && ft.is_dir() && matches!(n.kind, NodeKind::Dir) => n.mtime,
            _ => m.mtime().max(0) as u64,
        };
        let meta = meta_of(&host, &m, mtime).map_err(io(&host))?;
        if ft.is_char_device() && m.rdev() == 0 {
            let wh = match rel {
                "" => format!(".wh.{name}"),
                _ => format!("{rel}/.wh.{name}"),
            };
            // BuildKit writes whiteouts with no time.
            out.insert(PathKey(wh), marker(0));
            emitted = true;
            continue;
        }
        let target = link_target(&host, &m).map_err(io(&host))?;
        let opaque = ft.is_dir()
            && is_opaque(&host)
            && matches!(below.map(|n| &n.kind), Some(NodeKind::Dir));
        let same = !opaque
            && below.is_some_and(|n| unchanged(n, &m, &meta, target.as_ref()))
            && (!ft.is_file() || same_bytes(&host, lower.root, &path));
        if !same {
            let Some(body) = body_of(&host, &path, &m, target, links) else {
                continue;
            };
            out.insert(PathKey(path.clone()), Planned { meta, body });
            emitted = true;
        } else if ft.is_dir() {
            // An unchanged directory is in the layer only as a parent.
            if walk(&host, &path, lower, skip, links, out)? {
                out.insert(
                    PathKey(path.clone()),
                    Planned {
                        meta,
                        body: EntryBody::Dir,
                    },
                );
                emitted = true;
            }
            continue;
        }
        if opaque {
            lower_whiteouts(&host, &path, lower.index, out);
        }
        if ft.is_dir() {
            walk(&host, &path, lower, skip, links, out)?;
        }
    }
    Ok(emitted)
}

/// What an opaque directory hides, as BuildKit's differ writes it: a whiteout
/// for each entry below that the upper dir does not have, and the same inside
/// each directory that is a directory on both sides (rather than `.wh..wh..opq`).
fn lower_whiteouts(host: &Path, path: &str, lower: &FsIndex, out: &mut BTreeMap<PathKey, Planned>) {
    for (name, node) in lower.children(path) {
        let child = host.join(crate::pathname::to_path(name));
        match std::fs::symlink_metadata(&child) {
            Err(_) => {
                out.insert(PathKey(format!("{path}/.wh.{name}")), marker(0));
            }
            Ok(m) if m.is_dir() && matches!(node.kind, NodeKind::Dir) => {
                lower_whiteouts(&child, &format!("{path}/{name}"), lower, out);
            }
            Ok(_) => {}
        }
    }
}

/// The layer metadata of the entry at `host`, with `mtime` as its time.
pub(super) fn meta_of(
    host: &Path,
    m: &std::fs::Metadata,
    mtime: u64,
) -> std::io::Result<EntryMeta> {
    Ok(EntryMeta {
        mode: m.mode() & 0o7777,
        uid: u64::from(m.uid()),
        gid: u64::from(m.gid()),
        mtime,
        xattrs: xattrs(host)?,
    })
}

/// A symlink's target; `None` for anything else.
pub(super) fn link_target(host: &Path, m: &std::fs::Metadata) -> std::io::Result<Option<String>> {
    if !m.file_type().is_symlink() {
        return Ok(None);
    }
    let t = std::fs::read_link(host)?;
    Ok(Some(crate::pathname::from_os(t.as_os_str())))
}

/// Whether an entry a command touched still matches what stood there before.
/// Overlay copies a file or directory up when the command only opened it for
/// writing, or changed something below it: the layer leaves out what still
/// matches (BuildKit's overlay differ does the same), and such a file is never
/// a hard link's target. A directory's time alone (a file made and removed in
/// it, as apt does in /tmp) is no change to BuildKit's differ either.
pub(super) fn unchanged(
    before: &crate::rootfs::index::Node,
    m: &std::fs::Metadata,
    meta: &EntryMeta,
    target: Option<&String>,
) -> bool {
    let ft = m.file_type();
    let kind = match &before.kind {
        NodeKind::Dir => ft.is_dir(),
        NodeKind::File => ft.is_file() && before.size == m.len(),
        NodeKind::Symlink(a) => target == Some(a),
        NodeKind::Fifo | NodeKind::Char(..) | NodeKind::Block(..) => {
            special(m).as_ref().and_then(special_kind).as_ref() == Some(&before.kind)
        }
        NodeKind::Other => false,
    };
    kind && before.mode & 0o7777 == meta.mode
        && (before.uid, before.gid) == (meta.uid, meta.gid)
        && (ft.is_dir() || before.mtime == meta.mtime)
        && before.xattrs == meta.xattrs
}

/// The FIFO or device node `m` describes, as a layer body; `None` for
/// anything else.
pub(super) fn special(m: &std::fs::Metadata) -> Option<EntryBody> {
    let ft = m.file_type();
    if ft.is_fifo() {
        return Some(EntryBody::Fifo);
    }
    // Linux's numbers are 12 and 20 bits wide: they always fit.
    let major = u32::try_from(nix::sys::stat::major(m.rdev())).ok()?;
    let minor = u32::try_from(nix::sys::stat::minor(m.rdev())).ok()?;
    if ft.is_char_device() {
        Some(EntryBody::Char(major, minor))
    } else if ft.is_block_device() {
        Some(EntryBody::Block(major, minor))
    } else {
        None
    }
}

/// The index kind of a FIFO or device node body.
pub(super) fn special_kind(body: &EntryBody) -> Option<NodeKind> {
    match *body {
        EntryBody::Fifo => Some(NodeKind::Fifo),
        EntryBody::Char(major, minor) => Some(NodeKind::Char(major, minor)),
        EntryBody::Block(major, minor) => Some(NodeKind::Block(major, minor)),
        _ => None,
    }
}

/// The layer body of the entry at `host`: a second path to an inode already in
/// the layer is a hard link to the first, for FIFOs and device nodes too, as
/// BuildKit writes them. `None` (with a warning) for a socket, which a tar
/// cannot hold.
pub(super) fn body_of(
    host: &Path,
    path: &str,
    m: &std::fs::Metadata,
    target: Option<String>,
    links: &mut HashMap<(u64, u64), String>,
) -> Option<EntryBody> {
    let ft = m.file_type();
    if ft.is_dir() {
        return Some(EntryBody::Dir);
    }
    if let Some(t) = target {
        return Some(EntryBody::Symlink(t));
    }
    let body = match special(m) {
        Some(body) => body,
        None if ft.is_file() => EntryBody::File {
            source: host.to_path_buf(),
            size: m.len(),
        },
        None => {
            crate::log_warn!(
                "RUN made /{path}, a socket: left out of the layer (a tar layer cannot hold one)"
            );
            return None;
        }
    };
    let id = (m.dev(), m.ino());
    match links.get(&id) {
        Some(first) if m.nlink() > 1 => Some(EntryBody::Hardlink(first.clone())),
        _ => {
            if m.nlink() > 1 {
                links.insert(id, path.to_string());
            }
            Some(body)
        }
    }
}

/// An empty root-owned entry: a whiteout or an opaque marker.
pub(super) fn marker(mtime: u64) -> Planned {
    Planned {
        meta: EntryMeta {
            mode: 0,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: Vec::new(),
        },
        body: EntryBody::Bytes(Vec::new()),
    }
}

fn is_opaque(p: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|n| get_xattr(p, n.as_bytes()).is_some_and(|v| v == b"y"))
}

/// The entry's own xattrs, without overlay's bookkeeping ones.
pub(super) fn xattrs(p: &Path) -> std::io::Result<crate::layer::Xattrs> {
    Ok(crate::rootfs::meta::xattrs(p)?
        .into_iter()
        .map(|(name, value)| (String::from_utf8_lossy(&name).into_owned(), value))
        .filter(|(name, _)| {
            !(name.starts_with("trusted.overlay.") || name.starts_with("user.overlay."))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::index::Node;
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use std::os::unix::fs::PermissionsExt;

    /// Makes a node as a command would, with an exact mode and owner.
    fn node(p: &Path, kind: SFlag, major: u64, minor: u64, mode: u32, owner: (u32, u32)) {
        mknod(p, kind, Mode::empty(), makedev(major, minor)).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::lchown(p, Some(owner.0), Some(owner.1)).unwrap();
    }

    #[test]
    fn fifos_and_device_nodes_are_layer_entries_and_0_0_stays_a_whiteout() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: making device nodes needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (upper, lower_root) = (d.path().join("upper"), d.path().join("lower"));
        std::fs::create_dir_all(upper.join("d")).unwrap();
        std::fs::create_dir(&lower_root).unwrap();
        std::fs::set_permissions(upper.join("d"), std::fs::Permissions::from_mode(0o755)).unwrap();
        node(&upper.join("p"), SFlag::S_IFIFO, 0, 0, 0o600, (5, 6));
        std::fs::hard_link(upper.join("p"), upper.join("p2")).unwrap();
        node(&upper.join("d/f"), SFlag::S_IFIFO, 0, 0, 0o644, (0, 0));
        node(&upper.join("nul"), SFlag::S_IFCHR, 1, 3, 0o620, (0, 5));
        node(&upper.join("blk"), SFlag::S_IFBLK, 7, 0, 0o660, (0, 6));
        // Overlay's whiteout of a lower file.
        node(&upper.join("gone"), SFlag::S_IFCHR, 0, 0, 0, (0, 0));
        // Copied up (a chown to the same owner): the same FIFO as below.
        node(&upper.join("same"), SFlag::S_IFIFO, 0, 0, 0o644, (0, 0));
        crate::rootfs::meta::set_times(&upper.join("same"), 1_000, 0).unwrap();
        // Made again with other numbers, all else as below.
        node(&upper.join("renum"), SFlag::S_IFCHR, 1, 5, 0o644, (0, 0));
        crate::rootfs::meta::set_times(&upper.join("renum"), 1_000, 0).unwrap();
        let sock = std::os::unix::net::UnixListener::bind(upper.join("sock")).unwrap();
        let mut lower = FsIndex::default().with_root();
        let below = |kind| Node {
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 1_000,
            xattrs: Vec::new(),
        };
        lower.insert("gone".into(), below(NodeKind::File));
        lower.insert("same".into(), below(NodeKind::Fifo));
        lower.insert("renum".into(), below(NodeKind::Char(1, 3)));
        let out = changes(&upper, &lower_root, &lower, &[]).unwrap();
        drop(sock);
        let got: Vec<(String, String, u32, u64, u64)> = out
            .iter()
            .map(|(k, p)| {
                let kind = match &p.body {
                    EntryBody::Dir => "dir".to_string(),
                    EntryBody::Bytes(b) if b.is_empty() => "marker".into(),
                    EntryBody::Hardlink(t) => format!("=> {t}"),
                    EntryBody::Fifo => "fifo".into(),
                    EntryBody::Char(a, b) => format!("char {a}:{b}"),
                    EntryBody::Block(a, b) => format!("block {a}:{b}"),
                    other => format!("{other:?}"),
                };
                (k.0.clone(), kind, p.meta.mode, p.meta.uid, p.meta.gid)
            })
            .collect();
        let want: Vec<(String, String, u32, u64, u64)> = [
            (".wh.gone", "marker", 0, 0, 0),
            ("blk", "block 7:0", 0o660, 0, 6),
            ("d", "dir", 0o755, 0, 0),
            ("d/f", "fifo", 0o644, 0, 0),
            ("nul", "char 1:3", 0o620, 0, 5),
            ("p", "fifo", 0o600, 5, 6),
            ("p2", "=> p", 0o600, 5, 6),
            ("renum", "char 1:5", 0o644, 0, 0),
        ]
        .into_iter()
        .map(|(p, k, m, u, g)| (p.to_string(), k.to_string(), m, u, g))
        .collect();
        assert_eq!(got, want);
    }
}
