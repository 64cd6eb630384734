//! Remembered content digests of context files, keyed by what `lstat` says about them.
//!
//! A digest is reused only when device, inode, size, mtime and ctime (nanoseconds) all
//! match and the file was not modified within the timestamp granularity of the moment
//! the index was written ("racily clean" files are re-hashed, as git does), so a changed
//! file is never a stale hit even when its size and mtime were restored.
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{io_err, ContextError};
use crate::digest::{self, Digest};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key: StatKey,
    digest: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    /// When the index was last written (ns since the epoch).
    written_ns: i128,
    files: BTreeMap<PathBuf, Entry>,
}

/// Digest cache for one context directory, persisted under the keel root.
pub struct StatIndex {
    file: Option<PathBuf>,
    disk: OnDisk,
    fresh: BTreeMap<PathBuf, Entry>,
    /// How many files had to be read (for tests and `--explain`).
    pub hashed: usize,
}

fn stat_key(m: &fs::Metadata) -> StatKey {
    StatKey {
        dev: m.dev(),
        ino: m.ino(),
        size: m.len(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Timestamps closer than this to the index write time are not trusted.
const RACY_NS: i128 = 2_000_000_000;

impl StatIndex {
    /// An index with no persistence (every file is hashed once per process).
    pub fn in_memory() -> StatIndex {
        StatIndex {
            file: None,
            disk: OnDisk::default(),
            fresh: BTreeMap::new(),
            hashed: 0,
        }
    }

    /// Loads the index for `context_root` from `dir` (a missing or unreadable index is empty).
    pub fn load(dir: &Path, context_root: &Path) -> StatIndex {
        let name = digest::of_bytes(context_root.as_os_str().as_encoded_bytes());
        let file = dir.join(format!("{}.json", name.digest()));
        let disk = fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        StatIndex {
            file: Some(file),
            disk,
            fresh: BTreeMap::new(),
            hashed: 0,
        }
    }

    /// The sha256 of the regular file at `path`, reusing a remembered digest when safe.
    pub fn digest(&mut self, path: &Path) -> Result<Digest, ContextError> {
        let m = fs::symlink_metadata(path).map_err(io_err(path))?;
        let key = stat_key(&m);
        let trusted = |e: &Entry| {
            e.key == key
                && key.mtime_ns < self.disk.written_ns - RACY_NS
                && key.ctime_ns < self.disk.written_ns - RACY_NS
        };
        if let Some(e) = self
            .fresh
            .get(path)
            .or_else(|| self.disk.files.get(path).filter(|e| trusted(e)))
        {
            if let Some(d) = digest::parse(&e.digest) {
                let e = e.clone();
                self.fresh.insert(path.to_path_buf(), e);
                return Ok(d);
            }
        }
        let f = fs::File::open(path).map_err(io_err(path))?;
        let (d, _) = digest::of_reader(f).map_err(io_err(path))?;
        self.hashed += 1;
        // Re-stat: a file changing while it was read must not be remembered.
        let after = fs::symlink_metadata(path).map(|m| stat_key(&m)).ok();
        if after.as_ref() == Some(&key) {
            self.fresh.insert(
                path.to_path_buf(),
                Entry {
                    key,
                    digest: d.to_string(),
                },
            );
        }
        Ok(d)
    }

    /// Writes the digests used in this run (atomically; best effort: a failure only costs
    /// re-hashing next time).
    pub fn save(&mut self) {
        let Some(file) = &self.file else { return };
        let mut disk = OnDisk {
            written_ns: now_ns(),
            files: std::mem::take(&mut self.fresh),
        };
        // Keep remembered entries of files this run did not look at.
        for (k, v) in std::mem::take(&mut self.disk.files) {
            disk.files.entry(k).or_insert(v);
        }
        let Some(dir) = file.parent() else { return };
        let _ = fs::create_dir_all(dir);
        if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) {
            let buffered = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            if serde_json::to_writer(buffered, &disk).is_ok() {
                let _ = tmp.persist(file);
            }
        }
        self.fresh = disk.files.clone();
        self.disk = disk;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_rehashed_even_with_size_and_mtime_restored() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a");
        fs::write(&f, "aaaa").unwrap();
        let old = filetime_of(&f);
        let idx_dir = d.path().join("idx");
        // Make the file look old, so the index trusts it.
        set_mtime(&f, old - 100);
        let mut idx = StatIndex::load(&idx_dir, d.path());
        let first = idx.digest(&f).unwrap();
        idx.save();
        let mut idx = StatIndex::load(&idx_dir, d.path());
        assert_eq!(idx.digest(&f).unwrap(), first);
        // ctime is also recent for every file touched within 2s, so nothing is trusted
        // then; the first digest above was computed, not remembered.
        fs::write(&f, "bbbb").unwrap();
        set_mtime(&f, old - 100);
        let mut idx = StatIndex::load(&idx_dir, d.path());
        assert_ne!(
            idx.digest(&f).unwrap(),
            first,
            "same size and mtime, but new content must give a new digest"
        );
    }

    fn filetime_of(p: &Path) -> i64 {
        fs::metadata(p).unwrap().mtime()
    }

    fn set_mtime(p: &Path, secs: i64) {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}
