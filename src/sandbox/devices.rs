//! Device nodes a RUN makes where the kernel refuses them: in a user namespace
//! `mknod` of a character or block device is EPERM, while BuildKit (runc as
//! root) makes the node and its layer records it. Here the step's `mknod` and
//! `mknodat` of a device stop in a seccomp user notification; the helper (the
//! step's parent, outside its pid namespace) makes an empty regular file in
//! its place with the asked mode and the caller's owner, answers success, and
//! writes down what was asked. The parent then writes that path as the device
//! in the layer. Nothing is opened through the placeholder: it is no device.
//!
//! seccompiler 0.5 has no user-notification action: the filter is compiled
//! with `Trap` and its return value swapped for SECCOMP_RET_USER_NOTIF.

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// One recorded device: its root-relative path, kind and numbers, mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Device {
    pub(crate) path: String,
    pub(crate) block: bool,
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) mode: u32,
}

impl Device {
    pub(crate) fn line(&self) -> String {
        let kind = if self.block { 'b' } else { 'c' };
        // The path last: it may hold spaces.
        format!(
            "{kind} {} {} {:o} {}\n",
            self.major, self.minor, self.mode, self.path
        )
    }

    fn parse(line: &str) -> Option<Device> {
        let mut f = line.splitn(5, ' ');
        let block = match f.next()? {
            "b" => true,
            "c" => false,
            _ => return None,
        };
        Some(Device {
            block,
            major: f.next()?.parse().ok()?,
            minor: f.next()?.parse().ok()?,
            mode: u32::from_str_radix(f.next()?, 8).ok()?,
            path: f.next()?.to_string(),
        })
    }
}

/// The devices a step's helper wrote down in `file`, in order (a path made
/// twice keeps the last).
pub(crate) fn read_records(file: &Path) -> Vec<Device> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(Device::parse)
        .collect()
}

/// The filter: `mknod(path, mode, dev)` and `mknodat(dirfd, path, mode, dev)`
/// whose mode is a character or block device notify the listener.
pub(crate) fn filter() -> Result<BpfProgram, String> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;
    let kinds = |arg: u8| -> Result<Vec<SeccompRule>, String> {
        [libc::S_IFCHR, libc::S_IFBLK]
            .iter()
            .map(|&k| {
                SeccompCondition::new(
                    arg,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(u64::from(libc::S_IFMT)),
                    u64::from(k),
                )
                .and_then(|c| SeccompRule::new(vec![c]))
                .map_err(|e| e.to_string())
            })
            .collect()
    };
    let rules = BTreeMap::from([(libc::SYS_mknod, kinds(1)?), (libc::SYS_mknodat, kinds(2)?)]);
    let mut prog = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Trap, arch)
        .and_then(BpfProgram::try_from)
        .map_err(|e| e.to_string())?;
    let trap = u32::from(SeccompAction::Trap);
    for ins in prog.iter_mut() {
        // BPF_RET | BPF_K
        if ins.code == 0x06 && ins.k == trap {
            ins.k = libc::SECCOMP_RET_USER_NOTIF;
        }
    }
    Ok(prog)
}

/// Installs `prog` on this thread and returns its listener (close-on-exec).
/// Needs CAP_SYS_ADMIN in this user namespace (no `no_new_privs` is set).
pub(crate) fn install(prog: &BpfProgram) -> std::io::Result<OwnedFd> {
    let fd = super::confine::load(prog, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER)?;
    // SAFETY: the kernel just gave this process the descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Answers the step's device requests until `child` (the step's init) ends,
/// writing each made device to `records`. In this process, which made the
/// step's pid namespace and so may start no thread, a poll on the listener and
/// a pidfd of the child.
pub(crate) fn supervise(listener: OwnedFd, proc: &File, mut records: File, child: i32) {
    // SAFETY: plain syscall; a negative result is handled.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) };
    if pidfd < 0 {
        return;
    }
    // SAFETY: the kernel just gave this process the descriptor.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            answer(&listener, proc, &mut records);
        } else if fds[0].revents != 0 || fds[1].revents != 0 {
            // The step's init ended (its namespace goes with it), or no
            // process uses the filter any more.
            return;
        }
    }
}

/// Receives one request and answers it.
fn answer(listener: &OwnedFd, proc: &File, records: &mut File) {
    // SAFETY: a zeroed seccomp_notif is what NOTIF_RECV wants.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: `req` is a valid seccomp_notif for the kernel to fill.
    if unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut req,
        )
    } != 0
    {
        // ENOENT: the caller went away before it was received.
        return;
    }
    let error = match make(listener, proc, &req) {
        Ok(dev) => {
            let _ = records.write_all(dev.line().as_bytes());
            0
        }
        Err(errno) => -errno,
    };
    let mut resp = libc::seccomp_notif_resp {
        id: req.id,
        val: 0,
        error,
        flags: 0,
    };
    // SAFETY: `resp` answers the request just received.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut resp,
        )
    };
}

