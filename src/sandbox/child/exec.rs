//! The command's process: its root entered, then confined, then replaced by
//! the command; and the in-place rung, which runs it in this process's root.

use super::fds::send_fd;
use super::mounts::{bind_file, ensure_dir, inside};
use super::process::{command_in_child, die_with_parent};
use super::run_mounts::run_mounts;
use super::sys::Syscalls;
use super::system_dirs::mount_system_dirs;
use super::{ChildError, Confine};
use crate::sandbox::{confine, devices, RunSpec};
use nix::mount::MntFlags;
use nix::unistd::{Gid, Uid};
use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::Path;

/// In the new namespaces' forked init: the command's root, then the command.
pub(super) fn setup_and_exec(
    sys: &dyn Syscalls,
    spec: &RunSpec,
    how: Confine,
    notify: Option<OwnedFd>,
) -> Result<Infallible, ChildError> {
    enter_root(sys, spec)?;
    exec_command(sys, spec, how, notify)
}

/// The hostname, the system dirs, the /etc files and `RUN --mount`s over the
/// merged root, which then becomes this process's root.
fn enter_root(sys: &dyn Syscalls, spec: &RunSpec) -> Result<(), ChildError> {
    let root = &spec.merged;
    sys.sethostname(&spec.hostname)
        .map_err(ChildError::Hostname)?;
    // A `RUN --mount` at /dev/shm replaces the default one, as in BuildKit.
    let own_shm = spec
        .mounts
        .iter()
        .any(|m| m.target.trim_matches('/') == "dev/shm");
    mount_system_dirs(sys, root, !own_shm)?;
    for (target, source) in &spec.etc {
        // An image whose /etc is a link gets no such file rather than one outside it.
        if let Ok(target) = inside(root, target) {
            bind_file(sys, source, &target)?;
        }
    }
    run_mounts(sys, root, &spec.mounts)?;
    // pivot_root, not chroot: the old root is detached, so nothing can climb back.
    sys.chdir(root).map_err(|source| ChildError::Chdir {
        dir: root.clone(),
        source,
    })?;
    let here = Path::new(".");
    sys.pivot_root(here, here).map_err(ChildError::PivotRoot)?;
    sys.umount(here, MntFlags::MNT_DETACH)
        .map_err(ChildError::DetachOldRoot)
}

/// In the command's root: the working directory, the seccomp filter, the
/// capabilities, the user, then the command.
fn exec_command(
    sys: &dyn Syscalls,
    spec: &RunSpec,
    how: Confine,
    notify: Option<OwnedFd>,
) -> Result<Infallible, ChildError> {
    let chdir = |dir: &Path| {
        sys.chdir(dir).map_err(|source| ChildError::Chdir {
            dir: dir.to_path_buf(),
            source,
        })
    };
    chdir(Path::new("/"))?;
    // The working directory is made when missing, as runc makes it.
    std::fs::create_dir_all(&spec.cwd).map_err(|source| ChildError::Workdir {
        dir: spec.cwd.clone(),
        source,
    })?;
    chdir(Path::new(&spec.cwd))?;
    restrict(sys, spec, how, notify)?;
    exec(sys, spec)
}

/// The seccomp filter (and the device filter's listener sent to the helper),
/// the capabilities and the command's ids.
fn restrict(
    sys: &dyn Syscalls,
    spec: &RunSpec,
    how: Confine,
    notify: Option<OwnedFd>,
) -> Result<(), ChildError> {
    // The filter needs CAP_SYS_ADMIN in this namespace, so it comes first; in
    // place that is not held and the container runtime's own profile applies.
    let filtered = confine::install_seccomp()?;
    if !filtered && how != Confine::InPlace {
        return Err(ChildError::NoSeccomp);
    }
    if let Some(sock) = notify {
        let prog = devices::filter().map_err(ChildError::DeviceFilter)?;
        // A kernel without user notifications (before 5.0) refuses the flag:
        // the step then runs without, and mknod of a device fails as it would.
        if let Ok(listener) = devices::install(&prog) {
            send_fd(&sock, &listener)?;
        }
    }
    let bounded = confine::limit_bounding_set(how == Confine::NoUserNamespace);
    // In place, a container started with fewer capabilities (no CAP_SETPCAP)
    // has a smaller set already.
    if let (Err(e), false) = (bounded, how == Confine::InPlace) {
        return Err(e.into());
    }
    let ids = |call| move |source| ChildError::Ids { call, source };
    let groups: Vec<Gid> = spec.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    sys.setgroups(&groups).map_err(ids("setgroups"))?;
    sys.setgid(Gid::from_raw(spec.gid)).map_err(ids("setgid"))?;
    sys.setuid(Uid::from_raw(spec.uid)).map_err(ids("setuid"))?;
    confine::set_process_caps(spec.uid == 0)?;
    // A change of user clears the parent-death signal: set it again.
    die_with_parent(0)
}

/// The command, looked up on its PATH.
fn exec(sys: &dyn Syscalls, spec: &RunSpec) -> Result<Infallible, ChildError> {
    let program = spec.argv.first().ok_or(ChildError::NoCommand)?;
    let path = lookup(program, &spec.env).ok_or_else(|| ChildError::NotFound {
        program: program.clone(),
    })?;
    let c = |s: &String| {
        CString::new(crate::pathname::to_bytes(s)).map_err(|_| ChildError::Nul { arg: s.clone() })
    };
    let argv = spec.argv.iter().map(c).collect::<Result<Vec<_>, _>>()?;
    let env = spec.env.iter().map(c).collect::<Result<Vec<_>, _>>()?;
    let path = c(&path)?;
    sys.only_stdio_across_exec()?;
    let Err(source) = sys.execve(&path, &argv, &env);
    Err(ChildError::Exec {
        program: program.clone(),
        source,
    })
}

