//! A gzip writer for layers. Input is cut into 256 KiB chunks:
//! - a chunk whose byte entropy is near 8 bits (random, already compressed) is
//!   written as deflate stored blocks instead of being searched for matches;
//! - any other chunk is deflated on its own, primed with the previous 32 KiB of
//!   input as dictionary and ended on a byte boundary (sync flush), so chunks are
//!   compressed in parallel on worker threads (pigz's scheme) and written in order.
//!
//! The output depends only on the bytes, not on the number of threads, so layer
//! digests are deterministic. It is an ordinary single-member gzip stream.

use flate2::{Compress, Compression, FlushCompress, Status};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

const CHUNK: usize = 256 * 1024;
const WINDOW: usize = 32 * 1024;
/// Bits per byte above which deflate gains almost nothing.
const STORE_ABOVE: f64 = 7.95;

struct Job {
    seq: u64,
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
}

type Done = (u64, io::Result<Vec<u8>>);

/// Worker threads, started when the first chunk needs deflating.
struct Pool {
    jobs: Sender<Job>,
    done: Receiver<Done>,
}

impl Pool {
    fn start(level: u32) -> Pool {
        let (jobs, rx) = channel::<Job>();
        let (tx, done) = channel::<Done>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        for _ in 0..threads {
            let (rx, tx) = (rx.clone(), tx.clone());
            std::thread::spawn(move || loop {
                let job = match rx.lock() {
                    Ok(r) => r.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                if tx.send((job.seq, deflate_chunk(&job, level))).is_err() {
                    return;
                }
            });
        }
        Pool { jobs, done }
    }
}

pub(crate) struct GzipWriter<W: Write> {
    inner: W,
    level: u32,
    buf: Vec<u8>,
    /// The last 32 KiB of input before `buf`: the next chunk's dictionary.
    tail: Vec<u8>,
    crc: flate2::Crc,
    pool: Option<Pool>,
    next_seq: u64,
    next_out: u64,
    ready: BTreeMap<u64, Vec<u8>>,
    in_flight: usize,
}

impl<W: Write> GzipWriter<W> {
    pub(crate) fn new(mut inner: W, level: u32) -> io::Result<GzipWriter<W>> {
        // Header: no name, mtime 0, OS "unknown" (as flate2's GzBuilder writes it).
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        Ok(GzipWriter {
            inner,
            level,
            buf: Vec::with_capacity(CHUNK),
            tail: Vec::new(),
            crc: flate2::Crc::new(),
            pool: None,
            next_seq: 0,
            next_out: 0,
            ready: BTreeMap::new(),
            in_flight: 0,
        })
    }

    /// Encodes the buffered chunk (stored here, or deflated by a worker).
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let dict = std::mem::take(&mut self.tail);
        let keep = data.len().min(WINDOW);
        self.tail = [
            &dict[dict.len().saturating_sub(WINDOW - keep)..],
            &data[data.len() - keep..],
        ]
        .concat();
        let seq = self.next_seq;
        self.next_seq += 1;
        if data.len() >= 4096 && entropy(&data) > STORE_ABOVE {
            self.ready.insert(seq, stored_blocks(&data, last));
        } else {
            let level = self.level;
            let pool = self.pool.get_or_insert_with(|| Pool::start(level));
            pool.jobs
                .send(Job {
                    seq,
                    data,
                    dict,
                    last,
                })
                .map_err(|_| io::Error::other("gzip workers stopped"))?;
            self.in_flight += 1;
        }
        // Keep a bounded number of chunks in memory.
        self.drain(if last { 0 } else { 8 })
    }

    /// Writes finished chunks in order until at most `max_in_flight` remain.
    fn drain(&mut self, max_in_flight: usize) -> io::Result<()> {
        loop {
            while let Some(out) = self.ready.remove(&self.next_out) {
                self.inner.write_all(&out)?;
                self.next_out += 1;
            }
            if self.in_flight <= max_in_flight {
                return Ok(());
            }
            let pool = self
                .pool
                .as_ref()
                .ok_or_else(|| io::Error::other("no gzip workers"))?;
            let (seq, out) = pool
                .done
                .recv()
                .map_err(|_| io::Error::other("gzip workers stopped"))?;
            self.in_flight -= 1;
            self.ready.insert(seq, out?);
        }
    }

    /// Finishes the stream (trailer: CRC-32 and size) and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        self.drain(0)?;
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
            self.submit(false)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Raw deflate of one chunk: primed with `dict`, ended by a sync flush (or the
/// final block when `last`).
fn deflate_chunk(job: &Job, level: u32) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if !job.dict.is_empty() {
        c.set_dictionary(&job.dict).map_err(io::Error::other)?;
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(job.data.len() / 2 + 1024);
    let mut input = &job.data[..];
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let before = c.total_in();
        let status = c
            .compress_vec(input, &mut out, flush)
            .map_err(io::Error::other)?;
        input = &input[(c.total_in() - before) as usize..];
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            _ => input.is_empty() && out.capacity() > out.len(),
        };
        if done {
            return Ok(out);
        }
    }
}

/// Deflate stored blocks (BTYPE=00) holding `data`; the last one final when `last`.
fn stored_blocks(data: &[u8], last: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65_535 * 5 + 5);
    let mut blocks: Vec<&[u8]> = data.chunks(65_535).collect();
    if blocks.is_empty() {
        blocks.push(&[]);
    }
    let n = blocks.len();
    for (i, block) in blocks.into_iter().enumerate() {
        let len = block.len() as u16;
        out.push(u8::from(last && i + 1 == n));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out
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

    fn mixed(len: usize) -> Vec<u8> {
        let mut data = Vec::with_capacity(len);
        let mut x: u64 = 1;
        for i in 0..len {
            // Compressible stretches (with repeats across chunk borders), then noise.
            if (i / CHUNK).is_multiple_of(3) || (i / CHUNK) % 3 == 1 {
                data.push(b"hello world, hello layers "[i % 26]);
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.push(x as u8);
            }
        }
        data
    }

    #[test]
    fn mixed_content_round_trips_and_is_deterministic() {
        let data = mixed(7 * CHUNK + 1234);
        let a = roundtrip(&data);
        assert_eq!(a, roundtrip(&data));
        assert!(
            a.len() < data.len() / 2,
            "text chunks are still compressed: {} of {}",
            a.len(),
            data.len()
        );
        assert!(roundtrip(&[]).len() < 40);
        roundtrip(&data[..CHUNK]);
        roundtrip(&data[2 * CHUNK..3 * CHUNK]);
    }

    #[test]
    fn dictionary_keeps_cross_chunk_matches() {
        // The same 64 KiB of text repeated: with the previous chunk as dictionary the
        // second and later chunks compress to almost nothing.
        let unit: Vec<u8> = (0..65_536u32)
            .map(|i| b"abcdefghijklmnopqrstuvwxyz"[((i * 7919) % 26) as usize] ^ (i % 3) as u8)
            .collect();
        let data: Vec<u8> = unit.iter().copied().cycle().take(8 * CHUNK).collect();
        let gz = roundtrip(&data);
        assert!(gz.len() < data.len() / 50, "{} of {}", gz.len(), data.len());
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
