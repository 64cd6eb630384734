//! Storage drivers: root filesystems (snapshots) for containers and build steps, made
//! from an image's layer stack plus a writable top.
//!
//! Three drivers implement [`Snapshotter`]: `overlay` (kernel overlayfs over layers
//! unpacked once each), `copy` (merged trees cached per layer-chain prefix, copied
//! into a plain directory, with reflinks where the filesystem has them; works on any
//! filesystem) and `btrfs` (a subvolume per layer-chain prefix, snapshots for the rest;
//! chosen when the root is on btrfs). Everything lives under `<root>/storage/`:
//!
//! ```text
//! layers/<diff-id hex>/      one unpacked layer: diff/ (overlay whiteouts) + unpacked.json
//! chains/<chain-id hex>/     merged tree of layers 1..n: diff/ + unpacked.json (copy driver)
//! subvolumes/<chain-id hex>/ the same as a btrfs subvolume diff/ + unpacked.json (btrfs)
//! snapshots/<id>/            snapshot.json, rootfs/, and upper/ + work/ for overlay
//! tmp/                       unpacks in progress; renamed into place when complete
//! ```
//!
//! Caches are only ever renamed into place complete, so a killed keel never leaves a
//! half-unpacked layer behind (stray `tmp/` entries are garbage). Each layer's stream is
//! hashed while it is unpacked and must match its diff_id (`verify.rs`), and each cache
//! entry records what it was unpacked from in `unpacked.json`, written last before the
//! rename: a directory without it is not trusted. This module does not know about the
//! image store: callers pass the blob paths and diff ids.
use crate::sys::hostfs;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::layer::diff::Change;
use crate::layer::pack::{pack, PackOptions, PackStats};
use crate::layer::LayerError;

pub mod btrfs;
pub mod copy;
pub mod overlay;
pub mod reclaim;
pub mod verify;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("layer {diff_id}: {source}")]
    Layer { diff_id: String, source: LayerError },
    #[error("layer {} does not match its diff_id {diff_id}: its content hashes to {actual}; the image is corrupt or forged, so nothing of it was kept (remove the image and load it again from a trusted source)", blob.display())]
    DiffIdMismatch {
        diff_id: String,
        actual: String,
        blob: PathBuf,
    },
    #[error("snapshot {id}: {source}")]
    Changes { id: String, source: LayerError },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{driver} not available ({why}); use --storage-driver copy")]
    Unavailable { driver: &'static str, why: String },
    #[error("unknown storage driver {0:?}; use overlay, copy or btrfs")]
    UnknownDriver(String),
    #[error("snapshot {0:?} already exists; remove it first or pick another id")]
    Exists(String),
    #[error("snapshot {id:?} was made by the {driver} driver; use --storage-driver {driver}")]
    OtherDriver { id: String, driver: String },
    #[error(transparent)]
    Sys(#[from] crate::sys::SysError),
    #[error("no snapshot {0:?}")]
    NotFound(String),
    #[error(
        "invalid snapshot id {0:?}: use letters, digits, '-', '_' and '.', not starting with '.'"
    )]
    BadId(String),
}

impl StorageError {
    pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StorageError {
        let path = path.to_path_buf();
        move |source| StorageError::Io { what, path, source }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// One layer of an image: its uncompressed digest and the blob file (maybe gzip).
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub diff_id: Digest,
    pub blob: PathBuf,
}

/// A prepared root filesystem with a writable top.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    /// The directory a container uses as its root.
    pub rootfs: PathBuf,
    /// `<root>/storage/snapshots/<id>`: everything the snapshot owns.
    pub dir: PathBuf,
    pub driver: String,
    /// Diff ids of the layers below, bottom first.
    pub layers: Vec<String>,
    /// What the writable top is compared against: the overlay lower dirs (top-most
    /// first) or the copy driver's merged parent tree.
    pub parents: Vec<PathBuf>,
    /// Layers extracted by the `prepare` call that made this snapshot (0 when every
    /// layer came from the cache).
    #[serde(default)]
    pub unpacked: usize,
}

