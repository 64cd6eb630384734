//! The `copy` driver: the merged tree of every layer-chain prefix is cached under
//! `chains/<chain-id hex>/diff` (OCI image-spec config.md, "ChainID"), and a snapshot is a
//! plain copy of the top chain. It works on any filesystem and kernel. Each layer is
//! verified against its diff_id while it is applied (`verify.rs`).
//!
//! Copies keep owners, modes, mtimes, xattrs and hardlinks, so the tree diff of a
//! snapshot against its chain sees only what the container changed. File data is
//! reflinked where the filesystem can (`sys::btrfs::clone_or_copy`), so on btrfs or xfs
//! with reflink=1 a snapshot costs metadata only.
use crate::sys::hostfs;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::verify::{unpack_verified, TREE};
use super::{
    build_cached, new_snapshot_dir, save_snapshot, LayerBlob, Result, Snapshot, Snapshotter,
    StorageError,
};
use crate::digest::{self, hex_of, Digest};
use crate::layer::diff::{diff_trees_since, Change};
use crate::layer::unpack::{UnpackOptions, Whiteouts};
use crate::sys::fs as sysfs;

pub struct CopyDriver {
    storage: PathBuf,
}

/// The ChainID of each prefix of `layers`: `chain(1) = diff_id(1)`,
/// `chain(n) = sha256(chain(n-1) + " " + diff_id(n))`.
pub fn chain_ids(layers: &[LayerBlob]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(layers.len());
    for l in layers {
        let next = match out.last() {
            None => l.diff_id.clone(),
            Some(prev) => digest::of_bytes(format!("{prev} {}", l.diff_id).as_bytes()),
        };
        out.push(next);
    }
    out
}

impl CopyDriver {
    pub fn new(storage: &Path) -> Result<CopyDriver> {
        hostfs::create_dir_all(storage.join("chains"))
            .map_err(StorageError::io("creating", storage))?;
        Ok(CopyDriver {
            storage: storage.to_path_buf(),
        })
    }

    /// Makes sure the merged tree of `layers` is cached; returns it and how many layers
    /// were extracted to build it.
    fn ensure_chain(&self, layers: &[LayerBlob]) -> Result<(PathBuf, usize)> {
        let chains = chain_ids(layers);
        // Find the longest cached prefix, then build upwards from it.
        let mut have = chains.len();
        while have > 0
            && !self
                .chain_dir(&chains[have - 1])
                .join(super::verify::MARKER)
                .is_file()
        {
            have -= 1;
        }
        let mut unpacked = 0;
        for i in have..chains.len() {
            let dest = self.chain_dir(&chains[i]);
            let parent = if i == 0 {
                None
            } else {
                Some(self.chain_dir(&chains[i - 1]))
            };
            let layer = &layers[i];
            let fresh = build_cached(&self.storage, &dest, "chain", |tmp| {
                if let Some(p) = &parent {
                    copy_tree(&p.join(TREE), tmp)?;
                }
                apply_layer(layer, tmp)?;
                Ok(layers[..=i].iter().map(|l| l.diff_id.to_string()).collect())
            })?;
            unpacked += fresh as usize;
        }
        match chains.last() {
            Some(top) => Ok((self.chain_dir(top).join(TREE), unpacked)),
            None => {
                let empty = self.storage.join("empty");
                hostfs::create_dir_all(&empty).map_err(StorageError::io("creating", &empty))?;
                Ok((empty, 0))
            }
        }
    }

    fn chain_dir(&self, chain: &Digest) -> PathBuf {
        self.storage.join("chains").join(hex_of(chain))
    }
}

/// Applies `layer` onto the merged tree `tree` (the tree of the layers below it): entries
/// unpacked verified, whiteouts applied by removing what they hide, devices allowed (the
/// tree is keel's, never mounted for a container as it is). The one way the copy and btrfs
/// drivers stack a layer.
pub(crate) fn apply_layer(layer: &LayerBlob, tree: &Path) -> Result<()> {
    let opts = UnpackOptions {
        whiteouts: Whiteouts::Apply,
        allow_devices: true,
        ..UnpackOptions::default()
    };
    let stats = unpack_verified(layer, tree, &opts)?;
    if stats.hardlinks > 0 {
        refuse_foreign_hardlinks(layer)?;
    }
    Ok(())
}

