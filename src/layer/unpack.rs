//! Unpacking one layer tarball into a directory, safely.
//!
//! The tarball is hostile until proven otherwise: every entry name goes through
//! [`clean_entry_path`], and every entry is created through one [`Rootfs`] handle on
//! the target: parent directories are resolved in-root (symlinks re-rooted at the
//! target, `..` clamped there, see `sys::rootfs`), the final component is never
//! followed, hardlinks must name an existing path inside the target, and device nodes
//! need `allow_devices`.
//! Whiteouts follow the OCI image spec (image-spec `layer.md`, "Whiteouts"): applied to
//! the lower layers already in `target` ([`Whiteouts::Apply`]) or turned into overlayfs
//! whiteouts for a layer unpacked into its own directory ([`Whiteouts::Overlay`]).
//!
//! A stream unpacked into an empty tree takes a fast path while it stays simple (see
//! `Unpacker::fast`): new names are created without looking for something to replace;
//! the first entry off that path ends it, and the rest is unpacked as into any tree.
//!
//! This module must not know about the store or storage drivers: it gets a reader and a
//! directory.
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tar::EntryType;

use super::index::{self, EntryIndex, KnownContents};
use super::{clean_entry_path, LayerError};
use crate::sys::rootfs::{open_file, Dir, Kind, NodeKind, Rootfs, RootfsError};

/// Prefix of an OCI whiteout file name (`.wh.NAME` deletes NAME).
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat a directory as opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Its name for an overlay mounted in a user namespace (`userxattr`, rootless keel:
/// `trusted.*` needs CAP_SYS_ADMIN in the host namespace).
pub const OVERLAY_OPAQUE_USER_XATTR: &str = "user.overlay.opaque";

/// `trusted.*` and, rootless, `user.overlay.*`: overlayfs's own metadata, which a layer
/// must not forge (whiteouts are the only way to delete through a layer).
pub(crate) fn is_overlay_metadata(name: &str) -> bool {
    name.starts_with("trusted.") || name.starts_with("user.overlay.")
}

/// The opaque xattr this process's overlay mounts use (see `sys::fs::mount_overlay`).
pub fn overlay_opaque_xattr() -> &'static str {
    if crate::sys::userns::rootless_cached() {
        OVERLAY_OPAQUE_USER_XATTR
    } else {
        OVERLAY_OPAQUE_XATTR
    }
}

/// How whiteout entries are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Stack layers into one directory: `.wh.NAME` deletes NAME, opaque markers empty
    /// the directory's lower contents (the copy driver).
    Apply,
    /// One layer into its own directory for overlayfs: `.wh.NAME` becomes a 0:0
    /// character device, an opaque marker the `trusted.overlay.opaque=y` xattr.
    Overlay,
}

/// What `unpack` may do besides creating plain files.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    pub whiteouts: Whiteouts,
    /// Create block/char devices and fifos; refused with an error otherwise.
    pub allow_devices: bool,
    /// Apply entry uid/gid (defaults to true when running as root).
    pub preserve_owners: bool,
    /// Apply `SCHILY.xattr.*` PAX records (errors setting them are ignored unless strict).
    pub xattrs: bool,
    /// The target holds an earlier version of this layer (issue 14's incremental COPY):
    /// regular files whose content is already there are kept (content compared, their
    /// metadata and xattrs set again), and at the end everything the layer does not
    /// write is removed, so the result is what unpacking into an empty tree gives.
    pub reuse: bool,
    /// With `reuse`: fingerprints of the old layer's entries. An entry the old layer had
    /// exactly so (`index::EntryIndex::has`), still in the tree as a file or symlink, is
    /// left as it is — not even its metadata is set again.
    pub known: Option<std::sync::Arc<EntryIndex>>,
    /// With `reuse`: the names of the tree's entries as the stream that made it gave
    /// them, hashed (`tally::Summary::names`, from its cache marker). A simple stream
    /// (one the tally counts) that names the same entries in the same order writes every
    /// name the tree has, so nothing is left to sweep: the ~10,000 names of a patched
    /// COPY are not listed again.
    pub old_names: Option<String>,
}

impl UnpackOptions {
    /// Refuses a device node or fifo entry unless the layer is trusted to make them
    /// (`allow_devices`): the one rule for the unpacker and the erofs writer.
    pub(crate) fn check_node(&self, shown: &str, kind: EntryType) -> Result<(), LayerError> {
        if self.allow_devices {
            return Ok(());
        }
        let what = match kind {
            EntryType::Fifo => "fifo",
            _ => "device node",
        };
        Err(LayerError::bad(
            shown,
            format!("{what} entries are not allowed here; only trusted layers may create them"),
        ))
    }
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            whiteouts: Whiteouts::Apply,
            allow_devices: false,
            preserve_owners: crate::sys::proc::is_root(),
            xattrs: true,
            reuse: false,
            known: None,
            old_names: None,
        }
    }
}

/// Counts of what one `unpack` call wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub whiteouts: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Files and symlinks left untouched because the old layer had them exactly so.
    pub unchanged: u64,
    /// Directories already there with the entry's owner and mode (no chown, no chmod;
    /// only their mtime is set).
    pub dirs_kept: u64,
    /// What the tree holds now, counted from the stream (`layer::tally`): when the
    /// stream was simple enough to tell.
    pub summary: Option<super::tally::Summary>,
    /// With `known`: the index of the stream unpacked (`EntryIndex::of_tar` of it, but for
    /// entries a whiteout named first, which it leaves out).
    pub index: Option<Box<index::NewIndex>>,
}

