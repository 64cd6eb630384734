//! Image archives: `keel save` writes one tarball that is both an OCI image layout and a
//! docker-archive (it carries docker's `manifest.json` beside `index.json`); `keel load`
//! reads OCI archives and docker-archives (podman, skopeo, docker), gzip included.
//!
//! An archive to load is hostile: its tar headers pass the layer unpacker's guard, its
//! JSON documents, entries, images and layers are bounded, its links may not leave it,
//! and every image is verified in full (sizes, diff_ids) before the first name is written.
//! An archive to save is checked too: no layer whose diff_id lies leaves the store in one.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};

use crate::digest::{self, Digest};
use crate::image::StoredLayer;
use crate::layer::{self, Compression};
use crate::reference::ImageRef;
use crate::store::{canonical_json, ImageRecord, Store, StoreError, MAX_JSON, REF_NAME};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("reading archive: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Layer(#[from] layer::LayerError),
    #[error("{0}")]
    Registry(#[from] crate::registry::RegistryError),
    #[error("archive is neither an OCI layout (index.json + oci-layout) nor a docker-archive (manifest.json); was it written by `keel save`, `podman save` or `docker save`?")]
    UnknownFormat,
    #[error("archive {file} is malformed: {why}")]
    Malformed { file: String, why: String },
}

/// One entry of docker-archive's `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// An image picked for `save`, with the names to record for it.
pub struct SaveItem {
    pub image: ImageRecord,
    pub names: Vec<String>,
}

fn blob_entry_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.digest())
}

/// Checks every layer of every image `save` would write against its config's diff_id, so
/// an archive never carries a layer whose diff_id lies (a pull checks only the compressed
/// digest). It shares push's remembered checks (`cache/registry/verified/`): a compressed
/// layer is decompressed once per blob, not once per save.
pub fn verify(store: &Store, items: &[SaveItem]) -> Result<(), ArchiveError> {
    let memo = crate::registry::push::Memo::new(store);
    for item in items {
        let members = match &item.image.index {
            Some(i) => store.load_index_records(i, Vec::new())?,
            None => vec![item.image.clone()],
        };
        for m in &members {
            crate::registry::push::verify_layers(store, &memo, m)?;
        }
    }
    Ok(())
}

/// Writes `items` as one tar (OCI layout + docker `manifest.json`) to `out`, after
/// [`verify`] passed: a refused image leaves not one byte written to `out`.
/// Entries are sorted and carry fixed metadata, so equal images give equal archives.
pub fn save(store: &Store, items: &[SaveItem], out: impl Write) -> Result<(), ArchiveError> {
    verify(store, items)?;
    let mut contents = ArchiveContents::default();
    for item in items {
        contents.add(store, item)?;
    }
    contents.write(store, out)
}

/// What one archive holds: every blob of its images, the OCI index's entries (one per
/// name) and docker's `manifest.json` entries.
#[derive(Default)]
struct ArchiveContents {
    blobs: BTreeSet<String>,
    index_entries: Vec<Descriptor>,
    docker: Vec<DockerEntry>,
}

impl ArchiveContents {
    fn add(&mut self, store: &Store, item: &SaveItem) -> Result<(), ArchiveError> {
        let img = &item.image;
        // A multi-platform image travels whole: its index and every platform's image.
        let members = match &img.index {
            Some(i) => {
                self.blobs.insert(i.digest().to_string());
                store.load_index_records(i, Vec::new())?
            }
            None => vec![img.clone()],
        };
        for m in &members {
            self.blobs.insert(m.manifest_digest().to_string());
            self.blobs.insert(m.id().to_string());
            self.blobs
                .extend(m.manifest.layers().iter().map(|l| l.digest().to_string()));
        }
        let names: Vec<Option<&String>> = if item.names.is_empty() {
            vec![None]
        } else {
            item.names.iter().map(Some).collect()
        };
        for n in names {
            let mut d = img.target().clone();
            d.set_annotations(n.map(|n| HashMap::from([(REF_NAME.to_string(), n.clone())])));
            self.index_entries.push(d);
        }
        self.docker.push(DockerEntry {
            config: blob_entry_name(img.id()),
            repo_tags: Some(item.names.clone()),
            layers: img
                .manifest
                .layers()
                .iter()
                .map(|l| blob_entry_name(l.digest()))
                .collect(),
        });
        Ok(())
    }

