//! Assembling images in the store: config + layers → manifest → tag. Shared by import,
//! bootstrap, load and build, so every image keel writes has the same shape.
pub mod config;
pub mod import;

pub use config::ImageConfig;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oci_spec::image::{Arch, Descriptor, ImageManifest, ImageManifestBuilder, MediaType};

use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::store::{ImageRecord, Result, Store};

/// A layer blob already in the store, with the digest of its uncompressed tar.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredLayer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
}

impl StoredLayer {
    /// An uncompressed layer tar stored as `digest` (`size` bytes): its digest is also
    /// its diff_id.
    pub fn uncompressed(digest: Digest, size: u64) -> StoredLayer {
        StoredLayer {
            descriptor: Descriptor::new(MediaType::ImageLayer, size, digest.clone()),
            diff_id: digest,
        }
    }
}

/// The OCI architecture name of the machine keel runs on.
pub fn host_arch() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        "arm" => Arch::ARM,
        "x86" => Arch::i386,
        "powerpc64" => Arch::PowerPC64le,
        "s390x" => Arch::s390x,
        "riscv64" => Arch::RISCV64,
        other => Arch::from(other),
    }
}

fn source_date_epoch() -> Option<SystemTime> {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// When an imported image was made: `SOURCE_DATE_EPOCH` when set, else now (as docker).
pub fn created_time() -> SystemTime {
    source_date_epoch().unwrap_or_else(SystemTime::now)
}

/// The time for content that must be reproducible: `SOURCE_DATE_EPOCH`, else the epoch.
pub fn reproducible_time() -> SystemTime {
    source_date_epoch().unwrap_or(UNIX_EPOCH)
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A config for a fresh image with these layers, one history entry per layer.
pub fn new_config(
    layers: &[StoredLayer],
    created: SystemTime,
    created_by: &str,
    env: Vec<String>,
    cmd: Option<Vec<String>>,
) -> ImageConfig {
    let created = rfc3339(created);
    let mut cfg = ImageConfig::scratch();
    cfg.created = Some(created.clone());
    cfg.config.env = (!env.is_empty()).then_some(env);
    cfg.config.cmd = cmd;
    cfg.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.to_string()).collect();
    cfg.history = layers
        .iter()
        .map(|_| config::History {
            created: Some(created.clone()),
            created_by: Some(created_by.to_string()),
            ..Default::default()
        })
        .collect();
    cfg
}

/// Stores `config` and a manifest over `layers`; tags the result with `names`. The one
/// writer of image configs and manifests: build, import, bootstrap and load use it.
///
/// Both documents are named before either is stored and protected with one lease write
/// (each `put_json` would write the lease again): a no-op rebuild stores nothing here,
/// and what it cost was those writes.
pub fn commit_image(
    store: &Store,
    config: &ImageConfig,
    layers: &[StoredLayer],
    names: &[ImageRef],
) -> Result<ImageRecord> {
    let config_bytes = crate::store::canonical_json(config);
    let digest = crate::digest::of_bytes(&config_bytes);
    let manifest = manifest_over(&digest, config_bytes.len() as u64, layers);
    let manifest_bytes = crate::store::canonical_json(&manifest);
    let manifest_digest = crate::digest::of_bytes(&manifest_bytes);
    drop(store.protect([&digest, &manifest_digest])?);
    // Both written, then fsynced together and named (config first) with one fsync of
    // the directory: the disk is waited for twice, not four times.
    store.put_small_blobs(&[
        (&config_bytes, &digest),
        (&manifest_bytes, &manifest_digest),
    ])?;
    crate::fault::point("build.image-config");
    crate::fault::point("build.image-manifest");
    let size = manifest_bytes.len() as u64;
    tag_manifest(store, manifest_digest, size, names)
}

/// `commit_image` for a config blob already in the store, kept byte for byte (a loaded
/// image keeps its id).
pub fn commit_stored_config(
    store: &Store,
    config: &Digest,
    layers: &[StoredLayer],
    names: &[ImageRef],
) -> Result<ImageRecord> {
    let path = store.blob_path(config);
    let size = std::fs::metadata(&path)
        .map_err(|source| crate::store::StoreError::Io {
            op: "reading the size of",
            path,
            source,
        })?
        .len();
    let (digest, size) = store.put_json(&manifest_over(config, size, layers))?;
    crate::fault::point("build.image-manifest");
    tag_manifest(store, digest, size, names)
}

/// The image manifest over a config blob and layers.
fn manifest_over(config: &Digest, config_size: u64, layers: &[StoredLayer]) -> ImageManifest {
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            config.clone(),
        ))
        .layers(
            layers
                .iter()
                .map(|l| l.descriptor.clone())
                .collect::<Vec<_>>(),
        )
        .build()
        .expect("required manifest fields are set")
}

/// Points `names` at a stored manifest and returns its record.
fn tag_manifest(
    store: &Store,
    digest: Digest,
    size: u64,
    names: &[ImageRef],
) -> Result<ImageRecord> {
    let descriptor = Descriptor::new(MediaType::ImageManifest, size, digest);
    for name in names {
        store.tag(name, &descriptor)?;
    }
    store.load_record(
        descriptor,
        names.iter().map(ImageRef::tagged_name).collect(),
    )
}
