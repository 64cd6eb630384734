//! `keel push` of a multi-platform image: every platform's image is pushed by digest
//! through `push::push` (its blobs, then its manifest as sent), then the OCI index over
//! the pushed manifests goes under the tag. The index is rebuilt from what was sent: a
//! manifest whose layers were compressed on the way has a new digest and size.
use super::client::{scope, unexpected, Client, Connect};
use super::config::RegistriesConfig;
use super::name::{Reference, Remote};
use super::push::{push, Compression, Pushed};
use super::RegistryError;
use crate::store::{ImageRecord, Store};

/// What pushing a multi-platform image did.
#[derive(Debug, Default)]
pub struct PushedIndex {
    /// Each platform's push, in the index's order, with its platform.
    pub manifests: Vec<(String, Pushed)>,
    /// The digest of the index as pushed.
    pub index: String,
}

/// The index document over pushed manifests (canonical JSON, so it is reproducible).
pub fn index_document(entries: &[(&ImageRecord, &Pushed)]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(rec, pushed)| {
            let p = rec.platform();
            let mut platform = serde_json::json!({"architecture": p.arch, "os": p.os});
            if let Some(v) = &p.variant {
                platform["variant"] = v.clone().into();
            }
            serde_json::json!({
                "mediaType": rec.manifest_descriptor.media_type().to_string(),
                "digest": pushed.manifest,
                "size": pushed.descriptor.as_ref().map_or(0, |d| d.size()),
                "platform": platform,
            })
        })
        .collect();
    crate::store::canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
}

/// Pushes the multi-platform image `image` belongs to (its `index`) to `target`.
pub fn push_index(
    store: &Store,
    image: &ImageRecord,
    target: &Remote,
    registries: &RegistriesConfig,
    skip_tls_verify: bool,
    compression: Compression,
) -> Result<PushedIndex, RegistryError> {
    let index = image
        .index
        .as_ref()
        .ok_or_else(|| RegistryError::BadManifest {
            reference: image.manifest_digest().to_string(),
            why: "not a multi-platform image".into(),
        })?;
    let records = store.load_index_records(index, Vec::new())?;
    let mut pushed = Vec::new();
    for rec in &records {
        let by_digest = Remote {
            reference: Reference::Digest(rec.manifest_digest().clone()),
            ..target.clone()
        };
        pushed.push(push(
            store,
            rec,
            &by_digest,
            registries,
            skip_tls_verify,
            compression,
        )?);
    }
    let pairs: Vec<(&ImageRecord, &Pushed)> = records.iter().zip(pushed.iter()).collect();
    let bytes = index_document(&pairs);
    let host = Remote::endpoint_of(&target.registry);
    let how = Connect {
        skip_tls_verify,
        insecure: registries.is_insecure(host),
        credentials: None,
    };
    let client = Client::connect(host, &how, vec![scope(&target.repository, "pull,push")])?;
    let url = format!(
        "{}/manifests/{}",
        client.repo_url(&target.repository),
        target.reference
    );
    let media = [("Content-Type", "application/vnd.oci.image.index.v1+json")];
    let resp = client.send("PUT", &url, &media, &bytes[..])?;
    if resp.status() != 201 {
        return Err(unexpected("PUT", &url, resp));
    }
    Ok(PushedIndex {
        manifests: records
            .iter()
            .map(|r| r.platform().to_string())
            .zip(pushed)
            .collect(),
        index: crate::digest::of_bytes(&bytes).to_string(),
    })
}
