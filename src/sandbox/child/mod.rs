//! The sandbox helper: runs in a fresh, single-threaded process (the executor
//! re-executed with `__kiln-sandbox SPEC`), so `fork` is safe here. Errors are
//! printed and become exit codes; nothing here returns to the build.

use super::RunSpec;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::socket;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{chdir, execve, fork, pivot_root, ForkResult, Gid, Uid};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Exit code for a failure of the sandbox itself (not the command's).
const SETUP_FAILED: i32 = 125;

/// Entry point: `args` are what follows the helper argument.
pub fn main(args: &[std::ffi::OsString]) -> i32 {
    let Some(spec_file) = args.first() else {
        eprintln!("sandbox helper: no spec given");
        return SETUP_FAILED;
    };
    let probe = args.get(1).is_some_and(|a| a == "--probe");
    let spec: RunSpec = match std::fs::read(spec_file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sandbox helper: reading {spec_file:?}: {e}");
            return SETUP_FAILED;
        }
    };
    // The helper never outlives the executor that started it.
    if let Err(e) = die_with_parent(spec.parent) {
        eprintln!("sandbox helper: {e}");
        return SETUP_FAILED;
    }
    match enter(&spec, probe) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sandbox: {e}");
            SETUP_FAILED
        }
    }
}

/// SIGKILL when the parent ends; when `parent` is gone already (it died before
/// this was set), exit now. 0: no parent to check (the parent is outside this
/// pid namespace).
fn die_with_parent(parent: u32) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    let now = nix::unistd::getppid().as_raw() as u32;
    if parent != 0 && now != parent {
        return Err(format!(
            "the process that started this one ({parent}) is gone"
        ));
    }
    Ok(())
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

/// A setup failure with the probe exit code that names it.
struct Failed(i32, String);

impl From<String> for Failed {
    fn from(s: String) -> Failed {
        Failed(SETUP_FAILED, s)
    }
}

/// New namespaces and the overlay, then a child that is pid 1 of the new pid
/// namespace: when it exits, the kernel kills whatever the command left running.
fn enter(spec: &RunSpec, probe: bool) -> Result<i32, String> {
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
        return super::trace::run(spec);
    }
    if spec.in_place {
        return in_place(spec);
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if spec.network_none {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    // Root gets a user namespace whenever one can be made, on a host too: the
    // command's capabilities are then the namespace's, never the host's. Where
    // none can be made (user.max_user_namespaces=0 on a host), the namespaces
    // directly, with CAP_MKNOD dropped as well (a device node could reach a host
    // disk without a user namespace's nodev).
    let root = nix::unistd::geteuid().is_root();
    // Joined before anything forks, so the step's every process is counted.
    let _cgroup = (!probe).then(super::cgroup::StepCgroup::join).flatten();
    let in_userns = || {
        in_user_namespace(|| {
            unshare(flags).map_err(|e| Failed(PROBE_NO_NAMESPACES, format!("unshare: {e}")))?;
            in_namespaces(spec, probe, Confine::UserNamespace)
        })
    };
    let result = if root && user_namespaces_work() {
        in_userns()
    } else {
        match unshare(flags) {
            Ok(()) => in_namespaces(spec, probe, Confine::NoUserNamespace),
            // The probe's exit code then says the user namespace was refused.
            Err(nix::Error::EPERM) if root => in_userns(),
            Err(e) => Err(Failed(PROBE_NO_NAMESPACES, format!("unshare: {e}"))),
        }
    };
    match result {
        Ok(code) => Ok(code),
        Err(Failed(code, message)) if probe => {
            eprintln!("sandbox: {message}");
            Ok(code)
        }
        Err(Failed(_, message)) => Err(message),
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

/// Whether this process may make a user namespace (a throwaway child tries).
fn user_namespaces_work() -> bool {
    // SAFETY: single-threaded process (see `enter`); the child only unshares.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let ok = unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            // SAFETY: leave without running this process's exit handlers twice.
            unsafe { nix::libc::_exit(if ok { 0 } else { 1 }) }
        }
        Ok(ForkResult::Parent { child }) => wait_for(child).is_ok_and(|c| c == 0),
        Err(_) => false,
    }
}

/// `inside inside count` for each line of this process's own id map: the
/// identity over every id this namespace has.
fn identity_map(file: &str) -> Result<String, String> {
    let own = std::fs::read_to_string(format!("/proc/self/{file}"))
        .map_err(|e| format!("reading /proc/self/{file}: {e}"))?;
    let mut map = String::new();
    for line in own.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [inside, _, count] = f[..] {
            map.push_str(&format!("{inside} {inside} {count}\n"));
        }
    }
    Ok(map)
}

