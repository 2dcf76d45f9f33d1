//! The scratch root: one `kiln-*` directory per build under `--kaniko-dir` (or the
//! temp dir), removed when the build ends. A build holds a lock on `.lock` inside
//! it, so the next build can remove directories that a killed build (`kill -9`,
//! an OOM kill) left behind without touching those of builds still running.
//!
//! Kiln's own state (this directory, `--kaniko-dir` and `--cache-dir` when Kiln
//! makes them, and the directories made directly in those) is 0700, as BuildKit
//! keeps its state: unpacked roots and caches hold what RUN made, setuid files
//! included, and another local user must not reach them.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const PREFIX: &str = "kiln-";
const LOCK: &str = ".lock";

/// The scratch directories of this process, for removal when a signal ends it
/// while a thread is still busy (and so never drops its `Scratch`).
#[derive(Debug, Clone, Default)]
pub struct Cleanup(std::sync::Arc<std::sync::Mutex<Vec<PathBuf>>>);

impl Cleanup {
    fn register(&self, dir: &Path) {
        self.paths().push(dir.to_path_buf());
    }

    /// Kills the processes each registered directory records (RUN's helpers
    /// and pid namespaces), then removes the directories that still exist.
    pub fn remove_all(&self) {
        for dir in self.paths().drain(..) {
            crate::procs::kill_recorded(&crate::procs::dir(&dir));
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    fn paths(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A build's scratch directory; removed on drop.
pub struct Scratch {
    dir: PathBuf,
    _lock: File,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Before `_lock` closes: nobody may take the directory for stale meanwhile.
        remove_dir_parallel(&self.dir);
    }
}

/// `remove_dir_all` on several threads: unlinking is I/O-bound (measured here:
/// three 20,000-entry roots written back to disk took 31 s one after the other,
/// 15 s at once), so the subtrees a few levels down go at once.
pub(crate) fn remove_dir_parallel(dir: &Path) {
    const DEPTH: usize = 3;
    const THREADS: usize = 8;
    let mut work = vec![dir.to_path_buf()];
    for _ in 0..DEPTH {
        let mut next = Vec::new();
        for d in work {
            match std::fs::read_dir(&d) {
                // Only real directories are entered, never a link to one.
                Ok(rd) if !d.is_symlink() => next.extend(rd.flatten().map(|e| e.path())),
                _ => next.push(d),
            }
        }
        work = next;
    }
    let work = Mutex::new(work);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| loop {
                let Some(p) = work.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
                    break;
                };
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => {
                        let _ = std::fs::remove_dir_all(&p);
                    }
                    Ok(_) => {
                        let _ = std::fs::remove_file(&p);
                    }
                    Err(_) => {}
                }
            });
        }
    });
    // The directories the walk went through, now empty.
    let _ = std::fs::remove_dir_all(dir);
}

