//! Blob writes and reads. A blob is streamed into a temp file under `<root>/tmp`, hashed
//! on the way, fsynced, checked against the expected digest, then renamed into
//! `blobs/sha256/<hex>`: a blob path either does not exist or holds exactly its content.
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use serde::Serialize;

use super::{canonical_json, io_err, sync_dir, Result, Store, StoreError};
use crate::digest::{self, Digest, HashingWriter};

/// A blob being written. Dropping it without `commit` deletes the temp file.
pub struct BlobWriter {
    store: Store,
    inner: HashingWriter<BufWriter<tempfile::NamedTempFile>>,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.inner.len()
    }
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Makes the blob durable under its digest. With `expected`, a mismatch is an error
    /// and nothing is stored.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let (actual, len, buf) = self.inner.finish();
        let tmp = buf
            .into_inner()
            .map_err(|e| io_err("writing", &self.store.tmp_dir())(e.into_error()))?;
        if let Some(expected) = expected {
            if *expected != actual {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let dest = self.store.blob_path(&actual);
        if dest.is_file() {
            // Content-addressed: an existing blob with this name has these bytes already.
            return Ok((actual, len));
        }
        tmp.as_file()
            .sync_all()
            .map_err(io_err("syncing", tmp.path()))?;
        tmp.persist(&dest)
            .map_err(|e| io_err("renaming into", &dest)(e.error))?;
        sync_dir(dest.parent().expect("blob paths have parents"))?;
        Ok((actual, len))
    }
}

impl Store {
    /// Starts a blob write into the store's temp area.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.tmp_dir();
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .map_err(io_err("creating a temp file in", &dir))?;
        Ok(BlobWriter {
            store: self.clone(),
            inner: HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp)),
        })
    }

    /// Streams `r` into a blob, verified against `expected` when given.
    pub fn put_blob(&self, mut r: impl Read, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        if let Some(d) = expected {
            if self.has_blob(d) {
                io::copy(&mut r, &mut io::sink())
                    .map_err(io_err("reading blob source for", &self.blob_path(d)))?;
                return Ok((
                    d.clone(),
                    std::fs::metadata(self.blob_path(d))
                        .map(|m| m.len())
                        .unwrap_or(0),
                ));
            }
        }
        let mut w = self.blob_writer()?;
        io::copy(&mut r, &mut w).map_err(io_err("writing blob into", &self.tmp_dir()))?;
        w.commit(expected)
    }

    /// Stores a JSON document (canonical bytes) and returns its digest and size.
    pub fn put_json<T: Serialize>(&self, doc: &T) -> Result<(Digest, u64)> {
        let bytes = canonical_json(doc);
        self.put_blob(&bytes[..], None)
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
        let bytes = self.read_blob(d)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::BadDocument {
            what,
            digest: d.clone(),
            why: e.to_string(),
        })
    }
}
