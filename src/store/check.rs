//! `fsck`: re-hashes every blob and checks every reference, and that every layer is what
//! its image's diff_id says (by digest for uncompressed layers; `full` decompresses the
//! others). gc lives in `gc.rs`.
use std::fs;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

use super::{io_err, Result, Store};
use crate::digest::{self, Digest};

/// What `fsck` found; `problems` empty means clean.
#[derive(Debug, Default)]
pub struct FsckReport {
    pub blobs_checked: usize,
    pub images_checked: usize,
    pub problems: Vec<String>,
    pub stray_temp_files: usize,
}

pub(super) fn is_index(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageIndex)
        || mt.to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

impl Store {
    /// Manifest digests that containers still use (`<root>/containers/<id>/image`).
    pub fn container_images(&self) -> Vec<(String, Digest)> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(self.root().join("containers")) else {
            return out;
        };
        for e in entries.flatten() {
            if let Some(d) = fs::read_to_string(e.path().join("image"))
                .ok()
                .and_then(|s| digest::parse(s.trim()))
            {
                out.push((e.file_name().to_string_lossy().into_owned(), d));
            }
        }
        out
    }

    /// Re-hashes every blob and checks every reference from the index; `full` also
    /// decompresses every compressed layer to check its diff_id.
    pub fn fsck(&self, full: bool) -> Result<FsckReport> {
        let mut r = FsckReport::default();
        self.check_blobs(&mut r)?;
        let index = match self.read_index() {
            Ok(i) => i,
            Err(e) => {
                r.problems.push(e.to_string());
                return Ok(r);
            }
        };
        let mut todo: Vec<(String, Descriptor)> = index
            .manifests()
            .iter()
            .map(|d| (entry_label(d), d.clone()))
            .collect();
        for (id, d) in self.container_images() {
            todo.push((
                format!("container {id}"),
                Descriptor::new(MediaType::ImageManifest, 0, d),
            ));
        }
        while let Some((label, d)) = todo.pop() {
            if !self.check_descriptor(&label, &d, &mut r.problems) {
                continue;
            }
            if is_index(d.media_type()) {
                match self.read_json::<ImageIndex>("index", d.digest()) {
                    Ok(idx) => {
                        todo.extend(idx.manifests().iter().map(|m| (label.clone(), m.clone())))
                    }
                    Err(e) => r.problems.push(format!("{label}: {e}")),
                }
                continue;
            }
            r.images_checked += 1;
            self.check_image(&label, &d, full, &mut r.problems);
        }
        r.stray_temp_files = fs::read_dir(self.tmp_dir()).map(|d| d.count()).unwrap_or(0);
        Ok(r)
    }

    /// Hashes every file in `blobs/sha256` and compares it with its name.
    fn check_blobs(&self, r: &mut FsckReport) -> Result<()> {
        let blobs = self.layout().join("blobs/sha256");
        let mut names: Vec<_> = fs::read_dir(&blobs)
            .map_err(io_err("listing", &blobs))?
            .flatten()
            .collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(want) = digest::parse(&format!("sha256:{name}")) else {
                r.problems
                    .push(format!("stray file in blobs/sha256: {name} (not a digest)"));
                continue;
            };
            match fs::File::open(e.path()).and_then(digest::of_reader) {
                Ok((actual, _)) if actual == want => {}
                Ok((actual, _)) => r
                    .problems
                    .push(format!("corrupt blob {want}: content hashes to {actual}")),
                Err(err) => r.problems.push(format!("unreadable blob {want}: {err}")),
            }
            r.blobs_checked += 1;
        }
        Ok(())
    }

    /// Checks the image manifest `d` (present and sized as described): its config, the
    /// config's diff_ids against the layers, and each layer.
    fn check_image(&self, label: &str, d: &Descriptor, full: bool, problems: &mut Vec<String>) {
        let m = match self.read_json::<ImageManifest>("manifest", d.digest()) {
            Ok(m) => m,
            Err(e) => return problems.push(format!("{label}: {e}")),
        };
        let mut diff_ids = Vec::new();
        if self.check_descriptor(&format!("{label} config"), m.config(), problems) {
            match self
                .read_json::<oci_spec::image::ImageConfiguration>("config", m.config().digest())
            {
                Ok(c) if c.rootfs().diff_ids().len() != m.layers().len() => problems.push(format!(
                    "{label}: config lists {} diff_ids but the manifest has {} layers",
                    c.rootfs().diff_ids().len(),
                    m.layers().len()
                )),
                Ok(c) => diff_ids = c.rootfs().diff_ids().clone(),
                Err(e) => problems.push(format!("{label}: {e}")),
            }
        }
        for (i, l) in m.layers().iter().enumerate() {
            let label = format!("{label} layer {i}");
            if self.check_descriptor(&label, l, problems) {
                if let Some(d) = diff_ids.get(i) {
                    self.check_diff_id(&label, l, d, full, problems);
                }
            }
        }
    }

    /// Checks a layer against its config's diff_id: by digest when it is stored
    /// uncompressed, by decompressing it when `full`.
    fn check_diff_id(
        &self,
        label: &str,
        layer: &Descriptor,
        diff_id: &str,
        full: bool,
        problems: &mut Vec<String>,
    ) {
        let Some(want) = digest::parse(diff_id) else {
            problems.push(format!(
                "{label}: diff_id {diff_id:?} is not a sha256 digest"
            ));
            return;
        };
        if !full && !super::is_uncompressed(layer.media_type()) {
            return;
        }
        if let Err(e) = self.verify_diff_id(layer, &want) {
            problems.push(format!("{label}: {e}"));
        }
    }

    /// Checks that a descriptor's blob exists with the recorded size; reports otherwise.
    fn check_descriptor(&self, label: &str, d: &Descriptor, problems: &mut Vec<String>) -> bool {
        match fs::metadata(self.blob_path(d.digest())) {
            Err(_) => {
                problems.push(format!(
                    "{label}: dangling reference to missing blob {}",
                    d.digest()
                ));
                false
            }
            Ok(m) if d.size() != 0 && m.len() != d.size() => {
                problems.push(format!(
                    "{label}: blob {} is {} bytes but the reference says {}",
                    d.digest(),
                    m.len(),
                    d.size()
                ));
                false
            }
            Ok(_) => true,
        }
    }
}

fn entry_label(d: &Descriptor) -> String {
    match d
        .annotations()
        .as_ref()
        .and_then(|a| a.get(super::REF_NAME))
    {
        Some(n) => format!("image {n}"),
        None => format!("image {}", d.digest()),
    }
}
