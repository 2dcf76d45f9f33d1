//! Path names: lexical cleaning, and the bytes bridge. File names are bytes (on Linux, in tar headers); Kiln carries paths as `String`
//! so that matching, cleaning and ordering stay simple. This module is the one
//! lossless bridge: bytes that are not UTF-8 become chars U+10FF80..=U+10FFFF
//! (plane 16, private use), one char per byte, and a name that really contains
//! such a char has its UTF-8 bytes escaped the same way. So two names that differ
//! in bytes always differ as strings (`caf\xe9` ≠ `caf\xe8`), and converting back
//! gives the original bytes. Every place a name crosses to or from the disk or a
//! tar header goes through here.

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The escape for byte `b` (always ≥ 0x80) is `ESCAPE_BASE + b`.
const ESCAPE_BASE: u32 = 0x10_FF00;

fn is_escape(c: char) -> bool {
    (ESCAPE_BASE + 0x80..=ESCAPE_BASE + 0xFF).contains(&(c as u32))
}

fn push_escaped(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        // Bytes of invalid or escape-range sequences are all ≥ 0x80, so the sum is
        // a valid scalar value in plane 16.
        if let Some(c) = char::from_u32(ESCAPE_BASE + u32::from(b)) {
            out.push(c);
        }
    }
}

/// A name's bytes as Kiln's string form.
pub fn from_bytes(bytes: &[u8]) -> String {
    // Escape-range chars start with byte 0xF4; names without it (nearly all) need
    // only UTF-8 validation, one memchr-fast scan.
    if !bytes.contains(&0xF4) {
        if let Ok(s) = std::str::from_utf8(bytes) {
            return s.to_string();
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_escape(c) {
                push_escaped(&mut out, c.encode_utf8(&mut [0; 4]).as_bytes());
            } else {
                out.push(c);
            }
        }
        push_escaped(&mut out, chunk.invalid());
    }
    out
}

/// The bytes a string-form name stands for.
pub(crate) fn to_bytes(name: &str) -> Cow<'_, [u8]> {
    if !name.as_bytes().contains(&0xF4) || !name.chars().any(is_escape) {
        return Cow::Borrowed(name.as_bytes());
    }
    let mut out = Vec::with_capacity(name.len());
    for c in name.chars() {
        if is_escape(c) {
            out.push((c as u32 - ESCAPE_BASE) as u8);
        } else {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
    }
    Cow::Owned(out)
}

/// An OS name (directory entry, link target) in string form.
pub(crate) fn from_os(name: &OsStr) -> String {
    from_bytes(name.as_bytes())
}

/// A string-form name as a relative host path (to join onto a root).
pub(crate) fn to_path(name: &str) -> Cow<'_, Path> {
    match to_bytes(name) {
        Cow::Borrowed(b) => Cow::Borrowed(Path::new(OsStr::from_bytes(b))),
        Cow::Owned(v) => Cow::Owned(PathBuf::from(OsString::from_vec(v))),
    }
}

/// Lexically cleans a path as if rooted at `/`: `..` cannot climb above the root.
pub(crate) fn clean_rooted(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// How a name is shown to people: the bytes, invalid ones as U+FFFD.
pub(crate) fn display(name: &str) -> String {
    String::from_utf8_lossy(&to_bytes(name)).into_owned()
}

/// A name as mountinfo writes it, its space, tab, newline and backslash as
/// `\\ooo` octal, back as bytes.
pub(crate) fn unescape_octal(s: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_is_rooted() {
        assert_eq!(clean_rooted("../../etc/passwd"), "etc/passwd");
        assert_eq!(clean_rooted("/a/./b/../c/"), "a/c");
        assert_eq!(clean_rooted("./"), "");
    }

    #[test]
    fn distinct_bytes_stay_distinct_and_round_trip() {
        let cases: [&[u8]; 6] = [
            b"plain/ascii",
            "caf\u{e9}.txt".as_bytes(),
            b"caf\xe9.txt",
            b"caf\xe8.txt",
            // A real plane-16 char next to the escape of its own bytes.
            "x\u{10FFE9}y".as_bytes(),
            b"x\xf4\x8f\xbf\xa9y\xff",
        ];
        let forms: Vec<String> = cases.iter().map(|b| from_bytes(b)).collect();
        for (b, s) in cases.iter().zip(&forms) {
            assert_eq!(to_bytes(s).as_ref(), *b, "{s:?}");
        }
        for i in 0..forms.len() {
            for j in i + 1..forms.len() {
                assert_ne!(forms[i], forms[j]);
            }
        }
        assert_eq!(forms[0], "plain/ascii");
        assert_eq!(display(&forms[2]), "caf\u{FFFD}.txt");
    }
}
