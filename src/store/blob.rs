//! Blob writes and reads. A blob is streamed into a temp file under `<root>/tmp`, hashed
//! on the way, fsynced, checked against the expected digest, then renamed into
//! `blobs/sha256/<hex>`: a blob path either does not exist or holds exactly its content.
//!
//! Large blobs (layers) are hashed on the caller's thread while a second thread writes the
//! already-hashed chunks to the temp file, so hashing and the disk work at once. In a
//! durable store that thread writes with `O_DIRECT` (where the filesystem allows it): the
//! blob must reach the disk before it is named anyway, and writing it straight from the
//! chunk buffers skips the copy into the page cache — the largest CPU cost of a pull —
//! and leaves the final fsync only the metadata and the unaligned tail to wait for.
//! Elsewhere (`--no-fsync`, tmpfs) it writes through the page cache and starts writeback
//! as it goes.
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

use serde::Serialize;
use sha2::Digest as _;

use super::{canonical_json, io_err, LockGuard, Result, Store, StoreError};
use crate::digest::{self, Digest};

/// Bytes handed to the disk thread at a time: small enough that a chunk is still in the
/// CPU's cache when it is hashed and written, large enough for few syscalls.
const CHUNK: usize = 1 << 20;
/// Chunks queued for the disk thread before the hashing side waits.
const QUEUED: usize = 4;
/// Chunk buffers one writer allocates at most; they are handed back and forth with its
/// disk thread, so their pages are faulted in once, not once per chunk.
const POOL: usize = QUEUED + 2;
/// What `O_DIRECT` needs buffers, offsets and lengths aligned to (any logical block size
/// up to a page).
const ALIGN: usize = 4096;
/// Writeback is started every this many bytes (page-cache writes only).
const WRITEBACK_EVERY: u64 = 8 << 20;

/// A chunk buffer whose `CHUNK` usable bytes start on an `ALIGN` boundary.
struct ChunkBuf {
    bytes: Vec<u8>,
    start: usize,
}

impl ChunkBuf {
    fn new() -> ChunkBuf {
        let bytes = vec![0u8; CHUNK + ALIGN];
        let start = bytes.as_ptr().align_offset(ALIGN).min(ALIGN);
        ChunkBuf { bytes, start }
    }
    /// A placeholder for a finished writer's buffer (allocates nothing; never read).
    fn empty() -> ChunkBuf {
        ChunkBuf {
            bytes: Vec::new(),
            start: 0,
        }
    }
    fn get(&self) -> &[u8] {
        &self.bytes[self.start..self.start + CHUNK]
    }
    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + CHUNK]
    }
}

/// A chunk on its way to the temp file: the buffer and how much of it is filled.
type Chunk = (ChunkBuf, usize);

/// Where the disk thread writes: through `O_DIRECT` (and the page cache for an
/// unaligned tail), or through the page cache only.
struct Sink {
    buffered: File,
    direct: Option<File>,
    /// Page-cache writes: start their writeback as they go.
    writeback: bool,
}

impl Sink {
    /// Writes `data` at `offset`. An aligned chunk goes through `O_DIRECT`; a filesystem
    /// that refuses it (EINVAL) gets this and every later chunk through the page cache.
    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        let aligned = data.len().is_multiple_of(ALIGN) && data.as_ptr().align_offset(ALIGN) == 0;
        if let (Some(direct), true) = (&self.direct, aligned) {
            match direct.write_all_at(data, offset) {
                Err(e) if e.raw_os_error() == Some(crate::sys::fs::EINVAL) => {
                    self.direct = None;
                }
                r => return r,
            }
        }
        self.buffered.write_all_at(data, offset)
    }
}

/// The disk side of a blob write, started when the first chunk fills.
struct DiskThread {
    to_disk: mpsc::SyncSender<Chunk>,
    spare: mpsc::Receiver<ChunkBuf>,
    handle: std::thread::JoinHandle<io::Result<()>>,
}

