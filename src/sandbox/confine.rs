//! What a RUN command may do, set in the helper just before `execve`: the
//! capability set runc gives a container by default, and a seccomp filter of
//! the kind Docker and containerd apply. The mounts that mask and freeze /proc
//! and /sys are the helper's (`child::system_dirs`).
//!
//! The filter is a deny list, not Docker's allow list: what it must stop is the
//! short list of calls that reach past a namespace (handles to host inodes,
//! mounts, keyrings, kernel modules and images, BPF, perf, new namespaces); an
//! allow list would also refuse whatever new call a toolchain in an image uses.
//! It is compiled by `seccompiler` and installed without `no_new_privs`, so a
//! setuid program in the image (`su`, `ping`) still works as under runc.

use caps::{CapSet, Capability, CapsHashSet};
use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use std::collections::BTreeMap;

/// runc's and BuildKit's default set (containerd's `oci.defaultCaps`).
pub(crate) const DEFAULT_CAPS: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Calls no build step needs that reach past the sandbox: EPERM, as Docker's
/// profile answers them for a container without CAP_SYS_ADMIN.
const DENIED: &[i64] = &[
    // Inode handles: the "shocker" escape reads host files through them.
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    // Mounts: only the helper mounts, before this filter is installed.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    // New namespaces and joining others (clone's flags are checked below).
    libc::SYS_unshare,
    libc::SYS_setns,
    // The kernel itself: modules, images, BPF, perf, keyrings, clocks, swap.
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_keyctl,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_syslog,
    libc::SYS_quotactl,
    libc::SYS_lookup_dcookie,
    libc::SYS_userfaultfd,
    libc::SYS_fanotify_init,
    libc::SYS_vhangup,
    libc::SYS_uselib,
    libc::SYS_ustat,
    libc::SYS_sysfs,
    libc::SYS__sysctl,
    libc::SYS_nfsservctl,
];

/// The namespace flags `clone` may not carry (Docker's profile refuses them
/// without CAP_SYS_ADMIN).
const CLONE_NAMESPACES: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfineError {
    #[error("compiling the seccomp filter: {0}")]
    Compile(String),
    #[error("installing the seccomp filter: {0}")]
    Install(std::io::Error),
    #[error("capabilities ({what}): {source}")]
    Caps {
        what: &'static str,
        source: caps::errors::CapsError,
    },
    #[error("marking inherited descriptors close-on-exec: {0}")]
    Descriptors(std::io::Error),
}

