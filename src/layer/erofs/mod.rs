//! Writing one layer tarball as an uncompressed erofs image instead of unpacking it
//! (issue 14, "never unpack"): the image is the tree `layer::unpack` would make with
//! `Whiteouts::Overlay` — whiteouts as 0/0 character devices, opaque markers as the
//! overlay opaque xattr — held in one file, for the overlay driver to mount as a lower
//! layer (the kernel mounts erofs images file-backed).
//!
//! The tarball is hostile: the entry rules are `layer::unpack`'s, applied to an
//! in-memory tree instead of a directory. Names go through [`clean_entry_path`]; parent
//! paths resolve in-root as `sys::rootfs` resolves them (symlinks re-rooted at the root,
//! `..` clamped there, at most `MAX_SYMLINKS` links, a dangling link's target created
//! as `mkdir -p` does); a name given again replaces what is there (a directory over a
//! directory keeps it); hardlinks must name an existing non-directory in the layer;
//! device nodes need `allow_devices`. The same entries fail, naming the same entry.
//!
//! File contents of a block or more are written to the image's data blocks as they
//! stream past; smaller ones are kept (up to `INLINE_BUDGET` bytes in all) to be stored
//! after their inodes. `format` lays out and writes the rest at the end. Nothing here
//! touches the filesystem: the caller hands in a reader and a seekable writer.
//!
//! A chunked image (`ImageOptions::chunked`, issue 14's "each COPY'd byte written at most
//! once") copies no file content at all: the stream must be the uncompressed tar that is
//! (or becomes) the layer's blob, and each regular file's data is a chunk reference to its
//! offset in that stream — the blob, attached as the image's extra device when mounted.
//! Contents are still read past (and their length checked) so a truncated stream fails on
//! the entry the unpacker names.
pub mod format;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use tar::EntryType;

use self::format::{Body, Data, Geometry, Inode, Tree, BLOCK, CHUNKED_FIRST_BLOCK, NAME_MAX};
use super::index::{EntryIndex, KnownContents};
use super::tally::{dir_line, Summary};
use super::unpack::{
    is_overlay_metadata, overlay_opaque_xattr, UnpackOptions, UnpackStats, Whiteouts,
    OPAQUE_WHITEOUT, WHITEOUT_PREFIX,
};
use super::{clean_entry_path, LayerError};
use crate::sys::rootfs::MAX_SYMLINKS;

/// The image file in an overlay layer cache entry kept as erofs (instead of `diff/`).
pub const IMAGE: &str = "layer.erofs";
/// Beside a chunked image in a cache entry: the digest of the blob its chunks point into
/// (the device it must be mounted with).
pub const DEVICE: &str = "device";
/// A chunked image's block size: a tar's headers and data start on 512-byte boundaries.
const TAR_BLOCK: u64 = 512;
/// Most bytes of small files held in memory for inline storage; later small files go to
/// data blocks (a layer of a million 4 KiB-less files must not take gigabytes of memory).
pub const INLINE_BUDGET: usize = 64 << 20;
/// Longest symlink target Linux stores (PATH_MAX less its NUL).
const MAX_LINK_TARGET: usize = 4095;

/// What the image is made with: the unpack's options (`whiteouts` must be `Overlay`,
/// `reuse` is not supported), the owner of what the unpacker would create as itself
/// (implied directories, whiteouts, every entry without `preserve_owners`), the time
/// such entries get, and the filesystem's UUID.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    pub unpack: UnpackOptions,
    pub owner: (u32, u32),
    pub now: i64,
    /// Must differ between images an overlay stacks: overlayfs records a copied-up
    /// file's origin (and so keeps its inode number, which tells a hardlink made to it
    /// from a copy) only for lower filesystems with a UUID of their own
    /// (overlayfs.rst, "Non-standard behavior" / `ovl_lower_uuid_ok`).
    pub uuid: [u8; 16],
    /// Regular files' data as chunk references into the (uncompressed) stream itself
    /// rather than copied into the image.
    pub chunked: bool,
}

