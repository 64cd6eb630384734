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
//! Opt-in (`KEEL_LAYER_FORMAT=erofs`, as root): a layer unpacked or committed from now on
//! is kept as one erofs image (`layers/<diff-id hex>/layer.erofs`, `layer::erofs`) instead
//! of a tree of files (issue 14, "never unpack"). A snapshot mounts each such image
//! read-only at `lower-<n>/` inside its own directory and stacks the overlay on those
//! mounts, so the images' mounts go and stay exactly as the snapshot's overlay does: taken
//! down with it (`detach_below` unmounts everything under a snapshot's directory), and a
//! killed keel's left for `keel gc` to reclaim with the snapshot. RUN results stay trees
//! (`keep_as_layer`); a cache may hold both kinds.
//!
//! The default as root (`KEEL_LAYER_FORMAT=tree` or `erofs` asks for the others; session
//! 13), when the kernel mounts one (`probe_chunk`): a layer keel commits itself from a plain
//! COPY (`pending_layer`, written through `layer::tee` as the uncompressed blob) is kept
//! as a chunked erofs image instead: metadata only, each file's data a chunk reference
//! into the layer's blob, whose digest the entry records in `device` (issue 14, "each
//! COPY'd byte written at most once"). The image is mounted with the store's blob as its
//! extra device. An entry whose blob is gone is dropped and the layer extracted again,
//! never mounted; `keel gc` keeps the blobs of the entries it keeps (`device_blobs`).
//! Layers unpacked from other blobs (pulled, compressed) keep the tree or flat path.
//! Under the default format, the next version of an edited COPY layer of many small
//! files is a tree instead, patched from then on ([`EditedLayer`]).
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
use crate::digest::{hex_of, Digest};
use crate::layer::adopt::settle_upper;
use crate::layer::diff::{diff_overlay, Change};
use crate::layer::erofs::{DEVICE, IMAGE};
use crate::layer::pack::PackOptions;
use crate::layer::unpack::{overlay_opaque_xattr, UnpackOptions, Whiteouts};
use crate::sys::fs as sysfs;

/// The environment variable that says how new layers are kept ([`LayerFormat`]).
pub const LAYER_FORMAT_ENV: &str = "KEEL_LAYER_FORMAT";

/// How the overlay driver keeps the layers it caches from now on (`KEEL_LAYER_FORMAT`).
/// Only root can mount erofs images, so rootless keel keeps trees whatever is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerFormat {
    /// Unset: a plain COPY's layer as a chunked image when this kernel mounts one, every
    /// other layer as a tree.
    Default,
    /// Every layer unpacked into a tree of files.
    Tree,
    /// Every layer as one flat erofs image (data included).
    Erofs,
    /// As the default, with a warning when the kernel cannot mount chunked images.
    Chunk,
}

impl LayerFormat {
    /// The format `value` names (empty is the default); the error says what is accepted.
    pub fn parse(value: &str) -> std::result::Result<LayerFormat, String> {
        match value {
            "" => Ok(LayerFormat::Default),
            "tree" => Ok(LayerFormat::Tree),
            "erofs" => Ok(LayerFormat::Erofs),
            "chunk" => Ok(LayerFormat::Chunk),
            other => Err(format!(
                "{LAYER_FORMAT_ENV}={other:?} is not a layer format: set it to tree, chunk or \
                 erofs, or unset it for the default (docs/store.md)"
            )),
        }
    }

    /// The format this process's environment asks for (a value that is not valid UTF-8
    /// is refused as any unknown one is).
    pub fn from_env() -> std::result::Result<LayerFormat, String> {
        match std::env::var_os(LAYER_FORMAT_ENV) {
            None => Ok(LayerFormat::Default),
            Some(v) => LayerFormat::parse(&v.to_string_lossy()),
        }
    }

    /// [`LayerFormat::from_env`], an invalid value read as the default: the CLI refuses
    /// one before any command runs (`cli::main`), so only library callers get here.
    fn current() -> LayerFormat {
        LayerFormat::from_env().unwrap_or(LayerFormat::Default)
    }
}

/// Whether new cache entries are erofs images: asked for, and as root (an erofs mount
/// needs CAP_SYS_ADMIN in the host's namespace).
fn erofs_layers() -> bool {
    LayerFormat::current() == LayerFormat::Erofs && !crate::sys::userns::rootless_cached()
}

/// Whether layers keel commits from a plain COPY are kept as chunked erofs images over
/// their blobs: the default as root (as `erofs_layers`, an erofs mount needs
/// CAP_SYS_ADMIN) unless `KEEL_LAYER_FORMAT` asks for another format (`tree`, `erofs`),
/// when this kernel mounts one ([`probe_chunk`], kept per store and kernel). When it
/// cannot, the layers are trees, as rootless, and the reason is logged once.
fn chunk_layers(storage: &Path) -> bool {
    let format = LayerFormat::current();
    if !matches!(format, LayerFormat::Default | LayerFormat::Chunk)
        || crate::sys::userns::rootless_cached()
    {
        return false;
    }
    match probed(storage, CHUNK_MARKERS, probe_chunk) {
        Ok(()) => true,
        Err(why) => {
            // Said once per process; a warning only when the format was asked for (the
            // default falls back quietly on a kernel older than 6.12).
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| match format {
                LayerFormat::Chunk => {
                    tracing::warn!("{LAYER_FORMAT_ENV}=chunk: {why}; COPY layers are kept as trees")
                }
                _ => tracing::debug!("chunked COPY layers: {why}; kept as trees"),
            });
            false
        }
    }
}

