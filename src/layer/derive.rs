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
//! Reads only: the old blob is mapped (`sys::fs::MappedFile`) and each content hashed
//! where it lies, with no copy out of the page cache (a `pread` window copied the whole
//! blob once per derived layer: docs/performance.md, session 21). A store blob is never
//! changed in place — written under a temp name, renamed in, removed by unlinking — so
//! the mapping holds the bytes the index was read from, or the hash says otherwise.
use std::fs::File;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::index::{ContentDigest, EntryIndex, MAX_INDEXED};
use crate::sys::fs::MappedFile;

/// The old blob of a layer and its index.
pub struct OldBlob {
    blob: MappedFile,
    index: Arc<EntryIndex>,
    /// Contents handed out, and asked for but refused (not there, or not what the index
    /// promised).
    pub used: u64,
    pub refused: u64,
}

impl OldBlob {
    /// The blob `file` (uncompressed), indexed as `index`; None when it cannot be mapped.
    pub fn new(file: &File, index: Arc<EntryIndex>) -> Option<OldBlob> {
        let blob = MappedFile::map(file).ok()?;
        Some(OldBlob {
            blob,
            index,
            used: 0,
            refused: 0,
        })
    }

    /// The index this blob was read into.
    pub fn index(&self) -> &Arc<EntryIndex> {
        &self.index
    }

    /// The `len` bytes of content hashing to `digest`, when the old blob has them.
    pub fn content(&mut self, digest: &ContentDigest, len: u64) -> Option<&[u8]> {
        let span = self.index.content(digest);
        let span = span.filter(|s| s.len == len && s.len <= MAX_INDEXED)?;
        let bytes = usize::try_from(span.offset).ok().and_then(|at| {
            let bytes = self
                .blob
                .bytes()
                .get(at..at.checked_add(span.len as usize)?)?;
            (Sha256::digest(bytes).as_slice() == digest).then_some(bytes)
        });
        match bytes {
            Some(b) => {
                self.used += 1;
                Some(b)
            }
            None => {
                self.refused += 1;
                None
            }
        }
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
        let mut ob = OldBlob::new(&blob(&old), idx.clone()).unwrap();
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
        let mut ob = OldBlob::new(&blob(&lying), idx).unwrap();
        assert_eq!(ob.content(&sha(b"two"), 3), None);
        assert_eq!(ob.content(&sha(b"one"), 3), Some(&b"one"[..]));
        assert_eq!((ob.used, ob.refused), (1, 1));
    }

    #[test]
    fn a_short_blob_is_refused() {
        let old = tar_of(&[("a", b"content")]);
        let idx = Arc::new(EntryIndex::of_tar(Cursor::new(old.clone())).unwrap());
        let mut ob = OldBlob::new(&blob(&old[..515]), idx).unwrap();
        assert_eq!(ob.content(&sha(b"content"), 7), None);
    }
}