/// What writing one image gave: the counts an unpack of the same stream gives (its
/// `unchanged` stays empty; `summary` is what `storage::verify::summarize` of the mounted
/// image gives, for the marker; `index`, for a chunked image only, is where the stream's
/// contents lie: `EntryIndex::of_tar` of it without fingerprints) and the image file's
/// size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageStats {
    pub counts: UnpackStats,
    pub image_bytes: u64,
}

/// Writes the erofs image of one layer tar (plain or compressed) to `out`.
pub fn write_image<W: Write + Seek>(
    reader: impl Read + 'static,
    out: &mut W,
    opts: &ImageOptions,
) -> Result<ImageStats, LayerError> {
    write_image_knowing(reader, out, opts, None)
}

/// [`write_image`], a chunked image's index taking the digests of contents the stream's
/// writer knows from `known` instead of hashing them (`layer::tee`).
pub fn write_image_knowing<W: Write + Seek>(
    reader: impl Read + 'static,
    out: &mut W,
    opts: &ImageOptions,
    known: Option<KnownContents>,
) -> Result<ImageStats, LayerError> {
    if opts.unpack.whiteouts != Whiteouts::Overlay || opts.unpack.reuse {
        return Err(LayerError::bad(
            "<options>",
            "an erofs image is an overlay lower layer: whiteouts must be Overlay, without reuse",
        ));
    }
    let mut w = Writer::new(out, opts);
    w.known = known.filter(|_| opts.chunked);
    let geo = match opts.chunked {
        false => {
            super::each_entry(reader, |raw, entry| w.entry(raw, entry))?;
            Geometry::FLAT
        }
        true => {
            let len = with_plain_length(reader, |r| {
                super::each_entry(r, |raw, entry| w.entry(raw, entry))
            })?;
            Geometry::chunked(len.div_ceil(TAR_BLOCK))
        }
    };
    let data_end = w.data_blk;
    let mut stats = std::mem::take(&mut w.stats);
    stats.image_bytes = format::finish(&w.tree, w.out, data_end, opts.uuid, geo)?;
    stats.counts.summary = Some(summary_of(&w.tree));
    stats.counts.index = w
        .index
        .take()
        .map(|i| Box::new(crate::layer::index::NewIndex::Made(i)));
    Ok(stats)
}

/// Hands `reader` to `f` (which may stop early, at the end-of-archive marker) and gives
/// the length of the whole stream: the blob a chunked image points into is all of it.
/// A compressed stream is refused: its offsets are not the blob's.
fn with_plain_length<R: Read + 'static>(
    reader: R,
    f: impl FnOnce(Counted<io::Chain<io::Cursor<Vec<u8>>, R>>) -> Result<(), LayerError>,
) -> Result<u64, LayerError> {
    let mut reader = reader;
    let mut head = Vec::with_capacity(6);
    (&mut reader)
        .take(6)
        .read_to_end(&mut head)
        .map_err(|e| LayerError::bad("<layer>", format!("reading the layer: {e}")))?;
    if super::Compression::sniff(&head) != super::Compression::None {
        return Err(LayerError::bad(
            "<layer>",
            "a chunked erofs image needs the uncompressed tar (its blob) as the stream",
        ));
    }
    let shared = Rc::new(RefCell::new((io::Cursor::new(head).chain(reader), 0u64)));
    f(Counted(shared.clone()))?;
    io::copy(&mut Counted(shared.clone()), &mut io::sink())
        .map_err(|e| LayerError::bad("<layer>", format!("reading the layer's end: {e}")))?;
    let n = shared.borrow().1;
    Ok(n)
}

/// A reader (shared, so what is left can be read after the tar parser is done with it)
/// that counts the bytes read through it.
struct Counted<R>(Rc<RefCell<(R, u64)>>);

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.0.borrow_mut();
        let n = st.0.read(buf)?;
        st.1 += n as u64;
        Ok(n)
    }
}

/// Writes the image of one layer tar to the file `path` (created; its data blocks go
/// through a large buffer), with the unpacker's options as an overlay lower layer's.
pub fn write_image_file(
    reader: impl Read + 'static,
    path: &Path,
    unpack: &UnpackOptions,
    chunked: bool,
) -> Result<ImageStats, LayerError> {
    write_image_file_knowing(reader, path, unpack, chunked, None)
}

