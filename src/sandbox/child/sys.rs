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

use crate::sandbox::confine::ConfineError;
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
    /// Marks every descriptor above stderr close-on-exec.
    fn only_stdio_across_exec(&self) -> Result<(), ConfineError>;
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

    fn only_stdio_across_exec(&self) -> Result<(), ConfineError> {
        crate::sandbox::confine::only_stdio_across_exec()
    }

    fn execve(&self, path: &CStr, argv: &[CString], env: &[CString]) -> nix::Result<Infallible> {
        nix::unistd::execve(path, argv, env)
    }
}

/// The test implementation.
#[cfg(test)]
pub(crate) mod recording {
    use super::*;
    use std::cell::RefCell;
    use std::path::PathBuf;

    /// One recorded call.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Call {
        Unshare(CloneFlags),
        Mount {
            source: Option<String>,
            target: PathBuf,
            fstype: Option<String>,
            flags: MsFlags,
            data: Option<String>,
        },
        Umount(PathBuf, MntFlags),
        PivotRoot(PathBuf, PathBuf),
        Chdir(PathBuf),
        Hostname(String),
        Groups(Vec<u32>),
        Gid(u32),
        Uid(u32),
        Chown(PathBuf, u32, u32),
        OnlyStdio,
        Exec {
            path: String,
            argv: Vec<String>,
            env: Vec<String>,
        },
    }

    /// Records every call and succeeds, but for the mounts it is told to
    /// refuse (not recorded); execve fails with ENOENT.
    #[derive(Default)]
    pub(crate) struct Recording {
        calls: RefCell<Vec<Call>>,
        /// Mounts with this type, source or data fail with EPERM.
        refused: Vec<String>,
        /// What statvfs says of these paths (nothing of others).
        flags: Vec<(PathBuf, FsFlags)>,
        /// The mount points mountinfo lists.
        points: Vec<String>,
    }

    impl Recording {
        /// Refuses mounts whose type, source or data is `what`.
        pub(crate) fn refusing(mut self, what: &str) -> Recording {
            self.refused.push(what.to_string());
            self
        }

        /// statvfs says `flags` of `path`.
        pub(crate) fn with_flags(mut self, path: impl Into<PathBuf>, flags: FsFlags) -> Recording {
            self.flags.push((path.into(), flags));
            self
        }

        /// mountinfo lists `point` (as the kernel writes it, octal escapes and all).
        pub(crate) fn with_mount_point(mut self, point: &str) -> Recording {
            self.points.push(point.to_string());
            self
        }

        pub(crate) fn calls(&self) -> Vec<Call> {
            self.calls.borrow().clone()
        }

        fn record(&self, call: Call) {
            self.calls.borrow_mut().push(call);
        }
    }

    /// A mount call as recorded, for comparisons.
    pub(crate) fn mount(
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Call {
        Call::Mount {
            source: source.map(str::to_string),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        }
    }

    impl Syscalls for Recording {
        fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
            self.record(Call::Unshare(flags));
            Ok(())
        }

        fn mount(
            &self,
            source: Option<&str>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> nix::Result<()> {
            let named = |r: &String| [fstype, source, data].contains(&Some(r.as_str()));
            if self.refused.iter().any(named) {
                return Err(nix::Error::EPERM);
            }
            self.record(mount(source, target, fstype, flags, data));
            Ok(())
        }

        fn umount(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
            self.record(Call::Umount(target.to_path_buf(), flags));
            Ok(())
        }

        fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
            self.record(Call::PivotRoot(
                new_root.to_path_buf(),
                put_old.to_path_buf(),
            ));
            Ok(())
        }

        fn chdir(&self, dir: &Path) -> nix::Result<()> {
            self.record(Call::Chdir(dir.to_path_buf()));
            Ok(())
        }

        fn sethostname(&self, name: &str) -> nix::Result<()> {
            self.record(Call::Hostname(name.to_string()));
            Ok(())
        }

        fn setgroups(&self, groups: &[Gid]) -> nix::Result<()> {
            self.record(Call::Groups(groups.iter().map(|g| g.as_raw()).collect()));
            Ok(())
        }

        fn setgid(&self, gid: Gid) -> nix::Result<()> {
            self.record(Call::Gid(gid.as_raw()));
            Ok(())
        }

        fn setuid(&self, uid: Uid) -> nix::Result<()> {
            self.record(Call::Uid(uid.as_raw()));
            Ok(())
        }

        fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
            self.record(Call::Chown(path.to_path_buf(), uid, gid));
            Ok(())
        }

        fn statvfs(&self, path: &Path) -> nix::Result<FsFlags> {
            Ok(self
                .flags
                .iter()
                .find(|(p, _)| p == path)
                .map_or(FsFlags::empty(), |(_, f)| *f))
        }

        fn mountinfo(&self) -> io::Result<String> {
            // The fields before and after the mount point as a kernel writes them.
            Ok(self
                .points
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{} 1 0:{i} / {p} rw,relatime - tmpfs tmpfs rw\n", 30 + i))
                .collect())
        }

        fn only_stdio_across_exec(&self) -> Result<(), ConfineError> {
            self.record(Call::OnlyStdio);
            Ok(())
        }

        fn execve(
            &self,
            path: &CStr,
            argv: &[CString],
            env: &[CString],
        ) -> nix::Result<Infallible> {
            let text = |c: &CStr| c.to_string_lossy().into_owned();
            self.record(Call::Exec {
                path: text(path),
                argv: argv.iter().map(|a| text(a)).collect(),
                env: env.iter().map(|a| text(a)).collect(),
            });
            Err(nix::Error::ENOENT)
        }
    }
}