/// A storage driver.
pub trait Snapshotter: Send + Sync {
    /// Creates snapshot `id` from `layers` (bottom first) with an empty writable top.
    fn prepare(&self, id: &str, layers: &[LayerBlob]) -> Result<Snapshot>;
    /// Like `prepare`, for a snapshot that is removed after one use and never mounted
    /// again (a build step, a `--rm` container): its writes need not survive a crash.
    fn prepare_scratch(&self, id: &str, layers: &[LayerBlob]) -> Result<Snapshot> {
        self.prepare(id, layers)
    }
    /// A snapshot of `layers` that is only read, once (a build step that looks at the
    /// tree below it and writes its layer elsewhere): a driver may make it read-only and
    /// without a writable top, which is then cheaper to set up and to remove.
    fn prepare_view(&self, id: &str, layers: &[LayerBlob]) -> Result<Snapshot> {
        self.prepare_scratch(id, layers)
    }
    /// What changed in the writable top against the layers, sorted by path.
    fn changes(&self, snap: &Snapshot) -> Result<Vec<Change>>;
    /// Keeps the writable top of `snap` as the unpacked cache entry of `diff_id`, the
    /// layer just committed from `changes` with `opts`, so the next step does not extract
    /// it again. False when the driver cannot (the layer is unpacked when needed). The
    /// snapshot is unmounted either way and is only good for `remove` afterwards.
    /// `unused`: no process can still be in the snapshot (none ran in it, or its
    /// container's PID namespace init was reaped), so no host process is looked at.
    fn keep_as_layer(
        &self,
        _snap: &Snapshot,
        _diff_id: &Digest,
        _changes: &[Change],
        _opts: &PackOptions,
        _unused: bool,
    ) -> Result<bool> {
        Ok(false)
    }
    /// Unmounts `snap` once nothing reads through its mount again (its changes packed),
    /// the kernel's teardown of the mount going on while the caller stores the layer —
    /// where the driver can hand it to another thread. The snapshot is then only good
    /// for `keep_as_layer` and removal. `unused` as for [`Snapshotter::keep_as_layer`].
    fn release_mount(&self, _snap: &Snapshot, _unused: bool) -> Result<()> {
        Ok(())
    }
    /// A tree to unpack a layer into while it is being written, for the driver's cache to
    /// keep once its diff_id is known: empty, or the cached tree of `base` (an earlier
    /// version of the layer, taken out of the cache) when no snapshot uses it. None when
    /// the driver keeps no such trees.
    fn pending_layer(&self, _base: Option<&Digest>) -> Result<Option<overlay::PendingLayer>> {
        Ok(None)
    }
    /// Unmounts and deletes the snapshot; nothing of it is left behind.
    fn remove(&self, snap: &Snapshot) -> Result<()> {
        teardown(&snap.dir)
    }
    /// [`Snapshotter::remove`] for a snapshot no process can still be using (the container
    /// that ran in it had its own PID namespace, and its init was reaped): skips the scan
    /// of every host process's `/proc/PID/root`, one `stat` per process on the host.
    fn remove_unused(&self, snap: &Snapshot) -> Result<()> {
        teardown_with(&snap.dir, Scan::Skip)
    }
    /// [`Snapshotter::remove_unused`] for a command about to end: the snapshot is gone
    /// from the store at once and a child process deletes its files
    /// ([`teardown_deferred`]; plain directories only — btrfs removes its subvolumes here).
    fn remove_unused_at_exit(&self, snap: &Snapshot) -> Result<()> {
        teardown_deferred(&snap.dir)
    }
    fn name(&self) -> &'static str;
    /// Mounts a prepared snapshot again when its mount is not in this mount namespace:
    /// rootless keel's mounts live in the namespace of the keel that made them, so a
    /// stopped container started by a later keel needs its rootfs mounted anew.
    fn ensure_mounted(&self, _snap: &Snapshot) -> Result<()> {
        Ok(())
    }
    /// Loads a snapshot prepared earlier (possibly by another keel process).
    /// Fails with [`StorageError::OtherDriver`] for a snapshot another driver made.
    fn get(&self, id: &str) -> Result<Snapshot> {
        let snap = load_snapshot(
            &self.storage_root().join("snapshots").join(check_id(id)?),
            id,
        )?;
        if snap.driver != self.name() {
            return Err(StorageError::OtherDriver {
                id: id.to_string(),
                driver: snap.driver,
            });
        }
        Ok(snap)
    }
    /// Removes snapshot `id` when only its id is known (`keel rm`); a missing or
    /// half-prepared snapshot is removed as far as it exists.
    fn remove_id(&self, id: &str) -> Result<()> {
        teardown(&self.storage_root().join("snapshots").join(check_id(id)?))
    }
    /// `<root>/storage`.
    fn storage_root(&self) -> &Path;
}

