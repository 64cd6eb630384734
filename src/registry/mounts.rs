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

/// Unpacks the cache mount `id` a `--cache-from` cache offers into `dir` (which the
/// caller found absent or empty). False when no cache offers it.
pub fn seed_mount(store: &Store, id: &str, dir: &Path) -> Result<bool, RegistryError> {
    let Some(o) = offers().lock().expect("offers").get(id).cloned() else {
        return Ok(false);
    };
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
    if !dir.exists() {
        crate::sys::hostfs::create_dir_all(dir).map_err(|e| {
            RegistryError::Store(StoreError::Io {
                op: "creating",
                path: dir.to_path_buf(),
                source: e,
            })
        })?;
    }
    let blob = store.open_blob(o.packed.digest())?;
    let opts = crate::layer::unpack::UnpackOptions::default();
    crate::layer::unpack::unpack(blob, dir, &opts).map_err(|e| RegistryError::Blob {
        what: "cache mount",
        digest: o.packed.digest().to_string(),
        url: format!("{}/{}", o.host, o.repository),
        why: e.to_string(),
    })?;
    Ok(true)
}
