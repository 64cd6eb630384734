//! The build cache shared through a registry (`--cache-to registry:REF`,
//! `--cache-from registry:REF`): an OCI artifact whose config maps step cache keys to
//! the step results keel keeps in `<root>/cache/steps/` (config, layers with diff_ids,
//! key), and whose layers are the layer blobs those results name. docs/cache.md
//! describes the format.
//!
//! Import writes the entries into the local build cache and notes where each layer blob
//! can be fetched; nothing else is downloaded. A blob is fetched (verified, diff_id
//! checked) only when the build needs it: for a snapshot a step runs in, or for the
//! final image. So a build whose steps all hit downloads only the image's own layers.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};

use super::client::{scope, unexpected, Client, Connect};
use super::config::RegistriesConfig;
use super::name::{Reference, Remote};
use super::push::{layer_blob, send_blob, target_of, Compression, Memo, Outgoing};
use super::RegistryError;
use crate::build::cache::{BuildCache, CacheKey, KEY_VERSION};
use crate::digest::{self, Digest};
use crate::image::StoredLayer;
use crate::reference::ImageRef;
use crate::store::Store;

/// The artifact type of a keel build cache manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.keel.build-cache.v1+json";
/// The media type of its config (the entries).
pub const CONFIG_TYPE: &str = "application/vnd.keel.build-cache.config.v1+json";
/// The format of the config document: 2 adds `compressed` (layers travel compressed);
/// a reader of format 2 also reads format 1 (layers as stored).
pub const FORMAT: u64 = 2;
/// Largest cache config keel reads.
const MAX_CONFIG: u64 = 64 << 20;

/// Which entries `--cache-to` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only steps whose layers are all in the final image.
    Min,
    /// Every step of the build (intermediate stages too).
    Max,
}

/// `registry:REF[,mode=min|max][,compression=gzip|zstd|none][,mounts=true][,mounts-max=SIZE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRef {
    pub image: ImageRef,
    pub mode: Mode,
    /// How keel's own (uncompressed) layers travel (gzip by default, as image layers).
    pub compression: Compression,
    /// Export the build's `RUN --mount=type=cache` directories too.
    pub mounts: bool,
    /// Largest cache mount exported, in bytes (a larger one is skipped with a warning).
    pub mounts_max: u64,
}

impl std::str::FromStr for CacheRef {
    type Err = String;
    fn from_str(s: &str) -> Result<CacheRef, String> {
        let mut parts = s.split(',');
        let first = parts.next().unwrap_or_default();
        let Some(r) = first
            .strip_prefix("registry:")
            .or_else(|| first.strip_prefix("type=registry,ref="))
        else {
            return Err(format!(
                "cache {s:?}: give registry:HOST/REPO[:TAG][,mode=min|max]"
            ));
        };
        let image = ImageRef::parse(r).map_err(|e| format!("cache {s:?}: {e}"))?;
        target_of(&image).map_err(|_| {
            format!("cache {s:?}: name the registry (registry:localhost:5000/team/cache)")
        })?;
        let mut c = CacheRef {
            image,
            mode: Mode::Min,
            compression: Compression::Gzip,
            mounts: false,
            mounts_max: super::mounts::DEFAULT_MAX,
        };
        for p in parts {
            match p.split_once('=') {
                Some(("mounts", "true")) => c.mounts = true,
                Some(("mounts", "false")) => c.mounts = false,
                Some(("mounts-max", n)) => {
                    c.mounts_max = parse_size(n).ok_or_else(|| {
                        format!("cache {s:?}: mounts-max={n}: give a size like 500M or 2G")
                    })?
                }
                Some(("mode", "min")) => c.mode = Mode::Min,
                Some(("mode", "max")) => c.mode = Mode::Max,
                Some(("compression", f)) => {
                    c.compression = f.parse().map_err(|e| format!("cache {s:?}: {e}"))?
                }
                _ => {
                    return Err(format!(
                        "cache {s:?}: unknown option {p:?}; the options are mode=min|max compression=gzip|zstd|none, mounts=true and mounts-max=SIZE"
                    ))
                }
            }
        }
        Ok(c)
    }
}

