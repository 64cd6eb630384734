//! Leases: what a running keel protects from `keel gc`, and how a dead keel's leftovers
//! are found (after containerd's leases, docs/garbage-collection.md there).
//!
//! A lease is `<root>/leases/<id>.json`, written before the owner's first write and
//! removed when it is done. It names its owner — pid and start time (field 22 of
//! `/proc/PID/stat`), so a reused pid is not mistaken for the owner — and the resources
//! it protects: blobs (by digest), layer stacks it prepares snapshots from, containers it
//! is creating, and temp paths outside the root's own temp directories. gc treats every
//! live lease's blobs as roots; a lease whose owner is gone is dead, and its resources are
//! reclaimed (`crate::reclaim`). Temp files and snapshot directories carry their owner's
//! tag ([`Owner::tag`]) in their names or an `owner` file, so they need no lease entry.
//!
//! This module only keeps the records; it never removes what they name.
use crate::sys::hostfs;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::{io_err, Result};
use crate::digest::Digest;

/// A process, told apart from a later one with the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: i32,
    /// Clock ticks after boot at which the process started (`/proc/PID/stat` field 22).
    pub start: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        static ME: OnceLock<Owner> = OnceLock::new();
        *ME.get_or_init(|| {
            let pid = std::process::id() as i32;
            Owner {
                pid,
                start: start_time(pid).unwrap_or(0),
            }
        })
    }

    /// `p<pid>s<start>`: the prefix of names this owner gives temp files and directories.
    pub fn tag(&self) -> String {
        format!("p{}s{}", self.pid, self.start)
    }

    /// The owner named at the start of `name` (`p12s345-blob-x` → pid 12, start 345).
    pub fn from_tag(name: &str) -> Option<Owner> {
        let rest = name.strip_prefix('p')?;
        let (pid, rest) = rest.split_once('s')?;
        let start: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let after = &rest[start.len()..];
        if start.is_empty() || !(after.is_empty() || after.starts_with('-')) {
            return None;
        }
        Some(Owner {
            pid: pid.parse().ok()?,
            start: start.parse().ok()?,
        })
    }

    /// Whether the process still runs (and is the same process, not a reused pid).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

use crate::sys::proc::start_time;

/// What a lease file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: String,
    pub owner: Option<Owner>,
    /// Blobs the owner wrote or reads (digests): roots for gc while the owner lives.
    #[serde(default)]
    pub digests: BTreeSet<String>,
    /// Layer stacks (diff ids, bottom first) the owner prepares snapshots from: while any
    /// live lease has one, gc leaves the unpacked-layer cache alone.
    #[serde(default)]
    pub stacks: BTreeSet<Vec<String>>,
    /// Containers the owner is creating or removing: if it dies, they are removed.
    #[serde(default)]
    pub containers: BTreeSet<String>,
    /// Temp paths the owner made outside the root's temp directories (`save -o`).
    #[serde(default)]
    pub temp: BTreeSet<PathBuf>,
}

impl LeaseRecord {
    /// A lease whose owner is gone (or was never recorded) protects nothing.
    pub fn is_live(&self) -> bool {
        self.owner.is_some_and(|o| o.alive())
    }
}

/// What one write of a lease adds: everything a step protects at once (`keel run`
/// protects its container, its image's blobs and its layer stack before it makes the
/// container's record), so the file is written once rather than once per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protection {
    /// Blob digests, as [`Lease::protect_blobs`].
    pub digests: Vec<String>,
    /// A layer stack (diff ids, bottom first), as [`Lease::protect_stack`]; empty: none.
    pub stack: Vec<String>,
    /// A container being created, as [`Lease::protect_container`].
    pub container: Option<String>,
}

impl Protection {
    /// Whether `rec` already holds all of it (nothing to write).
    fn held_by(&self, rec: &LeaseRecord) -> bool {
        self.digests.iter().all(|d| rec.digests.contains(d))
            && (self.stack.is_empty() || rec.stacks.contains(&self.stack))
            && self
                .container
                .as_ref()
                .is_none_or(|c| rec.containers.contains(c))
    }

    /// Adds it to `rec`.
    fn add_to(self, rec: &mut LeaseRecord) {
        rec.digests.extend(self.digests);
        if !self.stack.is_empty() {
            rec.stacks.insert(self.stack);
        }
        rec.containers.extend(self.container);
    }
}

/// A lease held by this process; cloning shares it, and the file is removed when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Lease {
    inner: Arc<Held>,
}

struct Held {
    path: PathBuf,
    record: Mutex<LeaseRecord>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = hostfs::remove_file(&self.path);
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({})", self.inner.path.display())
    }
}