/// The size of a COPY layer about to be written again from its previous version (the
/// previous version's entry counts, `unpacked.json`), for the choice between a chunked
/// image and a tree (issue 14, the one-file row).
///
/// A chunked image costs no inode at commit, but every keel process that mounts it makes
/// an inode for each file a RUN step looks up and evicts them all when it unmounts:
/// ~4.5 µs per file on the project VM (a busybox `find` over 10,000 files through the
/// overlay: +20 ms of lookups, +25 ms of eviction against a tree). A tree costs ~20–27 µs
/// per file once (GNU tar extracts 10,000 files in 270 ms there), but each later version
/// is the same tree patched (only the changed files written, `take_tree`) and its inodes
/// stay cached across processes. So a layer that is edited and rebuilt — the edit loop —
/// pays the conversion once and saves the per-process cost on every rebuild after it,
/// when it has many files and those files are small (a tree holds its data a second time,
/// beside the blob: for big files that is the second write chunked images exist to avoid).
/// A cold build (no previous version) stays chunked: creating the inodes is most of a
/// cold 10,000-file build's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EditedLayer {
    /// Entries below the layer's root.
    pub entries: u64,
    /// Bytes of its regular files.
    pub bytes: u64,
}

impl EditedLayer {
    /// Below this many entries a chunked image's per-process cost is under ~5 ms.
    pub const MANY_ENTRIES: u64 = 1024;
    /// Mean bytes per entry up to which the data's second copy in a tree costs about
    /// what its inodes do.
    pub const SMALL_MEAN_BYTES: u64 = 16 * 1024;

    /// Whether the layer's next version is kept as a tree (see the type's doc).
    pub fn kept_as_tree(self) -> bool {
        self.entries >= Self::MANY_ENTRIES
            && self.bytes <= self.entries.saturating_mul(Self::SMALL_MEAN_BYTES)
    }
}

/// The blob a chunked image in the cache entry `entry` (`<root>/storage/layers/<hex>`)
/// reads its files from: None for a tree or a flat image.
pub(crate) fn entry_device(entry: &Path) -> Result<Option<PathBuf>> {
    let path = entry.join(DEVICE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("reading", &path)(e)),
    };
    let bad = || {
        StorageError::io("reading", &path)(std::io::Error::other(
            "not a blob digest under <root>/storage/layers",
        ))
    };
    let digest = crate::digest::parse(text.trim()).ok_or_else(bad)?;
    let root = entry.ancestors().nth(3).ok_or_else(bad)?;
    Ok(Some(crate::store::blob_path_in(root, &digest)))
}

/// Drops the cache entry `dest` when it is a chunked image whose blob is gone (the entry
/// is extracted again instead of mounted over nothing); whether it did.
fn drop_orphan(dest: &Path) -> Result<bool> {
    let orphan = match entry_device(dest) {
        Ok(Some(blob)) => !blob.is_file(),
        Ok(None) => false,
        Err(_) => true,
    };
    if orphan {
        tracing::debug!(entry = %dest.display(), "a chunked layer's blob is gone: dropped");
        super::remove_tree(dest).map_err(StorageError::io("removing", dest))?;
    }
    Ok(orphan)
}

/// [`OverlayDriver::release`]'s thread: forks the child that closes `pins` with the
/// releasing `lock` held shared (closed last, once the overlays are down); closes them
/// here when the lock or the child cannot be had.
fn close_pins(
    pins: Vec<std::os::fd::OwnedFd>,
    lock: std::io::Result<fs::File>,
) -> Option<crate::sys::proc::Closer> {
    let lock = match lock.and_then(|f| f.lock_shared().map(|()| f)) {
        Ok(lock) => lock,
        Err(e) => {
            tracing::debug!("closing a detached overlay's handles here: {e}");
            return None;
        }
    };
    let mut fds = pins;
    fds.push(lock.into());
    match crate::sys::proc::close_in_child(fds) {
        Ok(child) => Some(child),
        // Dropped in order: the pins, then the lock.
        Err((e, _fds)) => {
            tracing::debug!("closing a detached overlay's handles here: {e}");
            None
        }
    }
}

/// The lower a cache entry gives a snapshot: its image when it holds one, else its tree.
fn entry_lower(entry: &Path) -> PathBuf {
    let image = entry.join(IMAGE);
    match image.is_file() {
        true => image,
        false => entry.join(TREE),
    }
}

pub struct OverlayDriver {
    storage: PathBuf,
}

/// This process's releases ([`OverlayDriver::release`]) not yet waited for, whichever
/// driver started them: any driver's next mount waits for them all (`settle`), nothing
/// waits at exit. Each thread ends once it has forked the child that closes the handles
/// (returned), or has closed them itself (`None`).
static RELEASING: std::sync::Mutex<Vec<std::thread::JoinHandle<Option<crate::sys::proc::Closer>>>> =
    std::sync::Mutex::new(Vec::new());

/// Held shared by each child closing a detached overlay, and taken exclusively (then let
/// go) before a mount, by any keel using the store: see [`OverlayDriver::settle`].
const RELEASING_LOCK: &str = "releasing.lock";

impl OverlayDriver {
    /// A driver rooted at `<root>/storage` (created if missing; not probed).
    pub fn new(storage: &Path) -> Result<OverlayDriver> {
        hostfs::create_dir_all(storage.join("layers"))
            .map_err(StorageError::io("creating", storage))?;
        Ok(OverlayDriver {
            storage: storage.to_path_buf(),
        })
    }

    /// Waits until every overlay detached by `release_mount` is taken down, by this keel
    /// or another one using the store. Called before each mount: an overlay whose upper
    /// dir became a layer tree must be gone before that tree is mounted as a lower dir
    /// (the kernel warns that it is in use, or refuses it when overlay's `index` feature
    /// is on, and two live overlays sharing it is undefined behaviour). Not at exit: the
    /// children closing them end on their own.
    fn settle(&self) {
        let pending = std::mem::take(&mut *RELEASING.lock().unwrap_or_else(|e| e.into_inner()));
        let children: Vec<_> = pending
            .into_iter()
            .filter_map(|t| t.join().ok().flatten())
            .collect();
        // Granted once no child closing an overlay of this store holds it.
        if let Ok(lock) = self.releasing_lock() {
            let _ = lock.lock();
        }
        for child in children {
            child.wait();
        }
    }