impl DiskThread {
    fn start(mut sink: Sink) -> DiskThread {
        let (to_disk, chunks) = mpsc::sync_channel::<Chunk>(QUEUED);
        let (give_back, spare) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            let (mut written, mut kicked) = (0u64, 0u64);
            for (buf, filled) in chunks {
                sink.write_at(&buf.get()[..filled], written)?;
                written += filled as u64;
                if sink.writeback && written - kicked >= WRITEBACK_EVERY {
                    // Only a hint: the fsync at commit is what makes the blob durable.
                    let _ =
                        crate::sys::fs::start_writeback(&sink.buffered, kicked, written - kicked);
                    kicked = written;
                }
                let _ = give_back.send(buf);
            }
            Ok(())
        });
        DiskThread {
            to_disk,
            spare,
            handle,
        }
    }

    /// Waits for every queued chunk to be written.
    fn finish(self) -> io::Result<()> {
        drop(self.to_disk);
        self.handle
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the blob writer thread panicked")))
    }
}

/// A blob being written. Dropping it without `commit` deletes the temp file.
pub struct BlobWriter {
    store: Store,
    tmp: tempfile::NamedTempFile,
    hasher: sha2::Sha256,
    len: u64,
    /// The chunk being filled and how much of it is.
    buf: ChunkBuf,
    filled: usize,
    /// Chunk buffers allocated so far (at most `POOL`).
    allocated: usize,
    disk: Option<DiskThread>,
    /// When the write began (the "blob written" event's `elapsed_ms`).
    started: std::time::Instant,
    /// `end` ran: every byte is in the temp file, this is its digest, and whether the
    /// file was made durable then (not when the store had the blob already).
    ended: Option<(Digest, bool)>,
}