/// [`write_image_file`] through [`write_image_knowing`].
pub fn write_image_file_knowing(
    reader: impl Read + 'static,
    path: &Path,
    unpack: &UnpackOptions,
    chunked: bool,
    known: Option<KnownContents>,
) -> Result<ImageStats, LayerError> {
    let shown = || path.display().to_string();
    let f = crate::sys::hostfs::create(path)
        .map_err(|e| LayerError::bad(shown(), format!("creating the image: {e}")))?;
    let mut out = io::BufWriter::with_capacity(1 << 20, f);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let opts = ImageOptions {
        unpack: UnpackOptions {
            whiteouts: Whiteouts::Overlay,
            reuse: false,
            known: None,
            ..unpack.clone()
        },
        owner: (0, 0),
        now: now.as_secs() as i64,
        uuid: fresh_uuid(path, now),
        chunked,
    };
    let stats = write_image_knowing(reader, &mut out, &opts, known)?;
    out.flush()
        .map_err(|e| LayerError::bad(shown(), format!("writing the image: {e}")))?;
    Ok(stats)
}

/// A UUID no other image has: a digest of the image's path, the time to the nanosecond
/// and this process, shaped as a random (version 4) UUID.
fn fresh_uuid(path: &Path, now: std::time::Duration) -> [u8; 16] {
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, path.as_os_str().as_bytes());
    sha2::Digest::update(&mut h, now.as_nanos().to_le_bytes());
    sha2::Digest::update(&mut h, std::process::id().to_le_bytes());
    let d = sha2::Digest::finalize(h);
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = u[6] & 0x0f | 0x40;
    u[8] = u[8] & 0x3f | 0x80;
    u
}

/// The tree's summary as `storage::verify::summarize` walks the mounted image: every
/// path below the root in name order, depth first, the bytes of each regular file's
/// path, and each directory's line.
fn summary_of(tree: &Tree) -> Summary {
    let (mut entries, mut bytes) = (0u64, 0u64);
    let mut dirs = <sha2::Sha256 as sha2::Digest>::new();
    // A directory's path and its children still to visit (last first).
    type Level = (std::path::PathBuf, Vec<(Vec<u8>, usize)>);
    let mut stack: Vec<Level> = Vec::new();
    let kids = |i: usize| -> Vec<(Vec<u8>, usize)> {
        match &tree.inodes[i].body {
            Body::Dir(c) => c.iter().rev().map(|(n, &k)| (n.clone(), k)).collect(),
            _ => Vec::new(),
        }
    };
    stack.push((std::path::PathBuf::new(), kids(0)));
    while let Some((rel, todo)) = stack.last_mut() {
        let Some((name, i)) = todo.pop() else {
            stack.pop();
            continue;
        };
        let path = rel.join(OsStr::from_bytes(&name));
        entries += 1;
        let node = &tree.inodes[i];
        match &node.body {
            Body::File(Data::Inline(b)) => bytes += b.len() as u64,
            Body::File(Data::Blocks { len, .. } | Data::Chunk { len, .. }) => bytes += len,
            Body::Dir(_) => {
                dir_line(&mut dirs, &path, node.mode, node.uid, node.gid);
                stack.push((path, kids(i)));
            }
            _ => {}
        }
    }
    Summary {
        entries,
        bytes,
        dirs: hex::encode(sha2::Digest::finalize(dirs)),
        // An image is never patched (`take_tree`): its names serve nothing.
        names: None,
    }
}