    /// `<storage>/releasing.lock`, opened (created if missing).
    fn releasing_lock(&self) -> std::io::Result<fs::File> {
        let path = self.storage.join(RELEASING_LOCK);
        hostfs::open_with(
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true),
            &path,
        )
    }

    /// Closes `pins` (handles on detached overlays) in a child process that holds the
    /// releasing lock shared until it is done (`sys::proc::close_in_child`), so the
    /// kernel's eviction of what they cached overlaps with the build's next work — and
    /// this keel's exit does not wait for it (issue 14). The child is forked on a thread
    /// (the fork copies the page tables: ~1 ms off the build's path); the handles are
    /// closed on that thread when no child can be started, and here when no thread can.
    fn release(&self, pins: Vec<std::os::fd::OwnedFd>) {
        if pins.is_empty() {
            return;
        }
        let lock = self.releasing_lock();
        let spawned = std::thread::Builder::new()
            .name("keel-unmount".into())
            .spawn(move || close_pins(pins, lock));
        if let Ok(t) = spawned {
            RELEASING.lock().unwrap_or_else(|e| e.into_inner()).push(t);
        }
    }

    /// Unpacks `layer` into the cache unless it is there (verifying its diff_id); returns
    /// its tree (or its erofs image, see the module doc) and whether it was made now.
    pub fn ensure_layer(&self, layer: &LayerBlob) -> Result<(PathBuf, bool)> {
        let dest = self.storage.join("layers").join(hex_of(&layer.diff_id));
        drop_orphan(&dest)?;
        // Image layers may carry device nodes (debootstrap's /dev); containers get
        // their own /dev mounted over it, so they are kept.
        let opts = UnpackOptions {
            whiteouts: Whiteouts::Overlay,
            allow_devices: true,
            ..UnpackOptions::default()
        };
        if erofs_layers() && !dest.join(super::verify::MARKER).is_file() {
            let pending = self.pending_image(EntryKind::Image)?;
            let target = pending.target();
            let stats = super::verify::image_verified(layer, &target, &opts)?;
            pending.keep(&layer.diff_id, &layer.diff_id, stats.counts.summary)?;
            return Ok((entry_lower(&dest), true));
        }
        let fresh = build_cached(&self.storage, &dest, "layer", |tmp| {
            unpack_verified(layer, tmp, &opts)?;
            Ok(vec![layer.diff_id.to_string()])
        })?;
        Ok((entry_lower(&dest), fresh))
    }

    /// A temp cache entry for an image of `kind` (its empty tree removed).
    fn pending_image(&self, kind: EntryKind) -> Result<PendingLayer> {
        let tmp = super::new_entry(&self.storage)?;
        let tree = tmp.path().join(TREE);
        hostfs::remove_dir(&tree).map_err(StorageError::io("removing", &tree))?;
        Ok(PendingLayer {
            tmp,
            storage: self.storage.clone(),
            reused: None,
            kind,
        })
    }

    /// Moves the cached tree of layer `base` into the temp entry `tmp` (for it to be
    /// patched into a new layer), unless a snapshot uses that layer; what its marker said
    /// when it was taken. A snapshot is
    /// recorded before its overlay is mounted and its lower dirs are looked up when it is
    /// mounted, so checking after the entry has left the cache is enough: a snapshot
    /// recorded earlier is seen (and the tree goes back untouched), one mounted later
    /// finds the entry gone and has the layer extracted again (`prepare_mount`).
    fn take_tree(
        &self,
        base: &Digest,
        tmp: &tempfile::TempDir,
    ) -> Result<Option<super::verify::Marker>> {
        let entry = self.storage.join("layers").join(hex_of(base));
        // An image is written whole again (cheaply): only a tree is patched.
        if !entry.join(super::verify::MARKER).is_file() || entry.join(IMAGE).exists() {
            return Ok(None);
        }
        let aside = tmp.path().join("base");
        if hostfs::rename(&entry, &aside).is_err() {
            return Ok(None); // another process took it first
        }
        let in_use = match self.storage.parent() {
            Some(root) => super::list_snapshots(root)?
                .iter()
                .any(|s| s.layers.contains(&base.to_string())),
            None => true,
        };
        if in_use {
            if hostfs::rename(&aside, &entry).is_err() {
                // Extracted again meanwhile: keep the mounted copy out of gc's way (only
                // the day-old sweep of tmp/ removes an entry not named for its owner).
                let held = self
                    .storage
                    .join("tmp")
                    .join(format!("held-{}", hex_of(base)));
                let _ = hostfs::rename(&aside, held);
            }
            return Ok(None);
        }
        // Read once the entry is this process's: what it says is of this very tree.
        let Some(marker) = super::verify::read_marker(&aside) else {
            let _ = hostfs::remove_dir_all(&aside); // unreadable: unpacked again when used
            return Ok(None);
        };
        crate::fault::point("storage.reuse-taken");
        tracing::debug!(base = %base, "patching the cached tree of the previous layer");
        let tree = tmp.path().join(TREE);
        hostfs::remove_dir(&tree).map_err(StorageError::io("removing", &tree))?;
        hostfs::rename(aside.join(TREE), &tree).map_err(StorageError::io("moving", &aside))?;
        hostfs::remove_dir_all(&aside).map_err(StorageError::io("removing", &aside))?;
        Ok(Some(marker))
    }

    fn empty_lower(&self) -> Result<PathBuf> {
        let p = self.storage.join("empty");
        hostfs::create_dir_all(&p).map_err(StorageError::io("creating", &p))?;
        Ok(p)
    }
}

impl Snapshotter for OverlayDriver {
    fn prepare(&self, id: &str, layers: &[LayerBlob]) -> Result<Snapshot> {
        self.prepare_mount(id, layers, Top::Upper { volatile: false })
    }

