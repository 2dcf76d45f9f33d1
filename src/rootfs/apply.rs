//! Unpacks layers into a scratch directory. Every path is resolved with
//! [`resolve_in_root`] against the directory itself, and the last component is
//! created without following links, so no entry can write outside the root.

use super::sys::{self, Node, Syscalls};
use super::{join_rel, split_parent};
use crate::layer::reader::{self, Entry, Kind, ReadError, Whiteout};
use crate::pathname::{display, from_os, to_path};
use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("layer {layer}: {path}: {source}")]
    Io {
        layer: String,
        path: String,
        source: io::Error,
    },
}

/// What one application did beyond the plain entries.
#[derive(Debug, Default)]
pub(crate) struct ApplyReport {
    /// Device nodes skipped because the executor is not root.
    pub(crate) skipped_devices: usize,
    /// The layer's entries, when asked for: its file index without a second read.
    pub(crate) entries: Option<Vec<Entry>>,
}

/// The largest piece of a file's body read before it is written: most files
/// of a base take one write.
const BODY_CHUNK: usize = 1 << 20;

/// What one layer's application has seen so far.
#[derive(Default)]
struct LayerState {
    /// Paths this layer wrote (an opaque whiteout keeps them).
    written: HashSet<String>,
    /// Paths known to be real directories, every component of them too.
    real_dirs: HashSet<String>,
    /// Directories and their mtimes, set once the layer's entries below them
    /// stop changing them.
    dir_times: Vec<(PathBuf, u64)>,
    /// Device nodes this layer has that could not be made: a hard link to one
    /// is skipped with it rather than failing the unpack.
    skipped: HashSet<String>,
    /// The root was empty when this layer began: a path this layer has not
    /// made does not exist, so it needs no lstat before it is created.
    fresh: bool,
    /// In a fresh root, the setgid directories (the root itself when it is
    /// one, those this layer made, and what was made in them): a file or
    /// directory made in one takes its group, and a directory its setgid
    /// bit, so owner and mode must be set.
    setgid_dirs: HashSet<String>,
    /// A file's body on its way to the disk.
    buf: Vec<u8>,
    report: ApplyReport,
}

impl LayerState {
    /// `rel` is being removed or replaced: it and what is below it are no longer
    /// known directories.
    fn forget_dirs_under(&mut self, rel: &str) {
        if self.real_dirs.is_empty() {
            return;
        }
        let below = format!("{rel}/");
        self.real_dirs
            .retain(|d| d != rel && !d.starts_with(&below));
    }
}

/// A directory that layers are unpacked into.
pub(crate) struct ScratchRoot {
    root: PathBuf,
    sys: Box<dyn Syscalls>,
    /// Paths no layer may touch (a root shared with the executor).
    keep: Option<super::keep::Keep>,
    /// Nothing has been applied yet and the directory was empty when made.
    untouched: std::sync::atomic::AtomicBool,
}

impl ScratchRoot {
    pub(crate) fn new(root: &Path) -> ScratchRoot {
        ScratchRoot::with_syscalls(root, Box::new(sys::Real::effective()))
    }

