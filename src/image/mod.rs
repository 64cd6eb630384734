//! Assembling images in the store: config + layers → manifest → tag. Shared by import,
//! bootstrap, load and build, so every image keel writes has the same shape.
pub mod import;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder,
    ImageManifest, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};

use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::store::{ImageRecord, Result, Store};

/// A layer blob already in the store, with the digest of its uncompressed tar.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredLayer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
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
) -> ImageConfiguration {
    let created = rfc3339(created);
    let mut cfg = ConfigBuilder::default();
    if !env.is_empty() {
        cfg = cfg.env(env);
    }
    if let Some(cmd) = cmd {
        cfg = cfg.cmd(cmd);
    }
    let history = layers
        .iter()
        .map(|_| {
            HistoryBuilder::default()
                .created(created.clone())
                .created_by(created_by.to_string())
                .build()
                .expect("history fields are optional")
        })
        .collect::<Vec<_>>();
    ImageConfigurationBuilder::default()
        .created(created)
        .architecture(host_arch())
        .os(Os::Linux)
        .config(cfg.build().expect("config fields are optional"))
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(
                    layers
                        .iter()
                        .map(|l| l.diff_id.to_string())
                        .collect::<Vec<_>>(),
                )
                .build()
                .expect("rootfs fields set"),
        )
        .history(history)
        .build()
        .expect("required config fields are set")
}

/// Stores `config` and a manifest over `layers`; tags the result with `names`.
pub fn commit_image(
    store: &Store,
    config: &ImageConfiguration,
    layers: &[StoredLayer],
    names: &[ImageRef],
) -> Result<ImageRecord> {
    let (config_digest, config_size) = store.put_json(config)?;
    let manifest: ImageManifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            config_digest,
        ))
        .layers(
            layers
                .iter()
                .map(|l| l.descriptor.clone())
                .collect::<Vec<_>>(),
        )
        .build()
        .expect("required manifest fields are set");
    let (digest, size) = store.put_json(&manifest)?;
    let descriptor = Descriptor::new(MediaType::ImageManifest, size, digest);
    for name in names {
        store.tag(name, &descriptor)?;
    }
    Ok(ImageRecord {
        manifest_descriptor: descriptor,
        manifest,
        config: config.clone(),
        names: names.iter().map(ImageRef::tagged_name).collect(),
    })
}