impl Write for BlobWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.filled);
        self.buf.get_mut()[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.took(n)?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends exactly `len` bytes read from `r`, reading straight into the chunk buffer
    /// (no intermediate copy). Fails if `r` ends early.
    pub fn write_from(&mut self, r: &mut impl Read, len: u64) -> io::Result<()> {
        let mut left = len;
        while left > 0 {
            let room = (CHUNK - self.filled).min(left.min(usize::MAX as u64) as usize);
            let n = r.read(&mut self.buf.get_mut()[self.filled..self.filled + room])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the source ended {left} bytes early (did it change while being read?)"
                    ),
                ));
            }
            self.took(n)?;
            left -= n as u64;
        }
        Ok(())
    }

    /// `n` more bytes of the chunk are filled: hash them, and pass a full chunk on.
    fn took(&mut self, n: usize) -> io::Result<()> {
        self.hasher
            .update(&self.buf.get()[self.filled..self.filled + n]);
        self.filled += n;
        self.len += n as u64;
        if self.filled == CHUNK {
            self.pass_on()?;
        }
        Ok(())
    }

    fn pass_on(&mut self) -> io::Result<()> {
        if self.disk.is_none() {
            self.disk = Some(DiskThread::start(self.sink()?));
        }
        let disk = self.disk.as_ref().expect("started above");
        let next = match disk.spare.try_recv() {
            Ok(b) => Some(b),
            Err(_) if self.allocated < POOL => {
                self.allocated += 1;
                Some(ChunkBuf::new())
            }
            // Every buffer is queued or being written: wait for one.
            Err(_) => disk.spare.recv().ok(),
        };
        let sent = next.and_then(|next| {
            let full = std::mem::replace(&mut self.buf, next);
            disk.to_disk.send((full, self.filled)).ok()
        });
        if sent.is_none() {
            // The disk thread stopped on an error: collect it.
            let e = self.disk.take().expect("present").finish().err();
            return Err(e.unwrap_or_else(|| io::Error::other("the blob writer thread stopped")));
        }
        self.filled = 0;
        Ok(())
    }

    /// The disk thread's files: `O_DIRECT` when the store is durable and the filesystem
    /// takes it.
    fn sink(&self) -> io::Result<Sink> {
        let buffered = self.tmp.as_file().try_clone()?;
        let durable = self.store.is_durable();
        let direct = if durable {
            crate::sys::fs::open_direct_for_write(self.tmp.path()).ok()
        } else {
            None
        };
        Ok(Sink {
            writeback: durable && direct.is_none(),
            buffered,
            direct,
        })
    }

    /// Writes what is left of the blob to its temp file and makes it durable there
    /// (when the store is), without naming it: the first half of [`BlobWriter::commit`],
    /// for a caller with something else to wait for meanwhile (a layer's commit, while
    /// its image writer finishes). Nothing more may be written after it.
    pub fn end(&mut self) -> Result<()> {
        if self.ended.is_some() {
            return Ok(());
        }
        let digest = self.write_rest()?;
        let sync = !self.store.has_blob(&digest);
        if sync {
            self.store.sync_file(self.tmp.as_file(), self.tmp.path())?;
        }
        self.ended = Some((digest, sync));
        Ok(())
    }

    /// Writes the last chunk and waits for the disk thread: the blob's digest.
    fn write_rest(&mut self) -> Result<Digest> {
        let tmp_dir = self.store.tmp_dir();
        let written = match self.disk.take() {
            Some(disk) => {
                let tail = self.filled;
                let r = if tail > 0 {
                    let last = std::mem::replace(&mut self.buf, ChunkBuf::empty());
                    disk.to_disk
                        .send((last, tail))
                        .map_err(|_| io::Error::other("the blob writer thread stopped"))
                } else {
                    Ok(())
                };
                let done = disk.finish();
                r.and(done)
            }
            None => self.tmp.as_file().write_all(&self.buf.get()[..self.filled]),
        };
        written.map_err(io_err("writing", &tmp_dir))?;
        self.filled = 0;
        Ok(digest::from_hasher(std::mem::take(&mut self.hasher)))
    }

    /// Makes the blob durable under its digest. With `expected`, a mismatch is an error
    /// and nothing is stored.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let (actual, synced) = match self.ended.take() {
            Some(ended) => ended,
            None => (self.write_rest()?, false),
        };
        let len = self.len;
        if let Some(expected) = expected {
            if *expected != actual {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        // Protected before it is looked up or renamed into place: gc cannot take it now.
        let protected = self.store.protect([&actual])?;
        if self.store.has_blob(&actual) {
            // Content-addressed: an existing blob with this name has these bytes already
            // (and nothing was flushed for it: a no-op rebuild writes nothing to disk).
            return Ok((actual, len));
        }
        let verified = VerifiedTemp {
            tmp: self.tmp,
            digest: actual.clone(),
            bytes: len,
            synced,
        };
        self.store
            .name_blobs(vec![verified], protected, self.started)?;
        Ok((actual, len))
    }
}

/// A blob's bytes in a temp file of the store, already checked against `digest`.
struct VerifiedTemp {
    tmp: tempfile::NamedTempFile,
    digest: Digest,
    bytes: u64,
    /// fsynced already (`BlobWriter::end`).
    synced: bool,
}

