//! The erofs on-disk format, uncompressed (Linux `Documentation/filesystems/erofs.rst`,
//! `fs/erofs/erofs_fs.h`): a superblock at byte 1024, 64-byte extended inodes in a
//! metadata area addressed by 32-byte slots (`nid`), inline xattrs after each inode, file
//! data either in whole blocks (`FLAT_PLAIN`) or, under a block, right after the inode
//! (`FLAT_INLINE`), and directories as blocks of sorted 12-byte dirents with the names
//! after them.
//!
//! A chunked image ([`Geometry::chunked`]) holds no file data at all: its blocks are 512
//! bytes (a tar's data offsets are 512-aligned), each regular file is `CHUNK_BASED` with
//! 8-byte chunk indexes after its inode and xattrs that point into one extra device (the
//! layer's uncompressed tar blob, named in a device table slot after the superblock), so
//! a file's bytes are read straight from the blob (`erofs_fs.h`: `erofs_inode_chunk_info`,
//! `erofs_inode_chunk_index`, `erofs_deviceslot`; `EROFS_FEATURE_INCOMPAT_CHUNKED_FILE`,
//! `_DEVICE_TABLE`).
//!
//! This module only encodes: it gets a finished tree (`Tree`) whose large file contents
//! are already in the image's data blocks (or, chunked, are chunk references into the
//! device), lays out the metadata and writes it. It knows
//! nothing about tar or about where the image goes.
use std::collections::BTreeMap;
use std::io::{self, Seek, SeekFrom, Write};

/// Block size of the flat images keel writes (the page size here; 4 KiB).
pub const BLOCK: u64 = 4096;
const SUPER_OFFSET: u64 = 1024;
/// Where the device table's one slot goes in a chunked image: right after the 128-byte
/// superblock (`devt_slotoff` counts 128-byte slots from byte 0).
const DEVICE_SLOT_OFFSET: u64 = SUPER_OFFSET + 128;
const DEVICE_SLOT: usize = 128;
/// The first block a chunked image's metadata may take: after the superblock and the
/// device slot (512-byte blocks 0–2 hold bytes 0–1535).
pub const CHUNKED_FIRST_BLOCK: u32 = 3;
const FEATURE_CHUNKED_FILE: u32 = 0x4;
const FEATURE_DEVICE_TABLE: u32 = 0x8;
/// `erofs_inode_chunk_info.format`: 8-byte indexes (which name a device) follow the inode.
const CHUNK_FORMAT_INDEXES: u16 = 0x20;
/// Largest chunk size exponent above the block size (`EROFS_CHUNK_FORMAT_BLKBITS_MASK`).
const MAX_CHUNKBITS: u8 = 31;
const CHUNK_INDEX: u64 = 8;
const MAGIC: u32 = 0xE0F5_E1E2;
const INODE_SIZE: u64 = 64;
const SLOT: u64 = 32;
const DIRENT: usize = 12;
/// Longest name a dirent holds (`EROFS_NAME_LEN`).
pub const NAME_MAX: usize = 255;
const FLAT_PLAIN: u16 = 0;
const FLAT_INLINE: u16 = 2;
const CHUNK_BASED: u16 = 4;

/// An image's block size and where its regular files' data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// log2 of the block size.
    pub blkszbits: u8,
    /// Size in blocks of the one extra device chunked files point into, when there is one.
    pub device_blocks: Option<u64>,
}

impl Geometry {
    /// File data copied into the image's own 4 KiB blocks.
    pub const FLAT: Geometry = Geometry {
        blkszbits: 12,
        device_blocks: None,
    };

    /// 512-byte blocks, file data in the extra device of `device_blocks` blocks.
    pub fn chunked(device_blocks: u64) -> Geometry {
        Geometry {
            blkszbits: 9,
            device_blocks: Some(device_blocks),
        }
    }

    pub fn block(&self) -> u64 {
        1 << self.blkszbits
    }
}

/// Where a regular file's (or symlink's) bytes are.
#[derive(Debug, Clone)]
pub enum Data {
    /// Under a block: stored right after the inode.
    Inline(Vec<u8>),
    /// `len` bytes in whole blocks from block `start` (already written).
    Blocks { start: u32, len: u64 },
    /// `len` bytes from block `start` of the extra device (a chunked image's blob).
    Chunk { start: u32, len: u64 },
}

