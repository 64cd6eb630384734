//! `index.json`: the list of tagged images. Reads are lock-free (the file is only ever
//! replaced by rename); updates take `locks/index.lock`, re-read, modify, and replace.
//!
//! A name points at a manifest or, for a multi-platform image, at an OCI image index
//! (one manifest per platform): such a name lists as one record per platform, resolves
//! to the host's platform by default and to any of its platforms with
//! [`Store::resolve_platform`].
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
    /// The multi-platform index the names point at, when this is one of its manifests.
    pub index: Option<Descriptor>,
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
    /// The image's platform, from its config (`linux/arm64`, `linux/arm/v7`).
    pub fn platform(&self) -> crate::platform::Platform {
        crate::platform::normalize(&crate::platform::Platform {
            os: self.config.os().to_string(),
            arch: self.config.architecture().to_string(),
            variant: self.config.variant().clone().filter(|v| !v.is_empty()),
        })
    }
    /// What a name for this image points at: its index, or the manifest itself.
    pub fn target(&self) -> &Descriptor {
        self.index.as_ref().unwrap_or(&self.manifest_descriptor)
    }
}

fn is_index(d: &Descriptor) -> bool {
    matches!(d.media_type(), MediaType::ImageIndex)
        || d.media_type().to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
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
        // gc sweeps only under the exclusive side of its lock, reading index.json once it
        // has it: while this holds the shared side, what is checked here stays until the
        // name is written, and from then on the name keeps it. Without it, `keel tag`
        // racing `keel rmi` + `keel gc` wrote a name whose blobs were gone.
        crate::fault::delay("store.tag-resolved");
        let _no_sweep = super::LockGuard::take(&self.locks_dir().join("gc.lock"), false)?;
        self.check_complete(&full, manifest)?;
        self.update_index(|index| {
            let mut list = index.manifests().clone();
            list.retain(|d| ref_name(d) != Some(full.as_str()));
            list.push(entry);
            list.sort_by(|a, b| ref_name(a).cmp(&ref_name(b)));
            index.set_manifests(list);
            Ok(())
        })
    }

    /// Every blob of the image `manifest` describes is in the store (what a new name for
    /// it would point at).
    fn check_complete(&self, name: &str, manifest: &Descriptor) -> Result<()> {
        let blobs = self.layout().join("blobs/sha256");
        let reached = self.reachable_from(vec![manifest.clone()]);
        match reached
            .iter()
            .find(|d| !blobs.join(d.trim_start_matches("sha256:")).is_file())
        {
            Some(d) => Err(StoreError::Vanished {
                name: name.to_string(),
                digest: d.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Stores an OCI image index over `images` (one entry per platform, in the order given,
    /// each entry's platform taken from its config) and points `names` at it.
    pub fn commit_index(&self, images: &[ImageRecord], names: &[ImageRef]) -> Result<Descriptor> {
        let entries: Vec<Descriptor> = images
            .iter()
            .map(|r| {
                let mut d = Descriptor::new(
                    MediaType::ImageManifest,
                    r.manifest_descriptor.size(),
                    r.manifest_digest().clone(),
                );
                d.set_platform(Some(crate::platform::to_oci(&r.platform())));
                d
            })
            .collect();
        let mut index = empty_index();
        index.set_manifests(entries);
        let (digest, size) = self.put_json(&index)?;
        let desc = Descriptor::new(MediaType::ImageIndex, size, digest);
        for n in names {
            self.tag(n, &desc)?;
        }
        Ok(desc)
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
            index: None,
        })
    }

    /// The records of every platform manifest a (multi-platform) index lists, in its
    /// order; entries without a platform (attestations, nested indexes) are left out.
    pub fn load_index_records(
        &self,
        index: &Descriptor,
        names: Vec<String>,
    ) -> Result<Vec<ImageRecord>> {
        let doc: ImageIndex = self.read_json("index", index.digest())?;
        let mut out = Vec::new();
        for m in doc.manifests() {
            let unknown = m
                .platform()
                .as_ref()
                .is_none_or(|p| p.os().to_string() == "unknown");
            if unknown || is_index(m) {
                continue;
            }
            let mut rec = self.load_record(m.clone(), names.clone())?;
            rec.index = Some(index.clone());
            out.push(rec);
        }
        Ok(out)
    }

    /// Records for what one index.json entry points at (a manifest, or an index's).
    fn records_of(&self, d: Descriptor, names: Vec<String>) -> Result<Vec<ImageRecord>> {
        if is_index(&d) {
            // The index itself, without index.json's name annotation.
            let bare = Descriptor::new(d.media_type().clone(), d.size(), d.digest().clone());
            self.load_index_records(&bare, names)
        } else {
            Ok(vec![self.load_record(d, names)?])
        }
    }

    /// Every tagged image, one record per manifest, names grouped.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        self.images_where(|_| true)
    }

    /// The tagged images whose names (all of a manifest's names, sorted) `keep` accepts:
    /// only their manifests and configs are read, so looking up one name costs the same
    /// in a store of two images as in one of hundreds.
    fn images_where(&self, keep: impl Fn(&[String]) -> bool) -> Result<Vec<ImageRecord>> {
        let index = self.read_index()?;
        let mut by_digest: Vec<(Descriptor, Vec<String>)> = Vec::new();
        for d in index.manifests() {
            let name = ref_name(d).map(str::to_string);
            match by_digest.iter_mut().find(|(x, _)| x.digest() == d.digest()) {
                Some((_, names)) => names.extend(name),
                None => by_digest.push((d.clone(), name.into_iter().collect())),
            }
        }
        let mut out = Vec::new();
        for (d, mut names) in by_digest {
            names.sort();
            if keep(&names) {
                out.extend(self.records_of(d, names)?);
            }
        }
        Ok(out)
    }

    /// [`Store::resolve`], then, for `Some(platform)`, that platform's manifest of a
    /// multi-platform image (or the image itself if it is that platform).
    pub fn resolve_platform(
        &self,
        input: &str,
        want: Option<&crate::platform::Platform>,
    ) -> Result<ImageRecord> {
        let rec = self.resolve(input)?;
        let Some(want) = want else { return Ok(rec) };
        let fits = |r: &ImageRecord| {
            let p = r.platform();
            crate::platform::matches(want, &p.os, &p.arch, p.variant.as_deref())
        };
        let siblings = match &rec.index {
            Some(i) => self.load_index_records(i, rec.names.clone())?,
            None => vec![rec],
        };
        if let Some(r) = siblings.iter().find(|r| fits(r)) {
            return Ok(r.clone());
        }
        let have: Vec<String> = siblings.iter().map(|r| r.platform().to_string()).collect();
        Err(StoreError::NoPlatform {
            image: input.to_string(),
            wanted: crate::platform::normalize(want).to_string(),
            have: have.join(", "),
        })
    }

    /// Among records reached the same way, the host's platform first.
    fn prefer_host(hits: Vec<&ImageRecord>) -> Option<ImageRecord> {
        let host = crate::platform::host();
        hits.iter()
            .find(|r| r.platform().arch == host.arch)
            .or(hits.first())
            .map(|r| (*r).clone())
    }

    /// Finds an image by name (`app`, `app:tag`), by `name@sha256:…`, by manifest digest,
    /// or by a unique prefix of its id (config digest) as `keel images` prints it.
    pub fn resolve(&self, input: &str) -> Result<ImageRecord> {
        let hexish = input.strip_prefix("sha256:").unwrap_or(input);
        let looks_like_id = hexish.len() >= 4
            && hexish.len() <= 64
            && hexish
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        // A plain name (what `run` and `FROM` mostly get): only its images are read.
        if let Some(want) = (!looks_like_id)
            .then(|| ImageRef::parse(input).ok())
            .flatten()
            .filter(|r| r.digest.is_none())
            .map(|r| r.tagged_name())
        {
            let named = self.images_where(|names| names.contains(&want))?;
            return Self::prefer_host(named.iter().collect())
                .ok_or(StoreError::NoSuchImage(input.to_string()));
        }
        let images = self.images()?;
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
            let by_index = images
                .iter()
                .filter(|i| i.index.as_ref().is_some_and(|x| x.digest() == d));
            if let Some(i) = Self::prefer_host(by_index.collect()) {
                return Ok(i);
            }
            return if self.has_blob(d) {
                self.manifest_by_digest(d)
            } else {
                Err(StoreError::NoSuchImage(input.to_string()))
            };
        }
        let want = r.tagged_name();
        Self::prefer_host(images.iter().filter(|i| i.names.contains(&want)).collect())
            .ok_or(StoreError::NoSuchImage(input.to_string()))
    }

    fn manifest_by_digest(&self, d: &Digest) -> Result<ImageRecord> {
        let size = fs::metadata(self.blob_path(d))
            .map_err(io_err("reading", &self.blob_path(d)))?
            .len();
        // An untagged multi-platform index: its host manifest (or its first).
        let peek: serde_json::Value = self.read_json("manifest", d)?;
        if peek.get("manifests").is_some() {
            let index = Descriptor::new(MediaType::ImageIndex, size, d.clone());
            let recs = self.load_index_records(&index, Vec::new())?;
            return Self::prefer_host(recs.iter().collect())
                .ok_or(StoreError::NoSuchImage(d.to_string()));
        }
        self.load_record(
            Descriptor::new(MediaType::ImageManifest, size, d.clone()),
            Vec::new(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{commit_image, ImageConfig};
    use crate::platform::Platform;

    /// An empty image for `arch` (no layers: only its config differs).
    fn image(store: &Store, arch: &str) -> ImageRecord {
        let mut c = ImageConfig::scratch();
        c.architecture = arch.into();
        commit_image(store, &c, &[], &[]).unwrap()
    }

    #[test]
    fn a_name_is_resolved_from_its_own_images_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap().without_fsync();
        let (one, two) = (image(&store, "amd64"), image(&store, "arm64"));
        for (rec, name) in [(&one, "one"), (&one, "alias:v1"), (&two, "two")] {
            store
                .tag(&ImageRef::parse(name).unwrap(), rec.target())
                .unwrap();
        }
        // By name: the record `images` lists for it, every name of its manifest included.
        let listed = store.images().unwrap();
        let by_name = store.resolve("alias:v1").unwrap();
        let same = listed
            .iter()
            .find(|r| r.manifest_digest() == one.manifest_digest())
            .unwrap();
        assert_eq!(by_name.names, ["alias:v1", "one:latest"]);
        assert_eq!(by_name.names, same.names);
        assert_eq!(by_name.config, same.config);
        // Another image's manifest gone: listing fails, looking up `one` reads only its own.
        crate::sys::hostfs::remove_file(store.blob_path(two.manifest_digest())).unwrap();
        assert!(store.images().is_err());
        assert_eq!(
            store.resolve("one").unwrap().manifest_digest(),
            one.manifest_digest()
        );
        assert!(store.resolve("two").is_err());
        assert!(matches!(
            store.resolve("three"),
            Err(StoreError::NoSuchImage(_))
        ));
    }

    #[test]
    fn a_multi_platform_name_resolves_per_platform() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap().without_fsync();
        let host = crate::platform::host().arch;
        let other = if host == "arm64" { "amd64" } else { "arm64" };
        let (h, o) = (image(&store, &host), image(&store, other));
        let name = ImageRef::parse("multi").unwrap();
        let index = store
            .commit_index(&[o.clone(), h.clone()], &[name])
            .unwrap();
        // Listed once per platform, each reached through the index.
        let all = store.images().unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|r| r.index.as_ref() == Some(&index)));
        assert!(all.iter().all(|r| r.names == ["multi:latest"]));
        // By name and by the index's digest: the host's; by platform: that one.
        assert_eq!(
            store.resolve("multi").unwrap().manifest_digest(),
            h.manifest_digest()
        );
        let by_digest = store.resolve(&format!("multi@{}", index.digest())).unwrap();
        assert_eq!(by_digest.manifest_digest(), h.manifest_digest());
        let want: Platform = format!("linux/{other}").parse().unwrap();
        let got = store.resolve_platform("multi", Some(&want)).unwrap();
        assert_eq!(got.manifest_digest(), o.manifest_digest());
        assert_eq!(got.target(), &index);
        let err = store
            .resolve_platform("multi", Some(&"linux/s390x".parse().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no image for platform linux/s390x"), "{err}");
        assert!(err.contains(&format!("linux/{host}")), "{err}");
        // The index lists the platforms in the order given.
        let doc: ImageIndex = store.read_json("index", index.digest()).unwrap();
        let archs: Vec<String> = doc
            .manifests()
            .iter()
            .map(|m| m.platform().as_ref().unwrap().architecture().to_string())
            .collect();
        assert_eq!(archs, [other.to_string(), host]);
    }
}
