//! File metadata calls std has no words for: times without following a last
//! link, and extended attributes (nix has no xattr calls, so libc's `l*xattr`).
//! The unpacker, the tree cache and the RUN upper-dir reader share them.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Sets a path's access and modification times, not following a last link.
pub(crate) fn set_times(p: &Path, secs: i64, nsecs: i64) -> io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(secs, nsecs);
    utimensat(None, p, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Every extended attribute of `p` itself (names as bytes, values). A file
/// system without xattrs has none.
pub(crate) fn xattrs(p: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cpath(p)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: `c` is a valid C string and `buf` is writable for its length.
    let n = unsafe { nix::libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(nix::libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(e),
        };
    }
    Ok(buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .filter_map(|name| Some((name.to_vec(), get_xattr(p, name)?)))
        .collect())
}

/// One attribute's value, if `p` has it.
pub(crate) fn get_xattr(p: &Path, name: &[u8]) -> Option<Vec<u8>> {
    let c = cpath(p).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings, and `buf` is writable for its length.
    let len =
        unsafe { nix::libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

/// Sets one attribute on `p` itself; a failure leaves it without.
pub(crate) fn set_xattr(p: &Path, name: &[u8], value: &[u8]) {
    if let (Ok(c), Ok(n)) = (cpath(p), CString::new(name)) {
        // SAFETY: valid C strings; `value` is readable for its length.
        unsafe {
            nix::libc::lsetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattrs_and_times_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::write(&a, b"").unwrap();
        std::fs::write(&b, b"").unwrap();
        set_xattr(&a, b"user.kiln", b"v");
        for (name, value) in xattrs(&a).unwrap() {
            set_xattr(&b, &name, &value);
        }
        assert_eq!(get_xattr(&b, b"user.kiln").as_deref(), Some(&b"v"[..]));
        set_times(&b, 1_000_000_000, 5).unwrap();
        let m = std::fs::symlink_metadata(&b).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_000, 5));
    }
}