/// Opens a layer blob file (plain or gzip) and unpacks it into `target`.
pub fn unpack_file(
    blob: &Path,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, LayerError> {
    let f = fs::File::open(blob).map_err(|e| {
        LayerError::bad(
            blob.display().to_string(),
            format!("cannot open layer blob: {e}"),
        )
    })?;
    unpack(f, target, opts)
}

/// Extracts one layer tar (plain or gzip) into the existing directory `target`.
pub fn unpack(
    reader: impl Read + 'static,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, LayerError> {
    unpack_knowing(reader, target, opts, None)
}

/// [`unpack`], taking the digests of contents the stream's writer knows from `told`
/// (`layer::tee`) instead of hashing them again where a patch compares an entry with
/// the old layer's (`Unpacker::unchanged`).
pub fn unpack_knowing(
    reader: impl Read + 'static,
    target: &Path,
    opts: &UnpackOptions,
    told: Option<KnownContents>,
) -> Result<UnpackStats, LayerError> {
    let tree = Rootfs::open(target).map_err(|e| {
        LayerError::bad(
            target.display().to_string(),
            format!("unpack target is not usable: {e}"),
        )
    })?;
    let mut u = Unpacker::new(&tree, opts);
    u.told = told;
    u.run(reader)
}

/// Extracts one layer tar (plain or gzip) into the tree `tree` (ADD extracts into a
/// directory of an image this way, with that directory as the root).
pub fn unpack_tree(
    reader: impl Read + 'static,
    tree: &Rootfs,
    opts: &UnpackOptions,
) -> Result<UnpackStats, LayerError> {
    Unpacker::new(tree, opts).run(reader)
}

impl Unpacker<'_, '_> {
    /// Unpacks the stream, then (for a patch) sweeps what the new layer no longer has,
    /// and sets directories' times last.
    fn run(mut self, reader: impl Read + 'static) -> Result<UnpackStats, LayerError> {
        self.stream(reader)?;
        let summary = std::mem::take(&mut self.tally).finish();
        if self.opts.reuse {
            let names = summary.as_ref().and_then(|s| s.names.as_ref());
            let same_names = names.is_some() && names == self.opts.old_names.as_ref();
            if !same_names {
                sweep(&self.tree.root_dir(), Path::new(""), &self.touched)?;
            }
            tracing::debug!(
                entries = self.stats.entries,
                unchanged = self.stats.unchanged,
                dirs_kept = self.stats.dirs_kept,
                indexed = self.opts.known.as_ref().map_or(0, |k| k.len()),
                swept = !same_names,
                "patched the old layer's tree"
            );
        }
        self.stats.summary = summary;
        self.stats.index = self
            .built
            .take()
            .map(|b| Box::new(index::NewIndex::Noted(b)));
        self.set_dir_times()?;
        Ok(self.stats)
    }
}

/// What `reuse_file` found at an entry's name.
enum Reused {
    /// Nothing usable: write the file as usual.
    No,
    /// The same file: done.
    Whole,
    /// The first bytes read from the entry that differ, and the old file with the
    /// length of its prefix known equal.
    Prefix(Vec<u8>, (fs::File, u64)),
    /// The entry's whole content, read to fingerprint it: write the file from it.
    Read(Vec<u8>),
}

/// Relative paths a layer wrote, and their ancestors, by their bytes: hashing and
/// comparing a `Path` walks its components, and these paths are clean (made by
/// `clean_entry_path` and joins of directory listings), so bytes compare as paths do.
/// foldhash (seeded per process, as std's SipHash is), as the entry index's maps: one
/// lookup and one insert per entry of a 10,000-entry patch.
struct Touched(HashSet<Box<[u8]>, foldhash::fast::RandomState>);

impl Touched {
    fn with_capacity(n: usize) -> Touched {
        Touched(HashSet::with_capacity_and_hasher(n, Default::default()))
    }

    fn contains(&self, rel: &Path) -> bool {
        self.0.contains(rel.as_os_str().as_bytes())
    }

    /// Adds `rel` and each ancestor up to the first one already there (looked up before
    /// a name is copied for the set: most entries' parents are there already).
    fn insert_with_parents(&mut self, rel: &Path) {
        let mut p = rel.as_os_str().as_bytes();
        while !p.is_empty() && !self.0.contains(p) {
            self.0.insert(Box::from(p));
            match p.iter().rposition(|&c| c == b'/') {
                Some(slash) => p = &p[..slash],
                None => break,
            }
        }
    }
}

/// In `reuse` mode, after the last entry: removes what the layer did not write.
fn sweep(dir: &Dir, rel: &Path, touched: &Touched) -> Result<(), LayerError> {
    for (name, kind) in dir.list().map_err(bad(dir.shown()))? {
        let r = rel.join(&name);
        if !touched.contains(&r) {
            dir.remove_all(&name).map_err(bad(dir.shown()))?;
        } else if kind == Kind::Dir {
            sweep(&dir.subdir(&name).map_err(bad(dir.shown()))?, &r, touched)?;
        }
    }
    Ok(())
}

/// A `RootfsError` as a layer error on entry `shown`.
fn bad(shown: &str) -> impl FnOnce(RootfsError) -> LayerError + '_ {
    move |e| LayerError::bad(shown, e.to_string())
}

/// What entry metadata is applied to: a name in a resolved directory (never followed),
/// or a regular file still open from its creation.
enum At<'a> {
    Name(&'a Dir, &'a OsStr),
    Open(&'a fs::File),
}

struct Unpacker<'t, 'o> {
    tree: &'t Rootfs,
    opts: &'o UnpackOptions,
    stats: UnpackStats,
    /// Directories (relative to the root) and the mtimes they get at the end.
    dir_times: Vec<(PathBuf, i64)>,
    /// Relative paths this layer wrote (and their ancestors): opaque markers keep them.
    touched: Touched,
    /// The last parent directory resolved (entries come grouped by directory). Dropped
    /// whenever anything is removed, since a removal can change what a path resolves to.
    parent: Option<(PathBuf, Arc<Dir>)>,
    /// The tree's summary as the stream builds it.
    tally: super::tally::Tally,
    /// What the stream's writer knows of its contents (`unpack_knowing`).
    told: Option<KnownContents>,
    /// A directory or symlink was removed from the tree in this stream, so a path may no
    /// longer lead where the old layer's unpack put it: `unchanged` looks again.
    reshaped: bool,
    /// With `known`: the index of this stream, from the fingerprints `unchanged` takes
    /// anyway (stored beside the tree for the layer's next version).
    built: Option<index::Notes>,
    /// The tree was empty and every entry so far took the fast path (`fast`): each name
    /// in the tree is one this stream gave, reached from the root through directories
    /// it made — so a name given for the first time is not there yet.
    simple: bool,
    /// Directories the fast path made (by their path's bytes): a fast entry's parent.
    made: HashSet<Box<[u8]>>,
}

impl<'t, 'o> Unpacker<'t, 'o> {
    fn new(tree: &'t Rootfs, opts: &'o UnpackOptions) -> Unpacker<'t, 'o> {
        Unpacker {
            tree,
            opts,
            stats: UnpackStats::default(),
            dir_times: Vec::new(),
            // Sized for the old layer's entries when known: growing a set of 10,000s of
            // paths rehashes it into fresh memory.
            touched: Touched::with_capacity(opts.known.as_ref().map_or(0, |k| k.paths())),
            parent: None,
            tally: super::tally::Tally::default(),
            told: None,
            reshaped: false,
            built: opts
                .known
                .as_ref()
                .filter(|_| opts.reuse)
                .map(|k| index::Notes::with_capacity(k.len())),
            simple: !opts.reuse && tree.root_dir().list().is_ok_and(|l| l.is_empty()),
            made: HashSet::new(),
        }
    }

    /// Unpacks every entry of the stream.
    fn stream(&mut self, reader: impl Read + 'static) -> Result<(), LayerError> {
        super::each_entry(reader, |raw, entry| self.entry(raw, entry))
    }

    /// Directory mtimes last, deepest first, so creating children does not bump them.
    fn set_dir_times(&mut self) -> Result<(), LayerError> {
        self.dir_times
            .sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
        for (rel, secs) in &self.dir_times {
            // Later entries may have replaced a directory (or one of its parents) with a
            // symlink: re-resolve in-root and touch only what is still a directory there.
            // One whose mtime is already the entry's (a patched tree's directory nothing
            // was added to or removed from) is left as it is: only its atime would change.
            match self.tree.lstat(rel) {
                Ok(Some(s)) if s.kind == Kind::Dir && s.mtime != (*secs, 0) => {}
                _ => continue,
            }
            self.tree.set_times(rel, *secs, 0).map_err(|e| {
                LayerError::bad(rel.display().to_string(), format!("setting mtime: {e}"))
            })?;
        }
        Ok(())
    }

