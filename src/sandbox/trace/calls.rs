//! The traced calls, one handler each: a path rewritten into the root, or
//! the answer given in the kernel's stead (identity, owners, stat, getcwd,
//! readlink), or a refusal (another process).

use super::exec::{self, Format};
use super::mem::{self, Regs, Scratch, PATH_MAX};
use super::paths::{io_errno, Resolved};
use super::{fd_link, host_bytes, os, Outcome, Tracer};
use nix::errno::Errno;
use nix::libc;
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

type R = Result<Outcome, Fail>;

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

fn cstr(p: &Path) -> Result<CString, Errno> {
    CString::new(host_bytes(p)).map_err(|_| Errno::EINVAL)
}

fn as_bytes<T>(v: &T) -> &[u8] {
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
                self.rewrite(tid, regs, s.as_deref_mut(), $dirfd, $arg, $follow, false)
            };
            ($dirfd:expr, $arg:expr, $follow:expr, empty) => {
                self.rewrite(tid, regs, s.as_deref_mut(), $dirfd, $arg, $follow, true)
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
    #[allow(clippy::too_many_arguments)]
    fn rewrite(
        &self,
        tid: i32,
        regs: &mut Regs,
        scratch: Option<&mut Scratch>,
        dirfd: Option<usize>,
        arg: usize,
        follow: bool,
        empty_ok: bool,
    ) -> Result<Option<Resolved>, Fail> {
        let pid = Pid::from_raw(tid);
        if empty_ok && regs.arg(arg) != 0 && mem::read(pid, regs.arg(arg), 1)? == [0] {
            return Ok(None);
        }
        let r = self.resolve_arg(tid, regs, dirfd, arg, follow)?;
        let s = scratch.ok_or(Fail::NeedScratch)?;
        let at = s.put_cstr(pid, host_bytes(&r.host))?;
        regs.set_arg(arg, at);
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

    fn stat(&self, host: &Path, follow: bool, buf: u64, pid: Pid) -> R {
        let c = cstr(host)?;
        // SAFETY: a zeroed stat is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
        // SAFETY: valid C string and out-buffer.
        if unsafe { libc::fstatat(libc::AT_FDCWD, c.as_ptr(), &mut st, flags) } != 0 {
            return Err(Errno::last().into());
        }
        let born = || {
            let m = if follow {
                std::fs::metadata(host)
            } else {
                std::fs::symlink_metadata(host)
            };
            m.ok().and_then(|m| super::owners::born(&m))
        };
        let (uid, gid) = self
            .owners
            .owner((st.st_dev, st.st_ino), st.st_uid, st.st_gid, born);
        st.st_uid = uid;
        st.st_gid = gid;
        if let Some(&(kind, rdev)) = self.nodes.get(&(st.st_dev, st.st_ino)) {
            st.st_mode = kind | (st.st_mode & 0o7777);
            st.st_rdev = rdev;
            st.st_size = 0;
        }
        mem::write(pid, buf, as_bytes(&st))?;
        Ok(Outcome::Return(0))
    }

    fn statx(&self, host: &Path, follow: bool, mask: u32, buf: u64, pid: Pid) -> R {
        let c = cstr(host)?;
        let mut st = [0u8; 256];
        let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
        // SAFETY: valid C string and a buffer the size of struct statx.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_statx,
                libc::AT_FDCWD,
                c.as_ptr(),
                flags,
                mask | libc::STATX_BTIME,
                st.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(Errno::last().into());
        }
        let u32_at = |b: &[u8], o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let ino = u64::from_ne_bytes(st[32..40].try_into().map_err(|_| Errno::EIO)?);
        let dev = libc::makedev(u32_at(&st, 136), u32_at(&st, 140));
        let born = {
            let sec = i64::from_ne_bytes(st[80..88].try_into().map_err(|_| Errno::EIO)?);
            let nsec = u32_at(&st, 88);
            (u32_at(&st, 0) & libc::STATX_BTIME != 0 && sec >= 0)
                .then(|| sec as u128 * 1_000_000_000 + u128::from(nsec))
        };
        let (uid, gid) = self
            .owners
            .owner((dev, ino), u32_at(&st, 20), u32_at(&st, 24), || born);
        st[20..24].copy_from_slice(&uid.to_ne_bytes());
        st[24..28].copy_from_slice(&gid.to_ne_bytes());
        if let Some(&(kind, rdev)) = self.nodes.get(&(dev, ino)) {
            let mode = u16::from_ne_bytes([st[28], st[29]]);
            let mode = (kind | (u32::from(mode) & 0o7777)) as u16;
            st[28..30].copy_from_slice(&mode.to_ne_bytes());
            st[128..132].copy_from_slice(&libc::major(rdev).to_ne_bytes());
            st[132..136].copy_from_slice(&libc::minor(rdev).to_ne_bytes());
            st[40..48].copy_from_slice(&0u64.to_ne_bytes());
        }
        mem::write(pid, buf, &st)?;
        Ok(Outcome::Return(0))
    }

    fn readlink(&self, tid: i32, r: &Resolved, buf: u64, size: i64) -> R {
        if size <= 0 {
            return Err(Errno::EINVAL.into());
        }
        let target = match self.fs.magic_target(self, tid, &r.guest)? {
            Some(t) => t,
            None => {
                let t = std::fs::read_link(&r.host).map_err(io_errno)?;
                host_bytes(&t).to_vec()
            }
        };
        let n = target.len().min(size as usize);
        mem::write(Pid::from_raw(tid), buf, &target[..n])?;
        Ok(Outcome::Return(n as i64))
    }

    /// The identity the thread's file-creating calls give (fsuid, fsgid)
    /// when it is not root's: the tracer records it for what it makes.
    fn maker(&self, tid: i32) -> Option<(u32, u32)> {
        let ids = &self.threads.get(&tid)?.ids;
        ((ids.uid[3], ids.gid[3]) != (0, 0)).then_some((ids.uid[3], ids.gid[3]))
    }

    fn record_made(&mut self, host: &Path, owner: (u32, u32)) {
        if let Ok(m) = std::fs::symlink_metadata(host) {
            let born = super::owners::born(&m);
            self.owners.set((m.dev(), m.ino()), owner.0, owner.1, born);
        }
    }

    /// An open that may create a file, by a thread shown a non-root
    /// identity: the tracer makes the file first, to record its owner.
    fn made_by_open(
        &mut self,
        tid: i32,
        regs: &mut Regs,
        flags_arg: usize,
        flags: i32,
        mode: u32,
        r: Option<&Resolved>,
    ) -> Result<(), Errno> {
        let (Some(owner), Some(r)) = (self.maker(tid), r) else {
            return Ok(());
        };
        if flags & libc::O_CREAT == 0 || std::fs::symlink_metadata(&r.host).is_ok() {
            return Ok(());
        }
        let c = cstr(&r.host)?;
        let mode = mode & 0o7777 & !umask(tid);
        // SAFETY: valid C string.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                mode,
            )
        };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: the descriptor was just opened here.
        unsafe { libc::close(fd) };
        self.record_made(&r.host, owner);
        if flags_arg != usize::MAX {
            regs.set_arg(flags_arg, (flags & !libc::O_EXCL) as u32 as u64);
        }
        Ok(())
    }

    fn mkdir(&mut self, tid: i32, r: Option<Resolved>, mode: u32) -> R {
        let (Some(owner), Some(r)) = (self.maker(tid), r) else {
            return Ok(Outcome::Continue);
        };
        let c = cstr(&r.host)?;
        // SAFETY: valid C string.
        if unsafe { libc::mkdir(c.as_ptr(), mode & 0o7777 & !umask(tid)) } != 0 {
            return Err(Errno::last().into());
        }
        self.record_made(&r.host, owner);
        Ok(Outcome::Return(0))
    }

    fn symlink(&mut self, tid: i32, regs: &Regs, target_arg: usize, r: Option<Resolved>) -> R {
        let (Some(owner), Some(r)) = (self.maker(tid), r) else {
            return Ok(Outcome::Continue);
        };
        let target = mem::read_cstr(Pid::from_raw(tid), regs.arg(target_arg), PATH_MAX)?;
        std::os::unix::fs::symlink(os(&target), &r.host).map_err(io_errno)?;
        self.record_made(&r.host, owner);
        Ok(Outcome::Return(0))
    }

    /// A device node the kernel would refuse an unprivileged process: an
    /// empty file in its place, and a record for the layer and for stat.
    fn mknod(&mut self, tid: i32, r: Option<Resolved>, mode: u32, dev: u64) -> R {
        let Some(r) = r else {
            return Err(Errno::ENOENT.into());
        };
        let kind = mode & libc::S_IFMT;
        let device = kind == libc::S_IFCHR || kind == libc::S_IFBLK;
        if !device && self.maker(tid).is_none() {
            return Ok(Outcome::Continue);
        }
        let perm = mode & 0o7777 & !umask(tid);
        let c = cstr(&r.host)?;
        let made_as = if device { libc::S_IFREG } else { kind };
        // SAFETY: valid C string.
        if unsafe { libc::mknod(c.as_ptr(), made_as | perm, if device { 0 } else { dev }) } != 0 {
            return Err(Errno::last().into());
        }
        let owner = self.maker(tid).unwrap_or((0, 0));
        self.record_made(&r.host, owner);
        if device {
            if let Ok(m) = std::fs::symlink_metadata(&r.host) {
                self.nodes.insert((m.dev(), m.ino()), (kind, dev));
            }
            if let Some(rel) = r.guest.strip_prefix(b"/") {
                self.devices.push(super::super::devices::Device {
                    path: String::from_utf8_lossy(rel).into_owned(),
                    block: kind == libc::S_IFBLK,
                    major: libc::major(dev),
                    minor: libc::minor(dev),
                    mode: perm,
                });
            }
        }
        Ok(Outcome::Return(0))
    }

    fn chown(&mut self, tid: i32, host: &Path, follow: bool, uid: u64, gid: u64) -> R {
        let m = if follow {
            std::fs::metadata(host)
        } else {
            std::fs::symlink_metadata(host)
        }
        .map_err(io_errno)?;
        let inode = (m.dev(), m.ino());
        let born = super::owners::born(&m);
        let cur = self.owners.owner(inode, m.uid(), m.gid(), || born);
        let keep = |v: u64| v as u32 == u32::MAX;
        let new = (
            if keep(uid) { cur.0 } else { uid as u32 },
            if keep(gid) { cur.1 } else { gid as u32 },
        );
        let me = self.threads.get(&tid).map_or(0, |t| t.ids.uid[3]);
        if me != 0 && (new.0 != cur.0 || cur.0 != me) {
            return Err(Errno::EPERM.into());
        }
        self.owners.set(inode, new.0, new.1, born);
        // As the kernel does on chown: a file loses its set-id bits.
        let mode = m.mode();
        if !m.is_dir() && !m.file_type().is_symlink() && mode & (libc::S_ISUID | libc::S_ISGID) != 0
        {
            let mut keep_bits = mode & 0o7777 & !libc::S_ISUID;
            if mode & libc::S_IXGRP != 0 {
                keep_bits &= !libc::S_ISGID;
            }
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(host, std::fs::Permissions::from_mode(keep_bits));
        }
        Ok(Outcome::Return(0))
    }

    /// Whether an xattr call names the file capability, which an
    /// unprivileged process may not set: the tracer keeps it.
    fn is_cap(&self, tid: i32, regs: &Regs) -> Result<bool, Errno> {
        let name = mem::read_cstr(Pid::from_raw(tid), regs.arg(1), 256)?;
        Ok(name == b"security.capability")
    }

    fn cap_xattr(&mut self, tid: i32, regs: &Regs, host: &Path, follow: bool) -> R {
        let pid = Pid::from_raw(tid);
        let m = if follow {
            std::fs::metadata(host)
        } else {
            std::fs::symlink_metadata(host)
        }
        .map_err(io_errno)?;
        let born = super::owners::born(&m);
        let inode = (m.dev(), m.ino());
        let (buf, size) = (regs.arg(2), regs.arg(3) as usize);
        if matches!(
            regs.nr(),
            libc::SYS_setxattr | libc::SYS_lsetxattr | libc::SYS_fsetxattr
        ) {
            if size > 1024 {
                return Err(Errno::EINVAL.into());
            }
            let value = mem::read(pid, buf, size)?;
            self.owners.set_cap(inode, value, born);
            return Ok(Outcome::Return(0));
        }
        let Some(v) = self.owners.cap(inode, || born) else {
            return Err(Errno::ENODATA.into());
        };
        if size == 0 {
            return Ok(Outcome::Return(v.len() as i64));
        }
        if size < v.len() {
            return Err(Errno::ERANGE.into());
        }
        let v = v.to_vec();
        mem::write(pid, buf, &v)?;
        Ok(Outcome::Return(v.len() as i64))
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

    fn identity(&mut self, tid: i32, regs: &Regs, pid: Pid) -> R {
        let nr = regs.nr();
        let Some(t) = self.threads.get_mut(&tid) else {
            return Ok(Outcome::Continue);
        };
        let ids = &mut t.ids;
        let a = |i: usize| regs.arg(i) as u32;
        let unset = u32::MAX;
        let put3 = |v: [u32; 3]| -> Result<(), Errno> {
            for (i, x) in v.iter().enumerate() {
                mem::write(pid, regs.arg(i), &x.to_ne_bytes())?;
            }
            Ok(())
        };
        let value = match nr {
            libc::SYS_getuid => ids.uid[0],
            libc::SYS_geteuid => ids.uid[1],
            libc::SYS_getgid => ids.gid[0],
            libc::SYS_getegid => ids.gid[1],
            libc::SYS_getresuid => {
                put3([ids.uid[0], ids.uid[1], ids.uid[2]])?;
                0
            }
            libc::SYS_getresgid => {
                put3([ids.gid[0], ids.gid[1], ids.gid[2]])?;
                0
            }
            libc::SYS_getgroups => {
                let size = regs.int(0);
                let n = ids.groups.len();
                if size == 0 {
                    return Ok(Outcome::Return(n as i64));
                }
                if (size as usize) < n || size < 0 {
                    return Err(Errno::EINVAL.into());
                }
                let bytes: Vec<u8> = ids.groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
                mem::write(pid, regs.arg(1), &bytes)?;
                n as u32
            }
            libc::SYS_setuid => {
                let u = a(0);
                if ids.uid[1] == 0 {
                    ids.uid = [u; 4];
                } else if u == ids.uid[0] || u == ids.uid[2] {
                    ids.uid[1] = u;
                    ids.uid[3] = u;
                } else {
                    return Err(Errno::EPERM.into());
                }
                0
            }
            libc::SYS_setgid => {
                let g = a(0);
                if ids.uid[1] == 0 {
                    ids.gid = [g; 4];
                } else {
                    ids.gid[1] = g;
                    ids.gid[3] = g;
                }
                0
            }
            libc::SYS_setreuid | libc::SYS_setresuid => {
                let saved = (nr == libc::SYS_setresuid).then(|| a(2));
                set_ids(&mut ids.uid, [a(0), a(1), saved.unwrap_or(unset)]);
                0
            }
            libc::SYS_setregid | libc::SYS_setresgid => {
                let saved = (nr == libc::SYS_setresgid).then(|| a(2));
                set_ids(&mut ids.gid, [a(0), a(1), saved.unwrap_or(unset)]);
                0
            }
            libc::SYS_setfsuid => {
                let old = ids.uid[3];
                if a(0) != unset {
                    ids.uid[3] = a(0);
                }
                old
            }
            libc::SYS_setfsgid => {
                let old = ids.gid[3];
                if a(0) != unset {
                    ids.gid[3] = a(0);
                }
                old
            }
            libc::SYS_capget => {
                // Root's are runc's default set (what a namespace rung gives);
                // another user's none. setcap raises CAP_SETFCAP first.
                const VERSION_3: u32 = 0x2008_0522;
                let hdr = regs.arg(0);
                let version = u32::from_ne_bytes(
                    mem::read(pid, hdr, 4)?
                        .try_into()
                        .map_err(|_| Errno::EFAULT)?,
                );
                if regs.arg(1) == 0 {
                    mem::write(pid, hdr, &VERSION_3.to_ne_bytes())?;
                    return Ok(Outcome::Return(0));
                }
                let set: u32 = if ids.uid[1] == 0 { 0xa804_25fb } else { 0 };
                let data = [set, set, 0u32, 0, 0, 0];
                let words = if version == 0x1998_0330 { 3 } else { 6 };
                let bytes: Vec<u8> = data[..words].iter().flat_map(|w| w.to_ne_bytes()).collect();
                mem::write(pid, regs.arg(1), &bytes)?;
                0
            }
            // Raising a capability root holds: granted, on the emulated root.
            libc::SYS_capset => {
                if ids.uid[1] != 0 {
                    return Err(Errno::EPERM.into());
                }
                0
            }
            libc::SYS_setgroups => {
                let n = regs.int(0);
                if !(0..=65536).contains(&n) {
                    return Err(Errno::EINVAL.into());
                }
                let b = mem::read(pid, regs.arg(1), n as usize * 4)?;
                ids.groups = b
                    .chunks_exact(4)
                    .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                0
            }
            _ => return Ok(Outcome::Continue),
        };
        Ok(Outcome::Return(i64::from(value)))
    }

    /// execve: the program named inside the root, a script's interpreter
    /// and a dynamic program's loader found there too, so the kernel never
    /// reads a path of its own.
    fn execve(&mut self, tid: i32, regs: &mut Regs, s: Option<&mut Scratch>, at: bool) -> R {
        let pid = Pid::from_raw(tid);
        let (path_i, argv_i, env_i) = if at { (1, 2, 3) } else { (0, 1, 2) };
        let flags = if at { regs.int(4) } else { 0 };
        let raw = mem::read_cstr(pid, regs.arg(path_i), PATH_MAX)?;
        let cwd = self.base(tid, libc::AT_FDCWD)?;
        let (mut host, mut named, mut guest) = if at && raw.is_empty() {
            if flags & libc::AT_EMPTY_PATH == 0 {
                return Err(Errno::ENOENT.into());
            }
            // fexecve: the file behind the descriptor (a memfd stays itself).
            let link = fd_link(tid, regs.int(0));
            let target = std::fs::read_link(&link).map_err(|_| Errno::EBADF)?;
            match self.fs.to_guest(host_bytes(&target)) {
                Some(g) => (target, g.clone(), g),
                None if host_bytes(&target).first() == Some(&b'/') => {
                    return Err(Errno::EACCES.into())
                }
                None => (
                    link.clone(),
                    host_bytes(&link).to_vec(),
                    host_bytes(&link).to_vec(),
                ),
            }
        } else {
            let base = if raw.first() == Some(&b'/') {
                b"/".to_vec()
            } else if at {
                self.base(tid, regs.int(0))?
            } else {
                cwd.clone()
            };
            let r = self.fs.resolve(
                self,
                tid,
                &base,
                &raw,
                flags & libc::AT_SYMLINK_NOFOLLOW == 0,
            )?;
            let named = if raw.first() == Some(&b'/') || base == cwd {
                raw.clone()
            } else {
                let mut n = base.clone();
                n.push(b'/');
                n.extend_from_slice(&raw);
                n
            };
            (r.host, named, r.guest)
        };
        enum Arg {
            Old(u64),
            New(Vec<u8>),
        }
        let mut args: Vec<Arg> = mem::read_ptrs(pid, regs.arg(argv_i), 1 << 17)?
            .into_iter()
            .map(Arg::Old)
            .collect();
        let mut exe = guest.clone();
        let mut depth = 0;
        loop {
            executable(&host)?;
            match exec::format_of(&host)? {
                Format::Script { interp, arg } => {
                    depth += 1;
                    if depth > 4 || interp.is_empty() {
                        let e = if interp.is_empty() {
                            Errno::ENOEXEC
                        } else {
                            Errno::ELOOP
                        };
                        return Err(e.into());
                    }
                    let rest: Vec<Arg> = args.drain(..).skip(1).collect();
                    args.push(Arg::New(interp.clone()));
                    if let Some(a) = arg {
                        args.push(Arg::New(a));
                    }
                    args.push(Arg::New(named.clone()));
                    args.extend(rest);
                    let r = self.fs.resolve(self, tid, &cwd, &interp, true)?;
                    host = r.host;
                    guest = r.guest;
                    named = interp;
                    exe = guest.clone();
                }
                Format::Elf { interp: None } => break,
                Format::Elf { interp: Some(ld) } => {
                    let r = self.fs.resolve(self, tid, b"/", &ld, true)?;
                    executable(&r.host).map_err(|_| Errno::ENOENT)?;
                    let argv0 = if args.is_empty() {
                        Arg::New(named.clone())
                    } else {
                        args.remove(0)
                    };
                    let takes = *self
                        .loaders
                        .entry(r.host.clone())
                        .or_insert_with(|| exec::loader_takes_argv0(&r.host));
                    let mut front = vec![Arg::New(ld.clone())];
                    if takes {
                        front.push(Arg::New(b"--argv0".to_vec()));
                        front.push(argv0);
                    }
                    front.push(Arg::New(named.clone()));
                    front.append(&mut args);
                    args = front;
                    host = r.host;
                    break;
                }
                Format::Unknown => return Err(Errno::ENOEXEC.into()),
            }
        }
        let s = s.ok_or(Fail::NeedScratch)?;
        let path_at = s.put_cstr(pid, host_bytes(&host))?;
        let mut ptrs: Vec<u8> = Vec::with_capacity((args.len() + 1) * 8);
        for a in args {
            let p = match a {
                Arg::Old(p) => p,
                Arg::New(b) => s.put_cstr(pid, &b)?,
            };
            ptrs.extend_from_slice(&p.to_ne_bytes());
        }
        ptrs.extend_from_slice(&0u64.to_ne_bytes());
        let argv_at = s.put(pid, &ptrs)?;
        let envp = regs.arg(env_i);
        regs.set_nr(libc::SYS_execve);
        regs.set_arg(0, path_at);
        regs.set_arg(1, argv_at);
        regs.set_arg(2, envp);
        if let Some(t) = self.threads.get_mut(&tid) {
            t.exec = Some(exe);
        }
        Ok(Outcome::Continue)
    }
}

/// What the kernel checks before it runs a file: a regular file with an
/// execute bit (root's rule, which the step is shown).
fn executable(host: &Path) -> Result<(), Errno> {
    let m = std::fs::metadata(host).map_err(io_errno)?;
    if !m.is_file() || m.mode() & 0o111 == 0 {
        return Err(Errno::EACCES);
    }
    Ok(())
}

/// set(res)[ug]id: real, effective, saved (-1 keeps one); fs follows effective.
fn set_ids(ids: &mut [u32; 4], v: [u32; 3]) {
    for (i, x) in v.into_iter().enumerate() {
        if x != u32::MAX {
            ids[i] = x;
        }
    }
    ids[3] = ids[1];
}

/// Whether `open` follows a link in its last component.
/// Whether an open may change the file it names (or make it).
fn opens_to_change(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_CREAT | libc::O_TRUNC) != 0
}

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

/// The thread's umask, from /proc.
fn umask(tid: i32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}