/// Runs `f` in a child process inside a new user namespace whose ids map to the
/// same ids outside; this process (root outside) writes the map.
fn in_user_namespace(f: impl FnOnce() -> Result<i32, Failed>) -> Result<i32, Failed> {
    use std::io::{Read, Write};
    let pipe = || -> Result<(std::fs::File, std::fs::File), Failed> {
        let (r, w) = nix::unistd::pipe().map_err(|e| Failed::from(format!("pipe: {e}")))?;
        Ok((std::fs::File::from(r), std::fs::File::from(w)))
    };
    let (mut ready_r, mut ready_w) = pipe()?;
    let (mut go_r, mut go_w) = pipe()?;
    // SAFETY: single-threaded process (see `enter`).
    match unsafe { fork() }.map_err(|e| Failed::from(format!("fork: {e}")))? {
        ForkResult::Child => {
            drop(ready_r);
            drop(go_w);
            let result = die_with_parent(0)
                .map_err(Failed::from)
                .and_then(|()| {
                    unshare(CloneFlags::CLONE_NEWUSER)
                        .map_err(|e| Failed(PROBE_NO_USER_NAMESPACE, format!("unshare(user): {e}")))
                })
                .and_then(|()| {
                    ready_w
                        .write_all(b"u")
                        .map_err(|e| Failed::from(format!("signalling the parent: {e}")))?;
                    let mut b = [0u8];
                    go_r.read_exact(&mut b).map_err(|_| {
                        Failed::from("the parent did not map the user namespace".to_string())
                    })?;
                    f()
                });
            std::process::exit(match result {
                Ok(code) => code,
                Err(Failed(code, message)) => {
                    eprintln!("sandbox: {message}");
                    code
                }
            });
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            let mut b = [0u8];
            if ready_r.read_exact(&mut b).is_ok() {
                for file in ["uid_map", "gid_map"] {
                    let p = format!("/proc/{child}/{file}");
                    let written = identity_map(file)
                        .and_then(|map| std::fs::write(&p, map).map_err(|e| e.to_string()));
                    if let Err(e) = written {
                        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                        let _ = wait_for(child);
                        return Err(Failed(PROBE_NO_ID_MAP, format!("writing {p}: {e}")));
                    }
                }
                let _ = go_w.write_all(b"g");
            }
            drop(go_w);
            Ok(wait_for(child)?)
        }
    }
}

/// The child's exit code (128 + signal when killed).
fn wait_for(child: nix::unistd::Pid) -> Result<i32, String> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("waiting for the command: {e}")),
        }
    }
}

/// In the new namespaces: the overlay, then the command as pid 1's child.
fn in_namespaces(spec: &RunSpec, probe: bool, confine: Confine) -> Result<i32, Failed> {
    // Nothing mounted here may reach the host's mount table.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    if spec.on_root {
        bind_root(&spec.lower, &spec.merged)?;
    } else if let Err(e) = mount_overlay(&spec.lower, &spec.upper, &spec.work, &spec.merged) {
        // An overlay's upper dir cannot sit on an overlay (a container's own
        // root): the stage's root itself can still be the command's root.
        if probe && bind_root(&spec.lower, &spec.merged).is_ok() {
            eprintln!("{e}");
            return Ok(PROBE_OWN_ROOT);
        }
        return Err(Failed(PROBE_NO_OVERLAY, e));
    }
    if probe {
        return Ok(0);
    }
    // Where the kernel refuses device nodes (a user namespace), they are made
    // for the command and recorded.
    let devices = confine != Confine::InPlace;
    Ok(command_in_child(spec, devices, |notify| {
        setup_and_exec(spec, confine, notify)
    })?)
}

