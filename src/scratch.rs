//! The scratch root: one `kiln-*` directory per build under `--kaniko-dir` (or the
//! temp dir), removed when the build ends. A build holds a lock on `.lock` inside
//! it, so the next build can remove directories that a killed build (`kill -9`,
//! an OOM kill) left behind without touching those of builds still running.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

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
            crate::procs::kill_recorded(&dir.join(crate::procs::DIR));
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Scratch {
    /// Removes stale scratch directories under `parent`, then makes a locked one.
    pub fn create(parent: &Path, cleanup: &Cleanup) -> io::Result<Scratch> {
        std::fs::create_dir_all(parent)?;
        for stale in stale_dirs(parent) {
            // A killed build's RUN steps may still run (a step that changed its
            // user loses its parent-death signal): they go first.
            let killed = crate::procs::kill_recorded(&stale.join(crate::procs::DIR));
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
        let hidden = tempfile::Builder::new()
            .prefix(".new-kiln-")
            .tempdir_in(parent)?;
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