    /// Whether an entry takes the fast path: the stream is still simple, the name is new
    /// in it, the kind is a directory, regular file or symlink, and the parent is the
    /// root or a directory the fast path made. Then the name cannot be in the tree (no
    /// stat before creating it). The first entry that is not fast ends the fast path for
    /// the rest of the stream: from there on the unpack is the serial one, on a tree the
    /// serial one would have made.
    fn fast(&mut self, first: bool, kind: EntryType, parent_rel: &Path) -> bool {
        let fast = self.simple
            && first
            && matches!(
                kind,
                EntryType::Directory
                    | EntryType::Regular
                    | EntryType::Continuous
                    | EntryType::Symlink
            )
            && (parent_rel.as_os_str().is_empty()
                || self.made.contains(parent_rel.as_os_str().as_bytes()));
        if !fast {
            self.simple = false;
        }
        fast
    }
    fn entry<R: Read>(&mut self, raw: &[u8], entry: &mut tar::Entry<R>) -> Result<(), LayerError> {
        // Borrowed unless the name is not UTF-8: it only ever names the entry in errors.
        let shown = String::from_utf8_lossy(raw);
        let shown: &str = &shown;
        let rel = clean_entry_path(raw)?;
        self.stats.entries += 1;
        let kind = entry.header().entry_type();
        if super::is_header_only(kind) {
            return Ok(());
        }
        let Some(name) = rel.file_name() else {
            // The root itself ("./"): only its metadata.
            if kind.is_dir() {
                let root = self.tree.root_dir();
                self.metadata(shown, At::Name(&root, OsStr::new(".")), &rel, entry, true)?;
            }
            return Ok(());
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let name_bytes = name.as_bytes();
        let is_whiteout = name_bytes.starts_with(WHITEOUT_PREFIX.as_bytes());
        if is_whiteout {
            self.tally.broken();
        }
        // Named for the first time in this stream: only then can the tree's file at
        // `rel` still be the old layer's.
        let first = !self.touched.contains(&rel);
        let fast = self.fast(first && !is_whiteout, kind, parent_rel);
        if is_whiteout && self.opts.whiteouts == Whiteouts::Apply {
            // Deleting under a directory the lower layers do not have deletes nothing;
            // it must not create that directory either.
            match self.tree.dir(parent_rel) {
                Err(e) if e.is_not_found() => {
                    self.stats.whiteouts += 1;
                    return Ok(());
                }
                Err(e) => return Err(bad(shown)(e)),
                Ok(_) => {}
            }
        }
        let parent = self.parent_dir(parent_rel, shown)?;
        if let Some(b) = self.built.as_mut().filter(|_| !first) {
            b.note_again(&rel);
        }
        self.touch(&rel);
        if !is_whiteout {
            let size = entry.size();
            self.count(&rel, first, entry.header(), size);
        }

        if is_whiteout {
            self.stats.whiteouts += 1;
            if self.opts.whiteouts == Whiteouts::Overlay {
                // The whiteout device is made under the victim's name (kept by `sweep`).
                let victim = OsStr::from_bytes(&name_bytes[WHITEOUT_PREFIX.len()..]);
                self.touch(&parent_rel.join(victim));
            }
            return self.whiteout(
                shown,
                &parent,
                parent_rel,
                &name_bytes[WHITEOUT_PREFIX.len()..],
            );
        }
        let at = Place {
            parent: &parent,
            name,
            rel: &rel,
            shown,
            first,
            fast,
        };
        self.place(kind, at, entry)
    }

    /// Creates the entry `at` names (a directory, file, link or node) with its metadata.
    fn place<R: Read>(
        &mut self,
        kind: EntryType,
        at: Place<'_>,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), LayerError> {
        let shown = at.shown;
        match kind {
            EntryType::Directory => self.directory(at, entry),
            EntryType::Regular | EntryType::Continuous => self.regular(at, entry),
            EntryType::GNUSparse => Err(LayerError::bad(
                shown,
                "GNU sparse files are not supported; repack the layer without --sparse",
            )),
            EntryType::Symlink => self.symlink(at, entry),
            EntryType::Link => self.hardlink(at, entry),
            EntryType::Char | EntryType::Block | EntryType::Fifo => self.node(kind, at, entry),
            other => Err(LayerError::bad(
                shown,
                format!("unsupported tar entry type {other:?}"),
            )),
        }
    }

    fn directory<R: Read>(
        &mut self,
        at: Place<'_>,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), LayerError> {
        let Place {
            parent,
            name,
            rel,
            shown,
            fast,
            ..
        } = at;
        // The fast path knows the name is not there.
        let there = match fast {
            true => None,
            false => parent.stat(name).map_err(bad(shown))?,
        };
        let kept = match there {
            Some(m) if m.kind == Kind::Dir => Some(m),
            Some(_) => {
                self.replace(parent, name, shown)?;
                parent.mkdir(name, 0o700).map_err(bad(shown))?;
                None
            }
            None => {
                parent.mkdir(name, 0o700).map_err(bad(shown))?;
                None
            }
        };
        if fast {
            self.made.insert(Box::from(rel.as_os_str().as_bytes()));
        }
        self.stats.dirs += 1;
        // A directory already there with the entry's owner and mode (a patched tree's
        // unchanged directories, issue 14) needs neither chown nor chmod: the result is
        // what they would leave. Its mtime is still set at the end, with the others'.
        if let Some(st) = kept {
            let m = self.meta_of(entry, true);
            let owner_same = !m.chown || (st.uid, st.gid) == (m.uid, m.gid);
            if owner_same && st.mode == m.mode && m.xattrs.is_empty() {
                self.stats.dirs_kept += 1;
                self.dir_times.push((rel.to_path_buf(), m.mtime));
                return Ok(());
            }
        }
        self.metadata(shown, At::Name(parent, name), rel, entry, true)
    }

    fn symlink<R: Read>(
        &mut self,
        at: Place<'_>,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), LayerError> {
        let Place {
            parent,
            name,
            rel,
            shown,
            first,
            fast,
        } = at;
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| LayerError::bad(shown, "symlink without a target"))?
            .into_owned();
        let empty = <sha2::Sha256 as sha2::Digest>::digest([]).into();
        if first && self.unchanged(parent, name, rel, entry, (empty, 0), Kind::Symlink)? {
            return Ok(());
        }
        if !fast {
            self.replace(parent, name, shown)?;
        }
        parent
            .symlink(OsStr::from_bytes(&target), name)
            .map_err(bad(shown))?;
        self.stats.symlinks += 1;
        self.metadata(shown, At::Name(parent, name), rel, entry, false)
    }

