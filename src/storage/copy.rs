//! The copy driver: for every prefix of a layer stack a merged tree is cached under
//! `storage/merged/<chain id>/` (each built from the one below plus one layer), and a
//! snapshot is a plain copy of the top one. Works on any kernel and filesystem.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{io_err, unpack_atomically, Dirs, LayerBlob, Snapshot, Snapshotter, StorageError};
use crate::layer::diff::{self, Change};
use crate::layer::unpack::Whiteouts;

pub struct CopyDriver {
    dirs: Dirs,
}

/// Copies a tree preserving owners, modes, times, links and xattrs (`cp -a`), using
/// reflinks where the filesystem has them.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<(), StorageError> {
    let out = Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(src)
        .arg(dst)
        .output()
        .map_err(io_err("running cp -a for", dst))?;
    if !out.status.success() {
        return Err(StorageError::Io {
            op: "copying into",
            path: dst.to_path_buf(),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        });
    }
    Ok(())
}

/// Unmounts every mount point at or below `dir`, deepest first.
pub(crate) fn unmount_below(dir: &Path) -> Result<(), StorageError> {
    let mut points: Vec<PathBuf> = crate::sys::mount::mount_points()?
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        let _ = crate::sys::mount::umount_detach(&p);
    }
    Ok(())
}

impl CopyDriver {
    pub(super) fn new(dirs: Dirs) -> CopyDriver {
        CopyDriver { dirs }
    }

    /// The merged tree of `layers`, building missing prefixes from the highest cached one.
    fn merged(&self, layers: &[LayerBlob]) -> Result<PathBuf, StorageError> {
        if layers.is_empty() {
            let empty = self.dirs.base.join("empty");
            fs::create_dir_all(&empty).map_err(io_err("creating", &empty))?;
            return Ok(empty);
        }
        let mut chain = String::new();
        let dirs: Vec<PathBuf> = layers
            .iter()
            .map(|l| {
                chain = crate::digest::of_bytes(format!("{chain} {}", l.diff_id).as_bytes())
                    .digest()
                    .to_string();
                self.dirs.base.join("merged").join(&chain)
            })
            .collect();
        let start = dirs
            .iter()
            .rposition(|d| d.is_dir())
            .map(|i| i + 1)
            .unwrap_or(0);
        for i in start..layers.len() {
            let seed = if i == 0 {
                None
            } else {
                Some(dirs[i - 1].as_path())
            };
            unpack_atomically(&self.dirs, &layers[i], &dirs[i], Whiteouts::Apply, seed)?;
        }
        Ok(dirs[layers.len() - 1].clone())
    }
}

impl Snapshotter for CopyDriver {
    fn name(&self) -> &'static str {
        "copy"
    }

    fn prepare(&self, id: &str, layers: &[LayerBlob]) -> Result<Snapshot, StorageError> {
        let base = self.merged(layers)?;
        let dir = self.dirs.snapshot(id);
        if dir.exists() {
            self.remove_id(id)?;
        }
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let rootfs = dir.join("rootfs");
        copy_tree(&base, &rootfs)?;
        Ok(Snapshot {
            id: id.to_string(),
            rootfs,
            dir,
            base,
        })
    }

    fn changes(&self, snap: &Snapshot) -> Result<Vec<Change>, StorageError> {
        diff::compare_trees(&snap.base, &snap.rootfs).map_err(io_err("comparing", &snap.rootfs))
    }

    fn remove(&self, snap: &Snapshot) -> Result<(), StorageError> {
        self.remove_id(&snap.id)
    }

    fn remove_id(&self, id: &str) -> Result<(), StorageError> {
        let dir = self.dirs.snapshot(id);
        unmount_below(&dir)?;
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", &dir)(e)),
            _ => Ok(()),
        }
    }
}