/// What an inode is.
#[derive(Debug, Clone)]
pub enum Body {
    /// Children by name (never `.` or `..`).
    Dir(BTreeMap<Vec<u8>, usize>),
    File(Data),
    Symlink(Vec<u8>),
    /// Character or block device (`S_IFCHR`/`S_IFBLK` in `mode`) with its major/minor.
    Device(u32, u32),
    Fifo,
}

/// One inode: its body and metadata (`mode` holds the permission bits only).
#[derive(Debug, Clone)]
pub struct Inode {
    pub body: Body,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// Full xattr names (`user.x`, `trusted.overlay.opaque`) and values.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Whether `body` is a character device (rather than a block device).
    pub is_char: bool,
}

/// An arena of inodes; index 0 is the root directory.
#[derive(Debug, Default)]
pub struct Tree {
    pub inodes: Vec<Inode>,
}

/// The file type bits of an inode's mode and its dirent type.
fn type_of(i: &Inode) -> (u32, u8) {
    match &i.body {
        Body::File(_) => (0o100000, 1),
        Body::Dir(_) => (0o040000, 2),
        Body::Device(..) if i.is_char => (0o020000, 3),
        Body::Device(..) => (0o060000, 4),
        Body::Fifo => (0o010000, 5),
        Body::Symlink(_) => (0o120000, 7),
    }
}

/// An xattr name as erofs stores it: the prefix index and the rest. `None` for a
/// namespace erofs has no index for (ext4 refuses those too, so unpack drops them).
fn xattr_key(name: &str) -> Option<(u8, &str)> {
    match name {
        "system.posix_acl_access" => return Some((2, "")),
        "system.posix_acl_default" => return Some((3, "")),
        _ => {}
    }
    [("user.", 1), ("trusted.", 4), ("security.", 6)]
        .iter()
        .find_map(|(p, i)| name.strip_prefix(p).map(|rest| (*i, rest)))
        .filter(|(_, rest)| !rest.is_empty() && rest.len() <= 255)
}

/// The inline xattr body (`erofs_xattr_ibody_header` + entries), empty without xattrs.
pub fn xattr_body(xattrs: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, value) in xattrs {
        let Some((index, rest)) = xattr_key(name) else {
            continue;
        };
        let Ok(len) = u16::try_from(value.len()) else {
            continue;
        };
        b.push(rest.len() as u8);
        b.push(index);
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(rest.as_bytes());
        b.extend_from_slice(value);
        b.resize(b.len().next_multiple_of(4), 0);
    }
    if b.is_empty() {
        return b;
    }
    let mut out = vec![0u8; 12];
    out.extend_from_slice(&b);
    out
}

/// A directory's dirent blocks for `entries` (name, nid, type; sorted by name): each
/// block holds as many dirents as fit with their names, zero-padded to the block's end.
fn dir_blocks(entries: &[(Vec<u8>, u64, u8)], block: u64) -> Vec<u8> {
    let size = block as usize;
    let mut out = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let (mut n, mut used) = (0, 0);
        while i + n < entries.len() && used + DIRENT + entries[i + n].0.len() <= size {
            used += DIRENT + entries[i + n].0.len();
            n += 1;
        }
        let block = &entries[i..i + n];
        let mut b = Vec::with_capacity(size);
        let mut nameoff = DIRENT * n;
        for (name, nid, ft) in block {
            b.extend_from_slice(&nid.to_le_bytes());
            b.extend_from_slice(&(nameoff as u16).to_le_bytes());
            b.push(*ft);
            b.push(0);
            nameoff += name.len();
        }
        for (name, ..) in block {
            b.extend_from_slice(name);
        }
        i += n;
        // Every block padded whole, the last too: the kernel reads a name up to the
        // first NUL or the block's end, and a directory's size is then whole blocks, as
        // ext4's directories are (a RUN step's `ls -l` or `stat` of one sees the same).
        b.resize(size, 0);
        out.extend_from_slice(&b);
    }
    out
}

