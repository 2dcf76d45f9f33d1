//! What `execve` would run: the kernel reads a script's `#!` line and an ELF
//! program's interpreter (PT_INTERP) by host paths, so the tracer reads them
//! first and starts the interpreter or loader named inside the root instead.

use super::calls::{Fail, R};
use super::mem::{self, Regs, Scratch, PATH_MAX};
use super::paths::io_errno;
use super::{fd_link, host_bytes, Outcome, Tracer};
use nix::errno::Errno;
use nix::libc;
use nix::unistd::Pid;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// The kind of an executable file.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Format {
    /// `#!interp [arg]`.
    Script {
        interp: Vec<u8>,
        arg: Option<Vec<u8>>,
    },
    /// An ELF program; its loader when dynamically linked.
    Elf { interp: Option<Vec<u8>> },
    /// Neither: the kernel answers ENOEXEC.
    Unknown,
}

/// The kernel's limit on a `#!` line (BINPRM_BUF_SIZE).
const SHEBANG_MAX: usize = 256;

pub(super) fn format_of(host: &Path) -> Result<Format, Errno> {
    let f = std::fs::File::open(host).map_err(super::paths::io_errno)?;
    let mut head = [0u8; SHEBANG_MAX];
    let n = read_at(&f, &mut head, 0)?;
    let head = &head[..n];
    if let Some(line) = head.strip_prefix(b"#!") {
        return Ok(shebang(line));
    }
    if head.starts_with(b"\x7fELF") {
        return Ok(Format::Elf {
            interp: elf_interp(&f, head)?,
        });
    }
    Ok(Format::Unknown)
}

fn read_at(f: &std::fs::File, buf: &mut [u8], at: u64) -> Result<usize, Errno> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(super::paths::io_errno(e)),
        }
    }
    Ok(n)
}

/// The interpreter and its one optional argument, as the kernel splits them
/// (`binfmt_script`: blanks around, the rest of the line one argument).
fn shebang(line: &[u8]) -> Format {
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let line = &line[..end];
    let start = line.iter().position(|b| !blank(b)).unwrap_or(line.len());
    let line = &line[start..];
    let stop = line.iter().position(blank).unwrap_or(line.len());
    let interp = line[..stop].to_vec();
    let rest = &line[stop..];
    let a = rest.iter().position(|b| !blank(b)).unwrap_or(rest.len());
    let z = rest.iter().rposition(|b| !blank(b)).map_or(a, |z| z + 1);
    let arg = (a < z).then(|| rest[a..z].to_vec());
    Format::Script { interp, arg }
}

/// PT_INTERP's path, for 64- and 32-bit ELF files of either byte order.
fn elf_interp(f: &std::fs::File, head: &[u8]) -> Result<Option<Vec<u8>>, Errno> {
    const PT_INTERP: u32 = 3;
    let wide = head.get(4) == Some(&2);
    let little = head.get(5) != Some(&2);
    let u16_at = |b: &[u8], o: usize| -> Option<u64> {
        let v: [u8; 2] = b.get(o..o + 2)?.try_into().ok()?;
        Some(u64::from(if little {
            u16::from_le_bytes(v)
        } else {
            u16::from_be_bytes(v)
        }))
    };
    let u32_at = |b: &[u8], o: usize| -> Option<u64> {
        let v: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(u64::from(if little {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        }))
    };
    let u64_at = |b: &[u8], o: usize| -> Option<u64> {
        let v: [u8; 8] = b.get(o..o + 8)?.try_into().ok()?;
        Some(if little {
            u64::from_le_bytes(v)
        } else {
            u64::from_be_bytes(v)
        })
    };
    let (phoff, phentsize, phnum) = if wide {
        (u64_at(head, 0x20), u16_at(head, 0x36), u16_at(head, 0x38))
    } else {
        (u32_at(head, 0x1c), u16_at(head, 0x2a), u16_at(head, 0x2c))
    };
    let (Some(phoff), Some(size), Some(num)) = (phoff, phentsize, phnum) else {
        return Err(Errno::ENOEXEC);
    };
    if size == 0 || num > 4096 {
        return Err(Errno::ENOEXEC);
    }
    let mut table = vec![0u8; (size * num) as usize];
    if read_at(f, &mut table, phoff)? != table.len() {
        return Err(Errno::ENOEXEC);
    }
    for ph in table.chunks_exact(size as usize) {
        if u32_at(ph, 0) != Some(u64::from(PT_INTERP)) {
            continue;
        }
        let (off, len) = if wide {
            (u64_at(ph, 8), u64_at(ph, 32))
        } else {
            (u32_at(ph, 4), u32_at(ph, 16))
        };
        let (Some(off), Some(len)) = (off, len) else {
            return Err(Errno::ENOEXEC);
        };
        if len == 0 || len > 4096 {
            return Err(Errno::ENOEXEC);
        }
        let mut p = vec![0u8; len as usize];
        read_at(f, &mut p, off)?;
        if let Some(nul) = p.iter().position(|&b| b == 0) {
            p.truncate(nul);
        }
        return Ok(Some(p));
    }
    Ok(None)
}

/// Whether a dynamic loader takes `--argv0` (glibc since 2.33, musl since
/// 1.2.3), which keeps the program's argv[0] when the loader starts it.
pub(super) fn loader_takes_argv0(host: &Path) -> bool {
    std::fs::read(host).is_ok_and(|b| b.windows(7).any(|w| w == b"--argv0"))
}

impl Tracer {
    /// execve: the program named inside the root, a script's interpreter
    /// and a dynamic program's loader found there too, so the kernel never
    /// reads a path of its own.
    pub(super) fn execve(
        &mut self,
        tid: i32,
        regs: &mut Regs,
        s: Option<&mut Scratch>,
        at: bool,
    ) -> R {
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
            match format_of(&host)? {
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
                        .or_insert_with(|| loader_takes_argv0(&r.host));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_lines_split_as_the_kernel_splits_them() {
        assert_eq!(
            shebang(b"/bin/sh\nexit 0\n"),
            Format::Script {
                interp: b"/bin/sh".to_vec(),
                arg: None
            }
        );
        assert_eq!(
            shebang(b" /usr/bin/env  python3 -u \n"),
            Format::Script {
                interp: b"/usr/bin/env".to_vec(),
                arg: Some(b"python3 -u".to_vec())
            }
        );
    }

    #[test]
    fn the_loader_of_this_test_is_found() {
        let me = std::env::current_exe().unwrap();
        match format_of(&me).unwrap() {
            Format::Elf { interp: Some(i) } => assert!(i.starts_with(b"/lib")),
            // A static test binary has none.
            Format::Elf { interp: None } => {}
            other => panic!("{other:?}"),
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        std::fs::write(&p, b"plain").unwrap();
        assert_eq!(format_of(&p).unwrap(), Format::Unknown);
    }
}
