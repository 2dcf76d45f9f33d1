//! The traced rung: RUN where no namespace can be made and the executor is
//! not root (a Pod under Pod Security "restricted", OpenShift's
//! restricted-v2, a host user without subuids). The command runs as the
//! executor's own uid under this helper, which is its ptrace supervisor: a
//! seccomp filter stops only the calls that matter (SECCOMP_RET_TRACE), and
//! the supervisor
//! - gives the command the stage's root as `/` ([`paths`]): every path
//!   argument is resolved inside the root and replaced by the host path it
//!   stands for; `execve` starts a script's interpreter or a program's loader
//!   from inside the root ([`exec`]);
//! - shows it root: the identity calls answer what USER says, `set*id`
//!   succeed on that emulated identity, `chown` and device `mknod` are
//!   remembered ([`owners`]) and `stat` answers from that table;
//! - keeps it to its own processes: signals, pidfds and /proc entries of any
//!   other process are refused, and ptrace, process_vm_* and io_uring (which
//!   would open paths behind the tracer's back) are denied by the filter.
//!
//! This confines by path translation, not by a kernel boundary: the command
//! has the executor's uid and the container's network, and a command that
//! races its own threads against the tracer's rewrite could reach a path it
//! did not resolve (docs/architecture.md says what that means where).

mod answers;
mod calls;
mod exec;
mod filter;
mod made;
mod mem;
pub(crate) mod owners;
mod paths;
mod supervise;
pub(crate) mod touched;

use super::RunSpec;
use mem::Regs;
use nix::errno::Errno;
use nix::libc;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use paths::{Fs, Procs};
use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The identity the command is shown (real, effective, saved, fs).
#[derive(Clone, Debug)]
struct Ids {
    uid: [u32; 4],
    gid: [u32; 4],
    groups: Vec<u32>,
}

impl Ids {
    fn new(uid: u32, gid: u32, groups: Vec<u32>) -> Ids {
        Ids {
            uid: [uid; 4],
            gid: [gid; 4],
            groups,
        }
    }
}

#[derive(Clone)]
struct Thread {
    tgid: i32,
    ids: Ids,
    /// Its scratch mapping's address; `None` until first needed, and again
    /// after an exec (a new address space).
    scratch: Option<u64>,
    /// The program an `execve` in flight will run (its guest path).
    exec: Option<Vec<u8>>,
}

/// What a handled call does next.
enum Outcome {
    /// The kernel makes the call, with whatever arguments were rewritten.
    Continue,
    /// The call is skipped and returns this (a negative errno on failure).
    Return(i64),
}

struct Tracer {
    fs: Fs,
    threads: HashMap<i32, Thread>,
    /// Program run by each process of the step (for /proc/PID/exe).
    exes: HashMap<i32, Vec<u8>>,
    /// New threads whose parent's event came first: their state, until their
    /// first stop.
    born: HashMap<i32, Thread>,
    /// New threads that stopped before their parent's event named them.
    early: HashSet<i32>,
    /// The step's first process ended: whatever appears now is killed (a
    /// fork the killed processes were making).
    ending: bool,
    owners: owners::Owners,
    loaders: HashMap<PathBuf, bool>,
    devices: Vec<super::devices::Device>,
    /// Device nodes standing as empty files: (S_IFCHR or S_IFBLK, rdev).
    nodes: HashMap<owners::Inode, (u32, u64)>,
    /// The paths the step changes, for the parent's read of its change.
    touched: touched::Touched,
}

impl Procs for Tracer {
    fn tgid_of(&self, tid: i32) -> Option<i32> {
        self.threads.get(&tid).map(|t| t.tgid)
    }

    fn exe(&self, tgid: i32) -> Option<Vec<u8>> {
        self.exes.get(&tgid).cloned()
    }
}

/// The exit code of a command the tracer could not start.
const SETUP_FAILED: i32 = 125;

