//! Unpacked base trees kept in `--cache-dir/trees`, keyed by the chain of layer
//! diff_ids (and the user namespace's id map, which decides the owners on disk).
//! A stage's root starts as a clone of the tree made of hard links: no file is
//! written, only names, so the next build of the same base needs no unpacking.
//! Measured on a 176 MB Debian + Go layer (20,342 paths): unpacking took 10–15 s
//! here (gzip inflate and ext4 inode allocation), the clone a fraction of a second
//! (docs/performance.md).
//!
//! A clone shares its files' inodes with the tree, so nothing may change a file
//! of the stage root in place. It holds: the applier replaces a file by removing
//! it and creating a new one, RUN writes into an overlay's upper dir, and
//! directories are never links (each is made anew).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

/// The tree directories for each leading run of `diff_ids` under `trees`: the
/// first layer's, the first two's, …, all of them (the last).
pub(crate) fn tree_paths(trees: &Path, diff_ids: &[&str]) -> Vec<PathBuf> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    // Owners on disk are as the current user namespace maps them.
    h.update(fs::read("/proc/self/uid_map").unwrap_or_default());
    h.update(fs::read("/proc/self/gid_map").unwrap_or_default());
    diff_ids
        .iter()
        .map(|d| {
            h.update(d.as_bytes());
            h.update(b"\n");
            trees.join(hex::encode(h.clone().finalize()))
        })
        .collect()
}

/// Of `paths` (from [`tree_paths`]), how many layers the longest tree kept holds,
/// and where it is. A build whose steps before a change were cache hits has
/// more layers from the registry than any kept tree: it starts from the base's.
pub(crate) fn longest_kept(paths: &[PathBuf]) -> Option<(usize, &Path)> {
    paths
        .iter()
        .enumerate()
        .rev()
        .find(|(_, p)| p.is_dir())
        .map(|(i, p)| (i + 1, p.as_path()))
}

/// Makes `dst` (absent or empty) a copy of `src` whose files are hard links to
/// `src`'s and whose directories are new, with `src`'s owners, modes and times.
///
/// On several threads: making directories is the cost, and after a build has
/// removed its root ext4 spends it finding free inodes, which scales with cores
/// (a 13,000-path tree with 4,000 directories: 1.5–2.4 s on one thread, 0.5–1.1 s
/// on two here; docs/performance.md).
pub(crate) fn clone_tree(src: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir_all(dst)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    let work = Work {
        state: Mutex::new(State {
            todo: vec![(src.to_path_buf(), dst.to_path_buf())],
            busy: 0,
            done: Vec::new(),
            failed: None,
        }),
        ready: Condvar::new(),
    };
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| work.run());
        }
    });
    let state = work.state.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = state.failed {
        return Err(e);
    }
    // Owners, modes and times once every directory is filled (filling one
    // moves its times; a child's metadata does not).
    let dirs = state.done;
    let per = dirs.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = dirs
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().try_for_each(|(f, t)| copy_dir_meta(f, t))))
            .collect();
        parts.into_iter().try_for_each(|p| {
            p.join()
                .unwrap_or_else(|_| Err(io::Error::other("a clone thread panicked")))
        })
    })
}

/// The directories still to clone, shared by the clone's threads.
struct Work {
    state: Mutex<State>,
    ready: Condvar,
}

struct State {
    /// (tree's directory, clone's directory), the latter made and empty.
    todo: Vec<(PathBuf, PathBuf)>,
    /// Threads filling a directory (which may add more to `todo`).
    busy: usize,
    /// Directories filled, for their metadata.
    done: Vec<(PathBuf, PathBuf)>,
    failed: Option<io::Error>,
}

impl Work {
    fn run(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if st.failed.is_some() {
                break;
            }
            if let Some((from, to)) = st.todo.pop() {
                st.busy += 1;
                drop(st);
                let filled = fill_dir(&from, &to);
                st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                st.busy -= 1;
                match filled {
                    Ok(subdirs) => {
                        st.todo.extend(subdirs);
                        st.done.push((from, to));
                    }
                    Err(e) => st.failed = Some(e),
                }
                self.ready.notify_all();
            } else if st.busy == 0 {
                break;
            } else {
                st = self.ready.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
        self.ready.notify_all();
    }
}

/// Links `src`'s files into `dst` and makes its subdirectories, returned to be
/// filled in turn.
fn fill_dir(src: &Path, dst: &Path) -> io::Result<Vec<(PathBuf, PathBuf)>> {
    let mut subdirs = Vec::new();
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            fs::create_dir(&to)?;
            subdirs.push((from, to));
        } else {
            // link(2) does not follow a symlink: the link itself is shared.
            fs::hard_link(&from, &to)?;
        }
    }
    Ok(subdirs)
}