/// The inodes reachable from the root in the order they are laid out (directories
/// before their children), and each one's link count.
fn reachable(tree: &Tree) -> (Vec<usize>, Vec<u32>) {
    let mut order = Vec::new();
    let mut links = vec![0u32; tree.inodes.len()];
    let mut stack = vec![0usize];
    links[0] = 1;
    while let Some(i) = stack.pop() {
        order.push(i);
        if let Body::Dir(children) = &tree.inodes[i].body {
            for &c in children.values().rev() {
                links[c] += 1;
                // A hardlinked inode is laid out once; directories are never linked twice.
                if links[c] == 1 {
                    stack.push(c);
                }
            }
        }
    }
    for &i in &order {
        if let Body::Dir(children) = &tree.inodes[i].body {
            let subdirs = children
                .values()
                .filter(|&&c| matches!(tree.inodes[c].body, Body::Dir(_)))
                .count() as u32;
            links[i] = 2 + subdirs;
        }
    }
    (order, links)
}

/// Where each inode goes: its byte offset in the metadata area, its xattr body and its
/// inline bytes (a small file's content, a symlink's target), or, for such bytes that
/// cannot sit after the inode without crossing a block, the block they are spilled to.
struct Placed {
    at: u64,
    xattrs: Vec<u8>,
    inline: Option<Vec<u8>>,
    spill: Option<(Vec<u8>, u32)>,
}

/// The bytes an inode would keep inline (a small file's content, a symlink's target).
fn inline_of(node: &Inode) -> Option<&Vec<u8>> {
    match &node.body {
        Body::File(Data::Inline(b)) | Body::Symlink(b) if !b.is_empty() => Some(b),
        _ => None,
    }
}

/// A chunked file's chunk size exponent (above the block size) and its chunk count: the
/// smallest chunk that holds the whole file, so a file is one index (the largest chunks
/// there are for a file bigger than that).
fn chunking(len: u64, blkszbits: u8) -> (u8, u64) {
    let blocks = len.div_ceil(1 << blkszbits).max(1);
    let bits = (blocks.next_power_of_two().trailing_zeros() as u8).min(MAX_CHUNKBITS);
    (bits, len.div_ceil(1 << (blkszbits + bits)))
}

/// The inode's bytes before its inline tail: the inode, its xattrs and, for a chunked
/// file, its chunk indexes (8-aligned after the xattrs, as the kernel looks for them).
fn head_len(node: &Inode, xattrs: u64, blkszbits: u8) -> u64 {
    match &node.body {
        Body::File(Data::Chunk { len, .. }) if *len > 0 => {
            let (_, n) = chunking(*len, blkszbits);
            (INODE_SIZE + xattrs).next_multiple_of(CHUNK_INDEX) + n * CHUNK_INDEX
        }
        _ => INODE_SIZE + xattrs,
    }
}

/// Lays the inodes out from offset 0 of the metadata area, each on a 32-byte slot, so no
/// inline data crosses a block boundary (the kernel refuses that): an inode whose tail
/// does not fit in what is left of the block starts the next one, and one whose inode,
/// xattrs and tail do not fit in a block at all has its tail spilled to a data block.
fn place(tree: &Tree, order: &[usize], geo: Geometry) -> (Vec<Option<Placed>>, u64) {
    let block = geo.block();
    let mut placed: Vec<Option<Placed>> = (0..tree.inodes.len()).map(|_| None).collect();
    let mut at = 0u64;
    for &i in order {
        let node = &tree.inodes[i];
        let xattrs = xattr_body(&node.xattrs);
        let head = head_len(node, xattrs.len() as u64, geo.blkszbits);
        let mut inline = inline_of(node).cloned();
        let mut spill = None;
        let tail = inline.as_ref().map_or(0, |b| b.len() as u64);
        if tail > 0 && (at + head) % block + tail > block {
            if head + tail <= block {
                at = at.next_multiple_of(block);
            } else {
                spill = inline.take().map(|b| (b, 0));
            }
        }
        let tail = inline.as_ref().map_or(0, |b| b.len() as u64);
        placed[i] = Some(Placed {
            at,
            xattrs,
            inline,
            spill,
        });
        at = (at + head + tail).next_multiple_of(SLOT);
    }
    (placed, at)
}

