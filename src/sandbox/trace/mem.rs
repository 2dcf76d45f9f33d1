//! A stopped tracee's registers and memory: the syscall's number and
//! arguments (x86-64's calling convention), its result when the tracer answers
//! in the kernel's stead, and the bytes behind its pointers.

use nix::libc;
use nix::sys::ptrace;
use nix::unistd::Pid;

/// The longest path the kernel takes (PATH_MAX, its NUL included).
pub(super) const PATH_MAX: usize = 4096;

/// A tracee's registers at a syscall stop.
#[derive(Clone, Copy)]
pub(super) struct Regs(pub libc::user_regs_struct);

impl Regs {
    pub(crate) fn get(pid: Pid) -> nix::Result<Regs> {
        ptrace::getregs(pid).map(Regs)
    }

    pub(crate) fn set(&self, pid: Pid) -> nix::Result<()> {
        ptrace::setregs(pid, self.0)
    }

    pub(crate) fn nr(&self) -> i64 {
        self.0.orig_rax as i64
    }

    pub(crate) fn set_nr(&mut self, nr: i64) {
        self.0.orig_rax = nr as u64;
    }

    pub(crate) fn arg(&self, i: usize) -> u64 {
        let r = &self.0;
        match i {
            0 => r.rdi,
            1 => r.rsi,
            2 => r.rdx,
            3 => r.r10,
            4 => r.r8,
            _ => r.r9,
        }
    }

    /// An argument that holds an `int` (a dirfd, a pid): its low 32 bits, signed.
    pub(crate) fn int(&self, i: usize) -> i32 {
        self.arg(i) as u32 as i32
    }

    pub(crate) fn set_arg(&mut self, i: usize, v: u64) {
        let r = &mut self.0;
        match i {
            0 => r.rdi = v,
            1 => r.rsi = v,
            2 => r.rdx = v,
            3 => r.r10 = v,
            4 => r.r8 = v,
            _ => r.r9 = v,
        }
    }

    /// The call is skipped and seems to return `value` (a negative errno for
    /// an error): the kernel takes rax as the result of a skipped call.
    pub(crate) fn skip(&mut self, value: i64) {
        self.0.orig_rax = u64::MAX;
        self.0.rax = value as u64;
    }

    /// Back onto the `syscall` instruction (two bytes) with its number in rax,
    /// so the call is made again once the tracee runs.
    pub(crate) fn restart(&mut self) {
        self.0.rip -= 2;
        self.0.rax = self.0.orig_rax;
    }

    pub(crate) fn result(&self) -> i64 {
        self.0.rax as i64
    }
}

thread_local! {
    /// Each tracee's /proc/TID/mem, opened once (the supervisor is one thread).
    static MEMS: std::cell::RefCell<std::collections::HashMap<i32, std::fs::File>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Forgets a thread's memory file: it exec'd (a new address space) or ended.
pub(super) fn forget(pid: Pid) {
    MEMS.with(|m| m.borrow_mut().remove(&pid.as_raw()));
}

/// Runs `f` on the tracee's memory file. Through /proc/TID/mem, not
/// process_vm_readv/writev: container runtimes' default seccomp profiles
/// allow those only with CAP_SYS_PTRACE, while a tracer may always use its
/// tracee's mem file.
fn with_mem<T>(pid: Pid, f: impl FnOnce(&std::fs::File) -> std::io::Result<T>) -> nix::Result<T> {
    MEMS.with(|m| {
        let mut m = m.borrow_mut();
        let file = match m.entry(pid.as_raw()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(format!("/proc/{pid}/mem"))
                    .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
                v.insert(file)
            }
        };
        f(file).map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EFAULT)))
    })
}

/// Reads `len` bytes at `addr` of the tracee.
pub(super) fn read(pid: Pid, addr: u64, len: usize) -> nix::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    if len == 0 {
        return Ok(buf);
    }
    with_mem(pid, |f| f.read_exact_at(&mut buf, addr))?;
    Ok(buf)
}

/// A NUL-terminated string at `addr`, read a page at a time so the read never
/// runs into an unmapped page after its end. ENAMETOOLONG past `max` bytes.
pub(super) fn read_cstr(pid: Pid, addr: u64, max: usize) -> nix::Result<Vec<u8>> {
    if addr == 0 {
        return Err(nix::Error::EFAULT);
    }
    let mut out = Vec::new();
    let mut at = addr;
    loop {
        let to_page = 4096 - (at as usize % 4096);
        let chunk = read(pid, at, to_page)?;
        if let Some(end) = chunk.iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
        if out.len() >= max {
            return Err(nix::Error::ENAMETOOLONG);
        }
        at += to_page as u64;
    }
}

/// Writes `data` at `addr` of the tracee.
pub(super) fn write(pid: Pid, addr: u64, data: &[u8]) -> nix::Result<()> {
    use std::os::unix::fs::FileExt;
    if data.is_empty() {
        return Ok(());
    }
    with_mem(pid, |f| f.write_all_at(data, addr))
}

/// The pointers of a NULL-terminated array (argv), at most `max` of them.
pub(super) fn read_ptrs(pid: Pid, addr: u64, max: usize) -> nix::Result<Vec<u64>> {
    let mut out = Vec::new();
    if addr == 0 {
        return Ok(out);
    }
    let mut at = addr;
    loop {
        let words = (4096 - (at as usize % 4096)) / 8;
        let chunk = read(pid, at, words.max(1) * 8)?;
        for w in chunk.chunks_exact(8) {
            let p = u64::from_ne_bytes(w.try_into().map_err(|_| nix::Error::EFAULT)?);
            if p == 0 {
                return Ok(out);
            }
            out.push(p);
            if out.len() > max {
                return Err(nix::Error::E2BIG);
            }
        }
        at += (words.max(1) * 8) as u64;
    }
}

/// Where the tracer writes the strings it gives a call: a private mapping
/// made in the tracee by an injected mmap, a bump allocator over it.
pub(super) struct Scratch {
    pub(crate) base: u64,
    pub(crate) used: usize,
}

/// The size of a thread's scratch mapping: room for a rewritten argv.
pub(super) const SCRATCH_LEN: usize = 1 << 20;

impl Scratch {
    /// Puts `data` in the tracee's scratch and returns its address.
    pub(crate) fn put(&mut self, pid: Pid, data: &[u8]) -> nix::Result<u64> {
        let len = (data.len() + 15) & !15;
        if self.used + len > SCRATCH_LEN {
            return Err(nix::Error::E2BIG);
        }
        let addr = self.base + self.used as u64;
        write(pid, addr, data)?;
        self.used += len;
        Ok(addr)
    }

    /// A NUL-terminated copy of `s`.
    pub(crate) fn put_cstr(&mut self, pid: Pid, s: &[u8]) -> nix::Result<u64> {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s);
        v.push(0);
        self.put(pid, &v)
    }
}