/// Whether a driver works on this host, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverSupport {
    pub name: &'static str,
    pub available: bool,
    /// Empty when available; otherwise the reason.
    pub detail: String,
}

/// Which drivers work under `root` on this host (overlay is tried with a real mount).
pub fn detect(root: &Path) -> Vec<DriverSupport> {
    let storage = root.join("storage");
    let copy = match hostfs::create_dir_all(storage.join("tmp")) {
        Ok(()) => DriverSupport {
            name: "copy",
            available: true,
            detail: String::new(),
        },
        Err(e) => DriverSupport {
            name: "copy",
            available: false,
            detail: format!("cannot create {}: {e}", storage.display()),
        },
    };
    let overlay = match overlay::probe(&storage) {
        Ok(()) => DriverSupport {
            name: "overlay",
            available: true,
            detail: String::new(),
        },
        Err(why) => DriverSupport {
            name: "overlay",
            available: false,
            detail: why,
        },
    };
    let btrfs = match btrfs::probe(&storage) {
        Ok(()) => DriverSupport {
            name: "btrfs",
            available: true,
            detail: String::new(),
        },
        Err(why) => DriverSupport {
            name: "btrfs",
            available: false,
            detail: why,
        },
    };
    vec![overlay, copy, btrfs]
}

/// Opens the driver `kind` (`overlay`, `copy` or `btrfs`), or picks one: btrfs when the
/// root is on btrfs (as docker and podman do), else overlay when it works here, else copy.
pub fn open(kind: Option<&str>, root: &Path) -> Result<Box<dyn Snapshotter>> {
    let storage = root.join("storage");
    match kind {
        Some("copy") => Ok(Box::new(copy::CopyDriver::new(&storage)?)),
        Some("btrfs") => Ok(Box::new(btrfs::BtrfsDriver::new(&storage)?)),
        None if btrfs::probe(&storage).is_ok() => Ok(Box::new(btrfs::BtrfsDriver::new(&storage)?)),
        Some("overlay") => match overlay::probe_cached(&storage) {
            Ok(()) => Ok(Box::new(overlay::OverlayDriver::new(&storage)?)),
            Err(why) => Err(StorageError::Unavailable {
                driver: "overlayfs",
                why,
            }),
        },
        Some(other) => Err(StorageError::UnknownDriver(other.to_string())),
        None => match overlay::probe_cached(&storage) {
            Ok(()) => Ok(Box::new(overlay::OverlayDriver::new(&storage)?)),
            Err(why) => {
                tracing::debug!("overlay storage unavailable ({why}); using copy");
                Ok(Box::new(copy::CopyDriver::new(&storage)?))
            }
        },
    }
}

/// Commits a snapshot: its changeset, packed as a reproducible uncompressed layer
/// into `out` (the snapshot must be prepared and quiescent).
pub fn commit(
    drv: &dyn Snapshotter,
    snap: &Snapshot,
    out: impl io::Write,
    opts: &PackOptions,
) -> Result<(Vec<Change>, PackStats)> {
    let changes = drv.changes(snap)?;
    let stats =
        pack(&changes, &snap.rootfs, out, opts).map_err(|source| StorageError::Changes {
            id: snap.id.clone(),
            source,
        })?;
    Ok((changes, stats))
}

