//! Packing a changeset into a reproducible, uncompressed layer tarball.
//!
//! The same tree always gives the same bytes: entries sorted by path (component-wise,
//! so parents come before children), every parent directory of a change included with
//! its real metadata, uid/gid/mode exactly as on disk, mtimes set to `epoch`
//! (`SOURCE_DATE_EPOCH` semantics, <https://reproducible-builds.org/specs/source-date-epoch/>)
//! when one is given, no atime/ctime, empty uname/gname. Deletions become OCI
//! whiteouts (`.wh.NAME`); hardlinks inside the layer stay hardlinks; the
//! `security.capability` xattr (and `user.*` when asked) travel as `SCHILY.xattr` PAX
//! records; other xattrs are host noise (SELinux labels, overlay metadata).
//!
//! This module reads the tree and writes the tar; it does not compress or hash.
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::diff::{Change, ChangeKind};
use super::unpack::WHITEOUT_PREFIX;
use super::LayerError;
use crate::sys::fs as sysfs;

/// How timestamps are written.
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// Every mtime becomes this (seconds since the Unix epoch); `None` keeps the real
    /// mtimes (`--timestamps keep`).
    pub epoch: Option<u64>,
    /// Also keep `user.*` xattrs (off by default: checkouts and downloads carry
    /// host-specific ones, which would break reproducibility).
    pub user_xattrs: bool,
}

/// Counts of what `pack` wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackStats {
    pub entries: u64,
    pub whiteouts: u64,
    /// Bytes of regular-file content.
    pub bytes: u64,
}

/// Extended attributes that are part of an image (others are host noise).
pub(crate) fn keep_xattr(name: &str, opts: &PackOptions) -> bool {
    // `user.overlay.*` is a rootless overlay's own metadata, never the file's.
    name == "security.capability"
        || (opts.user_xattrs && name.starts_with("user.") && !name.starts_with("user.overlay."))
}

pub(crate) enum Item {
    Entry,
    Whiteout,
}

/// Writes `h` as the header of the entry at `path`, preceded by a GNU long-name entry when
/// the path does not fit the header (as `tar::Builder` does), for callers that then write
/// the entry's data themselves: `size` bytes followed by `write_padding`.
pub fn write_header(out: &mut impl Write, h: &mut Header, path: &str) -> io::Result<()> {
    if h.set_path(path).is_err() {
        let name = path.as_bytes();
        let mut long = Header::new_gnu();
        long.as_gnu_mut().expect("a GNU header").name[..13].copy_from_slice(b"././@LongLink");
        long.set_mode(0o644);
        long.set_uid(0);
        long.set_gid(0);
        long.set_mtime(0);
        long.set_size(name.len() as u64 + 1);
        long.set_entry_type(EntryType::GNULongName);
        long.set_cksum();
        out.write_all(long.as_bytes())?;
        out.write_all(name)?;
        out.write_all(&[0])?;
        write_padding(out, name.len() as u64 + 1)?;
        let keep = name.len().min(100);
        h.as_old_mut().name[..keep].copy_from_slice(&name[..keep]);
    }
    h.set_cksum();
    out.write_all(h.as_bytes())
}

/// The zeros that round an entry of `size` data bytes up to tar's 512-byte blocks.
pub fn write_padding(out: &mut impl Write, size: u64) -> io::Result<()> {
    let rest = (size % 512) as usize;
    if rest != 0 {
        out.write_all(&[0; 512][..512 - rest])?;
    }
    Ok(())
}

/// What the layer of `changes` holds, in tar order: every added or modified path, the
/// parents of every change, and a `.wh.NAME` whiteout for every deletion.
pub(crate) fn layer_items(changes: &[Change]) -> Result<BTreeMap<PathBuf, Item>, LayerError> {
    let mut items: BTreeMap<PathBuf, Item> = BTreeMap::new();
    for c in changes {
        let parent = c.path.parent().unwrap_or(Path::new(""));
        for anc in parent.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            items.entry(anc.to_path_buf()).or_insert(Item::Entry);
        }
        match c.kind {
            ChangeKind::Added | ChangeKind::Modified => {
                items.insert(c.path.clone(), Item::Entry);
            }
            ChangeKind::Deleted => {
                let name = c
                    .path
                    .file_name()
                    .ok_or_else(|| LayerError::bad("<root>", "the layer root cannot be deleted"))?;
                let mut wh = OsString::from(WHITEOUT_PREFIX);
                wh.push(name);
                items.insert(parent.join(wh), Item::Whiteout);
            }
        }
    }
    Ok(items)
}

/// Writes the layer for `changes`, reading added and modified paths (and the parents
/// of every change) from `root` — the snapshot's merged root filesystem.
pub fn pack(
    changes: &[Change],
    root: &Path,
    out: impl Write,
    opts: &PackOptions,
) -> Result<PackStats, LayerError> {
    let items = layer_items(changes)?;
    let root_dir = fs::File::open(root).map_err(|e| {
        LayerError::bad(
            root.display().to_string(),
            format!("opening the tree to pack: {e}"),
        )
    })?;
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    let mut packer = Packer {
        b,
        root,
        root_dir,
        opts,
        stats: PackStats::default(),
        links: HashMap::new(),
    };
    for (rel, item) in &items {
        packer.item(rel, item)?;
    }
    packer
        .b
        .finish()
        .map_err(|e| LayerError::bad("<end of layer>", format!("writing tar: {e}")))?;
    Ok(packer.stats)
}