    fn hardlink<R: Read>(
        &mut self,
        at: Place<'_>,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), LayerError> {
        let Place {
            parent,
            name,
            shown,
            ..
        } = at;
        let link = entry
            .link_name_bytes()
            .ok_or_else(|| LayerError::bad(shown, "hardlink without a target"))?
            .into_owned();
        let (src_dir, src_name) = self.hardlink_source(&link, shown)?;
        if same_entry(&src_dir, &src_name, parent, name) {
            return Ok(());
        }
        self.replace(parent, name, shown)?;
        // link(2) does not follow a symlink named as the source, so the new name
        // shares the inode found inside the target.
        parent
            .hardlink_from(&src_dir, &src_name, name)
            .map_err(bad(shown))?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// A device node or fifo (only with `allow_devices`).
    fn node<R: Read>(
        &mut self,
        kind: EntryType,
        at: Place<'_>,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), LayerError> {
        let Place {
            parent,
            name,
            rel,
            shown,
            ..
        } = at;
        self.opts.check_node(shown, kind)?;
        let k = match kind {
            EntryType::Char => NodeKind::Char,
            EntryType::Block => NodeKind::Block,
            _ => NodeKind::Fifo,
        };
        let h = entry.header();
        let major = h.device_major().ok().flatten().unwrap_or(0) as u64;
        let minor = h.device_minor().ok().flatten().unwrap_or(0) as u64;
        let mode = h.mode().unwrap_or(0o600);
        self.replace(parent, name, shown)?;
        parent
            .mknod(name, k, mode, major, minor)
            .map_err(bad(shown))?;
        self.stats.devices += 1;
        self.metadata(shown, At::Name(parent, name), rel, entry, false)
    }

    /// A regular file entry: written anew, or in `reuse` mode kept (or rewritten from
    /// the first byte that differs) when the tree already has it.
    fn regular<R: Read>(
        &mut self,
        at: Place<'_>,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), LayerError> {
        let Place {
            parent,
            name,
            rel,
            shown,
            first,
            fast,
        } = at;
        let kept = match (self.opts.reuse, &self.opts.known) {
            (true, Some(_)) if first && index::indexable(EntryType::Regular, entry.size()) => {
                self.known_file(parent, name, rel, shown, entry)?
            }
            (true, _) => self.reuse_file(parent, name, rel, shown, entry)?,
            (false, _) => Reused::No,
        };
        let (prefix, mut old) = match kept {
            Reused::Whole => return Ok(()),
            Reused::Prefix(p, old) => (p, Some(old)),
            Reused::Read(p) => (p, None),
            Reused::No => (Vec::new(), None),
        };
        if !fast {
            self.replace(parent, name, shown)?;
        }
        let mode = entry.header().mode().unwrap_or(0o644);
        let mut f = parent
            .create_file(name, mode & 0o700 | 0o600)
            .map_err(bad(shown))?;
        let want = entry.size();
        // With a reused file that differs: the part known equal comes from the old
        // file (unlinked, still open), then what the stream still holds.
        let mut n = 0;
        if let Some((old, same)) = old.as_mut() {
            use std::io::Seek;
            let copied = old
                .rewind()
                .and_then(|()| io::copy(&mut Read::take(&mut *old, *same), &mut f))
                .map_err(|e| LayerError::bad(shown, format!("rewriting: {e}")))?;
            n = copied;
        }
        io::Write::write_all(&mut f, &prefix)
            .map_err(|e| LayerError::bad(shown, format!("writing file content: {e}")))?;
        n += prefix.len() as u64;
        n += io::copy(entry, &mut f)
            .map_err(|e| LayerError::bad(shown, format!("reading file content: {e}")))?;
        if n != want {
            return Err(truncated(shown, want, n));
        }
        self.stats.files += 1;
        self.stats.bytes += n;
        self.metadata(shown, At::Open(&f), rel, entry, false)
    }

    /// In `reuse` mode: whether the regular file the entry describes is already at
    /// `name` (same size, one link, same bytes — compared as the entry is read). A
    /// match gets the entry's metadata and its xattrs only. On a difference the bytes
    /// read so far that differ (`Prefix`) and the old file with the length known equal
    /// are handed back for the caller to write the file anew.
    fn reuse_file<R: Read>(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        rel: &Path,
        shown: &str,
        entry: &mut tar::Entry<R>,
    ) -> Result<Reused, LayerError> {
        use std::os::unix::fs::MetadataExt;
        match parent.stat(name).map_err(bad(shown))? {
            Some(st) if st.kind == Kind::File && st.size == entry.size() => {}
            _ => return Ok(Reused::No),
        }
        let mut old = self.tree.open_read(rel).map_err(bad(shown))?;
        let io_err = |e: io::Error| LayerError::bad(shown, format!("comparing content: {e}"));
        if old.metadata().map_err(io_err)?.nlink() != 1 {
            return Ok(Reused::No);
        }
        let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
        let mut same = 0u64;
        loop {
            let n = super::read_up_to(entry, &mut a).map_err(io_err)?;
            if n == 0 {
                break;
            }
            let m = super::read_up_to(&mut old, &mut b[..n]).map_err(io_err)?;
            if m != n || a[..n] != b[..n] {
                return Ok(Reused::Prefix(a[..n].to_vec(), (old, same)));
            }
            same += n as u64;
        }
        // Kept: only what a fresh file would get from the entry.
        for x in parent.xattr_names(name).map_err(bad(shown))? {
            parent.remove_xattr(name, &x).map_err(bad(shown))?;
        }
        self.stats.files += 1;
        self.stats.bytes += same;
        self.metadata(shown, At::Name(parent, name), rel, entry, false)?;
        Ok(Reused::Whole)
    }

    /// In `reuse` mode with an index: the entry (content read whole, it is small) is
    /// kept as the old layer left it when its fingerprint is the old entry's.
    fn known_file<R: Read>(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        rel: &Path,
        shown: &str,
        entry: &mut tar::Entry<R>,
    ) -> Result<Reused, LayerError> {
        let len = entry.size();
        let mut body = Vec::new();
        let read = |entry: &mut tar::Entry<R>, body: &mut Vec<u8>| {
            body.reserve_exact(len as usize);
            entry
                .read_to_end(body)
                .map_err(|e| LayerError::bad(shown, format!("reading file content: {e}")))
        };
        // A content whose digest the writer told is read only when the entry changed: an
        // unchanged one's bytes are skipped with the stream, never copied out.
        let told = self
            .told
            .as_mut()
            .and_then(|t| t.at(entry.raw_file_position(), len));
        let content = match told {
            Some(digest) => digest,
            None => {
                read(entry, &mut body)?;
                <sha2::Sha256 as sha2::Digest>::digest(&body).into()
            }
        };
        if self.unchanged(parent, name, rel, entry, (content, len), Kind::File)? {
            return Ok(Reused::Whole);
        }
        if told.is_some() {
            read(entry, &mut body)?;
        }
        Ok(Reused::Read(body))
    }

    /// Whether the entry (its content's digest and length given) is one the old layer
    /// had exactly so (and, after a reshaping removal, the tree still has a `kind` of its
    /// size at `name`): then it is counted and left alone.
    fn unchanged<R: Read>(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        rel: &Path,
        entry: &mut tar::Entry<R>,
        (content, len): (index::ContentDigest, u64),
        kind: Kind,
    ) -> Result<bool, LayerError> {
        let Some(known) = self.opts.known.as_ref().filter(|_| self.opts.reuse) else {
            return Ok(false);
        };
        let fp = index::fingerprint_of(entry, &content)?;
        if let Some(b) = self.built.as_mut() {
            let span = index::Span {
                offset: entry.raw_file_position(),
                len,
            };
            b.note(rel, fp, (kind == Kind::File).then_some((content, span)));
        }
        if !known.has(rel, &fp) {
            return Ok(false);
        }
        // The old tree is the unpack of the old blob (the layer cache's invariant, which
        // mounting it as a lower layer relies on as well), so the entry is there as the
        // old layer left it — unless this stream removed a directory or symlink on the
        // way to it: only then is it looked at.
        if self.reshaped {
            let shown = rel.display().to_string();
            let there = parent.stat(name).map_err(bad(&shown))?;
            let size = match kind {
                Kind::File => Some(len),
                _ => None,
            };
            if !matches!(there, Some(st) if st.kind == kind && size.is_none_or(|s| s == st.size)) {
                return Ok(false);
            }
        }
        self.stats.unchanged += 1;
        match kind {
            Kind::File => self.stats.files += 1,
            _ => self.stats.symlinks += 1,
        }
        Ok(true)
    }

    /// Counts the entry in the tally with the mode and owner `metadata` gives it.
    fn count(&mut self, rel: &Path, first: bool, h: &tar::Header, size: u64) {
        if !self.opts.preserve_owners {
            return self.tally.broken(); // owners are then this process's
        }
        let kind = h.entry_type();
        let mode = h
            .mode()
            .unwrap_or(if kind.is_dir() { 0o755 } else { 0o644 })
            & 0o7777;
        let (uid, gid) = (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
        self.tally.note(rel, first, kind, size, mode, uid, gid);
    }

    fn touch(&mut self, rel: &Path) {
        self.touched.insert_with_parents(rel);
    }

    /// Clears `name` in `dir` so the new entry replaces it (never following it).
    fn replace(&mut self, dir: &Dir, name: &OsStr, shown: &str) -> Result<(), LayerError> {
        if let Some(st) = dir.stat(name).map_err(bad(shown))? {
            self.parent = None;
            self.reshaped |= matches!(st.kind, Kind::Dir | Kind::Symlink);
            dir.remove_all(name).map_err(bad(shown))?;
        }
        Ok(())
    }

    /// Owner, mode, xattrs and mtime (deferred for directories) from the entry header.
    fn metadata<R: Read>(
        &mut self,
        shown: &str,
        at: At<'_>,
        rel: &Path,
        entry: &mut tar::Entry<R>,
        is_dir: bool,
    ) -> Result<(), LayerError> {
        let m = self.meta_of(entry, is_dir);
        let is_link = entry.header().entry_type() == EntryType::Symlink;
        let (dir, name) = match at {
            At::Name(dir, name) => (dir, name),
            At::Open(f) => return apply_open(f, &m, shown),
        };
        let ctx =
            |what: &str, e: &dyn std::fmt::Display| LayerError::bad(shown, format!("{what}: {e}"));
        let root = name == ".";
        if m.chown {
            if root {
                dir.lchown_self(m.uid, m.gid)
            } else {
                dir.lchown(name, m.uid, m.gid)
            }
            .map_err(|e| ctx("changing owner", &e))?;
        }
        // chmod after chown: chown clears setuid/setgid bits.
        if !is_link {
            if root {
                dir.chmod_self(m.mode)
            } else {
                dir.chmod(name, m.mode)
            }
            .map_err(|e| ctx("changing mode", &e))?;
        }
        // `trusted.*` is overlayfs's own metadata (opaque, redirect, metacopy): a layer
        // must not forge it. Whiteouts are the only way to delete through a layer.
        for (k, v) in m.xattrs.iter().filter(|(k, _)| !is_overlay_metadata(k)) {
            // Unprivileged or unsupported namespaces are skipped: xattrs are best effort.
            let _ = dir.set_xattr(name, k, v);
        }
        if is_dir {
            self.dir_times.push((rel.to_path_buf(), m.mtime));
        } else {
            dir.set_times(name, m.mtime, 0)
                .map_err(|e| ctx("setting mtime", &e))?;
        }
        Ok(())
    }

    /// What `metadata` gives the entry (see [`entry_meta`]).
    fn meta_of<R: Read>(&self, entry: &mut tar::Entry<R>, is_dir: bool) -> FileMeta {
        entry_meta(entry, is_dir, self.opts)
    }

    fn whiteout(
        &mut self,
        shown: &str,
        parent: &Dir,
        parent_rel: &Path,
        victim: &[u8],
    ) -> Result<(), LayerError> {
        let opaque = victim == &OPAQUE_WHITEOUT.as_bytes()[WHITEOUT_PREFIX.len()..];
        if victim.is_empty() || victim == b"." || victim == b".." {
            return Err(LayerError::bad(shown, "whiteout names no file"));
        }
        let victim = OsStr::from_bytes(victim);
        match (self.opts.whiteouts, opaque) {
            (Whiteouts::Apply, false) => self.replace(parent, victim, shown)?,
            (Whiteouts::Apply, true) => {
                self.parent = None;
                self.reshaped = true;
                self.prune_lower(parent, parent_rel, shown)?
            }
            (Whiteouts::Overlay, false) => {
                self.replace(parent, victim, shown)?;
                parent.mknod(victim, NodeKind::Char, 0, 0, 0).map_err(|e| {
                    LayerError::bad(
                        shown,
                        format!("creating overlay whiteout (needs CAP_MKNOD): {e}"),
                    )
                })?;
            }
            (Whiteouts::Overlay, true) => parent
                .set_xattr(OsStr::new("."), overlay_opaque_xattr(), b"y")
                .map_err(|e| {
                    LayerError::bad(
                        shown,
                        format!("marking directory opaque (needs trusted xattrs): {e}"),
                    )
                })?,
        }
        Ok(())
    }

    /// Removes everything under `dir` that this layer did not write.
    fn prune_lower(&self, dir: &Dir, rel: &Path, shown: &str) -> Result<(), LayerError> {
        for (child, kind) in dir.list().map_err(bad(shown))? {
            let crel = rel.join(&child);
            if !self.touched.contains(&crel) {
                dir.remove_all(&child).map_err(bad(shown))?;
            } else if kind == Kind::Dir {
                let sub = dir.subdir(&child).map_err(bad(shown))?;
                self.prune_lower(&sub, &crel, shown)?;
            }
        }
        Ok(())
    }

    /// Resolves a relative directory path inside the root (symlinks followed in-root),
    /// creating missing directories.
    fn parent_dir(&mut self, rel: &Path, shown: &str) -> Result<Arc<Dir>, LayerError> {
        if let Some((p, d)) = &self.parent {
            if p == rel {
                return Ok(d.clone());
            }
        }
        let d = Arc::new(self.tree.mkdir_all(rel, 0o755, None).map_err(bad(shown))?);
        self.parent = Some((rel.to_path_buf(), d.clone()));
        Ok(d)
    }

    /// Resolves a hardlink target: the parent in-root, the final component must exist
    /// and must not be a directory.
    fn hardlink_source(
        &self,
        link: &[u8],
        shown: &str,
    ) -> Result<(Dir, std::ffi::OsString), LayerError> {
        let shown_link = String::from_utf8_lossy(link);
        let rel = clean_entry_path(link).map_err(|e| {
            LayerError::bad(
                shown,
                format!("hardlink target {shown_link:?} is refused: {e}"),
            )
        })?;
        let name = rel
            .file_name()
            .ok_or_else(|| LayerError::bad(shown, "hardlink to the layer root"))?;
        let dir = self
            .tree
            .dir(rel.parent().unwrap_or(Path::new("")))
            .map_err(|why| {
                let why = if why.is_not_found() {
                    "does not exist in the layer".to_string()
                } else {
                    why.to_string()
                };
                LayerError::bad(shown, format!("hardlink target {shown_link:?}: {why}"))
            })?;
        match dir.stat(name) {
            Ok(Some(m)) if m.kind == Kind::Dir => Err(LayerError::bad(
                shown,
                format!("hardlink target {shown_link:?} is a directory"),
            )),
            Ok(Some(_)) => Ok((dir, name.to_os_string())),
            _ => Err(LayerError::bad(
                shown,
                format!("hardlink target {shown_link:?} does not exist in the layer"),
            )),
        }
    }
}

/// An entry's owner, mode, mtime and xattrs as unpacking it under `opts` applies them,
/// read from its header and PAX records: the one reading of them (the unpacker's and
/// the erofs writer's).
pub(crate) fn entry_meta<R: Read>(
    entry: &mut tar::Entry<R>,
    is_dir: bool,
    opts: &UnpackOptions,
) -> FileMeta {
    let h = entry.header();
    let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
    let mode = h.mode().unwrap_or(if is_dir { 0o755 } else { 0o644 }) & 0o7777;
    let header_mtime = h.mtime().unwrap_or(0) as i64;
    let records: Vec<(String, Vec<u8>)> = match entry.pax_extensions() {
        Ok(Some(exts)) => exts
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.key().ok()?.to_string(), e.value_bytes().to_vec())))
            .collect(),
        _ => Vec::new(),
    };
    // A PAX `mtime` record wins over the header: the only way to carry one before
    // 1970 (Go's archive/tar writes it so; so does keel's packer).
    let mtime = records
        .iter()
        .find(|(k, _)| k == "mtime")
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
        .unwrap_or(header_mtime);
    let xattrs: Vec<(String, Vec<u8>)> = match opts.xattrs {
        true => records
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("SCHILY.xattr.")?.to_string(), v)))
            .collect(),
        false => Vec::new(),
    };
    FileMeta {
        uid: uid as u32,
        gid: gid as u32,
        mode,
        mtime,
        xattrs,
        chown: opts.preserve_owners,
    }
}