    /// The tar: layout marker, index, manifest.json, then the blobs in digest order.
    fn write(self, store: &Store, out: impl Write) -> Result<(), ArchiveError> {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": self.index_entries,
        });
        let mut tar = tar::Builder::new(out);
        let small = |tar: &mut tar::Builder<_>, name: &str, bytes: &[u8]| -> io::Result<()> {
            let mut h = fixed_header(bytes.len() as u64);
            tar.append_data(&mut h, name, bytes)
        };
        small(
            &mut tar,
            "oci-layout",
            b"{\"imageLayoutVersion\":\"1.0.0\"}",
        )?;
        small(&mut tar, "index.json", &canonical_json(&index))?;
        small(
            &mut tar,
            "manifest.json",
            &serde_json::to_vec(&self.docker).expect("manifest.json serialises"),
        )?;
        for dir in ["blobs/", "blobs/sha256/"] {
            let mut h = fixed_header(0);
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            tar.append_data(&mut h, dir, io::empty())?;
        }
        for b in &self.blobs {
            let d: Digest = b.parse().expect("digests from the store parse");
            let f = store.open_blob(&d)?;
            let mut h = fixed_header(f.metadata()?.len());
            tar.append_data(&mut h, blob_entry_name(&d), f)?;
        }
        tar.into_inner()?.flush()?;
        Ok(())
    }
}

fn fixed_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// What `load` brought into the store.
#[derive(Debug)]
pub struct Loaded {
    pub images: Vec<(Option<String>, ImageRecord)>,
}

/// Most entries an archive may hold (a save of many images has a few per layer).
pub const MAX_ENTRIES: usize = 100_000;
/// Most images one archive may name (index.json or manifest.json entries).
pub const MAX_IMAGES: usize = 1_000;
/// Most layers one image may have (docker's overlay2 stops at 128; OCI sets none).
pub const MAX_LAYERS: usize = 256;
/// How many symlinks a path of the archive may pass through.
const MAX_LINK_HOPS: usize = 16;

/// The files of an archive as stored: blobs by archive path, in-archive links, and the
/// small JSON documents that describe the images.
#[derive(Default)]
struct Contents {
    files: HashMap<PathBuf, (Digest, u64)>,
    links: HashMap<PathBuf, PathBuf>,
    meta: BTreeMap<String, Vec<u8>>,
}

/// An image checked in full and ready to be named.
struct Ready {
    names: Vec<ImageRef>,
    record: ImageRecord,
    /// What the names point at: the manifest, or the multi-platform index over it.
    target: Descriptor,
}

fn malformed(file: impl Into<String>, why: impl Into<String>) -> ArchiveError {
    ArchiveError::Malformed {
        file: file.into(),
        why: why.into(),
    }
}

/// Reads an archive from `input` into the store and tags what it names. Blobs are
/// written as they arrive (content-addressed, so harmless until named); every image is
/// then verified in full — blobs present with the sizes their descriptors give, configs
/// with one diff_id per layer, each layer hashing to its diff_id — and only then is any
/// name written. A refused archive leaves no new name.
pub fn load(store: &Store, input: impl Read + 'static) -> Result<Loaded, ArchiveError> {
    let _writing = store.writer_guard()?;
    let contents = read_contents(store, input)?;
    let ready = if let Some(index_bytes) = contents.meta.get("index.json") {
        plan_oci(store, &contents, index_bytes)?
    } else if let Some(manifest_bytes) = contents.meta.get("manifest.json") {
        plan_docker(store, &contents, manifest_bytes)?
    } else {
        return Err(ArchiveError::UnknownFormat);
    };
    check_unique_names(&ready)?;
    let mut loaded = Loaded { images: Vec::new() };
    for r in ready {
        for n in &r.names {
            store.tag(n, &r.target)?;
        }
        let first = r.names.first().map(ImageRef::tagged_name);
        loaded.images.push((first, r.record));
    }
    Ok(loaded)
}

