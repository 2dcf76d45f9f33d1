//! The in-place rung, for a container that may make no namespaces (setting A:
//! Docker's default seccomp profile, a Pod with RuntimeDefault): RUN runs in the
//! executor's own root, as Kaniko runs it, so /proc, /dev and /sys are the
//! container's. Allowed only as root in a container started from Kiln's own
//! image (the marker next to the executor says so): never on a host.
//!
//! The stage's layers are unpacked into `/` around what the executor keeps
//! (`rootfs::keep`); a stat walk before and after the command gives its change,
//! in the shape the overlay reader (`upper`) gives it, so both rungs write the
//! same layer for the same command.

use super::trace::touched::Record;
use super::upper::{self, UpperError};
use crate::layer::entries::{PathKey, Planned};
use crate::layer::writer::EntryBody;
use crate::rootfs::index::{FsIndex, Node, NodeKind};
use crate::rootfs::join_rel;
use crate::rootfs::keep::Keep;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The file in the executor's directory that marks Kiln's own image.
pub(crate) const MARKER: &str = ".kiln-image";

/// Whether RUN may use this process's own root: root, in a container, started
/// from Kiln's image.
pub(crate) fn allowed() -> bool {
    nix::unistd::geteuid().is_root()
        && super::in_container()
        && executor_dir().is_some_and(|d| d.join(MARKER).is_file())
}

fn executor_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
}

/// What the root keeps: every mount point but `/` (/proc, /dev, /sys, the
/// container's /etc/hosts, volumes, a Pod's secrets), the executor's own
/// directory and `extra` (scratch, cache dir, context, credentials).
pub(crate) fn keep(extra: &[PathBuf]) -> Keep {
    let mut paths = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| mount_points(&m))
        .unwrap_or_default();
    paths.extend(
        executor_dir()
            .into_iter()
            .chain(extra.iter().cloned())
            .filter_map(|p| p.canonicalize().ok())
            .map(|p| crate::pathname::from_os(p.as_os_str())),
    );
    Keep::new(paths)
}

/// The mount points of a mountinfo table (the fifth field, octal escapes undone).
fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p != "/")
        .collect()
}

fn unescape(s: &str) -> String {
    crate::pathname::from_os(&crate::pathname::unescape_octal(s))
}

/// Identity and change time of an entry: any write, chmod, chown, link or
/// rename of it moves its ctime; a replacement changes its inode. The
/// modification time to the nanosecond tells a rewrite within the same
/// second (the layer keeps whole seconds) from a chmod or a new link.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl Stamp {
    pub(crate) fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            ctime: (m.ctime(), m.ctime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }

    /// Whether a regular file's contents may have changed since `self`.
    fn rewritten(&self, now: &Stamp, m: &std::fs::Metadata) -> bool {
        m.is_file() && (self.ino != now.ino || self.mtime != now.mtime)
    }
}

/// The root as a command found it: a file index read from disk and each
/// entry's stamp.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    index: FsIndex,
    stamps: HashMap<String, Stamp>,
}

impl Snapshot {
    /// Walks `root`, leaving out what `keep` keeps.
    pub(crate) fn take(root: &Path, keep: &Keep) -> Result<Snapshot, UpperError> {
        Ok(changes(root, &Snapshot::default(), keep, &HashSet::new())?.1)
    }

    fn record(&mut self, path: &str, node: Node, stamp: Stamp) {
        self.index.insert(path.to_string(), node);
        self.stamps.insert(path.to_string(), stamp);
    }
}

/// What changed in `root` since `before`, as layer entries (the overlay
/// reader's rules: parents of changes, whiteouts for what is gone, a directory
/// made anew hides everything it held), and the root as it is now. Directories
/// in `stub_parents` hold a kept path the image has not (the container's
/// /etc/hosts where the image has none): they keep their time, as BuildKit
/// restores it when it removes its own stubs there.
pub(crate) fn changes(
    root: &Path,
    before: &Snapshot,
    keep: &Keep,
    stub_parents: &HashSet<String>,
) -> Result<(BTreeMap<PathKey, Planned>, Snapshot), UpperError> {
    let mut w = Walk {
        before,
        keep,
        stub_parents,
        links: HashMap::new(),
        out: BTreeMap::new(),
        after: Snapshot::default(),
    };
    w.dir(root, "", false)?;
    Ok((w.out, w.after))
}

