//! A pids cgroup per RUN step, where this process may make one: a fork bomb
//! in a Dockerfile stops at [`PIDS_MAX`] tasks instead of filling the host's
//! pid space. Root on a host (setting D) can; in a container the cgroup file
//! system is usually read-only, and a non-root user has none delegated, so
//! there the step is not bounded (its pid namespace still ends every process
//! with the step). cgroup v1's pids hierarchy and cgroup v2 are both used.

use std::path::{Path, PathBuf};

/// Tasks (processes and threads) one step may have at once: far above what a
/// parallel compile or a JVM uses, far below a host's pid space.
pub(crate) const PIDS_MAX: u64 = 16384;

/// The step's cgroup, removed on drop once its tasks are gone.
pub(crate) struct StepCgroup {
    /// The parent cgroup's directory, held open: where no user namespace can
    /// be made, the helper's own root is pivoted into the step's, and paths
    /// would no longer lead here.
    parent: std::fs::File,
    name: String,
}

impl StepCgroup {
    /// Makes a cgroup under this process's own pids cgroup and moves this
    /// process into it, so every process forked after joins it; `None` where
    /// that is not allowed.
    pub(crate) fn join() -> Option<StepCgroup> {
        let parent = own_pids_cgroup()?;
        remove_abandoned(&parent);
        let name = format!("kiln-step-{}", std::process::id());
        let dir = parent.join(&name);
        std::fs::create_dir(&dir).ok()?;
        let cg = StepCgroup {
            parent: std::fs::File::open(&parent).ok()?,
            name,
        };
        let me = std::process::id().to_string();
        let joined = std::fs::write(dir.join("pids.max"), PIDS_MAX.to_string())
            .and_then(|()| std::fs::write(dir.join("cgroup.procs"), &me));
        joined.ok().map(|()| cg)
    }

    /// Writes `text` to `rel` under the parent cgroup's directory.
    fn write_at(&self, rel: &str, text: &str) -> std::io::Result<()> {
        use std::io::Write;
        crate::procs::open_at(&self.parent, rel, nix::fcntl::OFlag::O_WRONLY, 0)?
            .write_all(text.as_bytes())
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // This process leaves first (a cgroup holding a task cannot go), back
        // to the parent it came from.
        let _ = self.write_at("cgroup.procs", &std::process::id().to_string());
        // The killed namespace's tasks may take a moment to leave.
        for _ in 0..200 {
            match nix::unistd::unlinkat(
                Some(self.parent.as_raw_fd()),
                self.name.as_str(),
                nix::unistd::UnlinkatFlags::RemoveDir,
            ) {
                Ok(()) | Err(nix::Error::ENOENT) => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    }
}

/// Step cgroups a killed helper left (its drop never ran): empty ones go; a
/// live step's holds its helper, so removing it fails.
fn remove_abandoned(parent: &Path) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with("kiln-step-") {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// The directory of this process's cgroup in a hierarchy with the pids
/// controller: v1's `pids` mount, else v2's when it offers `pids` to children
/// (its subtree_control names it, or this is its root, where it can be turned
/// on).
fn own_pids_cgroup() -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount_of = |v2: bool| {
        info.lines().find_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let super_opts = post.nth(1).unwrap_or("");
            let point = pre.split(' ').nth(4)?;
            let root = pre.split(' ').nth(3)?;
            let ok = if v2 {
                fstype == "cgroup2"
            } else {
                fstype == "cgroup" && super_opts.split(',').any(|o| o == "pids")
            };
            // Only a mount of the hierarchy's root maps cgroup paths to dirs.
            (ok && root == "/").then(|| PathBuf::from(point))
        })
    };
    for line in cgroups.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "pids") {
            return mount_of(false).map(|m| m.join(rel));
        }
    }
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = mount_of(true)?.join(path.trim_start_matches('/'));
    let control = dir.join("cgroup.subtree_control");
    let on = std::fs::read_to_string(&control).ok()?;
    if !on.split_whitespace().any(|c| c == "pids") {
        std::fs::write(&control, "+pids").ok()?;
    }
    Some(dir)
}