/// The two filters: clone3 answers ENOSYS (its flags sit in memory a filter
/// cannot read, so libc falls back to clone, whose flags it can), then the
/// deny list.
pub(super) fn filters() -> Result<Vec<BpfProgram>, ConfineError> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| ConfineError::Compile(e.to_string()))?;
    let compile = |rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32| {
        SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            arch,
        )
        .and_then(BpfProgram::try_from)
        .map_err(|e| ConfineError::Compile(e.to_string()))
    };
    let clone3 = compile(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        libc::ENOSYS,
    )?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
    let per_flag = CLONE_NAMESPACES
        .iter()
        .map(|&flag| {
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(|e| ConfineError::Compile(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, per_flag);
    let deny = compile(rules, libc::EPERM)?;
    Ok(vec![clone3, deny])
}

/// Installs the filters on this thread. Without `no_new_privs` the kernel
/// wants CAP_SYS_ADMIN in this user namespace: `Ok(false)` where it is not held
/// (the in-place rung, in a container whose own runtime profile already
/// applies), so the caller can say so.
pub(crate) fn install_seccomp() -> Result<bool, ConfineError> {
    install(&filters()?)
}

fn install(progs: &[BpfProgram]) -> Result<bool, ConfineError> {
    for prog in progs {
        if let Err(e) = load(prog, 0) {
            if e.raw_os_error() == Some(libc::EACCES) {
                return Ok(false);
            }
            return Err(ConfineError::Install(e));
        }
    }
    Ok(true)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)` on this thread: what the
/// kernel returns (a listener's fd with SECCOMP_FILTER_FLAG_NEW_LISTENER).
pub(super) fn load(prog: &BpfProgram, flags: libc::c_ulong) -> std::io::Result<libc::c_long> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        // seccompiler's sock_filter has the kernel's layout.
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the kernel copies the program; `prog` outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

fn default_set() -> CapsHashSet {
    DEFAULT_CAPS.iter().copied().collect()
}

/// Drops every capability outside the default set (and CAP_MKNOD with
/// `no_mknod`) from the bounding set, so no later `execve` (of a setuid or
/// file-capability program) regains one. Before `setuid`: dropping needs
/// CAP_SETPCAP.
pub(crate) fn limit_bounding_set(no_mknod: bool) -> Result<(), ConfineError> {
    let mut keep = default_set();
    if no_mknod {
        keep.remove(&Capability::CAP_MKNOD);
    }
    for cap in caps::all() {
        if keep.contains(&cap) {
            continue;
        }
        match caps::drop(None, CapSet::Bounding, cap) {
            Ok(()) => {}
            // A capability this kernel does not know.
            Err(_) if !caps::runtime::thread_all_supported().contains(&cap) => {}
            Err(source) => {
                return Err(ConfineError::Caps {
                    what: "dropping from the bounding set",
                    source,
                })
            }
        }
    }
    Ok(())
}

/// After `setuid`: root's effective and permitted sets are the bounding set
/// (a non-root user's are empty already), none is inheritable, and no ambient
/// capability passes `execve`.
pub(crate) fn set_process_caps(root: bool) -> Result<(), ConfineError> {
    let err = |what| move |source| ConfineError::Caps { what, source };
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).map_err(err("clearing ambient"))?;
    }
    if root {
        // The bounding set already holds only what may be kept.
        let keep = caps::read(None, CapSet::Bounding).map_err(err("reading bounding"))?;
        let have = caps::read(None, CapSet::Permitted).map_err(err("reading permitted"))?;
        let set: CapsHashSet = keep.intersection(&have).copied().collect();
        caps::set(None, CapSet::Effective, &set).map_err(err("setting effective"))?;
        caps::set(None, CapSet::Permitted, &set).map_err(err("setting permitted"))?;
        // Empty, as containerd leaves it since CVE-2022-24769.
        caps::clear(None, CapSet::Inheritable).map_err(err("clearing inheritable"))?;
    }
    Ok(())
}

/// Marks every descriptor above stderr close-on-exec, so the command starts
/// with stdin, stdout and stderr alone, as runc starts a container's process
/// (`CloseExecFrom(3)`): nothing the executor or whoever started it held open
/// (the helper's pipes, a CI runner's descriptors) reaches the step.
pub(crate) fn only_stdio_across_exec() -> Result<(), ConfineError> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets descriptor flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Before Linux 5.11, or under a seccomp profile without close_range: one
    // by one, as /proc lists them (the listing's own descriptor is gone by
    // then), or every number below the limit where /proc cannot be read.
    let fds: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2)
            .collect(),
        Err(_) => {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes the struct it is given.
            if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
                return Err(ConfineError::Descriptors(std::io::Error::last_os_error()));
            }
            (3..limit.rlim_cur.min(1 << 20) as i32).collect()
        }
    };
    for fd in fds {
        // SAFETY: F_SETFD on a number this process may or may not hold.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBADF) {
                return Err(ConfineError::Descriptors(e));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_machine() {
        let f = filters().unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn the_default_set_leaves_out_what_reaches_the_host() {
        let set = default_set();
        for cap in [
            Capability::CAP_SYS_ADMIN,
            Capability::CAP_DAC_READ_SEARCH,
            Capability::CAP_SYS_MODULE,
            Capability::CAP_SYS_PTRACE,
            Capability::CAP_SYS_RAWIO,
            Capability::CAP_NET_ADMIN,
            Capability::CAP_SYS_RESOURCE,
        ] {
            assert!(!set.contains(&cap), "{cap} must not be granted");
        }
        assert_eq!(set.len(), 14);
    }

    /// In a child process: the filter is installed for real (root in the
    /// test's own user namespace is not needed: no_new_privs stands in for
    /// CAP_SYS_ADMIN here) and the denied calls answer EPERM.
    #[test]
    fn denied_calls_answer_eperm() {
        // Compiled before fork: the child of a threaded process must not allocate.
        let progs = filters().unwrap();
        // SAFETY: the child only makes raw syscalls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: plain prctl.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let code = match install(&progs) {
                    Ok(true) => {
                        let errno = |rc: libc::c_long| {
                            (rc == -1)
                                .then(std::io::Error::last_os_error)
                                .and_then(|e| e.raw_os_error())
                        };
                        // SAFETY: arguments the kernel validates; each call is refused.
                        let handle =
                            errno(unsafe { libc::syscall(libc::SYS_open_by_handle_at, -1, 0, 0) });
                        let unshare =
                            errno(unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) });
                        let clone3 = errno(unsafe { libc::syscall(libc::SYS_clone3, 0, 0) });
                        let ok = handle == Some(libc::EPERM)
                            && unshare == Some(libc::EPERM)
                            && clone3 == Some(libc::ENOSYS);
                        if ok {
                            0
                        } else {
                            1
                        }
                    }
                    _ => 2,
                };
                // SAFETY: exit without running the test harness's atexit handlers.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }

    /// In a child process: a descriptor without close-on-exec gets it; the
    /// standard three keep theirs.
    #[test]
    fn only_stdio_crosses_exec() {
        // The child of this threaded harness must not allocate, so it must not
        // reach the /proc fallback: close_range (Linux 5.11) is required here.
        // SAFETY: an empty range; only flags would change.
        let probe = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                u32::MAX,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        assert_eq!(
            probe, 0,
            "this test needs close_range with CLOSE_RANGE_CLOEXEC (Linux 5.11)"
        );
        let cloexec = |fd: i32| {
            // SAFETY: F_GETFD reads one descriptor's flags.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            flags >= 0 && flags & libc::FD_CLOEXEC != 0
        };
        let null = c"/dev/null";
        // SAFETY: the child only makes raw syscalls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: a descriptor opened without O_CLOEXEC.
                let inherited = unsafe { libc::open(null.as_ptr(), libc::O_RDONLY) };
                let before = inherited > 2 && !cloexec(inherited);
                let done = only_stdio_across_exec().is_ok();
                let after = cloexec(inherited) && !(0..3).any(cloexec);
                // SAFETY: exit without running the test harness's atexit handlers.
                unsafe { libc::_exit(if before && done && after { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
