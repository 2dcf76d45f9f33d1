//! Everything that needs the kernel's permission goes through [`Syscalls`], the
//! way youki's `Syscall` trait does: the real implementation makes the calls, the
//! test one records them, so the privileged paths (owners, device nodes) are
//! tested without privileges. RUN's namespaces, mounts and root change have a
//! seam of their own beside the helper that makes them (`sandbox::child::sys`):
//! `rootfs` sits below `sandbox` in the data flow.

use super::caps::FileCaps;
use std::io;
use std::path::Path;

/// A device node or FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// The calls that depend on what the process may do.
pub(crate) trait Syscalls: Send + Sync {
    /// What the process may do to files.
    fn caps(&self) -> FileCaps;
    /// Sets the owner of `path` itself (a symlink is not followed).
    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// Creates a device node or FIFO with permission bits `mode`.
    fn mknod(&self, path: &Path, node: Node, mode: u32) -> io::Result<()>;
    /// The owner and group a file this process makes gets (outside setgid
    /// directories); `None` when not known, so owners are always set.
    fn creator(&self) -> Option<(u32, u32)> {
        None
    }
}

/// Shared implementations (a test keeps a handle to read the recorded calls).
impl<T: Syscalls> Syscalls for std::sync::Arc<T> {
    fn caps(&self) -> FileCaps {
        (**self).caps()
    }

    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        (**self).lchown(path, uid, gid)
    }

    fn mknod(&self, path: &Path, node: Node, mode: u32) -> io::Result<()> {
        (**self).mknod(path, node, mode)
    }

    fn creator(&self) -> Option<(u32, u32)> {
        (**self).creator()
    }
}

/// The kernel, with this process's effective capabilities.
pub(crate) struct Real {
    caps: FileCaps,
    /// The effective ids, read once (files made get them).
    ids: (u32, u32),
}

impl Real {
    pub(crate) fn effective() -> Real {
        Real {
            caps: FileCaps::effective(),
            ids: Real::ids(),
        }
    }

    /// As an executor without any capability acts (tests of that path).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn unprivileged() -> Real {
        Real {
            caps: FileCaps::none(),
            ids: Real::ids(),
        }
    }

    fn ids() -> (u32, u32) {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }
}

impl Syscalls for Real {
    fn caps(&self) -> FileCaps {
        self.caps
    }

    fn creator(&self) -> Option<(u32, u32)> {
        Some(self.ids)
    }

    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        nix::unistd::fchownat(
            None,
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io::Error::from)
    }

    fn mknod(&self, path: &Path, node: Node, mode: u32) -> io::Result<()> {
        use nix::sys::stat::{makedev, Mode, SFlag};
        let (kind, dev) = match node {
            Node::Char(ma, mi) => (SFlag::S_IFCHR, makedev(ma.into(), mi.into())),
            Node::Block(ma, mi) => (SFlag::S_IFBLK, makedev(ma.into(), mi.into())),
            Node::Fifo => (SFlag::S_IFIFO, 0),
        };
        nix::sys::stat::mknod(path, kind, Mode::from_bits_truncate(mode & 0o777), dev)
            .map_err(io::Error::from)
    }
}

/// This process's umask, read once from /proc (reading it with umask(2) would
/// change it for a moment under other threads); `None` where /proc has no line.
pub(crate) fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// The test implementation.
#[cfg(test)]
pub(crate) mod recording {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Mutex;

    /// One recorded call.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Call {
        Lchown(PathBuf, u32, u32),
        Mknod(PathBuf, Node, u32),
    }

    /// Acts as a process with `caps` would, without asking the kernel: records
    /// ownership changes and stands an empty file in for each device node.
    pub(crate) struct Recording {
        caps: FileCaps,
        pub(crate) calls: Mutex<Vec<Call>>,
    }

    impl Recording {
        pub(crate) fn with_all_caps() -> Recording {
            Recording {
                caps: FileCaps {
                    chown: true,
                    dac_override: true,
                    mknod: true,
                },
                calls: Mutex::default(),
            }
        }

        pub(crate) fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }

        fn record(&self, call: Call) {
            self.calls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(call);
        }
    }

    impl Syscalls for Recording {
        fn caps(&self) -> FileCaps {
            self.caps
        }

        fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
            self.record(Call::Lchown(path.to_path_buf(), uid, gid));
            Ok(())
        }

        fn mknod(&self, path: &Path, node: Node, mode: u32) -> io::Result<()> {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)?;
            self.record(Call::Mknod(path.to_path_buf(), node, mode));
            Ok(())
        }
    }
}
