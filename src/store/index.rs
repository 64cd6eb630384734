//! `index.json`: the list of tagged images. Reads are lock-free (the file is only ever
//! replaced by rename); updates take `locks/index.lock`, re-read, modify, and replace.
use std::collections::HashMap;
use std::fs;
use std::io;

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType,
};

use super::{canonical_json, io_err, Result, Store, StoreError};
use crate::digest::{self, Digest};
use crate::reference::ImageRef;

/// The annotation that carries an index entry's name (`repository:tag`).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One image as the store knows it: its manifest, config and the names pointing at it.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub manifest_descriptor: Descriptor,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
    /// `repository:tag` names, sorted; empty for an image addressed by digest only.
    pub names: Vec<String>,
}

impl ImageRecord {
    pub fn manifest_digest(&self) -> &Digest {
        self.manifest_descriptor.digest()
    }
    /// The image id, as docker shows it: the config digest.
    pub fn id(&self) -> &Digest {
        self.manifest.config().digest()
    }
    /// Sum of the blob sizes (config and layers).
    pub fn size(&self) -> u64 {
        self.manifest.config().size() + self.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
    }
}

fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::<Descriptor>::new())
        .build()
        .expect("all required fields are set")
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(REF_NAME).map(String::as_str)
}

impl Store {
    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::NotAStore {
                path: path.clone(),
                why: format!("index.json does not parse: {e}"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(empty_index()),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    /// Applies `f` to the index under the index lock and replaces the file atomically.
    pub fn update_index<T>(&self, f: impl FnOnce(&mut ImageIndex) -> Result<T>) -> Result<T> {
        let _lock = self.index_guard()?;
        let mut index = self.read_index()?;
        let out = f(&mut index)?;
        self.write_atomic(&self.index_path(), &canonical_json(&index))?;
        Ok(out)
    }

    /// Points `name` at the manifest described by `manifest` (replacing any previous target).
    pub fn tag(&self, name: &ImageRef, manifest: &Descriptor) -> Result<()> {
        if name.digest.is_some() {
            return Err(StoreError::DigestTag(name.to_string()));
        }
        let full = name.tagged_name();
        let mut entry = Descriptor::new(
            manifest.media_type().clone(),
            manifest.size(),
            manifest.digest().clone(),
        );
        entry.set_annotations(Some(HashMap::from([(REF_NAME.to_string(), full.clone())])));
        // Re-tagging the same image (every no-op rebuild) changes nothing: skip the write.
        let current = self.read_index()?;
        if current
            .manifests()
            .iter()
            .any(|d| ref_name(d) == Some(full.as_str()) && d.digest() == manifest.digest())
        {
            return Ok(());
        }
        self.update_index(|index| {
            let mut list = index.manifests().clone();
            list.retain(|d| ref_name(d) != Some(full.as_str()));
            list.push(entry);
            list.sort_by(|a, b| ref_name(a).cmp(&ref_name(b)));
            index.set_manifests(list);
            Ok(())
        })
    }

    /// Removes the names in `names` from the index; returns how many entries went.
    pub fn untag(&self, names: &[String]) -> Result<usize> {
        self.update_index(|index| {
            let mut list = index.manifests().clone();
            let before = list.len();
            list.retain(|d| !ref_name(d).is_some_and(|n| names.iter().any(|x| x == n)));
            let removed = before - list.len();
            index.set_manifests(list);
            Ok(removed)
        })
    }

    /// Loads the manifest and config of the image a manifest descriptor points at.
    pub fn load_record(
        &self,
        manifest_descriptor: Descriptor,
        names: Vec<String>,
    ) -> Result<ImageRecord> {
        let manifest: ImageManifest = self.read_json("manifest", manifest_descriptor.digest())?;
        let config: ImageConfiguration = self.read_json("config", manifest.config().digest())?;
        Ok(ImageRecord {
            manifest_descriptor,
            manifest,
            config,
            names,
        })
    }

    /// Every tagged image, one record per manifest, names grouped.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let index = self.read_index()?;
        let mut by_digest: Vec<(Descriptor, Vec<String>)> = Vec::new();
        for d in index.manifests() {
            let name = ref_name(d).map(str::to_string);
            match by_digest.iter_mut().find(|(x, _)| x.digest() == d.digest()) {
                Some((_, names)) => names.extend(name),
                None => by_digest.push((d.clone(), name.into_iter().collect())),
            }
        }
        by_digest
            .into_iter()
            .map(|(d, mut names)| {
                names.sort();
                self.load_record(d, names)
            })
            .collect()
    }

    /// Finds an image by name (`app`, `app:tag`), by `name@sha256:…`, by manifest digest,
    /// or by a unique prefix of its id (config digest) as `keel images` prints it.
    pub fn resolve(&self, input: &str) -> Result<ImageRecord> {
        let images = self.images()?;
        let hexish = input.strip_prefix("sha256:").unwrap_or(input);
        let looks_like_id = hexish.len() >= 4
            && hexish.len() <= 64
            && hexish
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if looks_like_id {
            let hits: Vec<&ImageRecord> = images
                .iter()
                .filter(|i| {
                    i.id().digest().starts_with(hexish)
                        || i.manifest_digest().digest().starts_with(hexish)
                })
                .collect();
            match hits.len() {
                1 => return Ok(hits[0].clone()),
                n if n > 1 => return Err(StoreError::Ambiguous(input.to_string())),
                _ if input.starts_with("sha256:") => {
                    // A digest of a manifest that is stored but not tagged.
                    if let Some(d) = digest::parse(input).filter(|d| self.has_blob(d)) {
                        return self.manifest_by_digest(&d);
                    }
                    return Err(StoreError::NoSuchImage(input.to_string()));
                }
                _ => {}
            }
        }
        let r = ImageRef::parse(input)?;
        if let Some(d) = &r.digest {
            if let Some(i) = images.iter().find(|i| i.manifest_digest() == d) {
                return Ok(i.clone());
            }
            return if self.has_blob(d) {
                self.manifest_by_digest(d)
            } else {
                Err(StoreError::NoSuchImage(input.to_string()))
            };
        }
        let want = r.tagged_name();
        images
            .into_iter()
            .find(|i| i.names.contains(&want))
            .ok_or(StoreError::NoSuchImage(input.to_string()))
    }

    fn manifest_by_digest(&self, d: &Digest) -> Result<ImageRecord> {
        let size = fs::metadata(self.blob_path(d))
            .map_err(io_err("reading", &self.blob_path(d)))?
            .len();
        self.load_record(
            Descriptor::new(MediaType::ImageManifest, size, d.clone()),
            Vec::new(),
        )
    }
}
