//! What a dead keel left under `<root>/storage`, and its removal: snapshots whose owner
//! is gone and that no container keeps, half-made snapshot directories, unpack and probe
//! temp directories, and mounts under the root that belong to none of what is kept.
//!
//! Every snapshot directory holds an `owner` file with its maker's tag (pid and start
//! time, `store::lease::Owner`), and temp directories start with that tag, so deciding
//! needs no lease file. This module never looks at containers: the caller says which
//! snapshot ids a container still keeps.
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{teardown, Result, StorageError};
use crate::store::lease::Owner;

/// The file in a snapshot directory naming the process that made it.
pub const OWNER_FILE: &str = "owner";

/// Temp entries without an owner tag older than this are leftovers (older keels).
const UNTAGGED_STALE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A snapshot directory to reclaim: its id and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub id: String,
    pub dir: PathBuf,
}

/// Whether a directory's recorded owner is alive; a missing or unreadable owner file
/// (older keels, a prepare killed before it wrote one) counts as gone.
fn owner_alive(dir: &Path) -> bool {
    fs::read_to_string(dir.join(OWNER_FILE))
        .ok()
        .and_then(|t| Owner::from_tag(t.trim()))
        .is_some_and(|o| o.alive())
}

/// The names in `<root>/storage/snapshots` (snapshots and staging directories).
pub fn snapshot_names(root: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(root.join("storage/snapshots")) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Which of `names` (from [`snapshot_names`]) nobody keeps: staging directories of dead
/// owners, and snapshots that no container keeps (`kept` says which ids a container
/// record names) whose owner is gone. List the names before reading the container
/// records: a container's record is made before its snapshot.
pub fn stale_snapshots(root: &Path, names: Vec<String>, kept: &dyn Fn(&str) -> bool) -> Vec<Stale> {
    let dir = root.join("storage/snapshots");
    let mut out = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let stale = match (
            name.strip_prefix(".new-"),
            name.strip_prefix(super::REMOVING),
        ) {
            (Some(rest), _) => Owner::from_tag(rest).is_none_or(|o| !o.alive()),
            // Being removed by a child process unless its lock is free.
            (_, Some(_)) => super::removal_abandoned(&path),
            _ => !kept(&name) && !owner_alive(&path),
        };
        if stale {
            // `.new-<owner tag>-<id>`: the tag has no '-'.
            let id = match name.strip_prefix(".new-").and_then(|r| r.split_once('-')) {
                Some((_, id)) => id.to_string(),
                None => name
                    .strip_prefix(super::REMOVING)
                    .map_or(name.clone(), str::to_string),
            };
            out.push(Stale { id, dir: path });
        }
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    out
}

/// Entries of `<root>/storage/tmp` whose owner is gone (untagged ones once a day old).
pub fn stale_temp(root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(root.join("storage/tmp")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            match Owner::from_tag(&name) {
                Some(o) => !o.alive(),
                None => e
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > UNTAGGED_STALE),
            }
        })
        .map(|e| e.path())
        .collect()
}

/// Unmounts everything at or below `dir`, then deletes it (see [`teardown`]). `Ok(false)`
/// when it was gone already: another keel removing it first is as good as removing it.
pub fn remove(dir: &Path) -> Result<bool> {
    let existed = fs::symlink_metadata(dir).is_ok();
    match teardown(dir) {
        Err(StorageError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(false)
        }
        r => r.map(|()| existed),
    }
}

/// Mount points at or below `root` that are not at or below any of the directories
/// `keep` lists (deepest first), from `/proc/self/mountinfo`. The mount table is read
/// before `keep` runs: a keel that makes a directory and then mounts in it is either
/// listed by `keep` or mounted after the table was read, never taken for a leftover.
pub fn stray_mounts(root: &Path, keep: impl FnOnce() -> Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    let Ok(root) = fs::canonicalize(root) else {
        return Ok(Vec::new());
    };
    let points = crate::sys::mount::mount_points()?;
    let keep: Vec<PathBuf> = keep()
        .iter()
        .filter_map(|k| fs::canonicalize(k).ok())
        .collect();
    Ok(stray_of(&points, &root, &keep))
}

