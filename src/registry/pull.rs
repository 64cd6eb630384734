//! `keel pull`: a manifest (or an index, resolved to one platform's manifest), its config
//! and its layers, each streamed into the store's verified writer (`BlobWriter::commit`
//! checks the digest before the blob gets its name), the manifest stored last and the
//! name set after that. A pull killed at any point leaves only whole, verified blobs
//! (which the next pull reuses: it resumes) and temp files gc reclaims. Layers download
//! in parallel, at most `jobs` at once.
//!
//! A pull checks a layer's *compressed* digest only, as skopeo and containerd's content
//! fetch do; its diff_id (the digest of the uncompressed tar) is checked where the
//! uncompressed stream is read anyway, as containerd checks it at unpack: by the storage
//! drivers while unpacking (`storage::verify::unpack_verified`, so no unverified tree is
//! ever used), by push before it sends a stored compressed layer (`push::verify_layers`,
//! once per blob), by `keel load` and by `keel fsck --full`. Hashing the uncompressed
//! stream here too cost a third to a half of a pull's CPU time (docs/performance.md,
//! Session 5). The build cache's and cache mounts' layers (`fetch_blob` with a diff_id)
//! are still checked as they download (a seeded cache mount is unpacked by
//! `layer::unpack`, which checks no diff_id of its own).
use std::collections::VecDeque;
use std::io::Read;
use std::sync::Mutex;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use super::client::{scope, unexpected, Client, Connect};
use super::config::RegistriesConfig;
use super::diffid::DiffIdHasher;
use super::name::{candidates, Reference, Remote};
use super::RegistryError;
use crate::digest::{self, Digest};
use crate::reference::ImageRef;
use crate::store::{ImageRecord, Store, StoreError, MAX_JSON};

/// Most layers keel accepts in one image (as `keel load`).
const MAX_LAYERS: usize = crate::archive::MAX_LAYERS;

/// What `Accept` lists for manifests: OCI and Docker schema 2, single and multi-platform.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// `os/arch[/variant]`: the build plan's type (one parser for `--platform` everywhere).
pub use crate::plan::word::Platform;

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platform: Platform,
    /// From an index, store every platform's image (the name goes to `platform`'s).
    pub all_platforms: bool,
    /// Layers downloaded at once.
    pub jobs: usize,
    pub skip_tls_verify: bool,
    pub registries: RegistriesConfig,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            all_platforms: false,
            jobs: 3,
            skip_tls_verify: false,
            registries: RegistriesConfig::default(),
        }
    }
}

/// Progress of a pull, for the reporter.
#[derive(Debug, Clone)]
pub enum PullEvent {
    /// The manifest to pull is known.
    Resolved { remote: String, manifest: Digest },
    /// A layer download starts.
    LayerStart { digest: Digest, size: u64 },
    /// `bytes` more of a layer arrived.
    LayerBytes { digest: Digest, bytes: u64 },
    /// A layer is stored and verified (`fetched`: false when the store had it).
    LayerDone {
        digest: Digest,
        size: u64,
        fetched: bool,
    },
}

/// What a pull did.
#[derive(Debug)]
pub struct Pulled {
    pub record: ImageRecord,
    /// Where it came from (`registry/repository@digest` or the tag asked for).
    pub remote: String,
    /// Bytes and blobs downloaded; blobs the store already had.
    pub fetched_bytes: u64,
    pub fetched_blobs: usize,
    pub present_blobs: usize,
    /// With `--all-platforms` from an index: the index as stored (the name points at it,
    /// `Store::load_index_records` lists its images).
    pub index: Option<Descriptor>,
}

type Events<'a> = &'a (dyn Fn(PullEvent) + Sync);

