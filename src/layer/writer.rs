//! Writes a layer: sorted entries, PAX/GNU names for long paths, gzip with a fixed
//! level and no timestamp, digests of the compressed and uncompressed streams.

use super::gzip::GzipWriter;
use super::HashingWriter;
use crate::image::Digest;
use crate::pathname::to_path;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing layer entry {path}: {source}")]
    Entry { path: String, source: io::Error },
    #[error("reading {path} for the layer: {source}")]
    Source { path: PathBuf, source: io::Error },
    #[error("finishing layer {path}: {source}")]
    Finish { path: PathBuf, source: io::Error },
}

/// Opens a planned source file without following a final symlink, and only if it
/// is still a regular file of the planned size.
fn open_planned(path: &Path, size: u64) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                io::Error::other(format!(
                    "changed while the build ran (planned a {size}-byte file, found a symbolic link)"
                ))
            } else {
                e
            }
        })?;
    let m = f.metadata()?;
    if !m.is_file() || m.len() != size {
        return Err(io::Error::other(format!(
            "changed while the build ran (planned a {size}-byte file, found {})",
            if m.is_file() {
                format!("{} bytes", m.len())
            } else {
                "something else".into()
            }
        )));
    }
    Ok(f)
}

/// Reads exactly `left` bytes; ending early is an error, never a short entry.
struct ExactRead<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("shrank while being copied ({} bytes missing)", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Metadata of one entry in a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryMeta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Written as PAX `SCHILY.xattr.` records before the entry.
    pub xattrs: super::Xattrs,
}

/// What an entry is and where its bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryBody {
    Dir,
    /// A regular file whose contents are read from a host path.
    File {
        source: PathBuf,
        size: u64,
    },
    /// A regular file whose contents are given (heredocs).
    Bytes(Vec<u8>),
    Symlink(String),
    /// A hard link to another path in the same layer (relative, no leading `/`).
    Hardlink(String),
    /// A named pipe (`mkfifo`).
    Fifo,
    /// A character device: major, minor.
    Char(u32, u32),
    /// A block device: major, minor.
    Block(u32, u32),
}

/// A finished layer blob on disk.
#[derive(Debug, Clone)]
pub struct LayerFile {
    pub path: PathBuf,
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
}

/// How new layers are compressed (`--compression`, `--compression-level`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Compression {
    Gzip(u32),
    Zstd(i32),
}

impl Compression {
    /// The layer media type: gzip's follows the manifest's format (given as
    /// its gzip layer type); zstd has only OCI's.
    pub fn media_type(self, gzip_type: &'static str) -> &'static str {
        match self {
            Compression::Gzip(_) => gzip_type,
            Compression::Zstd(_) => MT_OCI_ZSTD_LAYER,
        }
    }
}

pub const MT_OCI_ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

type Blob = HashingWriter<BufWriter<File>>;

/// The compressor between the tar and the blob file.
enum Compressor {
    Gzip(GzipWriter<Blob>),
    Zstd(zstd::stream::write::Encoder<'static, Blob>),
}

impl Write for Compressor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
        }
    }
}

impl Compressor {
    fn finish(self) -> io::Result<Blob> {
        match self {
            Compressor::Gzip(w) => w.finish(),
            Compressor::Zstd(w) => w.finish(),
        }
    }
}

type Sink = tar::Builder<HashingWriter<Compressor>>;

/// Streams entries into a gzip'd tar at `path`.
pub struct LayerWriter {
    tar: Sink,
    path: PathBuf,
}

impl LayerWriter {
    /// A gzip layer at `level`.
    pub fn create(path: &Path, level: u32) -> Result<LayerWriter, WriteError> {
        LayerWriter::create_with(path, Compression::Gzip(level))
    }

