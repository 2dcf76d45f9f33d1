//! The sandbox helper: runs in a fresh, single-threaded process (the executor
//! re-executed with `__kiln-sandbox SPEC`), so `fork` is safe here. Errors are
//! printed and become exit codes; nothing here returns to the build.
//!
//! `enter` picks the rung; `namespaces` makes the namespaces and the root's
//! mount (`mounts`), `system_dirs` and `run_mounts` fill the root, `exec`
//! enters it and runs the command in a child (`process`). Every call that
//! changes namespaces, mounts, the root or the ids goes through `sys`.

mod error;
mod exec;
mod fds;
mod mounts;
mod namespaces;
mod process;
mod run_mounts;
mod sys;
mod system_dirs;

use super::RunSpec;
use error::ChildError;
use nix::sched::CloneFlags;
use process::die_with_parent;
use sys::Syscalls;

/// Exit code for a failure of the sandbox itself (not the command's).
const SETUP_FAILED: i32 = 125;

/// Entry point: `args` are what follows the helper argument.
pub fn main(args: &[std::ffi::OsString]) -> i32 {
    let spec = match read_spec(args.first()) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("sandbox helper: {e}");
            return SETUP_FAILED;
        }
    };
    let probe = args.get(1).is_some_and(|a| a == "--probe");
    // The helper never outlives the executor that started it.
    if let Err(e) = die_with_parent(spec.parent) {
        eprintln!("sandbox helper: {e}");
        return SETUP_FAILED;
    }
    match enter(&sys::Real, &spec, probe) {
        Ok(code) => code,
        Err(e) => {
            // Not the error's own code: a failure outside the probe is the
            // step's setup failing, whichever rung it is.
            e.say();
            SETUP_FAILED
        }
    }
}

fn read_spec(file: Option<&std::ffi::OsString>) -> Result<RunSpec, ChildError> {
    let file = file.ok_or(ChildError::NoSpec)?;
    let bytes = std::fs::read(file).map_err(|source| ChildError::ReadSpec {
        file: file.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ChildError::ParseSpec {
        file: file.clone(),
        source,
    })
}

/// Exit codes of a probe, so the parent can say which rung failed.
pub(crate) const PROBE_NO_NAMESPACES: i32 = 10;
pub(crate) const PROBE_NO_USER_NAMESPACE: i32 = 11;
pub(crate) const PROBE_NO_OVERLAY: i32 = 12;
pub(crate) const PROBE_NO_ID_MAP: i32 = 13;
/// No overlay can be mounted here (the scratch dir is on an overlay), but the
/// stage's root itself can be the command's root.
pub(crate) const PROBE_OWN_ROOT: i32 = 14;
/// The traced rung cannot run (ptrace or seccomp refused).
pub(crate) const PROBE_NO_TRACE: i32 = 15;

/// New namespaces and the overlay, then a child that is pid 1 of the new pid
/// namespace: when it exits, the kernel kills whatever the command left running.
fn enter(sys: &dyn Syscalls, spec: &RunSpec, probe: bool) -> Result<i32, ChildError> {
    if spec.traced && probe {
        return match super::trace::probe() {
            Ok(()) => Ok(0),
            Err(e) => {
                eprintln!("{e}");
                Ok(PROBE_NO_TRACE)
            }
        };
    }
    if spec.traced {
        return super::trace::run(spec).map_err(ChildError::Trace);
    }
    if spec.in_place {
        return exec::in_place(sys, spec);
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if spec.network_none {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    // Joined before anything forks, so the step's every process is counted.
    let _cgroup = (!probe).then(super::cgroup::StepCgroup::join).flatten();
    match in_new_namespaces(sys, spec, probe, flags) {
        Err(e) if probe => {
            e.say();
            Ok(e.code())
        }
        result => result,
    }
}

/// Root gets a user namespace whenever one can be made, on a host too: the
/// command's capabilities are then the namespace's, never the host's. Where
/// none can be made (user.max_user_namespaces=0 on a host), the namespaces
/// directly, with CAP_MKNOD dropped as well (a device node could reach a host
/// disk without a user namespace's nodev).
fn in_new_namespaces(
    sys: &dyn Syscalls,
    spec: &RunSpec,
    probe: bool,
    flags: CloneFlags,
) -> Result<i32, ChildError> {
    let root = nix::unistd::geteuid().is_root();
    let in_userns = || {
        namespaces::in_user_namespace(sys, || {
            sys.unshare(flags).map_err(ChildError::Unshare)?;
            namespaces::in_namespaces(sys, spec, probe, Confine::UserNamespace)
        })
    };
    if root && namespaces::user_namespaces_work(sys) {
        return in_userns();
    }
    match sys.unshare(flags) {
        Ok(()) => namespaces::in_namespaces(sys, spec, probe, Confine::NoUserNamespace),
        // The probe's exit code then says the user namespace was refused.
        Err(nix::Error::EPERM) if root => in_userns(),
        Err(e) => Err(ChildError::Unshare(e)),
    }
}

/// How the command's process is confined beyond its namespaces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Confine {
    /// In a user namespace: nodev everywhere, capabilities the namespace's.
    UserNamespace,
    /// Root's own namespaces (no user namespace could be made): the default
    /// set without CAP_MKNOD.
    NoUserNamespace,
    /// The in-place rung: the container's own root and runtime profile.
    InPlace,
}
