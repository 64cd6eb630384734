//! An index of every small entry of a layer tar, so a new version of the layer can be
//! made from the old one touching only the entries that changed (issue 14, one file
//! changed in a 10,000-file COPY): a fingerprint per path, for unpacking the new
//! version over the old one's tree, and where each content lies in the blob, for
//! writing the new version's tar from the old blob (`layer::derive`).
//!
//! An entry's fingerprint covers everything `unpack` reads from it — the 512-byte
//! header, the full path and link name (GNU long names included), the PAX records
//! (xattrs) and the content (through its sha256) — so two entries with the same
//! fingerprint at the same path unpack to the same file. The index is built from the old
//! layer's blob itself, never from the old tree or a stored record: the tree is trusted
//! only to be the unpack of that blob (the layer cache's invariant, checked by `keel
//! fsck --full`), and content found through the index is hashed again when it is used.
//!
//! Must not touch any tree: this module reads a tar and compares fingerprints.
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};
use tar::EntryType;

use super::{clean_entry_path, LayerError};

/// Entries with more content than this are left out of the index: hashing them costs
/// what comparing them with the old tree's file does (`unpack`'s `reuse` mode).
pub const MAX_INDEXED: u64 = 1 << 20;

/// A sha256 over an entry's header, names, PAX records and content digest.
pub type Fingerprint = [u8; 32];

/// The sha256 of an entry's content.
pub type ContentDigest = [u8; 32];

/// The maps of an index: keyed by sha256 digests and paths of 10,000s of entries, looked
/// up once an entry on both sides of a commit. foldhash (seeded per process, as std's
/// SipHash is) hashes a 32-byte key in a few instructions (docs/performance.md, session
/// 15: the index's hashing ~0.9 → ~0.5 ms of a one-file rebuild); which hasher a map
/// uses changes no lookup's answer.
type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

fn map_with_capacity<K, V>(n: usize) -> Map<K, V> {
    Map::with_capacity_and_hasher(n, foldhash::fast::RandomState::default())
}

/// Path (cleaned, as `unpack` sees it) → fingerprint of the one entry at that path; and
/// content digest → where in the tar such content lies.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EntryIndex {
    /// Keyed by the path's bytes: hashing and comparing a `Path` walks its components,
    /// and paths here are clean (`clean_entry_path`), so bytes compare as paths do.
    entries: Map<Box<[u8]>, Option<Fingerprint>>,
    contents: Map<ContentDigest, Span>,
}

/// Where an entry's content lies in the tar: its offset and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub offset: u64,
    pub len: u64,
}

impl EntryIndex {
    /// Indexes an uncompressed layer tar, seeking over the content of entries too big
    /// to index. A path named twice is never matched (which of its entries won is a
    /// question for the unpacker, not for a shortcut).
    pub fn of_tar(r: impl Read + Seek) -> Result<EntryIndex, LayerError> {
        EntryIndex::read_tar(r, true)
    }

    /// [`EntryIndex::of_tar`] without fingerprints (`add_content` per entry): where the
    /// tar holds each content, all a derived layer needs when no tree will be patched.
    pub fn contents_of_tar(r: impl Read + Seek) -> Result<EntryIndex, LayerError> {
        EntryIndex::read_tar(r, false)
    }

    fn read_tar(mut r: impl Read + Seek, fingerprints: bool) -> Result<EntryIndex, LayerError> {
        // Sized for small entries (a header and a block of content each) up front:
        // growing two maps of 10,000s of entries rehashes them into fresh memory.
        let len = r.seek(SeekFrom::End(0))?;
        r.rewind()?;
        let guess = (len / 1024).min(1 << 20) as usize;
        let mut archive = tar::Archive::new(Skipping::new(r));
        let mut idx = EntryIndex {
            entries: map_with_capacity(guess),
            contents: map_with_capacity(guess),
        };
        let mut body = Vec::new();
        for entry in archive.entries_with_seek()? {
            let mut entry = entry?;
            let rel = clean_entry_path(&entry.path_bytes())?;
            match fingerprints {
                true => idx.add(&rel, &mut entry, &mut body)?,
                false => {
                    idx.add_content(&mut entry, &mut body)?;
                }
            }
        }
        Ok(idx)
    }