/// Refuses a layer with a hardlink to a file the layer itself does not contain (say,
/// through a symlink or directory of a lower layer). Stacked into one tree the link would
/// work, but overlayfs unpacks each layer alone, and docker refuses it too; both drivers
/// must build the same tree. Run only for layers with hardlinks (a second read).
pub(crate) fn refuse_foreign_hardlinks(layer: &LayerBlob) -> Result<()> {
    use std::collections::HashSet;
    use std::os::unix::ffi::OsStrExt;
    let bad = |entry: String, why: String| StorageError::Layer {
        diff_id: layer.diff_id.to_string(),
        source: crate::layer::LayerError::bad(entry, why),
    };
    let io_fail = |e: std::io::Error| bad("<layer>".into(), e.to_string());
    let file = fs::File::open(&layer.blob).map_err(StorageError::io("opening", &layer.blob))?;
    let plain = crate::layer::decompressed(file).map_err(|source| StorageError::Layer {
        diff_id: layer.diff_id.to_string(),
        source,
    })?;
    let mut archive = tar::Archive::new(crate::layer::guard::HeaderGuard::new(plain));
    let mut files: HashSet<PathBuf> = HashSet::new();
    let mut links: HashMap<PathBuf, PathBuf> = HashMap::new();
    for entry in archive.entries().map_err(io_fail)? {
        let entry = entry.map_err(io_fail)?;
        let Ok(path) = crate::layer::clean_entry_path(&entry.path_bytes()) else {
            continue; // the unpack refused those already
        };
        let kind = entry.header().entry_type();
        let target = entry.link_name_bytes().map(|t| t.into_owned());
        if kind.is_symlink() {
            let t = PathBuf::from(std::ffi::OsStr::from_bytes(&target.unwrap_or_default()));
            links.insert(path, t);
        } else if kind.is_hard_link() {
            let raw = target.unwrap_or_default();
            let resolved = resolve_in_layer(&raw, &links);
            if !resolved.is_some_and(|r| files.contains(&r)) {
                return Err(bad(
                    path.display().to_string(),
                    format!("hardlink target {:?} is not a file of this layer; a layer may only link to files it contains (overlayfs and docker refuse it too)", String::from_utf8_lossy(&raw)),
                ));
            }
            files.insert(path);
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            files.insert(path);
        }
    }
    Ok(())
}

/// Where the hardlink target `raw` leads among the layer's own entries: its parent
/// directories are followed through the layer's symlinks (absolute targets restart at the
/// root, `..` stops at it), the last component is not. None for a loop.
fn resolve_in_layer(raw: &[u8], links: &HashMap<PathBuf, PathBuf>) -> Option<PathBuf> {
    use std::path::Component;
    let rel = crate::layer::clean_entry_path(raw).ok()?;
    let name = rel.file_name()?.to_os_string();
    let mut todo: Vec<std::ffi::OsString> = rel
        .parent()
        .into_iter()
        .flat_map(|p| p.components())
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    todo.reverse();
    let (mut cur, mut hops) = (PathBuf::new(), 0);
    while let Some(c) = todo.pop() {
        match c.to_str() {
            Some("..") => {
                cur.pop();
                continue;
            }
            Some(".") | Some("") => continue,
            _ => {}
        }
        cur.push(&c);
        if let Some(t) = links.get(&cur) {
            hops += 1;
            if hops > 40 {
                return None;
            }
            cur.pop();
            if t.is_absolute() {
                cur = PathBuf::new();
            }
            let parts: Vec<_> = t
                .components()
                .filter(|c| !matches!(c, Component::RootDir))
                .map(|c| c.as_os_str().to_os_string())
                .collect();
            todo.extend(parts.into_iter().rev());
        }
    }
    Some(cur.join(name))
}

impl Snapshotter for CopyDriver {
    fn prepare(&self, id: &str, layers: &[LayerBlob]) -> Result<Snapshot> {
        let (base, unpacked) = self.ensure_chain(layers)?;
        let dir = new_snapshot_dir(&self.storage, id)?;
        let snap = Snapshot {
            id: id.to_string(),
            rootfs: dir.join("rootfs"),
            dir: dir.clone(),
            driver: self.name().to_string(),
            layers: layers.iter().map(|l| l.diff_id.to_string()).collect(),
            parents: vec![base.clone()],
            unpacked,
        };
        let made = (|| {
            hostfs::create_dir(&snap.rootfs).map_err(StorageError::io("creating", &snap.rootfs))?;
            copy_tree(&base, &snap.rootfs)?;
            // Files changed after this stamp have a newer ctime (see diff_trees_since).
            hostfs::write(dir.join("stamp"), b"").map_err(StorageError::io("writing", &dir))?;
            save_snapshot(&snap)
        })();
        if let Err(e) = made {
            let _ = hostfs::remove_dir_all(&dir);
            return Err(e);
        }
        crate::fault::point("storage.snapshot-mounted");
        Ok(snap)
    }

    fn changes(&self, snap: &Snapshot) -> Result<Vec<Change>> {
        tree_changes(snap)
    }

    fn name(&self) -> &'static str {
        "copy"
    }

    fn storage_root(&self) -> &Path {
        &self.storage
    }
}