    /// A `volatile` overlay: the upper filesystem is never synced on its behalf, so
    /// unmounting it does not wait for the disk to absorb everything dirty on that
    /// filesystem (a just-written layer blob, say). Kernels before 5.10 lack the option
    /// and get a plain mount.
    fn prepare_scratch(&self, id: &str, layers: &[LayerBlob]) -> Result<Snapshot> {
        self.prepare_mount(id, layers, Top::Upper { volatile: true })
    }

    /// A read-only overlay with no upper or work directory: the kernel sets up no work
    /// directory (`work/work`, `incompat/volatile`) and nothing is written or removed but
    /// the mount point and the snapshot's record — on a disk that discards freed blocks,
    /// five directories fewer to wait for. Overlayfs wants two lower directories for such
    /// a mount: a single layer is stacked on the empty directory; no layer is not mounted.
    fn prepare_view(&self, id: &str, layers: &[LayerBlob]) -> Result<Snapshot> {
        self.prepare_mount(id, layers, Top::None)
    }

    fn changes(&self, snap: &Snapshot) -> Result<Vec<Change>> {
        diff_overlay(&snap.dir.join("upper"), &snap.parents).map_err(|source| {
            StorageError::Changes {
                id: snap.id.clone(),
                source,
            }
        })
    }

    /// The upper dir already is the layer's tree, give or take what `settle_upper`
    /// fixes: it is moved into a temp cache entry, settled, marked and renamed into place
    /// (a kill before the rename leaves only a temp entry, which gc removes).
    fn keep_as_layer(
        &self,
        snap: &Snapshot,
        diff_id: &Digest,
        changes: &[Change],
        opts: &PackOptions,
        unused: bool,
    ) -> Result<bool> {
        // Usually released already (`release_mount` right after the pack): then nothing
        // is left to detach.
        self.release_mount(snap, unused)?;
        let upper = snap.dir.join("upper");
        let dest = self.storage.join("layers").join(hex_of(diff_id));
        build_cached(&self.storage, &dest, "layer", |tree| {
            // The temp entry's empty tree makes way for the upper dir (same filesystem).
            hostfs::remove_dir(tree).map_err(StorageError::io("removing", tree))?;
            hostfs::rename(&upper, tree).map_err(StorageError::io("moving", &upper))?;
            crate::fault::point("storage.keep-layer-moved");
            settle_upper(tree, changes, opts).map_err(|source| StorageError::Layer {
                diff_id: diff_id.to_string(),
                source,
            })?;
            Ok(vec![diff_id.to_string()])
        })
    }

    fn release_mount(&self, snap: &Snapshot, unused: bool) -> Result<()> {
        let scan = match unused {
            true => super::Scan::Skip,
            false => super::Scan::Kill,
        };
        // Detached now, taken down on another thread (`release`): after a RUN step that
        // walked many files that is the slowest part of an unmount (issue 14).
        if let Some((_, pins)) = super::detach_pinned(&snap.dir, scan)? {
            crate::fault::point("storage.unmount-deferred");
            self.release(pins);
        }
        Ok(())
    }

    fn pending_layer(&self, base: Option<&Digest>) -> Result<Option<PendingLayer>> {
        let chunked = chunk_layers(&self.storage) && !self.edited_as_tree(base);
        let image = match (chunked, erofs_layers()) {
            (true, _) => Some(EntryKind::Chunked),
            (false, true) => Some(EntryKind::Image),
            _ => None,
        };
        if let Some(kind) = image {
            return self.pending_image(kind).map(Some);
        }
        let tmp = super::new_entry(&self.storage)?;
        let reused = match base {
            Some(b) => self.take_tree(b, &tmp)?,
            None => None,
        };
        Ok(Some(PendingLayer {
            tmp,
            storage: self.storage.clone(),
            reused,
            kind: EntryKind::Tree,
        }))
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
        let top = match snap.dir.join("upper").exists() {
            true => Top::Upper { volatile: false },
            false => Top::None,
        };
        mount_snapshot(snap, top)
    }

    fn storage_root(&self) -> &Path {
        &self.storage
    }
}

impl OverlayDriver {
    /// Whether the next version of `base` (a COPY layer written again from it because
    /// its sources changed) is kept as a tree under the default format although chunked
    /// images are on: `base` has many small files ([`EditedLayer::kept_as_tree`]).
    /// The format asked for by name (`KEEL_LAYER_FORMAT=chunk`) is always kept.
    fn edited_as_tree(&self, base: Option<&Digest>) -> bool {
        if LayerFormat::current() != LayerFormat::Default {
            return false;
        }
        let Some(base) = base else { return false };
        let entry = self.storage.join("layers").join(hex_of(base));
        let kept = super::verify::read_marker(&entry).is_some_and(|m| {
            EditedLayer {
                entries: m.entries,
                bytes: m.bytes,
            }
            .kept_as_tree()
        });
        if kept {
            tracing::debug!(base = %base, "an edited layer of many small files: kept as a tree");
        }
        kept
    }

    /// A layer's tree may leave the cache between being looked up and being mounted (a
    /// build patching it into its next version, `take_tree`): the mount then fails with
    /// ENOENT, and one more try extracts the layer again.
    fn prepare_mount(&self, id: &str, layers: &[LayerBlob], top: Top) -> Result<Snapshot> {
        match self.prepare_mount_once(id, layers, top) {
            Err(StorageError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                self.prepare_mount_once(id, layers, top)
            }
            r => r,
        }
    }