/// Runs the command of `spec` traced; its exit code (128 + signal when killed).
pub(crate) fn run(spec: &RunSpec) -> Result<i32, String> {
    let root = spec.lower.clone();
    let private = spec.work.clone();
    let mut binds: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    // Mount points are made where missing, as the namespace rungs make them
    // (the parent takes them out of the root again); an image whose path runs
    // through a symlink gets no such bind, as there.
    for (target, host) in &spec.etc {
        if mount_point(&root, target, false) {
            binds.push((guest_of(target), host.clone()));
        }
    }
    let own_shm = spec
        .mounts
        .iter()
        .any(|m| m.target.trim_matches('/') == "dev/shm");
    if !own_shm {
        let shm = private.join("shm");
        make_private_dir(&shm)?;
        binds.push((b"/dev/shm".to_vec(), shm));
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        let host = match &m.what {
            super::MountWhat::Bind { source, .. } => source.clone(),
            super::MountWhat::Secret { source, .. } => source.clone(),
            super::MountWhat::Tmpfs { .. } => {
                let d = private.join(format!("tmpfs-{i}"));
                make_private_dir(&d)?;
                d
            }
            super::MountWhat::Overlay { lower, .. } => {
                // A writable view discarded after the step: a copy.
                let d = private.join(format!("rw-{i}"));
                copy_tree(lower, &d).map_err(|e| format!("copying {}: {e}", lower.display()))?;
                d
            }
        };
        if !mount_point(&root, &m.target, host.is_dir()) {
            return Err(format!("/{}: a symbolic link in the image", m.target));
        }
        binds.push((guest_of(&m.target), host));
    }
    let fs = Fs::new(root.clone(), binds);
    let real = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    // Ids are emulated as root too (setting A): a step's USER never becomes a
    // real uid, which could not reach the stage's root inside the 0700
    // scratch dir; owners are then the table's, as for a non-root executor.
    let mut tracer = Tracer {
        fs,
        threads: HashMap::new(),
        exes: HashMap::new(),
        born: HashMap::new(),
        early: HashSet::new(),
        ending: false,
        owners: owners::Owners::new(real),
        loaders: HashMap::new(),
        devices: Vec::new(),
        nodes: HashMap::new(),
        touched: touched::Touched::default(),
    };
    for (path, uid, gid) in &spec.owners_seed {
        if let Ok(m) = std::fs::symlink_metadata(root.join(crate::pathname::to_path(path))) {
            use std::os::unix::fs::MetadataExt;
            tracer
                .owners
                .set((m.dev(), m.ino()), *uid, *gid, owners::born(&m));
        }
    }
    // The mount points a namespace rung makes (and BuildKit's layer keeps).
    for dir in ["proc", "dev", "sys"] {
        let p = root.join(dir);
        tracer.touched.touch(&p);
        if std::fs::symlink_metadata(&p).is_err() {
            std::fs::create_dir(&p).map_err(|e| format!("creating /{dir}: {e}"))?;
        }
    }
    // The working directory is made when missing, as runc makes it.
    let cwd_guest = guest_of(&spec.cwd);
    let cwd = tracer
        .fs
        .resolve(&tracer, 0, b"/", &cwd_guest, true)
        .map_err(|e| format!("the working directory {}: {e}", spec.cwd))?;
    touch_missing(&mut tracer.touched, &cwd.host);
    std::fs::create_dir_all(&cwd.host)
        .map_err(|e| format!("creating the working directory {}: {e}", spec.cwd))?;
    let program = spec.argv.first().ok_or("RUN: no command given")?;
    let Some(path) = tracer.lookup(program, &spec.env, &cwd.guest) else {
        eprintln!("{program}: executable file not found in $PATH");
        return Ok(127);
    };
    let c = |b: &[u8]| {
        CString::new(b)
            .map_err(|_| format!("{:?}: contains a NUL byte", String::from_utf8_lossy(b)))
    };
    let argv = spec
        .argv
        .iter()
        .map(|a| c(crate::pathname::to_bytes(a).as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let env = spec
        .env
        .iter()
        .map(|a| c(crate::pathname::to_bytes(a).as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let path = c(&path)?;
    let filters = filter::filters().map_err(|e| e.to_string())?;
    // Orphans of the step come to this helper, which reaps them, not to the
    // executor (pid 1 of a container), which would keep their zombies.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;
    let ids = Ids::new(spec.uid, spec.gid, spec.groups.clone());
    // SAFETY: the helper is single-threaded; the child only makes syscalls
    // before execve.
    let child = match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            let code = start_child(&cwd.host, &filters, (&path, &argv, &env));
            // SAFETY: leaving the forked child without running the parent's atexit.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    match waitpid(child, Some(WaitPidFlag::__WALL)) {
        Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => {}
        Ok(WaitStatus::Exited(_, code)) => return Ok(code),
        other => return Err(format!("the traced command did not start: {other:?}")),
    }
    ptrace::setoptions(
        child,
        ptrace::Options::PTRACE_O_TRACESECCOMP
            | ptrace::Options::PTRACE_O_TRACEFORK
            | ptrace::Options::PTRACE_O_TRACEVFORK
            | ptrace::Options::PTRACE_O_TRACECLONE
            | ptrace::Options::PTRACE_O_TRACEEXEC
            | ptrace::Options::PTRACE_O_EXITKILL
            | ptrace::Options::PTRACE_O_TRACESYSGOOD,
    )
    .map_err(|e| format!("ptrace options: {e}"))?;
    tracer.threads.insert(
        child.as_raw(),
        Thread {
            tgid: child.as_raw(),
            ids,
            scratch: None,
            exec: None,
        },
    );
    ptrace::cont(child, None).map_err(|e| format!("ptrace: {e}"))?;
    let code = tracer.supervise(child.as_raw());
    if let Some(f) = &spec.owners {
        tracer
            .owners
            .save(f)
            .map_err(|e| format!("writing {}: {e}", f.display()))?;
    }
    if let Some(f) = &spec.touched {
        tracer
            .touched
            .save(f, &root)
            .map_err(|e| format!("writing {}: {e}", f.display()))?;
    }
    if let Some(f) = &spec.devices {
        use std::io::Write;
        let mut out =
            std::fs::File::create(f).map_err(|e| format!("writing {}: {e}", f.display()))?;
        for d in &tracer.devices {
            out.write_all(d.line().as_bytes())
                .map_err(|e| format!("writing {}: {e}", f.display()))?;
        }
    }
    Ok(code)
}

/// The directories `create_dir_all` is about to make for `host`.
fn touch_missing(touched: &mut touched::Touched, host: &Path) {
    let mut p = Some(host);
    while let Some(d) = p {
        if std::fs::symlink_metadata(d).is_ok() {
            break;
        }
        touched.touch(d);
        p = d.parent();
    }
}

/// The child: its own session, traced from here on, the filters, then the
/// command (whose execve the supervisor already rewrites).
fn start_child(
    cwd: &Path,
    filters: &[seccompiler::BpfProgram],
    (path, argv, env): (&CString, &[CString], &[CString]),
) -> i32 {
    let _ = nix::unistd::setsid();
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if let Err(e) = nix::unistd::chdir(cwd) {
        eprintln!("sandbox: chdir {}: {e}", cwd.display());
        return SETUP_FAILED;
    }
    if let Err(e) = ptrace::traceme() {
        eprintln!("sandbox: PTRACE_TRACEME: {e}");
        return SETUP_FAILED;
    }
    if nix::sys::signal::raise(Signal::SIGSTOP).is_err() {
        return SETUP_FAILED;
    }
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        eprintln!(
            "sandbox: PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        );
        return SETUP_FAILED;
    }
    // Before the filters: under them, its /proc read (where close_range is
    // refused) would stop for the tracer, whose root rewrites the path.
    if let Err(e) = super::confine::only_stdio_across_exec() {
        eprintln!("sandbox: {e}");
        return SETUP_FAILED;
    }
    for f in filters {
        if let Err(e) = super::confine::load(f, 0) {
            eprintln!("sandbox: installing the seccomp filter: {e}");
            return SETUP_FAILED;
        }
    }
    let e = nix::unistd::execve(path, argv, env).unwrap_err();
    eprintln!("{}: {e}", path.to_string_lossy());
    if e == Errno::ENOENT {
        127
    } else {
        126
    }
}

/// Makes `rel`'s missing components under `root` (the last a directory or
/// an empty file), never through a symlink; false where one stands.
fn mount_point(root: &Path, rel: &str, dir: bool) -> bool {
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    // The container's own /dev, /proc and /sys: the bind stands on its own.
    if matches!(parts.first(), Some(&("dev" | "proc" | "sys"))) {
        return true;
    }
    let mut p = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        if matches!(*part, "." | "..") {
            return false;
        }
        p.push(crate::pathname::to_path(part));
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return false,
            Ok(m) if !last && !m.is_dir() => return false,
            Ok(_) => {}
            Err(_) if last && !dir => {
                if std::fs::write(&p, b"").is_err() {
                    return false;
                }
            }
            Err(_) => {
                if std::fs::create_dir(&p).is_err() {
                    return false;
                }
            }
        }
    }
    true
}

fn guest_of(target: &str) -> Vec<u8> {
    let mut g = b"/".to_vec();
    g.extend_from_slice(crate::pathname::to_bytes(target.trim_start_matches('/')).as_ref());
    g
}

/// A directory standing for a tmpfs: 1777 as a tmpfs mount is, under the
/// step's own 0700 dir.
fn make_private_dir(d: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(d)
        .and_then(|()| std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o1777)))
        .map_err(|e| format!("creating {}: {e}", d.display()))
}