/// Streams the archive's entries into the store (blobs) and memory (JSON up to
/// `MAX_JSON`), through the same tar header guard as layer unpacking.
fn read_contents(store: &Store, input: impl Read + 'static) -> Result<Contents, ArchiveError> {
    let plain = layer::decompressed(input)?;
    let mut archive = tar::Archive::new(layer::guard::HeaderGuard::new(plain));
    let mut c = Contents::default();
    for (count, entry) in archive.entries()?.enumerate() {
        if count >= MAX_ENTRIES {
            return Err(malformed(
                "<archive>",
                format!("it has more than {MAX_ENTRIES} entries"),
            ));
        }
        let mut entry = entry?;
        let path = layer::clean_entry_path(&entry.path_bytes())?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let to = link_target(&path, kind.is_symlink(), entry.link_name()?.as_deref())?;
            c.links.insert(path, to);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let name = path.to_string_lossy().into_owned();
        if matches!(
            name.as_str(),
            "index.json" | "oci-layout" | "manifest.json" | "repositories"
        ) {
            c.meta
                .insert(name.clone(), read_small(&name, &mut entry)?)
                .map_or(Ok(()), |_| {
                    Err(malformed(&name, "it appears twice in the archive"))
                })?;
            continue;
        }
        let expected = name
            .strip_prefix("blobs/")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(alg, hex)| digest::parse(&format!("{alg}:{hex}")));
        let stored = store
            .put_blob(&mut entry, expected.as_ref())
            .map_err(|e| match e {
                StoreError::DigestMismatch { .. } => malformed(&name, e.to_string()),
                e => e.into(),
            })?;
        c.files.insert(path, stored);
    }
    crate::fault::point("load.blobs-stored");
    Ok(c)
}

/// Where a link entry of the archive leads, as an archive path: a symlink's target is
/// relative to its directory, a hardlink's to the archive root; neither may leave it.
fn link_target(path: &Path, symlink: bool, target: Option<&Path>) -> Result<PathBuf, ArchiveError> {
    let shown = path.display().to_string();
    let target = target.ok_or_else(|| malformed(&shown, "link without a target"))?;
    let base = match path.parent() {
        Some(p) if symlink => p.to_path_buf(),
        _ => PathBuf::new(),
    };
    inside(&base.join(target)).ok_or_else(|| {
        malformed(
            &shown,
            format!("it links to {}, outside the archive", target.display()),
        )
    })
}

/// Reads a JSON document of the archive, refusing one over `MAX_JSON`.
fn read_small(name: &str, r: &mut impl Read) -> Result<Vec<u8>, ArchiveError> {
    let mut bytes = Vec::new();
    r.take(MAX_JSON + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(malformed(
            name,
            format!(
                "it is larger than the {} MiB keel reads for a JSON document",
                MAX_JSON >> 20
            ),
        ));
    }
    Ok(bytes)
}

/// Plans an OCI layout: every index entry down to a manifest for this host, verified.
fn plan_oci(store: &Store, c: &Contents, index_bytes: &[u8]) -> Result<Vec<Ready>, ArchiveError> {
    let have: HashSet<&Digest> = c.files.values().map(|(d, _)| d).collect();
    let index: ImageIndex =
        serde_json::from_slice(index_bytes).map_err(|e| malformed("index.json", e.to_string()))?;
    if index.manifests().len() > MAX_IMAGES {
        return Err(malformed(
            "index.json",
            format!("it lists more than {MAX_IMAGES} images"),
        ));
    }
    let mut ready = Vec::new();
    for d in index.manifests() {
        let name = entry_name(d);
        let label = format!("image {}", name.as_deref().unwrap_or(d.digest().as_ref()));
        let names = match &name {
            Some(n) => vec![ImageRef::parse(n).map_err(StoreError::from)?],
            None => Vec::new(),
        };
        if let Some(ready_index) = plan_index(store, &have, &label, d, &names)? {
            ready.push(ready_index);
            continue;
        }
        let manifest = pick_manifest(store, &have, d)?;
        let record = verify_image(store, &have, &label, manifest)?;
        let target = record.manifest_descriptor.clone();
        ready.push(Ready {
            names,
            record,
            target,
        });
    }
    Ok(ready)
}