/// The stage's root itself at `target`: the command writes to it, and the
/// parent reads the change by a walk (no overlay where the scratch dir is on one).
fn bind_root(root: &Path, target: &Path) -> Result<(), String> {
    mnt(root.to_str(), target, None, MsFlags::MS_BIND, None)
}

/// Mounts an overlay of `lower` at `target`, its writes in `upper`.
fn mount_overlay(lower: &Path, upper: &Path, work: &Path, target: &Path) -> Result<(), String> {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let overlay = |opts: &str| {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts),
        )
    };
    // userxattr first: in a user namespace a plain mount succeeds but cannot
    // write trusted.* xattrs, and then fails removing a lower directory (EIO).
    // volatile: the upper dir is scratch, so the sync of the whole upper
    // filesystem at unmount (1.5 s after unpacking a 600 MB base) buys nothing.
    // Kernels before 5.11 know neither option.
    if let Err(user) = overlay(&format!("{opts},userxattr,volatile")) {
        overlay(&opts).map_err(|e| {
            format!("mounting the overlay with userxattr,volatile: {user}; without: {e}")
        })?;
    }
    Ok(())
}

/// Forks; the child runs `exec` (which only returns with why the command could
/// not start), this process waits for it and returns its exit code.
/// The child is recorded in `spec.procs` while it runs: in a new pid namespace
/// it is the namespace's init, and killing it ends every process of the step.
fn command_in_child(
    spec: &RunSpec,
    devices: bool,
    exec: impl FnOnce(Option<OwnedFd>) -> Result<std::convert::Infallible, ExecError>,
) -> Result<i32, String> {
    // Opened before the fork: the child's pivot_root moves this process's root too.
    let records = spec
        .procs
        .as_deref()
        .and_then(|dir| crate::procs::Records::open(dir).ok());
    // Device nodes the kernel refuses here are made by this process (see
    // `devices`): the child sends its filter's listener over this socket.
    let notify = match (&spec.devices, devices) {
        (Some(file), true) => {
            let out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .map_err(|e| format!("opening {}: {e}", file.display()))?;
            // The host's /proc: the kernel names the step's processes by
            // their pids here, which the step's own /proc does not show.
            let proc = std::fs::File::open("/proc").map_err(|e| format!("opening /proc: {e}"))?;
            let (ours, theirs) = socket::socketpair(
                socket::AddressFamily::Unix,
                socket::SockType::Stream,
                None,
                socket::SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| format!("socketpair: {e}"))?;
            Some((out, proc, ours, theirs))
        }
        _ => None,
    };
    // SAFETY: this process is single-threaded (a fresh exec of the executor that
    // started no runtime), so the child may run any code.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(records);
            let theirs = notify.map(|(_, _, _, theirs)| theirs);
            let e = match die_with_parent(0)
                .map_err(setup)
                .and_then(|()| exec(theirs))
            {
                Ok(never) => match never {},
                Err(e) => e,
            };
            eprintln!("{e}");
            std::process::exit(e.code);
        }
        ForkResult::Parent { child } => {
            let record = records.as_ref().and_then(|r| r.record(child.as_raw()).ok());
            if let Some((out, proc, ours, theirs)) = notify {
                drop(theirs);
                // None when the child failed before it installed the filter.
                if let Some(listener) = receive_fd(&ours) {
                    super::devices::supervise(listener, &proc, out, child.as_raw());
                }
            }
            let code = wait_for(child);
            drop(record);
            code
        }
    }
}

/// One descriptor sent with SCM_RIGHTS; `None` when the peer closed first.
fn receive_fd(sock: &OwnedFd) -> Option<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(std::os::fd::RawFd);
    let msg = socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        if let socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just gave this process the descriptor.
            return fds.first().map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    None
}