    /// Indexes the next entry of the stream being indexed, named `rel` (cleaned): an
    /// indexable entry's content is read into `body` (what is left of it in `entry` is
    /// nothing), anything else is left unread. The one rule of [`EntryIndex::of_tar`].
    pub fn add<R: Read>(
        &mut self,
        rel: &Path,
        entry: &mut tar::Entry<R>,
        body: &mut Vec<u8>,
    ) -> Result<(), LayerError> {
        let fp = match self.add_content(entry, body)? {
            Some(content) => Some(fingerprint_of(entry, &content)?),
            None => None,
        };
        use std::collections::hash_map::Entry;
        match self.entries.entry(key_of(rel)) {
            // Named twice: never matched.
            Entry::Occupied(mut again) => {
                again.insert(None);
            }
            Entry::Vacant(first) => {
                first.insert(fp);
            }
        }
        Ok(())
    }

    /// What [`EntryIndex::add`] records of where contents lie, alone: the digest of an
    /// indexable entry's content (read into `body`). The chunked erofs writer indexes
    /// the blob it is made of this way: a derived layer needs only the contents, and a
    /// chunked entry is never patched as a tree, which is what fingerprints are for (an
    /// index without them matches no path: every entry is written again).
    pub fn add_content<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        body: &mut Vec<u8>,
    ) -> Result<Option<ContentDigest>, LayerError> {
        let kind = entry.header().entry_type();
        body.clear();
        if !indexable(kind, entry.size()) {
            return Ok(None);
        }
        entry.read_to_end(body)?;
        let content: ContentDigest = Sha256::digest(&body).into();
        if kind != EntryType::Symlink {
            let at = Span {
                offset: entry.raw_file_position(),
                len: body.len() as u64,
            };
            self.contents.entry(content).or_insert(at);
        }
        Ok(Some(content))
    }

    /// [`EntryIndex::add_content`] of an entry whose content the stream's writer said
    /// hashes to `digest` (`KnownContents`): the same record, without reading the
    /// content (left in `entry` for the caller) or hashing it. Only for a regular file
    /// `add_content` would index.
    pub fn add_known_content<R: Read>(&mut self, entry: &tar::Entry<R>, digest: ContentDigest) {
        let kind = entry.header().entry_type();
        debug_assert!(kind != EntryType::Symlink && indexable(kind, entry.size()));
        let at = Span {
            offset: entry.raw_file_position(),
            len: entry.size(),
        };
        self.contents.entry(digest).or_insert(at);
    }

    /// The index without its fingerprints: what [`EntryIndex::add_content`] alone gives.
    pub fn contents_only(mut self) -> EntryIndex {
        self.entries.clear();
        self
    }

    /// Where the tar holds a regular file's content with this sha256, if it does.
    pub fn content(&self, digest: &ContentDigest) -> Option<Span> {
        self.contents.get(digest).copied()
    }

    /// Whether the old layer had exactly this entry at `rel`.
    pub fn has(&self, rel: &Path, fp: &Fingerprint) -> bool {
        matches!(self.entries.get(rel.as_os_str().as_bytes()), Some(Some(old)) if old == fp)
    }

    /// How many entries can be matched.
    pub fn len(&self) -> usize {
        self.entries.values().filter(|f| f.is_some()).count()
    }

    /// How many paths the index names (matchable or not).
    pub fn paths(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty index with room for `n` entries (growing maps of 10,000s of entries
    /// rehashes them into fresh memory).
    pub fn with_capacity(n: usize) -> EntryIndex {
        EntryIndex {
            entries: map_with_capacity(n),
            contents: map_with_capacity(n),
        }
    }

    /// The index without the entries that can never match (they only served to spot a
    /// path named twice while indexing).
    pub fn matchable(mut self) -> EntryIndex {
        self.entries.retain(|_, fp| fp.is_some());
        self
    }
}

/// The index of a stream as `unpack` takes it down entry by entry, made only when it is
/// used: the unpacker is the slower of a derived layer's two busy threads, and pushing
/// each entry's facts in order costs it less than inserting them into the index's two
/// maps of 10,000s of entries (docs/performance.md, session 22); the build makes the index
/// on its write-behind thread, idle while the next step's container runs. Replayed in
/// order, the notes make the index those inserts made.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Notes(Vec<Note>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Note {
    key: Box<[u8]>,
    /// None: the path was named again, and never matches.
    fp: Option<Fingerprint>,
    content: Option<(ContentDigest, Span)>,
}