/// Writes the metadata area, directory blocks and superblock of `tree` after the data
/// blocks already in `out` (which end at block `data_end`, in `geo`'s blocks); returns
/// the image's size.
pub fn finish<W: Write + Seek>(
    tree: &Tree,
    out: &mut W,
    data_end: u32,
    uuid: [u8; 16],
    geo: Geometry,
) -> io::Result<u64> {
    let block = geo.block();
    let (order, links) = reachable(tree);
    let (placed, meta_len) = place(tree, &order, geo);
    let meta_blk = u64::from(data_end);
    let nids: Vec<u64> = placed
        .iter()
        .map(|p| p.as_ref().map_or(0, |p| p.at / SLOT))
        .collect();
    let nid = |i: usize| nids[i];
    // Directory contents go in blocks after the metadata area.
    let (dirs, mut dir_at) = dir_contents(
        tree,
        &order,
        &nids,
        meta_blk + meta_len.div_ceil(block),
        block,
    );
    let mut placed = placed;
    for p in placed.iter_mut().flatten() {
        if let Some((b, blk)) = p.spill.as_mut() {
            *blk = dir_at as u32;
            dir_at += (b.len() as u64).div_ceil(block);
        }
    }
    let dir_start: BTreeMap<usize, (u64, u64)> = dirs
        .iter()
        .map(|(i, s, b)| (*i, (*s, b.len() as u64)))
        .collect();
    let mut meta = vec![0u8; meta_len as usize];
    for (ino, &i) in order.iter().enumerate() {
        let p = placed[i].as_ref().expect("every reachable inode is placed");
        let node = &tree.inodes[i];
        let bytes = inode_bytes(node, p, links[i], ino as u32, dir_start.get(&i), geo);
        meta[p.at as usize..p.at as usize + bytes.len()].copy_from_slice(&bytes);
    }
    out.seek(SeekFrom::Start(meta_blk * block))?;
    out.write_all(&meta)?;
    for (_, start, blocks) in &dirs {
        out.seek(SeekFrom::Start(start * block))?;
        out.write_all(blocks)?;
    }
    for (b, blk) in placed.iter().flatten().filter_map(|p| p.spill.as_ref()) {
        out.seek(SeekFrom::Start(u64::from(*blk) * block))?;
        out.write_all(b)?;
    }
    let total = dir_at;
    // The image's size is whole blocks (the last directory block is padded).
    out.seek(SeekFrom::Start(total * block - 1))?;
    out.write_all(&[0])?;
    let sb = superblock(nid(0), order.len() as u64, total, meta_blk, uuid, geo);
    out.seek(SeekFrom::Start(SUPER_OFFSET))?;
    out.write_all(&sb)?;
    if let Some(blocks) = geo.device_blocks {
        out.seek(SeekFrom::Start(DEVICE_SLOT_OFFSET))?;
        out.write_all(&device_slot(blocks))?;
    }
    Ok(total * block)
}

/// Every directory's dirent blocks (inode, first block, bytes), laid out from block
/// `first` on, and the block after them.
fn dir_contents(
    tree: &Tree,
    order: &[usize],
    nids: &[u64],
    first: u64,
    block: u64,
) -> (Vec<(usize, u64, Vec<u8>)>, u64) {
    let mut parents = vec![0usize; tree.inodes.len()];
    for &i in order {
        if let Body::Dir(children) = &tree.inodes[i].body {
            for &c in children.values() {
                if matches!(tree.inodes[c].body, Body::Dir(_)) {
                    parents[c] = i;
                }
            }
        }
    }
    let (mut dirs, mut at) = (Vec::new(), first);
    for &i in order {
        let Body::Dir(children) = &tree.inodes[i].body else {
            continue;
        };
        let mut entries: Vec<(Vec<u8>, u64, u8)> = vec![
            (b".".to_vec(), nids[i], 2),
            (b"..".to_vec(), nids[parents[i]], 2),
        ];
        entries.extend(
            children
                .iter()
                .map(|(name, &c)| (name.clone(), nids[c], type_of(&tree.inodes[c]).1)),
        );
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let blocks = dir_blocks(&entries, block);
        let start = at;
        at += (blocks.len() as u64).div_ceil(block);
        dirs.push((i, start, blocks));
    }
    (dirs, at)
}

