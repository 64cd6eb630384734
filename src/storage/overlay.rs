//! The `overlay` driver: each layer is unpacked once into `layers/<diff-id hex>/diff` with
//! overlayfs whiteouts, and a snapshot is an overlay mount of those layers with its own
//! `upper/` and `work/` (kernel docs: filesystems/overlayfs.rst).
//!
//! The lower stack is what the layers mean, not a literal list: the kernel ignores an
//! opaque marker on a lower layer's root and refuses the same directory twice, so a layer
//! with an opaque root hides every layer below it (image-spec layer.md, "Opaque
//! Whiteout"), and a layer repeated in a manifest is mounted once, at its top-most place
//! (the copy driver applies it twice, with the same result).
//!
//! The driver owns its directories under `<root>/storage`; mounting goes through
//! `sys::fs`.
use crate::sys::hostfs;
use std::fs;
use std::path::{Path, PathBuf};

use super::verify::{unpack_verified, TREE};
use super::{
    build_cached, new_snapshot_dir, save_snapshot, LayerBlob, Result, Snapshot, Snapshotter,
    StorageError,
};
use crate::digest::hex_of;
use crate::layer::diff::{diff_overlay, Change};
use crate::layer::unpack::{overlay_opaque_xattr, UnpackOptions, Whiteouts};
use crate::sys::fs as sysfs;

pub struct OverlayDriver {
    storage: PathBuf,
}

impl OverlayDriver {
    /// A driver rooted at `<root>/storage` (created if missing; not probed).
    pub fn new(storage: &Path) -> Result<OverlayDriver> {
        hostfs::create_dir_all(storage.join("layers"))
            .map_err(StorageError::io("creating", storage))?;
        Ok(OverlayDriver {
            storage: storage.to_path_buf(),
        })
    }

    /// Unpacks `layer` into the cache unless it is there (verifying its diff_id); returns
    /// its tree and whether it was extracted now.
    pub fn ensure_layer(&self, layer: &LayerBlob) -> Result<(PathBuf, bool)> {
        let dest = self.storage.join("layers").join(hex_of(&layer.diff_id));
        let fresh = build_cached(&self.storage, &dest, "layer", |tmp| {
            // Image layers may carry device nodes (debootstrap's /dev); containers get
            // their own /dev mounted over it, so they are kept.
            let opts = UnpackOptions {
                whiteouts: Whiteouts::Overlay,
                allow_devices: true,
                ..UnpackOptions::default()
            };
            unpack_verified(layer, tmp, &opts)?;
            Ok(vec![layer.diff_id.to_string()])
        })?;
        Ok((dest.join(TREE), fresh))
    }

    fn empty_lower(&self) -> Result<PathBuf> {
        let p = self.storage.join("empty");
        hostfs::create_dir_all(&p).map_err(StorageError::io("creating", &p))?;
        Ok(p)
    }
}

impl Snapshotter for OverlayDriver {
    fn prepare(&self, id: &str, layers: &[LayerBlob]) -> Result<Snapshot> {
        self.prepare_mount(id, layers, false)
    }

    /// A `volatile` overlay: the upper filesystem is never synced on its behalf, so
    /// unmounting it does not wait for the disk to absorb everything dirty on that
    /// filesystem (a just-written layer blob, say). Kernels before 5.10 lack the option
    /// and get a plain mount.
    fn prepare_scratch(&self, id: &str, layers: &[LayerBlob]) -> Result<Snapshot> {
        self.prepare_mount(id, layers, true)
    }

    fn changes(&self, snap: &Snapshot) -> Result<Vec<Change>> {
        diff_overlay(&snap.dir.join("upper"), &snap.parents).map_err(|source| {
            StorageError::Changes {
                id: snap.id.clone(),
                source,
            }
        })
    }

    fn name(&self) -> &'static str {
        "overlay"
    }

    fn ensure_mounted(&self, snap: &Snapshot) -> Result<()> {
        // As root the mount lives in the host's namespace until the snapshot goes.
        if !crate::sys::userns::rootless_cached() {
            return Ok(());
        }
        let mounted = crate::sys::mount::mount_points()
            .map(|m| m.contains(&snap.rootfs))
            .unwrap_or(false);
        if mounted {
            return Ok(());
        }
        sysfs::mount_overlay(
            &snap.parents,
            &snap.dir.join("upper"),
            &snap.dir.join("work"),
            &snap.rootfs,
            false,
        )
        .map_err(StorageError::io("mounting overlay on", &snap.rootfs))
    }

    fn storage_root(&self) -> &Path {
        &self.storage
    }
}

