//! Reads a layer blob (gzip or plain tar) entry by entry. Paths come out cleaned and
//! rooted (`../../etc` → `etc`), whiteouts are recognised, nothing is written.

use super::sparse;
use flate2::read::GzDecoder;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading layer {layer}: {source}")]
    Io { layer: String, source: io::Error },
    #[error("layer {layer}: its tar is {got}, not its diff_id {want} (refused)")]
    DiffId {
        layer: String,
        want: String,
        got: String,
    },
    #[error("layer {layer}: entry {path:?}: {reason}")]
    Entry {
        layer: String,
        path: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink(String),
    /// Hard link to another entry, path cleaned like entry paths.
    Hardlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Whiteout {
    /// `.wh.name`: remove `path`.
    Remove(String),
    /// `.wh..wh..opq`: hide what lower layers had under this directory.
    Opaque(String),
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Relative to the root, no leading `/`; empty for the root itself.
    pub(crate) path: String,
    pub(crate) kind: Kind,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) size: u64,
    pub(crate) mtime: u64,
    pub(crate) whiteout: Option<Whiteout>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) xattrs: super::Xattrs,
}

/// PAX records carrying extended attributes (GNU tar, Go's archive/tar, BuildKit).
pub(crate) const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// The longest entry path read (Linux's PATH_MAX).
pub(crate) const MAX_PATH_BYTES: usize = 4096;

fn blank(field: &[u8]) -> bool {
    field.iter().all(|&b| b == 0 || b == b' ')
}

/// How a layer (or archive) is compressed, by its first bytes: media types can
/// lie, magic numbers cannot. Layers are gzip or zstd; ADD's archives may also
/// be bzip2 or xz (BuildKit's DecompressStream knows all four).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

impl Compression {
    pub(crate) fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else {
            Compression::None
        }
    }
}

/// The uncompressed tar stream of a layer blob or archive.
pub(crate) fn open_decompressed(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    open_decompressed_shown(path, &crate::progress::Bar::none())
}