/// Pulls `name` into the store and names it `name` (unless it is pinned by digest).
pub fn pull(
    store: &Store,
    name: &ImageRef,
    opts: &PullOptions,
    events: Events,
) -> Result<Pulled, RegistryError> {
    let _writing = store.writer_guard()?;
    crate::fault::point("pull.started");
    if let Some(d) = name.digest.as_ref().filter(|d| store.has_blob(d)) {
        // A pinned manifest the store has: no network (its blobs were verified when stored).
        if let Ok(record) = store.resolve(d.as_ref()) {
            store.protect_image(&record)?;
            return Ok(Pulled {
                record,
                remote: name.to_string(),
                fetched_bytes: 0,
                fetched_blobs: 0,
                present_blobs: 0,
                index: None,
            });
        }
    }
    let mut tried = Vec::new();
    for remote in candidates(name, &opts.registries) {
        let endpoints = opts.registries.endpoints(&remote.registry);
        for (i, endpoint) in endpoints.iter().enumerate() {
            let host = Remote::endpoint_of(endpoint);
            let mirror = i + 1 < endpoints.len();
            match pull_from(store, host, &remote, opts, events) {
                Ok(mut p) => {
                    if name.digest.is_none() {
                        // A multi-platform pull names the index, as a multi-platform
                        // build does (`Store::commit_index`).
                        let target = p.index.as_ref().unwrap_or(&p.record.manifest_descriptor);
                        store.tag(name, target)?;
                        p.record.names = vec![name.tagged_name()];
                    }
                    return Ok(p);
                }
                Err(RegistryError::NotFound { .. }) => {
                    tried.push(format!("{host}/{}", remote.repository))
                }
                Err(e) if mirror => {
                    tracing::warn!("mirror {host} failed, trying the next source: {e}");
                    tried.push(format!("{host}/{}", remote.repository));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Err(RegistryError::NotFound {
        reference: name.to_string(),
        tried: tried.join(", "),
    })
}

/// One image from one registry endpoint.
fn pull_from(
    store: &Store,
    host: &str,
    remote: &Remote,
    opts: &PullOptions,
    events: Events,
) -> Result<Pulled, RegistryError> {
    let how = Connect {
        skip_tls_verify: opts.skip_tls_verify,
        insecure: opts.registries.is_insecure(host),
        credentials: None,
    };
    let client = Client::connect(host, &how, vec![scope(&remote.repository, "pull")])?;
    let repo = client.repo_url(&remote.repository);
    let pinned = match &remote.reference {
        Reference::Digest(d) => Some(d.clone()),
        Reference::Tag(_) => None,
    };
    let label = remote.to_string();
    let mut doc = fetch_manifest(
        &client,
        &repo,
        &remote.reference.to_string(),
        pinned.as_ref(),
        &label,
    )?;
    let mut stats = Stats::default();
    let mut index = None;
    if doc.is_index() {
        let chosen = choose_platform(&doc.bytes, &opts.platform, &label)?;
        if opts.all_platforms {
            let fetch = FetchFrom {
                client: &client,
                repo: &repo,
                label: &label,
            };
            store_other_platforms(store, &fetch, &doc, &chosen, opts, events, &mut stats)?;
            index = Some(doc);
        }
        doc = fetch_manifest(&client, &repo, chosen.as_ref(), Some(&chosen), &label)?;
    }
    let descriptor = store_image(
        store, &client, &repo, &doc, &label, opts, events, &mut stats,
    )?;
    let index = match index {
        Some(i) => {
            let (d, size) = store.put_blob(&i.bytes[..], Some(&i.digest))?;
            Some(Descriptor::new(i.media_type, size, d))
        }
        None => None,
    };
    let mut record = store.load_record(descriptor, Vec::new())?;
    record.index = index.clone();
    let memo = super::push::Memo::new(store);
    for l in record.manifest.layers() {
        memo.add_source(host, l.digest(), &remote.repository);
    }
    Ok(Pulled {
        record,
        remote: format!("{}/{}@{}", remote.registry, remote.repository, doc.digest),
        fetched_bytes: stats.bytes,
        fetched_blobs: stats.fetched,
        present_blobs: stats.present,
        index,
    })
}

/// Where an image's documents come from: the registry connection, the repository's URL
/// and the name errors give it.
struct FetchFrom<'a> {
    client: &'a Client,
    repo: &'a str,
    label: &'a str,
}

/// With `--all-platforms`, every platform's image of `index` but the `chosen` one (the
/// index, naming them all, is stored after the last of them).
fn store_other_platforms(
    store: &Store,
    from: &FetchFrom,
    index: &Document,
    chosen: &Digest,
    opts: &PullOptions,
    events: Events,
    stats: &mut Stats,
) -> Result<(), RegistryError> {
    let FetchFrom {
        client,
        repo,
        label,
    } = *from;
    for other in platform_manifests(&index.bytes, label)? {
        if &other != chosen {
            let d = fetch_manifest(client, repo, other.as_ref(), Some(&other), label)?;
            store_image(store, client, repo, &d, label, opts, events, stats)?;
        }
    }
    Ok(())
}

/// The manifests an index lists with a platform. Entries for `unknown/unknown` are
/// attestations (BuildKit's provenance and SBOM manifests, as Docker Hub serves them),
/// not images: left out, as `Store::load_index_records` leaves them out.
fn platform_manifests(index: &[u8], label: &str) -> Result<Vec<Digest>, RegistryError> {
    let index: ImageIndex = serde_json::from_slice(index)
        .map_err(|e| bad(label, &format!("its index is not valid: {e}")))?;
    Ok(index
        .manifests()
        .iter()
        .filter(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| p.os().to_string() != "unknown")
        })
        .map(|m| m.digest().clone())
        .collect())
}

/// One image manifest's blobs (config, then layers in parallel), each verified, then the
/// manifest itself; returns the manifest's descriptor.
#[allow(clippy::too_many_arguments)]
fn store_image(
    store: &Store,
    client: &Client,
    repo: &str,
    doc: &Document,
    label: &str,
    opts: &PullOptions,
    events: Events,
    stats: &mut Stats,
) -> Result<Descriptor, RegistryError> {
    if doc.is_index() {
        return Err(bad(label, "its index points at another index"));
    }
    events(PullEvent::Resolved {
        remote: label.to_string(),
        manifest: doc.digest.clone(),
    });
    crate::fault::point("pull.manifest-fetched");
    let manifest: ImageManifest = serde_json::from_slice(&doc.bytes).map_err(|e| {
        bad(
            label,
            &format!("its manifest is not an image manifest: {e}"),
        )
    })?;
    if manifest.layers().len() > MAX_LAYERS {
        return Err(bad(label, &format!("it has more than {MAX_LAYERS} layers")));
    }
    fetch_blob(store, client, repo, manifest.config(), None, None, stats)?;
    let config: ImageConfiguration = store.read_json("config", manifest.config().digest())?;
    let diff_ids: Vec<Digest> = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| {
            digest::parse(d)
                .ok_or_else(|| bad(label, &format!("its config has an invalid diff_id {d:?}")))
        })
        .collect::<Result<_, _>>()?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(bad(
            label,
            &format!(
                "its config lists {} diff_ids for {} layers",
                diff_ids.len(),
                manifest.layers().len()
            ),
        ));
    }
    let work: Vec<Descriptor> = manifest.layers().to_vec();
    fetch_layers(store, client, repo, work, opts.jobs.max(1), events, stats)?;
    crate::fault::point("pull.blobs-stored");
    let (d, size) = store.put_blob(&doc.bytes[..], Some(&doc.digest))?;
    crate::fault::point("pull.manifest-stored");
    Ok(Descriptor::new(doc.media_type.clone(), size, d))
}

