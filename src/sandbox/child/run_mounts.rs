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

#[cfg(test)]
mod tests {
    use super::super::sys::recording::{mount as recorded, Call, Recording};
    use super::*;
    use nix::sys::statvfs::FsFlags;
    use std::os::unix::fs::PermissionsExt;

    fn at(target: &str, what: MountWhat) -> Mount {
        Mount {
            target: target.into(),
            what,
        }
    }

    fn read_only(target: &Path, keep: MsFlags) -> Call {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep;
        recorded(None, target, None, flags, None)
    }

    #[test]
    fn binds_and_tmpfs_are_mounted_inside_the_root_parents_first() {
        let root = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let r = root.path();
        let cache = host.path().join("cache");
        let conf = host.path().join("app.conf");
        std::fs::create_dir(&cache).unwrap();
        std::fs::write(&conf, b"x").unwrap();
        let sys = Recording::default().with_flags(&conf, FsFlags::ST_NODEV);
        let mounts = [
            at(
                "/var/cache/apt/archives",
                MountWhat::Tmpfs { size: Some(1024) },
            ),
            at(
                "etc/app.conf",
                MountWhat::Bind {
                    source: conf.clone(),
                    readonly: true,
                },
            ),
            at(
                "/var/cache",
                MountWhat::Bind {
                    source: cache.clone(),
                    readonly: false,
                },
            ),
        ];
        run_mounts(&sys, r, &mounts).unwrap();
        let rec = MsFlags::MS_BIND | MsFlags::MS_REC;
        let (etc, var) = (r.join("etc/app.conf"), r.join("var/cache"));
        let deep = r.join("var/cache/apt/archives");
        assert_eq!(
            sys.calls(),
            [
                recorded(conf.to_str(), &etc, None, rec, None),
                read_only(&etc, MsFlags::MS_NODEV),
                recorded(cache.to_str(), &var, None, rec, None),
                recorded(
                    Some("tmpfs"),
                    &deep,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some("mode=1777,size=1024"),
                ),
            ]
        );
        // Mount points for a file source are files, for the others directories.
        assert!(etc.is_file() && var.is_dir() && deep.is_dir());
    }

    #[test]
    fn a_secret_is_a_sealed_copy_with_the_steps_mode_and_owner() {
        let root = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let source = host.path().join("token");
        std::fs::write(&source, b"s3cret").unwrap();
        let sys = Recording::default();
        let secret = MountWhat::Secret {
            source: source.clone(),
            mode: 0o440,
            uid: 1000,
            gid: 1001,
        };
        run_mounts(&sys, root.path(), &[at("run/secrets/token", secret)]).unwrap();
        let view = host.path().join("token.view");
        let copy = view.join("secret");
        let target = root.path().join("run/secrets/token");
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        assert_eq!(
            sys.calls(),
            [
                recorded(
                    Some("tmpfs"),
                    &view,
                    Some("tmpfs"),
                    flags,
                    Some("mode=0700")
                ),
                Call::Chown(copy.clone(), 1000, 1001),
                recorded(copy.to_str(), &target, None, MsFlags::MS_BIND, None),
                read_only(&target, flags),
            ]
        );
        assert_eq!(std::fs::read(&copy).unwrap(), b"s3cret");
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o440);
        assert!(target.is_file());
    }

    #[test]
    fn a_target_through_a_link_in_the_image_is_refused_before_any_mount() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::os::unix::fs::symlink("/", r.join("escape")).unwrap();
        let sys = Recording::default();
        let tmpfs = || MountWhat::Tmpfs { size: None };
        let e = run_mounts(&sys, r, &[at("escape/tmp", tmpfs())]).unwrap_err();
        assert!(matches!(e, ChildError::Symlink { .. }), "{e}");
        let e = run_mounts(&sys, r, &[at("a/../../tmp", tmpfs())]).unwrap_err();
        assert!(matches!(e, ChildError::NotClean { .. }), "{e}");
        assert_eq!(sys.calls(), []);
        assert!(!r.join("a").exists());
    }
}
