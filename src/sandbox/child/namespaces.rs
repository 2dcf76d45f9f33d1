//! The command's namespaces: a user namespace with the identity map where one
//! can be made, then the mount namespace's root (an overlay or the stage's
//! root) and the command as the new pid namespace's init.

use super::exec::setup_and_exec;
use super::mounts::{bind_root, mount_overlay};
use super::process::{command_in_child, die_with_parent, wait_for};
use super::sys::Syscalls;
use super::{ChildError, Confine, PROBE_OWN_ROOT};
use crate::sandbox::RunSpec;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::unistd::{fork, ForkResult, Pid};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

/// Whether this process may make a user namespace (a throwaway child tries).
pub(super) fn user_namespaces_work(sys: &dyn Syscalls) -> bool {
    // SAFETY: single-threaded process (see `enter`); the child only unshares.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let ok = sys.unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            // SAFETY: leave without running this process's exit handlers twice.
            unsafe { nix::libc::_exit(if ok { 0 } else { 1 }) }
        }
        Ok(ForkResult::Parent { child }) => wait_for(child).is_ok_and(|c| c == 0),
        Err(_) => false,
    }
}

/// `inside inside count` for each line of an id map: the identity over every
/// id the map's namespace has.
fn identity(own: &str) -> String {
    let mut map = String::new();
    for line in own.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [inside, _, count] = f[..] {
            map.push_str(&format!("{inside} {inside} {count}\n"));
        }
    }
    map
}

/// Runs `f` in a child process inside a new user namespace whose ids map to the
/// same ids outside; this process (root outside) writes the map.
pub(super) fn in_user_namespace(
    sys: &dyn Syscalls,
    f: impl FnOnce() -> Result<i32, ChildError>,
) -> Result<i32, ChildError> {
    let (ready_r, mut ready_w) = pipe()?;
    let (mut go_r, go_w) = pipe()?;
    // SAFETY: single-threaded process (see `enter`).
    match unsafe { fork() }.map_err(ChildError::Fork)? {
        ForkResult::Child => {
            drop(ready_r);
            drop(go_w);
            let result = die_with_parent(0)
                .and_then(|()| {
                    sys.unshare(CloneFlags::CLONE_NEWUSER)
                        .map_err(ChildError::UnshareUser)
                })
                .and_then(|()| wait_for_map(&mut ready_w, &mut go_r))
                .and_then(|()| f());
            std::process::exit(match result {
                Ok(code) => code,
                Err(e) => {
                    e.say();
                    e.code()
                }
            });
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            map_ids(child, ready_r, go_w)?;
            wait_for(child)
        }
    }
}

fn pipe() -> Result<(File, File), ChildError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ChildError::Pipe)?;
    Ok((File::from(r), File::from(w)))
}

/// In the new user namespace: tells the parent it is there, and waits until
/// the parent has written its id map.
fn wait_for_map(ready: &mut File, go: &mut File) -> Result<(), ChildError> {
    ready.write_all(b"u").map_err(ChildError::SignalParent)?;
    let mut b = [0u8];
    go.read_exact(&mut b).map_err(|_| ChildError::NotMapped)?;
    Ok(())
}

/// Writes `child`'s identity map once it is in its user namespace, then lets it
/// go on; a child that cannot be mapped is killed. A child that ended before
/// it was ready is left to be waited for.
fn map_ids(child: Pid, mut ready: File, mut go: File) -> Result<(), ChildError> {
    let mut b = [0u8];
    if ready.read_exact(&mut b).is_err() {
        return Ok(());
    }
    for file in ["uid_map", "gid_map"] {
        let own = format!("/proc/self/{file}");
        let path = format!("/proc/{child}/{file}");
        let written = std::fs::read_to_string(&own)
            .map_err(|source| ChildError::IdMap {
                op: "reading",
                path: own,
                source,
            })
            .and_then(|map| {
                std::fs::write(&path, identity(&map)).map_err(|source| ChildError::IdMap {
                    op: "writing",
                    path,
                    source,
                })
            });
        if let Err(e) = written {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = wait_for(child);
            return Err(e);
        }
    }
    let _ = go.write_all(b"g");
    Ok(())
}

/// In the new namespaces: the overlay, then the command as pid 1's child.
pub(super) fn in_namespaces(
    sys: &dyn Syscalls,
    spec: &RunSpec,
    probe: bool,
    confine: Confine,
) -> Result<i32, ChildError> {
    // Nothing mounted here may reach the host's mount table.
    let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    sys.mount(None, Path::new("/"), None, private, None)
        .map_err(ChildError::MakePrivate)?;
    if spec.on_root {
        bind_root(sys, &spec.lower, &spec.merged)?;
    } else if let Err(e) = mount_overlay(sys, &spec.lower, &spec.upper, &spec.work, &spec.merged) {
        // An overlay's upper dir cannot sit on an overlay (a container's own
        // root): the stage's root itself can still be the command's root.
        if probe && bind_root(sys, &spec.lower, &spec.merged).is_ok() {
            eprintln!("{e}");
            return Ok(PROBE_OWN_ROOT);
        }
        return Err(ChildError::NoOverlay(Box::new(e)));
    }
    if probe {
        return Ok(0);
    }
    // Where the kernel refuses device nodes (a user namespace), they are made
    // for the command and recorded.
    let devices = confine != Confine::InPlace;
    command_in_child(spec, devices, |notify| {
        setup_and_exec(sys, spec, confine, notify)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_covers_every_range_of_the_own_map() {
        let own = "         0          0 4294967295\n  1000 100000 65536\nbroken line\n";
        assert_eq!(identity(own), "0 0 4294967295\n1000 1000 65536\n");
    }
}