/// Sends `fd` over `sock` with SCM_RIGHTS.
fn send_fd(sock: &OwnedFd, fd: &OwnedFd) -> Result<(), String> {
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"f")];
    socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[socket::ControlMessage::ScmRights(&fds)],
        socket::MsgFlags::empty(),
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("sending the device listener: {e}"))
}

/// The in-place rung (see `inplace`): no namespaces, the command runs in this
/// process's own root. This helper adopts whatever the command leaves running
/// (a child subreaper) and kills it when the command ends, as the end of a pid
/// namespace would.
fn in_place(spec: &RunSpec) -> Result<i32, String> {
    if !spec.mounts.is_empty() {
        return Err("RUN --mount: in place, the parent places mounts".into());
    }
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;
    // The heredoc script, under /dev (which the root keeps out of the layer).
    let mut made = Vec::new();
    for (target, source) in &spec.etc {
        if !target.starts_with("dev/") {
            return Err(format!(
                "/{target}: only files under /dev can be provided in place"
            ));
        }
        let path = Path::new("/").join(target);
        if let Some(parent) = path.parent() {
            ensure_dir(parent)?;
        }
        std::fs::copy(source, &path).map_err(|e| format!("writing {}: {e}", path.display()))?;
        made.push(path);
    }
    let code = command_in_child(spec, false, |_| exec_command(spec, Confine::InPlace, None));
    kill_adopted();
    for p in made {
        let _ = std::fs::remove_file(&p);
        if let Some(dir) = p.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    code
}

/// Kills and reaps every process this one adopted, until none is left (a
/// killed process's own children are adopted next).
fn kill_adopted() {
    let me = std::process::id().to_string();
    loop {
        let children = children_of(&me);
        if children.is_empty() {
            return;
        }
        for c in &children {
            let _ = nix::sys::signal::kill(*c, nix::sys::signal::Signal::SIGKILL);
        }
        for c in children {
            let _ = waitpid(c, None);
        }
    }
}

/// The processes whose parent is `pid`, from /proc.
fn children_of(pid: &str) -> Vec<nix::unistd::Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let n: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            (ppid == pid).then(|| nix::unistd::Pid::from_raw(n))
        })
        .collect()
}

/// A failure before the command ran, with the exit code to report.
struct ExecError {
    code: i32,
    message: String,
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn setup(message: String) -> ExecError {
    ExecError {
        code: SETUP_FAILED,
        message: format!("sandbox: {message}"),
    }
}

fn setup_and_exec(
    spec: &RunSpec,
    confine: Confine,
    notify: Option<OwnedFd>,
) -> Result<std::convert::Infallible, ExecError> {
    let root = &spec.merged;
    nix::unistd::sethostname(&spec.hostname).map_err(|e| setup(format!("sethostname: {e}")))?;
    // A `RUN --mount` at /dev/shm replaces the default one, as in BuildKit.
    let own_shm = spec
        .mounts
        .iter()
        .any(|m| m.target.trim_matches('/') == "dev/shm");
    mount_system_dirs(root, !own_shm).map_err(setup)?;
    for (target, source) in &spec.etc {
        // An image whose /etc is a link gets no such file rather than one outside it.
        if let Ok(target) = inside(root, target) {
            bind_file(source, &target).map_err(setup)?;
        }
    }
    run_mounts(root, &spec.mounts).map_err(setup)?;
    // pivot_root, not chroot: the old root is detached, so nothing can climb back.
    chdir(root).map_err(|e| setup(format!("chdir {}: {e}", root.display())))?;
    pivot_root(".", ".").map_err(|e| setup(format!("pivot_root: {e}")))?;
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| setup(format!("detaching the old root: {e}")))?;
    exec_command(spec, confine, notify)
}

