//! `RUN --mount`s over the command's root: binds, overlays, tmpfs and secrets.

use super::mounts::{
    ensure_dir, ensure_file, inside, locked_flags, mount, mount_overlay, remount_read_only,
};
use super::sys::Syscalls;
use super::ChildError;
use crate::sandbox::{Mount, MountWhat};
use nix::mount::MsFlags;
use std::path::{Path, PathBuf};

/// `RUN --mount`s over the root, parents first; a missing mount point is made
/// (a directory, or an empty file for a file source), and the parent removes
/// it from the step's change afterwards.
pub(super) fn run_mounts(
    sys: &dyn Syscalls,
    root: &Path,
    mounts: &[Mount],
) -> Result<(), ChildError> {
    let mut order: Vec<&Mount> = mounts.iter().collect();
    order.sort_by_key(|m| m.target.split('/').filter(|c| !c.is_empty()).count());
    for m in order {
        let target = inside(root, &m.target)?;
        if std::fs::symlink_metadata(&target).is_err() {
            let file_source = match &m.what {
                MountWhat::Bind { source, .. } => !source.is_dir(),
                MountWhat::Secret { .. } => true,
                _ => false,
            };
            if file_source {
                ensure_file(&target)?;
            } else {
                ensure_dir(&target)?;
            }
        }
        run_mount(sys, &m.what, &target)?;
    }
    Ok(())
}

/// One `RUN --mount` at `target`, its mount point made.
fn run_mount(sys: &dyn Syscalls, what: &MountWhat, target: &Path) -> Result<(), ChildError> {
    match what {
        MountWhat::Bind { source, readonly } => {
            let rec = MsFlags::MS_BIND | MsFlags::MS_REC;
            mount(sys, source.to_str(), target, None, rec, None)?;
            if *readonly {
                // A remount in a user namespace must keep the source's locked flags.
                remount_read_only(sys, target, locked_flags(sys, source))?;
            }
        }
        MountWhat::Overlay { lower, upper, work } => {
            mount_overlay(sys, lower, upper, work, target)?;
        }
        MountWhat::Secret {
            source,
            mode,
            uid,
            gid,
        } => {
            let copy = secret_copy(sys, source, *mode, *uid, *gid)?;
            mount(sys, copy.to_str(), target, None, MsFlags::MS_BIND, None)?;
            let sealed = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            remount_read_only(sys, target, sealed)?;
        }
        MountWhat::Tmpfs { size } => {
            let mut data = "mode=1777".to_string();
            if let Some(s) = size {
                data.push_str(&format!(",size={s}"));
            }
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            mount(
                sys,
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                flags,
                Some(&data),
            )?;
        }
    }
    Ok(())
}

/// A secret's file with the step's mode and owner, in a tmpfs mounted in this
/// mount namespace only (beside the 0400 host copy, in its 0700 directory):
/// the host never holds the secret under `mode=`.
fn secret_copy(
    sys: &dyn Syscalls,
    source: &Path,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<PathBuf, ChildError> {
    use std::os::unix::fs::PermissionsExt;
    let value = std::fs::read(source).map_err(|e| ChildError::Read {
        path: source.to_path_buf(),
        source: e,
    })?;
    let view = source.with_extension("view");
    ensure_dir(&view)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        sys,
        Some("tmpfs"),
        &view,
        Some("tmpfs"),
        flags,
        Some("mode=0700"),
    )?;
    let file = view.join("secret");
    let err = |source| ChildError::Write {
        path: file.clone(),
        source,
    };
    std::fs::write(&file, value).map_err(err)?;
    sys.chown(&file, uid, gid).map_err(err)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(file)
}