/// Every snapshot under `<root>/storage/snapshots`, whichever driver made it.
pub fn list_snapshots(root: &Path) -> Result<Vec<Snapshot>> {
    let dir = root.join("storage/snapshots");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StorageError::Io {
                what: "listing",
                path: dir,
                source: e,
            })
        }
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(StorageError::io("listing", &dir))?;
        let id = e.file_name().to_string_lossy().into_owned();
        match load_snapshot(&e.path(), &id) {
            Ok(s) => out.push(s),
            // A snapshot dir without metadata is a prepare that was killed: not a snapshot.
            Err(StorageError::NotFound(_)) => {}
            Err(err) => return Err(err),
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// What [`prune_cache`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneStats {
    pub layers: usize,
    pub chains: usize,
    pub temp: usize,
}

/// Temp entries older than this are leftovers of a killed keel.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The names of the layer and chain cache entries that an existing snapshot or one of
/// the `keep` layer stacks (bottom first) needs.
fn kept_entries(
    root: &Path,
    keep: &[Vec<Digest>],
) -> Result<(
    std::collections::HashSet<String>,
    std::collections::HashSet<String>,
)> {
    use std::collections::HashSet;
    let mut stacks: Vec<Vec<Digest>> = keep.to_vec();
    for snap in list_snapshots(root)? {
        stacks.push(
            snap.layers
                .iter()
                .filter_map(|d| crate::digest::parse(d))
                .collect(),
        );
    }
    let mut layers = HashSet::new();
    let mut chains = HashSet::new();
    for stack in &stacks {
        let blobs: Vec<LayerBlob> = stack
            .iter()
            .map(|d| LayerBlob {
                diff_id: d.clone(),
                blob: PathBuf::new(),
            })
            .collect();
        layers.extend(stack.iter().map(|d| crate::digest::hex_of(d).to_string()));
        chains.extend(
            copy::chain_ids(&blobs)
                .iter()
                .map(|d| crate::digest::hex_of(d).to_string()),
        );
    }
    Ok((layers, chains))
}

/// The blobs that chunked erofs layer entries read their files from (roots for the
/// store's gc): of the entries [`prune_cache`] with `keep` keeps, or of every entry
/// when it will not run (`None`). An entry's blob is never removed while it stays.
pub fn device_blobs(root: &Path, keep: Option<&[Vec<Digest>]>) -> Result<Vec<Digest>> {
    let kept = match keep {
        Some(k) => Some(kept_entries(root, k)?.0),
        None => None,
    };
    let dir = root.join("storage").join("layers");
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if kept.as_ref().is_some_and(|k| !k.contains(&name)) {
            continue;
        }
        let device = fs::read_to_string(e.path().join(crate::layer::erofs::DEVICE));
        out.extend(device.ok().and_then(|t| crate::digest::parse(t.trim())));
    }
    Ok(out)
}

/// Removes cached layers and chain trees that neither an existing snapshot nor one of
/// the `keep` layer stacks (bottom first, e.g. every image in the store) needs, chunked
/// layer entries whose blob is gone, and temp entries older than a day.
pub fn prune_cache(root: &Path, keep: &[Vec<Digest>]) -> Result<PruneStats> {
    let storage = root.join("storage");
    let (layers, chains) = kept_entries(root, keep)?;
    let mut stats = PruneStats::default();
    let sweep =
        |sub: &str, keep: &std::collections::HashSet<String>, count: &mut usize| -> Result<()> {
            let dir = storage.join(sub);
            let Ok(rd) = fs::read_dir(&dir) else {
                return Ok(());
            };
            for e in rd.flatten() {
                let orphan = || {
                    overlay::entry_device(&e.path())
                        .map_or(true, |b| b.is_some_and(|b| !b.is_file()))
                };
                if !keep.contains(&*e.file_name().to_string_lossy()) || orphan() {
                    remove_tree(&e.path()).map_err(StorageError::io("removing", &e.path()))?;
                    *count += 1;
                }
            }
            Ok(())
        };
    sweep("layers", &layers, &mut stats.layers)?;
    sweep("chains", &chains, &mut stats.chains)?;
    sweep(btrfs::SUBVOLUMES, &chains, &mut stats.chains)?;
    if let Ok(rd) = fs::read_dir(storage.join("tmp")) {
        for e in rd.flatten() {
            let old = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            if old && remove_tree(&e.path()).is_ok() {
                stats.temp += 1;
            }
        }
    }
    Ok(stats)
}