/// A plain recursive copy (files, directories, symlinks) for a writable
/// mount's private view.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let m = std::fs::symlink_metadata(from)?;
    if m.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)
    } else if m.is_dir() {
        std::fs::create_dir_all(to)?;
        std::fs::set_permissions(to, m.permissions())?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else if m.is_file() {
        std::fs::copy(from, to).map(|_| ())
    } else {
        Ok(())
    }
}

impl Tracer {
    /// `name` when it has a slash, else the first executable match on the
    /// command's PATH, looked up inside the root.
    fn lookup(&self, name: &str, env: &[String], cwd: &[u8]) -> Option<Vec<u8>> {
        use std::os::unix::fs::PermissionsExt;
        if name.contains('/') {
            return Some(crate::pathname::to_bytes(name).to_vec());
        }
        super::path_candidates(name, env).into_iter().find_map(|p| {
            let p = crate::pathname::to_bytes(&p).to_vec();
            let r = self.fs.resolve(self, 0, cwd, &p, true).ok()?;
            let m = std::fs::metadata(&r.host).ok()?;
            (m.is_file() && m.permissions().mode() & 0o111 != 0).then_some(p)
        })
    }
}

/// Whether this process may trace a child of its own under a seccomp filter
/// that asks for it (the traced rung's requirements); the error says what
/// refused.
pub(crate) fn probe() -> Result<(), String> {
    let filters = filter::probe_filter().map_err(|e| e.to_string())?;
    // SAFETY: the helper is single-threaded.
    let child = match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            if ptrace::traceme().is_err() || nix::sys::signal::raise(Signal::SIGSTOP).is_err() {
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(2) }
            }
            // SAFETY: plain prctl and syscall.
            let code = unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || super::confine::load(&filters, 0).is_err()
                {
                    3
                } else if libc::syscall(libc::SYS_getppid) == 4242 {
                    0
                } else {
                    4
                }
            };
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    let fail = |why: String| {
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        Err(why)
    };
    match waitpid(child, Some(WaitPidFlag::__WALL)) {
        Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => {}
        Ok(WaitStatus::Exited(_, 2)) => return Err("ptrace is denied here (PTRACE_TRACEME)".into()),
        other => return fail(format!("ptrace is denied here ({other:?})")),
    }
    if let Err(e) = ptrace::setoptions(
        child,
        ptrace::Options::PTRACE_O_TRACESECCOMP | ptrace::Options::PTRACE_O_EXITKILL,
    ) {
        return fail(format!("ptrace is denied here (PTRACE_SETOPTIONS: {e})"));
    }
    let _ = ptrace::cont(child, None);
    loop {
        match waitpid(child, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(pid, _, libc::PTRACE_EVENT_SECCOMP)) => {
                if let Ok(mut r) = Regs::get(pid) {
                    r.skip(4242);
                    let _ = r.set(pid);
                }
                let _ = ptrace::cont(pid, None);
            }
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(WaitStatus::Exited(_, 3)) => {
                return Err("a seccomp filter cannot be installed here".into())
            }
            Ok(WaitStatus::Exited(_, c)) => {
                return Err(format!(
                    "the tracer's seccomp stop did not arrive (exit {c})"
                ))
            }
            Ok(WaitStatus::Stopped(pid, sig)) => {
                let _ = ptrace::cont(pid, Some(sig));
            }
            Ok(other) => return fail(format!("tracing failed: {other:?}")),
            Err(e) => return Err(format!("tracing failed: {e}")),
        }
    }
}

/// The host path of a file the step names by its thread's fd.
fn fd_link(tid: i32, fd: i32) -> PathBuf {
    PathBuf::from(format!("/proc/{tid}/fd/{fd}"))
}

fn host_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}