/// `name` as is when it has a slash, else the first executable match on the
/// command's own PATH (inside the root, after pivot_root).
fn lookup(name: &str, env: &[String]) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        return Some(name.to_string());
    }
    crate::sandbox::path_candidates(name, env)
        .into_iter()
        .find(|p| {
            std::fs::metadata(crate::pathname::to_path(p))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The in-place rung (see `inplace`): no namespaces, the command runs in this
/// process's own root. This helper adopts whatever the command leaves running
/// (a child subreaper) and kills it when the command ends, as the end of a pid
/// namespace would.
pub(super) fn in_place(sys: &dyn Syscalls, spec: &RunSpec) -> Result<i32, ChildError> {
    if !spec.mounts.is_empty() {
        return Err(ChildError::InPlaceMounts);
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(ChildError::Subreaper)?;
    // The heredoc script, under /dev (which the root keeps out of the layer).
    let mut made = Vec::new();
    for (target, source) in &spec.etc {
        if !target.starts_with("dev/") {
            return Err(ChildError::InPlaceOutsideDev {
                target: target.clone(),
            });
        }
        let path = Path::new("/").join(target);
        if let Some(parent) = path.parent() {
            ensure_dir(parent)?;
        }
        std::fs::copy(source, &path).map_err(|e| ChildError::Write {
            path: path.clone(),
            source: e,
        })?;
        made.push(path);
    }
    let code = command_in_child(spec, false, |_| {
        exec_command(sys, spec, Confine::InPlace, None)
    });
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
            let _ = nix::sys::wait::waitpid(c, None);
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

#[cfg(test)]
mod tests {
    use super::super::sys::recording::{Call, Recording};
    use super::*;
    use std::path::PathBuf;

    fn spec(root: &Path) -> RunSpec {
        RunSpec {
            lower: PathBuf::from("/lower"),
            upper: PathBuf::from("/upper"),
            work: PathBuf::from("/work"),
            merged: root.to_path_buf(),
            argv: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec![format!("PATH=/nowhere:{}", root.join("bin").display())],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            hostname: "step".into(),
            etc: Vec::new(),
            network_none: false,
            in_place: false,
            mounts: Vec::new(),
            on_root: false,
            devices: None,
            procs: None,
            parent: 0,
            traced: false,
            owners: None,
            owners_seed: Vec::new(),
            touched: None,
        }
    }

    #[test]
    fn the_root_is_filled_then_pivoted_into_and_the_old_one_detached() {
        let root = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let r = root.path();
        let hosts = host.path().join("hosts");
        std::fs::write(&hosts, b"127.0.0.1 localhost\n").unwrap();
        // The image's /etc is a link out of the root: no file is put through it.
        std::os::unix::fs::symlink(host.path(), r.join("etc")).unwrap();
        let mut spec = spec(r);
        spec.etc = vec![
            ("etc/hosts".into(), hosts.clone()),
            ("dev/script".into(), hosts.clone()),
        ];
        let sys = Recording::default();
        enter_root(&sys, &spec).unwrap();
        let calls = sys.calls();
        assert_eq!(calls[0], Call::Hostname("step".into()));
        let here = PathBuf::from(".");
        assert_eq!(
            calls[calls.len() - 3..],
            [
                Call::Chdir(r.to_path_buf()),
                Call::PivotRoot(here.clone(), here.clone()),
                Call::Umount(here, MntFlags::MNT_DETACH),
            ]
        );
        let targets: Vec<&Path> = calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount { target, .. } => Some(target.as_path()),
                _ => None,
            })
            .collect();
        assert!(targets.contains(&r.join("dev/script").as_path()));
        assert!(!targets.iter().any(|t| t.starts_with(r.join("etc"))));
        assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_command_is_looked_up_on_its_path_and_execs_with_its_env() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let bin = r.join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("sh"), b"").unwrap();
        std::fs::set_permissions(bin.join("sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(bin.join("data"), b"").unwrap();
        let spec = spec(r);
        let sys = Recording::default();
        // The recording's execve fails as a missing file would: a shell's 127.
        let Err(e) = exec(&sys, &spec);
        assert_eq!(
            (e.code(), e.to_string()),
            (127, "sh: ENOENT: No such file or directory".into())
        );
        let sh = bin.join("sh").display().to_string();
        // Nothing above stderr crosses the exec.
        assert_eq!(
            sys.calls(),
            [
                Call::OnlyStdio,
                Call::Exec {
                    path: sh,
                    argv: spec.argv.clone(),
                    env: spec.env.clone(),
                }
            ]
        );

        let run = |argv: &[&str]| {
            let mut s = spec.clone();
            s.argv = argv.iter().map(|a| a.to_string()).collect();
            let Err(e) = exec(&Recording::default(), &s);
            (e.code(), e.to_string())
        };
        let not_found = (127, "data: executable file not found in $PATH".to_string());
        assert_eq!(run(&["data"]), not_found);
        assert_eq!(run(&[]), (127, "RUN: no command given".into()));
        assert_eq!(
            run(&["sh", "a\0b"]),
            (127, "\"a\\0b\": contains a NUL byte".into())
        );
    }
}
