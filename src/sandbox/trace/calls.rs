//! The traced calls, one handler each: a path rewritten into the root, or
//! the answer given in the kernel's stead (identity, owners, stat, getcwd,
//! readlink), or a refusal (another process).

use super::mem::{self, Regs, Scratch, PATH_MAX};
use super::paths::Resolved;
use super::{fd_link, host_bytes, Outcome, Tracer};
use nix::errno::Errno;
use nix::libc;
use nix::unistd::Pid;
use std::ffi::CString;
use std::path::{Path, PathBuf};

pub(super) type R = Result<Outcome, Fail>;

/// Why a handler gives no outcome: an error the call returns, or a thread
/// that has no scratch mapping yet for the path it must be handed (one is
/// made and the call restarts).
pub(super) enum Fail {
    Errno(Errno),
    NeedScratch,
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Fail {
        Fail::Errno(e)
    }
}

/// Where a call names a path: the argument holding it, the one holding the
/// directory it is relative to (`*at` calls), whether its last link is
/// followed, and whether an empty path is allowed (AT_EMPTY_PATH).
#[derive(Clone, Copy)]
struct PathArg {
    dirfd: Option<usize>,
    arg: usize,
    follow: bool,
    empty_ok: bool,
}

impl PathArg {
    fn new(dirfd: Option<usize>, arg: usize, follow: bool) -> PathArg {
        PathArg {
            dirfd,
            arg,
            follow,
            empty_ok: false,
        }
    }

    fn empty_ok(self) -> PathArg {
        PathArg {
            empty_ok: true,
            ..self
        }
    }
}

pub(super) fn cstr(p: &Path) -> Result<CString, Errno> {
    CString::new(host_bytes(p)).map_err(|_| Errno::EINVAL)
}

pub(super) fn as_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: a plain C struct read as its bytes, within its size.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

