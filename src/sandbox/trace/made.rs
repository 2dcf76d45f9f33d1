//! Files a step makes or gives away: the owner a made file gets from the
//! step's emulated ids, chown recorded instead of done, and file
//! capabilities kept beside the file rather than on it.

use super::calls::{cstr, R};
use super::mem::{self, Regs, PATH_MAX};
use super::paths::{io_errno, Resolved};
use super::{os, Outcome, Tracer};
use nix::errno::Errno;
use nix::libc;
use nix::unistd::Pid;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

impl Tracer {
    /// The identity the thread's file-creating calls give (fsuid, fsgid)
    /// when it is not root's: the tracer records it for what it makes.
    pub(super) fn maker(&self, tid: i32) -> Option<(u32, u32)> {
        let ids = &self.threads.get(&tid)?.ids;
        ((ids.uid[3], ids.gid[3]) != (0, 0)).then_some((ids.uid[3], ids.gid[3]))
    }

    pub(super) fn record_made(&mut self, host: &Path, owner: (u32, u32)) {
        if let Ok(m) = std::fs::symlink_metadata(host) {
            let born = super::owners::born(&m);
            self.owners.set((m.dev(), m.ino()), owner.0, owner.1, born);
        }
    }

    /// An open that may create a file, by a thread shown a non-root
    /// identity: the tracer makes the file first, to record its owner.
    pub(super) fn made_by_open(
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

    pub(super) fn mkdir(&mut self, tid: i32, r: Option<Resolved>, mode: u32) -> R {
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

    pub(super) fn symlink(
        &mut self,
        tid: i32,
        regs: &Regs,
        target_arg: usize,
        r: Option<Resolved>,
    ) -> R {
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
    pub(super) fn mknod(&mut self, tid: i32, r: Option<Resolved>, mode: u32, dev: u64) -> R {
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

    pub(super) fn chown(&mut self, tid: i32, host: &Path, follow: bool, uid: u64, gid: u64) -> R {
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
    pub(super) fn is_cap(&self, tid: i32, regs: &Regs) -> Result<bool, Errno> {
        let name = mem::read_cstr(Pid::from_raw(tid), regs.arg(1), 256)?;
        Ok(name == b"security.capability")
    }

    pub(super) fn cap_xattr(&mut self, tid: i32, regs: &Regs, host: &Path, follow: bool) -> R {
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