/// Makes the placeholder the request asks for; an errno the caller gets otherwise.
fn make(listener: &OwnedFd, proc: &File, req: &libc::seccomp_notif) -> Result<Device, i32> {
    let pid = req.pid;
    let args = req.data.args;
    let (dirfd, addr, mode, dev) = if i64::from(req.data.nr) == libc::SYS_mknodat {
        (args[0] as i32, args[1], args[2] as u32, args[3])
    } else {
        (libc::AT_FDCWD, args[0], args[1] as u32, args[2])
    };
    let path = read_path(proc, pid, addr)?;
    // The request must still stand: the pid was not reused meanwhile.
    let mut id = req.id;
    // SAFETY: `id` is a u64 the kernel reads.
    if unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &mut id,
        )
    } != 0
    {
        return Err(libc::ENOENT);
    }
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    // runc refuses a 0:0 character device (an overlay whiteout).
    if major == 0 && minor == 0 {
        return Err(libc::EPERM);
    }
    let status = std::io::read_to_string(proc_open(
        proc,
        &format!("{pid}/status"),
        nix::fcntl::OFlag::O_RDONLY,
    )?)
    .map_err(|_| libc::ESRCH)?;
    let field = |name: &str, nth: usize| -> Option<u32> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(nth)?.parse().ok()
    };
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|u| u32::from_str_radix(u.trim(), 8).ok())
        .unwrap_or(0o022);
    // The file system ids the call would have used.
    let (uid, gid) = (
        field("Uid:", 4).ok_or(libc::ESRCH)?,
        field("Gid:", 4).ok_or(libc::ESRCH)?,
    );
    // Where the caller's path leads: from its cwd or dirfd, inside its root.
    let base = match (path.starts_with('/'), dirfd) {
        (true, _) => "/".to_string(),
        (false, libc::AT_FDCWD) => link(proc, &format!("{pid}/cwd"))?,
        (false, fd) => link(proc, &format!("{pid}/fd/{fd}"))?,
    };
    let full = format!("{}/{}", base.trim_end_matches('/'), path);
    let (parent, name) = match full.trim_end_matches('/').rsplit_once('/') {
        Some((p, n)) if !n.is_empty() && n != "." && n != ".." => (p.to_string(), n.to_string()),
        _ => return Err(libc::EEXIST),
    };
    let root = proc_open(
        proc,
        &format!("{pid}/root"),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
    )?;
    let dir = open_in_root(&root, &parent)?;
    let perm = mode & 0o7777 & !umask;
    let name_c = std::ffi::CString::new(name.clone()).map_err(|_| libc::EINVAL)?;
    // SAFETY: a valid directory fd and NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name_c.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            perm,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` was just opened.
    let file = unsafe { File::from_raw_fd(fd) };
    // SAFETY: a valid fd; owner and mode as the caller's mknod would set them.
    unsafe {
        libc::fchown(file.as_raw_fd(), uid, gid);
        libc::fchmod(file.as_raw_fd(), perm);
    }
    // Root-relative: the directory as this process sees it, its root being the
    // step's (the helper shares the step's mount namespace after pivot_root).
    let dir_path = link(proc, &format!("self/fd/{}", dir.as_raw_fd()))?;
    let rel = format!("{}/{}", dir_path.trim_matches('/'), name);
    Ok(Device {
        path: rel.trim_start_matches('/').to_string(),
        block: mode & libc::S_IFMT == libc::S_IFBLK,
        major,
        minor,
        mode: perm,
    })
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `rel` under the host's /proc, held open since before the step's
/// pivot_root (after it, `/proc` is the step's own, where the pids the kernel
/// gives this process are not).
fn proc_open(proc: &File, rel: &str, flags: nix::fcntl::OFlag) -> Result<File, i32> {
    crate::procs::open_at(proc, rel, flags, 0).map_err(|_| libc::ESRCH)
}

fn link(proc: &File, rel: &str) -> Result<String, i32> {
    nix::fcntl::readlinkat(Some(proc.as_raw_fd()), rel)
        .map(|l| l.to_string_lossy().into_owned())
        .map_err(|_| libc::ESRCH)
}

/// `rel` opened as a directory under `root`, every link resolved inside it
/// (openat2's RESOLVE_IN_ROOT), so the placeholder cannot land outside.
fn open_in_root(root: &File, rel: &str) -> Result<File, i32> {
    let rel = rel.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let c = std::ffi::CString::new(rel).map_err(|_| libc::EINVAL)?;
    // SAFETY: open_how is plain data; zero is its default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid fd, NUL-terminated path and an open_how of the right size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: the kernel just gave this process the descriptor.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

/// A NUL-terminated path from the caller's memory.
fn read_path(proc: &File, pid: u32, addr: u64) -> Result<String, i32> {
    use std::os::unix::fs::FileExt;
    let mem = proc_open(proc, &format!("{pid}/mem"), nix::fcntl::OFlag::O_RDONLY)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    let mut at = addr;
    while out.len() < libc::PATH_MAX as usize {
        let n = mem.read_at(&mut buf, at).map_err(|_| libc::EFAULT)?;
        if n == 0 {
            return Err(libc::EFAULT);
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return String::from_utf8(out).map_err(|_| libc::EINVAL);
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    Err(libc::ENAMETOOLONG)
}

/// Where the helper writes the records of a step whose spec names `dir`.
pub(crate) fn records_file(dir: &Path) -> PathBuf {
    dir.join("devices")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back() {
        let d = Device {
            path: "dev/my null".into(),
            block: false,
            major: 1,
            minor: 3,
            mode: 0o620,
        };
        assert_eq!(Device::parse(d.line().trim_end()), Some(d));
        assert_eq!(Device::parse("x 1 2 644 p"), None);
    }

    #[test]
    fn the_filter_notifies_instead_of_trapping() {
        let prog = filter().unwrap();
        let trap = u32::from(SeccompAction::Trap);
        assert!(prog
            .iter()
            .any(|i| i.code == 0x06 && i.k == libc::SECCOMP_RET_USER_NOTIF));
        assert!(!prog.iter().any(|i| i.code == 0x06 && i.k == trap));
    }
}
