//! The `btrfs` driver: every layer-chain prefix is a btrfs subvolume under
//! `subvolumes/<chain-id hex>/diff`, made as a snapshot of the chain below it with the
//! layer applied on top (whiteouts as deletions, opaque directories emptied); a
//! snapshot's rootfs is a writable snapshot of the top chain. Both snapshots are O(1)
//! and share every extent until written: no overlay mount, no copy.
//!
//! The changeset of a snapshot is a tree walk against its chain (as for the `copy`
//! driver): a btrfs snapshot keeps inode numbers, mtimes and ctimes, so everything whose
//! ctime predates the snapshot's stamp is skipped without reading it. A generation-based
//! changeset (BTRFS_IOC_TREE_SEARCH, `btrfs subvolume find-new`) sees only new file
//! extents: deletions, renames, chmod/chown and xattr changes are invisible to it, so it
//! would need the walk anyway (measured in docs/performance.md, "Session 4 — storage
//! drivers"). The kernel work is in `sys::btrfs`; this module never runs `btrfs`.
use std::path::{Path, PathBuf};

use super::copy::{apply_layer, chain_ids};
use super::verify::{MARKER, TREE};
use super::{
    build_cached, new_snapshot_dir, save_snapshot, teardown, LayerBlob, Result, Snapshot,
    Snapshotter, StorageError,
};
use crate::digest::{hex_of, Digest};
use crate::layer::diff::Change;
use crate::sys::{btrfs as sysbtrfs, hostfs};

/// Where the chain subvolumes live, below `<root>/storage`.
pub const SUBVOLUMES: &str = "subvolumes";

pub struct BtrfsDriver {
    storage: PathBuf,
}

/// Whether `storage` (or, before it exists, its nearest existing ancestor) is on
/// btrfs; the error says what it is on instead.
pub fn probe(storage: &Path) -> std::result::Result<(), String> {
    let at = storage
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match sysbtrfs::is_btrfs(at) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("{} is not on a btrfs filesystem", at.display())),
        Err(e) => Err(format!("cannot statfs {}: {e}", at.display())),
    }
}

impl BtrfsDriver {
    /// Opens the driver; fails when `storage` is not on btrfs.
    pub fn new(storage: &Path) -> Result<BtrfsDriver> {
        probe(storage).map_err(|why| StorageError::Unavailable {
            driver: "btrfs",
            why,
        })?;
        hostfs::create_dir_all(storage.join(SUBVOLUMES))
            .map_err(StorageError::io("creating", storage))?;
        Ok(BtrfsDriver {
            storage: storage.to_path_buf(),
        })
    }

    fn chain_dir(&self, chain: &Digest) -> PathBuf {
        self.storage.join(SUBVOLUMES).join(hex_of(chain))
    }

    /// Makes sure the subvolume of every prefix of `layers` exists; returns the top one
    /// (None for no layers) and how many layers were extracted.
    fn ensure_chain(&self, layers: &[LayerBlob]) -> Result<(Option<PathBuf>, usize)> {
        let chains = chain_ids(layers);
        // The longest cached prefix; everything above it is built on it.
        let mut have = chains.len();
        while have > 0 && !self.chain_dir(&chains[have - 1]).join(MARKER).is_file() {
            have -= 1;
        }
        let mut unpacked = 0;
        for i in have..chains.len() {
            let parent = (i > 0).then(|| self.chain_dir(&chains[i - 1]).join(TREE));
            let layer = &layers[i];
            let fresh = build_cached(&self.storage, &self.chain_dir(&chains[i]), "chain", |t| {
                // build_cached made `t` a plain directory; it must be a subvolume.
                hostfs::remove_dir(t).map_err(StorageError::io("replacing", t))?;
                new_subvolume(parent.as_deref(), t)?;
                apply_layer(layer, t)?;
                Ok(layers[..=i].iter().map(|l| l.diff_id.to_string()).collect())
            })?;
            unpacked += fresh as usize;
        }
        Ok((
            chains.last().map(|c| self.chain_dir(c).join(TREE)),
            unpacked,
        ))
    }

