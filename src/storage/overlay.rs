//! The overlay driver: each layer is unpacked once into `storage/layers/<diff_id>/` (with
//! overlayfs whiteouts) and shared; a snapshot is an overlay mount of those layers with
//! its own upper and work directories.
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{io_err, unpack_atomically, Dirs, LayerBlob, Snapshot, Snapshotter, StorageError};
use crate::layer::diff::{self, Change};
use crate::layer::unpack::Whiteouts;

pub struct OverlayDriver {
    dirs: Dirs,
}

/// Whether an overlay mount works under this root (tried once per process).
pub(super) fn probe(dirs: &Dirs) -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            // A successful probe is remembered per kernel, so each keel process does not
            // pay for a test mount.
            let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            let stamp = dirs.base.join("overlay-works");
            if fs::read_to_string(&stamp).ok().as_deref() == Some(kernel.as_str()) {
                return Ok(());
            }
            let base = dirs.base.join("probe");
            let _ = fs::create_dir_all(&dirs.base);
            let t = tempfile::Builder::new()
                .prefix("probe-")
                .tempdir_in(&dirs.base)
                .map_err(|e| format!("creating {}: {e}", base.display()))?;
            let p = t.path();
            for d in ["lower", "upper", "work", "merged"] {
                fs::create_dir(p.join(d)).map_err(|e| e.to_string())?;
            }
            let opts = vec![
                format!("lowerdir={}", p.join("lower").display()),
                format!("upperdir={}", p.join("upper").display()),
                format!("workdir={}", p.join("work").display()),
            ];
            crate::sys::mount::mount_fs("overlay", "overlay", &p.join("merged"), &opts)
                .map_err(|e| e.to_string())?;
            let _ = crate::sys::mount::umount_detach(&p.join("merged"));
            let _ = fs::write(&stamp, &kernel);
            Ok(())
        })
        .clone()
}

impl OverlayDriver {
    pub(super) fn new(dirs: Dirs) -> OverlayDriver {
        OverlayDriver { dirs }
    }

    fn layer_dir(&self, l: &LayerBlob) -> PathBuf {
        self.dirs.base.join("layers").join(l.diff_id.digest())
    }

    /// A short stable alias for a layer directory, keeping the mount options under the
    /// kernel's one-page limit for deep images.
    fn short_link(&self, l: &LayerBlob) -> Result<PathBuf, StorageError> {
        let dir = self.dirs.base.join("l");
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let link = dir.join(&l.diff_id.digest()[..16]);
        if fs::symlink_metadata(&link).is_err() {
            let _ =
                std::os::unix::fs::symlink(Path::new("../layers").join(l.diff_id.digest()), &link);
        }
        Ok(link)
    }

    fn parts(&self, id: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
        let dir = self.dirs.snapshot(id);
        (dir.join("upper"), dir.join("work"), dir.join("merged"), dir)
    }
}

impl Snapshotter for OverlayDriver {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn prepare(&self, id: &str, layers: &[LayerBlob]) -> Result<Snapshot, StorageError> {
        let mut lowers = Vec::new();
        for l in layers {
            let d = self.layer_dir(l);
            if !d.is_dir() {
                unpack_atomically(&self.dirs, l, &d, Whiteouts::Overlay, None)?;
            }
            lowers.push(self.short_link(l)?);
        }
        if lowers.is_empty() {
            let empty = self.dirs.base.join("empty");
            fs::create_dir_all(&empty).map_err(io_err("creating", &empty))?;
            lowers.push(empty);
        }
        let (upper, work, merged, dir) = self.parts(id);
        if dir.exists() {
            self.remove_id(id)?;
        }
        for d in [&upper, &work, &merged] {
            fs::create_dir_all(d).map_err(io_err("creating", d))?;
        }
        // overlayfs wants the topmost lower first.
        let lowerdir = lowers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let opts = vec![
            format!("lowerdir={lowerdir}"),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ];
        if let Err(e) = crate::sys::mount::mount_fs("overlay", "overlay", &merged, &opts) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        Ok(Snapshot {
            id: id.to_string(),
            rootfs: merged,
            dir,
            base: upper,
        })
    }

    fn changes(&self, snap: &Snapshot) -> Result<Vec<Change>, StorageError> {
        diff::overlay_upper(&snap.base).map_err(io_err("reading", &snap.base))
    }

    fn remove(&self, snap: &Snapshot) -> Result<(), StorageError> {
        self.remove_id(&snap.id)
    }

    fn remove_id(&self, id: &str) -> Result<(), StorageError> {
        let (_, _, merged, dir) = self.parts(id);
        super::copy::unmount_below(&merged)?;
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", &dir)(e)),
            _ => Ok(()),
        }
    }
}