/// An entry's owner, mode (its low 12 bits), mtime and xattrs, as applied to it.
pub(crate) struct FileMeta {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mode: u32,
    pub(crate) mtime: i64,
    pub(crate) xattrs: Vec<(String, Vec<u8>)>,
    /// Whether the owner is set (`preserve_owners`).
    pub(crate) chown: bool,
}

/// Metadata of a regular file still open from its creation, through its descriptor.
fn apply_open(f: &fs::File, m: &FileMeta, shown: &str) -> Result<(), LayerError> {
    let ctx = |what: &str, e: io::Error| LayerError::bad(shown, format!("{what}: {e}"));
    if m.chown {
        open_file::chown(f, m.uid, m.gid).map_err(|e| ctx("changing owner", e))?;
    }
    // chmod after chown: chown clears setuid/setgid bits.
    open_file::chmod(f, m.mode).map_err(|e| ctx("changing mode", e))?;
    for (k, v) in m.xattrs.iter().filter(|(k, _)| !is_overlay_metadata(k)) {
        let _ = open_file::set_xattr(f, k, v);
    }
    open_file::set_times(f, m.mtime, 0).map_err(|e| ctx("setting mtime", e))
}

fn truncated(shown: &str, want: u64, n: u64) -> LayerError {
    LayerError::bad(
        shown,
        format!("file content is truncated: the header claims {want} bytes, the stream has {n}"),
    )
}

