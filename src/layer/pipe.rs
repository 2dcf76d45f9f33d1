//! A reader whose source is read on a thread of its own: decompressing a layer
//! overlaps with whatever the caller does with its bytes (creating files).

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Bytes read ahead per piece, and pieces in flight.
const PIECE: usize = 256 << 10;
const AHEAD: usize = 8;

/// Reads what a background thread reads from the source, in order.
pub(crate) struct Piped {
    pieces: Receiver<io::Result<Vec<u8>>>,
    /// Emptied pieces go back, so the thread allocates only `AHEAD + 2` of them.
    spent: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Piped {
    pub(crate) fn new<R: Read + Send + 'static>(mut source: R) -> Piped {
        let (tx, pieces) = sync_channel::<io::Result<Vec<u8>>>(AHEAD);
        let (spent, back) = sync_channel::<Vec<u8>>(AHEAD + 2);
        std::thread::spawn(move || loop {
            let mut buf = back.try_recv().unwrap_or_default();
            buf.resize(PIECE, 0);
            let mut n = 0;
            let read = loop {
                match source.read(&mut buf[n..]) {
                    Ok(0) => break Ok(()),
                    Ok(k) => {
                        n += k;
                        if n == buf.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(n);
            let last = n == 0 || read.is_err();
            let sent = match read {
                // A piece read before the error still goes first.
                Err(e) if n > 0 => tx.send(Ok(buf)).and_then(|()| tx.send(Err(e))),
                Err(e) => tx.send(Err(e)),
                Ok(()) => tx.send(Ok(buf)),
            };
            // The reader was dropped (an error there): stop reading.
            if sent.is_err() || last {
                return;
            }
        });
        Piped {
            pieces,
            spent,
            cur: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for Piped {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            let piece = match self.pieces.recv() {
                Ok(p) => p?,
                Err(_) => {
                    return Err(io::Error::other("the decompressing thread stopped"));
                }
            };
            if piece.is_empty() {
                self.done = true;
            }
            let old = std::mem::replace(&mut self.cur, piece);
            let _ = self.spent.try_send(old);
            self.pos = 0;
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_errors_arrive_in_order() {
        let data: Vec<u8> = (0..(3 * PIECE + 17)).map(|i| (i % 251) as u8).collect();
        let mut back = Vec::new();
        Piped::new(io::Cursor::new(data.clone()))
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);

        struct Fails(usize);
        impl Read for Fails {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("bad block"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut got = Vec::new();
        let err = Piped::new(Fails(10)).read_to_end(&mut got).unwrap_err();
        assert_eq!((got.len(), err.to_string()), (10, "bad block".into()));
    }
}
