//! A gzip writer that does not waste time on incompressible data: input is taken
//! in 256 KiB chunks, and a chunk whose byte entropy is near 8 bits (random,
//! already compressed) is written as deflate stored blocks instead of being
//! searched for matches.
//! The choice depends only on the bytes, so the output (and its digest) is
//! deterministic; it is an ordinary single-member gzip stream.

use flate2::{Compress, Compression, FlushCompress, Status};
use std::io::{self, Write};

const CHUNK: usize = 256 * 1024;
/// Bits per byte above which deflate gains almost nothing.
const STORE_ABOVE: f64 = 7.95;

pub struct GzipWriter<W: Write> {
    inner: W,
    deflate: Compress,
    /// Whether the compressor was fed since its last reset.
    dirty: bool,
    buf: Vec<u8>,
    out: Vec<u8>,
    crc: flate2::Crc,
}

impl<W: Write> GzipWriter<W> {
    pub fn new(mut inner: W, level: u32) -> io::Result<GzipWriter<W>> {
        // Header: no name, mtime 0, OS "unknown" (as flate2's GzBuilder writes it).
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        Ok(GzipWriter {
            inner,
            deflate: Compress::new(Compression::new(level), false),
            dirty: false,
            buf: Vec::with_capacity(CHUNK),
            out: Vec::with_capacity(CHUNK + CHUNK / 8),
            crc: flate2::Crc::new(),
        })
    }

    fn compress_chunk(&mut self, flush: FlushCompress) -> io::Result<()> {
        let finish = matches!(flush, FlushCompress::Finish);
        if self.buf.len() >= 4096 && entropy(&self.buf) > STORE_ABOVE {
            if self.dirty {
                // Byte-align what the compressor holds, so stored blocks can follow.
                self.run(&[], FlushCompress::Sync)?;
            }
            for block in self.buf.chunks(65_535) {
                let len = block.len() as u16;
                // BFINAL=0, BTYPE=00 (stored), then LEN and its complement.
                self.inner.write_all(&[0])?;
                self.inner.write_all(&len.to_le_bytes())?;
                self.inner.write_all(&(!len).to_le_bytes())?;
                self.inner.write_all(block)?;
            }
            // The compressor never saw these bytes: it must not refer back into them.
            self.deflate.reset();
            self.dirty = false;
            if finish {
                self.run(&[], FlushCompress::Finish)?;
            }
        } else {
            let buf = std::mem::take(&mut self.buf);
            self.run(&buf, flush)?;
            self.buf = buf;
            self.dirty = true;
        }
        self.buf.clear();
        Ok(())
    }

    /// Feeds `input` to the compressor and writes all it produces.
    fn run(&mut self, mut input: &[u8], flush: FlushCompress) -> io::Result<()> {
        loop {
            self.out.clear();
            let before_in = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(input, &mut self.out, flush)
                .map_err(io::Error::other)?;
            input = &input[(self.deflate.total_in() - before_in) as usize..];
            self.inner.write_all(&self.out)?;
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                _ => input.is_empty() && self.out.len() < self.out.capacity(),
            };
            if done {
                return Ok(());
            }
        }
    }

    /// Finishes the stream (trailer: CRC-32 and size) and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.compress_chunk(FlushCompress::Finish)?;
        self.inner.write_all(&self.crc.sum().to_le_bytes())?;
        self.inner.write_all(&self.crc.amount().to_le_bytes())?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for GzipWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let take = (CHUNK - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        self.crc.update(&data[..take]);
        if self.buf.len() == CHUNK {
            self.compress_chunk(FlushCompress::None)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Order-0 entropy in bits per byte.
fn entropy(data: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(data: &[u8]) -> Vec<u8> {
        let mut w = GzipWriter::new(Vec::new(), 6).unwrap();
        for part in data.chunks(10_000) {
            w.write_all(part).unwrap();
        }
        let gz = w.finish().unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        gz
    }

    #[test]
    fn mixed_content_round_trips_and_is_deterministic() {
        let mut data = Vec::new();
        let mut x: u64 = 1;
        for i in 0..(3 * CHUNK + 1234) {
            // A compressible stretch, then a pseudo-random one.
            if (i / CHUNK).is_multiple_of(2) {
                data.push(b"hello world "[i % 12]);
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.push(x as u8);
            }
        }
        let a = roundtrip(&data);
        assert_eq!(a, roundtrip(&data));
        assert!(
            a.len() < data.len() * 3 / 4,
            "text chunks are still compressed"
        );
        assert!(roundtrip(&[]).len() < 40);
    }

    #[test]
    fn entropy_separates_text_from_noise() {
        assert!(entropy(b"aaaaaaaabbbbbbbb") < 1.5);
        let noise: Vec<u8> = (0..65536u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert!(entropy(&noise) > 7.9);
    }
}
