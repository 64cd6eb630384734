//! Writing a layer's tar and unpacking it at once: one read of each source file, two
//! sinks — the tar (the store's blob writer) and, on a second thread, the unpacker
//! filling the layer's cache tree. The next step then mounts the tree instead of
//! extracting the tar it would otherwise read back (issue 14, "unpack while committing").
//!
//! Both sinks get the very same bytes, so the tree is the unpack of the blob whose digest
//! the blob writer computes. The unpacker may fail (say, a device node without
//! CAP_MKNOD): the tar is still written whole and the failure is returned at the end, for
//! the caller to drop the tree and let the layer be extracted later as before.
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use super::unpack::{unpack, UnpackOptions, UnpackStats};
use super::LayerError;

/// How much is handed to the unpacker at a time.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the two sinks (bounded memory: 8 MiB).
const IN_FLIGHT: usize = 8;

/// A writer of a layer tar that also unpacks it into a tree (when given one).
pub struct Tee<W: Write> {
    out: W,
    side: Option<Side>,
}

struct Side {
    buf: Vec<u8>,
    tx: SyncSender<Vec<u8>>,
    worker: JoinHandle<Result<UnpackStats, LayerError>>,
}

/// The unpacker's end of the channel.
struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.cur.len() {
            match self.rx.recv() {
                Ok(next) => (self.cur, self.at) = (next, 0),
                Err(_) => return Ok(0), // the writer is done
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl<W: Write> Tee<W> {
    /// Writes to `out`, and unpacks what is written into the existing directory `tree`
    /// (with `opts`) when there is one.
    pub fn new(out: W, tree: Option<&Path>, opts: &UnpackOptions) -> Tee<W> {
        let side = tree.map(|tree| {
            let (tx, rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
            let (tree, opts) = (tree.to_path_buf(), opts.clone());
            let worker = std::thread::spawn(move || {
                let reader = ChunkReader {
                    rx,
                    cur: Vec::new(),
                    at: 0,
                };
                // Once the unpacker returns (at the end marker, or on an error) its end of
                // the channel is gone and the writer's sends fail at once: never a block.
                unpack(reader, &tree, &opts)
            });
            Side {
                buf: Vec::with_capacity(CHUNK),
                tx,
                worker,
            }
        });
        Tee { out, side }
    }

    /// The tar writer, to hand to callers that write straight into it.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Ends both sinks: the tar writer back, and what the unpacker made of the stream
    /// (None when there was no tree).
    pub fn finish(mut self) -> io::Result<(W, Option<Result<UnpackStats, LayerError>>)> {
        let side = self.side.take();
        let unpacked = match side {
            None => None,
            Some(mut s) => {
                let rest = std::mem::take(&mut s.buf);
                let _ = s.tx.send(rest);
                drop(s.tx);
                Some(s.worker.join().unwrap_or_else(|_| {
                    Err(LayerError::bad("<layer>", "the unpacker thread panicked"))
                }))
            }
        };
        Ok((self.out, unpacked))
    }

    /// Passes a full chunk to the unpacker.
    fn hand_on(&mut self) {
        let Some(s) = self.side.as_mut() else { return };
        if s.buf.len() >= CHUNK {
            let full = std::mem::replace(&mut s.buf, Vec::with_capacity(CHUNK));
            // A closed channel means the unpacker stopped; its error comes with `finish`.
            let _ = s.tx.send(full);
        }
    }
}

/// A sink that can take a source's bytes straight into its own buffers (the store's blob
/// writer does, saving a copy).
pub trait ReadInto: Write {
    /// Appends exactly `len` bytes read from `r`; fails if `r` ends early.
    fn write_from(&mut self, r: &mut impl Read, len: u64) -> io::Result<()>;
}

impl<W: ReadInto> Tee<W> {
    /// Appends exactly `len` bytes of `r` (a source file's content): straight into the
    /// tar writer's buffers without a tree, else read once and passed to both sinks.
    pub fn write_from(&mut self, r: &mut impl Read, len: u64) -> io::Result<()> {
        if self.side.is_none() {
            return self.out.write_from(r, len);
        }
        let mut left = len;
        while left > 0 {
            let s = self.side.as_mut().expect("checked above");
            let start = s.buf.len();
            let room = (CHUNK.max(start + 1) - start).min(left.min(usize::MAX as u64) as usize);
            s.buf.resize(start + room, 0);
            let n = r.read(&mut s.buf[start..])?;
            s.buf.truncate(start + n);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the source ended {left} bytes early (did it change while being read?)"
                    ),
                ));
            }
            self.out.write_all(&s.buf[start..start + n])?;
            left -= n as u64;
            self.hand_on();
        }
        Ok(())
    }
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data)?;
        if let Some(s) = self.side.as_mut() {
            s.buf.extend_from_slice(&data[..n]);
            self.hand_on();
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