fn bad(reference: &str, why: &str) -> RegistryError {
    RegistryError::BadManifest {
        reference: reference.to_string(),
        why: why.to_string(),
    }
}

/// A manifest or index as fetched: its bytes (verified), digest and media type.
pub(super) struct Document {
    pub(super) bytes: Vec<u8>,
    pub(super) digest: Digest,
    pub(super) media_type: MediaType,
}

impl Document {
    fn is_index(&self) -> bool {
        matches!(self.media_type, MediaType::ImageIndex)
            || self.media_type.to_string()
                == "application/vnd.docker.distribution.manifest.list.v2+json"
    }
}

pub(super) fn fetch_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    pinned: Option<&Digest>,
    label: &str,
) -> Result<Document, RegistryError> {
    let url = format!("{repo}/manifests/{reference}");
    let resp = client.call("GET", &url, &[("Accept", ACCEPT)])?;
    match resp.status().as_u16() {
        200 => {}
        404 => {
            return Err(RegistryError::NotFound {
                reference: label.to_string(),
                tried: client.host().to_string(),
            })
        }
        _ => return Err(unexpected("GET", &url, resp)),
    }
    let header = |k: &str| {
        resp.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type");
    let claimed = header("docker-content-digest");
    let Some(bytes) = super::client::read_body(resp, MAX_JSON, "GET", &url)? else {
        return Err(bad(
            label,
            &format!("its manifest ({url}) is larger than {} MiB", MAX_JSON >> 20),
        ));
    };
    let digest = digest::of_bytes(&bytes);
    if let Some(want) = pinned.map(Digest::to_string).or(claimed) {
        if want != digest.to_string() {
            return Err(bad(
                label,
                &format!("the registry sent a manifest hashing to {digest}, not {want}"),
            ));
        }
    }
    Document::from_verified(bytes, digest, content_type.as_deref(), label)
}

impl Document {
    /// A fetched manifest or index whose digest was checked. Its media type is its own
    /// `mediaType`, else the reply's Content-Type, else what its fields say; a Docker
    /// schema 1 manifest is refused.
    fn from_verified(
        bytes: Vec<u8>,
        digest: Digest,
        content_type: Option<&str>,
        label: &str,
    ) -> Result<Document, RegistryError> {
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad(label, &format!("its manifest is not JSON: {e}")))?;
        if v["schemaVersion"].as_u64() == Some(1) {
            return Err(bad(label, "it is a Docker schema 1 manifest, which keel does not pull (deprecated since 2017); push it again with a current tool"));
        }
        let media = v["mediaType"]
            .as_str()
            .map(str::to_string)
            .or(content_type.map(|c| c.split(';').next().unwrap_or_default().trim().to_string()))
            .unwrap_or_else(|| {
                if v.get("manifests").is_some() {
                    "application/vnd.oci.image.index.v1+json".into()
                } else {
                    "application/vnd.oci.image.manifest.v1+json".into()
                }
            });
        Ok(Document {
            bytes,
            digest,
            media_type: MediaType::from(media.as_str()),
        })
    }
}