/// One `pack` call's writer and what it has written so far.
struct Packer<'a, W: Write> {
    b: tar::Builder<W>,
    root: &'a Path,
    root_dir: fs::File,
    opts: &'a PackOptions,
    stats: PackStats,
    /// The first path packed of each multiply-linked file (by device and inode).
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> Packer<'_, W> {
    fn item(&mut self, rel: &Path, item: &Item) -> Result<(), LayerError> {
        let err =
            |e: io::Error| LayerError::bad(rel.display().to_string(), format!("packing: {e}"));
        let mut h = Header::new_gnu();
        if let Item::Whiteout = item {
            self.stats.entries += 1;
            self.stats.whiteouts += 1;
            h.set_entry_type(EntryType::Regular);
            h.set_mode(0o644);
            h.set_mtime(self.opts.epoch.unwrap_or(0));
            h.set_size(0);
            return self.b.append_data(&mut h, rel, io::empty()).map_err(err);
        }
        let p = self.root.join(rel);
        let m = fs::symlink_metadata(&p).map_err(err)?;
        let ft = m.file_type();
        if ft.is_socket() {
            // Sockets do not belong in images.
            return Ok(());
        }
        self.stats.entries += 1;
        h.set_uid(m.uid() as u64);
        h.set_gid(m.gid() as u64);
        h.set_mode(m.mode() & 0o7777);
        // A kept mtime before 1970 fits no ustar field: 0 there, the real value in a PAX
        // `mtime` record, as Go's archive/tar writes it (BuildKit's and buildah's layers).
        let before_1970 = (self.opts.epoch.is_none() && m.mtime() < 0).then(|| m.mtime());
        h.set_mtime(self.opts.epoch.unwrap_or(m.mtime().max(0) as u64));
        h.set_size(0);
        self.xattrs(&p, before_1970).map_err(err)?;
        if ft.is_dir() {
            h.set_entry_type(EntryType::Directory);
            self.b.append_data(&mut h, rel, io::empty()).map_err(err)
        } else if ft.is_symlink() {
            h.set_entry_type(EntryType::Symlink);
            let target = fs::read_link(&p).map_err(err)?;
            self.b.append_link(&mut h, rel, &target).map_err(err)
        } else if ft.is_file() {
            self.file(rel, &m, h)
        } else {
            h.set_entry_type(if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            });
            let rdev = m.rdev();
            h.set_device_major(sysfs::dev_major(rdev)).map_err(err)?;
            h.set_device_minor(sysfs::dev_minor(rdev)).map_err(err)?;
            self.b.append_data(&mut h, rel, io::empty()).map_err(err)
        }
    }

    /// The xattrs that are part of an image, as a PAX header before the entry.
    fn xattrs(&mut self, p: &Path, negative_mtime: Option<i64>) -> io::Result<()> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(t) = negative_mtime {
            pax.push(("mtime".into(), t.to_string().into_bytes()));
        }
        if let Ok(names) = sysfs::list_xattrs(p) {
            for n in names.into_iter().filter(|n| keep_xattr(n, self.opts)) {
                if let Ok(Some(v)) = sysfs::get_xattr(p, &n) {
                    pax.push((format!("SCHILY.xattr.{n}"), v));
                }
            }
        }
        if pax.is_empty() {
            return Ok(());
        }
        self.b
            .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }

    /// A regular file: a hardlink entry to its first path when one was packed already,
    /// else its content, read through a handle opened beneath the root.
    fn file(&mut self, rel: &Path, m: &fs::Metadata, mut h: Header) -> Result<(), LayerError> {
        let shown = || rel.display().to_string();
        let err = |e: io::Error| LayerError::bad(shown(), format!("packing: {e}"));
        if m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                h.set_entry_type(EntryType::Link);
                return self.b.append_link(&mut h, rel, first).map_err(err);
            }
            self.links.insert((m.dev(), m.ino()), rel.to_path_buf());
        }
        h.set_entry_type(EntryType::Regular);
        h.set_size(m.size());
        let f = sysfs::open_beneath(&self.root_dir, rel).map_err(err)?;
        let fm = f.metadata().map_err(err)?;
        if (fm.dev(), fm.ino(), fm.size()) != (m.dev(), m.ino(), m.size()) {
            return Err(LayerError::bad(
                shown(),
                "the file changed while it was being packed; pack only a quiescent tree",
            ));
        }
        // A file that changes size while being packed would corrupt the stream.
        self.b
            .append_data(&mut h, rel, io::Read::take(f, m.size()))
            .map_err(err)?;
        self.stats.bytes += m.size();
        Ok(())
    }
}