/// One extended inode with its xattr body and inline bytes.
fn inode_bytes(
    node: &Inode,
    p: &Placed,
    nlink: u32,
    ino: u32,
    dir: Option<&(u64, u64)>,
    geo: Geometry,
) -> Vec<u8> {
    let (ftype, _) = type_of(node);
    let (layout, size, u) = match (&node.body, dir) {
        (Body::File(Data::Chunk { len, .. }), _) if *len > 0 => {
            let (bits, _) = chunking(*len, geo.blkszbits);
            let format = CHUNK_FORMAT_INDEXES | u16::from(bits);
            (CHUNK_BASED, *len, u32::from(format))
        }
        (Body::Dir(_), Some(&(start, len))) => (FLAT_PLAIN, len, start as u32),
        (_, _) if p.spill.is_some() => {
            let (b, blk) = p.spill.as_ref().expect("checked");
            (FLAT_PLAIN, b.len() as u64, *blk)
        }
        (Body::File(Data::Blocks { start, len }), _) => (FLAT_PLAIN, *len, *start),
        (Body::Symlink(b), _) | (Body::File(Data::Inline(b)), _) if b.is_empty() => {
            (FLAT_PLAIN, 0, 0)
        }
        (Body::Symlink(b), _) | (Body::File(Data::Inline(b)), _) => {
            (FLAT_INLINE, b.len() as u64, 0)
        }
        (Body::Device(major, minor), _) => (FLAT_PLAIN, 0, encode_dev(*major, *minor)),
        _ => (FLAT_PLAIN, 0, 0),
    };
    let mut b = Vec::with_capacity(64 + p.xattrs.len());
    b.extend_from_slice(&(1u16 | layout << 1).to_le_bytes()); // extended inode
    let icount = match p.xattrs.len() {
        0 => 0,
        n => 1 + (n - 12) / 4,
    };
    b.extend_from_slice(&(icount as u16).to_le_bytes());
    b.extend_from_slice(&((ftype | node.mode & 0o7777) as u16).to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&u.to_le_bytes());
    b.extend_from_slice(&ino.to_le_bytes());
    b.extend_from_slice(&node.uid.to_le_bytes());
    b.extend_from_slice(&node.gid.to_le_bytes());
    b.extend_from_slice(&(node.mtime as u64).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // mtime nanoseconds: tar has seconds
    b.extend_from_slice(&nlink.to_le_bytes());
    b.resize(64, 0);
    b.extend_from_slice(&p.xattrs);
    if let Some(inline) = p.inline.as_ref().filter(|_| layout == FLAT_INLINE) {
        b.extend_from_slice(inline);
    }
    if let (Body::File(Data::Chunk { start, len }), CHUNK_BASED) = (&node.body, layout) {
        b.extend_from_slice(&chunk_indexes(*start, *len, geo.blkszbits, b.len()));
    }
    b
}

/// The chunk indexes of a file of `len` bytes contiguous from device block `start`, with
/// the padding that 8-aligns them after the `head` bytes of inode and xattrs: each
/// `erofs_inode_chunk_index` is {startblk_hi: 0, device_id: 1, startblk_lo}.
fn chunk_indexes(start: u32, len: u64, blkszbits: u8, head: usize) -> Vec<u8> {
    let (bits, n) = chunking(len, blkszbits);
    let mut b = vec![0u8; head.next_multiple_of(CHUNK_INDEX as usize) - head];
    for k in 0..n {
        let blk = u64::from(start) + (k << bits);
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&(blk as u32).to_le_bytes());
    }
    b
}