    fn prepare_mount_once(&self, id: &str, layers: &[LayerBlob], top: Top) -> Result<Snapshot> {
        self.settle();
        let mut trees = Vec::with_capacity(layers.len());
        let mut unpacked = 0;
        for l in layers {
            let (dir, fresh) = self.ensure_layer(l)?;
            unpacked += fresh as usize;
            trees.push(dir);
        }
        let dir = new_snapshot_dir(&self.storage, id)?;
        // Images are mounted inside the snapshot's directory (before `lower_stack` reads
        // their roots' opaque xattr), so its teardown unmounts them with the overlay.
        let trees = match mount_images(&dir, trees) {
            Ok(t) => t,
            Err(e) => {
                let _ = super::teardown(&dir);
                return Err(e);
            }
        };
        let mut lowers = lower_stack(trees);
        if lowers.is_empty() || (top == Top::None && lowers.len() == 1) {
            lowers.push(self.empty_lower()?);
        }
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
            let subs: &[&str] = match top {
                Top::Upper { .. } => &["upper", "work", "rootfs"],
                Top::None => &["rootfs"],
            };
            for sub in subs {
                hostfs::create_dir(dir.join(sub)).map_err(StorageError::io("creating", &dir))?;
            }
            // The root is the container's `/`: 0755 as in docker, not keel's umask (under
            // umask 077 a non-root container user could not even chdir to `/`).
            let root = dir.join(subs[0]);
            hostfs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(StorageError::io("creating", &dir))?;
            // The snapshot is recorded before mounting so `remove` can always find it.
            save_snapshot(&snap)?;
            if top == Top::None && layers.is_empty() {
                return Ok(()); // an empty view: the empty mount point is all of it
            }
            mount_snapshot(&snap, top)
        })();
        if let Err(e) = made {
            // Unmounts the images first (a plain removal would walk into them).
            let _ = super::teardown(&dir);
            return Err(e);
        }
        crate::fault::point("storage.snapshot-mounted");
        Ok(snap)
    }
}

/// Mounts each erofs image among `trees` (bottom first) read-only at `lower-<n>` in the
/// snapshot directory `dir` (file-backed: no loop device) and gives the mount points in
/// their places; trees are passed through. A layer given twice is mounted once.
fn mount_images(dir: &Path, trees: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut done: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut out = Vec::with_capacity(trees.len());
    for t in trees {
        if t.file_name() != Some(std::ffi::OsStr::new(IMAGE)) {
            out.push(t);
            continue;
        }
        if let Some((_, m)) = done.iter().find(|(img, _)| *img == t) {
            out.push(m.clone());
            continue;
        }
        let at = dir.join(format!("lower-{}", done.len()));
        hostfs::create_dir(&at).map_err(StorageError::io("creating", &at))?;
        match entry_device(t.parent().unwrap_or(dir))? {
            Some(blob) => crate::sys::mount::mount_erofs_with_device(&t, &blob, &at)?,
            None => crate::sys::mount::mount_erofs(&t, &at)?,
        }
        done.push((t, at.clone()));
        out.push(at);
    }
    Ok(out)
}

/// What a snapshot has above its layers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Top {
    /// A writable upper directory (with overlay's work directory beside it); a
    /// `volatile` one is never synced (kernels before 5.10 get a plain mount).
    Upper { volatile: bool },
    /// Nothing: a read-only view of the layers.
    None,
}

/// Mounts `snap`'s overlay with `top` above its lower directories.
fn mount_snapshot(snap: &Snapshot, top: Top) -> Result<()> {
    let mount = |volatile| {
        sysfs::mount_overlay(
            &snap.parents,
            &snap.dir.join("upper"),
            &snap.dir.join("work"),
            &snap.rootfs,
            volatile,
        )
    };
    match top {
        Top::Upper { volatile } => mount(volatile).or_else(|e| match e.raw_os_error() {
            Some(libc::EINVAL) if volatile => mount(false),
            _ => Err(e),
        }),
        Top::None => sysfs::mount_overlay_read_only(&snap.parents, &snap.rootfs),
    }
    .map_err(StorageError::io("mounting overlay on", &snap.rootfs))
}

/// A layer's cache entry filled while the layer is written (`layer::tee`): a temp entry
/// until [`PendingLayer::keep`] names it for the layer's diff_id. Dropped, it is deleted.
pub struct PendingLayer {
    tmp: tempfile::TempDir,
    storage: PathBuf,
    /// The marker of the earlier version of the layer the tree holds, if it holds one.
    reused: Option<super::verify::Marker>,
    kind: EntryKind,
}

/// What a pending cache entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Tree,
    /// A flat erofs image (the opt-in erofs cache).
    Image,
    /// A chunked erofs image over the layer's blob (a plain COPY's layer as root, the
    /// default).
    Chunked,
}

impl PendingLayer {
    /// The entry's directory (the tree or image and what is stored beside them).
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The path the layer is written to: the tree to unpack into, or the image file.
    pub fn target(&self) -> PathBuf {
        match self.kind {
            EntryKind::Image | EntryKind::Chunked => self.tmp.path().join(IMAGE),
            EntryKind::Tree => self.tmp.path().join(TREE),
        }
    }