impl Notes {
    /// Room for `n` entries.
    pub fn with_capacity(n: usize) -> Notes {
        Notes(Vec::with_capacity(n))
    }

    /// Records an indexable entry named at `rel` for the first time in the stream being
    /// indexed (`unpack` indexing the new version of a layer as it unpacks it), with
    /// where its content lies when it is a regular file.
    pub fn note(&mut self, rel: &Path, fp: Fingerprint, content: Option<(ContentDigest, Span)>) {
        self.0.push(Note {
            key: key_of(rel),
            fp: Some(fp),
            content,
        });
    }

    /// Records that `rel` is named again: it never matches.
    pub fn note_again(&mut self, rel: &Path) {
        self.0.push(Note {
            key: key_of(rel),
            fp: None,
            content: None,
        });
    }

    /// The index the notes describe, without the paths that can never match.
    pub fn index(self) -> EntryIndex {
        let mut idx = EntryIndex::with_capacity(self.0.len());
        for note in self.0 {
            idx.entries.insert(note.key, note.fp);
            if let Some((digest, at)) = note.content {
                idx.contents.entry(digest).or_insert(at);
            }
        }
        idx.matchable()
    }
}

/// The index of a stream just unpacked or written (`unpack::UnpackStats::index`): made
/// already, or the unpacker's notes, made into it when it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewIndex {
    Made(EntryIndex),
    Noted(Notes),
}

impl NewIndex {
    pub fn index(self) -> EntryIndex {
        match self {
            NewIndex::Made(idx) => idx,
            NewIndex::Noted(notes) => notes.index(),
        }
    }
}

/// What the writer of a stream knows of a content it is about to write: the sha256 of
/// the `len` bytes at `offset` (it hashed them, or checked them against that digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownContent {
    pub offset: u64,
    pub len: u64,
    pub digest: ContentDigest,
}

/// The reader's end of what a stream's writer knows of its contents (`layer::tee`
/// sends a [`KnownContent`] before the bytes of the header it belongs to, so by the time
/// the reader parses that header the fact is here): an indexer takes a content's digest
/// from it instead of hashing the content again.
pub struct KnownContents {
    rx: std::sync::mpsc::Receiver<KnownContent>,
    /// A fact received for an entry further on.
    next: Option<KnownContent>,
}

impl KnownContents {
    pub fn new(rx: std::sync::mpsc::Receiver<KnownContent>) -> KnownContents {
        KnownContents { rx, next: None }
    }

    /// The digest of the `len` bytes at `offset`, when the writer said what it is. Facts
    /// arrive in stream order and are asked for in it: one for an earlier offset is
    /// dropped, one for a later offset kept for its entry; only an exact offset and
    /// length match.
    pub fn at(&mut self, offset: u64, len: u64) -> Option<ContentDigest> {
        loop {
            let fact = match self.next.take() {
                Some(f) => f,
                None => self.rx.try_recv().ok()?,
            };
            if fact.offset < offset {
                continue;
            }
            if fact.offset == offset && fact.len == len {
                return Some(fact.digest);
            }
            self.next = Some(fact);
            return None;
        }
    }
}

