//! Unpacking one layer tarball into a directory, safely.
//!
//! The tarball is hostile until proven otherwise: every entry name goes through
//! [`clean_entry_path`], parent directories are resolved by following symlinks *scoped
//! inside the target* (absolute link targets are re-rooted at the target; `..` may not
//! climb above it), the final component is never followed, hardlinks must name an
//! existing path inside the target, and device nodes need `allow_devices`.
//! Whiteouts follow the OCI image spec (image-spec `layer.md`, "Whiteouts"): applied to
//! the lower layers already in `target` ([`Whiteouts::Apply`]) or turned into overlayfs
//! whiteouts for a layer unpacked into its own directory ([`Whiteouts::Overlay`]).
//!
//! This module must not know about the store or storage drivers: it gets a reader and a
//! directory.
use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use super::{clean_entry_path, decompressed, LayerError};
use crate::sys::fs as sysfs;

/// Prefix of an OCI whiteout file name (`.wh.NAME` deletes NAME).
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat a directory as opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

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
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            whiteouts: Whiteouts::Apply,
            allow_devices: false,
            preserve_owners: nix::unistd::geteuid().is_root(),
            xattrs: true,
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
}

/// Most symlinks followed while resolving one parent path (Linux's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

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
    let root = fs::canonicalize(target).map_err(|e| {
        LayerError::bad(
            target.display().to_string(),
            format!("unpack target is not usable: {e}"),
        )
    })?;
    let mut archive = tar::Archive::new(super::guard::HeaderGuard::new(decompressed(reader)?));
    let mut u = Unpacker {
        root,
        opts,
        stats: UnpackStats::default(),
        dir_times: Vec::new(),
        touched: HashSet::new(),
    };
    // A broken header has no name of its own: name the entry before it.
    let mut last = String::from("<first header>");
    for entry in archive.entries()? {
        let mut entry = entry
            .map_err(|e| LayerError::bad(last.clone(), format!("malformed tar stream: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        last = format!("<header after {}>", String::from_utf8_lossy(&raw));
        u.entry(&raw, &mut entry).map_err(|e| match e {
            LayerError::Io(io) => LayerError::bad(String::from_utf8_lossy(&raw), io.to_string()),
            other => other,
        })?;
    }
    // Directory mtimes last, deepest first, so creating children does not bump them.
    u.dir_times
        .sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
    for (p, secs) in &u.dir_times {
        // Later entries may have replaced a directory (or one of its parents) with a
        // symlink: re-resolve in scope and touch only what is still a directory there.
        let rel = p.strip_prefix(&u.root).unwrap_or(Path::new(""));
        let Ok(now) = resolve_in_root(&u.root, rel, false) else {
            continue;
        };
        let now = u.root.join(now);
        sysfs::set_times_nofollow(&now, *secs, 0)
            .map_err(|e| LayerError::bad(p.display().to_string(), format!("setting mtime: {e}")))?;
    }
    Ok(u.stats)
}

struct Unpacker<'o> {
    root: PathBuf,
    opts: &'o UnpackOptions,
    stats: UnpackStats,
    dir_times: Vec<(PathBuf, i64)>,
    /// Relative paths this layer wrote (and their ancestors): opaque markers keep them.
    touched: HashSet<PathBuf>,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, raw: &[u8], entry: &mut tar::Entry<R>) -> Result<(), LayerError> {
        let shown = String::from_utf8_lossy(raw).into_owned();
        let rel = clean_entry_path(raw)?;
        self.stats.entries += 1;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
            // The root itself ("./"): only its metadata.
            if kind.is_dir() {
                self.metadata(&shown, &self.root.clone(), entry, true)?;
            }
            return Ok(());
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let name_bytes = name.as_bytes();
        let is_whiteout = name_bytes.starts_with(WHITEOUT_PREFIX.as_bytes());
        if is_whiteout && self.opts.whiteouts == Whiteouts::Apply {
            // Deleting under a directory the lower layers do not have deletes nothing;
            // it must not create that directory either.
            match resolve_in_root(&self.root, parent_rel, false) {
                Err(ResolveError::Missing(_)) => {
                    self.stats.whiteouts += 1;
                    return Ok(());
                }
                Err(why) => return Err(LayerError::bad(shown, why.to_string())),
                Ok(_) => {}
            }
        }
        let parent = self.resolve_dir(parent_rel, &shown)?;
        self.touch(&rel);

        if is_whiteout {
            self.stats.whiteouts += 1;
            return self.whiteout(
                &shown,
                &parent,
                parent_rel,
                &name_bytes[WHITEOUT_PREFIX.len()..],
            );
        }
        let dest = parent.join(&name);
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&dest)?;
                        fs::create_dir(&dest)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&dest)?,
                    Err(e) => return Err(e.into()),
                }
                self.stats.dirs += 1;
                self.metadata(&shown, &dest, entry, true)?;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                if kind == EntryType::GNUSparse {
                    return Err(LayerError::bad(
                        shown,
                        "GNU sparse files are not supported; repack the layer without --sparse",
                    ));
                }
                replace(&dest)?;
                let mode = entry.header().mode().unwrap_or(0o644);
                let mut f = sysfs::create_file_nofollow(&dest, mode & 0o700 | 0o600)?;
                let want = entry.size();
                let n = io::copy(entry, &mut f)
                    .map_err(|e| LayerError::bad(&shown, format!("reading file content: {e}")))?;
                drop(f);
                if n != want {
                    return Err(LayerError::bad(shown, format!("file content is truncated: the header claims {want} bytes, the stream has {n}")));
                }
                self.stats.files += 1;
                self.stats.bytes += n;
                self.metadata(&shown, &dest, entry, false)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::bad(&shown, "symlink without a target"))?
                    .into_owned();
                replace(&dest)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &dest)?;
                self.stats.symlinks += 1;
                self.metadata(&shown, &dest, entry, false)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::bad(&shown, "hardlink without a target"))?
                    .into_owned();
                let src = self.resolve_existing(&link, &shown)?;
                if src == dest {
                    return Ok(());
                }
                replace(&dest)?;
                // link(2) does not follow a symlink named as the source, so the new name
                // shares the inode found inside the target.
                fs::hard_link(&src, &dest)?;
                self.stats.hardlinks += 1;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                if !self.opts.allow_devices {
                    let what = if kind == EntryType::Fifo {
                        "fifo"
                    } else {
                        "device node"
                    };
                    return Err(LayerError::bad(shown, format!("{what} entries are not allowed here; only trusted layers may create them")));
                }
                let k = match kind {
                    EntryType::Char => sysfs::NodeKind::Char,
                    EntryType::Block => sysfs::NodeKind::Block,
                    _ => sysfs::NodeKind::Fifo,
                };
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0) as u64;
                let minor = h.device_minor().ok().flatten().unwrap_or(0) as u64;
                replace(&dest)?;
                sysfs::mknod(&dest, k, h.mode().unwrap_or(0o600), major, minor)?;
                self.stats.devices += 1;
                self.metadata(&shown, &dest, entry, false)?;
            }
            other => {
                return Err(LayerError::bad(
                    shown,
                    format!("unsupported tar entry type {other:?}"),
                ))
            }
        }
        Ok(())
    }

    fn touch(&mut self, rel: &Path) {
        let mut p = rel.to_path_buf();
        while !p.as_os_str().is_empty() && self.touched.insert(p.clone()) {
            if !p.pop() {
                break;
            }
        }
    }

    /// Owner, mode, xattrs and mtime (deferred for directories) from the entry header.
    fn metadata<R: Read>(
        &mut self,
        shown: &str,
        dest: &Path,
        entry: &mut tar::Entry<R>,
        is_dir: bool,
    ) -> Result<(), LayerError> {
        let h = entry.header();
        let is_link = h.entry_type() == EntryType::Symlink;
        let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
        let mode = h.mode().unwrap_or(if is_dir { 0o755 } else { 0o644 }) & 0o7777;
        let mtime = h.mtime().unwrap_or(0) as i64;
        let xattrs: Vec<(String, Vec<u8>)> = if self.opts.xattrs {
            match entry.pax_extensions() {
                Ok(Some(exts)) => exts
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        Some((
                            e.key().ok()?.strip_prefix("SCHILY.xattr.")?.to_string(),
                            e.value_bytes().to_vec(),
                        ))
                    })
                    .collect(),
                _ => Vec::new(),
            }
        } else {
            Vec::new()
        };
        let ctx = |what: &str, e: io::Error| LayerError::bad(shown, format!("{what}: {e}"));
        if self.opts.preserve_owners {
            sysfs::lchown(dest, uid as u32, gid as u32).map_err(|e| ctx("changing owner", e))?;
        }
        // chmod after chown: chown clears setuid/setgid bits.
        if !is_link {
            fs::set_permissions(dest, fs::Permissions::from_mode(mode))
                .map_err(|e| ctx("changing mode", e))?;
        }
        // `trusted.*` is overlayfs's own metadata (opaque, redirect, metacopy): a layer
        // must not forge it. Whiteouts are the only way to delete through a layer.
        for (k, v) in xattrs
            .into_iter()
            .filter(|(k, _)| !k.starts_with("trusted."))
        {
            // Unprivileged or unsupported namespaces are skipped: xattrs are best effort.
            let _ = sysfs::set_xattr(dest, &k, &v);
        }
        if is_dir {
            self.dir_times.push((dest.to_path_buf(), mtime));
        } else {
            sysfs::set_times_nofollow(dest, mtime, 0).map_err(|e| ctx("setting mtime", e))?;
        }
        Ok(())
    }

    fn whiteout(
        &mut self,
        shown: &str,
        parent: &Path,
        parent_rel: &Path,
        victim: &[u8],
    ) -> Result<(), LayerError> {
        let opaque = victim == &OPAQUE_WHITEOUT.as_bytes()[WHITEOUT_PREFIX.len()..];
        if victim.is_empty() || victim == b"." || victim == b".." {
            return Err(LayerError::bad(shown, "whiteout names no file"));
        }
        match (self.opts.whiteouts, opaque) {
            (Whiteouts::Apply, false) => {
                remove_any(&parent.join(OsStr::from_bytes(victim))).or_else(ignore_missing)?
            }
            (Whiteouts::Apply, true) => self.prune_lower(parent, parent_rel)?,
            (Whiteouts::Overlay, false) => {
                let dest = parent.join(OsStr::from_bytes(victim));
                replace(&dest)?;
                sysfs::mknod(&dest, sysfs::NodeKind::Char, 0, 0, 0).map_err(|e| {
                    LayerError::bad(
                        shown,
                        format!("creating overlay whiteout (needs CAP_MKNOD): {e}"),
                    )
                })?;
            }
            (Whiteouts::Overlay, true) => sysfs::set_xattr(parent, OVERLAY_OPAQUE_XATTR, b"y")
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
    fn prune_lower(&self, dir: &Path, rel: &Path) -> Result<(), LayerError> {
        for child in fs::read_dir(dir)? {
            let child = child?;
            let crel = rel.join(child.file_name());
            if !self.touched.contains(&crel) {
                remove_any(&child.path())?;
            } else if child.file_type()?.is_dir() {
                self.prune_lower(&child.path(), &crel)?;
            }
        }
        Ok(())
    }

    /// Resolves a relative directory path inside the root, following symlinks in scope
    /// and creating missing directories. Returns the absolute host path.
    fn resolve_dir(&self, rel: &Path, shown: &str) -> Result<PathBuf, LayerError> {
        let resolved = resolve_in_root(&self.root, rel, true)
            .map_err(|why| LayerError::bad(shown, why.to_string()))?;
        Ok(self.root.join(resolved))
    }

    /// Resolves a hardlink target: the parent in scope, the final component must exist
    /// and must not be a directory.
    fn resolve_existing(&self, link: &[u8], shown: &str) -> Result<PathBuf, LayerError> {
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
        let parent = resolve_in_root(&self.root, rel.parent().unwrap_or(Path::new("")), false)
            .map_err(|why| {
                LayerError::bad(shown, format!("hardlink target {shown_link:?}: {why}"))
            })?;
        let src = self.root.join(parent).join(name);
        match fs::symlink_metadata(&src) {
            Ok(m) if m.is_dir() => Err(LayerError::bad(
                shown,
                format!("hardlink target {shown_link:?} is a directory"),
            )),
            Ok(_) => Ok(src),
            Err(_) => Err(LayerError::bad(
                shown,
                format!("hardlink target {shown_link:?} does not exist in the layer"),
            )),
        }
    }
}

/// Walks `rel` under `root` component by component, following symlinks as if `root`
/// were `/`: absolute link targets restart at the root, `..` pops a component and may
/// not climb above the root. Missing directories are created when `create`. Returns
/// the resolved path relative to the root.
/// Why [`resolve_in_root`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// A component (relative to the root, as resolved so far) does not exist.
    Missing(PathBuf),
    /// The path escapes, loops, or runs through a non-directory.
    Refused(String),
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::Missing(p) => write!(f, "{p:?} does not exist"),
            ResolveError::Refused(why) => f.write_str(why),
        }
    }
}