/// The manifest of `want` in an index, or an error listing what the index has.
fn choose_platform(index: &[u8], want: &Platform, label: &str) -> Result<Digest, RegistryError> {
    let index: ImageIndex = serde_json::from_slice(index)
        .map_err(|e| bad(label, &format!("its index is not valid: {e}")))?;
    let mut have = Vec::new();
    let mut fallback = None;
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let (os, arch) = (p.os().to_string(), p.architecture().to_string());
        let variant = p.variant().clone();
        have.push(
            Platform {
                os: os.clone(),
                arch: arch.clone(),
                variant: variant.clone(),
            }
            .to_string(),
        );
        if os != want.os || arch != want.arch {
            continue;
        }
        match (&want.variant, &variant) {
            (Some(w), Some(v)) if w == v => return Ok(m.digest().clone()),
            (Some(_), _) => {}
            (None, None) => return Ok(m.digest().clone()),
            (None, Some(_)) => {
                fallback.get_or_insert_with(|| m.digest().clone());
            }
        }
    }
    fallback.ok_or_else(|| RegistryError::NoPlatform {
        reference: label.to_string(),
        wanted: want.to_string(),
        have: if have.is_empty() {
            "no platforms".into()
        } else {
            have.join(", ")
        },
    })
}

#[derive(Default)]
pub(super) struct Stats {
    pub(super) bytes: u64,
    pub(super) fetched: usize,
    pub(super) present: usize,
}

/// Downloads the layers the store lacks, `jobs` at once (a layer the store has is not
/// read: its digest was checked when it was stored, its diff_id is checked on use).
///
/// Each layer is renamed into place as soon as its digest checks, unsynced (a kill
/// cannot tear a renamed file: its pages are the kernel's, so the next pull resumes from
/// it; writeback starts while it downloads), and one pass at the end makes them durable
/// before the manifest that names them is stored: an fdatasync per layer fetched (in
/// parallel, each waiting only for its tail) and one of the blobs directory, rather than
/// a file and a directory sync per layer, each in the download's critical path. Not
/// `syncfs`: that would also wait for every other writer of the filesystem.
fn fetch_layers(
    store: &Store,
    client: &Client,
    repo: &str,
    work: Vec<Descriptor>,
    jobs: usize,
    events: Events,
    stats: &mut Stats,
) -> Result<(), RegistryError> {
    let unsynced = store.clone().syncing_later();
    let written = Mutex::new(Vec::new());
    let queue = Mutex::new(work.into_iter().collect::<VecDeque<_>>());
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    let total = Mutex::new(Stats::default());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                if first_error.lock().expect("error slot").is_some() {
                    return;
                }
                let Some(layer) = queue.lock().expect("queue").pop_front() else {
                    return;
                };
                let mut mine = Stats::default();
                let r = fetch_blob(
                    &unsynced,
                    client,
                    repo,
                    &layer,
                    None,
                    Some(events),
                    &mut mine,
                )
                .map(|fetched| {
                    if fetched {
                        let mut w = written.lock().expect("written");
                        w.push(layer.digest().clone());
                    }
                });
                let mut t = total.lock().expect("stats");
                t.bytes += mine.bytes;
                t.fetched += mine.fetched;
                t.present += mine.present;
                if let Err(e) = r {
                    first_error.lock().expect("error slot").get_or_insert(e);
                    return;
                }
            });
        }
    });
    let t = total.into_inner().expect("stats");
    stats.bytes += t.bytes;
    stats.fetched += t.fetched;
    stats.present += t.present;
    if let Some(e) = first_error.into_inner().expect("error slot") {
        return Err(e);
    }
    sync_blobs(store, &written.into_inner().expect("written"))?;
    crate::fault::point("pull.layers-synced");
    Ok(())
}