    /// The tee's second sink for `target` (this entry's [`PendingLayer::target`]).
    pub fn sink<'a>(&self, target: &'a Path) -> crate::layer::tee::SideSink<'a> {
        match self.kind {
            EntryKind::Image => crate::layer::tee::SideSink::Image(target),
            EntryKind::Chunked => crate::layer::tee::SideSink::ChunkImage(target),
            EntryKind::Tree => crate::layer::tee::SideSink::Tree(target),
        }
    }

    /// Whether the tree holds an earlier version of the layer (else it is empty).
    pub fn reused(&self) -> bool {
        self.reused.is_some()
    }

    /// The names of the earlier version's entries as its stream gave them, hashed
    /// (`unpack::UnpackOptions::old_names`), when its marker recorded them.
    pub fn old_names(&self) -> Option<&str> {
        self.reused.as_ref()?.names.as_deref()
    }

    /// The tree holds the layer `diff_id` (the digest of exactly the bytes unpacked into
    /// it): marked (with `counted`, the summary the unpack counted, when it could) and
    /// renamed into the cache, unless a complete entry is there already. A chunked image
    /// records `blob`, the store's blob it reads from, which must be the very stream it
    /// was made of (so its digest is `diff_id`: the uncompressed tar). Returns the entry's
    /// directory (for `store_beside`).
    pub fn keep(
        self,
        diff_id: &Digest,
        blob: &Digest,
        counted: Option<crate::layer::tally::Summary>,
    ) -> Result<PathBuf> {
        let dest = self.storage.join("layers").join(hex_of(diff_id));
        if self.kind == EntryKind::Chunked {
            let path = self.tmp.path().join(DEVICE);
            if blob != diff_id {
                return Err(StorageError::io("recording", &path)(std::io::Error::other(
                    "a chunked image needs the layer's uncompressed blob",
                )));
            }
            hostfs::write(&path, blob.to_string()).map_err(StorageError::io("writing", &path))?;
            crate::fault::point("storage.chunk-device-recorded");
        }
        // The cache's files are 0644 whatever keel's umask (a tree's modes are the
        // layer's own): the same cache under umask 022 and 077.
        use std::os::unix::fs::PermissionsExt;
        for file in [IMAGE, DEVICE] {
            let path = self.tmp.path().join(file);
            if self.kind != EntryKind::Tree && path.is_file() {
                hostfs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                    .map_err(StorageError::io("chmod", &path))?;
            }
        }
        crate::fault::point("storage.unpack-partial");
        super::place_entry(
            &self.storage,
            self.tmp,
            &dest,
            "layer",
            vec![diff_id.to_string()],
            counted,
        )?;
        Ok(dest)
    }
}

/// Writes `name` (a file keel reads back and checks itself, as the layer's entry index)
/// into the cache entry `entry`, which is in place already: never makes the directory (an
/// entry removed meanwhile stays removed), and is 0644 whatever keel's umask, as `keep`
/// leaves the files it finds.
pub fn store_beside(entry: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut opts = fs::File::options();
    opts.write(true).create(true).truncate(true).mode(0o644);
    let mut f = hostfs::open_with(&opts, entry.join(name))?;
    hostfs::set_file_permissions(&f, fs::Permissions::from_mode(0o644))?;
    let (head, tail) = contents.split_at(contents.len() / 2);
    f.write_all(head)?;
    crate::fault::point("storage.beside-partial");
    f.write_all(tail)
}

/// Whether the overlay driver's cache under `storage` holds layer `diff_id`'s tree
/// (complete: its marker is there).
pub fn has_layer_tree(storage: &Path, diff_id: &Digest) -> bool {
    layer_entry(storage, diff_id)
        .join(super::verify::MARKER)
        .is_file()
}

/// The overlay driver's cache entry for layer `diff_id` under `storage` (its tree in
/// `diff/`, its marker, and the tree's stored entry index when it has one).
pub fn layer_entry(storage: &Path, diff_id: &Digest) -> PathBuf {
    storage.join("layers").join(hex_of(diff_id))
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
    let overlay: fn(&Path) -> std::result::Result<(), ProbeFailure> =
        |s| probe(s).map_err(ProbeFailure::Failed);
    probed(storage, OVERLAY_MARKERS, overlay)
}

/// The marker files of a probe in `<root>/storage`: `ok` says it passed on this kernel
/// and filesystem; `refused` (when kept) that this kernel refused it, and why.
#[derive(Clone, Copy)]
struct ProbeMarkers {
    ok: &'static str,
    refused: Option<&'static str>,
}

/// An overlay probe's failure may be of the moment (a full disk): only success is kept.
const OVERLAY_MARKERS: ProbeMarkers = ProbeMarkers {
    ok: "overlay-ok",
    refused: None,
};

/// The chunk probe ([`probe_chunk`]) keeps a refusal too: without it a kernel older than
/// 6.12 would be asked again at every COPY keel commits.
const CHUNK_MARKERS: ProbeMarkers = ProbeMarkers {
    ok: "erofs-chunk-ok",
    refused: Some("erofs-chunk-refused"),
};

/// Why a probe failed.
#[derive(Debug, PartialEq, Eq)]
enum ProbeFailure {
    /// The kernel refused what was tried: the same kernel will refuse it again.
    Refused(String),
    /// Something of the moment failed (a temp file not written): ask again next time.
    Failed(String),
}

/// `probe(storage)`, skipped when a marker (see [`ProbeMarkers`]) in `storage` holds
/// its outcome on this kernel and filesystem; the outcome kept when it is a pass or a
/// refusal the markers keep. A kernel upgrade or another filesystem asks again.
fn probed(
    storage: &Path,
    markers: ProbeMarkers,
    probe: fn(&Path) -> std::result::Result<(), ProbeFailure>,
) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let stamp = |dev: u64| format!("{} {dev}\n", kernel.trim());
    let ok = storage.join(markers.ok);
    let refused = markers.refused.map(|r| storage.join(r));
    if let Ok(dev) = fs::metadata(storage).map(|m| m.dev()) {
        if fs::read_to_string(&ok).is_ok_and(|have| have == stamp(dev)) {
            return Ok(());
        }
        if let Some(r) = &refused {
            let kept = fs::read_to_string(r).unwrap_or_default();
            if let Some(why) = kept.strip_prefix(&stamp(dev)) {
                let kept_in = r.display();
                return Err(format!("{why} (kept in {kept_in}; remove it to ask again)"));
            }
        }
    }
    let outcome = probe(storage);
    // Best effort: without a marker the next call probes again.
    let Ok(dev) = fs::metadata(storage).map(|m| m.dev()) else {
        return outcome.map_err(|(ProbeFailure::Refused(why) | ProbeFailure::Failed(why))| why);
    };
    match outcome {
        Ok(()) => {
            let _ = hostfs::write(&ok, stamp(dev));
            Ok(())
        }
        Err(ProbeFailure::Refused(why)) => {
            if let Some(r) = &refused {
                let _ = hostfs::write(r, format!("{}{why}", stamp(dev)));
            }
            Err(why)
        }
        Err(ProbeFailure::Failed(why)) => Err(why),
    }
}