    /// An empty tree to diff a snapshot of no layers against.
    fn empty(&self) -> Result<PathBuf> {
        let empty = self.storage.join("empty");
        hostfs::create_dir_all(&empty).map_err(StorageError::io("creating", &empty))?;
        Ok(empty)
    }
}

/// Makes `at` a writable snapshot of the subvolume `parent`, or an empty subvolume with
/// mode 0755 (a container's `/`, whatever keel's umask) when there is none.
fn new_subvolume(parent: Option<&Path>, at: &Path) -> Result<()> {
    match parent {
        Some(p) => sysbtrfs::snapshot(p, at, false)
            .map_err(StorageError::io("making a btrfs snapshot at", at)),
        None => {
            sysbtrfs::create_subvolume(at)
                .map_err(StorageError::io("creating a btrfs subvolume at", at))?;
            use std::os::unix::fs::PermissionsExt;
            hostfs::set_permissions(at, std::fs::Permissions::from_mode(0o755))
                .map_err(StorageError::io("chmod", at))
        }
    }
}

impl Snapshotter for BtrfsDriver {
    fn prepare(&self, id: &str, layers: &[LayerBlob]) -> Result<Snapshot> {
        let (top, unpacked) = self.ensure_chain(layers)?;
        let base = match &top {
            Some(t) => t.clone(),
            None => self.empty()?,
        };
        let dir = new_snapshot_dir(&self.storage, id)?;
        let snap = Snapshot {
            id: id.to_string(),
            rootfs: dir.join("rootfs"),
            dir: dir.clone(),
            driver: self.name().to_string(),
            layers: layers.iter().map(|l| l.diff_id.to_string()).collect(),
            parents: vec![base],
            unpacked,
        };
        let made = (|| {
            new_subvolume(top.as_deref(), &snap.rootfs)?;
            // Files changed after this stamp have a newer ctime (see diff_trees_since).
            hostfs::write(dir.join("stamp"), b"").map_err(StorageError::io("writing", &dir))?;
            save_snapshot(&snap)
        })();
        if let Err(e) = made {
            let _ = teardown(&dir);
            return Err(e);
        }
        crate::fault::point("storage.snapshot-mounted");
        Ok(snap)
    }

    fn changes(&self, snap: &Snapshot) -> Result<Vec<Change>> {
        super::copy::tree_changes(snap)
    }

    /// Subvolumes are destroyed by ioctl, which the removing child does not do.
    fn remove_unused_at_exit(&self, snap: &Snapshot) -> Result<()> {
        self.remove_unused(snap)
    }

    fn name(&self) -> &'static str {
        "btrfs"
    }

    fn storage_root(&self) -> &Path {
        &self.storage
    }
}

/// Deletes, with one ioctl each, the subvolumes at `dir` and directly below it (where
/// keel makes them: `snapshots/<id>/rootfs`, `<tmp entry>/diff`, `subvolumes/<c>/diff`),
/// so removing the rest does not unlink their files one by one. Best effort: what is
/// left (a subvolume a container nested inside, a kernel refusing) is removed file by
/// file by the caller, and rmdir(2) deletes an empty subvolume.
pub(crate) fn destroy_subvolumes(dir: &Path) {
    if !matches!(sysbtrfs::is_btrfs(dir), Ok(true)) {
        return;
    }
    let mut found: Vec<PathBuf> = vec![dir.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(dir) {
        found.extend(rd.flatten().map(|e| e.path()));
    }
    for p in found {
        if matches!(sysbtrfs::is_subvolume(&p), Ok(true)) {
            if let Err(e) = sysbtrfs::destroy_subvolume(&p) {
                tracing::debug!(
                    "destroying subvolume {}: {e}; removing its files",
                    p.display()
                );
            }
        }
    }
}