struct Walk<'a> {
    before: &'a Snapshot,
    keep: &'a Keep,
    stub_parents: &'a HashSet<String>,
    links: HashMap<(u64, u64), String>,
    out: BTreeMap<PathKey, Planned>,
    after: Snapshot,
}

impl Walk<'_> {
    /// One directory; true when it put anything in the layer. `in_new` says an
    /// ancestor was made anew, so its whiteouts already hide what was here.
    fn dir(&mut self, host_dir: &Path, rel: &str, in_new: bool) -> Result<bool, UpperError> {
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source| UpperError::Io { path, source }
        };
        let mut names: Vec<String> = std::fs::read_dir(host_dir)
            .map_err(io(host_dir))?
            .map(|e| e.map(|e| crate::pathname::from_os(&e.file_name())))
            .collect::<Result<_, _>>()
            .map_err(io(host_dir))?;
        names.sort();
        let mut emitted = false;
        let present: HashSet<&str> = names.iter().map(String::as_str).collect();
        for (name, _) in self.before.index.children(rel) {
            let path = join_rel(rel, name);
            if !present.contains(name) && !self.keep.is_kept(&path) {
                whiteout(&mut self.out, rel, name);
                emitted = true;
            }
        }
        for name in &names {
            let path = join_rel(rel, name);
            if self.keep.is_kept(&path) {
                continue;
            }
            let host = host_dir.join(crate::pathname::to_path(name));
            let m = std::fs::symlink_metadata(&host).map_err(io(&host))?;
            let stamp = Stamp::of(&m);
            let old_stamp = self.before.stamps.get(&path);
            let old = self.before.index.get(&path);
            if old_stamp == Some(&stamp) && !m.is_dir() {
                if let Some(n) = old {
                    self.after.record(&path, n.clone(), stamp);
                }
                continue;
            }
            let mtime = match old {
                Some(n) if m.is_dir() && self.stub_parents.contains(&path) => n.mtime,
                _ => m.mtime().max(0) as u64,
            };
            let meta = upper::meta_of(&host, &m, mtime).map_err(io(&host))?;
            let target = upper::link_target(&host, &m).map_err(io(&host))?;
            self.after
                .record(&path, node_of(&m, &meta, target.clone()), stamp);
            // A directory made anew where one stood: overlay marks it opaque.
            let remade = m.is_dir()
                && matches!(old.map(|n| &n.kind), Some(NodeKind::Dir))
                && old_stamp.is_some_and(|s| (s.dev, s.ino) != (stamp.dev, stamp.ino));
            let opaque = remade && !in_new;
            let same = !opaque
                && !old_stamp.is_some_and(|s| s.rewritten(&stamp, &m))
                && old.is_some_and(|n| upper::unchanged(n, &m, &meta, target.as_ref()));
            if !same {
                if let Some(body) = upper::body_of(&host, &path, &m, target, &mut self.links) {
                    self.out.insert(
                        PathKey(path.clone()),
                        Planned {
                            meta: meta.clone(),
                            body,
                        },
                    );
                    emitted = true;
                }
            }
            if m.is_dir() {
                let below = self.dir(&host, &path, in_new || remade)?;
                if same && below {
                    as_parent(&mut self.out, path, meta);
                    emitted = true;
                }
            }
        }
        Ok(emitted)
    }
}

