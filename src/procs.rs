//! Records of the processes a build starts for RUN (the sandbox helper, the
//! init of each step's pid namespace), so that whoever ends the build — its
//! own signal handler, or the next build finding its scratch dir stale — can
//! kill them before removing scratch. A record is the pid and its start time
//! (field 22 of `/proc/PID/stat`), so a pid the kernel has since given to
//! another process is never hit.

use nix::libc;
use std::path::{Path, PathBuf};

/// Where a build's records are: `procs` in its scratch dir (the one
/// `scratch::Cleanup` and the next build's stale-dir removal look in).
pub fn dir(scratch: &Path) -> PathBuf {
    scratch.join("procs")
}

/// The start time of `pid` in clock ticks since boot, or `None` when it is gone.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    parse_start(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of a `/proc/PID/stat` line.
fn parse_start(stat: &str) -> Option<u64> {
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// The records directory and the host's /proc, held open: the sandbox helper
/// writes and removes records and reads start times relative to them, since a
/// `pivot_root` in its mount namespace moves its own root into the step's
/// (paths would then land in the step's root, and its /proc is the step's).
pub(crate) struct Records {
    dir: std::fs::File,
    proc: std::fs::File,
}

impl Records {
    pub(crate) fn open(dir: &Path) -> std::io::Result<Records> {
        // 0700 as all of scratch (`scratch::private_dir_all`, which sits above
        // this module: scratch's cleanup reads the records).
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)?;
        Ok(Records {
            dir: std::fs::File::open(dir)?,
            proc: std::fs::File::open("/proc")?,
        })
    }

    /// Writes `PID` in the directory; the record is removed when the returned
    /// guard is dropped (the process has been waited for).
    pub(crate) fn record(&self, pid: i32) -> std::io::Result<Recorded<'_>> {
        use nix::fcntl::OFlag;
        use std::io::Write;
        let stat = open_at(&self.proc, &format!("{pid}/stat"), OFlag::O_RDONLY, 0)?;
        let stat = std::io::read_to_string(stat)?;
        let start =
            parse_start(&stat).ok_or_else(|| std::io::Error::from_raw_os_error(libc::ESRCH))?;
        let name = pid.to_string();
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW;
        let mut f = open_at(&self.dir, &name, flags, 0o600)?;
        f.write_all(format!("{pid} {start}\n").as_bytes())?;
        Ok(Recorded {
            records: self,
            name,
        })
    }
}

/// A record in [`Records`], removed on drop.
pub(crate) struct Recorded<'a> {
    records: &'a Records,
    name: String,
}

impl Drop for Recorded<'_> {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        let _ = nix::unistd::unlinkat(
            Some(self.records.dir.as_raw_fd()),
            self.name.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

/// `rel` opened under the directory `dir` holds open (close-on-exec): paths
/// through a held directory stay right when this process's root moves.
pub(crate) fn open_at(
    dir: &std::fs::File,
    rel: &str,
    flags: nix::fcntl::OFlag,
    mode: u32,
) -> std::io::Result<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        rel,
        flags | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(mode),
    )?;
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// SIGKILLs every recorded process still running as the one recorded, and
/// waits (up to two seconds) until they are gone: a pid namespace's other
/// processes die with its init. Returns how many it killed.
pub(crate) fn kill_recorded(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut killed = Vec::new();
    for e in rd.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let mut it = text.split_whitespace();
        let (Some(Ok(pid)), Some(Ok(start))) = (
            it.next().map(str::parse::<i32>),
            it.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        if pid > 1 && start_time(pid) == Some(start) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed.push((pid, start));
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    // A killed process stays a zombie until its parent reaps it: gone means
    // no longer running (state Z or X) or no longer there.
    while killed.iter().any(|&(pid, start)| running(pid, start))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    killed.len()
}

fn running(pid: i32, start: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    parse_start(&stat) == Some(start) && !matches!(state, Some("Z") | Some("X"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_a_recorded_process_and_never_a_reused_pid() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let records = Records::open(dir.path()).unwrap();
        std::mem::forget(records.record(pid).unwrap());
        // A record whose start time is not the process's: another process.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let opid = other.id() as i32;
        std::fs::write(dir.path().join(opid.to_string()), format!("{opid} 1\n")).unwrap();
        assert_eq!(kill_recorded(dir.path()), 1);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
        assert!(
            other.try_wait().unwrap().is_none(),
            "a reused pid is left alone"
        );
        other.kill().unwrap();
        let _ = other.wait();
    }
}
