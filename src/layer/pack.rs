//! Packing a changeset into a layer tarball, reproducibly: entries in byte order of their
//! paths (parents first), owners and modes exactly as on disk, timestamps clamped to the
//! epoch (SOURCE_DATE_EPOCH semantics) unless asked to keep them, no user or group names,
//! deletions as `.wh.` whiteouts, hardlinks within the layer kept as links.
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::diff::{Change, ChangeKind};
use super::LayerError;

#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// Every mtime becomes this (seconds since the epoch); `None` keeps the real mtimes.
    pub epoch: Option<u64>,
}

enum Item {
    /// Write the entry at this path from disk.
    Entry,
    /// A `.wh.NAME` whiteout for a deleted path.
    Whiteout,
    /// A `.wh..wh..opq` marker inside the directory (after the directory itself).
    Opaque,
}

fn header(kind: tar::EntryType, m: Option<&fs::Metadata>, opts: &PackOptions) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    match m {
        Some(m) => {
            h.set_mode(m.mode() & 0o7777);
            h.set_uid(m.uid() as u64);
            h.set_gid(m.gid() as u64);
            h.set_mtime(opts.epoch.unwrap_or(m.mtime().max(0) as u64));
        }
        None => {
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(opts.epoch.unwrap_or(0));
        }
    }
    h.set_size(0);
    h
}

/// Linux's dev_t encoding (glibc `gnu_dev_major`/`gnu_dev_minor`).
fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// Writes the layer for `changes` (paths relative to `root`, the merged tree) to `out`.
pub fn pack(
    changes: &[Change],
    root: &Path,
    out: impl Write,
    opts: &PackOptions,
) -> Result<(), LayerError> {
    // Every changed path, its parents (so the layer carries their metadata), and markers.
    let mut items: BTreeMap<Vec<u8>, (PathBuf, Item)> = BTreeMap::new();
    let key = |p: &Path| p.as_os_str().as_encoded_bytes().to_vec();
    for c in changes {
        for parent in c.path.ancestors().skip(1) {
            if !parent.as_os_str().is_empty() {
                items
                    .entry(key(parent))
                    .or_insert((parent.to_path_buf(), Item::Entry));
            }
        }
        match c.kind {
            ChangeKind::Added | ChangeKind::Modified => {
                items.insert(key(&c.path), (c.path.clone(), Item::Entry));
            }
            ChangeKind::Deleted => {
                let name = c
                    .path
                    .file_name()
                    .expect("a changed path has a name")
                    .to_string_lossy();
                let wh = c.path.with_file_name(format!(".wh.{name}"));
                items.insert(key(&wh), (wh, Item::Whiteout));
            }
            ChangeKind::Opaque => {
                items.insert(key(&c.path), (c.path.clone(), Item::Entry));
                let marker = c.path.join(".wh..wh..opq");
                items.insert(key(&marker), (marker, Item::Opaque));
            }
        }
    }
    // Sort so that a directory's entries follow it directly: compare path components.
    let mut ordered: Vec<(PathBuf, Item)> = items.into_values().collect();
    ordered.sort_by(|a, b| a.0.components().cmp(b.0.components()));
    let mut tar = tar::Builder::new(out);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for (path, item) in ordered {
        match item {
            Item::Whiteout | Item::Opaque => {
                let mut h = header(tar::EntryType::Regular, None, opts);
                h.set_mode(0);
                tar.append_data(&mut h, &path, io::empty())?;
            }
            Item::Entry => {
                let full = root.join(&path);
                let m = match fs::symlink_metadata(&full) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                let ft = m.file_type();
                if ft.is_dir() {
                    let mut h = header(tar::EntryType::Directory, Some(&m), opts);
                    let mut name = path.as_os_str().to_os_string();
                    name.push("/");
                    tar.append_data(&mut h, PathBuf::from(name), io::empty())?;
                } else if ft.is_symlink() {
                    let mut h = header(tar::EntryType::Symlink, Some(&m), opts);
                    tar.append_link(&mut h, &path, fs::read_link(&full)?)?;
                } else if ft.is_file() {
                    if m.nlink() > 1 {
                        if let Some(first) = links.get(&(m.dev(), m.ino())) {
                            let mut h = header(tar::EntryType::Link, Some(&m), opts);
                            tar.append_link(&mut h, &path, first)?;
                            continue;
                        }
                        links.insert((m.dev(), m.ino()), path.clone());
                    }
                    let mut h = header(tar::EntryType::Regular, Some(&m), opts);
                    h.set_size(m.len());
                    tar.append_data(&mut h, &path, fs::File::open(&full)?)?;
                } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                    let kind = if ft.is_char_device() {
                        tar::EntryType::Char
                    } else if ft.is_block_device() {
                        tar::EntryType::Block
                    } else {
                        tar::EntryType::Fifo
                    };
                    let mut h = header(kind, Some(&m), opts);
                    let (major, minor) = split_dev(m.rdev());
                    h.set_device_major(major)?;
                    h.set_device_minor(minor)?;
                    tar.append_data(&mut h, &path, io::empty())?;
                }
            }
        }
    }
    tar.into_inner()?.flush()?;
    Ok(())
}
