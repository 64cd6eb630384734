//! `RUN --mount=type=cache` directories in the registry build cache (`--cache-to
//! registry:REF,mounts=true`): each cache mount a build names is packed as a tar (sorted,
//! so unchanged contents give the same digest and are not uploaded again), stored as an
//! uncompressed layer, and sent compressed like the cache's other layers; the cache's
//! config lists it by mount id (`mounts`, docs/cache.md). A `--cache-from` build notes
//! those layers, and a RUN step whose cache mount is absent or empty on this root gets
//! it unpacked there first (`seed_mount`): a cold agent starts with a warm `~/.m2`.
//!
//! The tar is hostile on the way back: it is verified by digest and diff_id like any
//! layer and unpacked through `layer::unpack` (in-root resolution, no devices).
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use oci_spec::image::{Descriptor, MediaType};
use serde_json::{json, Value};

use super::RegistryError;
use crate::digest::{self, Digest};
use crate::store::{Store, StoreError};
use crate::sys::hostfs;

/// Default largest cache mount exported (`mounts-max=`): 1 GiB.
pub const DEFAULT_MAX: u64 = 1 << 30;

/// A cache mount packed into the store, ready to send.
pub struct Packed {
    pub id: String,
    pub sharing: String,
    /// The uncompressed tar as stored (its digest is its diff_id).
    pub layer: Descriptor,
}

/// What happened to one cache mount at export.
pub enum Export {
    Packed(Box<Packed>),
    /// Not exported: larger than the limit (bytes found), or absent on this root.
    TooLarge {
        id: String,
        bytes: u64,
    },
    Absent,
}

/// Packs the cache mount `id` of this root into the store when it exists and holds at
/// most `max` bytes.
pub fn pack(store: &Store, id: &str, sharing: &str, max: u64) -> Result<Export, RegistryError> {
    let dir = crate::build::cache::BuildCache::new(store.root()).mount_dir(id);
    if !dir.is_dir() {
        return Ok(Export::Absent);
    }
    let io = |e: std::io::Error| {
        RegistryError::Store(StoreError::Io {
            op: "packing cache mount",
            path: dir.clone(),
            source: e,
        })
    };
    let entries: Vec<walkdir::DirEntry> = walkdir::WalkDir::new(&dir)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| io(e.into()))?;
    let bytes: u64 = entries
        .iter()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    if bytes > max {
        return Ok(Export::TooLarge {
            id: id.to_string(),
            bytes,
        });
    }
    let mut tar = tar::Builder::new(store.blob_writer()?);
    tar.follow_symlinks(false);
    for e in &entries {
        let t = e.file_type();
        // Sockets, fifos and devices are no cache content.
        if !(t.is_file() || t.is_dir() || t.is_symlink()) {
            continue;
        }
        let rel = e.path().strip_prefix(&dir).expect("walked below dir");
        tar.append_path_with_name(e.path(), rel).map_err(io)?;
    }
    let w = tar.into_inner().map_err(io)?;
    let (d, size) = w.commit(None)?;
    Ok(Export::Packed(Box::new(Packed {
        id: id.to_string(),
        sharing: sharing.to_string(),
        layer: Descriptor::new(MediaType::ImageLayer, size, d),
    })))
}

/// A cache mount a `--cache-from` cache offers: where, what to fetch, what it must
/// decompress to.
#[derive(Clone)]
struct Offer {
    host: String,
    repository: String,
    packed: Descriptor,
    diff_id: Digest,
}

fn offers() -> &'static Mutex<HashMap<String, Offer>> {
    static O: OnceLock<Mutex<HashMap<String, Offer>>> = OnceLock::new();
    O.get_or_init(Default::default)
}

/// Notes the cache mounts a cache's config lists (`mounts`); the first cache to offer
/// an id wins (as for entries).
pub fn note(mounts: &Value, host: &str, repository: &str) -> usize {
    let mut map = offers().lock().expect("offers");
    let mut n = 0;
    for (id, m) in mounts.as_object().into_iter().flatten() {
        let packed: Option<Descriptor> = serde_json::from_value(m["layer"].clone()).ok();
        let diff_id = m["diff_id"].as_str().and_then(digest::parse);
        let (Some(packed), Some(diff_id)) = (packed, diff_id) else {
            continue;
        };
        if map.contains_key(id) {
            continue;
        }
        let offer = Offer {
            host: host.to_string(),
            repository: repository.to_string(),
            packed,
            diff_id,
        };
        map.insert(id.clone(), offer);
        n += 1;
    }
    n
}