/// [`open_decompressed`], the blob's bytes counted on `bar` as they are read.
fn open_decompressed_shown(
    path: &Path,
    bar: &crate::progress::Bar,
) -> io::Result<Box<dyn Read + Send>> {
    let mut head = [0u8; 6];
    let mut file = File::open(path)?;
    let n = read_full(&mut file, &mut head)?;
    let file = BufReader::with_capacity(1 << 20, bar.reading(File::open(path)?));
    Ok(match Compression::sniff(&head[..n]) {
        Compression::Gzip => Box::new(GzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(file)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(file)),
        Compression::None => Box::new(file),
    })
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Calls `f` for every entry of the layer at `path`, with a reader for its bytes.
pub(crate) fn for_each_entry<F>(path: &Path, label: &str, f: F) -> Result<(), ReadError>
where
    F: FnMut(Entry, &mut dyn Read) -> Result<(), ReadError>,
{
    for_each_entry_piped(path, label, &crate::progress::Bar::none(), None, f)
}

/// [`for_each_entry`], the blob's bytes counted on `bar` and decompressed on a
/// thread of its own, so inflating and the caller's work overlap. With
/// `diff_id`, the whole tar stream must hash to it, or the read fails once
/// every entry has been given to `f` (a copy of a layer kept elsewhere).
pub(crate) fn for_each_entry_piped<F>(
    path: &Path,
    label: &str,
    bar: &crate::progress::Bar,
    diff_id: Option<&crate::image::Digest>,
    mut f: F,
) -> Result<(), ReadError>
where
    F: FnMut(Entry, &mut dyn Read) -> Result<(), ReadError>,
{
    let io_err = |source| ReadError::Io {
        layer: label.to_string(),
        source,
    };
    let source = open_decompressed_shown(path, bar).map_err(io_err)?;
    // Hashed only when there is a diff_id to check.
    let (mut piped, seen) = match diff_id {
        Some(_) => {
            let hashing = super::HashingReader::new(source);
            let seen = hashing.result();
            (super::pipe::Piped::new(hashing), seen)
        }
        None => (super::pipe::Piped::new(source), Default::default()),
    };
    for_each_in_stream(&mut piped, label, Names::Layer, &mut f)?;
    let Some(want) = diff_id else { return Ok(()) };
    // The tar's end blocks, which the entry reader leaves, are the layer's too.
    io::copy(&mut piped, &mut io::sink()).map_err(io_err)?;
    match seen.get() {
        Some(got) if got == want => Ok(()),
        got => Err(ReadError::DiffId {
            layer: label.to_string(),
            want: want.to_string(),
            got: got.map_or_else(|| "unread".into(), |d| d.to_string()),
        }),
    }
}

/// Like [`for_each_entry`] over an archive ADD unpacks: compressed in any of
/// [`Compression`]'s ways, and `.wh.` names are plain files (BuildKit turns
/// whiteout conversion off for ADD).
pub(crate) fn for_each_archive_entry<F>(path: &Path, label: &str, mut f: F) -> Result<(), ReadError>
where
    F: FnMut(Entry, &mut dyn Read) -> Result<(), ReadError>,
{
    let reader = open_decompressed(path).map_err(|source| ReadError::Io {
        layer: label.to_string(),
        source,
    })?;
    for_each_in_stream(reader, label, Names::Archive, &mut f)
}

/// What a `.wh.` name means in the stream read.
#[derive(Clone, Copy, PartialEq)]
enum Names {
    /// A layer: whiteouts hide lower files.
    Layer,
    /// An archive: every name is a file's.
    Archive,
}

/// Like [`for_each_entry`] over an uncompressed tar stream.
fn for_each_in_stream<R: Read, F>(
    reader: R,
    label: &str,
    names: Names,
    f: &mut F,
) -> Result<(), ReadError>
where
    F: FnMut(Entry, &mut dyn Read) -> Result<(), ReadError>,
{
    let io_err = |source| ReadError::Io {
        layer: label.to_string(),
        source,
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        // Only sparse and xattr records are kept: copying every record of every
        // entry cost a sixth of the read time.
        let mut xattrs = super::Xattrs::new();
        let pax: Vec<(String, String)> = match entry.pax_extensions() {
            Ok(Some(records)) => records
                .flatten()
                .filter(|r| {
                    if let Some(name) = r.key_bytes().strip_prefix(XATTR_PREFIX) {
                        xattrs.push((
                            String::from_utf8_lossy(name).into_owned(),
                            r.value_bytes().to_vec(),
                        ));
                        return false;
                    }
                    r.key_bytes().starts_with(b"GNU.sparse.")
                })
                .filter_map(|r| {
                    Some((
                        r.key().ok()?.to_string(),
                        crate::pathname::from_bytes(r.value_bytes()),
                    ))
                })
                .collect(),
            _ => Vec::new(),
        };
        let sparse = sparse::from_pax(&pax).map_err(|reason| ReadError::Entry {
            layer: label.to_string(),
            path: crate::pathname::display(&crate::pathname::from_bytes(&entry.path_bytes())),
            reason,
        })?;
        let raw_path = match sparse.as_ref().and_then(|s| s.name.clone()) {
            Some(name) => name,
            None => crate::pathname::from_bytes(&entry.path_bytes()),
        };
        let path = crate::pathname::clean_rooted(&raw_path);
        let h = entry.header();
        let bad = |reason: String| ReadError::Entry {
            layer: label.to_string(),
            path: crate::pathname::display(&raw_path),
            reason,
        };
        // No file system takes a longer path (PATH_MAX); refusing it keeps the
        // index's memory linear in the layer's size.
        if path.len() > MAX_PATH_BYTES && crate::pathname::to_bytes(&path).len() > MAX_PATH_BYTES {
            return Err(ReadError::Entry {
                layer: label.to_string(),
                path: format!("{}…", path.chars().take(64).collect::<String>()),
                reason: format!("path longer than {MAX_PATH_BYTES} bytes (refused)"),
            });
        }
        // Blank numeric fields read as 0, as Go's archive/tar (Docker, BuildKit) reads them.
        let old = h.as_old();
        let mode = if blank(&old.mode) {
            0
        } else {
            h.mode().map_err(|e| bad(e.to_string()))?
        };
        let uid = if blank(&old.uid) {
            0
        } else {
            h.uid().map_err(|e| bad(e.to_string()))?
        };
        let gid = if blank(&old.gid) {
            0
        } else {
            h.gid().map_err(|e| bad(e.to_string()))?
        };
        let mtime = h.mtime().unwrap_or(0);
        let size = entry.size();
        let link = || -> Result<String, ReadError> {
            let l = entry
                .link_name_bytes()
                .map(|b| crate::pathname::from_bytes(&b))
                .ok_or_else(|| bad("link without a target".into()))?;
            Ok(l)
        };
        let et = h.entry_type();
        let kind = match et {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                Kind::File
            }
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink(link()?),
            tar::EntryType::Link => Kind::Hardlink(crate::pathname::clean_rooted(&link()?)),
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                if et == tar::EntryType::Char {
                    Kind::Char(major, minor)
                } else {
                    Kind::Block(major, minor)
                }
            }
            tar::EntryType::Fifo => Kind::Fifo,
            // PAX/GNU metadata entries are consumed by the tar crate; others are skipped.
            _ => continue,
        };
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n.to_string()),
            None => (String::new(), path.clone()),
        };
        let whiteout = match names {
            Names::Layer => whiteout_of(&dir, &name).map_err(|reason| ReadError::Entry {
                layer: label.to_string(),
                path: crate::pathname::display(&path),
                reason: format!("whiteout {name:?} {reason}"),
            })?,
            Names::Archive => None,
        };
        if path.is_empty() && whiteout.is_none() && kind != Kind::Dir {
            continue;
        }
        let sparse = sparse.filter(|_| kind == Kind::File);
        let e = Entry {
            path,
            kind,
            mode,
            uid,
            gid,
            size: sparse.as_ref().map_or(size, |s| s.real_size),
            mtime,
            whiteout,
            xattrs,
        };
        match sparse {
            Some(s) => {
                let map = match s.map {
                    Some(map) => map,
                    None => sparse::read_map_1x0(&mut entry, s.real_size).map_err(|reason| {
                        ReadError::Entry {
                            layer: label.to_string(),
                            path: crate::pathname::display(&e.path),
                            reason,
                        }
                    })?,
                };
                f(e, &mut sparse::Expanded::new(&mut entry, map, s.real_size))?;
            }
            None => f(e, &mut entry)?,
        }
    }
    Ok(())
}
/// What an entry `name` in directory `dir` hides, if it is a whiteout.
/// [`whiteout_of`] for a whole root-relative path; names that hide nothing
/// are no whiteout here.
pub(crate) fn whiteout_of_path(path: &str) -> Option<Whiteout> {
    match path.rsplit_once('/') {
        Some((dir, name)) => whiteout_of(dir, name),
        None => whiteout_of("", path),
    }
    .ok()
    .flatten()
}

pub(crate) fn whiteout_of(dir: &str, name: &str) -> Result<Option<Whiteout>, &'static str> {
    if name == ".wh..wh..opq" {
        return Ok(Some(Whiteout::Opaque(dir.to_string())));
    }
    let Some(hidden) = name.strip_prefix(".wh.") else {
        return Ok(None);
    };
    // `.wh.`, `.wh..` and `.wh...` would hide the directory itself or its parent.
    if matches!(hidden, "" | "." | "..") {
        return Err("names no file (refused)");
    }
    Ok(Some(Whiteout::Remove(if dir.is_empty() {
        hidden.to_string()
    } else {
        format!("{dir}/{hidden}")
    })))
}
