//! `gc` over the image store: marks every blob reachable from the index, from containers,
//! from the caller's extra roots (the build cache) and from every live lease, then sweeps
//! the rest and the temp files of writers that are gone.
//!
//! gc holds `locks/gc.lock` exclusively only while it marks and sweeps; writers take the
//! shared side just long enough to record a blob in their lease and rename it into place
//! ([`Store::protect`]), so a build never waits for a gc and a gc never takes a blob a
//! live writer has written or is reading. A dead keel's leases are not roots: what they
//! protected is collectable (`crate::reclaim` removes the rest of what it left).
use crate::sys::hostfs;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

use super::check::is_index;
use super::lease::{self, Owner};
use super::{io_err, Result, Store};
use crate::digest::Digest;

/// What `gc` removed.
#[derive(Debug, Default)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub temp_files_removed: usize,
    pub bytes_freed: u64,
    /// Leases of running keels whose blobs were kept.
    pub live_leases: usize,
    /// What could not be removed (its path, why, the fix): the rest was swept all the
    /// same. The caller shows them.
    pub warnings: Vec<String>,
}

impl GcReport {
    fn warn(&mut self, e: super::StoreError) {
        self.warnings.push(format!(
            "{e}; free it (clear an immutable attribute, fix its permissions) or remove it by hand, then run `keel gc` again"
        ));
    }

    /// Removes the temp file or directory `e` and counts it (its size is the entry's
    /// own, as listed); what resists becomes a warning.
    fn remove_temp(&mut self, e: &fs::DirEntry) {
        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
        match remove_any(&e.path()) {
            Ok(()) => {
                self.bytes_freed += size;
                self.temp_files_removed += 1;
            }
            Err(err) => self.warn(err),
        }
    }
}

impl Store {
    /// Digests reachable from the index and from containers.
    fn reachable(&self) -> Result<BTreeSet<String>> {
        let mut todo: Vec<Descriptor> = self.read_index()?.manifests().clone();
        for (_, d) in self.container_images() {
            todo.push(Descriptor::new(MediaType::ImageManifest, 0, d));
        }
        Ok(self.reachable_from(todo))
    }

    /// Digests reachable from `todo`: the manifests and indexes themselves, nested
    /// manifests, configs and layers (what cannot be read leads nowhere further).
    pub(super) fn reachable_from(&self, mut todo: Vec<Descriptor>) -> BTreeSet<String> {
        let mut live = BTreeSet::new();
        while let Some(d) = todo.pop() {
            if !live.insert(d.digest().to_string()) {
                continue;
            }
            if is_index(d.media_type()) {
                if let Ok(idx) = self.read_json::<ImageIndex>("index", d.digest()) {
                    todo.extend(idx.manifests().iter().cloned());
                }
            } else if let Ok(m) = self.read_json::<ImageManifest>("manifest", d.digest()) {
                live.insert(m.config().digest().to_string());
                live.extend(m.layers().iter().map(|l| l.digest().to_string()));
            }
        }
        live
    }

    /// Removes blobs reachable neither from the index, nor from containers, nor from
    /// `extra_roots` (the build cache's layers), nor from a live lease; and temp files
    /// whose owner is gone.
    pub fn gc(&self, extra_roots: &[Digest]) -> Result<GcReport> {
        let _span = tracing::info_span!("gc", extra_roots = extra_roots.len()).entered();
        let _lock = self.gc_guard()?;
        let mut report = GcReport::default();
        // Leases are read under the lock: a writer protects a blob before it is looked up
        // or renamed into place, so every blob in flight is in one of these. They are read
        // before the index: a writer tags, then drops its lease, so a blob is in the
        // leases read here or in the index read after.
        let mut live = BTreeSet::new();
        for (_, rec) in lease::list(self.root()) {
            if rec.is_live() {
                report.live_leases += 1;
                live.extend(rec.digests);
            }
        }
        live.extend(self.reachable()?);
        live.extend(extra_roots.iter().map(|d| d.to_string()));
        let blobs = self.layout().join("blobs/sha256");
        for e in fs::read_dir(&blobs)
            .map_err(io_err("listing", &blobs))?
            .flatten()
        {
            let name = format!("sha256:{}", e.file_name().to_string_lossy());
            if !live.contains(&name) {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                match hostfs::remove_file(e.path()) {
                    // Gone since the listing (only gc removes blobs, but a person may): done.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => {
                        report.warn(io_err("removing", &e.path())(err));
                        continue;
                    }
                    Ok(()) => {}
                }
                report.bytes_freed += size;
                report.blobs_removed += 1;
                crate::fault::point("gc.sweeping");
            }
        }
        self.sweep_temp(report.live_leases > 0, &mut report)?;
        Ok(report)
    }

    /// Removes temp files of writers that are gone: `tmp/<owner tag>-…` whose owner is
    /// dead, untagged entries unless a live keel might own them, and the index's `.tmp-`
    /// files (under the index lock, which every index write holds while its file exists).
    fn sweep_temp(&self, someone_lives: bool, report: &mut GcReport) -> Result<()> {
        let tmp = self.tmp_dir();
        for e in fs::read_dir(&tmp)
            .map_err(io_err("listing", &tmp))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let stray = match Owner::from_tag(&name) {
                Some(owner) => !owner.alive(),
                // Made by code that does not tag its temp files: only when no keel runs.
                None => !someone_lives,
            };
            if stray {
                report.remove_temp(&e);
            }
        }
        let _index = self.index_guard()?;
        let layout = self.layout();
        for e in fs::read_dir(&layout)
            .map_err(io_err("listing", &layout))?
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                report.remove_temp(&e);
            }
        }
        Ok(())
    }
}

/// Removes a temp file or directory. A directory may hold mounts (a killed
/// `--check-reproducible` build's scratch root): those are detached first, so deleting
/// never reaches through a bind mount into what it shows.
fn remove_any(p: &Path) -> Result<()> {
    let r = if p.is_dir() && !p.is_symlink() {
        crate::storage::reclaim::remove_temp(p).map_err(|e| std::io::Error::other(e.to_string()))
    } else {
        hostfs::remove_file(p)
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r.map_err(io_err("removing", p)),
    }
}