/// The change a traced step made, read from the paths it touched alone
/// ([`super::trace::touched`]) against the stage's `index`: each touched path
/// against its stamp from before the step, the directories on the way as
/// parents, everything below a directory the step made (or made anew) as new.
/// The same shape as [`changes`] gives, without walking the rest of the root.
pub(crate) fn touched_changes(
    root: &Path,
    index: &FsIndex,
    record: &Record,
    stub_parents: &HashSet<String>,
) -> Result<BTreeMap<PathKey, Planned>, UpperError> {
    let mut names: HashMap<String, BTreeSet<String>> = HashMap::new();
    for p in record.first.keys() {
        let mut child = p.as_str();
        loop {
            let (parent, name) = crate::rootfs::split_parent(child);
            let fresh = names
                .entry(parent.to_string())
                .or_default()
                .insert(name.to_string());
            if !fresh || parent.is_empty() {
                break;
            }
            child = parent;
        }
    }
    let mut f = Focused {
        index,
        record,
        names,
        stub_parents,
        links: HashMap::new(),
        out: BTreeMap::new(),
    };
    f.dir(root, "")?;
    Ok(f.out)
}

struct Focused<'a> {
    index: &'a FsIndex,
    record: &'a Record,
    /// Directory → the names in it that were touched or lead to one that was.
    names: HashMap<String, BTreeSet<String>>,
    stub_parents: &'a HashSet<String>,
    links: HashMap<(u64, u64), String>,
    out: BTreeMap<PathKey, Planned>,
}

fn io_at(p: &Path) -> impl FnOnce(std::io::Error) -> UpperError {
    let path = p.display().to_string();
    move |source| UpperError::Io { path, source }
}

impl Focused<'_> {
    /// One directory the step reached into; true when it put anything in
    /// the layer.
    fn dir(&mut self, host_dir: &Path, rel: &str) -> Result<bool, UpperError> {
        let Some(names) = self.names.remove(rel) else {
            return Ok(false);
        };
        let mut emitted = false;
        for name in &names {
            let path = join_rel(rel, name);
            let host = host_dir.join(crate::pathname::to_path(name));
            let m = match std::fs::symlink_metadata(&host) {
                Ok(m) => m,
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(nix::libc::ENOTDIR) =>
                {
                    if self.index.get(&path).is_some() {
                        whiteout(&mut self.out, rel, name);
                        emitted = true;
                    }
                    continue;
                }
                Err(e) => return Err(io_at(&host)(e)),
            };
            // `None`: only on the way to a touched path; `Some(None)`: absent
            // before the step.
            let first = self.record.first.get(&path);
            let old = match first {
                Some(None) => None,
                _ => self.index.get(&path),
            };
            let stamp = Stamp::of(&m);
            let was_dir = matches!(old.map(|n| &n.kind), Some(NodeKind::Dir));
            let replaced =
                matches!(first, Some(Some(s)) if (s.dev, s.ino) != (stamp.dev, stamp.ino));
            if m.is_dir() && (!was_dir || replaced) {
                self.made_dir(&host, &path, &m, old)?;
                emitted = true;
                continue;
            }
            let mtime = match old {
                Some(n) if m.is_dir() && self.stub_parents.contains(&path) => n.mtime,
                _ => m.mtime().max(0) as u64,
            };
            let mut meta = upper::meta_of(&host, &m, mtime).map_err(io_at(&host))?;
            let target = upper::link_target(&host, &m).map_err(io_at(&host))?;
            if let Some(n) = old {
                keep_unwritable_xattrs(&mut meta, n);
            }
            let changed = self.record.forced.contains(&path)
                || (matches!(first, Some(s) if *s != Some(stamp))
                    && old.is_none_or(|n| {
                        if matches!(first, Some(Some(s)) if s.rewritten(&stamp, &m)) {
                            return true;
                        }
                        // The traced rung never changes a real owner: the
                        // step's owners come from the tracer's table.
                        let mut seen = meta.clone();
                        (seen.uid, seen.gid) = (n.uid, n.gid);
                        !upper::unchanged(n, &m, &seen, target.as_ref())
                    }));
            if changed {
                if let Some(body) = upper::body_of(&host, &path, &m, target, &mut self.links) {
                    self.out.insert(
                        PathKey(path.clone()),
                        Planned {
                            meta: meta.clone(),
                            body,
                        },
                    );
                    emitted = true;
                }
            }
            if m.is_dir() && self.dir(&host, &path)? && !changed {
                as_parent(&mut self.out, path, meta);
                emitted = true;
            }
        }
        Ok(emitted)
    }

    /// A directory the step made, or made anew where one stood: it and all
    /// below it are new, and what stood below the old one and is gone gets
    /// a whiteout, as [`changes`] gives them.
    fn made_dir(
        &mut self,
        host: &Path,
        path: &str,
        m: &std::fs::Metadata,
        old: Option<&Node>,
    ) -> Result<(), UpperError> {
        let mtime = match old {
            Some(n) if self.stub_parents.contains(path) => n.mtime,
            _ => m.mtime().max(0) as u64,
        };
        let meta = upper::meta_of(host, m, mtime).map_err(io_at(host))?;
        self.out.insert(
            PathKey(path.to_string()),
            Planned {
                meta,
                body: EntryBody::Dir,
            },
        );
        let mut names: Vec<String> = std::fs::read_dir(host)
            .map_err(io_at(host))?
            .map(|e| e.map(|e| crate::pathname::from_os(&e.file_name())))
            .collect::<Result<_, _>>()
            .map_err(io_at(host))?;
        names.sort();
        if matches!(old.map(|n| &n.kind), Some(NodeKind::Dir)) {
            let present: HashSet<&str> = names.iter().map(String::as_str).collect();
            for (name, _) in self.index.children(path) {
                if !present.contains(name) {
                    whiteout(&mut self.out, path, name);
                }
            }
        }
        for name in &names {
            let p = join_rel(path, name);
            let h = host.join(crate::pathname::to_path(name));
            let cm = std::fs::symlink_metadata(&h).map_err(io_at(&h))?;
            if cm.is_dir() {
                let below = self.index.get(&p).filter(|n| n.kind == NodeKind::Dir);
                self.made_dir(&h, &p, &cm, below)?;
                continue;
            }
            let meta = upper::meta_of(&h, &cm, cm.mtime().max(0) as u64).map_err(io_at(&h))?;
            let target = upper::link_target(&h, &cm).map_err(io_at(&h))?;
            if let Some(body) = upper::body_of(&h, &p, &cm, target, &mut self.links) {
                self.out.insert(PathKey(p), Planned { meta, body });
            }
        }
        Ok(())
    }
}

