//! The image store: an OCI image layout under `<root>/images` plus keel's own state beside
//! it (`tmp/` for in-flight writes, `locks/`, `leases/`). Owns blob writes (atomic and
//! verified), index updates (locked and atomic), leases and name resolution. It never
//! unpacks layers or runs anything. See docs/store.md for the on-disk contract.
mod blob;
mod check;
mod gc;
mod index;
pub mod lease;
mod verify;

use crate::sys::hostfs;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

pub use blob::BlobWriter;
pub use check::FsckReport;
pub use gc::GcReport;
pub use index::{ImageRecord, REF_NAME};
pub use verify::{is_uncompressed, uncompressed_digest};

/// Largest JSON document (manifest, index, config) keel reads from a blob or an archive:
/// real ones are a few KiB, and the bound keeps a hostile one from exhausting memory.
pub const MAX_JSON: u64 = 4 << 20;
pub use lease::Lease;

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "blob {digest} is missing from the store; run `keel fsck` to see what else is damaged"
    )]
    MissingBlob { digest: Digest },
    #[error(
        "content written as {expected} hashed to {actual}; the source is corrupt or truncated"
    )]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error(
        "blob {digest} is corrupt (it hashes to {actual}); remove the image and load it again"
    )]
    CorruptBlob { digest: Digest, actual: Digest },
    #[error("layer {layer} does not match its diff_id {diff_id}: its uncompressed content hashes to {actual}; the image is corrupt or forged")]
    DiffIdMismatch {
        layer: String,
        diff_id: String,
        actual: String,
    },
    #[error("{what} {digest} is {size} bytes, more than the {} MiB keel reads for a JSON document", MAX_JSON >> 20)]
    TooLarge {
        what: &'static str,
        digest: Digest,
        size: u64,
    },
    #[error("{what} {digest} is not valid JSON of its kind: {why}")]
    BadDocument {
        what: &'static str,
        digest: Digest,
        why: String,
    },
    #[error("no such image: {0}; `keel images` lists what the store has")]
    NoSuchImage(String),
    #[error("{image} has no image for platform {wanted} (it has {have}); build or pull that platform, or pick one of those with --platform")]
    NoPlatform {
        image: String,
        wanted: String,
        have: String,
    },
    #[error("{0:?} matches more than one image; give more of the id or a full name")]
    Ambiguous(String),
    #[error(
        "{} is not a keel store ({why}); point --root at an empty directory or an existing keel root", path.display()
    )]
    NotAStore { path: PathBuf, why: String },
    #[error("refusing to create a tag with a digest reference ({0}); name the new tag NAME[:TAG] without @sha256:…")]
    DigestTag(String),
    #[error("not tagging {name}: blob {digest} of the image is no longer in the store (removed by `keel rmi` and `keel gc` meanwhile?); pull, load or build the image again, then tag it")]
    Vanished { name: String, digest: String },
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Wraps an io::Error with the operation and path it came from.
pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// An open keel root.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// Whether writes are fsynced before they are renamed into place (the default). Without
    /// it writes stay atomic (a killed keel leaves a consistent store), but a power loss
    /// can leave truncated blobs that `keel fsck` then names: for throwaway roots.
    durable: bool,
    /// Durable, but the caller syncs the filesystem once after many writes (a pull's
    /// layers): no per-blob fsync, while writeback still starts as blobs are written.
    sync_later: bool,
    /// This process's lease on the store, taken at the first write and shared by every
    /// clone; released (its file removed) when the last clone is dropped.
    lease: std::sync::Arc<std::sync::Mutex<Option<Lease>>>,
}

const OCI_LAYOUT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

/// Where the store rooted at `root` keeps blob `d` (for the storage cache, which names
/// a chunked erofs entry's blob by digest and holds no `Store`).
pub fn blob_path_in(root: &Path, d: &Digest) -> PathBuf {
    root.join("images")
        .join("blobs")
        .join(d.algorithm().as_ref())
        .join(d.digest())
}

