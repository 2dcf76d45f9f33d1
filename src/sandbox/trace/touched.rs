//! What a traced step touched: every path a changing call named (open for
//! writing, mkdir, unlink, rename, chmod, utimes, xattrs, links, mknod,
//! bind, and the emulated chown and capabilities), with its stamp as it was
//! before the step's first call on it. Every change a step makes to the root
//! passes through one of those calls, so the parent reads the change from
//! these paths alone (`inplace::touched_changes`) instead of walking the
//! whole root before and after the step.

use super::super::inplace::Stamp;
use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The tracer's side: host paths as first seen.
#[derive(Default)]
pub(super) struct Touched {
    first: HashMap<PathBuf, Option<Stamp>>,
    forced: HashSet<PathBuf>,
}

impl Touched {
    /// `host` is about to change: its stamp before the step, once.
    pub(super) fn touch(&mut self, host: &Path) {
        if !self.first.contains_key(host) {
            let stamp = std::fs::symlink_metadata(host).ok().map(|m| Stamp::of(&m));
            self.first.insert(host.to_path_buf(), stamp);
        }
    }

    /// `host` changes where the disk does not show it (an emulated chown or
    /// capability): the layer takes it whatever its stamp says.
    pub(super) fn force(&mut self, host: &Path) {
        self.touch(host);
        self.forced.insert(host.to_path_buf());
    }

    /// The file descriptor `fd` of thread `tid` is about to change
    /// (`forced`: in a way the disk will not show).
    pub(super) fn touch_fd(&mut self, tid: i32, fd: i32, forced: bool) {
        if let Ok(host) = std::fs::read_link(super::fd_link(tid, fd)) {
            match forced {
                true => self.force(&host),
                false => self.touch(&host),
            }
        }
    }

    /// Writes the paths under `root`, root-relative; the rest (a bound
    /// /etc file, /dev, a mount's source) is not the layer's.
    pub(super) fn save(&self, file: &Path, root: &Path) -> std::io::Result<()> {
        let root = root.as_os_str().as_bytes();
        let mut out = Record::default();
        for (host, stamp) in &self.first {
            let b = host.as_os_str().as_bytes();
            let Some(rest) = b.strip_prefix(root) else {
                continue;
            };
            let Some(rel) = rest.strip_prefix(b"/") else {
                continue;
            };
            if rel.is_empty() {
                continue;
            }
            let rel = crate::pathname::from_bytes(rel);
            if self.forced.contains(host) {
                out.forced.insert(rel.clone());
            }
            out.first.insert(rel, *stamp);
        }
        let json = serde_json::to_vec(&out).map_err(std::io::Error::other)?;
        std::fs::write(file, json)
    }
}

/// The parent's side: root-relative paths.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Record {
    /// Each touched path and its stamp before the step (`None`: absent).
    pub(crate) first: HashMap<String, Option<Stamp>>,
    /// Paths whose change the disk does not show.
    pub(crate) forced: HashSet<String>,
}

/// Reads what the helper wrote.
pub(crate) fn read(file: &Path) -> std::io::Result<Record> {
    let bytes = std::fs::read(file)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_keeps_the_first_stamp_and_only_the_roots_paths() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/f"), b"1").unwrap();
        let mut t = Touched::default();
        t.touch(&root.join("etc/f"));
        let first = Stamp::of(&std::fs::symlink_metadata(root.join("etc/f")).unwrap());
        std::fs::remove_file(root.join("etc/f")).unwrap();
        std::fs::write(root.join("etc/f"), b"22").unwrap();
        t.touch(&root.join("etc/f"));
        t.touch(&root.join("new"));
        t.force(&root.join("etc"));
        t.touch(&d.path().join("elsewhere"));
        t.touch(&d.path().join("rootx/y"));
        let file = d.path().join("touched");
        t.save(&file, &root).unwrap();
        let r = read(&file).unwrap();
        let mut paths: Vec<&String> = r.first.keys().collect();
        paths.sort();
        assert_eq!(paths, ["etc", "etc/f", "new"]);
        assert_eq!(r.first["etc/f"], Some(first));
        assert_eq!(r.first["new"], None);
        assert_eq!(r.forced, HashSet::from(["etc".to_string()]));
    }
}