    pub fn create_with(path: &Path, compression: Compression) -> Result<LayerWriter, WriteError> {
        let err = |source| WriteError::Finish {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(err)?;
        let blob = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let compressor = match compression {
            Compression::Gzip(level) => {
                Compressor::Gzip(GzipWriter::new(blob, level).map_err(err)?)
            }
            Compression::Zstd(level) => {
                Compressor::Zstd(zstd::stream::write::Encoder::new(blob, level).map_err(err)?)
            }
        };
        let mut tar = tar::Builder::new(HashingWriter::new(compressor));
        tar.mode(tar::HeaderMode::Complete);
        Ok(LayerWriter {
            tar,
            path: path.to_path_buf(),
        })
    }

    /// Appends one entry; `path` is relative to the root, without a leading `/`.
    pub fn append(
        &mut self,
        path: &str,
        meta: &EntryMeta,
        body: &EntryBody,
    ) -> Result<(), WriteError> {
        let err = |source| WriteError::Entry {
            path: path.to_string(),
            source,
        };
        if !meta.xattrs.is_empty() {
            let records: Vec<(String, &[u8])> = meta
                .xattrs
                .iter()
                .map(|(name, value)| (format!("SCHILY.xattr.{name}"), value.as_slice()))
                .collect();
            self.tar
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(err)?;
        }
        let mut h = tar::Header::new_ustar();
        h.set_mode(meta.mode & 0o7777);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(meta.mtime);
        match body {
            EntryBody::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                let name = format!("{}/", path.trim_end_matches('/'));
                self.tar
                    .append_data(&mut h, to_path(&name), io::empty())
                    .map_err(err)
            }
            EntryBody::File { source, size } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(*size);
                let f = open_planned(source, *size).map_err(|source_err| WriteError::Source {
                    path: source.clone(),
                    source: source_err,
                })?;
                // The size in the header is the promise: read exactly that many
                // bytes, and fail if the file ends early (it shrank under us).
                let mut exact = ExactRead {
                    inner: f.take(*size),
                    left: *size,
                };
                self.tar
                    .append_data(&mut h, to_path(path), &mut exact)
                    .map_err(|e| WriteError::Source {
                        path: source.clone(),
                        source: e,
                    })
            }
            EntryBody::Bytes(b) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(b.len() as u64);
                self.tar
                    .append_data(&mut h, to_path(path), b.as_slice())
                    .map_err(err)
            }
            EntryBody::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                self.tar
                    .append_link(&mut h, to_path(path), to_path(target))
                    .map_err(err)
            }
            EntryBody::Hardlink(target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                self.tar
                    .append_link(&mut h, to_path(path), to_path(target))
                    .map_err(err)
            }
            // As BuildKit writes them: no data, the numbers in the ustar
            // device fields (zero for a FIFO).
            EntryBody::Fifo | EntryBody::Char(..) | EntryBody::Block(..) => {
                let (kind, major, minor) = match body {
                    EntryBody::Char(ma, mi) => (tar::EntryType::Char, *ma, *mi),
                    EntryBody::Block(ma, mi) => (tar::EntryType::Block, *ma, *mi),
                    _ => (tar::EntryType::Fifo, 0, 0),
                };
                h.set_entry_type(kind);
                h.set_size(0);
                h.set_device_major(major).map_err(err)?;
                h.set_device_minor(minor).map_err(err)?;
                self.tar
                    .append_data(&mut h, to_path(path), io::empty())
                    .map_err(err)
            }
        }
    }

    /// Closes the tar and gzip streams and returns the blob's digests.
    pub fn finish(self) -> Result<LayerFile, WriteError> {
        let path = self.path.clone();
        let err = |source| WriteError::Finish {
            path: path.clone(),
            source,
        };
        let hashed_tar = self.tar.into_inner().map_err(err)?;
        let (compressor, diff_id, _) = hashed_tar.finish();
        let hashed_file = compressor.finish().map_err(err)?;
        let (mut buf, digest, size) = hashed_file.finish();
        buf.flush().map_err(err)?;
        Ok(LayerFile {
            path,
            digest,
            diff_id,
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn empty_layer_matches_buildkit_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        let w = LayerWriter::create(&dir.path().join("l.tgz"), 6).unwrap();
        let l = w.finish().unwrap();
        // The diff_id BuildKit gives an empty layer (1024 zero bytes).
        assert_eq!(
            l.diff_id,
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
        );
        let bytes = std::fs::read(&l.path).unwrap();
        assert_eq!(
            l.digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
        );
        assert_eq!(l.size, bytes.len() as u64);
    }

    #[test]
    fn sources_that_changed_since_planning_fail() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("f");
        std::fs::write(&src, vec![7u8; 100]).unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&src, &link).unwrap();
        let meta = EntryMeta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        };
        for (source, size, cause) in [
            (
                &src,
                1_000_000u64,
                "planned a 1000000-byte file, found 100 bytes",
            ),
            (&link, 100, "found a symbolic link"),
        ] {
            let mut w = LayerWriter::create(&dir.path().join("layer"), 6).unwrap();
            let e = w
                .append(
                    "f",
                    &meta,
                    &EntryBody::File {
                        source: source.clone(),
                        size,
                    },
                )
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(cause) && e.contains(&source.display().to_string()),
                "{e}"
            );
        }
    }

    #[test]
    fn fifos_and_devices_are_written_as_buildkit_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LayerWriter::create(&dir.path().join("l.tgz"), 6).unwrap();
        let meta = |mode, uid, gid| EntryMeta {
            mode,
            uid,
            gid,
            mtime: 1_796_536_933,
            xattrs: Vec::new(),
        };
        w.append("d/p", &meta(0o600, 5, 6), &EntryBody::Fifo)
            .unwrap();
        w.append("dev/null", &meta(0o620, 0, 0), &EntryBody::Char(1, 3))
            .unwrap();
        // Linux's largest numbers still fit the ustar fields (7 octal digits).
        w.append(
            "dev/big",
            &meta(0o660, 0, 6),
            &EntryBody::Block(4095, 1_048_575),
        )
        .unwrap();
        let l = w.finish().unwrap();
        let gz = flate2::read::GzDecoder::new(File::open(&l.path).unwrap());
        let mut ar = tar::Archive::new(gz);
        let got: Vec<_> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    (h.uid().unwrap(), h.gid().unwrap()),
                    h.size().unwrap(),
                    h.mtime().unwrap(),
                    (
                        h.device_major().unwrap().unwrap(),
                        h.device_minor().unwrap().unwrap(),
                    ),
                )
            })
            .collect();
        let t = 1_796_536_933;
        assert_eq!(
            got,
            [
                (
                    "d/p".into(),
                    tar::EntryType::Fifo,
                    0o600,
                    (5, 6),
                    0,
                    t,
                    (0, 0)
                ),
                (
                    "dev/null".into(),
                    tar::EntryType::Char,
                    0o620,
                    (0, 0),
                    0,
                    t,
                    (1, 3)
                ),
                (
                    "dev/big".into(),
                    tar::EntryType::Block,
                    0o660,
                    (0, 6),
                    0,
                    t,
                    (4095, 1_048_575)
                ),
            ]
        );
        // Kiln's own reader gives them back as the same kinds.
        let mut kinds = Vec::new();
        crate::layer::reader::for_each_entry(&l.path, "t", |e, _| {
            kinds.push(e.kind);
            Ok(())
        })
        .unwrap();
        use crate::layer::reader::Kind;
        assert_eq!(
            kinds,
            [Kind::Fifo, Kind::Char(1, 3), Kind::Block(4095, 1_048_575)]
        );
    }

    #[test]
    fn same_entries_same_digest() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("f");
        std::fs::write(&src, b"hello").unwrap();
        let make = |name: &str| {
            let mut w = LayerWriter::create(&dir.path().join(name), 6).unwrap();
            let m = EntryMeta {
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 1,
                xattrs: Vec::new(),
            };
            w.append("a", &m, &EntryBody::Dir).unwrap();
            w.append(
                "a/f",
                &m,
                &EntryBody::File {
                    source: src.clone(),
                    size: 5,
                },
            )
            .unwrap();
            w.append("a/l", &m, &EntryBody::Symlink("f".into()))
                .unwrap();
            w.append(
                &format!("a/{}", "x".repeat(150)),
                &m,
                &EntryBody::Bytes(b"long".to_vec()),
            )
            .unwrap();
            w.finish().unwrap()
        };
        let (a, b) = (make("1"), make("2"));
        assert_eq!((a.digest.clone(), a.diff_id.clone()), (b.digest, b.diff_id));
    }
}
