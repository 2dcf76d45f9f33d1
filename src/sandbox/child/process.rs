//! The helper's own processes: it dies with its parent, forks the command's
//! process and waits for it.

use super::fds::receive_fd;
use super::ChildError;
use crate::sandbox::RunSpec;
use nix::sys::socket;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::convert::Infallible;
use std::fs::File;
use std::os::fd::OwnedFd;

/// SIGKILL when the parent ends; when `parent` is gone already (it died before
/// this was set), exit now. 0: no parent to check (the parent is outside this
/// pid namespace).
pub(super) fn die_with_parent(parent: u32) -> Result<(), ChildError> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(ChildError::DeathSignal)?;
    let now = nix::unistd::getppid().as_raw() as u32;
    if parent != 0 && now != parent {
        return Err(ChildError::ParentGone(parent));
    }
    Ok(())
}

/// The child's exit code (128 + signal when killed).
pub(super) fn wait_for(child: Pid) -> Result<i32, ChildError> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(ChildError::Wait(e)),
        }
    }
}

/// What the helper keeps to make device nodes for the command: the records
/// file, the host's /proc, and its end of the socket the listener comes over.
struct Devices {
    out: File,
    proc: File,
    ours: OwnedFd,
}

/// Forks; the child runs `exec` (which only returns with why the command could
/// not start), this process waits for it and returns its exit code.
/// The child is recorded in `spec.procs` while it runs: in a new pid namespace
/// it is the namespace's init, and killing it ends every process of the step.
pub(super) fn command_in_child(
    spec: &RunSpec,
    devices: bool,
    exec: impl FnOnce(Option<OwnedFd>) -> Result<Infallible, ChildError>,
) -> Result<i32, ChildError> {
    // Opened before the fork: the child's pivot_root moves this process's root too.
    let records = spec
        .procs
        .as_deref()
        .and_then(|dir| crate::procs::Records::open(dir).ok());
    let notify = match (&spec.devices, devices) {
        (Some(file), true) => Some(device_channel(file)?),
        _ => None,
    };
    // SAFETY: this process is single-threaded (a fresh exec of the executor that
    // started no runtime), so the child may run any code.
    match unsafe { fork() }.map_err(ChildError::Fork)? {
        ForkResult::Child => {
            drop(records);
            let theirs = notify.map(|(_, theirs)| theirs);
            let e = match die_with_parent(0).and_then(|()| exec(theirs)) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            e.say();
            std::process::exit(e.code());
        }
        ForkResult::Parent { child } => {
            let record = records.as_ref().and_then(|r| r.record(child.as_raw()).ok());
            if let Some((Devices { out, proc, ours }, theirs)) = notify {
                drop(theirs);
                // None when the child failed before it installed the filter.
                if let Some(listener) = receive_fd(&ours) {
                    crate::sandbox::devices::supervise(listener, &proc, out, child.as_raw());
                }
            }
            let code = wait_for(child);
            drop(record);
            code
        }
    }
}

/// Device nodes the kernel refuses here are made by this process (see
/// `devices`): the child sends its filter's listener over the socket's other end.
fn device_channel(file: &std::path::Path) -> Result<(Devices, OwnedFd), ChildError> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|source| ChildError::Open {
            path: file.to_path_buf(),
            source,
        })?;
    // The host's /proc: the kernel names the step's processes by their pids
    // here, which the step's own /proc does not show.
    let proc = File::open("/proc").map_err(|source| ChildError::Open {
        path: "/proc".into(),
        source,
    })?;
    let (ours, theirs) = socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::Stream,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(ChildError::Socketpair)?;
    Ok((Devices { out, proc, ours }, theirs))
}
