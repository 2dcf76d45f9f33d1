//! The traced command's seccomp filters: the namespace rung's deny list
//! ([`super::super::confine`]), the calls that would act behind the tracer's
//! back (another process's memory, io_uring's own path lookups, `openat2`
//! and the newest `*at` calls whose arguments it does not rewrite), and the
//! calls that stop for the tracer (SECCOMP_RET_TRACE); everything else runs
//! at full speed.

use nix::libc;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule};
use std::collections::BTreeMap;

/// Denied with EPERM: reaching another process or leaving the root.
const DENIED: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_pidfd_getfd,
    libc::SYS_chroot,
];

/// Answered ENOSYS, so libc falls back to a call the tracer rewrites.
const UNSUPPORTED: &[i64] = &[
    libc::SYS_openat2,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    // setxattrat, getxattrat, listxattrat, removexattrat (6.13),
    // open_tree_attr (6.15), file_getattr, file_setattr (6.17).
    463,
    464,
    465,
    466,
    467,
    468,
    469,
];

/// Calls whose paths are rewritten or whose answers come from the tracer.
const TRACED: &[i64] = &[
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_creat,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_rmdir,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_chmod,
    // fchmod and fremovexattr only to record the file they change.
    libc::SYS_fchmod,
    libc::SYS_fremovexattr,
    libc::SYS_fchmodat,
    libc::SYS_fchmodat2,
    libc::SYS_truncate,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_utimensat,
    libc::SYS_futimesat,
    libc::SYS_statfs,
    libc::SYS_chdir,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_inotify_add_watch,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_bind,
    libc::SYS_connect,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_getcwd,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_kill,
    libc::SYS_tkill,
    libc::SYS_tgkill,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_pidfd_open,
];

/// The identity calls, answered by the tracer.
const IDENTITY: &[i64] = &[
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    libc::SYS_setgroups,
    libc::SYS_capget,
    libc::SYS_capset,
    // For security.capability, which an unprivileged process may not set
    // (and fsetxattr to record the file it changes).
    libc::SYS_fsetxattr,
    libc::SYS_fgetxattr,
];

#[derive(Debug, thiserror::Error)]
#[error("compiling the tracer's seccomp filter: {0}")]
pub(crate) struct FilterError(String);

fn compile(calls: &[i64], action: SeccompAction) -> Result<BpfProgram, FilterError> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| FilterError(e.to_string()))?;
    let rules: BTreeMap<i64, Vec<SeccompRule>> = calls.iter().map(|&nr| (nr, Vec::new())).collect();
    SeccompFilter::new(rules, SeccompAction::Allow, action, arch)
        .and_then(BpfProgram::try_from)
        .map_err(|e| FilterError(e.to_string()))
}

/// The filters, in the order they are installed (the kernel applies the
/// strictest answer of all, so a denied call never stops for the tracer).
pub(super) fn filters() -> Result<Vec<BpfProgram>, FilterError> {
    let mut progs = super::super::confine::filters().map_err(|e| FilterError(e.to_string()))?;
    progs.push(compile(DENIED, SeccompAction::Errno(libc::EPERM as u32))?);
    progs.push(compile(
        UNSUPPORTED,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )?);
    let mut traced = TRACED.to_vec();
    traced.extend_from_slice(IDENTITY);
    progs.push(compile(&traced, SeccompAction::Trace(0))?);
    Ok(progs)
}

/// The probe's filter: getppid stops for the tracer.
pub(super) fn probe_filter() -> Result<BpfProgram, FilterError> {
    compile(&[libc::SYS_getppid], SeccompAction::Trace(0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filters_compile() {
        assert!(super::filters().unwrap().len() >= 4);
    }
}