/// `<root>/leases`.
pub fn leases_dir(root: &Path) -> PathBuf {
    root.join("leases")
}

impl Lease {
    /// Writes a new, empty lease for this process under `root`.
    pub fn take(root: &Path) -> Result<Lease> {
        Lease::take_protecting(root, Protection::default())
    }

    /// Writes a new lease for this process under `root` that already holds `first`: one
    /// write where [`Lease::take`] and [`Lease::protect`] would make two. The file exists
    /// before the caller's first write either way, which is all gc needs of it.
    pub fn take_protecting(root: &Path, first: Protection) -> Result<Lease> {
        let dir = leases_dir(root);
        hostfs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let owner = Owner::current();
        let id = format!("{}-{}", owner.tag(), &crate::container::new_id()[..8]);
        let lease = Lease {
            inner: Arc::new(Held {
                path: dir.join(format!("{id}.json")),
                record: Mutex::new(LeaseRecord {
                    id,
                    owner: Some(owner),
                    ..LeaseRecord::default()
                }),
            }),
        };
        lease.update(|r| first.add_to(r))?;
        crate::fault::point("lease.taken");
        Ok(lease)
    }

    pub fn id(&self) -> String {
        self.record().id
    }

    /// A copy of the record as it stands.
    pub fn record(&self) -> LeaseRecord {
        self.inner.record.lock().expect("lease lock").clone()
    }

    /// Changes the record and rewrites the file (a temp file exchanged with it: readers see
    /// the old record or the new one, and the name never goes missing). Not fsynced: after
    /// a crash every owner is dead anyway, and a lease that is empty then is a dead one.
    /// `hostfs::write_replacing` rather than a rename over the file: ext4 flushes a file
    /// renamed over another, ~0.2 ms per write, and a no-op build wrote its lease 5 times.
    fn update(&self, change: impl FnOnce(&mut LeaseRecord)) -> Result<()> {
        let mut rec = self.inner.record.lock().expect("lease lock");
        change(&mut rec);
        let path = &self.inner.path;
        let tmp = path.with_file_name(format!(".{}.tmp", rec.id));
        let bytes = serde_json::to_vec(&*rec).expect("a lease serialises");
        hostfs::write_replacing(path, &tmp, &bytes).map_err(io_err("writing", path))
    }

    /// Adds every protection of `p` with one write of the file (none when it holds them
    /// all already). The same rules as the single-kind calls below apply to each part.
    pub fn protect(&self, p: Protection) -> Result<()> {
        if p.held_by(&self.inner.record.lock().expect("lease lock")) {
            return Ok(());
        }
        self.update(|r| p.add_to(r))
    }

    /// Protects blobs; call before the blob is written or looked up, so gc either sees
    /// the protection or has finished deleting.
    pub fn protect_blobs<'a>(&self, ds: impl IntoIterator<Item = &'a Digest>) -> Result<()> {
        let new: Vec<String> = ds.into_iter().map(|d| d.to_string()).collect();
        {
            let held = self.inner.record.lock().expect("lease lock");
            if new.iter().all(|d| held.digests.contains(d)) {
                return Ok(());
            }
        }
        self.update(|r| r.digests.extend(new))
    }

    /// Protects a layer stack (diff ids, bottom first) a snapshot is prepared from.
    pub fn protect_stack<'a>(&self, diff_ids: impl IntoIterator<Item = &'a Digest>) -> Result<()> {
        let stack: Vec<String> = diff_ids.into_iter().map(|d| d.to_string()).collect();
        if stack.is_empty() || self.record().stacks.contains(&stack) {
            return Ok(());
        }
        self.update(|r| {
            r.stacks.insert(stack);
        })
    }

    /// Names a container this process is creating (or removing): if it dies before
    /// [`Lease::release_container`], gc removes the container.
    pub fn protect_container(&self, id: &str) -> Result<()> {
        self.update(|r| {
            r.containers.insert(id.to_string());
        })
    }

    /// The container is complete (or gone): its record owns it from now on. Its layer
    /// stack is dropped too (the snapshot exists, so gc keeps its layers), which lets gc
    /// prune the layer cache while a detached container's supervisor holds this lease.
    pub fn release_container(&self, id: &str) -> Result<()> {
        self.update(|r| {
            r.containers.remove(id);
            r.stacks.clear();
        })
    }

    /// Names a temp path to delete should this process die before it is done with it.
    pub fn protect_temp(&self, path: &Path) -> Result<()> {
        let p = std::path::absolute(path).map_err(io_err("resolving", path))?;
        self.update(|r| {
            r.temp.insert(p);
        })
    }
}

