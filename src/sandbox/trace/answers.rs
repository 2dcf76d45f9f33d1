//! Calls the tracer answers in the kernel's stead: stat of a file by its
//! host path with the owners the step gave it, readlink inside the root,
//! and the ids the step believes it has.

use super::calls::{as_bytes, cstr, R};
use super::mem::{self, Regs};
use super::paths::{io_errno, Resolved};
use super::{host_bytes, Outcome, Tracer};
use nix::errno::Errno;
use nix::libc;
use nix::unistd::Pid;
use std::path::Path;

impl Tracer {
    pub(super) fn stat(&self, host: &Path, follow: bool, buf: u64, pid: Pid) -> R {
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

    pub(super) fn statx(&self, host: &Path, follow: bool, mask: u32, buf: u64, pid: Pid) -> R {
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

    pub(super) fn readlink(&self, tid: i32, r: &Resolved, buf: u64, size: i64) -> R {
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

    pub(super) fn identity(&mut self, tid: i32, regs: &Regs, pid: Pid) -> R {
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