/// Writes a one-file layer tar and its chunked erofs image under `<storage>/tmp`, mounts
/// the image with the tar as its device (detached: nothing stays mounted) and reads the
/// file back through it; the error says what failed (file-backed erofs with an extra
/// device needs Linux 6.12 or later). Only the mount and what it reads back are the
/// kernel's answer ([`ProbeFailure::Refused`]); the files before them are ours.
fn probe_chunk(storage: &Path) -> std::result::Result<(), ProbeFailure> {
    use std::os::fd::AsRawFd;
    const BODY: &[u8] = b"keel chunk probe\n";
    let ours = ProbeFailure::Failed;
    let tmp_root = storage.join("tmp");
    hostfs::create_dir_all(&tmp_root).map_err(|e| ours(format!("{}: {e}", tmp_root.display())))?;
    let tmp = hostfs::scratch_dir_in(&tmp_root, "chunk-probe")
        .map_err(|e| ours(format!("a temp dir in {}: {e}", tmp_root.display())))?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(BODY.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "probe", BODY)
        .map_err(|e| ours(e.to_string()))?;
    let bytes = tar.into_inner().map_err(|e| ours(e.to_string()))?;
    let (blob, image) = (tmp.path().join("layer.tar"), tmp.path().join(IMAGE));
    hostfs::write(&blob, &bytes).map_err(|e| ours(format!("{}: {e}", blob.display())))?;
    let opts = UnpackOptions::default();
    crate::layer::erofs::write_image_file(std::io::Cursor::new(bytes), &image, &opts, true)
        .map_err(|e| ours(e.to_string()))?;
    let refused = ProbeFailure::Refused;
    let root = crate::sys::mount::erofs_with_device(&image, &blob).map_err(|e| {
        refused(format!(
            "this kernel does not mount a chunked erofs image: {e}"
        ))
    })?;
    let read = fs::read(format!("/proc/self/fd/{}/probe", root.as_raw_fd()));
    match read {
        Ok(got) if got == BODY => Ok(()),
        Ok(_) => Err(refused(
            "a chunked erofs image read back other bytes than its blob's".into(),
        )),
        Err(e) => Err(refused(format!(
            "reading through a chunked erofs image: {e}"
        ))),
    }
}

