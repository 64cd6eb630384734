//! `keel import`: a rootfs tarball (plain or gzip) becomes a one-layer image. Entries are
//! checked (no absolute paths, no `..`, no links out of the tree, extension headers
//! bounded by the layer unpacker's guard) and rewritten into an uncompressed layer with
//! clean names, so the stored layer's digest is its diff_id by construction.
use std::io::{self, Read, Write};

use super::{commit_image, new_config, StoredLayer};
use crate::layer::{self, clean_entry_path, LayerError};
use crate::reference::ImageRef;
use crate::store::{ImageRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{source_name}: {err}")]
    Layer {
        source_name: String,
        err: LayerError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Copies the tar stream `input` into `out`, validating and normalising every entry.
/// Returns the number of entries written.
pub fn rewrite_layer(input: impl Read + 'static, out: impl Write) -> Result<usize, LayerError> {
    // The same header guard as layer unpacking: no unbounded long names or PAX headers.
    let mut archive =
        tar::Archive::new(layer::guard::HeaderGuard::new(layer::decompressed(input)?));
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    let mut count = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes().into_owned();
        let path = clean_entry_path(&raw)?;
        if path.as_os_str().is_empty() {
            continue; // the root itself ("./"): its metadata is the runtime's business
        }
        let mut header = entry.header().clone();
        let kind = header.entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue; // already folded into the entry by the tar reader
        }
        if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| {
                    LayerError::bad(path.display().to_string(), "hardlink without a target")
                })?
                .into_owned();
            let target = clean_entry_path(&target).map_err(|e| {
                LayerError::bad(
                    path.display().to_string(),
                    format!("hardlink target escapes the tree: {e}"),
                )
            })?;
            builder.append_link(&mut header, &path, &target)?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| {
                    LayerError::bad(path.display().to_string(), "symlink without a target")
                })?
                .into_owned();
            use std::os::unix::ffi::OsStrExt;
            builder.append_link(&mut header, &path, std::ffi::OsStr::from_bytes(&target))?;
        } else {
            builder.append_data(&mut header, &path, &mut entry)?;
        }
        count += 1;
    }
    builder.into_inner()?.flush()?;
    Ok(count)
}

/// Imports a rootfs tarball as image `name`.
pub fn import(
    store: &Store,
    input: impl Read + 'static,
    source_name: &str,
    name: &ImageRef,
) -> Result<ImageRecord, ImportError> {
    let _writing = store.writer_guard()?;
    let mut blob = store.blob_writer()?;
    rewrite_layer(input, &mut blob).map_err(|err| ImportError::Layer {
        source_name: source_name.to_string(),
        err,
    })?;
    let (digest, size) = blob.commit(None)?;
    crate::fault::point("import.layer-stored");
    let layer = StoredLayer::uncompressed(digest, size);
    let config = new_config(
        std::slice::from_ref(&layer),
        super::created_time(),
        &format!("keel import {source_name}"),
        Vec::new(),
        None,
    );
    Ok(commit_image(
        store,
        &config,
        &[layer],
        std::slice::from_ref(name),
    )?)
}

impl From<io::Error> for ImportError {
    fn from(e: io::Error) -> Self {
        ImportError::Layer {
            source_name: "<input>".into(),
            err: LayerError::Io(e),
        }
    }
}