impl Tracer {
    pub(super) fn handle(&mut self, tid: i32, regs: &mut Regs, scratch: &mut Option<Scratch>) -> R {
        let nr = regs.nr();
        let mut s = scratch.as_mut();
        let pid = Pid::from_raw(tid);
        let flags = |i: usize| regs.int(i);
        macro_rules! path {
            ($dirfd:expr, $arg:expr, $follow:expr) => {
                self.rewrite(
                    tid,
                    regs,
                    s.as_deref_mut(),
                    PathArg::new($dirfd, $arg, $follow),
                )
            };
            ($dirfd:expr, $arg:expr, $follow:expr, empty) => {
                self.rewrite(
                    tid,
                    regs,
                    s.as_deref_mut(),
                    PathArg::new($dirfd, $arg, $follow).empty_ok(),
                )
            };
        }
        match nr {
            libc::SYS_open => {
                let f = flags(1);
                let r = path!(None, 0, open_follows(f))?;
                self.touch_if(opens_to_change(f), &r);
                self.made_by_open(tid, regs, 1, f, regs.arg(2) as u32, r.as_ref())?;
            }
            libc::SYS_creat => {
                let r = path!(None, 0, true)?;
                self.touch_if(true, &r);
                let f = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
                self.made_by_open(tid, regs, usize::MAX, f, regs.arg(1) as u32, r.as_ref())?;
            }
            libc::SYS_openat => {
                let f = flags(2);
                let r = path!(Some(0), 1, open_follows(f))?;
                self.touch_if(opens_to_change(f), &r);
                self.made_by_open(tid, regs, 2, f, regs.arg(3) as u32, r.as_ref())?;
            }
            libc::SYS_setxattr | libc::SYS_lsetxattr | libc::SYS_getxattr | libc::SYS_lgetxattr
                if self.is_cap(tid, regs)? =>
            {
                let follow = matches!(nr, libc::SYS_setxattr | libc::SYS_getxattr);
                let r = self.resolve_arg(tid, regs, None, 0, follow)?;
                if nr == libc::SYS_setxattr || nr == libc::SYS_lsetxattr {
                    self.touched.force(&r.host);
                }
                return self.cap_xattr(tid, regs, &r.host, follow);
            }
            libc::SYS_fsetxattr | libc::SYS_fgetxattr => {
                let cap = self.is_cap(tid, regs)?;
                if nr == libc::SYS_fsetxattr {
                    // The kept capability changes nothing on disk: forced.
                    self.touched.touch_fd(tid, regs.int(0), cap);
                }
                if cap {
                    let host = fd_link(tid, regs.int(0));
                    return self.cap_xattr(tid, regs, &host, true).map_err(ebadf);
                }
            }
            libc::SYS_fchmod | libc::SYS_fremovexattr => {
                self.touched.touch_fd(tid, regs.int(0), false);
            }
            libc::SYS_access
            | libc::SYS_statfs
            | libc::SYS_chdir
            | libc::SYS_getxattr
            | libc::SYS_listxattr => {
                path!(None, 0, true)?;
            }
            libc::SYS_chmod
            | libc::SYS_truncate
            | libc::SYS_utime
            | libc::SYS_utimes
            | libc::SYS_setxattr
            | libc::SYS_removexattr => {
                let r = path!(None, 0, true)?;
                self.touch_if(true, &r);
            }
            libc::SYS_lgetxattr | libc::SYS_llistxattr => {
                path!(None, 0, false)?;
            }
            libc::SYS_lsetxattr | libc::SYS_lremovexattr | libc::SYS_unlink | libc::SYS_rmdir => {
                let r = path!(None, 0, false)?;
                self.touch_if(true, &r);
            }
            libc::SYS_mkdir => {
                let r = path!(None, 0, false)?;
                self.touch_if(true, &r);
                return self.mkdir(tid, r, regs.arg(1) as u32);
            }
            libc::SYS_mkdirat => {
                let r = path!(Some(0), 1, false)?;
                self.touch_if(true, &r);
                return self.mkdir(tid, r, regs.arg(2) as u32);
            }
            libc::SYS_faccessat => {
                path!(Some(0), 1, true)?;
            }
            libc::SYS_faccessat2 => {
                path!(Some(0), 1, flags(3) & libc::AT_SYMLINK_NOFOLLOW == 0, empty)?;
            }
            libc::SYS_unlinkat => {
                let r = path!(Some(0), 1, false)?;
                self.touch_if(true, &r);
            }
            libc::SYS_fchmodat | libc::SYS_futimesat => {
                let r = path!(Some(0), 1, true)?;
                self.touch_if(true, &r);
            }
            libc::SYS_fchmodat2 => {
                let r = path!(Some(0), 1, flags(3) & libc::AT_SYMLINK_NOFOLLOW == 0, empty)?;
                self.touch_or_fd(tid, regs.int(0), &r);
            }
            libc::SYS_utimensat => {
                if regs.arg(1) != 0 {
                    let r = path!(Some(0), 1, flags(3) & libc::AT_SYMLINK_NOFOLLOW == 0, empty)?;
                    self.touch_or_fd(tid, regs.int(0), &r);
                } else {
                    self.touched.touch_fd(tid, regs.int(0), false);
                }
            }
            libc::SYS_rename => {
                let from = path!(None, 0, false)?;
                let to = path!(None, 1, false)?;
                self.touch_if(true, &from);
                self.touch_if(true, &to);
            }
            libc::SYS_renameat | libc::SYS_renameat2 => {
                let from = path!(Some(0), 1, false)?;
                let to = path!(Some(2), 3, false)?;
                self.touch_if(true, &from);
                self.touch_if(true, &to);
            }
            libc::SYS_link => {
                let from = path!(None, 0, false)?;
                let to = path!(None, 1, false)?;
                self.touch_if(true, &from);
                self.touch_if(true, &to);
            }
            libc::SYS_linkat => {
                let from = path!(Some(0), 1, flags(4) & libc::AT_SYMLINK_FOLLOW != 0, empty)?;
                let to = path!(Some(2), 3, false)?;
                self.touch_or_fd(tid, regs.int(0), &from);
                self.touch_if(true, &to);
            }
            libc::SYS_symlink => {
                let r = path!(None, 1, false)?;
                self.touch_if(true, &r);
                return self.symlink(tid, regs, 0, r);
            }
            libc::SYS_symlinkat => {
                let r = path!(Some(1), 2, false)?;
                self.touch_if(true, &r);
                return self.symlink(tid, regs, 0, r);
            }
            libc::SYS_inotify_add_watch => {
                path!(None, 1, regs.arg(2) as u32 & libc::IN_DONT_FOLLOW == 0)?;
            }
            libc::SYS_mknod => {
                let r = path!(None, 0, false)?;
                self.touch_if(true, &r);
                return self.mknod(tid, r, regs.arg(1) as u32, regs.arg(2));
            }
            libc::SYS_mknodat => {
                let r = path!(Some(0), 1, false)?;
                self.touch_if(true, &r);
                return self.mknod(tid, r, regs.arg(2) as u32, regs.arg(3));
            }
            libc::SYS_execve => return self.execve(tid, regs, s, false),
            libc::SYS_execveat => return self.execve(tid, regs, s, true),
            libc::SYS_bind | libc::SYS_connect => {
                return self.sockaddr(tid, regs, s, nr == libc::SYS_connect)
            }
            libc::SYS_stat => {
                let r = self.resolve_arg(tid, regs, None, 0, true)?;
                return self.stat(&r.host, true, regs.arg(1), pid);
            }
            libc::SYS_lstat => {
                let r = self.resolve_arg(tid, regs, None, 0, false)?;
                return self.stat(&r.host, false, regs.arg(1), pid);
            }
            libc::SYS_fstat => {
                return self
                    .stat(&fd_link(tid, regs.int(0)), true, regs.arg(1), pid)
                    .map_err(ebadf);
            }
            libc::SYS_newfstatat => {
                let (host, follow) = self.at_target(tid, regs, 0, 1, flags(3))?;
                return self.stat(&host, follow, regs.arg(2), pid);
            }
            libc::SYS_statx => {
                let (host, follow) = self.at_target(tid, regs, 0, 1, flags(2))?;
                return self.statx(&host, follow, regs.arg(3) as u32, regs.arg(4), pid);
            }
            libc::SYS_getcwd => {
                let g = self.base(tid, libc::AT_FDCWD)?;
                let size = regs.arg(1) as usize;
                if g.len() + 1 > size {
                    return Err(Errno::ERANGE.into());
                }
                let mut b = g;
                b.push(0);
                mem::write(pid, regs.arg(0), &b)?;
                return Ok(Outcome::Return(b.len() as i64));
            }
            libc::SYS_readlink => {
                let r = self.resolve_arg(tid, regs, None, 0, false)?;
                return self.readlink(tid, &r, regs.arg(1), regs.arg(2) as i64);
            }
            libc::SYS_readlinkat => {
                let r = self.resolve_arg(tid, regs, Some(0), 1, false)?;
                return self.readlink(tid, &r, regs.arg(2), regs.arg(3) as i64);
            }
            libc::SYS_chown | libc::SYS_lchown => {
                let r = self.resolve_arg(tid, regs, None, 0, nr == libc::SYS_chown)?;
                self.touched.force(&r.host);
                return self.chown(
                    tid,
                    &r.host,
                    nr == libc::SYS_chown,
                    regs.arg(1),
                    regs.arg(2),
                );
            }
            libc::SYS_fchown => {
                self.touched.touch_fd(tid, regs.int(0), true);
                return self
                    .chown(
                        tid,
                        &fd_link(tid, regs.int(0)),
                        true,
                        regs.arg(1),
                        regs.arg(2),
                    )
                    .map_err(ebadf);
            }
            libc::SYS_fchownat => {
                let (host, follow) = self.at_target(tid, regs, 0, 1, flags(4))?;
                match std::fs::read_link(&host) {
                    // AT_EMPTY_PATH: the descriptor's file, not its /proc link.
                    Ok(file) if host.starts_with("/proc") => self.touched.force(&file),
                    _ => self.touched.force(&host),
                }
                return self.chown(tid, &host, follow, regs.arg(2), regs.arg(3));
            }
            libc::SYS_kill => return self.kill(tid, regs.int(0), regs.int(1)),
            libc::SYS_tkill | libc::SYS_rt_sigqueueinfo | libc::SYS_pidfd_open => {
                self.ours(regs.int(0))?;
            }
            libc::SYS_tgkill | libc::SYS_rt_tgsigqueueinfo => {
                self.ours(regs.int(0))?;
                self.ours(regs.int(1))?;
            }
            _ => return self.identity(tid, regs, pid),
        }
        Ok(Outcome::Continue)
    }