/// Tries a real overlay mount (with a whiteout and an opaque directory in the lower
/// layer) under `<storage>/tmp`; the error says what is missing.
pub fn probe(storage: &Path) -> std::result::Result<(), String> {
    let tmp_root = storage.join("tmp");
    hostfs::create_dir_all(&tmp_root)
        .map_err(|e| format!("cannot create {}: {e}", tmp_root.display()))?;
    let tmp = hostfs::scratch_dir_in(&tmp_root, "probe")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A mount waits while any keel's child still closes a detached overlay of the store
    /// (holding the releasing lock shared, as `release` makes it), and goes on once it is
    /// done; a release's child holds that lock until it has closed the overlay's handles.
    #[test]
    fn a_mount_waits_for_every_release_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let driver = OverlayDriver::new(dir.path()).unwrap();
        // Another keel's child, mid-close.
        let held = driver.releasing_lock().unwrap();
        held.lock_shared().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let storage = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            OverlayDriver::new(&storage).unwrap().settle();
            done_tx.send(()).unwrap();
        });
        let early = done_rx.recv_timeout(std::time::Duration::from_millis(300));
        assert!(early.is_err(), "settle did not wait for the lock's holder");
        drop(held);
        done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("settle still waiting once the holder let go");
        waiter.join().unwrap();

        // This process's own release: a child holds the lock until the handles are closed.
        let (r, w) = crate::sys::proc::pipe().unwrap();
        driver.release(vec![w]);
        driver.settle();
        let probe = driver.releasing_lock().unwrap();
        assert!(
            probe.try_lock().is_ok(),
            "the lock is still held after settle"
        );
        let mut byte = [0u8; 1];
        let mut end = std::fs::File::from(r);
        use std::io::Read;
        assert_eq!(
            end.read(&mut byte).unwrap(),
            0,
            "the child did not close the handle"
        );
    }

    /// `KEEL_LAYER_FORMAT`'s values: the three formats and unset; anything else (a typo,
    /// another case, spaces) is refused with the accepted values named.
    #[test]
    fn layer_formats_are_the_three_names_or_unset() {
        let cases = [
            ("", Ok(LayerFormat::Default)),
            ("tree", Ok(LayerFormat::Tree)),
            ("erofs", Ok(LayerFormat::Erofs)),
            ("chunk", Ok(LayerFormat::Chunk)),
            ("Tree", Err(())),
            ("chunked", Err(())),
            (" tree", Err(())),
            ("overlay", Err(())),
        ];
        for (value, want) in cases {
            let got = LayerFormat::parse(value);
            match (&got, want) {
                (Ok(f), Ok(w)) => assert_eq!(*f, w, "{value:?}"),
                (Err(e), Err(())) => {
                    assert!(e.contains(&format!("{value:?}")), "{e}");
                    assert!(e.contains("tree, chunk or erofs"), "{e}");
                }
                _ => panic!("{value:?}: {got:?}"),
            }
        }
    }

    /// An edited COPY layer's next version is a tree when it has many small files, and
    /// stays chunked when it has few entries or big ones (`EditedLayer`'s cost model).
    #[test]
    fn an_edited_layer_is_kept_as_a_tree_when_it_has_many_small_files() {
        let many = EditedLayer::MANY_ENTRIES;
        let small = EditedLayer::SMALL_MEAN_BYTES;
        let cases = [
            // The bench's 10,000 files of 512 bytes.
            (10_101, 5_120_000, true),
            (many, many * small, true),
            (many, 0, true),
            (many - 1, 0, false),
            (many, many * small + 1, false),
            // Three files of 300 MiB.
            (4, 3 * (300 << 20), false),
            (0, 0, false),
            (u64::MAX, u64::MAX, true),
        ];
        for (entries, bytes, want) in cases {
            let layer = EditedLayer { entries, bytes };
            assert_eq!(layer.kept_as_tree(), want, "{layer:?}");
        }
    }

    /// The chunk probe mounts a real chunked image on this kernel (6.12+, as root), keeps
    /// its marker, and leaves nothing in the store's tmp.
    #[test]
    fn the_chunk_probe_mounts_one_image_and_keeps_its_pass() {
        let why = "mounting an erofs image needs root";
        if !crate::testing::can_run(crate::sys::proc::is_root(), why) {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let storage = root.path().join("storage");
        fs::create_dir_all(&storage).unwrap();
        assert_eq!(probed(&storage, CHUNK_MARKERS, probe_chunk), Ok(()));
        assert!(storage.join(CHUNK_MARKERS.ok).is_file());
        let left: Vec<_> = fs::read_dir(storage.join("tmp")).unwrap().collect();
        assert!(left.is_empty(), "the probe left {left:?}");
    }

    /// What `probed` keeps: a pass and, where the markers say so, a refusal (the next call
    /// answers from the marker without probing, naming it); a failure of the moment, or a
    /// refusal the markers don't keep, is asked again. A marker stamped for another
    /// kernel or filesystem is not believed.
    #[test]
    fn probes_keep_passes_and_refusals_but_not_failures_of_the_moment() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        type Probe = fn(&Path) -> std::result::Result<(), ProbeFailure>;
        let pass: Probe = |_| {
            CALLS.fetch_add(1, SeqCst);
            Ok(())
        };
        let refuse: Probe = |_| {
            CALLS.fetch_add(1, SeqCst);
            Err(ProbeFailure::Refused("no erofs".into()))
        };
        let fail: Probe = |_| {
            CALLS.fetch_add(1, SeqCst);
            Err(ProbeFailure::Failed("disk full".into()))
        };
        let keeps = ProbeMarkers {
            ok: "t-ok",
            refused: Some("t-refused"),
        };
        let passes_only = ProbeMarkers {
            ok: "u-ok",
            refused: None,
        };
        // (markers, probe, first answer, whether the second call probes again)
        let cases: [(ProbeMarkers, Probe, std::result::Result<(), &str>, bool); 5] = [
            (keeps, pass, Ok(()), false),
            (keeps, refuse, Err("no erofs"), false),
            (keeps, fail, Err("disk full"), true),
            (passes_only, refuse, Err("no erofs"), true),
            (passes_only, pass, Ok(()), false),
        ];
        for (n, (markers, probe, want, again)) in cases.into_iter().enumerate() {
            let root = tempfile::tempdir().unwrap();
            let storage = root.path().to_path_buf();
            CALLS.store(0, SeqCst);
            let first = probed(&storage, markers, probe);
            assert_eq!(first, want.map_err(String::from), "case {n}");
            let second = probed(&storage, markers, probe);
            assert_eq!(CALLS.load(SeqCst), if again { 2 } else { 1 }, "case {n}");
            match (&second, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) if again => assert_eq!(e, w, "case {n}"),
                (Err(e), Err(w)) => assert!(
                    e.starts_with(w) && e.contains("t-refused") && e.contains("remove it"),
                    "case {n}: {e}"
                ),
                _ => panic!("case {n}: {second:?}"),
            }
            // Another kernel's (or filesystem's) marker is not believed.
            for name in [markers.ok].into_iter().chain(markers.refused) {
                if storage.join(name).exists() {
                    fs::write(storage.join(name), "0.0-other 1\nno erofs").unwrap();
                }
            }
            CALLS.store(0, SeqCst);
            let _ = probed(&storage, markers, probe);
            assert_eq!(
                CALLS.load(SeqCst),
                1,
                "case {n}: a stale marker was believed"
            );
        }
    }

    /// An entry whose chunked image's blob is gone is dropped by `ensure_layer`, which
    /// extracts the layer again from the blob it is given (here another file with the
    /// same diff_id, as a compressed copy of the layer would be): a tree, never the image.
    #[test]
    fn a_chunked_entry_without_its_blob_is_extracted_again() {
        let root = tempfile::tempdir().unwrap();
        let storage = root.path().join("storage");
        let drv = OverlayDriver::new(&storage).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_mtime(1);
        b.append_data(&mut h, "f", &b"hi"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let diff_id = crate::digest::of_bytes(&tar);
        let blob = root.path().join("elsewhere.tar");
        fs::write(&blob, &tar).unwrap();
        let entry = layer_entry(&storage, &diff_id);
        fs::create_dir_all(&entry).unwrap();
        fs::write(entry.join(IMAGE), b"never mounted").unwrap();
        fs::write(entry.join(DEVICE), diff_id.to_string()).unwrap();
        let summary = crate::layer::tally::Summary {
            entries: 1,
            bytes: 2,
            dirs: String::new(),
            names: None,
        };
        let ids = vec![diff_id.to_string()];
        super::super::verify::write_marker(&entry, "layer", ids, Some(summary)).unwrap();
        assert!(entry_device(&entry).unwrap().is_some_and(|b| !b.exists()));
        let layer = LayerBlob { diff_id, blob };
        let (lower, fresh) = drv.ensure_layer(&layer).unwrap();
        assert!(fresh);
        assert_eq!(lower, entry.join(TREE));
        assert_eq!(fs::read(lower.join("f")).unwrap(), b"hi");
        assert!(!entry.join(DEVICE).exists() && !entry.join(IMAGE).exists());
    }
}