/// Owner, mode, xattrs and times of a directory (times last: filling it moved them).
fn copy_dir_meta(src: &Path, dst: &Path) -> io::Result<()> {
    let m = fs::symlink_metadata(src)?;
    std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))?;
    for (name, value) in super::meta::xattrs(src).unwrap_or_default() {
        super::meta::set_xattr(dst, &name, &value);
    }
    super::meta::set_times(dst, m.mtime(), m.mtime_nsec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_leading_run_of_layers_has_its_own_tree_and_the_longest_kept_is_found() {
        let t = tempfile::tempdir().unwrap();
        let paths = tree_paths(t.path(), &["sha256:a", "sha256:b", "sha256:c"]);
        assert_eq!(paths.len(), 3);
        assert_eq!(paths[1], tree_paths(t.path(), &["sha256:a", "sha256:b"])[1]);
        assert_eq!(paths[0], tree_paths(t.path(), &["sha256:a"])[0]);
        assert_ne!(paths[0], paths[1]);
        assert_eq!(longest_kept(&paths), None);
        fs::create_dir_all(&paths[0]).unwrap();
        assert_eq!(longest_kept(&paths), Some((1, paths[0].as_path())));
        fs::create_dir_all(&paths[1]).unwrap();
        assert_eq!(longest_kept(&paths), Some((2, paths[1].as_path())));
    }

    #[test]
    fn a_clone_shares_files_and_owns_its_directories() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("d/e")).unwrap();
        fs::write(src.join("d/e/f"), b"x").unwrap();
        std::os::unix::fs::symlink("d/e/f", src.join("l")).unwrap();
        fs::set_permissions(src.join("d"), fs::Permissions::from_mode(0o750)).unwrap();
        let dst = t.path().join("dst");
        clone_tree(&src, &dst).unwrap();
        let (a, b) = (
            fs::metadata(src.join("d/e/f")).unwrap(),
            fs::metadata(dst.join("d/e/f")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "files are links");
        assert_ne!(
            fs::metadata(src.join("d")).unwrap().ino(),
            fs::metadata(dst.join("d")).unwrap().ino(),
            "directories are new"
        );
        assert_eq!(fs::metadata(dst.join("d")).unwrap().mode() & 0o7777, 0o750);
        assert_eq!(fs::read_link(dst.join("l")).unwrap(), Path::new("d/e/f"));
        // Replacing a clone's file leaves the tree's alone.
        fs::remove_file(dst.join("d/e/f")).unwrap();
        fs::write(dst.join("d/e/f"), b"y").unwrap();
        assert_eq!(fs::read(src.join("d/e/f")).unwrap(), b"x");
    }

    #[test]
    fn a_wide_tree_clones_whole_and_a_failure_is_returned() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        for a in 0..20 {
            for b in 0..5 {
                let d = src.join(format!("a{a}/b{b}"));
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join("f"), format!("{a}{b}")).unwrap();
                fs::set_permissions(&d, fs::Permissions::from_mode(0o700 + b)).unwrap();
            }
        }
        let dst = t.path().join("dst");
        clone_tree(&src, &dst).unwrap();
        for a in 0..20 {
            for b in 0..5 {
                let (s, d) = (
                    src.join(format!("a{a}/b{b}")),
                    dst.join(format!("a{a}/b{b}")),
                );
                assert_eq!(
                    fs::metadata(s.join("f")).unwrap().ino(),
                    fs::metadata(d.join("f")).unwrap().ino()
                );
                let (sm, dm) = (fs::metadata(&s).unwrap(), fs::metadata(&d).unwrap());
                assert_eq!(
                    (sm.mode(), sm.mtime(), sm.mtime_nsec()),
                    (dm.mode(), dm.mtime(), dm.mtime_nsec())
                );
            }
        }
        // A name already taken in the clone fails the clone, on whichever thread.
        let again = t.path().join("again");
        fs::create_dir_all(again.join("a7/b3")).unwrap();
        fs::write(again.join("a7/b3/f"), b"taken").unwrap();
        assert!(clone_tree(&src, &again).is_err());
    }
}