impl Store {
    /// Opens (creating if needed) the store under `root`. A directory that holds other
    /// things than keel's own is refused: `--root /etc` must not become a store.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let store = Store {
            root: root.into(),
            durable: true,
            sync_later: false,
            lease: Default::default(),
        };
        check_root(&store.root)?;
        for dir in [
            store.layout().join("blobs/sha256"),
            store.tmp_dir(),
            store.locks_dir(),
        ] {
            hostfs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        make_private(&store.root)?;
        let layout_file = store.layout().join("oci-layout");
        match fs::read_to_string(&layout_file) {
            Ok(s) if s.contains("imageLayoutVersion") => {}
            Ok(_) => {
                return Err(StoreError::NotAStore {
                    path: layout_file,
                    why: "oci-layout has no imageLayoutVersion".into(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                store.write_atomic(&layout_file, OCI_LAYOUT.as_bytes())?
            }
            Err(e) => return Err(io_err("reading", &layout_file)(e)),
        }
        if !store.index_path().exists() {
            store.update_index(|_| Ok(()))?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The OCI image layout directory (usable as `oci:<path>:<name>` by skopeo and umoci).
    pub fn layout(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn index_path(&self) -> PathBuf {
        self.layout().join("index.json")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        blob_path_in(&self.root, d)
    }
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Writes `bytes` to `path` through a temp file, fsync and rename.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let dir = path.parent().expect("store paths have parents");
        // The layout's `.tmp-` names: gc sweeps them under the index lock, which every
        // writer here holds while its file exists (`gc::sweep_temp`).
        #[allow(clippy::disallowed_methods)]
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(io_err("creating a temp file in", dir))?;
        tmp.write_all(bytes)
            .map_err(io_err("writing", tmp.path()))?;
        self.sync_file(tmp.as_file(), tmp.path())?;
        crate::fault::point("store.index-temp");
        crate::sys::hostfs::persist(tmp, path).map_err(io_err("renaming into", path))?;
        self.sync_dir(dir)
    }

    /// The same store with fsyncs off (`keel --no-fsync`; scratch roots).
    pub fn without_fsync(mut self) -> Store {
        self.durable = false;
        self
    }

    /// The same store with per-blob fsyncs left to the caller, who syncs the filesystem
    /// (`sys::fs::syncfs`) before anything names the blobs written through it.
    pub fn syncing_later(mut self) -> Store {
        self.sync_later = true;
        self
    }

    /// Whether this store fsyncs its writes.
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    pub(crate) fn sync_file(&self, f: &File, path: &Path) -> Result<()> {
        if !self.durable || self.sync_later {
            return Ok(());
        }
        f.sync_all().map_err(io_err("syncing", path))
    }

    /// fsyncs a directory so a rename inside it is durable.
    pub(crate) fn sync_dir(&self, dir: &Path) -> Result<()> {
        if !self.durable || self.sync_later {
            return Ok(());
        }
        File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(io_err("syncing directory", dir))
    }

    /// This process's lease on the store (taken now if it has none): what it protects
    /// survives `keel gc` while the process lives. Writers call it before their first
    /// write; holding the returned handle is optional (the store keeps the lease until
    /// its last clone is dropped).
    pub fn writer_guard(&self) -> Result<Lease> {
        self.lease()
    }

    /// See [`Store::writer_guard`].
    pub fn lease(&self) -> Result<Lease> {
        let mut slot = self.lease.lock().expect("lease slot");
        if let Some(l) = slot.as_ref() {
            return Ok(l.clone());
        }
        let l = Lease::take(&self.root)?;
        *slot = Some(l.clone());
        Ok(l)
    }

    /// Protects blobs `ds` with this process's lease. The returned guard holds the shared
    /// side of `locks/gc.lock`: keep it until the blobs are in place (or known to be
    /// there), so a gc sweep in progress either finished before or sees the protection.
    /// The lock is only ever held this briefly, so builds never wait on a long gc.
    pub fn protect<'a>(&self, ds: impl IntoIterator<Item = &'a Digest>) -> Result<LockGuard> {
        let guard = LockGuard::take(&self.locks_dir().join("gc.lock"), false)?;
        self.lease()?.protect_blobs(ds)?;
        Ok(guard)
    }

    /// Protects every blob of an image (manifest, config, layers) and its layer stack.
    pub fn protect_image(&self, rec: &ImageRecord) -> Result<()> {
        self.protect_image_for(rec, None)
    }

    /// [`Store::protect_image`], also naming `container` as being created
    /// ([`Lease::protect_container`]): the lease is written once for all of it (and taken
    /// with it when this process has none yet) — `keel run` rewrote it three times here.
    pub fn protect_image_for(&self, rec: &ImageRecord, container: Option<&str>) -> Result<()> {
        let mut ds = vec![rec.manifest_digest(), rec.manifest.config().digest()];
        ds.extend(rec.manifest.layers().iter().map(|l| l.digest()));
        let first = lease::Protection {
            digests: ds.iter().map(|d| d.to_string()).collect(),
            stack: (rec.config.rootfs().diff_ids().iter())
                .filter_map(|d| crate::digest::parse(d))
                .map(|d| d.to_string())
                .collect(),
            container: container.map(str::to_string),
        };
        // Held while the protection is written and the blobs are looked up, so a gc sweep
        // in progress either finished before or sees the protection (as `protect`).
        let _held = LockGuard::take(&self.locks_dir().join("gc.lock"), false)?;
        self.lease_protecting(first)?;
        // Resolved before it was protected: a gc in between may have taken it.
        if let Some(gone) = ds.into_iter().find(|d| !self.has_blob(d)) {
            return Err(StoreError::MissingBlob {
                digest: gone.clone(),
            });
        }
        Ok(())
    }

    /// This process's lease with `p` added: taken with it in its first write when there
    /// is none yet, else one more write (none when `p` is held already).
    fn lease_protecting(&self, p: lease::Protection) -> Result<Lease> {
        let mut slot = self.lease.lock().expect("lease slot");
        if let Some(l) = slot.as_ref() {
            l.protect(p)?;
            return Ok(l.clone());
        }
        let l = Lease::take_protecting(&self.root, p)?;
        *slot = Some(l.clone());
        Ok(l)
    }

    /// The exclusive side of `locks/gc.lock`, held by gc only while it marks and sweeps.
    pub(crate) fn gc_guard(&self) -> Result<LockGuard> {
        LockGuard::take(&self.locks_dir().join("gc.lock"), true)
    }
    /// Serialises reclamation of dead keels' leftovers (two `keel gc`s, or a gc and a
    /// start-up check) so they do not tear down the same snapshot at once.
    pub fn reclaim_guard(&self) -> Result<LockGuard> {
        LockGuard::take(&self.locks_dir().join("reclaim.lock"), true)
    }
    pub(crate) fn index_guard(&self) -> Result<LockGuard> {
        LockGuard::take(&self.locks_dir().join("index.lock"), true)
    }
}

/// What keel itself creates at the top of a root (some before the store is opened).
const ROOT_ENTRIES: &[&str] = &[
    "images",
    "tmp",
    "locks",
    "storage",
    "containers",
    "volumes",
    "cache",
    "logs",
    // keel's registries configuration (search list, mirrors, insecure registries).
    "registries.toml",
    // A freshly made filesystem mounted at the root has one.
    "lost+found",
];

/// Refuses a root that exists, is not empty, and is not (or not yet) keel's: one with an
/// image layout is a store; otherwise every entry must be one keel makes.
fn check_root(root: &Path) -> Result<()> {
    let entries = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("listing", root)(e)),
    };
    if root.join("images/oci-layout").is_file() {
        return Ok(());
    }
    let foreign: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !ROOT_ENTRIES.contains(&n.as_str()))
        .take(3)
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(StoreError::NotAStore {
        path: root.to_path_buf(),
        why: format!(
            "it is not empty and not a keel root: it holds {}",
            foreign.join(", ")
        ),
    })
}