/// Pure part of [`stray_mounts`].
fn stray_of(points: &[PathBuf], root: &Path, keep: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = points
        .iter()
        .filter(|p| p.starts_with(root) && !keep.iter().any(|k| p.starts_with(k)))
        .cloned()
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Detaches `points` (deepest first); returns how many went, and the points that would
/// not go with why (the others are detached all the same).
pub fn unmount_all(points: &[PathBuf]) -> (usize, Vec<(PathBuf, StorageError)>) {
    let mut n = 0;
    let mut failed = Vec::new();
    for p in points {
        match crate::sys::mount::umount_detach(p) {
            Ok(()) => n += 1,
            // Stacked mounts are listed once each, so the second detach finds nothing; and
            // a snapshot removed since the table was read took its mount with it.
            Err(e) if matches!(e.errno(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {}
            Err(e) => failed.push((p.clone(), StorageError::Sys(e))),
        }
    }
    (n, failed)
}

/// Removes a temp entry, unmounting anything inside it first.
pub fn remove_temp(path: &Path) -> Result<()> {
    match teardown(path) {
        Err(StorageError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stray_mounts_are_below_the_root_outside_kept_dirs_deepest_first() {
        let p = |s: &str| PathBuf::from(s);
        let points = [
            p("/"),
            p("/r/storage/snapshots/a/rootfs"),
            p("/r/storage/snapshots/a/rootfs/proc"),
            p("/r/storage/snapshots/b/rootfs"),
            p("/r/storage/snapshots/b/rootfs/proc"),
            p("/r2/x"),
            p("/r/storage/tmp/p1s2-probe-x/merged"),
        ];
        let got = stray_of(&points, &p("/r"), &[p("/r/storage/snapshots/a")]);
        assert_eq!(
            got,
            [
                p("/r/storage/snapshots/b/rootfs/proc"),
                p("/r/storage/snapshots/b/rootfs"),
                p("/r/storage/tmp/p1s2-probe-x/merged"),
            ]
        );
    }

    #[test]
    fn snapshots_of_dead_owners_are_stale_unless_a_container_keeps_them() {
        let root = tempfile::tempdir().unwrap();
        let snaps = root.path().join("storage/snapshots");
        let me = Owner::current();
        let dead = Owner {
            start: me.start + 1,
            ..me
        };
        for (name, owner) in [
            ("live", Some(me)),
            ("dead", Some(dead)),
            ("kept", Some(dead)),
            ("nobody", None),
        ] {
            fs::create_dir_all(snaps.join(name)).unwrap();
            if let Some(o) = owner {
                fs::write(snaps.join(name).join(OWNER_FILE), o.tag()).unwrap();
            }
        }
        fs::create_dir_all(snaps.join(format!(".new-{}-x1", dead.tag()))).unwrap();
        fs::create_dir_all(snaps.join(format!(".new-{}-x2", me.tag()))).unwrap();
        let names = snapshot_names(root.path());
        let stale = stale_snapshots(root.path(), names, &|id| id == "kept");
        let ids: Vec<&str> = stale.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["x1", "dead", "nobody"]);
    }

    #[test]
    fn a_snapshot_being_removed_is_stale_only_once_its_remover_let_go() {
        let root = tempfile::tempdir().unwrap();
        let snaps = root.path().join("storage/snapshots");
        for name in [".rm-busy", ".rm-left"] {
            fs::create_dir_all(snaps.join(name).join("upper/etc")).unwrap();
        }
        // The remover's lock (its child holds it until the tree is gone).
        let held = fs::File::open(snaps.join(".rm-busy")).unwrap();
        held.try_lock().unwrap();
        let stale = stale_snapshots(root.path(), snapshot_names(root.path()), &|_| false);
        let ids: Vec<&str> = stale.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["left"]);
        assert_eq!(stale[0].dir, snaps.join(".rm-left"));
        drop(held);
        let stale = stale_snapshots(root.path(), snapshot_names(root.path()), &|_| false);
        assert_eq!(stale.len(), 2);
    }

    #[test]
    fn temp_entries_go_when_their_owner_is_gone_and_untagged_ones_when_old() {
        let root = tempfile::tempdir().unwrap();
        let tmp = root.path().join("storage/tmp");
        let me = Owner::current();
        let dead = Owner {
            start: me.start + 1,
            ..me
        };
        for n in [
            format!("{}-unpack-a", me.tag()),
            format!("{}-unpack-b", dead.tag()),
            "unpack-young".to_string(),
        ] {
            fs::create_dir_all(tmp.join(n)).unwrap();
        }
        let stale: Vec<String> = stale_temp(root.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(stale, [format!("{}-unpack-b", dead.tag())]);
    }
}
