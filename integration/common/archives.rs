//! Archives for ADD's tests, written header by header (names exactly as a
//! careless or hostile tool writes them: `./`, `../`, absolute, links out).
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// One archive entry: name, type, body or link target, mode, owner.
pub struct Item {
    pub name: &'static str,
    pub kind: tar::EntryType,
    pub data: &'static [u8],
    pub link: &'static str,
    pub mode: u32,
    pub owner: (u64, u64),
}

/// A regular file of 1000:1000, 0644.
pub const fn file(name: &'static str, data: &'static [u8]) -> Item {
    Item {
        name,
        kind: tar::EntryType::Regular,
        data,
        link: "",
        mode: 0o644,
        owner: (1000, 1000),
    }
}

pub const fn dir(name: &'static str, mode: u32, owner: (u64, u64)) -> Item {
    Item {
        name,
        kind: tar::EntryType::Directory,
        data: b"",
        link: "",
        mode,
        owner,
    }
}

pub const fn symlink(name: &'static str, target: &'static str) -> Item {
    Item {
        name,
        kind: tar::EntryType::Symlink,
        data: b"",
        link: target,
        mode: 0o755,
        owner: (1000, 1000),
    }
}

pub const fn hardlink(name: &'static str, target: &'static str) -> Item {
    Item {
        name,
        kind: tar::EntryType::Link,
        data: b"",
        link: target,
        mode: 0o644,
        owner: (1000, 1000),
    }
}

impl Item {
    pub const fn mode(mut self, mode: u32, owner: (u64, u64)) -> Item {
        self.mode = mode;
        self.owner = owner;
        self
    }
}

/// Every entry's time: 2015-01-01, old enough for the oracle to compare it.
pub const MTIME: u64 = 1_420_070_400;

/// The uncompressed tar of `items`.
pub fn tar_of(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut b = tar::Builder::new(&mut out);
        for it in items {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(it.kind);
            h.set_mode(it.mode);
            h.set_uid(it.owner.0);
            h.set_gid(it.owner.1);
            h.set_mtime(MTIME);
            h.set_size(it.data.len() as u64);
            if !it.link.is_empty() {
                h.set_link_name_literal(it.link).expect("link name");
            }
            let raw = &mut h.as_old_mut().name;
            raw.fill(0);
            raw[..it.name.len()].copy_from_slice(it.name.as_bytes());
            h.set_cksum();
            b.append(&h, it.data).expect("append");
        }
        b.finish().expect("finish tar");
    }
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    e.write_all(data).expect("bzip2");
    e.finish().expect("bzip2")
}

pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(data).expect("xz");
    e.finish().expect("xz")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 1).expect("zstd")
}

/// The archive most cases unpack: the archive's own `./` (whose metadata the
/// destination does not take), owners and modes of its own (setuid too), a
/// symlink, a hard link whose header re-owns the file, a file whose parents
/// are implied, and a `.wh.` name that is a file, not a whiteout.
pub fn sample() -> Vec<u8> {
    tar_of(&[
        dir("./", 0o700, (5, 6)),
        dir("./top/", 0o750, (11, 12)),
        file("./top/f", b"hello\n").mode(0o640, (13, 14)),
        file("./top/exec", b"#!/bin/sh\n").mode(0o4755, (1000, 1000)),
        symlink("./top/sym", "f"),
        hardlink("./top/hard", "./top/f"),
        file("implied/deep/file", b"deep\n").mode(0o600, (0, 0)),
        file(".wh.notwhiteout", b"wh\n"),
    ])
}

/// Writes ADD's test archives into `dir`: the sample plain and in every
/// compression, a `.tar.gz` that is not one, and hostile ones.
pub fn write_fixtures(out: &Path) {
    std::fs::create_dir_all(out).expect("archive dir");
    let s = sample();
    let hostile: [(&str, Vec<u8>); 7] = [
        ("dotdot.tar", tar_of(&[file("../../escape", b"x\n")])),
        ("abs.tar", tar_of(&[file("/abs/file", b"abs\n")])),
        (
            "through.tar",
            tar_of(&[
                dir("real/", 0o755, (1000, 1000)),
                symlink("l", "/real"),
                file("l/evil", b"evil\n"),
                symlink("up", "../../../../.."),
                file("up/evil2", b"evil2\n"),
            ]),
        ),
        (
            "hardout.tar",
            tar_of(&[hardlink("h", "../../../etc/passwd")]),
        ),
        (
            "loop.tar",
            tar_of(&[symlink("etc", "/etc"), file("etc/evil", b"evil\n")]),
        ),
        ("fake.tar.gz", b"not an archive\n".to_vec()),
        ("empty.tar", Vec::new()),
    ];
    for (name, bytes) in [
        ("sample.tar", s.clone()),
        ("sample.tar.gz", gzip(&s)),
        ("sample.tar.bz2", bzip2(&s)),
        ("sample.tar.xz", xz(&s)),
        ("sample.tar.zst", zstd(&s)),
    ]
    .into_iter()
    .chain(hostile)
    {
        std::fs::write(out.join(name), bytes).expect("write archive");
    }
}