/// The root holds container environments, build secrets' temp files and bundles: only
/// its owner may enter it (podman's 0700; docker's 0710 adds only its group's traverse
/// bit, which an existing root may keep). Files inside are written 0600 already.
fn make_private(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(root)
        .map_err(io_err("reading", root))?
        .permissions()
        .mode();
    if mode & 0o067 != 0 {
        hostfs::set_permissions(root, fs::Permissions::from_mode(0o700 | (mode & 0o010)))
            .map_err(io_err("making private", root))?;
    }
    Ok(())
}

/// An flock(2) held for as long as the guard lives.
pub struct LockGuard {
    _file: File,
}

impl LockGuard {
    fn take(path: &Path, exclusive: bool) -> Result<LockGuard> {
        let file = hostfs::open_with(
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true),
            path,
        )
        .map_err(io_err("opening lock", path))?;
        let r = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        r.map_err(io_err("locking", path))?;
        Ok(LockGuard { _file: file })
    }
}

/// Serialises a document with sorted object keys, so equal content gives equal bytes
/// (oci-spec keeps maps in HashMaps, whose order varies from run to run).
pub fn canonical_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let value = serde_json::to_value(v).expect("OCI documents serialise to JSON");
    serde_json::to_vec(&value).expect("a JSON value serialises")
}