/// `123`, `64K`, `500M`, `2G` (powers of 1024).
fn parse_size(s: &str) -> Option<u64> {
    let (n, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    n.parse::<u64>().ok()?.checked_mul(mult)
}

fn connect(store: &Store, remote: &Remote, actions: &str) -> Result<Client, RegistryError> {
    let host = Remote::endpoint_of(&remote.registry);
    let registries = RegistriesConfig::load(store.root())?;
    let how = Connect {
        skip_tls_verify: false,
        insecure: registries.is_insecure(host),
        credentials: None,
    };
    Client::connect(host, &how, vec![scope(&remote.repository, actions)])
}

/// What an import found.
#[derive(Debug, Default)]
pub struct Imported {
    pub entries: usize,
    pub layers: usize,
    /// Cache mounts offered (`mounts=true` at export).
    pub mounts: usize,
}

/// Reads the cache at `cref` into the local build cache (entries only, no layers).
pub fn import(store: &Store, cref: &CacheRef) -> Result<Imported, RegistryError> {
    let remote = target_of(&cref.image)?;
    let client = connect(store, &remote, "pull")?;
    let repo = client.repo_url(&remote.repository);
    let label = remote.to_string();
    let doc = match super::pull::fetch_manifest(
        &client,
        &repo,
        &remote.reference.to_string(),
        None,
        &label,
    ) {
        Ok(d) => d,
        // No cache there yet: a cold build, not an error (as BuildKit).
        Err(RegistryError::NotFound { .. }) => return Ok(Imported::default()),
        Err(e) => return Err(e),
    };
    let manifest: Value =
        serde_json::from_slice(&doc.bytes).map_err(|e| bad(&label, &e.to_string()))?;
    if manifest["artifactType"] != ARTIFACT_TYPE && manifest["config"]["mediaType"] != CONFIG_TYPE {
        return Err(bad(&label, "it is not a keel build cache (its artifactType is not application/vnd.keel.build-cache.v1+json)"));
    }
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .and_then(digest::parse)
        .ok_or_else(|| bad(&label, "its config has no valid digest"))?;
    let config = read_small_blob(&client, &repo, &config_digest)?;
    let config: Value = serde_json::from_slice(&config).map_err(|e| bad(&label, &e.to_string()))?;
    if !matches!(config["format"].as_u64(), Some(1..=FORMAT))
        || config["key_version"].as_u64() != Some(KEY_VERSION.into())
    {
        tracing::warn!("{label}: cache of another format or key version; ignored");
        return Ok(Imported::default());
    }
    let cache = BuildCache::new(store.root());
    let mut out = Imported::default();
    for (hex, entry) in config["entries"].as_object().into_iter().flatten() {
        let Some(d) = digest::parse(&format!("sha256:{hex}")) else {
            continue;
        };
        let key = CacheKey(d);
        if cache.get::<Value>(&key).is_none() && cache.put(&key, entry).is_ok() {
            out.entries += 1;
        }
    }
    let memo = Memo::new(store);
    let host = Remote::endpoint_of(&remote.registry);
    note_compressed(&memo, &config["compressed"]);
    out.mounts = super::mounts::note(&config["mounts"], host, &remote.repository);
    for l in manifest["layers"].as_array().into_iter().flatten() {
        if let Some(d) = l["digest"].as_str().and_then(digest::parse) {
            memo.add_source(host, &d, &remote.repository);
            out.layers += 1;
        }
    }
    Ok(out)
}

/// Remembers the compressed form of each uncompressed layer a cache lists (format 2's
/// `compressed`): a fetch then downloads that and stores what it decompresses to, and a
/// later push of the layer sends it without compressing.
fn note_compressed(memo: &Memo, compressed: &Value) {
    for (plain, packed) in compressed.as_object().into_iter().flatten() {
        let format = match packed["mediaType"].as_str() {
            Some(m) if m.ends_with("+gzip") => Compression::Gzip,
            Some(m) if m.ends_with("+zstd") => Compression::Zstd,
            _ => continue,
        };
        let (Some(plain), Some(d), Some(size)) = (
            digest::parse(plain),
            packed["digest"].as_str().and_then(digest::parse),
            packed["size"].as_u64(),
        ) else {
            continue;
        };
        memo.set_compressed(&plain, format, &d, size);
    }
}

fn bad(reference: &str, why: &str) -> RegistryError {
    RegistryError::BadManifest {
        reference: reference.to_string(),
        why: why.to_string(),
    }
}

/// A small blob (the cache config), read into memory and verified.
fn read_small_blob(client: &Client, repo: &str, d: &Digest) -> Result<Vec<u8>, RegistryError> {
    let url = format!("{repo}/blobs/{d}");
    let resp = client.call("GET", &url, &[])?;
    if resp.status() != 200 {
        return Err(unexpected("GET", &url, resp));
    }
    let Some(bytes) = super::client::read_body(resp, MAX_CONFIG, "GET", &url)? else {
        return Err(RegistryError::Blob {
            what: "cache config",
            digest: d.to_string(),
            url,
            why: format!("it is larger than {} MiB", MAX_CONFIG >> 20),
        });
    };
    let actual = digest::of_bytes(&bytes);
    if actual != *d {
        return Err(RegistryError::Blob {
            what: "cache config",
            digest: d.to_string(),
            url,
            why: format!("it hashes to {actual}"),
        });
    }
    Ok(bytes)
}

/// Whether a missing blob can be fetched from an imported cache.
pub fn fetchable(store: &Store, d: &Digest) -> bool {
    source_of(&Memo::new(store), d).is_some()
}

/// Where a missing layer can be fetched: host, repository, and (when set) the compressed
/// form to download and decompress into it (digest, size).
type Source = (String, String, Option<(Digest, u64)>);

/// Where a missing layer `d` can be fetched.
fn source_of(memo: &Memo, d: &Digest) -> Option<Source> {
    if let Some((h, r)) = memo.any_source(d) {
        return Some((h, r, None));
    }
    [Compression::Gzip, Compression::Zstd]
        .into_iter()
        .filter_map(|f| memo.compressed(d, f))
        .find_map(|(c, size)| {
            let (h, r) = memo.any_source(&c)?;
            Some((h, r, Some((c, size))))
        })
}

static FETCHED_BYTES: AtomicU64 = AtomicU64::new(0);
static FETCHED_BLOBS: AtomicUsize = AtomicUsize::new(0);

/// Layers and bytes this process fetched from caches.
pub fn fetched() -> (usize, u64) {
    (
        FETCHED_BLOBS.load(Ordering::Relaxed),
        FETCHED_BYTES.load(Ordering::Relaxed),
    )
}

fn clients() -> &'static Mutex<HashMap<String, Arc<Client>>> {
    static C: OnceLock<Mutex<HashMap<String, Arc<Client>>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// A client for `repository` on `host` with pull scope, shared by the fetches of one
/// process.
pub(super) fn client_for(
    store: &Store,
    host: &str,
    repository: &str,
) -> Result<Arc<Client>, RegistryError> {
    let id = format!("{host}/{repository}");
    let mut map = clients().lock().expect("clients");
    if let Some(c) = map.get(&id) {
        return Ok(c.clone());
    }
    let remote = Remote {
        registry: host.to_string(),
        repository: repository.to_string(),
        reference: Reference::Tag("latest".into()),
    };
    let c = Arc::new(connect(store, &remote, "pull")?);
    map.insert(id, c.clone());
    Ok(c)
}

/// Counts bytes and blobs fetched for the build's `cache-from:` line.
pub(super) fn count_fetched(bytes: u64, blobs: usize) {
    FETCHED_BYTES.fetch_add(bytes, Ordering::Relaxed);
    FETCHED_BLOBS.fetch_add(blobs, Ordering::Relaxed);
}

/// Fetches the layers of `layers` the store lacks from the cache that named them, each
/// verified by digest and diff_id. A layer no cache names is left to the caller (the
/// store reports it missing).
pub fn fetch_missing(store: &Store, layers: &[StoredLayer]) -> Result<(), RegistryError> {
    let memo = Memo::new(store);
    for l in layers {
        let d = l.descriptor.digest();
        if store.has_blob(d) {
            continue;
        }
        let Some((host, repository, packed)) = source_of(&memo, d) else {
            continue;
        };
        let client = client_for(store, &host, &repository)?;
        let repo = client.repo_url(&repository);
        if let Some((c, size)) = packed {
            let packed = oci_spec::image::Descriptor::new(
                oci_spec::image::MediaType::Other("application/octet-stream".into()),
                size,
                c,
            );
            let n = super::pull::fetch_unpacked(store, &client, &repo, &packed, d)?;
            store.verify_diff_id(&l.descriptor, &l.diff_id)?;
            FETCHED_BYTES.fetch_add(n, Ordering::Relaxed);
            FETCHED_BLOBS.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut stats = super::pull::Stats::default();
        let fetched = super::pull::fetch_blob(
            store,
            &client,
            &repo,
            &l.descriptor,
            Some(&l.diff_id),
            None,
            &mut stats,
        )?;
        if !fetched {
            store.verify_diff_id(&l.descriptor, &l.diff_id)?;
        }
        FETCHED_BYTES.fetch_add(stats.bytes, Ordering::Relaxed);
        FETCHED_BLOBS.fetch_add(stats.fetched, Ordering::Relaxed);
    }
    Ok(())
}

/// What an export sent.
#[derive(Debug, Default)]
pub struct Exported {
    pub entries: usize,
    pub layers: usize,
    pub uploaded: usize,
    pub manifest: String,
    /// Cache mounts exported; those skipped as larger than `mounts-max` (id, bytes).
    pub mounts: usize,
    pub mounts_skipped: Vec<(String, u64)>,
}

/// A `RUN --mount=type=cache` a build named: its id and sharing.
pub type MountUse = (String, crate::plan::mount::Sharing);

/// Pushes the entries of `keys` (filtered by the mode) and their layers to `cref`: the
/// cache mounts are packed first (so a failure uploads nothing), then every layer is
/// sent, then the config naming them, then the manifest.
pub fn export(
    store: &Store,
    cref: &CacheRef,
    keys: &[CacheKey],
    final_layers: &[Digest],
    mounts: &[MountUse],
) -> Result<Exported, RegistryError> {
    let (entries, layers) = select(store, cref.mode, keys, final_layers);
    let mut out = Exported::default();
    let packed = pack_mounts(store, cref, mounts, &mut out)?;
    let remote = target_of(&cref.image)?;
    let mut up = Upload {
        store,
        client: connect(store, &remote, "pull,push")?,
        memo: Memo::new(store),
        pushed: super::push::Pushed::default(),
        remote,
    };
    let mut sent = Sent::default();
    for d in layers.values() {
        up.send_layer(None, d, cref.compression, &mut sent)?;
    }
    for p in &packed {
        let d = serde_json::to_value(&p.layer).expect("a descriptor serialises");
        up.send_layer(Some(p), &d, cref.compression, &mut sent)?;
    }
    let mut config = json!({"format": FORMAT, "key_version": KEY_VERSION, "entries": entries, "compressed": sent.compressed});
    if !sent.mounts.is_empty() {
        config["mounts"] = json!(sent.mounts);
    }
    out.manifest = up.put_manifest(config, sent.layers)?;
    out.entries = entries.len();
    out.layers = layers.len();
    out.uploaded = up.pushed.uploaded;
    out.mounts = sent.mounts.len();
    Ok(out)
}

/// Packs the build's cache mounts when `cref` asks for them (`mounts=true`); notes those
/// too large in `out`.
fn pack_mounts(
    store: &Store,
    cref: &CacheRef,
    mounts: &[MountUse],
    out: &mut Exported,
) -> Result<Vec<super::mounts::Packed>, RegistryError> {
    let mut packed = Vec::new();
    for (id, sharing) in mounts.iter().filter(|_| cref.mounts) {
        let sharing = format!("{sharing:?}").to_lowercase();
        match super::mounts::pack(store, id, &sharing, cref.mounts_max)? {
            super::mounts::Export::Packed(p) => packed.push(*p),
            super::mounts::Export::TooLarge { id, bytes } => out.mounts_skipped.push((id, bytes)),
            super::mounts::Export::Absent => {}
        }
    }
    Ok(packed)
}

/// What an export has sent so far: the manifest's layer descriptors (as they travel),
/// the compressed form of each of keel's uncompressed layers, and the mount entries.
#[derive(Default)]
struct Sent {
    layers: Vec<Value>,
    compressed: BTreeMap<String, Value>,
    mounts: BTreeMap<String, Value>,
}

/// One export's connection to the cache repository.
struct Upload<'a> {
    store: &'a Store,
    client: Client,
    memo: Memo,
    pushed: super::push::Pushed,
    remote: Remote,
}

impl Upload<'_> {
    fn repo(&self) -> String {
        self.client.repo_url(&self.remote.repository)
    }

    /// Sends one layer (descriptor `d` as stored; `mount`: the cache mount it packs),
    /// compressed with `compression` if it is stored uncompressed, and records it.
    fn send_layer(
        &mut self,
        mount: Option<&super::mounts::Packed>,
        d: &Value,
        compression: Compression,
        sent: &mut Sent,
    ) -> Result<(), RegistryError> {
        let desc: oci_spec::image::Descriptor = serde_json::from_value(d.clone())
            .map_err(|e| bad("cache", &format!("an entry has an invalid layer: {e}")))?;
        let format = match crate::store::is_uncompressed(desc.media_type()) {
            true => compression,
            false => Compression::None,
        };
        let blob = layer_blob(self.store, &self.memo, &desc, format, &mut self.pushed)?;
        let repo = self.repo();
        let (digest, size) = send_blob(
            self.store,
            &self.memo,
            &self.client,
            &repo,
            blob,
            &[],
            &mut self.pushed,
        )?;
        let host = Remote::endpoint_of(&self.remote.registry);
        self.memo.add_source(host, &digest, &self.remote.repository);
        let travels = match format {
            Compression::None => d.clone(),
            _ => {
                json!({"mediaType": format.layer_media_type(false), "digest": digest.to_string(), "size": size})
            }
        };
        match mount {
            Some(p) => {
                let entry = super::mounts::entry(p, &travels);
                sent.mounts.insert(p.id.clone(), entry);
            }
            None if format != Compression::None => {
                sent.compressed
                    .insert(desc.digest().to_string(), travels.clone());
            }
            None => {}
        }
        sent.layers.push(travels);
        Ok(())
    }

    /// Stores and sends `config`, then puts the artifact manifest listing `layers` under
    /// the cache reference; returns the manifest's digest.
    fn put_manifest(&mut self, config: Value, layers: Vec<Value>) -> Result<String, RegistryError> {
        let (config_digest, config_size) = self.store.put_json(&config)?;
        let config_blob = Outgoing::stored(config_digest.clone(), config_size);
        let repo = self.repo();
        send_blob(
            self.store,
            &self.memo,
            &self.client,
            &repo,
            config_blob,
            &[],
            &mut self.pushed,
        )?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": config_digest.to_string(), "size": config_size},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).expect("a manifest serialises");
        let url = format!("{repo}/manifests/{}", self.remote.reference);
        let media = "application/vnd.oci.image.manifest.v1+json";
        let resp = self
            .client
            .send("PUT", &url, &[("Content-Type", media)], &bytes[..])?;
        if resp.status() != 201 {
            return Err(unexpected("PUT", &url, resp));
        }
        Ok(digest::of_bytes(&bytes).to_string())
    }
}