/// An entry's place in the tree: its resolved parent, final name, path, and how it is
/// written (`first`: named for the first time in the stream; `fast`: see
/// `Unpacker::fast`).
struct Place<'a> {
    parent: &'a Arc<Dir>,
    name: &'a OsStr,
    rel: &'a Path,
    shown: &'a str,
    first: bool,
    fast: bool,
}

/// Whether `a/an` and `b/bn` are the same directory entry (a hardlink to itself).
fn same_entry(a: &Dir, an: &OsStr, b: &Dir, bn: &OsStr) -> bool {
    an == bn && a.same_dir(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;

    use crate::layer::test_tar::{tar_of, E};

    /// Every entry below `dir`, sorted: path, type and mode, owner, size, mtime, content
    /// or link target, xattrs, and for a hardlink the first path of its inode.
    fn listing(dir: &Path) -> Vec<String> {
        let mut inodes: HashMap<u64, String> = HashMap::new();
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(e.path()).unwrap().display())
            } else if m.is_file() {
                let same = inodes.entry(m.ino()).or_insert_with(|| rel.clone());
                let body = String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned();
                format!("{body:?} inode of {same}")
            } else {
                String::new()
            };
            let xattrs: Vec<_> = xattr::list(e.path())
                .map(|l| l.map(|k| k.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            out.push(format!(
                "{rel} {:o} {}:{} {} {} {what} {xattrs:?}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.len(),
                m.mtime()
            ));
        }
        out
    }

    /// Unpacks `tar` into a fresh directory: the listing, or the error. `seeded`: the
    /// directory holds a file first (left out of the listing), so the tree is not empty
    /// and the unpack is the serial one from the first entry on.
    fn unpacked(tar: &[u8], seeded: bool) -> (Result<Vec<String>, String>, Option<UnpackStats>) {
        let t = tempfile::tempdir().unwrap();
        if seeded {
            std::fs::write(t.path().join("~seed"), "").unwrap();
        }
        match unpack(
            io::Cursor::new(tar.to_vec()),
            t.path(),
            &UnpackOptions::default(),
        ) {
            Ok(stats) => {
                let mut l = listing(t.path());
                l.retain(|e| !e.starts_with("~seed "));
                (Ok(l), Some(stats))
            }
            Err(e) => (Err(e.to_string()), None),
        }
    }

    /// `old` unpacked into a fresh directory, `between` run on it, then `new` patched in
    /// (`reuse`): the patched tree and the patch's stats, once the tree is shown to list
    /// as `new` unpacked into an empty directory does.
    fn patched_as_fresh(
        old: Vec<u8>,
        new: Vec<u8>,
        between: impl FnOnce(&Path),
    ) -> (tempfile::TempDir, UnpackStats) {
        let patched = tempfile::tempdir().unwrap();
        let plain = UnpackOptions::default();
        unpack(io::Cursor::new(old), patched.path(), &plain).unwrap();
        between(patched.path());
        let reuse = UnpackOptions {
            reuse: true,
            ..UnpackOptions::default()
        };
        let stats = unpack(io::Cursor::new(new.clone()), patched.path(), &reuse).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        unpack(io::Cursor::new(new), fresh.path(), &plain).unwrap();
        assert_eq!(listing(patched.path()), listing(fresh.path()));
        (patched, stats)
    }

    /// A directory already in the tree with the entry's owner and mode is left as it is
    /// (but for its mtime); one whose mode or owner differs is set again; either way
    /// the tree is what an unpack into an empty directory gives.
    #[test]
    fn directories_already_right_are_not_chowned_or_chmodded_again() {
        let body = || b"f".to_vec();
        // Owners follow the entry's position (uid i % 3, gid i % 5): `c/` moves from
        // position 2 to 3, so only its owner changes; `b/` keeps its place, not its mode.
        let old = tar_of(&[
            E::Dir("a/", 0o755),
            E::Dir("b/", 0o700),
            E::Dir("c/", 0o755),
            E::File("a/f", 0o644, body()),
        ]);
        let new = tar_of(&[
            E::Dir("a/", 0o755),
            E::Dir("b/", 0o750),
            E::Dir("x/", 0o755),
            E::Dir("c/", 0o755),
            E::File("a/f", 0o644, body()),
        ]);
        let (_, stats) = patched_as_fresh(old, new, |_| ());
        // Without owners (not root), `c/` is right as it is too.
        let kept = if crate::sys::proc::is_root() { 1 } else { 2 };
        assert_eq!(stats.dirs_kept, kept, "{stats:?}");
        assert_eq!(stats.dirs, 4, "{stats:?}");
    }

    /// A patched tree's directory whose mtime is already the entry's is not touched at
    /// the end (its ctime stays), while one the patch added a file to gets the entry's
    /// mtime again: either way the tree lists as a fresh unpack's.
    #[test]
    fn directories_whose_mtime_is_right_are_not_touched_again() {
        use std::os::unix::fs::MetadataExt;
        let file = |p, body: &str| E::File(p, 0o644, body.as_bytes().to_vec());
        let old = tar_of(&[
            E::Dir("a/", 0o755),
            E::Dir("b/", 0o755),
            file("a/f", "1"),
            file("b/g", "2"),
        ]);
        let new = tar_of(&[
            E::Dir("a/", 0o755),
            E::Dir("b/", 0o755),
            file("a/f", "1"),
            file("b/h", "3"),
        ]);
        let ctime = |tree: &Path, rel: &str| {
            let m = std::fs::symlink_metadata(tree.join(rel)).unwrap();
            (m.ctime(), m.ctime_nsec())
        };
        let mut before = None;
        let (patched, _) = patched_as_fresh(old, new, |tree| {
            before = Some((ctime(tree, "a"), ctime(tree, "b")));
            std::thread::sleep(std::time::Duration::from_millis(20));
        });
        let (a, b) = before.unwrap();
        assert_eq!(ctime(patched.path(), "a"), a, "a/ was right: left alone");
        assert_ne!(
            ctime(patched.path(), "b"),
            b,
            "b/ gained and lost a file: its mtime set again"
        );
    }

    /// A patch whose stream names the same entries in the same order as the stream that
    /// made the tree (`old_names`, from the tree's marker) skips the sweep and still gives
    /// what a fresh unpack gives; one naming fewer entries, or given other old names,
    /// sweeps. A name planted in the tree outside any stream shows which happened: it
    /// survives only a skipped sweep, which is why only the cache's own trees, whose
    /// markers were written with them, pass their names.
    #[test]
    fn a_patch_naming_the_same_entries_skips_the_sweep() {
        let file = |p, body: &str| E::File(p, 0o644, body.as_bytes().to_vec());
        let old = || tar_of(&[E::Dir("a/", 0o755), file("a/f1", "1"), file("a/f2", "2")]);
        let same = tar_of(&[E::Dir("a/", 0o755), file("a/f1", "one"), file("a/f2", "2")]);
        let fewer = tar_of(&[E::Dir("a/", 0o755), file("a/f1", "one")]);
        let plain = UnpackOptions::default();
        // (new stream, old names known, names given wrong, a name planted): the tree
        // must equal a fresh unpack's, but for a planted name a skipped sweep leaves.
        for (new, wrong, plant) in [
            (&same, false, false),
            (&fewer, false, false),
            (&same, true, false),
            (&same, false, true),
            (&same, true, true),
        ] {
            let tree = tempfile::tempdir().unwrap();
            let made = unpack(io::Cursor::new(old()), tree.path(), &plain).unwrap();
            let names = made.summary.and_then(|s| s.names);
            if plant {
                std::fs::write(tree.path().join("a/planted"), b"p").unwrap();
            }
            let reuse = UnpackOptions {
                reuse: true,
                old_names: if wrong {
                    Some("0".repeat(64))
                } else {
                    names.clone()
                },
                ..UnpackOptions::default()
            };
            unpack(io::Cursor::new(new.clone()), tree.path(), &reuse).unwrap();
            let fresh = tempfile::tempdir().unwrap();
            unpack(io::Cursor::new(new.clone()), fresh.path(), &plain).unwrap();
            // Names are counted only where the tree's owners are the layer's (root).
            let skipped = plant && !wrong && names.is_some() && new == &same;
            let case = format!("wrong {wrong}, planted {plant}, {} bytes", new.len());
            let left = tree.path().join("a/planted").exists();
            assert_eq!(left, skipped, "{case}: the planted name stayed: {left}");
            let got: Vec<_> = listing(tree.path())
                .into_iter()
                .filter(|l| !l.starts_with("a/planted "))
                .collect();
            assert_eq!(got, listing(fresh.path()), "{case}");
        }
        if crate::sys::proc::is_root() {
            let t = tempfile::tempdir().unwrap();
            let made = unpack(io::Cursor::new(old()), t.path(), &plain).unwrap();
            assert!(
                made.summary.and_then(|s| s.names).is_some(),
                "root counts names"
            );
        }
    }

    /// The entry an unpack error names (`layer entry "NAME": why`).
    fn entry_of(e: &str) -> &str {
        e.split("\": ").next().unwrap_or(e)
    }

    /// `listing` with the mtime of each entry dated during this run (a parent the stream
    /// implies but never names gets the time it was made) written as `<now>`: two
    /// unpacks a second apart date such a directory differently, and that is not what is
    /// compared.
    fn undated_now(listed: Result<Vec<String>, String>) -> Result<Vec<String>, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let undate = |line: String| {
            let mut fields: Vec<String> = line.split(' ').map(str::to_string).collect();
            let recent = fields
                .get(4)
                .and_then(|m| m.parse::<i64>().ok())
                .is_some_and(|m| (now - 3600..=now + 60).contains(&m));
            if recent {
                fields[4] = "<now>".into();
            }
            fields.join(" ")
        };
        listed.map(|l| l.into_iter().map(undate).collect())
    }

    /// The same listing (or an error on the same entry) and counts with the fast path as
    /// from the serial unpack.
    fn same_as_serial(tar: &[u8], what: &str) -> Result<Vec<String>, String> {
        let (serial, serial_stats) = unpacked(tar, true);
        let (fast, stats) = unpacked(tar, false);
        let (serial, fast) = (undated_now(serial), undated_now(fast));
        match (&fast, &serial) {
            (Err(f), Err(s)) => assert_eq!(entry_of(f), entry_of(s), "{what}"),
            _ => assert_eq!(fast, serial, "{what}"),
        }
        assert_eq!(stats, serial_stats, "{what}");
        serial
    }

    /// A layer like a big COPY's: many directories of small files with assorted modes
    /// (setuid, read-only, executable), owners and mtimes, a read-only directory, a
    /// large file, symlinks, an xattr, an empty file and a nested directory — then a
    /// hardlink, which ends the fast path mid-stream.
    #[test]
    fn the_fast_paths_tree_is_the_serial_unpacks() {
        let names: Vec<(String, String)> = (0..40)
            .flat_map(|d| (0..60).map(move |f| (format!("d{d:02}/"), format!("d{d:02}/f{f:03}"))))
            .collect();
        let big = vec![7u8; 100 << 10];
        let modes = [0o644, 0o4755, 0o400, 0o755, 0o2711, 0o600];
        let mut entries = vec![E::Dir("ro/", 0o555), E::File("ro/in", 0o444, b"r".to_vec())];
        let mut last_dir = String::new();
        for (i, (dir, file)) in names.iter().enumerate() {
            if *dir != last_dir {
                entries.push(E::Dir(dir, 0o755));
                last_dir = dir.clone();
            }
            entries.push(E::File(
                file,
                modes[i % modes.len()],
                file.as_bytes().to_vec(),
            ));
        }
        entries.extend([
            E::File("d00/big", 0o644, big.clone()),
            E::File("d00/empty", 0o644, b"".to_vec()),
            E::Sym("d01/link", "f000"),
            E::Xattr("d01/x", "user.keel", b"v"),
            E::Dir("d02/deeper/", 0o700),
            E::File("d02/deeper/f", 0o644, b"deep".to_vec()),
        ]);
        let simple = tar_of(&entries);
        let listed = same_as_serial(&simple, "a simple stream").unwrap();
        assert!(listed.len() > 2400, "{}", listed.len());
        entries.extend([
            E::Hard("d03/h", "d02/f000"),
            E::File("d03/after", 0o644, b"a".to_vec()),
        ]);
        same_as_serial(&tar_of(&entries), "a hardlink mid-stream").unwrap();
    }

    /// Hostile and odd streams give what the serial unpack gives (the fast path ends at
    /// the first entry it cannot vouch for).
    #[test]
    fn hostile_streams_unpack_as_the_serial_unpack_does() {
        use E::*;
        let cases: Vec<(&str, Vec<E>)> = vec![
            // A file below a symlinked parent, and the same file named through the link
            // and then directly (the later one wins).
            (
                "symlinked parent",
                vec![
                    Dir("d/", 0o755),
                    File("d/a", 0o644, b"1".to_vec()),
                    Sym("s", "d"),
                    File("s/b", 0o644, b"2".to_vec()),
                    File("d/b", 0o644, b"3".to_vec()),
                ],
            ),
            (
                "symlink to the root",
                vec![
                    Dir("d/", 0o755),
                    Sym("d/up", "../.."),
                    File("d/up/x", 0o644, b"x".to_vec()),
                    Sym("r", "/"),
                    File("r/y", 0o644, b"y".to_vec()),
                ],
            ),
            (
                "fast symlink then through it",
                vec![
                    Dir("d/", 0o755),
                    File("d/f", 0o644, b"1".to_vec()),
                    Sym("d/l", "f"),
                    File("d/l", 0o644, b"2".to_vec()),
                ],
            ),
            // Hardlinks to a file the fast path made, to one not yet created, to itself.
            (
                "hardlink to a fast file",
                vec![
                    Dir("d/", 0o755),
                    File("d/f", 0o644, b"1".to_vec()),
                    Hard("d/h", "d/f"),
                    Hard("h2", "d/h"),
                ],
            ),
            (
                "hardlink before its target",
                vec![
                    Dir("d/", 0o755),
                    File("d/a", 0o644, b"1".to_vec()),
                    Hard("d/h", "d/f"),
                    File("d/f", 0o644, b"2".to_vec()),
                ],
            ),
            (
                "hardlink to itself",
                vec![
                    Dir("d/", 0o755),
                    File("d/f", 0o644, b"1".to_vec()),
                    Hard("d/f", "d/f"),
                ],
            ),
            // Duplicate names: the later wins, whatever the kinds.
            (
                "a file twice",
                vec![
                    Dir("d/", 0o755),
                    File("d/x", 0o644, b"1".to_vec()),
                    File("d/x", 0o600, b"22".to_vec()),
                ],
            ),
            (
                "a directory over a file",
                vec![
                    File("x", 0o644, b"1".to_vec()),
                    Dir("x/", 0o700),
                    File("x/y", 0o644, b"2".to_vec()),
                ],
            ),
            (
                "a file over a directory",
                vec![
                    Dir("x/", 0o755),
                    File("x/y", 0o644, b"1".to_vec()),
                    File("x", 0o644, b"2".to_vec()),
                ],
            ),
            (
                "a symlink over a directory",
                vec![
                    Dir("x/", 0o755),
                    File("x/y", 0o644, b"1".to_vec()),
                    Sym("x", "/"),
                    File("x/z", 0o644, b"2".to_vec()),
                ],
            ),
            (
                "a directory twice",
                vec![
                    Dir("x/", 0o755),
                    File("x/y", 0o644, b"1".to_vec()),
                    Dir("x/", 0o700),
                    File("x/z", 0o644, b"2".to_vec()),
                ],
            ),
            // A file below a file; parents the stream never made.
            (
                "a file below a fast file",
                vec![
                    Dir("d/", 0o755),
                    File("d/f", 0o644, b"1".to_vec()),
                    File("d/f/g", 0o644, b"2".to_vec()),
                ],
            ),
            (
                "implied parents",
                vec![
                    File("a/b/c", 0o644, b"1".to_vec()),
                    File("a/b/d", 0o644, b"2".to_vec()),
                    Dir("a/", 0o700),
                ],
            ),
        ];
        for (what, entries) in cases {
            same_as_serial(&tar_of(&entries), what).ok();
        }
    }

    /// A file the fast path cannot create (a name longer than the filesystem allows)
    /// fails the unpack with that entry's name — the first such entry's, as the serial
    /// unpack's error.
    #[test]
    fn a_fast_path_failure_is_the_unpacks_error_with_the_entrys_path() {
        let long = format!("d/{}", "n".repeat(300));
        let longer = format!("d/{}", "m".repeat(400));
        let mut entries = vec![E::Dir("d/", 0o755)];
        let names: Vec<String> = (0..500).map(|i| format!("d/f{i:03}")).collect();
        entries.extend(
            names[..250]
                .iter()
                .map(|n| E::File(n, 0o644, b"x".to_vec())),
        );
        entries.push(E::File(&long, 0o644, b"x".to_vec()));
        entries.extend(
            names[250..]
                .iter()
                .map(|n| E::File(n, 0o644, b"x".to_vec())),
        );
        entries.push(E::File(&longer, 0o644, b"x".to_vec()));
        let tar = tar_of(&entries);
        same_as_serial(&tar, "a name too long").unwrap_err();
        let (fast, _) = unpacked(&tar, false);
        let e = fast.unwrap_err();
        assert!(
            e.starts_with(&format!("layer entry {long:?}: creating file")),
            "{e}"
        );
        assert!(e.contains("File name too long"), "{e}");
    }
}
