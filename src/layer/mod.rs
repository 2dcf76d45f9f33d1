//! Layers as streams: `entries` are a layer's entries before they are written,
//! `writer` makes one (tar → gzip → file, hashing both streams in one pass),
//! `reader` iterates the entries of one with whiteouts recognised.

pub(crate) mod entries;
pub(crate) mod gzip;
pub(crate) mod pipe;
pub(crate) mod reader;
mod sparse;
pub mod writer;

/// Extended attributes of an entry (PAX `SCHILY.xattr.NAME` records): name → value.
pub(crate) type Xattrs = Vec<(String, Vec<u8>)>;

use std::io::{self, Write};

use sha2::{Digest, Sha256};

/// A writer that hashes and counts what passes through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer, the `sha256:` digest and byte count of everything written.
    pub(crate) fn finish(self) -> (W, crate::image::Digest, u64) {
        (
            self.inner,
            crate::image::Digest::from_sha256(self.hasher.finalize().into()),
            self.count,
        )
    }
}

/// A reader that hashes what passes through it; at its end the `sha256:`
/// digest is set in [`HashingReader::result`], which another thread may hold.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    result: std::sync::Arc<std::sync::OnceLock<crate::image::Digest>>,
}

impl<R: io::Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            result: Default::default(),
        }
    }

    /// Where the digest appears once the end is read.
    pub(crate) fn result(&self) -> std::sync::Arc<std::sync::OnceLock<crate::image::Digest>> {
        self.result.clone()
    }
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let hash = self.hasher.clone().finalize().into();
            self.result
                .get_or_init(|| crate::image::Digest::from_sha256(hash));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