struct Writer<'w, 'o, W> {
    out: &'w mut W,
    opts: &'o ImageOptions,
    tree: Tree,
    /// The next free data block (block 0 holds the superblock).
    data_blk: u32,
    /// Bytes of inline content still allowed in memory.
    budget: usize,
    stats: ImageStats,
    /// A chunked image's stream is the layer's blob, so where its contents lie is where
    /// the blob holds them: indexed here as the stream goes by (contents only,
    /// `EntryIndex::add_content`), it is stored beside the image for the layer's next
    /// version (`layer::derive`) instead of that build reading the blob again.
    index: Option<EntryIndex>,
    /// The content the index just read of the current entry (a regular file's, which
    /// is then no longer in the entry).
    body: Vec<u8>,
    /// What the stream's writer knows of its contents: those the index takes from here
    /// are not read into `body` nor hashed again.
    known: Option<KnownContents>,
}

/// Why a path did not resolve: the unpacker's `RootfsError` causes.
enum Miss {
    NotFound,
    TooLong,
    NotDir,
    Loop,
}

impl<'w, 'o, W: Write + Seek> Writer<'w, 'o, W> {
    fn new(out: &'w mut W, opts: &'o ImageOptions) -> Self {
        let mut w = Writer {
            out,
            opts,
            tree: Tree::default(),
            // A chunked image's first blocks hold the superblock and the device table.
            data_blk: match opts.chunked {
                true => CHUNKED_FIRST_BLOCK,
                false => 1,
            },
            budget: INLINE_BUDGET,
            stats: ImageStats::default(),
            index: opts.chunked.then(EntryIndex::default),
            body: Vec::new(),
            known: None,
        };
        w.tree
            .inodes
            .push(w.made(Body::Dir(BTreeMap::new()), 0o755));
        w
    }

    /// An inode the unpacker would create as itself (not from an entry's metadata).
    fn made(&self, body: Body, mode: u32) -> Inode {
        Inode {
            body,
            mode,
            uid: self.opts.owner.0,
            gid: self.opts.owner.1,
            mtime: self.opts.now,
            xattrs: BTreeMap::new(),
            is_char: true,
        }
    }

    fn children(&mut self, dir: usize) -> &mut BTreeMap<Vec<u8>, usize> {
        match &mut self.tree.inodes[dir].body {
            Body::Dir(c) => c,
            _ => unreachable!("resolved parents are directories"),
        }
    }

    fn child(&self, dir: usize, name: &[u8]) -> Option<usize> {
        match &self.tree.inodes[dir].body {
            Body::Dir(c) => c.get(name).copied(),
            _ => None,
        }
    }