/// The config's `mounts` entry of a packed mount sent as `sent`.
pub fn entry(p: &Packed, sent: &Value) -> Value {
    json!({"sharing": p.sharing, "diff_id": p.layer.digest().to_string(), "layer": sent})
}

/// Where a seeded cache mount came from (`<dir>.seeded`, JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Seeded {
    pub id: String,
    /// `host/repository` of the cache that offered it.
    pub cache: String,
    /// The layer fetched (as it travels) and the tar it decompresses to.
    pub layer: Digest,
    pub diff_id: Digest,
}

/// The record of where the cache mount at `dir` was seeded from, if it was.
pub fn seeded(dir: &Path) -> Option<Seeded> {
    let text = std::fs::read(dir.with_extension("seeded")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Unpacks the cache mount `id` a `--cache-from` cache offers into `dir` when `dir` is
/// absent or empty and was never seeded before (its `<dir>.seeded` record). False when
/// nothing was seeded (no cache offers it, or the mount is not a cold one).
pub fn seed_mount(store: &Store, id: &str, dir: &Path) -> Result<bool, RegistryError> {
    let Some(o) = offers().lock().expect("offers").get(id).cloned() else {
        return Ok(false);
    };
    if seeded(dir).is_some() || !is_empty_or_absent(dir) {
        return Ok(false);
    }
    fetch_offer(store, &o)?;
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| RegistryError::Store(StoreError::Io { op, path, source })
    };
    let tmp = crate::sys::hostfs::scratch_dir_in(&store.tmp_dir(), "cache-mount")
        .map_err(io("creating", &store.tmp_dir()))?;
    let blob = store.open_blob(o.packed.digest())?;
    let opts = crate::layer::unpack::UnpackOptions::default();
    crate::layer::unpack::unpack(blob, tmp.path(), &opts).map_err(|e| RegistryError::Blob {
        what: "cache mount",
        digest: o.packed.digest().to_string(),
        url: format!("{}/{}", o.host, o.repository),
        why: e.to_string(),
    })?;
    if let Ok(m) = std::fs::metadata(dir) {
        // The mount's mode and owner (the step's `mode=`, `uid=`, `gid=`) stay.
        use std::os::unix::fs::MetadataExt;
        hostfs::set_permissions(tmp.path(), m.permissions()).map_err(io("chmod", tmp.path()))?;
        hostfs::chown(tmp.path(), Some(m.uid()), Some(m.gid())).map_err(io("chown", tmp.path()))?;
    }
    // rename(2) replaces an empty directory and fails on one another build filled since.
    let tmp = tmp.keep();
    if hostfs::rename(&tmp, dir).is_err() {
        let _ = hostfs::remove_dir_all(&tmp);
        return Ok(false);
    }
    record_seed(id, dir, &o).map_err(io("writing", &dir.with_extension("seeded")))?;
    Ok(true)
}

/// Fetches the layer of offer `o` into the store (verified by digest and diff_id).
fn fetch_offer(store: &Store, o: &Offer) -> Result<(), RegistryError> {
    let client = super::cache::client_for(store, &o.host, &o.repository)?;
    let repo = client.repo_url(&o.repository);
    let mut stats = super::pull::Stats::default();
    let fetched = super::pull::fetch_blob(
        store,
        &client,
        &repo,
        &o.packed,
        Some(&o.diff_id),
        None,
        &mut stats,
    )?;
    if !fetched {
        store.verify_diff_id(&o.packed, &o.diff_id)?;
    }
    super::cache::count_fetched(stats.bytes, stats.fetched);
    Ok(())
}

fn is_empty_or_absent(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut d) => d.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

fn record_seed(id: &str, dir: &Path, o: &Offer) -> std::io::Result<()> {
    let record = Seeded {
        id: id.to_string(),
        cache: format!("{}/{}", o.host, o.repository),
        layer: o.packed.digest().clone(),
        diff_id: o.diff_id.clone(),
    };
    let text = serde_json::to_vec(&record).expect("a record serialises");
    hostfs::write_atomic(&dir.with_extension("seeded"), &text)
}