/// A whiteout for `name` in `dir`; BuildKit writes them with no time.
fn whiteout(out: &mut BTreeMap<PathKey, Planned>, dir: &str, name: &str) {
    out.insert(
        PathKey(join_rel(dir, &format!(".wh.{name}"))),
        upper::marker(0),
    );
}

/// An unchanged directory: in the layer only as a parent of a change.
fn as_parent(
    out: &mut BTreeMap<PathKey, Planned>,
    path: String,
    meta: crate::layer::writer::EntryMeta,
) {
    out.insert(
        PathKey(path),
        Planned {
            meta,
            body: EntryBody::Dir,
        },
    );
}

/// Extended attributes of the image that an unprivileged unpack could not
/// write (`security.*`, `trusted.*`): the disk lacks them, the file has them.
fn keep_unwritable_xattrs(meta: &mut crate::layer::writer::EntryMeta, old: &Node) {
    let mut added = false;
    for (k, v) in &old.xattrs {
        let unwritable = k.starts_with("security.") || k.starts_with("trusted.");
        if unwritable && !meta.xattrs.iter().any(|(m, _)| m == k) {
            meta.xattrs.push((k.clone(), v.clone()));
            added = true;
        }
    }
    if added {
        meta.xattrs.sort();
    }
}

/// The index node of an entry read from disk.
fn node_of(
    m: &std::fs::Metadata,
    meta: &crate::layer::writer::EntryMeta,
    target: Option<String>,
) -> Node {
    let ft = m.file_type();
    let kind = match target {
        Some(t) => NodeKind::Symlink(t),
        None if ft.is_dir() => NodeKind::Dir,
        None if ft.is_file() => NodeKind::File,
        None => upper::special(m)
            .as_ref()
            .and_then(upper::special_kind)
            .unwrap_or(NodeKind::Other),
    };
    Node {
        kind,
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        size: if ft.is_file() { m.len() } else { 0 },
        mtime: meta.mtime,
        xattrs: meta.xattrs.clone(),
    }
}

#[cfg(test)]
mod tests;
