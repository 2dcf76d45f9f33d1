//! Where binfmt_misc is not visible (a container: its /proc has no
//! binfmt_misc mount, yet the node's handlers apply to what it executes), the
//! kernel is asked directly: a minimal executable of the architecture is run.
//! `exec format error` means no handler; a missing file means a handler
//! without the F flag whose interpreter this container does not have.

use nix::libc;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// What executing a foreign binary here did.
#[derive(Debug)]
pub(super) enum Probe {
    /// The kernel started it (natively or through a handler).
    Runs,
    /// `ENOEXEC`: no handler matches.
    NoHandler,
    /// `ENOENT` for a file that exists: the handler's interpreter is not here.
    NoInterpreter,
    /// Nothing could be learned (the directory is `noexec`, …).
    Unknown(String),
}

/// aarch64's `mov x0, #0; mov x8, #93; svc #0` (exit 0); other architectures
/// get bytes that stop them with a signal, which says the same.
fn code_for(machine: u16) -> Vec<u8> {
    match machine {
        183 => [0xd280_0000u32, 0xd280_0ba8, 0xd400_0001]
            .iter()
            .flat_map(|i| i.to_le_bytes())
            .collect(),
        _ => vec![0; 16],
    }
}

/// An executable of one segment holding `code`: what the kernel and qemu load.
pub(super) fn elf(class: u8, data: u8, machine: u16) -> Vec<u8> {
    let code = code_for(machine);
    let big = data == 2;
    let mut out = Vec::new();
    let u16b = |v: u16| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u32b = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u64b = |v: u64| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let base: u64 = 0x40_0000;
    out.extend_from_slice(b"\x7fELF");
    out.extend_from_slice(&[class, data, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&u16b(2)); // ET_EXEC
    out.extend_from_slice(&u16b(machine));
    out.extend_from_slice(&u32b(1));
    if class == 2 {
        let (eh, ph) = (64u64, 56u64);
        let size = eh + ph + code.len() as u64;
        out.extend_from_slice(&u64b(base + eh + ph)); // entry
        out.extend_from_slice(&u64b(eh)); // phoff
        out.extend_from_slice(&u64b(0)); // shoff
        out.extend_from_slice(&u32b(0)); // flags
        for v in [eh as u16, ph as u16, 1, 0, 0, 0] {
            out.extend_from_slice(&u16b(v));
        }
        out.extend_from_slice(&u32b(1)); // PT_LOAD
        out.extend_from_slice(&u32b(5)); // R+X
        for v in [0, base, base, size, size, 0x1000] {
            out.extend_from_slice(&u64b(v));
        }
    } else {
        let (eh, ph) = (52u32, 32u32);
        let base = base as u32;
        let size = eh + ph + code.len() as u32;
        out.extend_from_slice(&u32b(base + eh + ph));
        out.extend_from_slice(&u32b(eh));
        out.extend_from_slice(&u32b(0));
        out.extend_from_slice(&u32b(0));
        for v in [eh as u16, ph as u16, 1, 0, 0, 0] {
            out.extend_from_slice(&u16b(v));
        }
        for v in [1, 0, base, base, size, size, 5, 0x1000] {
            out.extend_from_slice(&u32b(v));
        }
    }
    out.extend_from_slice(&code);
    out
}

/// Runs the executable `elf` from a file in `dir` (gone afterwards), for at
/// most two seconds, with no core dump.
pub(super) fn run(elf: &[u8], dir: &Path) -> Probe {
    let made = tempfile::Builder::new()
        .prefix("binfmt-probe-")
        .tempdir_in(dir)
        .and_then(|d| {
            let path = d.path().join("probe");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o700)
                .open(&path)?;
            f.write_all(elf)?;
            Ok((d, path))
        });
    let (_dir, path) = match made {
        Ok(m) => m,
        Err(e) => return Probe::Unknown(format!("writing a probe in {}: {e}", dir.display())),
    };
    match spawn(&path) {
        Err(nix::errno::Errno::ENOEXEC) => Probe::NoHandler,
        Err(nix::errno::Errno::ENOENT) => Probe::NoInterpreter,
        Err(e) => Probe::Unknown(e.to_string()),
        Ok(child) => {
            // Its exit says nothing more: a faulting guest is still a started one.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Ok(WaitStatus::StillAlive) => {
                        let _ = kill(child, Signal::SIGKILL);
                        let _ = waitpid(child, None);
                        break;
                    }
                    _ => break,
                }
            }
            Probe::Runs
        }
    }
}

/// fork and execve `path` with no core dump and no output; the exec's own
/// error comes back over a close-on-exec pipe (libc's execvp would instead run
/// a file the kernel refuses as a shell script).
fn spawn(path: &Path) -> Result<Pid, nix::errno::Errno> {
    use nix::unistd::{fork, pipe2, read, write, ForkResult};
    use std::os::fd::AsRawFd;
    let prog = CString::new(path.as_os_str().as_bytes()).map_err(|_| nix::errno::Errno::EINVAL)?;
    // Made before fork: the child may not allocate.
    let argv = [prog.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let (rd, wr) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the child calls only async-signal-safe functions before execve or _exit.
    match unsafe { fork()? } {
        ForkResult::Child => {
            drop(rd);
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: plain system calls on values of our own.
            unsafe {
                // qemu dumps a core where its guest faults: not in the caller's directory.
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                for fd in 0..3 {
                    libc::dup2(null, fd);
                }
            }
            // SAFETY: NUL-terminated arrays of pointers to live C strings.
            unsafe { libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            let errno = nix::errno::Errno::last_raw();
            let _ = write(&wr, &errno.to_ne_bytes());
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut buf = [0u8; 4];
            let n = read(rd.as_raw_fd(), &mut buf).unwrap_or(0);
            if n == 4 {
                let _ = waitpid(child, None);
                return Err(nix::errno::Errno::from_raw(i32::from_ne_bytes(buf)));
            }
            Ok(child)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_native_probe_runs_and_an_unknown_machine_does_not() {
        let d = tempfile::tempdir().unwrap();
        // x86-64's probe: the kernel starts it (it faults at once).
        if crate::image::spec::Platform::host().architecture == "amd64" {
            assert!(matches!(run(&elf(2, 1, 62), d.path()), Probe::Runs));
        }
        // A machine number nothing handles.
        assert!(matches!(
            run(&elf(2, 1, 0x7777), d.path()),
            Probe::NoHandler
        ));
    }

    #[test]
    fn headers_have_the_sizes_the_kernel_reads() {
        assert_eq!(elf(2, 1, 183).len(), 64 + 56 + 12);
        assert_eq!(elf(1, 1, 40).len(), 52 + 32 + 16);
        assert_eq!(&elf(2, 2, 22)[18..20], &[0, 22]);
    }
}
