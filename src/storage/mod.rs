//! Storage drivers: root filesystems for containers and build steps, as a `Snapshot` of
//! an image's layer stack with a writable top. `overlay` mounts kernel overlayfs over
//! layers unpacked once each; `copy` copies a cached merged tree into a plain directory
//! and works on any kernel and filesystem. Both report the changeset of the writable
//! top, which the build engine commits as a layer.
mod copy;
mod overlay;

use std::fs;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::layer::diff::Change;
use crate::layer::unpack::{unpack, UnpackOptions, Whiteouts};
use crate::layer::LayerError;

pub use copy::CopyDriver;
pub use overlay::OverlayDriver;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("overlayfs not available ({0}); use --storage-driver copy")]
    OverlayUnavailable(String),
    #[error("unknown storage driver {0:?}; use overlay or copy")]
    Unknown(String),
    #[error("unpacking layer {diff_id}: {source}")]
    Unpack { diff_id: String, source: LayerError },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Sys(#[from] crate::sys::SysError),
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io { op, path, source }
}

/// A layer blob in the store and the digest of its uncompressed content.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub diff_id: Digest,
    pub blob: PathBuf,
}

/// A writable root filesystem over a stack of layers.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    /// The directory to use as the container's root.
    pub rootfs: PathBuf,
    /// The snapshot's own directory (everything under it goes on remove).
    pub dir: PathBuf,
    /// The tree the rootfs started from (copy driver) or the upper directory (overlay).
    pub base: PathBuf,
}

pub trait Snapshotter {
    /// `overlay` or `copy`.
    fn name(&self) -> &'static str;
    /// A fresh snapshot `id` over `layers` (bottom first).
    fn prepare(&self, id: &str, layers: &[LayerBlob]) -> Result<Snapshot, StorageError>;
    /// What changed in the snapshot's writable top.
    fn changes(&self, snap: &Snapshot) -> Result<Vec<Change>, StorageError>;
    /// Unmounts and deletes the snapshot.
    fn remove(&self, snap: &Snapshot) -> Result<(), StorageError>;
    /// Removes snapshot `id` (when only its id is known, e.g. `keel rm`).
    fn remove_id(&self, id: &str) -> Result<(), StorageError>;
}

/// The directories every driver shares under `<root>/storage`.
#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    pub base: PathBuf,
}

impl Dirs {
    pub fn new(root: &Path) -> Dirs {
        Dirs {
            base: root.join("storage"),
        }
    }
    pub fn snapshot(&self, id: &str) -> PathBuf {
        self.base.join("snapshots").join(id)
    }
    pub fn tmp(&self) -> PathBuf {
        self.base.join("tmp")
    }
}

/// Unpacks `layer` into a new directory `dest` atomically: into a temp dir first, then
/// renamed, so a killed keel never leaves a half-unpacked cache entry.
pub(crate) fn unpack_atomically(
    dirs: &Dirs,
    layer: &LayerBlob,
    dest: &Path,
    whiteouts: Whiteouts,
    seed: Option<&Path>,
) -> Result<(), StorageError> {
    let tmp_root = dirs.tmp();
    fs::create_dir_all(&tmp_root).map_err(io_err("creating", &tmp_root))?;
    let tmp = tempfile::Builder::new()
        .prefix("unpack-")
        .tempdir_in(&tmp_root)
        .map_err(io_err("creating a temp dir in", &tmp_root))?;
    let tree = tmp.path().join("tree");
    match seed {
        Some(s) => copy::copy_tree(s, &tree)?,
        None => fs::create_dir(&tree).map_err(io_err("creating", &tree))?,
    }
    let f = fs::File::open(&layer.blob).map_err(io_err("opening", &layer.blob))?;
    let opts = UnpackOptions {
        whiteouts,
        ..UnpackOptions::default()
    };
    unpack(f, &tree, &opts).map_err(|source| StorageError::Unpack {
        diff_id: layer.diff_id.to_string(),
        source,
    })?;
    fs::create_dir_all(dest.parent().expect("cache dirs have parents"))
        .map_err(io_err("creating", dest))?;
    match fs::rename(&tree, dest) {
        Ok(()) => Ok(()),
        // Another keel unpacked the same layer meanwhile: theirs is as good as ours.
        Err(_) if dest.is_dir() => Ok(()),
        Err(e) => Err(io_err("renaming into", dest)(e)),
    }
}

/// Which drivers work on this host (with the reason when one does not).
pub fn detect(root: &Path) -> Vec<(&'static str, Result<(), String>)> {
    vec![
        (
            "overlay",
            overlay::probe(&Dirs::new(root)).map_err(|e| e.to_string()),
        ),
        ("copy", Ok(())),
    ]
}

/// Opens driver `kind`, or picks overlay where it works and copy otherwise.
pub fn open(kind: Option<&str>, root: &Path) -> Result<Box<dyn Snapshotter>, StorageError> {
    let dirs = Dirs::new(root);
    match kind {
        Some("overlay") => {
            overlay::probe(&dirs).map_err(|e| StorageError::OverlayUnavailable(e.to_string()))?;
            Ok(Box::new(OverlayDriver::new(dirs)))
        }
        Some("copy") | Some("vfs") => Ok(Box::new(CopyDriver::new(dirs))),
        Some(other) => Err(StorageError::Unknown(other.to_string())),
        None => Ok(if overlay::probe(&dirs).is_ok() {
            Box::new(OverlayDriver::new(dirs))
        } else {
            Box::new(CopyDriver::new(dirs))
        }),
    }
}
