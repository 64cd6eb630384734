//! Image archives: `keel save` writes one tarball that is both an OCI image layout and a
//! docker-archive (it carries docker's `manifest.json` beside `index.json`); `keel load`
//! reads OCI archives and docker-archives (podman, skopeo, docker), gzip included.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};

use crate::digest::{self, Digest};
use crate::image::StoredLayer;
use crate::layer::{self, Compression};
use crate::reference::ImageRef;
use crate::store::{canonical_json, ImageRecord, Store, StoreError, REF_NAME};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("reading archive: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Layer(#[from] layer::LayerError),
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

/// Writes `items` as one tar (OCI layout + docker `manifest.json`) to `out`.
/// Entries are sorted and carry fixed metadata, so equal images give equal archives.
pub fn save(store: &Store, items: &[SaveItem], out: impl Write) -> Result<(), ArchiveError> {
    let mut blobs: BTreeSet<String> = BTreeSet::new();
    let mut index_entries = Vec::new();
    let mut docker = Vec::new();
    for item in items {
        let img = &item.image;
        blobs.insert(img.manifest_digest().to_string());
        blobs.insert(img.id().to_string());
        blobs.extend(img.manifest.layers().iter().map(|l| l.digest().to_string()));
        let names: Vec<Option<&String>> = if item.names.is_empty() {
            vec![None]
        } else {
            item.names.iter().map(Some).collect()
        };
        for n in names {
            let mut d = img.manifest_descriptor.clone();
            d.set_annotations(n.map(|n| HashMap::from([(REF_NAME.to_string(), n.clone())])));
            index_entries.push(d);
        }
        docker.push(DockerEntry {
            config: blob_entry_name(img.id()),
            repo_tags: Some(item.names.clone()),
            layers: img
                .manifest
                .layers()
                .iter()
                .map(|l| blob_entry_name(l.digest()))
                .collect(),
        });
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": index_entries,
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
        &serde_json::to_vec(&docker).expect("manifest.json serialises"),
    )?;
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = fixed_header(0);
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        tar.append_data(&mut h, dir, io::empty())?;
    }
    for b in &blobs {
        let d: Digest = b.parse().expect("digests from the store parse");
        let f = store.open_blob(&d)?;
        let mut h = fixed_header(f.metadata()?.len());
        tar.append_data(&mut h, blob_entry_name(&d), f)?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
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

/// Reads an archive from `input` into the store and tags what it names.
pub fn load(store: &Store, input: impl Read + 'static) -> Result<Loaded, ArchiveError> {
    let _writing = store.writer_guard()?;
    let mut archive = tar::Archive::new(layer::decompressed(input)?);
    // Archive path → blob digest, for every file stored; symlink path → target path.
    let mut files: HashMap<PathBuf, (Digest, u64)> = HashMap::new();
    let mut links: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut meta: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = layer::clean_entry_path(&entry.path_bytes())?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name()? {
                let base = if kind.is_symlink() {
                    path.parent().unwrap_or(Path::new("")).to_path_buf()
                } else {
                    PathBuf::new()
                };
                links.insert(path, normalize(&base.join(target)));
            }
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
            let mut bytes = Vec::new();
            entry.by_ref().take(64 << 20).read_to_end(&mut bytes)?;
            meta.insert(name, bytes);
            continue;
        }
        let expected = name
            .strip_prefix("blobs/")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(alg, hex)| digest::parse(&format!("{alg}:{hex}")));
        let stored = store
            .put_blob(&mut entry, expected.as_ref())
            .map_err(|e| match e {
                StoreError::DigestMismatch { .. } => ArchiveError::Malformed {
                    file: name.clone(),
                    why: e.to_string(),
                },
                e => e.into(),
            })?;
        files.insert(path, stored);
    }
    let lookup = |p: &str| -> Result<(Digest, u64), ArchiveError> {
        let mut path = normalize(Path::new(p));
        for _ in 0..16 {
            if let Some(hit) = files.get(&path) {
                return Ok(hit.clone());
            }
            match links.get(&path) {
                Some(t) => path = t.clone(),
                None => break,
            }
        }
        Err(ArchiveError::Malformed {
            file: "manifest.json".into(),
            why: format!("it names {p}, which the archive does not contain"),
        })
    };
    let mut loaded = Loaded { images: Vec::new() };
    if let Some(index_bytes) = meta.get("index.json") {
        let index: ImageIndex =
            serde_json::from_slice(index_bytes).map_err(|e| ArchiveError::Malformed {
                file: "index.json".into(),
                why: e.to_string(),
            })?;
        for d in index.manifests() {
            let manifest = pick_manifest(store, d)?;
            let name = entry_name(d);
            let record = store.load_record(manifest.clone(), Vec::new())?;
            if let Some(n) = &name {
                store.tag(&ImageRef::parse(n).map_err(StoreError::from)?, &manifest)?;
            }
            loaded.images.push((name, record));
        }
    } else if let Some(manifest_bytes) = meta.get("manifest.json") {
        let entries: Vec<DockerEntry> =
            serde_json::from_slice(manifest_bytes).map_err(|e| ArchiveError::Malformed {
                file: "manifest.json".into(),
                why: e.to_string(),
            })?;
        for e in entries {
            let (config_digest, _) = lookup(&e.config)?;
            let config: oci_spec::image::ImageConfiguration =
                store.read_json("config", &config_digest)?;
            let diff_ids = config.rootfs().diff_ids();
            if diff_ids.len() != e.layers.len() {
                return Err(ArchiveError::Malformed {
                    file: "manifest.json".into(),
                    why: format!(
                        "config lists {} diff_ids but {} layers",
                        diff_ids.len(),
                        e.layers.len()
                    ),
                });
            }
            let mut layers = Vec::new();
            for (p, diff_id) in e.layers.iter().zip(diff_ids) {
                let (d, size) = lookup(p)?;
                let mut head = [0u8; 4];
                let n = store.open_blob(&d)?.read(&mut head)?;
                let media = MediaType::Other(
                    Compression::sniff(&head[..n])
                        .layer_media_type()
                        .to_string(),
                );
                let media = match media.to_string().as_str() {
                    "application/vnd.oci.image.layer.v1.tar" => MediaType::ImageLayer,
                    "application/vnd.oci.image.layer.v1.tar+gzip" => MediaType::ImageLayerGzip,
                    _ => media,
                };
                let diff_id = digest::parse(diff_id).ok_or_else(|| ArchiveError::Malformed {
                    file: e.config.clone(),
                    why: format!("diff_id {diff_id} is not a sha256 digest"),
                })?;
                layers.push(StoredLayer {
                    descriptor: Descriptor::new(media, size, d),
                    diff_id,
                });
            }
            let names: Vec<ImageRef> = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| ImageRef::parse(t))
                .collect::<Result<_, _>>()
                .map_err(StoreError::from)?;
            // Keep the config bytes exactly as they came: the image id stays the same.
            let record =
                crate::image::commit_stored_config(store, &config_digest, &layers, &names)?;
            loaded
                .images
                .push((names.first().map(ImageRef::tagged_name), record));
        }
    } else {
        return Err(ArchiveError::UnknownFormat);
    }
    Ok(loaded)
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
fn pick_manifest(store: &Store, d: &Descriptor) -> Result<Descriptor, ArchiveError> {
    let mut d = d.clone();
    for _ in 0..4 {
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

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}
