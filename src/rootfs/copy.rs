//! A deep copy of a directory tree with its modes, owners and times, for RUN
//! mounts whose contents must not write through to their source: a cache seeded
//! from a stage, a mount placed into the in-place root.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Copies `src` (a directory, file or symlink, not followed) to `dst`, which must
/// not exist. Owners are kept where this process may set them.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let m = std::fs::symlink_metadata(src)?;
    let ft = m.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else if ft.is_dir() {
        std::fs::create_dir(dst)?;
        let mut names: Vec<_> = std::fs::read_dir(src)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            copy_tree(&src.join(&name), &dst.join(&name))?;
        }
    } else if ft.is_file() {
        std::fs::copy(src, dst)?;
    } else {
        // Devices, FIFOs and sockets have no place in a mount's copy.
        return Ok(());
    }
    // Owner before mode: chown clears setuid bits.
    let _ = std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid()));
    if !ft.is_symlink() {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
    }
    let time = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
    let _ = nix::sys::stat::utimensat(
        None,
        dst,
        &time(m.atime(), m.atime_nsec()),
        &time(m.mtime(), m.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_keeps_modes_links_and_times_and_is_its_own() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), b"x").unwrap();
        std::fs::set_permissions(src.join("sub/f"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::os::unix::fs::symlink("sub/f", src.join("l")).unwrap();
        copy_tree(&src, &d.path().join("dst")).unwrap();
        let f = d.path().join("dst/sub/f");
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(
            std::fs::read_link(d.path().join("dst/l")).unwrap(),
            Path::new("sub/f")
        );
        assert_eq!(
            std::fs::metadata(&f).unwrap().mtime(),
            std::fs::metadata(src.join("sub/f")).unwrap().mtime()
        );
        std::fs::write(&f, b"changed").unwrap();
        assert_eq!(std::fs::read(src.join("sub/f")).unwrap(), b"x");
    }
}