impl Store {
    /// Starts a blob write into the store's temp area.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.tmp_dir();
        // Named for its owner: gc removes it only once that process is gone.
        self.lease()?;
        let tmp = crate::sys::hostfs::scratch_file_in(&dir, "blob")
            .map_err(io_err("creating a temp file in", &dir))?;
        Ok(BlobWriter {
            store: self.clone(),
            tmp,
            hasher: sha2::Sha256::new(),
            len: 0,
            buf: ChunkBuf::new(),
            filled: 0,
            allocated: 1,
            disk: None,
            started: std::time::Instant::now(),
            ended: None,
        })
    }

    /// Stores small documents (an image's config and manifest) as blobs, each checked
    /// against its digest, waiting for the disk once per kind of write instead of once per
    /// document: the ones the store lacks are written to temp files, fsynced at once (one
    /// thread each), renamed into place in the order given, and the blobs directory is
    /// fsynced once. As with [`Store::put_blob`], a blob is named only after its bytes are
    /// durable, and the names are durable before this returns. (`put_blob` one after the
    /// other waited for four fsyncs in turn: ~4 ms each on this VM's disk at load 3.)
    pub fn put_small_blobs(&self, docs: &[(&[u8], &Digest)]) -> Result<()> {
        let started = std::time::Instant::now();
        let protected = self.protect(docs.iter().map(|(_, d)| *d))?;
        let dir = self.tmp_dir();
        let mut todo = Vec::new();
        for (bytes, expected) in docs {
            let actual = digest::of_bytes(bytes);
            if actual != **expected {
                return Err(StoreError::DigestMismatch {
                    expected: (*expected).clone(),
                    actual,
                });
            }
            if self.has_blob(expected) {
                continue; // content-addressed: these bytes are stored already
            }
            self.lease()?;
            let mut tmp = crate::sys::hostfs::scratch_file_in(&dir, "blob")
                .map_err(io_err("creating a temp file in", &dir))?;
            tmp.as_file_mut()
                .write_all(bytes)
                .map_err(io_err("writing", tmp.path()))?;
            todo.push(VerifiedTemp {
                tmp,
                digest: actual,
                bytes: bytes.len() as u64,
                synced: false,
            });
        }
        self.name_blobs(todo, protected, started)
    }

    /// The one way a written blob gets its name. Its bytes are in a temp file already
    /// checked against `digest`, and `protected` keeps gc off those digests. The temp files
    /// are fsynced at once, then each is renamed to its digest's name in the order given
    /// (fault points `store.blob-temp` before and `store.blob-stored` after, and a "blob
    /// written" event), the protection is released, and the blobs directory is fsynced
    /// once. A blob is named only after its bytes are durable, and every name is durable
    /// before this returns.
    fn name_blobs(
        &self,
        blobs: Vec<VerifiedTemp>,
        protected: LockGuard,
        started: std::time::Instant,
    ) -> Result<()> {
        self.sync_files(blobs.iter().filter(|b| !b.synced).map(|b| &b.tmp))?;
        let Some(first) = blobs.first().map(|b| self.blob_path(&b.digest)) else {
            return Ok(());
        };
        for b in blobs {
            let dest = self.blob_path(&b.digest);
            crate::fault::point("store.blob-temp");
            crate::sys::hostfs::persist(b.tmp, &dest).map_err(io_err("renaming into", &dest))?;
            crate::fault::point("store.blob-stored");
            let elapsed_ms = started.elapsed().as_millis() as u64;
            tracing::debug!(digest = %b.digest, bytes = b.bytes, elapsed_ms, "blob written");
        }
        drop(protected);
        self.sync_dir(first.parent().expect("blob paths have parents"))
    }

    /// fsyncs temp files at once, one thread each (the first on this one): the disk
    /// writes them together and the caller waits about as long as for one.
    fn sync_files<'a>(
        &self,
        files: impl Iterator<Item = &'a tempfile::NamedTempFile>,
    ) -> Result<()> {
        let files: Vec<_> = files.collect();
        let Some((first, rest)) = files.split_first() else {
            return Ok(());
        };
        std::thread::scope(|s| {
            let others: Vec<_> = rest
                .iter()
                .map(|f| {
                    let sync = move || self.sync_file(f.as_file(), f.path());
                    std::thread::Builder::new()
                        .spawn_scoped(s, sync)
                        .map_err(|_| *f)
                })
                .collect();
            let mut result = self.sync_file(first.as_file(), first.path());
            for other in others {
                let r = match other {
                    Ok(h) => h.join().unwrap_or_else(|_| {
                        Err(StoreError::Io {
                            op: "syncing",
                            path: first.path().to_path_buf(),
                            source: io::Error::other("the syncing thread panicked"),
                        })
                    }),
                    // No thread: synced here.
                    Err(f) => self.sync_file(f.as_file(), f.path()),
                };
                result = result.and(r);
            }
            result
        })
    }

    /// Streams `r` into a blob, verified against `expected` when given. A blob the store
    /// has already is not written again, but the source is still hashed: a source that
    /// lies about its digest is an error either way.
    pub fn put_blob(&self, mut r: impl Read, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        if let Some(d) = expected {
            let have = {
                let _protected = self.protect([d])?;
                self.has_blob(d)
            };
            if have {
                let (actual, len) = digest::of_reader(&mut r)
                    .map_err(io_err("reading blob source for", &self.blob_path(d)))?;
                if actual != *d {
                    return Err(StoreError::DigestMismatch {
                        expected: d.clone(),
                        actual,
                    });
                }
                return Ok((d.clone(), len));
            }
        }
        let mut w = self.blob_writer()?;
        io::copy(&mut r, &mut w).map_err(io_err("writing blob into", &self.tmp_dir()))?;
        w.commit(expected)
    }

    /// Stores a JSON document (canonical bytes) and returns its digest and size.
    pub fn put_json<T: Serialize>(&self, doc: &T) -> Result<(Digest, u64)> {
        let bytes = canonical_json(doc);
        // Named up front, so a document the store has already costs no temp file.
        let d = digest::of_bytes(&bytes);
        self.put_blob(&bytes[..], Some(&d))
    }

    /// Opens a blob for streaming (unverified; `keel fsck` verifies).
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let path = self.blob_path(d);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob { digest: d.clone() },
            _ => io_err("opening", &path)(e),
        })
    }

    /// Reads a whole blob and checks its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open_blob(d)?
            .read_to_end(&mut bytes)
            .map_err(io_err("reading", &self.blob_path(d)))?;
        let actual = digest::of_bytes(&bytes);
        if actual != *d {
            return Err(StoreError::CorruptBlob {
                digest: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Reads and parses a JSON blob.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        d: &Digest,
    ) -> Result<T> {
        let size = std::fs::metadata(self.blob_path(d))
            .map(|m| m.len())
            .unwrap_or(0);
        if size > super::MAX_JSON {
            return Err(StoreError::TooLarge {
                what,
                digest: d.clone(),
                size,
            });
        }
        let bytes = self.read_blob(d)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::BadDocument {
            what,
            digest: d.clone(),
            why: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes no two chunks of which are alike (a shifted chunk would not hash the same).
    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 4093) as u8)
            .collect()
    }

    /// Small documents stored together are each stored exactly, a document the store has
    /// is left as it is, and a digest that does not match refuses the whole call before
    /// anything is named; no temp file is left either way.
    #[test]
    fn small_blobs_stored_together_are_each_exactly_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (config, manifest) = (b"{\"config\":1}".to_vec(), b"{\"manifest\":2}".to_vec());
        let (c, m) = (digest::of_bytes(&config), digest::of_bytes(&manifest));
        let temps = || std::fs::read_dir(store.tmp_dir()).map_or(0, |d| d.count());
        store.put_small_blobs(&[(&config, &c)]).unwrap();
        let before = std::fs::metadata(store.blob_path(&c)).unwrap();
        store
            .put_small_blobs(&[(&config, &c), (&manifest, &m)])
            .unwrap();
        assert_eq!(store.read_blob(&c).unwrap(), config);
        assert_eq!(store.read_blob(&m).unwrap(), manifest);
        use std::os::unix::fs::MetadataExt;
        let after = std::fs::metadata(store.blob_path(&c)).unwrap();
        assert_eq!(
            before.ino(),
            after.ino(),
            "a stored blob is not written again"
        );
        let other = b"other".to_vec();
        let err = store
            .put_small_blobs(&[(&other, &digest::of_bytes(b"x")), (&manifest, &m)])
            .unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(!store.has_blob(&digest::of_bytes(&other)));
        assert_eq!(temps(), 0, "temp files left");
    }

    /// Every size around the chunk and alignment boundaries, more chunks than the pool
    /// holds, durable (`O_DIRECT`) and not, on the temp dir's filesystem and on tmpfs
    /// (no direct I/O: the page-cache path): the stored blob is exactly the bytes.
    #[test]
    fn blobs_of_every_shape_store_exactly_their_bytes() {
        let sizes = [
            0,
            1,
            ALIGN - 1,
            ALIGN + 1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK + ALIGN,
            (POOL + 3) * CHUNK + 4097,
        ];
        for parent in [std::env::temp_dir(), std::path::PathBuf::from("/dev/shm")] {
            let dir = tempfile::tempdir_in(&parent).unwrap();
            for durable in [true, false] {
                let store = Store::open(dir.path()).unwrap();
                let store = if durable {
                    store
                } else {
                    store.without_fsync()
                };
                for &len in &sizes {
                    let bytes = pattern(len);
                    let want = digest::of_bytes(&bytes);
                    let mut w = store.blob_writer().unwrap();
                    w.write_from(&mut &bytes[..], len as u64).unwrap();
                    let (got, n) = w.commit(Some(&want)).unwrap();
                    assert_eq!(
                        (got, n),
                        (want.clone(), len as u64),
                        "{len} bytes in {parent:?}"
                    );
                    assert_eq!(
                        store.read_blob(&want).unwrap(),
                        bytes,
                        "{len} bytes in {parent:?}"
                    );
                    std::fs::remove_file(store.blob_path(&want)).unwrap();
                }
            }
        }
    }

    /// A blob written in pieces of odd sizes (headers and contents, as a layer's tar
    /// writer gives them, across chunk boundaries) and ended before its commit (`end`, as
    /// a layer's commit does while its image writer finishes) is stored under the digest of its bytes, with those bytes; ending twice
    /// or ending a blob the store has already changes nothing.
    #[test]
    fn a_blob_written_in_pieces_and_ended_early_is_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for len in [
            0,
            700,
            CHUNK + 1,
            3 * CHUNK + 513,
            (POOL + 3) * CHUNK + 4097,
        ] {
            let bytes = pattern(len);
            let want = digest::of_bytes(&bytes);
            for (end, again) in [(false, false), (true, false), (true, true)] {
                let mut w = store.blob_writer().unwrap();
                let (mut at, mut step) = (0, 1);
                while at < len {
                    let n = step.min(len - at);
                    match step % 3 {
                        0 => w.write_from(&mut &bytes[at..at + n], n as u64).unwrap(),
                        _ => w.write_all(&bytes[at..at + n]).unwrap(),
                    }
                    at += n;
                    step = (step * 7 + 511) % 300_001;
                }
                if end {
                    w.end().unwrap();
                    w.end().unwrap();
                }
                let (got, n) = w.commit(None).unwrap();
                assert_eq!((got, n), (want.clone(), len as u64), "{len} {end}");
                assert_eq!(store.read_blob(&want).unwrap(), bytes, "{len} {end}");
                if !again {
                    std::fs::remove_file(store.blob_path(&want)).unwrap();
                }
            }
            std::fs::remove_file(store.blob_path(&want)).unwrap();
        }
    }

    /// A blob that is not what it was expected to be is not stored, and leaves no temp
    /// file behind, whichever path its chunks took.
    #[test]
    fn a_mismatching_large_blob_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes = pattern(2 * CHUNK + 17);
        let wrong = digest::of_bytes(b"something else");
        let mut w = store.blob_writer().unwrap();
        w.write_from(&mut &bytes[..], bytes.len() as u64).unwrap();
        assert!(matches!(
            w.commit(Some(&wrong)),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(!store.has_blob(&digest::of_bytes(&bytes)));
        let left: Vec<_> = std::fs::read_dir(store.tmp_dir()).unwrap().collect();
        assert!(left.is_empty(), "temp files left: {left:?}");
    }
}