    /// Records a path the call is about to change.
    fn touch_if(&mut self, changes: bool, r: &Option<Resolved>) {
        if let (true, Some(r)) = (changes, r) {
            self.touched.touch(&r.host);
        }
    }

    /// Records the path, or with an empty one (AT_EMPTY_PATH) the file
    /// `dirfd` names.
    fn touch_or_fd(&mut self, tid: i32, dirfd: i32, r: &Option<Resolved>) {
        match r {
            Some(r) => self.touched.touch(&r.host),
            None => self.touched.touch_fd(tid, dirfd, false),
        }
    }

    /// The guest directory a relative path starts from: the thread's cwd or
    /// the directory `dirfd` names.
    pub(super) fn base(&self, tid: i32, dirfd: i32) -> Result<Vec<u8>, Errno> {
        let (link, missing) = if dirfd == libc::AT_FDCWD {
            (PathBuf::from(format!("/proc/{tid}/cwd")), Errno::ENOENT)
        } else {
            (fd_link(tid, dirfd), Errno::EBADF)
        };
        let host = std::fs::read_link(&link).map_err(|_| missing)?;
        let host = host_bytes(&host);
        if host.first() != Some(&b'/') {
            return Err(Errno::ENOTDIR);
        }
        self.fs.to_guest(host).ok_or(Errno::EACCES)
    }

