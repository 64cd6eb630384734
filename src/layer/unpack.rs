//! Unpacking one layer tarball into a directory, safely. Every entry name is cleaned
//! (`clean_entry_path`); parent directories are resolved *inside* the target, following
//! symlinks the way the container would see them (absolute targets re-rooted at the
//! target) and refusing any that climb above it; the final component is never followed;
//! hardlinks must point at an existing path inside the target; device nodes need
//! `allow_devices`. OCI whiteouts are applied (stacking layers into one tree) or turned
//! into overlayfs whiteouts (one directory per layer).
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::{clean_entry_path, decompressed, LayerError};
use crate::sys::fs::{self as sysfs, Special};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What to do with OCI whiteout entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Delete what they name from the tree below (layers stacked into one directory).
    Apply,
    /// Keep them as overlayfs whiteouts (0:0 char devices, `trusted.overlay.opaque`).
    Overlay,
}

#[derive(Debug, Clone)]
pub struct UnpackOptions {
    pub whiteouts: Whiteouts,
    /// Create device nodes and FIFOs (refused otherwise).
    pub allow_devices: bool,
    /// Apply the entries' uid/gid (needs root).
    pub same_owner: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        let root = nix::unistd::geteuid().is_root();
        UnpackOptions {
            whiteouts: Whiteouts::Apply,
            allow_devices: root,
            same_owner: root,
        }
    }
}

/// What an unpack did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: usize,
    pub whiteouts: usize,
}

fn bad(entry: &Path, why: impl Into<String>) -> LayerError {
    LayerError::bad(entry.display().to_string(), why)
}

fn io_at(entry: &Path) -> impl FnOnce(io::Error) -> LayerError + '_ {
    move |e| bad(entry, e.to_string())
}

/// Resolves the directory `rel` (relative to `root`) inside `root`, following symlinks
/// in scope and creating missing directories. `entry` names the tar entry for errors.
pub fn resolve_dir(root: &Path, rel: &Path, entry: &Path) -> Result<PathBuf, LayerError> {
    let mut todo: Vec<OsString> = rel
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    let mut stack: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            if stack.pop().is_none() {
                return Err(bad(
                    entry,
                    "a symlink in its path climbs out of the layer root",
                ));
            }
            continue;
        }
        if name == "." {
            continue;
        }
        let here: PathBuf = root.join(stack.iter().collect::<PathBuf>()).join(&name);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(bad(entry, "too many levels of symbolic links in its path"));
                }
                let target = fs::read_link(&here).map_err(io_at(entry))?;
                if target.is_absolute() {
                    stack.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(m) if m.is_dir() => stack.push(name),
            Ok(_) => {
                return Err(bad(
                    entry,
                    format!(
                        "{} is not a directory",
                        here.strip_prefix(root).unwrap_or(&here).display()
                    ),
                ))
            }
            Err(_) => {
                fs::create_dir(&here).map_err(io_at(entry))?;
                stack.push(name);
            }
        }
    }
    Ok(root.join(stack.iter().collect::<PathBuf>()))
}

