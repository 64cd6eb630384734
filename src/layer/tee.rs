//! Writing a layer's tar and unpacking it at once: one read of each source file, two
//! sinks — the tar (the store's blob writer) and, on a second thread, the unpacker
//! filling the layer's cache tree. The next step then mounts the tree instead of
//! extracting the tar it would otherwise read back (issue 14, "unpack while committing").
//!
//! The second sink may be an erofs image file instead of a tree ([`SideSink::Image`], the
//! overlay driver's opt-in erofs cache), or a chunked erofs image holding only metadata
//! whose files point into the tar this tee writes ([`SideSink::ChunkImage`]: the blob
//! writer's stream is the blob, uncompressed, so its offsets are the blob's).
//!
//! Both sinks get the very same bytes, so the tree is the unpack of the blob whose digest
//! the blob writer computes. The unpacker may fail (say, a device node without
//! CAP_MKNOD): the tar is still written whole and the failure is returned at the end, for
//! the caller to drop the tree and let the layer be extracted later as before.
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use super::erofs;
use super::index::{ContentDigest, KnownContent, KnownContents};
use super::unpack::{unpack_knowing, UnpackOptions, UnpackStats};
use super::LayerError;

/// Where the tee's second copy of the layer goes.
#[derive(Debug, Clone, Copy)]
pub enum SideSink<'a> {
    /// Unpacked into this existing directory.
    Tree(&'a Path),
    /// Written as an erofs image to this (new) file.
    Image(&'a Path),
    /// Written as a chunked erofs image to this (new) file: metadata only, each file's
    /// data a reference into the tar being written (which must be the uncompressed blob).
    ChunkImage(&'a Path),
}

/// The side sink of a cache entry kept as an erofs image: the image written instead of a
/// tree, its counts as an unpack's.
fn image(
    reader: ChunkReader,
    path: &Path,
    opts: &UnpackOptions,
    chunked: bool,
    known: Option<KnownContents>,
) -> Result<UnpackStats, LayerError> {
    let stats = erofs::write_image_file_knowing(reader, path, opts, chunked, known)?;
    if chunked {
        crate::fault::point("layer.chunk-image-written");
    }
    Ok(stats.counts)
}

/// How much is handed to the unpacker at a time.
const CHUNK: usize = 256 << 10;
/// Chunks in flight between the two sinks (bounded memory: 8 MiB).
const IN_FLIGHT: usize = 32;
/// Used chunks the unpacker hands back for the writer to fill again: fresh memory costs
/// a page fault per 4 KiB touched (and, in a VM, the host's zeroing of the page).
const RECYCLED: usize = IN_FLIGHT + 2;

/// A writer of a layer tar that also unpacks it into a tree (when given one).
pub struct Tee<W: Write> {
    out: W,
    side: Option<Side>,
    /// Bytes written so far: the stream's offset (the blob's, for the store's writer).
    at: u64,
}

struct Side {
    buf: Vec<u8>,
    tx: SyncSender<Vec<u8>>,
    back: Receiver<Vec<u8>>,
    worker: JoinHandle<Result<UnpackStats, LayerError>>,
    /// To a chunked image's writer, which indexes the stream's contents: the digests
    /// the writer of the tar already knows (`Tee::knows`).
    known: Option<std::sync::mpsc::Sender<KnownContent>>,
}

/// The unpacker's end of the channel.
struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    back: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.cur.len() {
            match self.rx.recv() {
                Ok(next) => {
                    let mut used = std::mem::replace(&mut self.cur, next);
                    self.at = 0;
                    used.clear();
                    // Full or gone (the writer is done): the chunk is simply dropped.
                    let _ = self.back.try_send(used);
                }
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
    /// Writes to `out`, and unpacks what is written (with `opts`) into `side` when there
    /// is one.
    pub fn new(out: W, side: Option<SideSink<'_>>, opts: &UnpackOptions) -> Tee<W> {
        let side = side.map(|side| {
            let (tx, rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
            let (back_tx, back) = sync_channel::<Vec<u8>>(RECYCLED);
            let (path, image_file) = match side {
                SideSink::Tree(p) => (p.to_path_buf(), None),
                SideSink::Image(p) => (p.to_path_buf(), Some(false)),
                SideSink::ChunkImage(p) => (p.to_path_buf(), Some(true)),
            };
            // Told contents are taken by the writers that hash each content: a chunked
            // image's index, and a tree's patch (`unpack_knowing`) matching entries
            // against the old layer's.
            let told = match image_file {
                Some(chunked) => chunked,
                None => opts.reuse && opts.known.is_some(),
            };
            let (known, known_rx) = match told {
                true => {
                    let (tx, rx) = std::sync::mpsc::channel();
                    (Some(tx), Some(KnownContents::new(rx)))
                }
                false => (None, None),
            };
            let opts = opts.clone();
            let worker = std::thread::spawn(move || {
                let reader = ChunkReader {
                    rx,
                    back: back_tx,
                    cur: Vec::new(),
                    at: 0,
                };
                // Once the unpacker returns (at the end marker, or on an error) its end of
                // the channel is gone and the writer's sends fail at once: never a block.
                match image_file {
                    Some(chunked) => image(reader, &path, &opts, chunked, known_rx),
                    None => unpack_knowing(reader, &path, &opts, known_rx),
                }
            });
            Side {
                buf: Vec::with_capacity(CHUNK),
                tx,
                back,
                worker,
                known,
            }
        });
        Tee { out, side, at: 0 }
    }

    /// Bytes written so far (the offset in the stream of the next byte).
    pub fn position(&self) -> u64 {
        self.at
    }

    /// Says that the `len` bytes to be written at `offset` (at or after the stream's
    /// position) hash to `digest`, which the caller hashed or checked: a chunked image's
    /// writer then indexes that content without hashing it again. Must be called
    /// before the header of the entry holding that content is written (the writer
    /// looks for the fact when it parses the header). Without such a writer, nothing.
    pub fn knows(&mut self, offset: u64, len: u64, digest: &ContentDigest) {
        debug_assert!(offset >= self.at);
        if let Some(tx) = self.side.as_ref().and_then(|s| s.known.as_ref()) {
            let fact = KnownContent {
                offset,
                len,
                digest: *digest,
            };
            // A closed channel means the writer stopped; its error comes with `finish`.
            let _ = tx.send(fact);
        }
    }

    /// The tar writer, to hand to callers that write straight into it.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Ends both sinks: the tar writer back, and what the unpacker made of the stream
    /// (None when there was no tree).
    pub fn finish(self) -> io::Result<(W, Option<Result<UnpackStats, LayerError>>)> {
        self.finish_ending(|_| Ok(()))
    }

    /// [`Tee::finish`], running `end` on the tar writer once the second sink has the
    /// whole stream and before waiting for it to finish: the store's blob writer writes
    /// its last bytes and syncs them (`BlobWriter::end`) while the image writer lays out
    /// its metadata. An error of `end` is returned after the second sink is done.
    pub fn finish_ending<E>(
        mut self,
        end: impl FnOnce(&mut W) -> Result<(), E>,
    ) -> Result<(W, Option<Result<UnpackStats, LayerError>>), E> {
        let side = self.side.take();
        let (ended, unpacked) = match side {
            None => (end(&mut self.out), None),
            Some(mut s) => {
                let rest = std::mem::take(&mut s.buf);
                let _ = s.tx.send(rest);
                drop(s.tx);
                let ended = end(&mut self.out);
                let unpacked = s.worker.join().unwrap_or_else(|_| {
                    Err(LayerError::bad("<layer>", "the unpacker thread panicked"))
                });
                (ended, Some(unpacked))
            }
        };
        ended.map(|()| (self.out, unpacked))
    }

    /// Passes a full chunk to the unpacker.
    fn hand_on(&mut self) {
        let Some(s) = self.side.as_mut() else { return };
        if s.buf.len() >= CHUNK {
            let next = s
                .back
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
            let full = std::mem::replace(&mut s.buf, next);
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
            self.out.write_from(r, len)?;
            self.at += len;
            return Ok(());
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
            self.at += n as u64;
            left -= n as u64;
            self.hand_on();
        }
        Ok(())
    }
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data)?;
        self.at += n as u64;
        // Never past a chunk's capacity: growing a full chunk would copy it into fresh
        // memory twice its size.
        let mut rest = &data[..n];
        while let Some(s) = self.side.as_mut().filter(|_| !rest.is_empty()) {
            let k = (CHUNK - s.buf.len().min(CHUNK)).clamp(1, rest.len());
            s.buf.extend_from_slice(&rest[..k]);
            rest = &rest[k..];
            self.hand_on();
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::unpack::unpack;
    use std::os::unix::fs::MetadataExt;

    /// A tar of `files` (path → content; a trailing `/` makes a directory), mtimes 1.
    fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1);
            if path.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, io::empty()).unwrap();
            } else {
                h.set_mode(0o644);
                h.set_size(body.len() as u64);
                b.append_data(&mut h, path, body.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    /// Every entry below `dir`: path, mode, size, mtime, content.
    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            let body = if m.is_file() {
                std::fs::read_to_string(e.path()).unwrap()
            } else {
                String::new()
            };
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            out.push(format!(
                "{rel} {:o} {} {} {body:?}",
                m.mode(),
                m.len(),
                m.mtime()
            ));
        }
        out
    }

    fn opts(reuse: bool) -> UnpackOptions {
        UnpackOptions {
            reuse,
            ..UnpackOptions::default()
        }
    }

    #[test]
    fn the_tree_is_the_unpack_of_exactly_what_was_written() {
        let files = [("a/", ""), ("a/one", "1"), ("two", &"x".repeat(3 << 20))];
        let tree = tempfile::tempdir().unwrap();
        let mut tee = Tee::new(Vec::new(), Some(SideSink::Tree(tree.path())), &opts(false));
        tee.write_all(&tar_of(&files)).unwrap();
        let (bytes, unpacked) = tee.finish().unwrap();
        assert_eq!(bytes, tar_of(&files));
        assert!(unpacked.unwrap().is_ok());
        let fresh = tempfile::tempdir().unwrap();
        unpack(io::Cursor::new(bytes), fresh.path(), &opts(false)).unwrap();
        assert_eq!(listing(tree.path()), listing(fresh.path()));
    }

    /// A chunked image written beside the tar, told each content's digest before its
    /// header (as `build::step` tells it of contents taken from an old blob), indexes the
    /// tar as indexing its bytes does; the stream's position is the bytes written.
    #[test]
    fn told_contents_index_the_stream_as_its_bytes_do() {
        use crate::layer::index::EntryIndex;
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("layer.erofs");
        let sink = Some(SideSink::ChunkImage(&image));
        let overlay = UnpackOptions {
            whiteouts: crate::layer::unpack::Whiteouts::Overlay,
            ..UnpackOptions::default()
        };
        let mut tee = Tee::new(Vec::new(), sink, &overlay);
        let mut expect = tar::Builder::new(Vec::new());
        // Enough files to span many of the tee's chunks.
        for i in 0..3000u32 {
            let body = format!("content {}", i % 1000).repeat(1 + (i % 7) as usize);
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(body.len() as u64);
            let path = format!("d{}/f{i}", i % 10);
            let mut head = Vec::new();
            crate::layer::pack::write_header(&mut head, &mut h, &path).unwrap();
            if i % 5 != 0 {
                let at = tee.position() + head.len() as u64;
                let digest: [u8; 32] = sha2::Sha256::digest(body.as_bytes()).into();
                tee.knows(at, body.len() as u64, &digest);
            }
            tee.write_all(&head).unwrap();
            tee.write_all(body.as_bytes()).unwrap();
            crate::layer::pack::write_padding(&mut tee, body.len() as u64).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(body.len() as u64);
            expect.append_data(&mut h, &path, body.as_bytes()).unwrap();
        }
        tee.write_all(&[0; 1024]).unwrap();
        assert_eq!(tee.position(), tee.get_mut().len() as u64);
        let (bytes, side) = tee.finish().unwrap();
        assert_eq!(bytes, expect.into_inner().unwrap());
        let index = side.unwrap().unwrap().index.map(|i| i.index()).unwrap();
        let of_blob = EntryIndex::contents_of_tar(io::Cursor::new(bytes)).unwrap();
        assert_eq!(index, of_blob);
    }

    #[test]
    fn a_failing_unpacker_neither_blocks_nor_spoils_the_tar() {
        let gone = tempfile::tempdir().unwrap().path().join("missing");
        let big = "y".repeat(40 << 20); // more than the channel holds
        let files = [("big", big.as_str())];
        let mut tee = Tee::new(Vec::new(), Some(SideSink::Tree(&gone)), &opts(false));
        tee.write_all(&tar_of(&files)).unwrap();
        let (bytes, unpacked) = tee.finish().unwrap();
        assert_eq!(bytes, tar_of(&files));
        assert!(unpacked.unwrap().is_err());
    }

    /// `reuse`: unpacking a new version of a layer over the old one's tree gives the
    /// tree an unpack into an empty directory gives (same-size changes, deletions,
    /// additions, a file turned into a directory).
    #[test]
    fn reuse_patches_an_old_tree_into_the_new_layers() {
        let old = tar_of(&[
            ("d/", ""),
            ("d/same", "same"),
            ("d/edit", "abcd"),
            ("d/gone", "x"),
            ("grow", "1"),
            ("f", "file"),
        ]);
        let new = tar_of(&[
            ("d/", ""),
            ("d/same", "same"),
            ("d/edit", "abXd"),
            ("d/new", "n"),
            ("f/", ""),
            ("f/inner", "i"),
            ("grow", "12345"),
        ]);
        let patched = tempfile::tempdir().unwrap();
        unpack(io::Cursor::new(old), patched.path(), &opts(false)).unwrap();
        unpack(io::Cursor::new(new.clone()), patched.path(), &opts(true)).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        unpack(io::Cursor::new(new), fresh.path(), &opts(false)).unwrap();
        assert_eq!(listing(patched.path()), listing(fresh.path()));
    }

    /// With the old layer's entry index, only the entries that changed are written: the
    /// rest are left as they are, and the tree is still what a fresh unpack gives.
    #[test]
    fn an_indexed_reuse_touches_only_changed_entries() {
        let old = tar_of(&[
            ("d/", ""),
            ("d/same", "same"),
            ("d/edit", "abcd"),
            ("gone", "x"),
        ]);
        let new = tar_of(&[
            ("d/", ""),
            ("d/same", "same"),
            ("d/edit", "abXd"),
            ("n", "n"),
        ]);
        let (patched, with_index) = unpacked_and_indexed(old);
        let stats = unpack(io::Cursor::new(new.clone()), patched.path(), &with_index).unwrap();
        assert_eq!(stats.unchanged, 1, "{stats:?}");
        assert_eq!(stats.bytes, 5, "only d/edit and n are written: {stats:?}");
        let fresh = tempfile::tempdir().unwrap();
        unpack(io::Cursor::new(new), fresh.path(), &opts(false)).unwrap();
        assert_eq!(listing(patched.path()), listing(fresh.path()));
    }

    /// A tree's patch takes a told content's digest where it compares an entry with the
    /// old layer's, and only at the exact offset and length: a lie told exactly (the old
    /// bytes' digest for new bytes) leaves the old file, one told with another length is
    /// not taken (the content is hashed and found changed), and what is told truly
    /// changes nothing.
    #[test]
    fn a_patch_takes_told_contents_only_where_exact() {
        use sha2::Digest as _;
        let old = tar_of(&[
            ("d/", ""),
            ("d/a", "aaaa"),
            ("d/b", "bbbb"),
            ("d/c", "cccc"),
        ]);
        let (patched, with_index) = unpacked_and_indexed(old);
        let mut tee = Tee::new(
            Vec::new(),
            Some(SideSink::Tree(patched.path())),
            &with_index,
        );
        let digest = |b: &str| -> [u8; 32] { sha2::Sha256::digest(b.as_bytes()).into() };
        // (path, new content, what is told: the digest of which bytes, and a length off by)
        let entries = [
            ("d/a", "aaaa", Some(("aaaa", 0))),
            ("d/b", "BBBB", Some(("bbbb", 0))),
            ("d/c", "CCCC", Some(("cccc", 1))),
        ];
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        dir.set_mtime(1);
        crate::layer::pack::write_header(&mut tee, &mut dir, "d/").unwrap();
        for (path, body, told) in entries {
            // As `tar_of` writes them, so only the contents differ.
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1);
            h.set_mode(0o644);
            h.set_size(body.len() as u64);
            let mut head = Vec::new();
            crate::layer::pack::write_header(&mut head, &mut h, path).unwrap();
            if let Some((of, off_by)) = told {
                let at = tee.position() + head.len() as u64;
                tee.knows(at, body.len() as u64 + off_by, &digest(of));
            }
            tee.write_all(&head).unwrap();
            tee.write_all(body.as_bytes()).unwrap();
            crate::layer::pack::write_padding(&mut tee, body.len() as u64).unwrap();
        }
        tee.write_all(&[0; 1024]).unwrap();
        let (_, side) = tee.finish().unwrap();
        let stats = side.unwrap().unwrap();
        assert_eq!(stats.unchanged, 2, "d/a and the lie about d/b: {stats:?}");
        let read = |p: &str| std::fs::read_to_string(patched.path().join(p)).unwrap();
        assert_eq!(read("d/a"), "aaaa");
        assert_eq!(read("d/b"), "bbbb", "the exact lie was not taken");
        assert_eq!(read("d/c"), "CCCC", "a fact of another length was taken");
    }

    /// The tree of the layer `old` and unpack options that patch it with `old` as the
    /// known previous layer.
    fn unpacked_and_indexed(old: Vec<u8>) -> (tempfile::TempDir, UnpackOptions) {
        let tree = tempfile::tempdir().unwrap();
        unpack(io::Cursor::new(old.clone()), tree.path(), &opts(false)).unwrap();
        let known = super::super::index::EntryIndex::of_tar(io::Cursor::new(old)).unwrap();
        let with_index = UnpackOptions {
            known: Some(std::sync::Arc::new(known)),
            ..opts(true)
        };
        (tree, with_index)
    }

    /// An entry the old layer had exactly so is left alone only while the tree still
    /// leads to it: here the old layer's `p` was a symlink (so its `p/q` landed in `r`),
    /// the new one's `p` is a directory, and `p/q` must be written into it.
    #[test]
    fn an_indexed_reuse_writes_an_entry_whose_path_was_reshaped() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, "p", "r").unwrap();
        let mut old = b.into_inner().unwrap();
        old.truncate(old.len() - 1024); // no end marker yet
        old.extend(tar_of(&[("r/", ""), ("p/q", "same")]));
        let new = tar_of(&[("p/", ""), ("p/q", "same"), ("r/", "")]);
        let (patched, with_index) = unpacked_and_indexed(old);
        unpack(io::Cursor::new(new.clone()), patched.path(), &with_index).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        unpack(io::Cursor::new(new), fresh.path(), &opts(false)).unwrap();
        assert_eq!(listing(patched.path()), listing(fresh.path()));
    }

    /// The index an indexed reuse builds of the stream it unpacks is the one indexing the
    /// new blob gives (what the next version of the layer reads instead of indexing it),
    /// with a long name, a symlink, and an unchanged entry.
    #[test]
    fn an_indexed_reuse_indexes_the_new_layer_as_indexing_its_blob_does() {
        let old = tar_of(&[("d/", ""), ("d/same", "same"), ("d/edit", "abcd")]);
        let long = format!("d/{}", "n".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, "link", "d/same").unwrap();
        let mut new = b.into_inner().unwrap();
        new.truncate(new.len() - 1024);
        new.extend(tar_of(&[
            ("d/", ""),
            ("d/same", "same"),
            ("d/edit", "abXd"),
            (&long, "long"),
        ]));
        let (patched, with_index) = unpacked_and_indexed(old);
        let stats = unpack(io::Cursor::new(new.clone()), patched.path(), &with_index).unwrap();
        let of_blob = super::super::index::EntryIndex::of_tar(io::Cursor::new(new)).unwrap();
        assert_eq!(stats.index.map(|b| b.index()), Some(of_blob.matchable()));
        // A path named twice never matches (its content may still be found by digest).
        let twice = tar_of(&[("t", "1"), ("t", "1")]);
        let (patched, with_index) = unpacked_and_indexed(tar_of(&[("t", "1")]));
        let stats = unpack(io::Cursor::new(twice.clone()), patched.path(), &with_index).unwrap();
        let mut a = tar::Archive::new(io::Cursor::new(twice));
        let mut first = a.entries().unwrap().next().unwrap().unwrap();
        let fp = super::super::index::fingerprint(&mut first).unwrap();
        assert!(!stats.index.unwrap().index().has(Path::new("t"), &fp));
    }
}