/// Copies the tree `src` into the existing directory `dst`, keeping owners, modes
/// (setuid included), mtimes, xattrs, hardlinks, symlinks and device nodes.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    let root_meta = fs::symlink_metadata(src).map_err(StorageError::io("reading", src))?;
    dirs.push((dst.to_path_buf(), root_meta.clone()));
    copy_attrs(src, dst, &root_meta, false)?;
    for entry in walkdir::WalkDir::new(src).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| StorageError::Io {
            what: "walking",
            path: src.to_path_buf(),
            source: e.into(),
        })?;
        let from = entry.path();
        let rel = from
            .strip_prefix(src)
            .expect("walkdir stays under its root");
        let to = dst.join(rel);
        let m = entry.metadata().map_err(|e| StorageError::Io {
            what: "reading",
            path: from.to_path_buf(),
            source: e.into(),
        })?;
        let ft = m.file_type();
        let fail = StorageError::io("copying to", &to);
        if ft.is_dir() {
            hostfs::create_dir(&to).map_err(fail)?;
            dirs.push((to.clone(), m.clone()));
            copy_attrs(from, &to, &m, false)?;
            continue;
        }
        if ft.is_file() && m.nlink() > 1 {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                hostfs::hard_link(first, &to).map_err(fail)?;
                continue;
            }
            links.insert((m.dev(), m.ino()), to.clone());
        }
        if ft.is_file() {
            copy_file(from, &to).map_err(fail)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(from).map_err(StorageError::io("reading", from))?;
            hostfs::symlink(target, &to).map_err(fail)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                sysfs::NodeKind::Char
            } else if ft.is_block_device() {
                sysfs::NodeKind::Block
            } else {
                sysfs::NodeKind::Fifo
            };
            let rdev = m.rdev();
            sysfs::mknod(
                &to,
                kind,
                m.mode() & 0o7777,
                sysfs::dev_major(rdev) as u64,
                sysfs::dev_minor(rdev) as u64,
            )
            .map_err(fail)?;
        } else {
            continue; // sockets
        }
        copy_attrs(from, &to, &m, true)?;
    }
    // Directory times last (deepest first): creating entries bumps them.
    for (d, m) in dirs.iter().rev() {
        sysfs::set_times_nofollow(d, m.mtime(), m.mtime_nsec())
            .map_err(StorageError::io("setting times on", d))?;
    }
    Ok(())
}

/// Copies a regular file's data into a new file `to` (mode 0600 until `copy_attrs`):
/// a reflink where the filesystem shares extents (btrfs, xfs with reflink=1), so a
/// snapshot of a big tree writes metadata only; a plain copy elsewhere.
fn copy_file(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut src = fs::File::open(from)?;
    let mut dst = sysfs::create_file_nofollow(to, 0o600)?;
    crate::sys::btrfs::clone_or_copy(&mut src, &mut dst, from).map(drop)
}

/// Owner, then mode (chown clears setuid), then xattrs, then (unless deferred) mtime.
fn copy_attrs(from: &Path, to: &Path, m: &fs::Metadata, times: bool) -> Result<()> {
    let fail = StorageError::io("copying attributes to", to);
    if sysfs::is_root() {
        sysfs::lchown(to, m.uid(), m.gid()).map_err(StorageError::io("chown", to))?;
    }
    if !m.file_type().is_symlink() {
        hostfs::set_permissions(to, fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(StorageError::io("chmod", to))?;
    }
    if let Ok(names) = sysfs::list_xattrs(from) {
        for n in names {
            if let Ok(Some(v)) = sysfs::get_xattr(from, &n) {
                // Namespaces the destination refuses (e.g. trusted.* without root) are skipped.
                let _ = sysfs::set_xattr(to, &n, &v);
            }
        }
    }
    if times {
        sysfs::set_times_nofollow(to, m.mtime(), m.mtime_nsec()).map_err(fail)?;
    }
    Ok(())
}

/// What changed in a plain-directory snapshot (the copy and btrfs drivers): a walk
/// against its parent tree that reads only files whose ctime is newer than the
/// snapshot's `stamp`.
pub(super) fn tree_changes(snap: &Snapshot) -> Result<Vec<Change>> {
    let stamp = fs::symlink_metadata(snap.dir.join("stamp"))
        .ok()
        .map(|m| (m.ctime(), m.ctime_nsec()));
    let base = snap
        .parents
        .first()
        .ok_or_else(|| StorageError::NotFound(snap.id.clone()))?;
    diff_trees_since(base, &snap.rootfs, stamp).map_err(|source| StorageError::Changes {
        id: snap.id.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardlink_targets_resolve_through_the_layers_own_symlinks() {
        let links: HashMap<PathBuf, PathBuf> = [
            ("s", "dir"),
            ("abs", "/dir"),
            ("up", "d/../dir"),
            ("loop", "loop"),
        ]
        .into_iter()
        .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
        .collect();
        let cases: &[(&str, Option<&str>)] = &[
            ("dir/f", Some("dir/f")),
            ("s/f", Some("dir/f")),
            ("abs/f", Some("dir/f")),
            ("up/f", Some("dir/f")),
            ("s", Some("s")),
            ("loop/f", None),
            ("../f", None),
        ];
        for (raw, want) in cases {
            assert_eq!(
                resolve_in_layer(raw.as_bytes(), &links),
                want.map(PathBuf::from),
                "{raw}"
            );
        }
    }
}