/// A multi-platform entry (an index whose manifests all carry platforms): every
/// platform's image verified, the name kept on the index. `None` for anything else
/// (a manifest, or an index of other kinds, which [`pick_manifest`] follows).
fn plan_index(
    store: &Store,
    have: &HashSet<&Digest>,
    label: &str,
    d: &Descriptor,
    names: &[ImageRef],
) -> Result<Option<Ready>, ArchiveError> {
    if !matches!(d.media_type(), MediaType::ImageIndex) {
        return Ok(None);
    }
    check_blob(store, have, label, d)?;
    let idx: ImageIndex = store.read_json("index", d.digest())?;
    let flat = idx
        .manifests()
        .iter()
        .all(|m| matches!(m.media_type(), MediaType::ImageManifest) && m.platform().is_some());
    if !flat || idx.manifests().is_empty() || idx.manifests().len() > MAX_IMAGES {
        return Ok(None);
    }
    let mut records = Vec::new();
    for m in idx.manifests() {
        records.push(verify_image(store, have, label, m.clone())?);
    }
    let mut target = Descriptor::new(MediaType::ImageIndex, d.size(), d.digest().clone());
    target.set_annotations(None);
    let host = crate::platform::host();
    let pick = records
        .iter()
        .position(|r| r.platform().arch == host.arch)
        .unwrap_or(0);
    let mut record = records.swap_remove(pick);
    record.index = Some(target.clone());
    Ok(Some(Ready {
        names: names.to_vec(),
        record,
        target,
    }))
}

/// Checks a blob that a descriptor names: in the archive (an archive must be complete,
/// whatever the store has already), and of the size it gives.
fn check_blob(
    store: &Store,
    have: &HashSet<&Digest>,
    label: &str,
    d: &Descriptor,
) -> Result<(), ArchiveError> {
    let size = match std::fs::metadata(store.blob_path(d.digest())) {
        Ok(m) if have.contains(d.digest()) => m.len(),
        _ => {
            return Err(malformed(
                "index.json",
                format!(
                    "{label} needs blob {}, which the archive does not contain",
                    d.digest()
                ),
            ))
        }
    };
    if size != d.size() {
        return Err(malformed(
            "index.json",
            format!(
                "{label}: blob {} is {size} bytes but its descriptor says size {}",
                d.digest(),
                d.size()
            ),
        ));
    }
    Ok(())
}

/// Verifies one image in full: manifest, config, one diff_id per layer, every layer
/// present with its size and hashing to its diff_id.
fn verify_image(
    store: &Store,
    have: &HashSet<&Digest>,
    label: &str,
    manifest: Descriptor,
) -> Result<ImageRecord, ArchiveError> {
    check_blob(store, have, label, &manifest)?;
    let m: ImageManifest = store.read_json("manifest", manifest.digest())?;
    if m.layers().len() > MAX_LAYERS {
        return Err(malformed(
            "index.json",
            format!(
                "{label} has {} layers, more than the {MAX_LAYERS} keel accepts",
                m.layers().len()
            ),
        ));
    }
    check_blob(store, have, &format!("{label} config"), m.config())?;
    let record = store.load_record(manifest, Vec::new())?;
    let diff_ids = record.config.rootfs().diff_ids();
    if diff_ids.len() != m.layers().len() {
        return Err(malformed(
            "index.json",
            format!(
                "{label}: its config lists {} diff_ids but its manifest has {} layers",
                diff_ids.len(),
                m.layers().len()
            ),
        ));
    }
    for (i, (l, diff_id)) in m.layers().iter().zip(diff_ids).enumerate() {
        check_blob(store, have, &format!("{label} layer {i}"), l)?;
        let diff_id = parse_diff_id(label, diff_id)?;
        store.verify_diff_id(l, &diff_id)?;
    }
    Ok(record)
}

fn parse_diff_id(label: &str, diff_id: &str) -> Result<Digest, ArchiveError> {
    digest::parse(diff_id).ok_or_else(|| {
        malformed(
            "config",
            format!("{label}: diff_id {diff_id:?} is not a sha256 digest"),
        )
    })
}

/// Plans a docker-archive (`manifest.json`): each entry's config and layers found in the
/// archive, each layer verified against its diff_id, a manifest written for it.
fn plan_docker(
    store: &Store,
    c: &Contents,
    manifest_bytes: &[u8],
) -> Result<Vec<Ready>, ArchiveError> {
    let entries: Vec<DockerEntry> = serde_json::from_slice(manifest_bytes)
        .map_err(|e| malformed("manifest.json", e.to_string()))?;
    if entries.len() > MAX_IMAGES {
        return Err(malformed(
            "manifest.json",
            format!("it lists more than {MAX_IMAGES} images"),
        ));
    }
    entries
        .iter()
        .map(|e| plan_docker_entry(store, c, e))
        .collect()
}