    fn resolve_arg(
        &self,
        tid: i32,
        regs: &Regs,
        dirfd: Option<usize>,
        arg: usize,
        follow: bool,
    ) -> Result<Resolved, Errno> {
        let raw = mem::read_cstr(Pid::from_raw(tid), regs.arg(arg), PATH_MAX)?;
        let base = if raw.first() == Some(&b'/') {
            b"/".to_vec()
        } else {
            self.base(tid, dirfd.map_or(libc::AT_FDCWD, |i| regs.int(i)))?
        };
        self.fs.resolve(self, tid, &base, &raw, follow)
    }

    /// Resolves a path argument and hands the kernel its host path instead;
    /// `None` for an empty path where the call takes one (AT_EMPTY_PATH).
    fn rewrite(
        &self,
        tid: i32,
        regs: &mut Regs,
        scratch: Option<&mut Scratch>,
        a: PathArg,
    ) -> Result<Option<Resolved>, Fail> {
        let pid = Pid::from_raw(tid);
        if a.empty_ok && regs.arg(a.arg) != 0 && mem::read(pid, regs.arg(a.arg), 1)? == [0] {
            return Ok(None);
        }
        let r = self.resolve_arg(tid, regs, a.dirfd, a.arg, a.follow)?;
        let s = scratch.ok_or(Fail::NeedScratch)?;
        let at = s.put_cstr(pid, host_bytes(&r.host))?;
        regs.set_arg(a.arg, at);
        Ok(Some(r))
    }