    fn entry<R: Read>(&mut self, raw: &[u8], entry: &mut tar::Entry<R>) -> Result<(), LayerError> {
        let shown = String::from_utf8_lossy(raw).into_owned();
        let rel = clean_entry_path(raw)?;
        if let Some(index) = self.index.as_mut() {
            match known_digest(self.known.as_mut(), entry) {
                Some(digest) => {
                    self.body.clear();
                    index.add_known_content(entry, digest);
                }
                None => {
                    index.add_content(entry, &mut self.body)?;
                }
            }
        }
        self.stats.counts.entries += 1;
        let kind = entry.header().entry_type();
        if super::is_header_only(kind) {
            return Ok(());
        }
        let Some(name) = rel.file_name().map(|n| n.as_bytes().to_vec()) else {
            if kind.is_dir() {
                self.metadata(0, entry, true);
            }
            return Ok(());
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = self
            .resolve(parent_rel, true)
            .map_err(|m| miss(&shown, parent_rel, m))?;
        if let Some(victim) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            self.stats.counts.whiteouts += 1;
            return self.whiteout(&shown, parent, victim);
        }
        match kind {
            EntryType::Directory => self.directory(&shown, parent, name, entry),
            EntryType::Regular | EntryType::Continuous => self.regular(&shown, parent, name, entry),
            EntryType::GNUSparse => Err(LayerError::bad(
                &shown,
                "GNU sparse files are not supported; repack the layer without --sparse",
            )),
            EntryType::Symlink => self.symlink(&shown, parent, name, entry),
            EntryType::Link => self.hardlink(&shown, parent, name, entry),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.node(&shown, kind, parent, name, entry)
            }
            other => Err(LayerError::bad(
                &shown,
                format!("unsupported tar entry type {other:?}"),
            )),
        }
    }

    /// Resolves a directory path in-root as `Rootfs::dir` does (and, with `create`, as
    /// `Rootfs::mkdir_all` does: missing directories made 0755 as the unpacker).
    fn resolve(&mut self, rel: &Path, create: bool) -> Result<usize, Miss> {
        let mut stack = vec![0usize];
        let mut todo: Vec<Vec<u8>> = components_rev(rel.as_os_str().as_bytes());
        let mut links = 0;
        while let Some(c) = todo.pop() {
            let here = *stack.last().expect("the root is never popped");
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            match self.child(here, &c) {
                Some(i) => match &self.tree.inodes[i].body {
                    Body::Dir(_) => stack.push(i),
                    Body::Symlink(target) => {
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(Miss::Loop);
                        }
                        if target.is_empty() {
                            return Err(Miss::NotFound);
                        }
                        if target.starts_with(b"/") {
                            stack.truncate(1);
                        }
                        todo.extend(components_rev(target));
                    }
                    _ => return Err(Miss::NotDir),
                },
                None if create && c.len() <= NAME_MAX => {
                    let dir = self.made(Body::Dir(BTreeMap::new()), 0o755);
                    self.tree.inodes.push(dir);
                    let i = self.tree.inodes.len() - 1;
                    self.children(here).insert(c, i);
                    stack.push(i);
                }
                None if create => return Err(Miss::TooLong),
                None => return Err(Miss::NotFound),
            }
        }
        Ok(*stack.last().expect("root"))
    }

    /// Puts inode `i` at `name` in `dir`, replacing what is there.
    fn put(&mut self, shown: &str, dir: usize, name: Vec<u8>, i: usize) -> Result<(), LayerError> {
        if name.len() > NAME_MAX {
            return Err(LayerError::bad(
                shown,
                // The words of the unpacker's error (ENAMETOOLONG from the kernel).
                format!(
                    "File name too long: a name is longer than the {NAME_MAX} bytes a file name may have"
                ),
            ));
        }
        self.children(dir).insert(name, i);
        Ok(())
    }

    fn push(&mut self, node: Inode) -> usize {
        self.tree.inodes.push(node);
        self.tree.inodes.len() - 1
    }

    fn directory<R: Read>(
        &mut self,
        shown: &str,
        parent: usize,
        name: Vec<u8>,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), LayerError> {
        let i = match self.child(parent, &name) {
            Some(i) if matches!(self.tree.inodes[i].body, Body::Dir(_)) => i,
            _ => {
                let i = self.push(self.made(Body::Dir(BTreeMap::new()), 0o700));
                self.put(shown, parent, name, i)?;
                i
            }
        };
        self.stats.counts.dirs += 1;
        self.metadata(i, entry, true);
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        shown: &str,
        parent: usize,
        name: Vec<u8>,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), LayerError> {
        let want = entry.size();
        let data = if self.opts.chunked {
            // What the index read of the content comes first (it read all or nothing).
            let read = self.body.len() as u64;
            chunk_of(shown, want, read, entry)?
        } else if want < BLOCK && (want as usize) <= self.budget {
            let mut b = Vec::with_capacity(want as usize);
            entry
                .read_to_end(&mut b)
                .map_err(|e| LayerError::bad(shown, format!("reading file content: {e}")))?;
            check_size(shown, want, b.len() as u64)?;
            self.budget -= b.len();
            Data::Inline(b)
        } else {
            self.blocks(shown, want, entry)?
        };
        self.stats.counts.files += 1;
        self.stats.counts.bytes += want;
        let i = self.push(self.made(Body::File(data), 0o600));
        self.put(shown, parent, name, i)?;
        self.metadata(i, entry, false);
        Ok(())
    }

    /// Streams a file's content into whole data blocks.
    fn blocks(
        &mut self,
        shown: &str,
        want: u64,
        entry: &mut impl Read,
    ) -> Result<Data, LayerError> {
        let start = self.data_blk;
        let io = |e: io::Error| LayerError::bad(shown, format!("writing image data: {e}"));
        self.out
            .seek(SeekFrom::Start(u64::from(start) * BLOCK))
            .map_err(io)?;
        let n = io::copy(entry, self.out)
            .map_err(|e| LayerError::bad(shown, format!("reading file content: {e}")))?;
        check_size(shown, want, n)?;
        self.data_blk = u32::try_from(u64::from(start) + n.div_ceil(BLOCK))
            .map_err(|_| LayerError::bad(shown, "the layer is too large for an erofs image"))?;
        Ok(Data::Blocks { start, len: n })
    }

    fn symlink<R: Read>(
        &mut self,
        shown: &str,
        parent: usize,
        name: Vec<u8>,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), LayerError> {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| LayerError::bad(shown, "symlink without a target"))?
            .into_owned();
        if target.is_empty() || target.len() > MAX_LINK_TARGET || target.contains(&0) {
            return Err(LayerError::bad(
                shown,
                format!(
                    "symlink target must be 1 to {MAX_LINK_TARGET} bytes without NUL, it has {}",
                    target.len()
                ),
            ));
        }
        self.stats.counts.symlinks += 1;
        let i = self.push(self.made(Body::Symlink(target), 0o777));
        self.put(shown, parent, name, i)?;
        self.metadata(i, entry, false);
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        shown: &str,
        parent: usize,
        name: Vec<u8>,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), LayerError> {
        let link = entry
            .link_name_bytes()
            .ok_or_else(|| LayerError::bad(shown, "hardlink without a target"))?
            .into_owned();
        let shown_link = String::from_utf8_lossy(&link);
        let rel = clean_entry_path(&link).map_err(|e| {
            LayerError::bad(
                shown,
                format!("hardlink target {shown_link:?} is refused: {e}"),
            )
        })?;
        let src_name = rel
            .file_name()
            .ok_or_else(|| LayerError::bad(shown, "hardlink to the layer root"))?
            .as_bytes();
        let absent = || {
            LayerError::bad(
                shown,
                format!("hardlink target {shown_link:?} does not exist in the layer"),
            )
        };
        let src_dir = match self.resolve(rel.parent().unwrap_or(Path::new("")), false) {
            Ok(d) => d,
            Err(Miss::NotFound) => return Err(absent()),
            Err(m) => return Err(miss(shown, &rel, m)),
        };
        let src = self.child(src_dir, src_name).ok_or_else(absent)?;
        if matches!(self.tree.inodes[src].body, Body::Dir(_)) {
            return Err(LayerError::bad(
                shown,
                format!("hardlink target {shown_link:?} is a directory"),
            ));
        }
        if src_dir == parent && src_name == name.as_slice() {
            return Ok(());
        }
        self.put(shown, parent, name, src)?;
        self.stats.counts.hardlinks += 1;
        Ok(())
    }

    fn node<R: Read>(
        &mut self,
        shown: &str,
        kind: EntryType,
        parent: usize,
        name: Vec<u8>,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), LayerError> {
        self.opts.unpack.check_node(shown, kind)?;
        let h = entry.header();
        let major = h.device_major().ok().flatten().unwrap_or(0);
        let minor = h.device_minor().ok().flatten().unwrap_or(0);
        let body = match kind {
            EntryType::Fifo => Body::Fifo,
            _ => Body::Device(major, minor),
        };
        let mut node = self.made(body, 0o600);
        node.is_char = kind == EntryType::Char;
        let i = self.push(node);
        self.put(shown, parent, name, i)?;
        self.stats.counts.devices += 1;
        self.metadata(i, entry, false);
        Ok(())
    }

    /// `.wh.NAME` becomes a 0/0 character device at NAME; `.wh..wh..opq` marks the parent
    /// opaque (as `Whiteouts::Overlay` unpacks them).
    fn whiteout(&mut self, shown: &str, parent: usize, victim: &[u8]) -> Result<(), LayerError> {
        let opaque = victim == &OPAQUE_WHITEOUT.as_bytes()[WHITEOUT_PREFIX.len()..];
        if victim.is_empty() || victim == b"." || victim == b".." {
            return Err(LayerError::bad(shown, "whiteout names no file"));
        }
        if opaque {
            self.tree.inodes[parent]
                .xattrs
                .insert(overlay_opaque_xattr().to_string(), b"y".to_vec());
            return Ok(());
        }
        let mut dev = self.made(Body::Device(0, 0), 0);
        dev.is_char = true;
        let i = self.push(dev);
        self.put(shown, parent, victim.to_vec(), i)
    }

    /// Owner, mode, xattrs and mtime from the entry, read as the unpacker reads them
    /// (`unpack::entry_meta`: a PAX `mtime` before 1970 included) and set as it sets them
    /// (xattrs best effort: those ext4 refuses on the kind are dropped).
    fn metadata<R: Read>(&mut self, i: usize, entry: &mut tar::Entry<R>, is_dir: bool) {
        let kind = entry.header().entry_type();
        let m = super::unpack::entry_meta(entry, is_dir, &self.opts.unpack);
        let node = &mut self.tree.inodes[i];
        if m.chown {
            (node.uid, node.gid) = (m.uid, m.gid);
        }
        if kind != EntryType::Symlink {
            node.mode = m.mode;
        }
        // user.* and ACLs only on regular files and directories (EPERM elsewhere on ext4).
        let plain = matches!(node.body, Body::File(_) | Body::Dir(_));
        for (k, v) in m.xattrs {
            if is_overlay_metadata(&k) || (!plain && !k.starts_with("security.")) {
                continue;
            }
            node.xattrs.insert(k, v);
        }
        node.mtime = m.mtime;
    }
}

