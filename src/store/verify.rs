//! Proof that a layer blob is what an image config says it is: its uncompressed stream
//! must hash to the config's diff_id (image-spec config.md, "rootfs.diff_ids"). Load,
//! import and fsck call [`Store::verify_diff_id`] before an image gets a name, push before
//! it sends a layer; a pull checks only the compressed digest (as skopeo does) and leaves
//! the diff_id to the storage drivers, which check it while unpacking (docs/registry.md).
use std::io::{self, Read};

use oci_spec::image::{Descriptor, MediaType};

use super::{Result, Store, StoreError};
use crate::digest::Digest;

/// Whether a layer's media type says it is stored uncompressed, so its blob digest is its
/// diff_id (and a mismatch is visible without reading it).
pub fn is_uncompressed(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageLayer)
        || matches!(
            mt.to_string().as_str(),
            "application/vnd.oci.image.layer.v1.tar"
                | "application/vnd.docker.image.rootfs.diff.tar"
        )
}

/// The sha256 of the uncompressed form of a (plain or gzip) layer stream.
pub fn uncompressed_digest(r: impl Read + 'static) -> io::Result<Digest> {
    let plain = crate::layer::decompressed(r).map_err(|e| match e {
        crate::layer::LayerError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    })?;
    crate::digest::of_reader(plain).map(|(d, _)| d)
}

impl Store {
    /// Checks that the stored blob of `layer` decompresses to content hashing to `diff_id`.
    /// Uncompressed layers are checked by digest alone (the blob's digest is verified when
    /// it is written and by fsck); compressed ones are read and hashed.
    pub fn verify_diff_id(&self, layer: &Descriptor, diff_id: &Digest) -> Result<()> {
        if layer.digest() == diff_id {
            return Ok(());
        }
        let actual = if is_uncompressed(layer.media_type()) {
            layer.digest().clone()
        } else {
            let f = self.open_blob(layer.digest())?;
            uncompressed_digest(f).map_err(super::io_err(
                "decompressing",
                &self.blob_path(layer.digest()),
            ))?
        };
        if actual == *diff_id {
            return Ok(());
        }
        Err(StoreError::DiffIdMismatch {
            layer: layer.digest().to_string(),
            diff_id: diff_id.to_string(),
            actual: actual.to_string(),
        })
    }
}