pub fn resolve_in_root(root: &Path, rel: &Path, create: bool) -> Result<PathBuf, ResolveError> {
    let mut stack: Vec<OsString> = Vec::new();
    let mut queue: VecDeque<OsString> = rel
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut links = 0;
    while let Some(c) = queue.pop_front() {
        if c == "." || c.is_empty() || c == "/" {
            continue;
        }
        if c == ".." {
            if stack.pop().is_none() {
                return Err(ResolveError::Refused(
                    "a symlink on the way climbs above the layer root".into(),
                ));
            }
            continue;
        }
        let here: PathBuf = root.join(stack.iter().collect::<PathBuf>()).join(&c);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ResolveError::Refused("too many levels of symlinks".into()));
                }
                let target =
                    fs::read_link(&here).map_err(|e| ResolveError::Refused(e.to_string()))?;
                let mut parts: VecDeque<OsString> = VecDeque::new();
                for tc in target.components() {
                    match tc {
                        Component::RootDir => stack.clear(),
                        other => parts.push_back(other.as_os_str().to_os_string()),
                    }
                }
                parts.extend(queue.drain(..));
                queue = parts;
            }
            Ok(m) if m.is_dir() => stack.push(c),
            Ok(_) => {
                return Err(ResolveError::Refused(format!(
                    "{:?} is not a directory",
                    stack.iter().collect::<PathBuf>().join(&c)
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&here).map_err(|e| {
                    ResolveError::Refused(format!("creating parent directory: {e}"))
                })?;
                stack.push(c);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ResolveError::Missing(
                    stack.iter().collect::<PathBuf>().join(&c),
                ))
            }
            Err(e) => {
                return Err(ResolveError::Refused(format!(
                    "{:?}: {e}",
                    stack.iter().collect::<PathBuf>().join(&c)
                )))
            }
        }
    }
    Ok(stack.iter().collect())
}

/// Removes whatever is at `p` (never following a symlink); a directory goes with its
/// contents. A missing path is an error (see [`ignore_missing`]).
fn remove_any(p: &Path) -> io::Result<()> {
    let m = fs::symlink_metadata(p)?;
    if m.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    }
}

/// Clears the final component so the new entry replaces it (never following it).
fn replace(p: &Path) -> io::Result<()> {
    remove_any(p).or_else(ignore_missing)
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_stays_in_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("usr/lib", r.join("rel")).unwrap();
        std::os::unix::fs::symlink("../../..", r.join("usr/up")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        fs::write(r.join("file"), b"").unwrap();
        let table: &[(&str, Result<&str, &str>)] = &[
            ("abs", Ok("usr/lib")),
            ("rel/x", Ok("usr/lib/x")),
            ("usr/up", Err("climbs above")),
            ("loop", Err("too many")),
            ("file/x", Err("not a directory")),
        ];
        for (input, want) in table {
            let got = resolve_in_root(r, Path::new(input), true).map_err(|e| e.to_string());
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, Path::new(w), "{input}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{input}: {g}"),
                _ => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }
}