/// Loads snapshot `id` together with the driver that made it (for `keel rm` and
/// friends, whatever `--storage-driver` says now).
pub fn load(root: &Path, id: &str) -> Result<(Box<dyn Snapshotter>, Snapshot)> {
    let snap = load_snapshot(&root.join("storage/snapshots").join(check_id(id)?), id)?;
    let storage = root.join("storage");
    let drv: Box<dyn Snapshotter> = match snap.driver.as_str() {
        "overlay" => Box::new(overlay::OverlayDriver::new(&storage)?),
        "copy" => Box::new(copy::CopyDriver::new(&storage)?),
        "btrfs" => Box::new(btrfs::BtrfsDriver::new(&storage)?),
        other => return Err(StorageError::UnknownDriver(other.to_string())),
    };
    Ok((drv, snap))
}

/// Kills whatever still runs in `dir/rootfs` (under chroot a container's first process is
/// no PID-namespace init, so its children outlive it; a RUN step may leave a background
/// job), unmounts everything mounted at or below `dir` (deepest first: the overlay rootfs,
/// and whatever a chroot-style backend mounted inside it — /proc, volumes), then deletes
/// `dir`. Unmounting first matters: deleting through a bind-mounted volume would delete
/// the volume's data.
pub(crate) fn teardown(dir: &Path) -> Result<()> {
    teardown_with(dir, Scan::Kill)
}

/// Whether teardown looks for processes still rooted in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Kill whatever runs in `dir/rootfs` first (a chroot container's leftovers).
    Kill,
    /// The caller knows nothing can run there (its PID namespace's init was reaped).
    Skip,
}

/// [`teardown`], with the scan for leftover processes as `scan` says.
pub(crate) fn teardown_with(dir: &Path, scan: Scan) -> Result<()> {
    let Some(real) = unmount_below_with(dir, scan)? else {
        return Ok(());
    };
    match remove_tree(&real) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::Io {
            what: "removing",
            path: real,
            source: e,
        }),
    }
}

/// Where a snapshot being removed in a child process is while the child works:
/// `<snapshots>/.rm-<id>`, locked (`flock`) by the child until it is done.
pub(crate) const REMOVING: &str = ".rm-";

/// [`teardown_with`] ([`Scan::Skip`]) for a command about to end (a foreground `run
/// --rm`): the snapshot is unmounted and renamed to `.rm-<id>` now — its id is free and
/// nothing takes it for a snapshot — and its files are removed by a child process that
/// holds a lock on it until done (`sys::remove::remove_in_child`), so this command does not
/// wait for the `rmdir`s, each of which waits for a discard on a filesystem mounted with
/// `discard` (issue 14). `keel gc` removes what an interrupted child left (an unlocked
/// `.rm-` entry). Removes it here when no child can be had.
pub(crate) fn teardown_deferred(dir: &Path) -> Result<()> {
    let Some(real) = unmount_below_with(dir, Scan::Skip)? else {
        return Ok(());
    };
    let (Some(parent), Some(id)) = (real.parent(), real.file_name()) else {
        return teardown_with(&real, Scan::Skip);
    };
    let name = format!("{REMOVING}{}", id.to_string_lossy());
    let trash = parent.join(&name);
    let handed =
        hostfs::rename(&real, &trash).is_ok() && hand_to_child(parent, &name, &trash).is_ok();
    match handed {
        true => Ok(()),
        false if trash.exists() => teardown_with(&trash, Scan::Skip),
        false => teardown_with(&real, Scan::Skip),
    }
}