impl OverlayDriver {
    fn prepare_mount(&self, id: &str, layers: &[LayerBlob], volatile: bool) -> Result<Snapshot> {
        let mut trees = Vec::with_capacity(layers.len());
        let mut unpacked = 0;
        for l in layers {
            let (dir, fresh) = self.ensure_layer(l)?;
            unpacked += fresh as usize;
            trees.push(dir);
        }
        let mut lowers = lower_stack(trees);
        if lowers.is_empty() {
            lowers.push(self.empty_lower()?);
        }
        let dir = new_snapshot_dir(&self.storage, id)?;
        let snap = Snapshot {
            id: id.to_string(),
            rootfs: dir.join("rootfs"),
            dir: dir.clone(),
            driver: self.name().to_string(),
            layers: layers.iter().map(|l| l.diff_id.to_string()).collect(),
            parents: lowers,
            unpacked,
        };
        let made = (|| {
            for sub in ["upper", "work", "rootfs"] {
                hostfs::create_dir(dir.join(sub)).map_err(StorageError::io("creating", &dir))?;
            }
            // The upper dir is the container's `/`: 0755 as in docker, not keel's umask
            // (under umask 077 a non-root container user could not even chdir to `/`).
            hostfs::set_permissions(
                dir.join("upper"),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .map_err(StorageError::io("creating", &dir))?;
            // The snapshot is recorded before mounting so `remove` can always find it.
            save_snapshot(&snap)?;
            let mount = |volatile| {
                sysfs::mount_overlay(
                    &snap.parents,
                    &dir.join("upper"),
                    &dir.join("work"),
                    &snap.rootfs,
                    volatile,
                )
            };
            mount(volatile)
                .or_else(|e| match e.raw_os_error() {
                    Some(libc::EINVAL) if volatile => mount(false),
                    _ => Err(e),
                })
                .map_err(StorageError::io("mounting overlay on", &snap.rootfs))
        })();
        if let Err(e) = made {
            let _ = hostfs::remove_dir_all(&dir);
            return Err(e);
        }
        crate::fault::point("storage.snapshot-mounted");
        Ok(snap)
    }
}

/// The overlay lower dirs (top-most first) for layer trees given bottom first: a tree
/// already above is skipped, and nothing below a tree with an opaque root is visible.
fn lower_stack(trees: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut lowers: Vec<PathBuf> = Vec::with_capacity(trees.len());
    for t in trees.into_iter().rev() {
        if lowers.contains(&t) {
            continue;
        }
        let opaque =
            matches!(sysfs::get_xattr(&t, overlay_opaque_xattr()), Ok(Some(v)) if v == b"y");
        lowers.push(t);
        if opaque {
            break;
        }
    }
    lowers
}

/// Like [`probe`], but remembers a success in `<storage>/overlay-ok` (with the kernel
/// release and the storage directory's device), so starting a container does not pay
/// for a test mount every time.
pub fn probe_cached(storage: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let marker = storage.join("overlay-ok");
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let stamp = |dev: u64| format!("{} {dev}\n", kernel.trim());
    let dev = fs::metadata(storage).map(|m| m.dev()).ok();
    if let (Some(dev), Ok(have)) = (dev, fs::read_to_string(&marker)) {
        if have == stamp(dev) {
            return Ok(());
        }
    }
    probe(storage)?;
    if let Ok(m) = fs::metadata(storage) {
        // Best effort: without the marker the next call probes again.
        let _ = hostfs::write(&marker, stamp(m.dev()));
    }
    Ok(())
}

/// Tries a real overlay mount (with a whiteout and an opaque directory in the lower
/// layer) under `<storage>/tmp`; the error says what is missing.
pub fn probe(storage: &Path) -> std::result::Result<(), String> {
    let tmp_root = storage.join("tmp");
    hostfs::create_dir_all(&tmp_root)
        .map_err(|e| format!("cannot create {}: {e}", tmp_root.display()))?;
    let prefix = format!("{}-probe-", crate::store::lease::Owner::current().tag());
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&tmp_root)
        .map_err(|e| format!("cannot create a temp dir in {}: {e}", tmp_root.display()))?;
    let d = |s: &str| tmp.path().join(s);
    for s in ["lower", "lower/opaque", "upper", "work", "merged"] {
        hostfs::create_dir(d(s)).map_err(|e| e.to_string())?;
    }
    sysfs::mknod(&d("lower/gone"), sysfs::NodeKind::Char, 0, 0, 0)
        .map_err(|e| format!("cannot create whiteout device nodes: {e}"))?;
    sysfs::set_xattr(&d("lower/opaque"), overlay_opaque_xattr(), b"y").map_err(|e| {
        format!(
            "no {} xattrs on {}: {e}",
            overlay_opaque_xattr(),
            storage.display()
        )
    })?;
    sysfs::mount_overlay(&[d("lower")], &d("upper"), &d("work"), &d("merged"), false)
        .map_err(|e| format!("test mount failed: {e}"))?;
    let ok = !d("merged/gone").exists();
    let _ = sysfs::unmount(&d("merged"));
    if !ok {
        return Err("whiteouts are not honoured".into());
    }
    Ok(())
}