/// In the command's root: the working directory, the seccomp filter, the
/// capabilities, the user, then the command.
fn exec_command(
    spec: &RunSpec,
    confine: Confine,
    notify: Option<OwnedFd>,
) -> Result<std::convert::Infallible, ExecError> {
    chdir("/").map_err(|e| setup(format!("chdir /: {e}")))?;
    // The working directory is made when missing, as runc makes it.
    std::fs::create_dir_all(&spec.cwd)
        .map_err(|e| setup(format!("creating the working directory {}: {e}", spec.cwd)))?;
    chdir(spec.cwd.as_str()).map_err(|e| setup(format!("chdir {}: {e}", spec.cwd)))?;
    // The filter needs CAP_SYS_ADMIN in this namespace, so it comes first; in
    // place that is not held and the container runtime's own profile applies.
    let filtered = super::confine::install_seccomp().map_err(|e| setup(e.to_string()))?;
    if !filtered && confine != Confine::InPlace {
        return Err(setup("the seccomp filter could not be installed".into()));
    }
    if let Some(sock) = notify {
        let prog = super::devices::filter()
            .map_err(|e| setup(format!("compiling the device filter: {e}")))?;
        // A kernel without user notifications (before 5.0) refuses the flag:
        // the step then runs without, and mknod of a device fails as it would.
        if let Ok(listener) = super::devices::install(&prog) {
            send_fd(&sock, &listener).map_err(setup)?;
        }
    }
    let bounded = super::confine::limit_bounding_set(confine == Confine::NoUserNamespace);
    // In place, a container started with fewer capabilities (no CAP_SETPCAP)
    // has a smaller set already.
    if let (Err(e), false) = (bounded, confine == Confine::InPlace) {
        return Err(setup(e.to_string()));
    }
    let groups: Vec<Gid> = spec.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(|e| setup(format!("setgroups: {e}")))?;
    nix::unistd::setgid(Gid::from_raw(spec.gid)).map_err(|e| setup(format!("setgid: {e}")))?;
    nix::unistd::setuid(Uid::from_raw(spec.uid)).map_err(|e| setup(format!("setuid: {e}")))?;
    super::confine::set_process_caps(spec.uid == 0).map_err(|e| setup(e.to_string()))?;
    // A change of user clears the parent-death signal: set it again.
    die_with_parent(0).map_err(setup)?;
    let program = spec.argv.first().ok_or_else(|| ExecError {
        code: 127,
        message: "RUN: no command given".into(),
    })?;
    let path = lookup(program, &spec.env).ok_or_else(|| ExecError {
        code: 127,
        message: format!("{program}: executable file not found in $PATH"),
    })?;
    let c = |s: &str| {
        CString::new(crate::pathname::to_bytes(s)).map_err(|_| ExecError {
            code: 127,
            message: format!("{s:?}: contains a NUL byte"),
        })
    };
    let argv = spec
        .argv
        .iter()
        .map(|a| c(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = spec
        .env
        .iter()
        .map(|a| c(a))
        .collect::<Result<Vec<_>, _>>()?;
    let path = c(&path)?;
    let e = execve(&path, &argv, &env).unwrap_err();
    Err(ExecError {
        code: if e == nix::Error::ENOENT { 127 } else { 126 },
        message: format!("{program}: {e}"),
    })
}

/// `name` as is when it has a slash, else the first executable match on the
/// command's own PATH (inside the root, after pivot_root).
fn lookup(name: &str, env: &[String]) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        return Some(name.to_string());
    }
    super::path_candidates(name, env).into_iter().find(|p| {
        std::fs::metadata(crate::pathname::to_path(p))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// `rel` under `root`, refused when an existing component is not a real
/// directory (or, for the last one, is a link): mounting through an image's
/// symlink would land on the host, which is still visible before pivot_root.
fn inside(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let mut p = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        if matches!(*part, "." | "..") {
            return Err(format!("/{rel}: not a clean path"));
        }
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "/{rel}: {} is a symbolic link in the image",
                    p.display()
                ))
            }
            Ok(m) if i + 1 < parts.len() && !m.is_dir() => {
                return Err(format!("/{rel}: a parent is not a directory"))
            }
            _ => {}
        }
    }
    Ok(p)
}