    /// The file an `*at` call with AT_EMPTY_PATH or a path names, and
    /// whether its last link is followed.
    fn at_target(
        &self,
        tid: i32,
        regs: &Regs,
        dirfd: usize,
        arg: usize,
        flags: i32,
    ) -> Result<(PathBuf, bool), Errno> {
        let pid = Pid::from_raw(tid);
        let empty = regs.arg(arg) == 0 || mem::read(pid, regs.arg(arg), 1)? == [0];
        if empty {
            if flags & libc::AT_EMPTY_PATH == 0 {
                return Err(Errno::ENOENT);
            }
            let fd = regs.int(dirfd);
            if fd == libc::AT_FDCWD {
                let g = self.base(tid, fd)?;
                return Ok((self.fs.to_host(&g), true));
            }
            return Ok((fd_link(tid, fd), true));
        }
        let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
        let r = self.resolve_arg(tid, regs, Some(dirfd), arg, follow)?;
        Ok((r.host, follow))
    }

    fn ours(&self, pid: i32) -> Result<(), Errno> {
        if self.threads.contains_key(&pid) {
            Ok(())
        } else {
            Err(Errno::EPERM)
        }
    }

    fn kill(&self, tid: i32, pid: i32, sig: i32) -> R {
        match pid {
            0 => Ok(Outcome::Continue),
            -1 => {
                // Everything the step may signal: its own processes.
                let me = self.threads.get(&tid).map_or(tid, |t| t.tgid);
                let mut groups: Vec<i32> = self.threads.values().map(|t| t.tgid).collect();
                groups.sort_unstable();
                groups.dedup();
                for g in groups.into_iter().filter(|&g| g != me) {
                    // SAFETY: plain kill of a process of the step.
                    unsafe { libc::kill(g, sig) };
                }
                Ok(Outcome::Return(0))
            }
            p => {
                self.ours(p.abs())?;
                Ok(Outcome::Continue)
            }
        }
    }

    fn sockaddr(&self, tid: i32, regs: &mut Regs, s: Option<&mut Scratch>, connect: bool) -> R {
        let pid = Pid::from_raw(tid);
        let (addr, len) = (regs.arg(1), regs.arg(2) as usize);
        if addr == 0 || len <= 2 {
            return Ok(Outcome::Continue);
        }
        let sa = mem::read(pid, addr, len.min(110))?;
        if u16::from_ne_bytes([sa[0], sa[1]]) != libc::AF_UNIX as u16 || sa[2] == 0 {
            // Not a path (another family, or Linux's abstract names).
            return Ok(Outcome::Continue);
        }
        let path = &sa[2..];
        let path = &path[..path.iter().position(|&b| b == 0).unwrap_or(path.len())];
        let base = if path.first() == Some(&b'/') {
            b"/".to_vec()
        } else {
            self.base(tid, libc::AT_FDCWD)?
        };
        let r = self.fs.resolve(self, tid, &base, path, connect)?;
        let host = host_bytes(&r.host);
        if host.len() >= 108 {
            return Err(Errno::ENAMETOOLONG.into());
        }
        let mut out = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        out.extend_from_slice(host);
        out.push(0);
        let s = s.ok_or(Fail::NeedScratch)?;
        let at = s.put(pid, &out)?;
        regs.set_arg(1, at);
        regs.set_arg(2, out.len() as u64);
        Ok(Outcome::Continue)
    }
}

/// Whether an open may change the file it names (or make it).
fn opens_to_change(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_CREAT | libc::O_TRUNC) != 0
}

/// Whether `open` follows a link in its last component.
fn open_follows(flags: i32) -> bool {
    flags & libc::O_NOFOLLOW == 0 && !(flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0)
}

/// A descriptor that is not open answers EBADF, not ENOENT.
fn ebadf(e: Fail) -> Fail {
    match e {
        Fail::Errno(Errno::ENOENT) => Fail::Errno(Errno::EBADF),
        e => e,
    }
}