/// Every lease under `root` with its file. A file that does not parse is reported as a
/// record without an owner (so it counts as dead).
pub fn list(root: &Path) -> Vec<(PathBuf, LeaseRecord)> {
    let Ok(rd) = fs::read_dir(leases_dir(root)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_suffix(".json")
            .filter(|_| !name.starts_with('.'))
        else {
            continue;
        };
        let rec = fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<LeaseRecord>(&b).ok())
            .unwrap_or_else(|| LeaseRecord {
                id: id.to_string(),
                owner: Owner::from_tag(id),
                ..LeaseRecord::default()
            });
        out.push((e.path(), rec));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Whether any lease under `root` is dead (cheap: names and /proc only) — what start-up
/// checks before deciding to reclaim.
pub fn any_dead(root: &Path) -> bool {
    let Ok(rd) = fs::read_dir(leases_dir(root)) else {
        return false;
    };
    rd.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let id = name.trim_start_matches('.');
        Owner::from_tag(id).is_none_or(|o| !o.alive())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_tags_round_trip_and_reject_lookalikes() {
        let o = Owner {
            pid: 12,
            start: 345,
        };
        assert_eq!(Owner::from_tag(&o.tag()), Some(o));
        assert_eq!(Owner::from_tag("p12s345-blob-x1"), Some(o));
        for bad in [
            "", "blob-1", "p12", "ps1", "p12s", "p12s3x", "q12s3", "pxs3",
        ] {
            assert_eq!(Owner::from_tag(bad), None, "{bad}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = Owner::current();
        assert!(me.alive());
        let other = Owner {
            start: me.start + 1,
            ..me
        };
        assert!(!other.alive());
    }

    #[test]
    fn a_lease_file_lives_as_long_as_its_last_clone() {
        let dir = tempfile::tempdir().unwrap();
        let l = Lease::take(dir.path()).unwrap();
        let d: Digest = crate::digest::of_bytes(b"x");
        l.protect_blobs([&d]).unwrap();
        let listed = list(dir.path());
        assert_eq!(listed.len(), 1);
        assert!(listed[0].1.is_live());
        assert!(listed[0].1.digests.contains(&d.to_string()));
        let l2 = l.clone();
        drop(l);
        assert_eq!(list(dir.path()).len(), 1);
        drop(l2);
        assert!(list(dir.path()).is_empty());
        assert!(!any_dead(dir.path()));
    }

    /// A reader never finds the lease missing or half written while it is rewritten (the
    /// temp file is exchanged with it, not renamed over it), every record it reads holds
    /// what was protected before, and no temp file is left behind.
    #[test]
    fn a_rewritten_lease_is_always_there_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let first = crate::digest::of_bytes(b"first");
        let l = Lease::take(dir.path()).unwrap();
        l.protect_blobs([&first]).unwrap();
        let path = list(dir.path())[0].0.clone();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let bytes = fs::read(&path).expect("the lease is never missing");
                    let rec: LeaseRecord =
                        serde_json::from_slice(&bytes).expect("the lease is never partial");
                    assert!(rec.digests.contains(&first.to_string()), "{rec:?}");
                    reads += 1;
                }
                reads
            });
            for i in 0..300u32 {
                l.protect_blobs([&crate::digest::of_bytes(&i.to_le_bytes())])
                    .unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(reader.join().unwrap() > 0);
        });
        assert_eq!(list(dir.path())[0].1.digests.len(), 301);
        let names: Vec<_> = fs::read_dir(leases_dir(dir.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_protection_is_taken_with_the_lease_and_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = Protection {
            digests: vec!["sha256:aa".into()],
            stack: vec!["sha256:bb".into()],
            container: Some("c1".into()),
        };
        let l = Lease::take_protecting(dir.path(), p.clone()).unwrap();
        let rec = &list(dir.path())[0].1;
        assert!(p.held_by(rec), "{rec:?}");
        assert_eq!(rec.stacks.len(), 1);
        // Held already: no write (the file's inode would change with the rename).
        let ino = |d: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(d).unwrap());
        let file = list(dir.path())[0].0.clone();
        let before = ino(&file);
        l.protect(p).unwrap();
        assert_eq!(ino(&file), before);
        // An empty stack protects none; a new container is one more write.
        let more = Protection {
            container: Some("c2".into()),
            ..Protection::default()
        };
        l.protect(more.clone()).unwrap();
        let rec = &list(dir.path())[0].1;
        assert!(more.held_by(rec) && rec.stacks.len() == 1 && rec.containers.len() == 2);
    }
}