/// Locks `trash` (`parent/name`) and forks the child that removes it.
fn hand_to_child(parent: &Path, name: &str, trash: &Path) -> io::Result<()> {
    let hold = fs::File::open(trash)?;
    hold.try_lock().map_err(io::Error::other)?;
    let parent = fs::File::open(parent)?;
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    crate::sys::remove::remove_in_child(parent.into(), &name, hold.into()).map_err(io::Error::other)
}

/// Whether `.rm-` entry `dir` is left over: no child is removing it (its lock is free).
pub(crate) fn removal_abandoned(dir: &Path) -> bool {
    fs::File::open(dir).is_ok_and(|f| f.try_lock().is_ok())
}

/// The first half of [`teardown`]: kills what runs in `dir/rootfs` (unless `scan` is
/// [`Scan::Skip`]) and unmounts everything at or below `dir`. Returns `dir` resolved, or
/// None when it does not exist.
fn unmount_below_with(dir: &Path, scan: Scan) -> Result<Option<PathBuf>> {
    Ok(detach_below(dir, scan, false)?.map(|(real, _)| real))
}

/// The mounts at or below `dir` detached as [`unmount_below_with`] does, but each pinned
/// first (`sys::mount::pin`): they are gone from the mount table when this returns, and
/// the kernel finishes taking them down when the returned handles are closed. Lets a
/// build hand that work (the eviction of everything a RUN step's overlay cached) to
/// another thread while it goes on. Returns `dir` resolved, or None when it is missing.
pub(crate) fn detach_pinned(
    dir: &Path,
    scan: Scan,
) -> Result<Option<(PathBuf, Vec<std::os::fd::OwnedFd>)>> {
    detach_below(dir, scan, true)
}

/// [`unmount_below_with`], pinning each mount before detaching it when `pin` says so.
fn detach_below(
    dir: &Path,
    scan: Scan,
    pin: bool,
) -> Result<Option<(PathBuf, Vec<std::os::fd::OwnedFd>)>> {
    if scan == Scan::Kill {
        crate::runtime::reclaim::kill_rooted_in(&dir.join("rootfs"));
    }
    let real = match fs::canonicalize(dir) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StorageError::Io {
                what: "resolving",
                path: dir.to_path_buf(),
                source: e,
            })
        }
    };
    let mut points: Vec<PathBuf> = crate::sys::mount::mount_points()?
        .into_iter()
        .filter(|p| p.starts_with(&real))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    let mut pins = Vec::new();
    for p in &points {
        // Unpinned when it cannot be opened: then the detach below does all the work.
        if let Some(fd) = pin.then(|| crate::sys::mount::pin(p).ok()).flatten() {
            pins.push(fd);
        }
        // A stacked mount point appears once per mount; detaching twice fails harmlessly.
        let _ = crate::sys::mount::umount_detach(p);
    }
    if let Some(left) = crate::sys::mount::mount_points()?
        .into_iter()
        .find(|p| p.starts_with(&real))
    {
        return Err(StorageError::Io {
            what: "unmounting",
            path: left,
            source: io::Error::other("still mounted; refusing to delete below it"),
        });
    }
    Ok(Some((real, pins)))
}

/// Deletes the directory tree `path`; btrfs subvolumes where keel makes them go with one
/// ioctl each instead of file by file (`btrfs::destroy_subvolumes`).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    btrfs::destroy_subvolumes(path);
    match hostfs::remove_dir_all(path) {
        // The whole tree was one subvolume, now gone.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Snapshot ids become directory names: keep them tame.
pub(crate) fn check_id(id: &str) -> Result<&str> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(id)
    } else {
        Err(StorageError::BadId(id.to_string()))
    }
}

