//! Content for a new version of a layer taken from the old version's blob (issue 14,
//! one file changed in a 10,000-file COPY): the writer of the new tar asks for a file's
//! content by its sha256 and size, and gets the bytes of an old entry with that content
//! instead of opening the source file. Headers are never copied — the writer makes every
//! header itself, as a cold build does — so the new tar is byte for byte what writing
//! it from the sources gives, whatever the old blob holds.
//!
//! Nothing here is trusted: the index is built from the old blob (`index::EntryIndex`),
//! and every content handed out is hashed again and compared with the sha256 asked for.
//! A blob that changed under the index, or lies, yields `None` (the caller reads the
//! source), never wrong bytes.
//!
//! Reads only: the old blob is read forward through a window, since the new tar asks for
//! content in about the order the old one holds it.
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::index::{ContentDigest, EntryIndex, Span, MAX_INDEXED};

/// How much of the old blob is read at a time.
const WINDOW: usize = 1 << 20;

/// The old blob of a layer and its index.
pub struct OldBlob {
    file: File,
    index: Arc<EntryIndex>,
    window: Vec<u8>,
    /// The blob offset of `window[0]`.
    start: u64,
    /// Contents handed out, and asked for but refused (not there, or not what the index
    /// promised).
    pub used: u64,
    pub refused: u64,
}

impl OldBlob {
    /// The blob `file` (uncompressed, read from its start), indexed as `index`.
    pub fn new(file: File, index: Arc<EntryIndex>) -> OldBlob {
        OldBlob {
            file,
            index,
            window: Vec::new(),
            start: 0,
            used: 0,
            refused: 0,
        }
    }

    /// The index this blob was read into.
    pub fn index(&self) -> &Arc<EntryIndex> {
        &self.index
    }

    /// The `len` bytes of content hashing to `digest`, when the old blob has them.
    pub fn content(&mut self, digest: &ContentDigest, len: u64) -> Option<&[u8]> {
        let span = self.index.content(digest);
        let span = span.filter(|s| s.len == len && s.len <= MAX_INDEXED)?;
        let ok = self.fill(span).is_ok() && {
            let at = (span.offset - self.start) as usize;
            let bytes = &self.window[at..at + span.len as usize];
            Sha256::digest(bytes).as_slice() == digest
        };
        if !ok {
            self.refused += 1;
            return None;
        }
        self.used += 1;
        let at = (span.offset - self.start) as usize;
        Some(&self.window[at..at + span.len as usize])
    }

    /// Makes the window cover `span` (reading from its offset on when it does not).
    fn fill(&mut self, span: Span) -> std::io::Result<()> {
        let end = span.offset + span.len;
        let covered = span.offset >= self.start && end <= self.start + self.window.len() as u64;
        if covered {
            return Ok(());
        }
        let want = WINDOW.max(span.len as usize);
        self.window.resize(want, 0);
        let mut got = 0;
        while got < want {
            match self
                .file
                .read_at(&mut self.window[got..], span.offset + got as u64)?
            {
                0 => break,
                n => got += n,
            }
        }
        self.window.truncate(got);
        self.start = span.offset;
        if (got as u64) < span.len {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(body.len() as u64);
            b.append_data(&mut h, path, *body).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn blob(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn sha(b: &[u8]) -> ContentDigest {
        Sha256::digest(b).into()
    }

    #[test]
    fn content_is_found_by_digest_and_checked_again() {
        let old = tar_of(&[("a", b"one"), ("d/b", b"two"), ("c", &[7u8; 3000])]);
        let idx = Arc::new(EntryIndex::of_tar(Cursor::new(old.clone())).unwrap());
        let mut ob = OldBlob::new(blob(&old), idx.clone());
        assert_eq!(ob.content(&sha(b"two"), 3), Some(&b"two"[..]));
        assert_eq!(ob.content(&sha(b"one"), 3), Some(&b"one"[..]), "backwards");
        assert_eq!(
            ob.content(&sha(&[7u8; 3000]), 3000).map(<[u8]>::len),
            Some(3000)
        );
        assert_eq!(ob.content(&sha(b"nope"), 4), None, "not in the blob");
        assert_eq!(ob.content(&sha(b"two"), 4), None, "another size");
        assert_eq!((ob.used, ob.refused), (3, 0));
        // The same index over a blob whose bytes changed since: refused, never handed out.
        let mut lying = old.clone();
        let at = idx.content(&sha(b"two")).unwrap().offset as usize;
        lying[at] = b'X';
        let mut ob = OldBlob::new(blob(&lying), idx);
        assert_eq!(ob.content(&sha(b"two"), 3), None);
        assert_eq!(ob.content(&sha(b"one"), 3), Some(&b"one"[..]));
        assert_eq!((ob.used, ob.refused), (1, 1));
    }

    #[test]
    fn a_short_blob_is_refused() {
        let old = tar_of(&[("a", b"content")]);
        let idx = Arc::new(EntryIndex::of_tar(Cursor::new(old.clone())).unwrap());
        let mut ob = OldBlob::new(blob(&old[..515]), idx);
        assert_eq!(ob.content(&sha(b"content"), 7), None);
    }
}
