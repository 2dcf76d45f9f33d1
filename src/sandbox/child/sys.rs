//! The helper's calls on the kernel for the command's namespaces, root and
//! process go through [`Syscalls`], as youki's `Syscall` trait and
//! `rootfs::sys::Syscalls` do: [`Real`] makes them, the test implementation
//! records them, so the order and flags of the mounts are tested without
//! privileges.
//!
//! Not here: fork, wait, pipes and the id map writes (a recording cannot stand
//! in for the second process they talk to; each side's work is tested through
//! the functions it calls), PR_SET_PDEATHSIG and the subreaper (this process's
//! own lifetime, not the command's), and seccomp and capabilities (`confine`,
//! tested there). Files the mount code makes (mount points, /dev's links) are
//! made directly: in a test they land in a temporary root.

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::statvfs::FsFlags;
use nix::unistd::{Gid, Uid};
use std::convert::Infallible;
use std::ffi::{CStr, CString};
use std::io;
use std::path::Path;

/// The calls that change the command's namespaces, mounts, root and ids.
pub(crate) trait Syscalls {
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// mount(2); `source` as nix takes it (`None` for a remount).
    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    fn umount(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    fn chdir(&self, dir: &Path) -> nix::Result<()>;
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    fn setgroups(&self, groups: &[Gid]) -> nix::Result<()>;
    fn setgid(&self, gid: Gid) -> nix::Result<()>;
    fn setuid(&self, uid: Uid) -> nix::Result<()>;
    /// Sets the owner of `path` (a secret's copy).
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// The flags of the mount `path` is on.
    fn statvfs(&self, path: &Path) -> nix::Result<FsFlags>;
    /// This process's mount table (/proc/self/mountinfo).
    fn mountinfo(&self) -> io::Result<String>;
    /// Replaces this process; returns only with why it could not.
    fn execve(&self, path: &CStr, argv: &[CString], env: &[CString]) -> nix::Result<Infallible>;
}

/// The kernel.
pub(crate) struct Real;

impl Syscalls for Real {
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chdir(&self, dir: &Path) -> nix::Result<()> {
        nix::unistd::chdir(dir)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn setgroups(&self, groups: &[Gid]) -> nix::Result<()> {
        nix::unistd::setgroups(groups)
    }

    fn setgid(&self, gid: Gid) -> nix::Result<()> {
        nix::unistd::setgid(gid)
    }

    fn setuid(&self, uid: Uid) -> nix::Result<()> {
        nix::unistd::setuid(uid)
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
    }

    fn statvfs(&self, path: &Path) -> nix::Result<FsFlags> {
        nix::sys::statvfs::statvfs(path).map(|s| s.flags())
    }

    fn mountinfo(&self) -> io::Result<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
    }

    fn execve(&self, path: &CStr, argv: &[CString], env: &[CString]) -> nix::Result<Infallible> {
        nix::unistd::execve(path, argv, env)
    }
}