/// The file beside a cached layer tree holding that tree's [`EntryIndex`] (written when
/// the tree was patched from an earlier version, `unpack` indexing the stream as it went),
/// or beside a chunked erofs image where its blob holds each content (every chunked
/// image: the writer indexes the contents of the stream, which is the blob, as it goes;
/// no fingerprints): the next incremental COPY reads it instead of indexing the blob
/// again (~3 µs an entry). It is as trusted as the tree or image beside it — written
/// into the entry before the entry is renamed into the cache, never changed after — and
/// checked for the blob it claims to describe and for a torn or altered body (a trailing
/// sha256); content found through it is hashed again when used, as with an index built
/// from the blob.
pub const STORED: &str = "entries.idx";
const MAGIC: &[u8; 8] = b"KEELIX01";
/// Larger stored indexes are not read (10,000 entries take ~1 MB).
const MAX_STORED: u64 = 256 << 20;

impl EntryIndex {
    /// The stored form of the index of the layer tar whose sha256 is `blob`.
    pub fn encode(&self, blob: &ContentDigest) -> Vec<u8> {
        let matchable: Vec<_> = self
            .entries
            .iter()
            .filter_map(|(p, f)| Some((p, (*f)?)))
            .collect();
        let mut out = Vec::with_capacity(48 + matchable.len() * 100 + self.contents.len() * 48);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(blob);
        out.extend_from_slice(&(matchable.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.contents.len() as u64).to_le_bytes());
        for (bytes, fp) in matchable {
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
            out.extend_from_slice(&fp);
        }
        for (digest, span) in &self.contents {
            out.extend_from_slice(digest);
            out.extend_from_slice(&span.offset.to_le_bytes());
            out.extend_from_slice(&span.len.to_le_bytes());
        }
        let sum: [u8; 32] = Sha256::digest(&out).into();
        out.extend_from_slice(&sum);
        out
    }

    /// The index stored in `bytes`, when they are whole and describe the blob `blob`.
    pub fn decode(bytes: &[u8], blob: &ContentDigest) -> Option<EntryIndex> {
        let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
        if Sha256::digest(body).as_slice() != sum
            || body.get(..8)? != MAGIC
            || body.get(8..40)? != blob
        {
            return None;
        }
        let mut r = Fields { rest: &body[40..] };
        let (n_entries, n_contents) = (r.u64()?, r.u64()?);
        // Counts are checked against what is left before anything is reserved.
        if n_entries
            .checked_mul(36)?
            .checked_add(n_contents.checked_mul(48)?)?
            > r.rest.len() as u64
        {
            return None;
        }
        let mut idx = EntryIndex {
            entries: map_with_capacity(n_entries as usize),
            contents: map_with_capacity(n_contents as usize),
        };
        for _ in 0..n_entries {
            let len = r.u32()? as usize;
            let path = Box::from(r.take(len)?);
            idx.entries.insert(path, Some(r.take(32)?.try_into().ok()?));
        }
        for _ in 0..n_contents {
            let digest: ContentDigest = r.take(32)?.try_into().ok()?;
            let (offset, len) = (r.u64()?, r.u64()?);
            idx.contents.insert(digest, Span { offset, len });
        }
        r.rest.is_empty().then_some(idx)
    }

    /// The index stored beside the cached tree in `entry` for the blob `blob`, if any.
    pub fn stored(entry: &Path, blob: &ContentDigest) -> Option<EntryIndex> {
        let f = std::fs::File::open(entry.join(STORED)).ok()?;
        let mut bytes = Vec::new();
        f.take(MAX_STORED + 1).read_to_end(&mut bytes).ok()?;
        if bytes.len() as u64 > MAX_STORED {
            return None;
        }
        EntryIndex::decode(&bytes, blob)
    }
}

/// The map key of a (clean) path.
fn key_of(rel: &Path) -> Box<[u8]> {
    Box::from(rel.as_os_str().as_bytes())
}