fn mnt(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(source, target, fstype, flags, data).map_err(|e| {
        format!(
            "mounting {} on {}: {e}",
            source.unwrap_or("-"),
            target.display()
        )
    })
}

fn ensure_dir(p: &Path) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(|e| format!("creating {}: {e}", p.display()))
}

/// A fresh /proc of the new pid namespace, a /dev with the host's harmless
/// nodes (the image's own are not trusted), a read-only /sys.
fn mount_system_dirs(root: &Path, shm: bool) -> Result<(), String> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = inside(root, "proc")?;
    ensure_dir(&proc_dir)?;
    if let Err(fresh) = mount(Some("proc"), &proc_dir, Some("proc"), nosuid, None::<&str>) {
        // Where /proc is partly masked (a container's), a new proc mount is
        // refused in a user namespace; a recursive bind keeps the masks.
        mount(
            Some("/proc"),
            &proc_dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("mounting proc: {fresh}; binding /proc: {e}"))?;
    }
    let dev = inside(root, "dev")?;
    ensure_dir(&dev)?;
    mnt(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        bind_file(&PathBuf::from("/dev").join(node), &dev.join(node))?;
    }
    let pts = dev.join("pts");
    ensure_dir(&pts)?;
    mnt(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    if shm {
        let shm = dev.join("shm");
        ensure_dir(&shm)?;
        mnt(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            nosuid,
            Some("mode=1777,size=65536k"),
        )?;
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .map_err(|e| format!("linking /dev/{link}: {e}"))?;
    }
    let sys = inside(root, "sys")?;
    ensure_dir(&sys)?;
    mnt(
        Some("/sys"),
        &sys,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    // A remount in a user namespace must keep the flags the mount is locked with.
    mnt(
        None,
        &sys,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nosuid | locked_flags("/sys"),
        None,
    )?;
    // The host's mounts under /sys (cgroup, securityfs, debugfs, bpf…) came
    // along writable: each read-only too, as runc mounts them.
    for sub in mounts_under(&sys)? {
        let locked = sub.to_str().map(locked_flags).unwrap_or(MsFlags::empty());
        mnt(
            None,
            &sub,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked,
            None,
        )?;
    }
    mask_and_freeze(root)
}

/// The mount points strictly below `dir`, from this process's mountinfo.
fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let mut out = Vec::new();
    for line in info.lines() {
        let Some(point) = line.split(' ').nth(4) else {
            continue;
        };
        let point = PathBuf::from(crate::pathname::unescape_octal(point));
        if point != dir && point.starts_with(dir) && !out.contains(&point) {
            out.push(point);
        }
    }
    Ok(out)
}

/// runc's masked paths: files the host's /dev/null hides, directories an
/// empty read-only tmpfs; paths a kernel lacks are left alone.
const MASKED: [&str; 12] = [
    "proc/acpi",
    "proc/asound",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/sched_debug",
    "proc/scsi",
    "proc/timer_list",
    "proc/timer_stats",
    "sys/devices/virtual/powercap",
    "sys/firmware",
];