/// The entries `mode` exports among `keys` (hex key → entry) and the layer descriptors
/// they name (digest → descriptor as stored).
fn select(
    store: &Store,
    mode: Mode,
    keys: &[CacheKey],
    final_layers: &[Digest],
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let cache = BuildCache::new(store.root());
    let finals: BTreeSet<String> = final_layers.iter().map(|d| d.to_string()).collect();
    let mut entries = BTreeMap::new();
    let mut layers: BTreeMap<String, Value> = BTreeMap::new();
    for key in keys {
        let Some(mut entry) = cache.get::<Value>(key) else {
            continue;
        };
        let descs: Vec<Value> = entry["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| l["descriptor"].clone())
            .collect();
        let in_final = descs
            .iter()
            .all(|d| d["digest"].as_str().is_some_and(|d| finals.contains(d)));
        if mode == Mode::Min && !in_final {
            continue;
        }
        if let Some(m) = entry.as_object_mut() {
            m.remove("keel_cache_version");
        }
        for d in descs {
            if let Some(k) = d["digest"].as_str() {
                layers.insert(k.to_string(), d.clone());
            }
        }
        entries.insert(key.hex().to_string(), entry);
    }
    (entries, layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_refs_parse() {
        let r: CacheRef = "registry:localhost:5000/team/cache:main,mode=max"
            .parse()
            .unwrap();
        assert_eq!(r.image.to_string(), "localhost:5000/team/cache:main");
        assert_eq!(r.mode, Mode::Max);
        let r: CacheRef = "registry:reg.io/c".parse().unwrap();
        assert_eq!(r.mode, Mode::Min);
        for bad in [
            "localhost:5000/c",
            "registry:cache",
            "registry:reg.io/c,mode=all",
            "local:/tmp/x",
        ] {
            assert!(bad.parse::<CacheRef>().is_err(), "{bad}");
        }
    }
}