pub(crate) fn load_snapshot(dir: &Path, id: &str) -> Result<Snapshot> {
    let meta = dir.join("snapshot.json");
    let bytes = match fs::read(&meta) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StorageError::NotFound(id.to_string()))
        }
        Err(e) => {
            return Err(StorageError::Io {
                what: "reading",
                path: meta,
                source: e,
            })
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| StorageError::Io {
        what: "parsing",
        path: meta,
        source: e.into(),
    })
}

pub(crate) fn save_snapshot(snap: &Snapshot) -> Result<()> {
    let meta = snap.dir.join("snapshot.json");
    let json = serde_json::to_vec_pretty(snap).expect("snapshot serialises");
    hostfs::write(&meta, json).map_err(StorageError::io("writing", &meta))
}

/// Creates `<storage>/snapshots/<id>`, failing when it exists. The directory appears
/// complete with an `owner` file naming this process (made in a `.new-<owner>-<id>`
/// staging directory, then renamed), so `keel gc` can always tell a live keel's snapshot
/// from one a dead keel left behind (`reclaim.rs`).
pub(crate) fn new_snapshot_dir(storage: &Path, id: &str) -> Result<PathBuf> {
    let snapshots = storage.join("snapshots");
    let dir = snapshots.join(check_id(id)?);
    hostfs::create_dir_all(&snapshots).map_err(StorageError::io("creating", &dir))?;
    let owner = crate::store::lease::Owner::current().tag();
    let staging = snapshots.join(format!(".new-{owner}-{id}"));
    teardown(&staging)?;
    hostfs::create_dir(&staging).map_err(StorageError::io("creating", &staging))?;
    let owner_file = staging.join(reclaim::OWNER_FILE);
    hostfs::write(&owner_file, &owner).map_err(StorageError::io("writing", &owner_file))?;
    // rename(2) replaces an empty directory and fails on a non-empty one.
    let placed = match hostfs::rename(&staging, &dir) {
        Err(_) if dir.is_dir() && !dir.join("snapshot.json").exists() => {
            // No metadata: a prepare killed before it finished. Its dir is garbage.
            teardown(&dir)?;
            hostfs::rename(&staging, &dir)
        }
        r => r,
    };
    if let Err(e) = placed {
        let _ = hostfs::remove_dir_all(&staging);
        return Err(if dir.is_dir() {
            StorageError::Exists(id.to_string())
        } else {
            StorageError::Io {
                what: "creating",
                path: dir,
                source: e,
            }
        });
    }
    crate::fault::point("storage.snapshot-dir");
    Ok(dir)
}

/// Builds a cache entry at `dest` unless a complete one is there: `fill` populates the
/// fresh tree `diff/` (mode 0755) of a temp entry and returns the diff_ids it holds; the
/// marker is written last and the entry renamed into place. Losing a race with another
/// process is fine: its complete entry is kept. A `dest` without a marker (a foreign or
/// older directory) is moved aside first. Returns whether `fill` ran.
pub(crate) fn build_cached(
    storage: &Path,
    dest: &Path,
    kind: &str,
    fill: impl FnOnce(&Path) -> Result<Vec<String>>,
) -> Result<bool> {
    if dest.join(verify::MARKER).is_file() {
        return Ok(false);
    }
    let tmp = new_entry(storage)?;
    // On an error the temp entry is dropped, and with it whatever `fill` wrote.
    let diff_ids = fill(&tmp.path().join(verify::TREE))?;
    crate::fault::point("storage.unpack-partial");
    place_entry(storage, tmp, dest, kind, diff_ids, None)?;
    Ok(true)
}