/// Makes the blobs `written` unsynced durable, with the renames that named them: their
/// data synced in parallel, then the directory once (nothing when the store is not
/// durable).
fn sync_blobs(store: &Store, written: &[Digest]) -> Result<(), RegistryError> {
    if !store.is_durable() || written.is_empty() {
        return Ok(());
    }
    let sync = |path: std::path::PathBuf| {
        std::fs::File::open(&path)
            .and_then(|f| f.sync_data())
            .map_err(|source| {
                RegistryError::Store(StoreError::Io {
                    op: "syncing",
                    path,
                    source,
                })
            })
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = written
            .iter()
            .map(|d| {
                let path = store.blob_path(d);
                s.spawn(move || sync(path))
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("sync thread"))
    })?;
    sync(store.layout().join("blobs/sha256"))
}

/// Reports bytes as they pass, and feeds them to the diff_id hasher when there is one.
struct Counting<'a, R> {
    inner: R,
    digest: &'a Digest,
    events: Option<Events<'a>>,
    diff: Option<DiffIdHasher>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.diff.as_mut() {
            h.update(&buf[..n])?;
        }
        if let (Some(ev), true) = (self.events, n > 0) {
            ev(PullEvent::LayerBytes {
                digest: self.digest.clone(),
                bytes: n as u64,
            });
        }
        Ok(n)
    }
}

/// Streams one blob into the store unless it is there; its digest and size are checked,
/// and with `diff_id` (a layer) the digest of its uncompressed content too, in the same
/// pass, before the blob gets its name. Returns whether it was fetched: a blob the store
/// had is the caller's to check against a diff_id (`Store::verify_diff_id`).
pub(super) fn fetch_blob(
    store: &Store,
    client: &Client,
    repo: &str,
    d: &Descriptor,
    diff_id: Option<&Digest>,
    events: Option<Events>,
    stats: &mut Stats,
) -> Result<bool, RegistryError> {
    let digest = d.digest();
    {
        let _held = store.protect([digest])?;
        if store.has_blob(digest) {
            stats.present += 1;
            if let Some(ev) = events {
                ev(PullEvent::LayerDone {
                    digest: digest.clone(),
                    size: d.size(),
                    fetched: false,
                });
            }
            return Ok(false);
        }
    }
    if let Some(ev) = events {
        ev(PullEvent::LayerStart {
            digest: digest.clone(),
            size: d.size(),
        });
    }
    let (resp, source) = open_blob(client, repo, d)?;
    // A plain layer's digest is its diff_id: nothing to decompress.
    let diff_id = diff_id.filter(|want| *want != digest);
    let mut reader = Counting {
        inner: resp.into_body().into_reader(),
        digest,
        events,
        diff: diff_id.map(|_| DiffIdHasher::default()),
    };
    let w = download(store, &mut reader, d, &source)?;
    if let (Some(want), Some(h)) = (diff_id, reader.diff.take()) {
        let actual = h
            .finish()
            .map_err(|e| blob_err(d, &source, e.to_string()))?;
        if actual != *want {
            return Err(RegistryError::Store(StoreError::DiffIdMismatch {
                layer: digest.to_string(),
                diff_id: want.to_string(),
                actual: actual.to_string(),
            }));
        }
    }
    w.commit(Some(digest))?;
    crate::fault::point("pull.blob-stored");
    stats.bytes += d.size();
    stats.fetched += 1;
    if let Some(ev) = events {
        ev(PullEvent::LayerDone {
            digest: digest.clone(),
            size: d.size(),
            fetched: true,
        });
    }
    Ok(true)
}