    /// A root that acts as an unprivileged executor would (tests of that path).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn unprivileged(root: &Path) -> ScratchRoot {
        ScratchRoot::with_syscalls(root, Box::new(sys::Real::unprivileged()))
    }

    /// A root whose privileged calls go through `sys` (tests record them).
    pub(crate) fn with_syscalls(root: &Path, sys: Box<dyn Syscalls>) -> ScratchRoot {
        let empty = fs::read_dir(root).is_ok_and(|mut d| d.next().is_none());
        ScratchRoot {
            root: root.to_path_buf(),
            sys,
            keep: None,
            untouched: std::sync::atomic::AtomicBool::new(empty),
        }
    }

    /// The same root, leaving `keep`'s paths as they are whatever a layer says.
    pub(crate) fn keeping(mut self, keep: super::keep::Keep) -> ScratchRoot {
        self.keep = Some(keep);
        *self.untouched.get_mut() = false;
        self
    }

    pub(crate) fn path(&self) -> &Path {
        &self.root
    }

    /// Host path of a root-relative path (already resolved).
    pub(crate) fn host_path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(to_path(rel))
        }
    }

    /// Unpacks one layer blob.
    pub(crate) fn apply_layer(&self, blob: &Path, label: &str) -> Result<ApplyReport, ApplyError> {
        self.apply_layer_with(blob, label, false, None)
    }

    /// Unpacks one layer blob; with `collect`, the report holds its entries;
    /// with `diff_id`, the blob's tar must hash to it (a copy of the layer
    /// kept elsewhere: on a mismatch the root holds what the copy had).
    /// The blob is decompressed on a thread of its own while this one writes.
    pub(crate) fn apply_layer_with(
        &self,
        blob: &Path,
        label: &str,
        collect: bool,
        diff_id: Option<&crate::image::Digest>,
    ) -> Result<ApplyReport, ApplyError> {
        // Still empty: a RUN on the root itself may have written to it since.
        let fresh = self
            .untouched
            .swap(false, std::sync::atomic::Ordering::SeqCst)
            && fs::read_dir(&self.root).is_ok_and(|mut d| d.next().is_none());
        let mut st = LayerState {
            fresh,
            ..LayerState::default()
        };
        // A setgid root (a Pod volume with an fsGroup) passes its group on.
        let setgid_root = fs::metadata(&self.root).map_or(true, |m| m.mode() & 0o2000 != 0);
        if setgid_root {
            st.setgid_dirs.insert(String::new());
        }
        if collect {
            st.report.entries = Some(Vec::new());
        }
        let size = std::fs::metadata(blob).map(|m| m.len()).unwrap_or(0);
        let bar = crate::progress::bar(crate::progress::Kind::Unpack, label, size);
        reader::for_each_entry_piped(blob, label, &bar, diff_id, |e, data| {
            let applied = self.apply_entry(&e, data, &mut st, label);
            if let Some(all) = st.report.entries.as_mut() {
                all.push(e.clone());
            }
            applied.map_err(|err| match err {
                ApplyError::Read(r) => r,
                // The entry and layer are named once, by ReadError.
                ApplyError::Io { source, .. } => ReadError::Entry {
                    layer: label.to_string(),
                    path: display(&e.path),
                    reason: source.to_string(),
                },
            })
        })?;
        // Deepest last written first: setting a parent's time never touches a child's.
        for (dir, mtime) in st.dir_times.iter().rev() {
            match set_mtime(dir, *mtime) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(ReadError::Entry {
                        layer: label.to_string(),
                        path: dir.display().to_string(),
                        reason: e.to_string(),
                    }
                    .into())
                }
                _ => {}
            }
        }
        bar.done();
        Ok(st.report)
    }

    fn apply_entry(
        &self,
        e: &Entry,
        data: &mut dyn Read,
        st: &mut LayerState,
        label: &str,
    ) -> Result<(), ApplyError> {
        let io_err = |path: &str| {
            let path = path.to_string();
            let layer = label.to_string();
            move |source| ApplyError::Io {
                layer,
                path,
                source,
            }
        };
        if let Some(keep) = &self.keep {
            if self
                .apply_around_kept(keep, e, st)
                .map_err(io_err(&e.path))?
            {
                return Ok(());
            }
        }
        let (parent, name) = split_parent(&e.path);
        // Overlay rule (what BuildKit and Docker produce, each layer unpacked on its
        // own): an entry's parents are directories of this layer, so a lower layer's
        // symlink or file at a parent's place is replaced, never followed.
        self.ensure_real_dir(parent, st).map_err(io_err(&e.path))?;
        let parent_host = self.host_path(parent);
        match &e.whiteout {
            Some(Whiteout::Remove(_)) => {
                let hidden = name.strip_prefix(".wh.").unwrap_or(name);
                st.forget_dirs_under(&join_rel(parent, hidden));
                remove_any(&parent_host.join(to_path(hidden))).map_err(io_err(&e.path))?;
                return Ok(());
            }
            Some(Whiteout::Opaque(_)) => {
                if let Ok(rd) = fs::read_dir(&parent_host) {
                    for child in rd.flatten() {
                        let rel = join_rel(parent, &from_os(&child.file_name()));
                        if !st.written.contains(&rel) {
                            st.forget_dirs_under(&rel);
                            remove_any(&child.path()).map_err(io_err(&rel))?;
                        }
                    }
                }
                return Ok(());
            }
            None => {}
        }
        if e.path.is_empty() {
            // The root directory itself: only its metadata.
            self.set_meta(&self.root, e, true).map_err(io_err("/"))?;
            return Ok(());
        }
        let rel = join_rel(parent, name);
        let host = parent_host.join(to_path(name));
        let existing = if st.fresh && !st.written.contains(&rel) && !st.real_dirs.contains(&rel) {
            None
        } else {
            fs::symlink_metadata(&host).ok()
        };
        let is_dir_entry = e.kind == Kind::Dir;
        if let Some(m) = &existing {
            if !(is_dir_entry && m.is_dir()) {
                if m.is_dir() {
                    st.forget_dirs_under(&rel);
                }
                remove_any(&host).map_err(io_err(&rel))?;
            }
        }
        let owned = self.needs_owner(e, parent, st);
        match &e.kind {
            Kind::Dir => {
                // A directory that stood there stays (lstat: never a link).
                if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                    use std::os::unix::fs::DirBuilderExt;
                    fs::DirBuilder::new()
                        .mode(self.wanted_mode(e, true) & 0o777)
                        .create(&host)
                        .map_err(io_err(&rel))?;
                }
                // mkdir in a setgid directory makes a setgid one too.
                if st.fresh && (e.mode & 0o2000 != 0 || st.setgid_dirs.contains(parent)) {
                    st.setgid_dirs.insert(rel.clone());
                }
            }
            Kind::File => {
                // Made with its mode, filled in one write, its owner, mode and
                // times set through the open file: no path is looked up again.
                use std::os::unix::fs::OpenOptionsExt;
                let mode = self.wanted_mode(e, false);
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode & 0o777)
                    .open(&host)
                    .map_err(io_err(&rel))?;
                write_body(data, &mut f, &mut st.buf).map_err(io_err(&rel))?;
                if owned {
                    self.set_owner(&host, e).map_err(io_err(&rel))?;
                }
                if owned || !mode_given_by_create(mode) {
                    f.set_permissions(fs::Permissions::from_mode(mode))
                        .map_err(io_err(&rel))?;
                }
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.mtime);
                f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
                    .map_err(io_err(&rel))?;
                st.written.insert(rel);
                return Ok(());
            }
            Kind::Symlink(target) => symlink(to_path(target), &host).map_err(io_err(&rel))?,
            Kind::Hardlink(target) if st.skipped.contains(target) => {
                st.report.skipped_devices += 1;
                return Ok(());
            }
            Kind::Hardlink(target) => {
                // The target is named literally, as the file index names it: a
                // symlinked directory on the way means there is no such file.
                let source = self.literal_host_path(target).ok_or_else(|| {
                    io_err(&rel)(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("hard link target {} not found", display(target)),
                    ))
                })?;
                // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
                fs::hard_link(&source, &host).map_err(io_err(&rel))?;
                st.written.insert(rel);
                return Ok(());
            }
            Kind::Char(..) | Kind::Block(..) | Kind::Fifo => {
                if !self.make_node(&host, e).map_err(io_err(&rel))? {
                    st.report.skipped_devices += 1;
                    st.skipped.insert(rel);
                    return Ok(());
                }
            }
        }
        if owned {
            self.set_owner(&host, e).map_err(io_err(&rel))?;
        }
        // A directory just made with its mode, whose owner was not set after
        // (chown clears setuid bits) and which inherited no setgid bit, has
        // it already; a symlink has none.
        let made_with_mode = st.fresh
            && is_dir_entry
            && existing.is_none()
            && !owned
            && !st.setgid_dirs.contains(parent)
            && mode_given_by_create(self.wanted_mode(e, true));
        if !(made_with_mode || matches!(e.kind, Kind::Symlink(_))) {
            let mode = self.wanted_mode(e, is_dir_entry);
            fs::set_permissions(&host, fs::Permissions::from_mode(mode)).map_err(io_err(&rel))?;
        }
        // A RUN sees the image's times, as it does under BuildKit (make, find
        // -newer), and an overlay copy-up keeps them.
        if is_dir_entry {
            st.dir_times.push((host.clone(), e.mtime));
        } else {
            set_mtime(&host, e.mtime).map_err(io_err(&rel))?;
        }
        if is_dir_entry {
            st.real_dirs.insert(rel.clone());
        }
        st.written.insert(rel);
        Ok(())
    }

    /// An entry that would touch a kept path: skipped, or (a whiteout of a
    /// directory holding one) applied to everything else. True when handled.
    fn apply_around_kept(
        &self,
        keep: &super::keep::Keep,
        e: &Entry,
        st: &mut LayerState,
    ) -> io::Result<bool> {
        let hardlink_to_kept = matches!(&e.kind, Kind::Hardlink(t) if keep.is_kept(t));
        if keep.is_kept(&e.path) || hardlink_to_kept {
            crate::log_debug!("layer entry /{} left out: the executor keeps it", e.path);
            return Ok(true);
        }
        let emptied = match &e.whiteout {
            Some(Whiteout::Remove(p)) if keep.is_kept(p) => return Ok(true),
            Some(Whiteout::Remove(p)) if keep.holds_kept(p) => p,
            Some(Whiteout::Opaque(d)) if keep.holds_kept(d) => d,
            Some(_) => return Ok(false),
            // A directory holding a kept path stays one.
            None if e.kind != Kind::Dir && keep.holds_kept(&e.path) => return Ok(true),
            None => return Ok(false),
        };
        st.forget_dirs_under(emptied);
        let host = self.host_path(emptied);
        if fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
            // What this layer wrote there already stays (an opaque whiteout).
            let written: Vec<&String> = st
                .written
                .iter()
                .filter(|w| w.starts_with(&format!("{emptied}/")))
                .collect();
            if written.is_empty() {
                keep.clear_dir(&host, emptied)?;
            } else {
                let mut also = keep.paths().to_vec();
                also.extend(written.into_iter().cloned());
                super::keep::Keep::new(also).clear_dir(&host, emptied)?;
            }
        }
        Ok(true)
    }

    /// Makes a device node or FIFO; false when a device cannot be made here
    /// (not root, or a user namespace, where CAP_MKNOD makes no real devices:
    /// the sandbox gives RUN the host's harmless ones).
    pub(super) fn make_node(&self, host: &Path, e: &Entry) -> io::Result<bool> {
        let fifo = matches!(e.kind, Kind::Fifo);
        if !self.sys.caps().mknod && !fifo {
            return Ok(false);
        }
        let node = match e.kind {
            Kind::Char(ma, mi) => Node::Char(ma, mi),
            Kind::Block(ma, mi) => Node::Block(ma, mi),
            _ => Node::Fifo,
        };
        match self.sys.mknod(host, node, e.mode) {
            Err(err) if err.raw_os_error() == Some(nix::libc::EPERM) && !fifo => Ok(false),
            r => r.map(|()| true),
        }
    }

    /// The host path of `rel` if every ancestor is a real directory (no links).
    fn literal_host_path(&self, rel: &str) -> Option<PathBuf> {
        let mut cur = String::new();
        let (parent, _) = split_parent(rel);
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            cur = join_rel(&cur, part);
            if !fs::symlink_metadata(self.host_path(&cur)).ok()?.is_dir() {
                return None;
            }
        }
        Some(self.host_path(rel))
    }

    /// Makes `rel` and every ancestor a real directory, component by component
    /// with lstat (never following a link), replacing whatever else stands there.
    /// Directories this layer already saw are not checked again, so deep trees
    /// cost one check per directory, not one per entry and ancestor.
    fn ensure_real_dir(&self, rel: &str, st: &mut LayerState) -> io::Result<()> {
        let mut todo = Vec::new();
        let mut cur = rel;
        while !cur.is_empty() && !st.real_dirs.contains(cur) {
            todo.push(cur);
            cur = split_parent(cur).0;
        }
        for dir in todo.into_iter().rev() {
            let host = self.host_path(dir);
            if st.fresh && !st.written.contains(dir) {
                fs::create_dir(&host)?;
                if st.setgid_dirs.contains(split_parent(dir).0) {
                    st.setgid_dirs.insert(dir.to_string());
                }
                st.real_dirs.insert(dir.to_string());
                continue;
            }
            match fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(&host)?;
                    fs::create_dir(&host)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&host)?,
                Err(e) => return Err(e),
            }
            st.real_dirs.insert(dir.to_string());
        }
        Ok(())
    }

    pub(super) fn set_meta(&self, host: &Path, e: &Entry, is_dir: bool) -> io::Result<()> {
        // Owner first: chown clears setuid bits, the mode below sets them again.
        if self.sys.caps().chown {
            self.set_owner(host, e)?;
        }
        if matches!(e.kind, Kind::Symlink(_)) {
            return Ok(());
        }
        fs::set_permissions(
            host,
            fs::Permissions::from_mode(self.wanted_mode(e, is_dir)),
        )
    }

    /// Gives `host` the entry's owner.
    fn set_owner(&self, host: &Path, e: &Entry) -> io::Result<()> {
        match self.sys.lchown(host, e.uid as u32, e.gid as u32) {
            // An id outside a user namespace's map: the file keeps the
            // namespace's root as owner (the layer keeps the image's).
            Err(err) if err.raw_os_error() == Some(nix::libc::EINVAL) => Ok(()),
            r => r,
        }
    }

    /// Whether an entry just made needs its owner set: not when the process
    /// may not give one, nor when the new file has it already (the process's
    /// own ids, in a fresh root outside any setgid directory this layer made).
    fn needs_owner(&self, e: &Entry, parent: &str, st: &LayerState) -> bool {
        if !self.sys.caps().chown {
            return false;
        }
        let makes_it = self
            .sys
            .creator()
            .is_some_and(|(uid, gid)| u64::from(uid) == e.uid && u64::from(gid) == e.gid);
        !(st.fresh && makes_it && !st.setgid_dirs.contains(parent))
    }

    /// The mode an entry gets on disk.
    fn wanted_mode(&self, e: &Entry, is_dir: bool) -> u32 {
        let mut mode = e.mode & 0o7777;
        if !self.sys.caps().dac_override {
            // Without CAP_DAC_OVERRIDE the owner must keep the right to fill a
            // directory and read a file; the image's modes live in the file index.
            mode |= if is_dir { 0o700 } else { 0o400 };
        }
        mode
    }
}

/// Copies an entry's body to `f`, a piece of up to [`BODY_CHUNK`] bytes at a time.
fn write_body(data: &mut dyn Read, f: &mut fs::File, buf: &mut Vec<u8>) -> io::Result<()> {
    use std::io::Write;
    buf.resize(BODY_CHUNK, 0);
    loop {
        let mut n = 0;
        while n < buf.len() {
            match data.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        f.write_all(&buf[..n])?;
        if n < buf.len() {
            return Ok(());
        }
    }
}

/// Whether creating a file or directory with `mode` (its permission bits)
/// gives it exactly `mode`: no special bits, none the umask takes away.
fn mode_given_by_create(mode: u32) -> bool {
    mode & 0o7000 == 0 && sys::umask().is_some_and(|m| mode & m == 0)
}

/// Sets a path's times to a layer entry's (seconds).
pub(super) fn set_mtime(p: &Path, secs: u64) -> io::Result<()> {
    super::meta::set_times(p, i64::try_from(secs).unwrap_or(i64::MAX), 0)
}

/// Removes a file, link or whole directory tree without following links.
pub(super) fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