impl Scratch {
    /// Removes stale scratch directories under `parent`, then makes a locked one.
    pub fn create(parent: &Path, cleanup: &Cleanup) -> io::Result<Scratch> {
        private_dir_all(parent)?;
        for stale in stale_dirs(parent) {
            // A killed build's RUN steps may still run (a step that changed its
            // user loses its parent-death signal): they go first.
            let killed = crate::procs::kill_recorded(&crate::procs::dir(&stale));
            if killed > 0 {
                crate::log_warn!(
                    "killed {killed} process(es) that a build that no longer runs left behind in {}",
                    stale.display()
                );
            }
            match std::fs::remove_dir_all(&stale) {
                Ok(()) => crate::log_info!(
                    "removed {}, left behind by a build that no longer runs",
                    stale.display()
                ),
                Err(e) => crate::log_warn!("removing stale {}: {e}", stale.display()),
            }
        }
        // Made under a name no other build looks at, locked, then renamed into
        // view: a `kiln-*` directory is never seen without its lock held.
        let hidden = private_tempdir(".new-kiln-", parent)?;
        let lock = File::create(hidden.path().join(LOCK))?;
        lock.lock()?;
        let name = hidden
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().replace(".new-kiln-", PREFIX))
            .unwrap_or_else(|| PREFIX.to_string());
        let dir = parent.join(name);
        std::fs::rename(hidden.path(), &dir)?;
        let _ = hidden.keep();
        cleanup.register(&dir);
        Ok(Scratch { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// Makes `dir`, and each missing parent, 0700 (see the module's notes). The mode
/// is given per directory rather than by umask, which RUN's commands would
/// inherit (their files would differ from BuildKit's). An existing directory
/// keeps its mode: it may be the user's.
pub fn private_dir_all(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A new 0700 directory with a unique name under `parent` (tempfile's default
/// is 0777 less the umask).
pub(crate) fn private_tempdir(prefix: &str, parent: &Path) -> io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
}

/// A name of its own in `dir` for a file one task writes and reads back (a
/// config, an index): stages running at once never share a half-written file.
/// The file (0600, empty) is removed when the path is dropped.
pub(crate) fn private_temp_file(prefix: &str, dir: &Path) -> io::Result<tempfile::TempPath> {
    Ok(tempfile::Builder::new()
        .prefix(prefix)
        .tempfile_in(dir)?
        .into_temp_path())
}

/// Writes `bytes` to `path` whole: under a unique name in the same directory,
/// then renamed, so a reader sees the old file or the new one, never a part.
pub(crate) fn write_whole(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".part-").tempfile_in(dir)?;
    io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path).map(|_| ()).map_err(|e| e.error)
}

/// Whether a name is one `Scratch::create` makes: `kiln-` and six letters or digits.
fn is_scratch_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Scratch directories whose lock no live process holds. Only directories with
/// Kiln's name and lock file qualify: anything else in a shared temp dir (a user's
/// `kiln-src`, an older executor's scratch) is never touched.
fn stale_dirs(parent: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| is_scratch_name(&e.file_name().to_string_lossy()))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        // Getting the lock means its holder is gone; dropping the file releases it.
        .filter(|dir| File::open(dir.join(LOCK)).is_ok_and(|f| f.try_lock().is_ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_removal_takes_everything_and_follows_no_link() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(outside.join("keep")).unwrap();
        let dir = t.path().join("scratch");
        for i in 0..20 {
            let d = dir.join(format!("s{i}/rootfs/usr/lib/deep"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f"), b"x").unwrap();
            std::fs::write(dir.join(format!("s{i}/top")), b"x").unwrap();
        }
        std::os::unix::fs::symlink(&outside, dir.join("s0/rootfs/link")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("s1/link")).unwrap();
        let ro = dir.join("s2/rootfs/ro");
        std::fs::create_dir_all(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        remove_dir_parallel(&dir);
        assert!(!dir.exists());
        assert!(outside.join("keep").is_dir(), "a link's target stays");
    }
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn kilns_own_dirs_are_private_and_existing_ones_keep_their_mode() {
        let t = tempfile::tempdir().unwrap();
        let made = t.path().join("a/kaniko");
        let live = Scratch::create(&made, &Cleanup::default()).unwrap();
        assert_eq!(mode(&t.path().join("a")), 0o700, "a parent Kiln made");
        assert_eq!(mode(&made), 0o700, "a --kaniko-dir Kiln made");
        assert_eq!(mode(live.path()), 0o700, "the scratch dir");
        let users = t.path().join("users");
        std::fs::create_dir(&users).unwrap();
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o755)).unwrap();
        let second = Scratch::create(&users, &Cleanup::default()).unwrap();
        assert_eq!(mode(&users), 0o755, "an existing dir is left alone");
        assert_eq!(mode(second.path()), 0o700);
        private_dir_all(&users).unwrap();
        assert_eq!(mode(&users), 0o755);
    }

    #[test]
    fn only_unlocked_scratch_dirs_are_stale() {
        let parent = tempfile::tempdir().unwrap();
        let dead = parent.path().join("kiln-dead01");
        std::fs::create_dir(&dead).unwrap();
        File::create(dead.join(LOCK)).unwrap();
        let no_lock = parent.path().join("kiln-nolock");
        std::fs::create_dir(&no_lock).unwrap();
        let users = parent.path().join("kiln-old-src");
        std::fs::create_dir(&users).unwrap();
        File::create(users.join(LOCK)).unwrap();
        let other = parent.path().join("not-kiln");
        std::fs::create_dir(&other).unwrap();
        File::create(other.join(LOCK)).unwrap();
        let live = Scratch::create(parent.path(), &Cleanup::default()).unwrap();
        assert!(!dead.exists(), "a dead build's dir is removed");
        assert!(
            no_lock.exists(),
            "a dir without Kiln's lock file is left alone"
        );
        assert!(users.exists(), "a name Kiln does not make is left alone");
        assert!(other.exists(), "only kiln-* dirs are touched");
        let second = Scratch::create(parent.path(), &Cleanup::default()).unwrap();
        assert!(live.path().exists(), "a live build's dir is left alone");
        let p = second.path().to_path_buf();
        drop(second);
        assert!(!p.exists(), "removed on drop");
    }
}