/// Reads the stored form front to back; `None` past its end.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The entry kinds a fingerprint may stand for: regular files (up to `MAX_INDEXED`
/// bytes) and symlinks. Directories always get their metadata again (their mtime moves
/// with their children), hardlinks are always linked again (their target may be new).
pub fn indexable(kind: EntryType, size: u64) -> bool {
    match kind {
        EntryType::Regular | EntryType::Continuous => size <= MAX_INDEXED,
        EntryType::Symlink => true,
        _ => false,
    }
}

/// Fingerprints `entry`, reading its content (the caller checked `indexable`); what the
/// tests compare indexes with.
#[cfg(test)]
pub fn fingerprint<R: Read>(entry: &mut tar::Entry<R>) -> Result<Fingerprint, LayerError> {
    let mut body = Vec::new();
    entry.read_to_end(&mut body)?;
    fingerprint_of(entry, &Sha256::digest(&body).into())
}

/// Fingerprints `entry` whose content hashes to `content`.
pub fn fingerprint_of<R: Read>(
    entry: &mut tar::Entry<R>,
    content: &ContentDigest,
) -> Result<Fingerprint, LayerError> {
    let mut h = head(entry)?;
    h.update(content);
    Ok(h.finalize().into())
}

/// A buffered reader whose forward seeks stay in its buffer when they can: the tar
/// reader seeks over every entry's padding, and `BufReader::seek` would throw the
/// buffer away each time (a `lseek` and a fresh `read` per entry).
struct Skipping<R> {
    inner: BufReader<R>,
    pos: u64,
}

impl<R: Read + Seek> Skipping<R> {
    fn new(r: R) -> Self {
        Skipping {
            inner: BufReader::with_capacity(1 << 20, r),
            pos: 0,
        }
    }
}

impl<R: Read> Read for Skipping<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Skipping<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        match to {
            SeekFrom::Current(n) => {
                self.inner.seek_relative(n)?;
                self.pos = self.pos.checked_add_signed(n).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
                })?;
            }
            other => self.pos = self.inner.seek(other)?,
        }
        Ok(self.pos)
    }
}

