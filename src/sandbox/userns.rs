//! Setting E: a non-root user with a subordinate id range (a developer's
//! machine). The executor runs itself again inside a user namespace mapped by
//! `newuidmap`/`newgidmap` (the user's own id is root there, the subuid range
//! gives every other id), as rootless Podman and Buildah do. The whole build
//! runs inside, not only RUN: unpacking a base then gives files their image
//! owners, so a command sees the same root it would see as real root.

use super::SandboxError;
use std::path::{Path, PathBuf};

/// Set in the environment of the executor started inside the namespace.
const CHILD_ENV: &str = "KILN_USERNS_CHILD";

/// The pid of that executor, so a signal to this one reaches it.
static CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// A subordinate range from /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) start: u32,
    pub(crate) count: u32,
}

/// What the namespace maps: 0 to the user's own id, 1.. to the range.
#[derive(Debug, Clone)]
pub struct Mapping {
    uid: u32,
    gid: u32,
    uids: Range,
    gids: Range,
    newuidmap: PathBuf,
    newgidmap: PathBuf,
}

/// In the executor started by [`reexec`], before any thread exists: enters the
/// user namespace and waits (stopped) until the parent has mapped it.
pub fn enter_if_child() -> Result<(), String> {
    if std::env::var_os(CHILD_ENV).is_none() {
        return Ok(());
    }
    // Single-threaded here: unshare(CLONE_NEWUSER) requires it. What this
    // process starts must not think it is the child again.
    std::env::remove_var(CHILD_ENV);
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("entering a user namespace: {e}"))?;
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP)
        .map_err(|e| format!("waiting for the id map: {e}"))?;
    if !nix::unistd::geteuid().is_root() {
        return Err("the user namespace was not mapped".into());
    }
    Ok(())
}

/// The mapping for this user when a re-exec is needed and possible: not root,
/// a range for the user in both files, and both helpers installed.
pub fn wanted() -> Option<Mapping> {
    let uid = nix::unistd::getuid().as_raw();
    if uid == 0 {
        return None;
    }
    let gid = nix::unistd::getgid().as_raw();
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let uids = find_range(&read("/etc/subuid"), uid, name.as_deref())?;
    let gids = find_range(&read("/etc/subgid"), uid, name.as_deref())?;
    Some(Mapping {
        uid,
        gid,
        uids,
        gids,
        newuidmap: on_path("newuidmap")?,
        newgidmap: on_path("newgidmap")?,
    })
}

/// The first range of `/etc/subuid` syntax (`name-or-uid:start:count`) for the user.
pub(crate) fn find_range(text: &str, uid: u32, name: Option<&str>) -> Option<Range> {
    text.lines().find_map(|line| {
        let mut f = line.trim().splitn(3, ':');
        let who = f.next()?;
        let start = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.parse().ok()?;
        let me = Some(who) == name || who.parse::<u32>().ok() == Some(uid);
        (me && count > 0).then_some(Range { start, count })
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let found = path
        .split(':')
        .chain(["/usr/bin", "/usr/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// Runs this executor again, with the same arguments, in a user namespace
/// mapped by `m`, and returns its exit code.
pub fn reexec(m: &Mapping) -> Result<i32, SandboxError> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let exe = PathBuf::from("/proc/self/exe");
    let child = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .spawn()
        .map_err(|source| SandboxError::Spawn { path: exe, source })?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    CHILD.store(pid.as_raw(), std::sync::atomic::Ordering::SeqCst);
    let mut mapped = false;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::Stopped(_, _)) if !mapped => {
                mapped = true;
                if let Err(e) = map_ids(m, pid) {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = waitpid(pid, None);
                    return Err(e);
                }
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            }
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(e) => {
                return Err(SandboxError::Io {
                    op: "waiting for the executor in the user namespace".into(),
                    source: e.into(),
                })
            }
        }
    }
}

/// Passes a terminating signal on to the executor inside the namespace; false
/// when there is none.
pub fn forward_signal(sig: nix::sys::signal::Signal) -> bool {
    let pid = CHILD.load(std::sync::atomic::Ordering::SeqCst);
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).is_ok()
}

fn map_ids(m: &Mapping, pid: nix::unistd::Pid) -> Result<(), SandboxError> {
    for (tool, own, r) in [(&m.newuidmap, m.uid, m.uids), (&m.newgidmap, m.gid, m.gids)] {
        let out = std::process::Command::new(tool)
            .arg(pid.as_raw().to_string())
            .args(["0", &own.to_string(), "1"])
            .args(["1", &r.start.to_string(), &r.count.to_string()])
            .output()
            .map_err(|source| SandboxError::Spawn {
                path: tool.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(SandboxError::Unavailable {
                cause: format!(
                    "{} failed: {}",
                    tool.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_found_by_name_or_uid() {
        let text = "alice:100000:65536\n# not a range\n1500:200000:65536\nbob:300000:0\n";
        assert_eq!(
            find_range(text, 1000, Some("alice")),
            Some(Range {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            find_range(text, 1500, Some("carol")),
            Some(Range {
                start: 200000,
                count: 65536
            })
        );
        // An empty range maps nothing.
        assert_eq!(find_range(text, 1600, Some("bob")), None);
        assert_eq!(find_range(text, 1700, None), None);
    }
}