/// The digest the stream's writer gave for `entry`'s content: only for a regular file
/// the index would read, at the offset and of the length the writer said.
fn known_digest<R: Read>(
    known: Option<&mut KnownContents>,
    entry: &tar::Entry<R>,
) -> Option<super::index::ContentDigest> {
    let kind = entry.header().entry_type();
    let file = matches!(kind, EntryType::Regular | EntryType::Continuous);
    if !file || !super::index::indexable(kind, entry.size()) {
        return None;
    }
    known?.at(entry.raw_file_position(), entry.size())
}

/// A regular file's content as a chunk reference to where it is in the stream (read
/// past, not kept: its length, `read` bytes of it already read from `entry`, is checked
/// as the unpacker checks it).
fn chunk_of<R: Read>(
    shown: &str,
    want: u64,
    read: u64,
    entry: &mut tar::Entry<R>,
) -> Result<Data, LayerError> {
    let at = entry.raw_file_position();
    let rest = io::copy(entry, &mut io::sink())
        .map_err(|e| LayerError::bad(shown, format!("reading file content: {e}")))?;
    let n = read + rest;
    check_size(shown, want, n)?;
    if !at.is_multiple_of(TAR_BLOCK) {
        return Err(LayerError::bad(
            shown,
            "file content is not 512-aligned in the tar",
        ));
    }
    let start = u32::try_from(at / TAR_BLOCK)
        .ok()
        .filter(|s| u64::from(*s) + n.div_ceil(TAR_BLOCK) <= u64::from(u32::MAX))
        .ok_or_else(|| {
            LayerError::bad(shown, "the layer is too large for a chunked erofs image")
        })?;
    Ok(Data::Chunk { start, len: n })
}

fn check_size(shown: &str, want: u64, n: u64) -> Result<(), LayerError> {
    match n == want {
        true => Ok(()),
        false => Err(LayerError::bad(
            shown,
            format!(
                "file content is truncated: the header claims {want} bytes, the stream has {n}"
            ),
        )),
    }
}

/// A parent path that did not resolve, as a layer error on entry `shown`.
fn miss(shown: &str, rel: &Path, m: Miss) -> LayerError {
    let why = match m {
        Miss::NotFound => "no such file or directory",
        Miss::TooLong => "File name too long",
        Miss::NotDir => "a component is not a directory",
        Miss::Loop => "too many levels of symbolic links",
    };
    LayerError::bad(shown, format!("resolving {}: {why}", rel.display()))
}

/// The components of a path, last first (for a stack), without empty ones and `.`.
fn components_rev(p: &[u8]) -> Vec<Vec<u8>> {
    p.split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .rev()
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests;