/// runc's read-only paths.
const READ_ONLY: [&str; 5] = [
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Masks and freezes what runc's default spec does, under `root`'s /proc and
/// /sys (so both are mounted first). The command gets no capability to undo
/// it, and its seccomp filter refuses mount calls.
fn mask_and_freeze(root: &Path) -> Result<(), String> {
    for rel in READ_ONLY {
        let p = root.join(rel);
        if std::fs::symlink_metadata(&p).is_err() {
            continue;
        }
        mnt(
            p.to_str(),
            &p,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        let locked = p.to_str().map(locked_flags).unwrap_or(MsFlags::empty());
        mnt(
            None,
            &p,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked,
            None,
        )?;
    }
    for rel in MASKED {
        let p = root.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => mnt(
                Some("tmpfs"),
                &p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )?,
            Ok(_) => mnt(Some("/dev/null"), &p, None, MsFlags::MS_BIND, None)?,
            Err(_) => {}
        }
    }
    Ok(())
}

/// `RUN --mount`s over the root, parents first; a missing mount point is made
/// (a directory, or an empty file for a file source), and the parent removes
/// it from the step's change afterwards.
fn run_mounts(root: &Path, mounts: &[super::Mount]) -> Result<(), String> {
    use super::MountWhat;
    let mut order: Vec<&super::Mount> = mounts.iter().collect();
    order.sort_by_key(|m| m.target.split('/').filter(|c| !c.is_empty()).count());
    for m in order {
        let target = inside(root, &m.target)?;
        let file_source = match &m.what {
            MountWhat::Bind { source, .. } => !source.is_dir(),
            MountWhat::Secret { .. } => true,
            _ => false,
        };
        if std::fs::symlink_metadata(&target).is_err() {
            if file_source {
                if let Some(parent) = target.parent() {
                    ensure_dir(parent)?;
                }
                std::fs::write(&target, b"")
                    .map_err(|e| format!("creating {}: {e}", target.display()))?;
            } else {
                ensure_dir(&target)?;
            }
        }
        match &m.what {
            MountWhat::Bind { source, readonly } => {
                mnt(
                    source.to_str(),
                    &target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                if *readonly {
                    // A remount in a user namespace must keep the source's locked flags.
                    let locked = source
                        .to_str()
                        .map(locked_flags)
                        .unwrap_or(MsFlags::empty());
                    mnt(
                        None,
                        &target,
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked,
                        None,
                    )?;
                }
            }
            MountWhat::Overlay { lower, upper, work } => {
                mount_overlay(lower, upper, work, &target)?;
            }
            MountWhat::Secret {
                source,
                mode,
                uid,
                gid,
            } => {
                let copy = secret_copy(source, *mode, *uid, *gid)?;
                mnt(copy.to_str(), &target, None, MsFlags::MS_BIND, None)?;
                mnt(
                    None,
                    &target,
                    None,
                    MsFlags::MS_BIND
                        | MsFlags::MS_REMOUNT
                        | MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    None,
                )?;
            }
            MountWhat::Tmpfs { size } => {
                let mut data = "mode=1777".to_string();
                if let Some(s) = size {
                    data.push_str(&format!(",size={s}"));
                }
                mnt(
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(&data),
                )?;
            }
        }
    }
    Ok(())
}

/// A secret's file with the step's mode and owner, in a tmpfs mounted in this
/// mount namespace only (beside the 0400 host copy, in its 0700 directory):
/// the host never holds the secret under `mode=`.
fn secret_copy(source: &Path, mode: u32, uid: u32, gid: u32) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let value = std::fs::read(source).map_err(|e| format!("reading {}: {e}", source.display()))?;
    let view = source.with_extension("view");
    ensure_dir(&view)?;
    mnt(
        Some("tmpfs"),
        &view,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )?;
    let file = view.join("secret");
    let err = |e: std::io::Error| format!("writing {}: {e}", file.display());
    std::fs::write(&file, value).map_err(err)?;
    std::os::unix::fs::chown(&file, Some(uid), Some(gid)).map_err(err)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(file)
}

/// The flags of the mount at `p` that a remount in a user namespace may not
/// drop: atime, nosuid, nodev, noexec.
fn locked_flags(p: &str) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(st) = statvfs(p) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut m = MsFlags::empty();
    for (s, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(s) {
            m |= ms;
        }
    }
    m
}

/// Bind-mounts a file, making the mount point (an empty file) when missing.
fn bind_file(source: &Path, target: &Path) -> Result<(), String> {
    if std::fs::symlink_metadata(target).is_err() {
        if let Some(parent) = target.parent() {
            ensure_dir(parent)?;
        }
        std::fs::write(target, b"").map_err(|e| format!("creating {}: {e}", target.display()))?;
    }
    mnt(source.to_str(), target, None, MsFlags::MS_BIND, None)
}