/// Removes whatever is at `p` (never following a symlink).
fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Extracts one layer (plain or gzip tar) from `r` into `target`.
pub fn unpack(
    r: impl Read + 'static,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, LayerError> {
    fs::create_dir_all(target)?;
    let target = fs::canonicalize(target)?;
    let mut archive = tar::Archive::new(decompressed(r)?);
    let mut stats = UnpackStats::default();
    // Paths this layer wrote: an opaque whiteout only hides what lower layers had.
    let mut created: HashSet<PathBuf> = HashSet::new();
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let rel = clean_entry_path(&entry.path_bytes())?;
        let Some(name) = rel.file_name().map(|n| n.to_os_string()) else {
            continue;
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = resolve_dir(&target, parent_rel, &rel)?;
        let dest = parent.join(&name);
        let name_s = name.to_string_lossy();
        if let Some(hidden) = name_s.strip_prefix(WHITEOUT) {
            stats.whiteouts += 1;
            match (opts.whiteouts, name_s.as_ref() == OPAQUE) {
                (Whiteouts::Apply, true) => {
                    for child in fs::read_dir(&parent)?.flatten() {
                        if !created.contains(&child.path()) {
                            remove_any(&child.path()).map_err(io_at(&rel))?;
                        }
                    }
                }
                (Whiteouts::Apply, false) => {
                    remove_any(&parent.join(hidden)).map_err(io_at(&rel))?
                }
                (Whiteouts::Overlay, true) => {
                    sysfs::set_xattr(&parent, "trusted.overlay.opaque", b"y")
                        .map_err(|e| bad(&rel, e.to_string()))?
                }
                (Whiteouts::Overlay, false) => {
                    let victim = parent.join(hidden);
                    remove_any(&victim).map_err(io_at(&rel))?;
                    sysfs::mknod(&victim, Special::Char, 0, 0, 0)
                        .map_err(|e| bad(&rel, e.to_string()))?;
                }
            }
            continue;
        }
        let h = entry.header().clone();
        let kind = h.entry_type();
        let mode = h.mode().map_err(io_at(&rel))? & 0o7777;
        let (uid, gid) = (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
        let mtime = h.mtime().unwrap_or(0);
        if kind.is_dir() {
            match fs::symlink_metadata(&dest) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(&dest).map_err(io_at(&rel))?;
                    fs::create_dir(&dest).map_err(io_at(&rel))?;
                }
                Err(_) => fs::create_dir(&dest).map_err(io_at(&rel))?,
            }
            dir_times.push((dest.clone(), mtime));
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            remove_any(&dest).map_err(io_at(&rel))?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&dest)
                .map_err(io_at(&rel))?;
            io::copy(&mut entry, &mut f).map_err(io_at(&rel))?;
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime))
                .map_err(io_at(&rel))?;
        } else if kind.is_symlink() {
            let link = entry
                .link_name()?
                .ok_or_else(|| bad(&rel, "symlink without a target"))?
                .into_owned();
            remove_any(&dest).map_err(io_at(&rel))?;
            std::os::unix::fs::symlink(&link, &dest).map_err(io_at(&rel))?;
        } else if kind.is_hard_link() {
            let raw = entry
                .link_name_bytes()
                .ok_or_else(|| bad(&rel, "hardlink without a target"))?
                .into_owned();
            let link_rel = clean_entry_path(&raw)
                .map_err(|e| bad(&rel, format!("hardlink target leaves the layer: {e}")))?;
            let link_parent =
                resolve_dir(&target, link_rel.parent().unwrap_or(Path::new("")), &rel)?;
            let src = link_parent.join(
                link_rel
                    .file_name()
                    .ok_or_else(|| bad(&rel, "hardlink to the root"))?,
            );
            let m = fs::symlink_metadata(&src).map_err(|_| {
                bad(
                    &rel,
                    format!(
                        "hardlink target {} does not exist in the layer",
                        link_rel.display()
                    ),
                )
            })?;
            if m.is_dir() {
                return Err(bad(&rel, "hardlink to a directory"));
            }
            remove_any(&dest).map_err(io_at(&rel))?;
            fs::hard_link(&src, &dest).map_err(io_at(&rel))?;
            created.insert(dest);
            stats.entries += 1;
            continue; // a hardlink shares the target's metadata
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            if !opts.allow_devices {
                return Err(bad(
                    &rel,
                    "device nodes and FIFOs are not allowed here (unpacking without root)",
                ));
            }
            let special = if kind.is_character_special() {
                Special::Char
            } else if kind.is_block_special() {
                Special::Block
            } else {
                Special::Fifo
            };
            let (major, minor) = (
                h.device_major().ok().flatten().unwrap_or(0) as u64,
                h.device_minor().ok().flatten().unwrap_or(0) as u64,
            );
            remove_any(&dest).map_err(io_at(&rel))?;
            sysfs::mknod(&dest, special, mode, major, minor)
                .map_err(|e| bad(&rel, e.to_string()))?;
        } else {
            continue; // pax/gnu metadata entries are folded in by the reader
        }
        if opts.same_owner {
            std::os::unix::fs::lchown(&dest, Some(uid), Some(gid)).map_err(io_at(&rel))?;
        }
        if !kind.is_symlink() {
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).map_err(io_at(&rel))?;
        } else {
            let _ = sysfs::set_mtime_nofollow(&dest, mtime as i64, 0);
        }
        created.insert(dest);
        stats.entries += 1;
    }
    // Directory times last: writing into a directory changes its mtime.
    for (d, t) in dir_times.into_iter().rev() {
        let _ = sysfs::set_mtime_nofollow(&d, t as i64, 0);
    }
    Ok(stats)
}