/// One `manifest.json` entry: names, config (bytes kept as they came, so the image id
/// stays the same) and layers, each verified against its diff_id; writes the manifest.
fn plan_docker_entry(store: &Store, c: &Contents, e: &DockerEntry) -> Result<Ready, ArchiveError> {
    let names: Vec<ImageRef> = e
        .repo_tags
        .iter()
        .flatten()
        .map(|t| ImageRef::parse(t))
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)?;
    let label = match names.first() {
        Some(n) => format!("image {}", n.tagged_name()),
        None => format!("image {}", e.config),
    };
    if e.layers.len() > MAX_LAYERS {
        return Err(malformed(
            "manifest.json",
            format!(
                "{label} has {} layers, more than the {MAX_LAYERS} keel accepts",
                e.layers.len()
            ),
        ));
    }
    let config_digest = docker_config(c, &e.config)?;
    let config: oci_spec::image::ImageConfiguration = store.read_json("config", &config_digest)?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != e.layers.len() {
        return Err(malformed(
            "manifest.json",
            format!(
                "{label}: its config lists {} diff_ids but {} layers",
                diff_ids.len(),
                e.layers.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (p, diff_id) in e.layers.iter().zip(diff_ids) {
        let (d, size) = lookup(c, p)?;
        let descriptor = Descriptor::new(sniff_media(store, &d)?, size, d);
        let diff_id = parse_diff_id(&label, diff_id)?;
        store.verify_diff_id(&descriptor, &diff_id)?;
        layers.push(StoredLayer {
            descriptor,
            diff_id,
        });
    }
    // Names are written last, by `load`, once every image has passed.
    let record = crate::image::commit_stored_config(store, &config_digest, &layers, &[])?;
    let target = record.manifest_descriptor.clone();
    Ok(Ready {
        names,
        record,
        target,
    })
}

/// The stored config a `manifest.json` entry names; a name of the form `<hex>.json` must
/// be the digest of its content.
fn docker_config(c: &Contents, name: &str) -> Result<Digest, ArchiveError> {
    let (config_digest, _) = lookup(c, name)?;
    let named = name
        .strip_suffix(".json")
        .and_then(|h| digest::parse(&format!("sha256:{h}")));
    match named {
        Some(n) if n != config_digest => Err(malformed(
            name,
            format!("its content hashes to {config_digest}, not to the digest its name gives"),
        )),
        _ => Ok(config_digest),
    }
}

/// The OCI media type of a stored layer blob, from its magic bytes.
fn sniff_media(store: &Store, d: &Digest) -> Result<MediaType, ArchiveError> {
    let mut head = [0u8; 4];
    let n = store.open_blob(d)?.read(&mut head)?;
    Ok(match Compression::sniff(&head[..n]) {
        Compression::None => MediaType::ImageLayer,
        Compression::Gzip => MediaType::ImageLayerGzip,
        other => MediaType::Other(other.layer_media_type().to_string()),
    })
}

/// Finds the blob a manifest.json path names, following the archive's own links. Paths
/// that climb out (`..`) or are absolute are refused, not cleaned.
fn lookup(c: &Contents, p: &str) -> Result<(Digest, u64), ArchiveError> {
    let climbs = Path::new(p).components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    });
    if climbs || p.len() > layer::MAX_ENTRY_PATH {
        return Err(malformed(
            "manifest.json",
            format!("it names {p}, a path outside the archive"),
        ));
    }
    let mut path = inside(Path::new(p)).unwrap_or_default();
    for _ in 0..MAX_LINK_HOPS {
        if let Some(hit) = c.files.get(&path) {
            return Ok(hit.clone());
        }
        match c.links.get(&path) {
            Some(t) => path = t.clone(),
            None => break,
        }
    }
    Err(malformed(
        "manifest.json",
        format!("it names {p}, which the archive does not contain"),
    ))
}

/// Two images of one archive may not claim the same name.
fn check_unique_names(ready: &[Ready]) -> Result<(), ArchiveError> {
    let mut seen: HashMap<String, &Digest> = HashMap::new();
    for r in ready {
        for n in &r.names {
            let full = n.tagged_name();
            match seen.insert(full.clone(), r.target.digest()) {
                Some(other) if other != r.target.digest() => {
                    return Err(malformed(
                        "<archive>",
                        format!("two different images are both named {full}"),
                    ))
                }
                Some(_) => {
                    return Err(malformed(
                        "<archive>",
                        format!("the name {full} is given twice"),
                    ))
                }
                None => {}
            }
        }
    }
    Ok(())
}

/// The name an index entry carries: containerd's full name, else the OCI ref name.
fn entry_name(d: &Descriptor) -> Option<String> {
    let a = d.annotations().as_ref()?;
    let name = a
        .get("io.containerd.image.name")
        .or_else(|| a.get(REF_NAME))?;
    // A bare tag ("latest") is not a usable name on its own.
    if ImageRef::parse(name).is_ok() && (name.contains(':') || name.contains('/')) {
        Some(
            name.strip_prefix("docker.io/library/")
                .or_else(|| name.strip_prefix("docker.io/"))
                .unwrap_or(name)
                .to_string(),
        )
    } else {
        None
    }
}

/// Follows a (possibly multi-platform) index entry down to a manifest for this host.
fn pick_manifest(
    store: &Store,
    have: &HashSet<&Digest>,
    d: &Descriptor,
) -> Result<Descriptor, ArchiveError> {
    let mut d = d.clone();
    for _ in 0..4 {
        check_blob(store, have, &format!("manifest {}", d.digest()), &d)?;
        if !matches!(d.media_type(), MediaType::ImageIndex)
            && d.media_type().to_string()
                != "application/vnd.docker.distribution.manifest.list.v2+json"
        {
            let _: ImageManifest = store.read_json("manifest", d.digest())?;
            return Ok(d);
        }
        let idx: ImageIndex = store.read_json("index", d.digest())?;
        let arch = crate::image::host_arch();
        d = idx
            .manifests()
            .iter()
            .find(|m| {
                m.platform()
                    .as_ref()
                    .is_some_and(|p| *p.architecture() == arch)
            })
            .or_else(|| idx.manifests().first())
            .cloned()
            .ok_or_else(|| ArchiveError::Malformed {
                file: "index.json".into(),
                why: format!("index {} lists no manifests", d.digest()),
            })?;
    }
    Err(ArchiveError::Malformed {
        file: "index.json".into(),
        why: "indexes nest too deeply".into(),
    })
}

/// `p` with `.` and `..` resolved lexically, or None when it is absolute or climbs
/// above the archive's root.
fn inside(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_stay_inside() {
        let cases: &[(&str, Option<&str>)] = &[
            ("a/b", Some("a/b")),
            ("./a/../b", Some("b")),
            ("a/./b/", Some("a/b")),
            ("../x", None),
            ("a/../../x", None),
            ("/etc/passwd", None),
        ];
        for (p, want) in cases {
            assert_eq!(inside(Path::new(p)), want.map(PathBuf::from), "{p}");
        }
        assert!(link_target(Path::new("d/l"), true, Some(Path::new("../x"))).is_ok());
        assert!(link_target(Path::new("d/l"), true, Some(Path::new("../../x"))).is_err());
        assert!(link_target(Path::new("d/l"), false, Some(Path::new("../x"))).is_err());
        assert!(link_target(Path::new("l"), true, Some(Path::new("/etc/passwd"))).is_err());
        assert!(link_target(Path::new("l"), true, None).is_err());
    }

    #[test]
    fn manifest_json_paths_may_not_climb() {
        let mut c = Contents::default();
        let d = digest::of_bytes(b"x");
        c.files.insert(PathBuf::from("blobs/x"), (d.clone(), 1));
        c.links
            .insert(PathBuf::from("l/layer.tar"), PathBuf::from("blobs/x"));
        c.links.insert(PathBuf::from("loop"), PathBuf::from("loop"));
        assert_eq!(lookup(&c, "blobs/x").unwrap().0, d);
        assert_eq!(lookup(&c, "./l/layer.tar").unwrap().0, d);
        for bad in [
            "../blobs/x",
            "l/../../blobs/x",
            "/blobs/x",
            "loop",
            "missing",
        ] {
            assert!(lookup(&c, bad).is_err(), "{bad}");
        }
    }
}