/// Linux `new_encode_dev`, what erofs keeps in `i_u.rdev`.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The 128-byte superblock (with the device table's place and features when `geo` has
/// a device).
fn superblock(
    root: u64,
    inos: u64,
    blocks: u64,
    meta_blk: u64,
    uuid: [u8; 16],
    geo: Geometry,
) -> Vec<u8> {
    let mut s = vec![0u8; 128];
    s[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    s[12] = geo.blkszbits;
    s[14..16].copy_from_slice(&(root as u16).to_le_bytes());
    s[16..24].copy_from_slice(&inos.to_le_bytes());
    s[36..40].copy_from_slice(&(blocks as u32).to_le_bytes());
    s[40..44].copy_from_slice(&(meta_blk as u32).to_le_bytes());
    s[48..64].copy_from_slice(&uuid);
    if geo.device_blocks.is_some() {
        let features = FEATURE_CHUNKED_FILE | FEATURE_DEVICE_TABLE;
        s[80..84].copy_from_slice(&features.to_le_bytes());
        s[86..88].copy_from_slice(&1u16.to_le_bytes()); // extra_devices
        let slot = (DEVICE_SLOT_OFFSET / DEVICE_SLOT as u64) as u16;
        s[88..90].copy_from_slice(&slot.to_le_bytes()); // devt_slotoff
    }
    s
}

/// The one `erofs_deviceslot`: a tag (only read when no device is given at mount, which
/// keel never does), the device's size in blocks, mapped at block 0 (unused: the device
/// is named by the chunk indexes' `device_id`, not by a unified address).
fn device_slot(blocks: u64) -> Vec<u8> {
    let mut d = vec![0u8; DEVICE_SLOT];
    let tag = b"keel-layer-blob";
    d[..tag.len()].copy_from_slice(tag);
    d[64..68].copy_from_slice(&(blocks as u32).to_le_bytes());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirents_fill_whole_blocks() {
        let names: Vec<(Vec<u8>, u64, u8)> = (0..400)
            .map(|i| (format!("name-{i:05}").into_bytes(), i, 1))
            .collect();
        let b = dir_blocks(&names, BLOCK);
        // 22 bytes each: 186 fit a block; 400 = 186 + 186 + 28, in three whole blocks.
        assert_eq!(b.len(), 3 * 4096);
        assert_eq!(
            u16::from_le_bytes([b[8192 + 8], b[8192 + 9]]) as usize,
            28 * 12
        );
        assert_eq!(u16::from_le_bytes([b[8], b[9]]) as usize, 186 * 12);
        assert_eq!(&b[186 * 12..186 * 12 + 10], b"name-00000");
    }

    #[test]
    fn xattrs_map_to_their_indexes_or_are_dropped() {
        let cases: &[(&str, Option<(u8, &str)>)] = &[
            ("user.a", Some((1, "a"))),
            ("trusted.overlay.opaque", Some((4, "overlay.opaque"))),
            ("security.capability", Some((6, "capability"))),
            ("system.posix_acl_access", Some((2, ""))),
            ("system.posix_acl_default", Some((3, ""))),
            ("system.other", None),
            ("user.", None),
            ("foo.bar", None),
        ];
        for (name, want) in cases {
            assert_eq!(xattr_key(name), *want, "{name}");
        }
        let mut x = BTreeMap::new();
        x.insert("user.ab".to_string(), b"xyz".to_vec());
        // header 12 + entry 4 + "ab" + "xyz" = 9 → 12
        assert_eq!(xattr_body(&x).len(), 24);
    }

    #[test]
    fn device_numbers_encode_as_the_kernel_decodes() {
        assert_eq!(encode_dev(0, 0), 0);
        assert_eq!(encode_dev(1, 3), 0x103);
        assert_eq!(encode_dev(8, 0x1234), 0x34 | 8 << 8 | 0x1200 << 12);
    }

    #[test]
    fn inline_tails_never_cross_a_block() {
        let file = |n: usize| Inode {
            body: Body::File(Data::Inline(vec![7; n])),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
            is_char: false,
        };
        let mut tree = Tree::default();
        let mut root = file(0);
        root.body = Body::Dir(BTreeMap::new());
        tree.inodes.push(root);
        for (k, n) in [3000, 3000, 100, 4000, 10, 4032].into_iter().enumerate() {
            tree.inodes.push(file(n));
            if let Body::Dir(c) = &mut tree.inodes[0].body {
                c.insert(format!("f{k}").into_bytes(), k + 1);
            }
        }
        let (order, _) = reachable(&tree);
        let (placed, _) = place(&tree, &order, Geometry::FLAT);
        for p in placed.iter().flatten() {
            assert_eq!(p.at % SLOT, 0);
            let end = p.at + INODE_SIZE + p.inline.as_ref().map_or(0, |b| b.len() as u64);
            assert!(p.spill.is_none());
            assert!(
                p.inline.is_none() || (p.at + INODE_SIZE) / BLOCK == (end - 1) / BLOCK,
                "{} .. {end}",
                p.at
            );
        }
    }
}