/// Fetches the compressed blob `packed` and stores what it decompresses to as the blob
/// `plain` (an uncompressed layer, whose digest is its diff_id), in one pass: network →
/// decompressor → the store's verified writer, which refuses anything but `plain`'s
/// bytes. How a build cache's compressed layers become the uncompressed layers its
/// entries name. Returns the compressed bytes read.
pub(super) fn fetch_unpacked(
    store: &Store,
    client: &Client,
    repo: &str,
    packed: &Descriptor,
    plain: &Digest,
) -> Result<u64, RegistryError> {
    let (resp, source) = open_blob(client, repo, packed)?;
    let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = CountingOwned {
        inner: resp.into_body().into_reader().take(packed.size()),
        count: counted.clone(),
    };
    let unpacked =
        crate::layer::decompressed(reader).map_err(|e| blob_err(packed, &source, e.to_string()))?;
    store.put_blob(unpacked, Some(plain))?;
    crate::fault::point("pull.blob-stored");
    Ok(counted.load(std::sync::atomic::Ordering::Relaxed))
}

/// Counts the bytes read through it (for a reader that must be `'static`).
struct CountingOwned<R> {
    inner: R,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for CountingOwned<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

fn blob_err(d: &Descriptor, source: &str, why: String) -> RegistryError {
    RegistryError::Blob {
        what: "blob",
        digest: d.digest().to_string(),
        url: source.to_string(),
        why,
    }
}

/// GETs a blob: from the repository, else (foreign / non-distributable layers may live
/// only at their `urls`, image-spec descriptor.md "urls") from those, over http(s) only.
fn open_blob(
    client: &Client,
    repo: &str,
    d: &Descriptor,
) -> Result<(ureq::http::Response<ureq::Body>, String), RegistryError> {
    let url = format!("{repo}/blobs/{}", d.digest());
    let mut resp = client.call("GET", &url, &[])?;
    let mut source = url;
    if resp.status() == 404 {
        for u in d
            .urls()
            .iter()
            .flatten()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        {
            let r = client.call("GET", u, &[])?;
            if r.status() == 200 {
                resp = r;
                source = u.clone();
                break;
            }
        }
    }
    if resp.status() != 200 {
        return Err(unexpected("GET", &source, resp));
    }
    Ok((resp, source))
}

/// Exactly the descriptor's size from `reader` into a blob writer (not committed).
fn download<R: Read>(
    store: &Store,
    reader: &mut Counting<R>,
    d: &Descriptor,
    source: &str,
) -> Result<crate::store::BlobWriter, RegistryError> {
    let mut w = store.blob_writer()?;
    w.write_from(reader, d.size())
        .map_err(|e| blob_err(d, source, e.to_string()))?;
    let mut extra = [0u8; 1];
    if reader
        .read(&mut extra)
        .map_err(|e| blob_err(d, source, e.to_string()))?
        > 0
    {
        return Err(blob_err(
            d,
            source,
            format!(
                "the registry sent more than the {} bytes its descriptor says",
                d.size()
            ),
        ));
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[(&str, &str, Option<&str>)]) -> Vec<u8> {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch, v))| {
                let mut p = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = v {
                    p["variant"] = serde_json::json!(v);
                }
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "size": 1,
                    "digest": format!("sha256:{}", i.to_string().repeat(64)),
                    "platform": p,
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap()
    }

    #[test]
    fn attestation_entries_are_not_platform_images() {
        let idx = index(&[
            ("linux", "amd64", None),
            ("unknown", "unknown", None),
            ("linux", "arm64", Some("v8")),
        ]);
        let got = platform_manifests(&idx, "x").unwrap();
        let firsts: Vec<String> = got
            .iter()
            .map(|d| d.to_string()[7..8].to_string())
            .collect();
        assert_eq!(firsts, ["0", "2"]);
    }

    #[test]
    fn platforms_are_chosen_from_an_index() {
        let idx = index(&[
            ("linux", "amd64", None),
            ("linux", "arm64", Some("v8")),
            ("linux", "arm", Some("v7")),
        ]);
        let pick = |s: &str| {
            choose_platform(&idx, &s.parse().unwrap(), "x").map(|d| d.to_string()[7..8].to_string())
        };
        assert_eq!(pick("linux/amd64").unwrap(), "0");
        assert_eq!(pick("linux/arm64").unwrap(), "1");
        assert_eq!(pick("linux/arm64/v8").unwrap(), "1");
        assert_eq!(pick("linux/arm/v7").unwrap(), "2");
        let e = pick("linux/s390x").unwrap_err().to_string();
        assert!(
            e.contains("linux/amd64, linux/arm64/v8, linux/arm/v7"),
            "{e}"
        );
        assert!(e.contains("linux/s390x"), "{e}");
        assert!("linux".parse::<Platform>().is_err());
    }
}