/// A temp cache entry under `<storage>/tmp` with an empty tree `diff/` (mode 0755),
/// named for its owner so gc removes it as soon as that process is gone.
pub(crate) fn new_entry(storage: &Path) -> Result<tempfile::TempDir> {
    let tmp_root = storage.join("tmp");
    hostfs::create_dir_all(&tmp_root).map_err(StorageError::io("creating", &tmp_root))?;
    let tmp = hostfs::scratch_dir_in(&tmp_root, "unpack")
        .map_err(StorageError::io("creating a temp dir in", &tmp_root))?;
    let tree = tmp.path().join(verify::TREE);
    hostfs::create_dir(&tree).map_err(StorageError::io("creating", &tree))?;
    use std::os::unix::fs::PermissionsExt;
    for dir in [tmp.path(), &tree] {
        hostfs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(StorageError::io("chmod", dir))?;
    }
    Ok(tmp)
}

/// Marks the filled temp entry `tmp` as holding `diff_ids` (with the tree's summary
/// when it was counted while unpacking) and renames it to `dest` (moving aside a `dest`
/// without a marker; keeping another process's complete one).
pub(crate) fn place_entry(
    storage: &Path,
    tmp: tempfile::TempDir,
    dest: &Path,
    kind: &str,
    diff_ids: Vec<String>,
    counted: Option<crate::layer::tally::Summary>,
) -> Result<()> {
    if dest.join(verify::MARKER).is_file() {
        return Ok(()); // another process was first; `tmp` is dropped
    }
    if let Some(parent) = dest.parent() {
        hostfs::create_dir_all(parent).map_err(StorageError::io("creating", parent))?;
    }
    // An entry always appears with its marker (rename), so one without is not ours.
    if fs::symlink_metadata(dest).is_ok() {
        set_aside(&storage.join("tmp"), dest)?;
    }
    verify::write_marker(tmp.path(), kind, diff_ids, counted)?;
    let tmp = tmp.keep();
    match hostfs::rename(&tmp, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.join(verify::MARKER).is_file() => {
            let _ = remove_tree(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = remove_tree(&tmp);
            Err(StorageError::Io {
                what: "renaming into place",
                path: dest.to_path_buf(),
                source: e,
            })
        }
    }
}

/// Moves an untrusted cache directory out of the way (into `tmp/`, where it is deleted
/// now if possible and by `prune_cache` otherwise).
fn set_aside(tmp_root: &Path, dest: &Path) -> Result<()> {
    let aside = hostfs::scratch_dir_in(tmp_root, "stale")
        .map_err(StorageError::io("creating a temp dir in", tmp_root))?
        .keep();
    let to = aside.join("entry");
    match hostfs::rename(dest, &to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(StorageError::Io {
                what: "moving aside",
                path: dest.to_path_buf(),
                source: e,
            })
        }
    }
    let _ = remove_tree(&aside);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_are_checked() {
        for ok in ["abc", "a-b_c.1", "0123456789abcdef"] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    /// gc's roots from the chunked entries: the blobs of those the prune keeps, or of
    /// every one when no prune runs; trees name none.
    #[test]
    fn device_blobs_are_those_of_the_kept_chunked_entries() {
        let root = tempfile::tempdir().unwrap();
        let layers = root.path().join("storage/layers");
        let ids: Vec<Digest> = [b"a", b"b", b"c"]
            .iter()
            .map(|b| crate::digest::of_bytes(*b))
            .collect();
        for (i, d) in ids.iter().enumerate() {
            let entry = layers.join(crate::digest::hex_of(d));
            fs::create_dir_all(entry.join(verify::TREE)).unwrap();
            if i < 2 {
                fs::write(entry.join(crate::layer::erofs::DEVICE), d.to_string()).unwrap();
            }
        }
        let keep = vec![vec![ids[0].clone(), ids[2].clone()]];
        assert_eq!(
            device_blobs(root.path(), Some(&keep)).unwrap(),
            vec![ids[0].clone()]
        );
        let mut all = device_blobs(root.path(), None).unwrap();
        all.sort_by_key(|d| d.to_string());
        let mut want = vec![ids[0].clone(), ids[1].clone()];
        want.sort_by_key(|d| d.to_string());
        assert_eq!(all, want);
    }
}
