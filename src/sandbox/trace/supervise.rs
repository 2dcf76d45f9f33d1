//! The supervisor's loop: every stop of every traced thread, from the
//! step's first process until it ends, then the rest ended as the end of a
//! pid namespace would end them.

use super::mem::{self, Regs, Scratch};
use super::{calls, SETUP_FAILED};
use super::{Outcome, Thread, Tracer};
use nix::errno::Errno;
use nix::libc;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

impl Tracer {
    /// Runs the step until its first process ends, then ends the rest, as
    /// the end of a pid namespace would. The first process's exit code.
    pub(super) fn supervise(&mut self, main: i32) -> i32 {
        let mut code = None;
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::__WALL)) {
                Ok(s) => s,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            };
            match status {
                WaitStatus::Exited(pid, c) => {
                    self.gone(pid.as_raw());
                    if pid.as_raw() == main {
                        code = Some(c);
                        self.end_all();
                    }
                }
                WaitStatus::Signaled(pid, sig, _) => {
                    self.gone(pid.as_raw());
                    if pid.as_raw() == main {
                        code = Some(128 + sig as i32);
                        self.end_all();
                    }
                }
                WaitStatus::PtraceEvent(pid, _, event) => self.on_event(pid, event),
                WaitStatus::PtraceSyscall(pid) => {
                    let _ = ptrace::cont(pid, None);
                }
                WaitStatus::Stopped(pid, sig) => self.on_stop(pid, sig),
                _ => {}
            }
        }
        code.unwrap_or(SETUP_FAILED)
    }

    fn gone(&mut self, tid: i32) {
        mem::forget(Pid::from_raw(tid));
        if let Some(t) = self.threads.remove(&tid) {
            if t.tgid == tid {
                self.exes.remove(&tid);
            }
        }
        self.born.remove(&tid);
        self.early.remove(&tid);
    }

    fn end_all(&mut self) {
        self.ending = true;
        let all = self
            .threads
            .keys()
            .chain(self.early.iter())
            .chain(self.born.keys());
        for &tid in all {
            let _ = nix::sys::signal::kill(Pid::from_raw(tid), Signal::SIGKILL);
        }
    }

    /// Lets a new thread run, or kills it when the step is ending.
    fn start(&mut self, tid: i32, t: Thread) {
        let pid = Pid::from_raw(tid);
        if self.ending {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
        self.threads.insert(tid, t);
        let _ = ptrace::cont(pid, None);
    }

    fn on_stop(&mut self, pid: Pid, sig: Signal) {
        let tid = pid.as_raw();
        if !self.threads.contains_key(&tid) {
            // A new thread's first stop: it runs once its parent's event
            // gave it its state.
            match self.born.remove(&tid) {
                Some(t) => self.start(tid, t),
                None => {
                    if self.ending {
                        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                    }
                    self.early.insert(tid);
                }
            }
            return;
        }
        // A group stop (no signal to deliver) resumes; a signal is delivered.
        let deliver = ptrace::getsiginfo(pid).is_ok().then_some(sig);
        let _ = ptrace::cont(pid, deliver);
    }

    fn on_event(&mut self, pid: Pid, event: i32) {
        let tid = pid.as_raw();
        match event {
            libc::PTRACE_EVENT_SECCOMP => {
                if let Err(e) = self.on_syscall(pid) {
                    // The thread vanished (killed) under us: nothing to answer.
                    if e != Errno::ESRCH {
                        crate::log_debug!("tracer: {e}");
                    }
                }
                return;
            }
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                if let (Ok(new), Some(parent)) = (ptrace::getevent(pid), self.threads.get(&tid)) {
                    let new = new as i32;
                    let thread = event == libc::PTRACE_EVENT_CLONE && is_thread_clone(pid);
                    let mut t = parent.clone();
                    t.exec = None;
                    if thread {
                        // Shares the address space, so needs a scratch of its own.
                        t.scratch = None;
                    } else {
                        t.tgid = new;
                        if event == libc::PTRACE_EVENT_CLONE {
                            // A clone without CLONE_VM copies the mapping, but a
                            // CLONE_VM without CLONE_THREAD shares it.
                            t.scratch = None;
                        }
                        if let Some(e) = self.exes.get(&parent.tgid).cloned() {
                            self.exes.insert(new, e);
                        }
                    }
                    if self.early.remove(&new) {
                        self.start(new, t);
                    } else {
                        if self.ending {
                            let _ = nix::sys::signal::kill(Pid::from_raw(new), Signal::SIGKILL);
                        }
                        self.born.insert(new, t);
                    }
                }
            }
            libc::PTRACE_EVENT_EXEC => {
                // The thread that called execve takes the leader's id.
                let former = ptrace::getevent(pid).map(|f| f as i32).unwrap_or(tid);
                mem::forget(pid);
                mem::forget(Pid::from_raw(former));
                if let Some(mut t) = self.threads.remove(&former) {
                    t.scratch = None;
                    if let Some(e) = t.exec.take() {
                        self.exes.insert(t.tgid, e);
                    }
                    self.threads.insert(tid, t);
                }
            }
            _ => {}
        }
        let _ = ptrace::cont(pid, None);
    }

    fn on_syscall(&mut self, pid: Pid) -> nix::Result<()> {
        let mut regs = Regs::get(pid)?;
        let tid = pid.as_raw();
        let mut scratch = self
            .threads
            .get(&tid)
            .and_then(|t| t.scratch)
            .map(|base| Scratch { base, used: 0 });
        match self.handle(tid, &mut regs, &mut scratch) {
            Ok(Outcome::Continue) => regs.set(pid)?,
            Ok(Outcome::Return(v)) => {
                regs.skip(v);
                regs.set(pid)?;
            }
            Err(calls::Fail::Errno(e)) => {
                regs.skip(-(e as i64));
                regs.set(pid)?;
            }
            Err(calls::Fail::NeedScratch) => return self.make_scratch(pid, regs),
        }
        ptrace::cont(pid, None)
    }

    /// Makes the thread's scratch mapping with an injected mmap, then puts
    /// the thread back on its call, which stops here again.
    fn make_scratch(&mut self, pid: Pid, saved: Regs) -> nix::Result<()> {
        let mut r = saved;
        r.set_nr(libc::SYS_mmap);
        r.set_arg(0, 0);
        r.set_arg(1, mem::SCRATCH_LEN as u64);
        r.set_arg(2, (libc::PROT_READ | libc::PROT_WRITE) as u64);
        r.set_arg(3, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64);
        r.set_arg(4, u64::MAX);
        r.set_arg(5, 0);
        r.set(pid)?;
        ptrace::syscall(pid, None)?;
        loop {
            match waitpid(pid, Some(WaitPidFlag::__WALL))? {
                WaitStatus::PtraceSyscall(_) => break,
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    self.gone(pid.as_raw());
                    return Ok(());
                }
                // A signal arrived first: it is delivered after the call.
                _ => {
                    ptrace::syscall(pid, None)?;
                }
            }
        }
        let addr = Regs::get(pid)?.result();
        let mut back = saved;
        back.restart();
        back.set(pid)?;
        // An error is -4095..-1; anything else is the mapping.
        if !(-4095..0).contains(&addr) {
            if let Some(t) = self.threads.get_mut(&pid.as_raw()) {
                t.scratch = Some(addr as u64);
            }
        }
        ptrace::cont(pid, None)
    }
}

/// Whether the clone a thread is stopped in makes a thread (CLONE_THREAD).
fn is_thread_clone(pid: Pid) -> bool {
    Regs::get(pid).is_ok_and(|r| r.arg(0) & libc::CLONE_THREAD as u64 != 0)
}