/// The hasher fed with everything but the content. Each variable-length part is
/// length-prefixed, so no two entries feed the same bytes.
fn head<R: Read>(entry: &mut tar::Entry<R>) -> Result<Sha256, LayerError> {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(entry.header().as_bytes());
    part(&entry.path_bytes());
    match entry.link_name_bytes() {
        Some(l) => part(&l),
        None => part(b"\0no link"),
    }
    if let Some(exts) = entry.pax_extensions()? {
        for e in exts {
            let e = e?;
            part(e.key_bytes());
            part(e.value_bytes());
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::path::PathBuf;

    /// Notes replayed make the index the entries named: a path named again never matches,
    /// a content named twice is found where it was first, and only matchable paths count.
    #[test]
    fn notes_make_the_index_their_order_describes() {
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let span = |offset| Span { offset, len: 5 };
        let mut notes = Notes::with_capacity(4);
        notes.note(Path::new("x"), a, Some((c, span(512))));
        notes.note(Path::new("y"), b, Some((c, span(2048))));
        notes.note(Path::new("l"), b, None);
        notes.note_again(Path::new("y"));
        let idx = notes.index();
        assert!(idx.has(Path::new("x"), &a));
        assert!(!idx.has(Path::new("x"), &b));
        assert!(!idx.has(Path::new("y"), &b), "named again: never matched");
        assert!(idx.has(Path::new("l"), &b));
        assert_eq!(idx.content(&c), Some(span(512)));
        assert_eq!((idx.len(), idx.paths()), (2, 2));
        assert_eq!(
            NewIndex::Noted(Notes::default()).index(),
            EntryIndex::default()
        );
    }

    fn tar_of(files: &[(&str, &str, u64)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, body, mtime) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(*mtime);
            h.set_mode(0o644);
            h.set_size(body.len() as u64);
            b.append_data(&mut h, path, body.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Every fingerprint of `tar`'s entries, by path.
    fn prints(tar: &[u8]) -> Vec<(PathBuf, Option<Fingerprint>)> {
        let mut a = tar::Archive::new(Cursor::new(tar.to_vec()));
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let rel = clean_entry_path(&e.path_bytes()).unwrap();
                let ok = indexable(e.header().entry_type(), e.size());
                (rel, ok.then(|| fingerprint(&mut e).unwrap()))
            })
            .collect()
    }

    #[test]
    fn only_an_identical_entry_matches() {
        let long = format!("d/{}", "n".repeat(150)); // a GNU long name
        let old = tar_of(&[
            ("a", "1", 1),
            ("b", "2", 1),
            (&long, "x", 1),
            ("dup", "", 1),
        ]);
        let idx = EntryIndex::of_tar(Cursor::new(old.clone())).unwrap();
        for (rel, fp) in prints(&old) {
            assert!(idx.has(&rel, &fp.unwrap()), "{rel:?}");
        }
        let cases: &[(&str, (&str, &str, u64))] = &[
            ("other content", ("a", "9", 1)),
            ("other mtime", ("a", "1", 2)),
            ("other size", ("b", "22", 1)),
            ("other path", ("c", "1", 1)),
        ];
        for (why, entry) in cases {
            let (rel, fp) = prints(&tar_of(&[*entry])).remove(0);
            assert!(!idx.has(&rel, &fp.unwrap()), "{why}");
        }
        let twice = tar_of(&[("a", "1", 1), ("a", "1", 1)]);
        let idx = EntryIndex::of_tar(Cursor::new(twice.clone())).unwrap();
        let (rel, fp) = prints(&twice).remove(0);
        assert!(!idx.has(&rel, &fp.unwrap()), "a path named twice");
    }

    /// The contents-only reading of a tar is the whole index without fingerprints.
    #[test]
    fn contents_of_a_tar_are_its_index_without_fingerprints() {
        let long = format!("d/{}", "n".repeat(150));
        let tar = tar_of(&[("a", "1", 1), ("b", "1", 2), (&long, "x", 1), ("a", "2", 1)]);
        let whole = EntryIndex::of_tar(Cursor::new(tar.clone())).unwrap();
        let contents = EntryIndex::contents_of_tar(Cursor::new(tar)).unwrap();
        assert!(!whole.is_empty() && contents.is_empty());
        assert_eq!(contents, whole.contents_only());
    }

    #[test]
    fn a_stored_index_reads_back_only_whole_and_for_its_blob() {
        let long = format!("d/{}", "n".repeat(150));
        let tar = tar_of(&[("a", "1", 1), ("b", "2", 1), (&long, "x", 1), ("a", "1", 1)]);
        let idx = EntryIndex::of_tar(Cursor::new(tar.clone()))
            .unwrap()
            .matchable();
        let blob: ContentDigest = Sha256::digest(&tar).into();
        let bytes = idx.encode(&blob);
        assert_eq!(EntryIndex::decode(&bytes, &blob), Some(idx.clone()));
        assert_eq!(EntryIndex::decode(&bytes, &[0u8; 32]), None, "another blob");
        for at in [0, 9, 45, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert_eq!(
                EntryIndex::decode(&bad, &blob),
                None,
                "a flipped byte at {at}"
            );
        }
        for len in [0, 31, 40, bytes.len() - 1] {
            assert_eq!(
                EntryIndex::decode(&bytes[..len], &blob),
                None,
                "cut at {len}"
            );
        }
        // A checksum made over counts that promise more than the body holds.
        let mut huge = bytes[..bytes.len() - 32].to_vec();
        huge[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        let sum: [u8; 32] = Sha256::digest(&huge).into();
        huge.extend_from_slice(&sum);
        assert_eq!(EntryIndex::decode(&huge, &blob), None);
    }
}
