//! The mount primitives the helper builds the command's root with: a mount
//! that names what failed, mount points, the root itself (an overlay or the
//! stage's root), paths resolved inside it, and the flags a remount must keep.

use super::sys::Syscalls;
use super::ChildError;
use nix::mount::MsFlags;
use std::path::{Path, PathBuf};

/// mount(2), its failure naming the source and target.
pub(super) fn mount(
    sys: &dyn Syscalls,
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), ChildError> {
    sys.mount(source, target, fstype, flags, data)
        .map_err(|e| ChildError::mount(source, target, e))
}

/// Remounts the bind mount at `target` read-only, with `keep`: in a user
/// namespace the remount must keep the flags the mount is locked with.
pub(super) fn remount_read_only(
    sys: &dyn Syscalls,
    target: &Path,
    keep: MsFlags,
) -> Result<(), ChildError> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep;
    mount(sys, None, target, None, flags, None)
}

pub(super) fn ensure_dir(p: &Path) -> Result<(), ChildError> {
    std::fs::create_dir_all(p).map_err(|source| ChildError::Create {
        path: p.to_path_buf(),
        source,
    })
}

/// An empty file at `p` (a mount point for a file), its parents made.
pub(super) fn ensure_file(p: &Path) -> Result<(), ChildError> {
    if let Some(parent) = p.parent() {
        ensure_dir(parent)?;
    }
    std::fs::write(p, b"").map_err(|source| ChildError::Create {
        path: p.to_path_buf(),
        source,
    })
}

/// Bind-mounts a file, making the mount point (an empty file) when missing.
pub(super) fn bind_file(
    sys: &dyn Syscalls,
    source: &Path,
    target: &Path,
) -> Result<(), ChildError> {
    if std::fs::symlink_metadata(target).is_err() {
        ensure_file(target)?;
    }
    mount(sys, source.to_str(), target, None, MsFlags::MS_BIND, None)
}

/// The stage's root itself at `target`: the command writes to it, and the
/// parent reads the change by a walk (no overlay where the scratch dir is on one).
pub(super) fn bind_root(sys: &dyn Syscalls, root: &Path, target: &Path) -> Result<(), ChildError> {
    mount(sys, root.to_str(), target, None, MsFlags::MS_BIND, None)
}

/// Mounts an overlay of `lower` at `target`, its writes in `upper`.
pub(super) fn mount_overlay(
    sys: &dyn Syscalls,
    lower: &Path,
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), ChildError> {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let overlay = |opts: &str| {
        sys.mount(
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
    if let Err(with) = overlay(&format!("{opts},userxattr,volatile")) {
        overlay(&opts).map_err(|without| ChildError::Overlay { with, without })?;
    }
    Ok(())
}

/// `rel` under `root`, refused when an existing component is not a real
/// directory (or, for the last one, is a link): mounting through an image's
/// symlink would land on the host, which is still visible before pivot_root.
pub(super) fn inside(root: &Path, rel: &str) -> Result<PathBuf, ChildError> {
    let mut p = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        if matches!(*part, "." | "..") {
            return Err(ChildError::NotClean { target: rel.into() });
        }
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ChildError::Symlink {
                    target: rel.into(),
                    link: p,
                })
            }
            Ok(m) if i + 1 < parts.len() && !m.is_dir() => {
                return Err(ChildError::ParentNotDir { target: rel.into() })
            }
            _ => {}
        }
    }
    Ok(p)
}

/// The flags of the mount at `p` that a remount in a user namespace may not
/// drop: atime, nosuid, nodev, noexec.
pub(super) fn locked_flags(sys: &dyn Syscalls, p: &Path) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let Ok(f) = sys.statvfs(p) else {
        return MsFlags::empty();
    };
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

#[cfg(test)]
mod tests {
    use super::super::sys::recording::{mount as recorded, Recording};
    use super::*;
    use nix::sys::statvfs::FsFlags;

    #[test]
    fn inside_refuses_dot_dot_and_links_out_of_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::write(r.join("usr/file"), b"").unwrap();
        std::os::unix::fs::symlink("/etc", r.join("etc")).unwrap();
        assert_eq!(inside(r, "/usr/lib/x").unwrap(), r.join("usr/lib/x"));
        assert_eq!(inside(r, "usr//lib/").unwrap(), r.join("usr/lib"));
        let err = |rel| inside(r, rel).unwrap_err().to_string();
        assert_eq!(err("usr/../../etc"), "/usr/../../etc: not a clean path");
        assert_eq!(err("./usr"), "/./usr: not a clean path");
        assert_eq!(
            err("etc/passwd"),
            format!(
                "/etc/passwd: {} is a symbolic link in the image",
                r.join("etc").display()
            )
        );
        // The last component may not be a link either: the mount would follow it.
        assert!(matches!(inside(r, "etc"), Err(ChildError::Symlink { .. })));
        assert_eq!(
            err("usr/file/x"),
            "/usr/file/x: a parent is not a directory"
        );
    }

    #[test]
    fn the_overlay_falls_back_to_plain_options_then_names_both_failures() {
        let (l, u, w, t) = (
            Path::new("/l"),
            Path::new("/u"),
            Path::new("/w"),
            Path::new("/t"),
        );
        let sys = Recording::default();
        mount_overlay(&sys, l, u, w, t).unwrap();
        let opts = "lowerdir=/l,upperdir=/u,workdir=/w,userxattr,volatile";
        let overlay = |data| {
            recorded(
                Some("overlay"),
                t,
                Some("overlay"),
                MsFlags::empty(),
                Some(data),
            )
        };
        assert_eq!(sys.calls(), [overlay(opts)]);
        // A kernel before 5.11 knows neither option.
        let old = Recording::default().refusing(opts);
        mount_overlay(&old, l, u, w, t).unwrap();
        assert_eq!(old.calls(), [overlay("lowerdir=/l,upperdir=/u,workdir=/w")]);
        let refused = Recording::default().refusing("overlay");
        let e = mount_overlay(&refused, l, u, w, t).unwrap_err();
        assert!(matches!(e, ChildError::Overlay { .. }), "{e}");
    }

    #[test]
    fn locked_flags_are_the_mounts_atime_and_security_flags() {
        let sys = Recording::default().with_flags(
            "/sys",
            FsFlags::ST_RDONLY | FsFlags::ST_NOSUID | FsFlags::ST_NOEXEC | FsFlags::ST_RELATIME,
        );
        assert_eq!(
            locked_flags(&sys, Path::new("/sys")),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME
        );
        assert_eq!(locked_flags(&sys, Path::new("/other")), MsFlags::empty());
    }
}
