//! Reclaiming what dead keels left: the containers they were creating or removing (and
//! containers whose supervisor died), snapshots nobody keeps, processes still running in
//! them, their cgroups and runc state, mounts under the root, temp files and the dead
//! leases themselves. `keel gc` runs it before collecting blobs; any keel command runs it
//! at start-up when it finds a dead lease ([`at_startup`]).
//!
//! Safe while other keels run: a live lease's containers, a snapshot whose owner lives,
//! a container whose supervisor lives, and a temp entry whose owner lives are never
//! touched. The decision rules are in docs/store.md ("Leases and reclamation").
//!
//! Racing other removers is expected: what is already gone counts as removed, and one
//! thing that cannot be removed (a busy mount, an immutable file) is a warning naming
//! it ([`Reclaimed::warnings`]), never the end of the clean-up of everything else.
use crate::sys::hostfs::{self, TempWriter};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::container::{ContainerState, Containers, Status};
use crate::storage::reclaim as storage;
use crate::store::lease::{self, LeaseRecord};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ReclaimError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Container(#[from] crate::container::ContainerError),
}

/// What [`reclaim`] removed, and what it could not.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reclaimed {
    pub leases: usize,
    pub containers: usize,
    pub stopped: usize,
    pub snapshots: usize,
    pub processes: usize,
    pub mounts: usize,
    pub temp: usize,
    /// One line per leftover that could not be removed (its path, why, and the fix);
    /// the caller shows them (`report::errln!`).
    pub warnings: Vec<String>,
}

impl Reclaimed {
    /// Whether nothing was removed (warnings aside).
    pub fn is_empty(&self) -> bool {
        let counts = Reclaimed {
            warnings: Vec::new(),
            ..self.clone()
        };
        counts == Reclaimed::default()
    }

    /// Notes that `what` at `path` could not be removed, and goes on.
    fn warn(&mut self, what: &str, path: &Path, e: impl std::fmt::Display) {
        self.warnings.push(format!(
            "could not reclaim {what} {}: {e}; free it (unmount what is mounted there, stop \
             what uses it, clear an immutable attribute) or remove it by hand, then run \
             `keel gc` again",
            path.display()
        ));
    }
}

/// Staging and removal entries in `containers/` are this old before a sweep takes them
/// when no lease names them (`keel rm` renames a record to `.rm-<id>` just before
/// deleting it).
const CONTAINER_LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// Reclaims everything dead keels left under the store's root. Fails only when the
/// reclamation lock cannot be taken; what cannot be removed is in the warnings.
pub fn reclaim(store: &Store) -> Result<Reclaimed, ReclaimError> {
    let _one_at_a_time = store.reclaim_guard()?;
    let root = store.root();
    let mut r = Reclaimed::default();
    let leases = lease::list(root);
    let (live, dead): (Vec<_>, Vec<_>) = leases.into_iter().partition(|(_, l)| l.is_live());
    let leased: BTreeSet<String> = live
        .iter()
        .flat_map(|(_, l)| l.containers.iter().cloned())
        .collect();
    for (_, l) in &dead {
        reclaim_lease_resources(root, l, &leased, &mut r);
    }
    reclaim_orphan_containers(root, &mut r);
    reclaim_runtime_orphans(root, &leased);
    reclaim_storage(root, &mut r);
    sweep_container_leftovers(root, &leased, &mut r);
    for (path, _) in &dead {
        if hostfs::remove_file(path).is_ok() {
            r.leases += 1;
        }
    }
    sweep_beside_temps(root, &mut r);
    Ok(r)
}

/// Start-up: reclaims only when a dead lease is found (a directory listing and a few
/// `/proc` reads otherwise). Failures are logged, never fatal to the command.
pub fn at_startup(store: &Store) {
    if !lease::any_dead(store.root()) {
        return;
    }
    match reclaim(store) {
        Ok(r) => {
            if !r.is_empty() {
                tracing::info!("reclaimed what a killed keel left: {r:?}");
            }
            for w in &r.warnings {
                crate::errln!("warning: {w}");
            }
        }
        Err(e) => tracing::warn!("reclaiming what a killed keel left: {e}"),
    }
}

/// The containers a dead lease was creating or removing, and its temp paths.
fn reclaim_lease_resources(
    root: &Path,
    l: &LeaseRecord,
    leased: &BTreeSet<String>,
    r: &mut Reclaimed,
) {
    for id in l.containers.iter().filter(|id| !leased.contains(*id)) {
        if crate::storage::check_id(id).is_ok() {
            remove_container_or_warn(root, id, r);
        }
    }
    for p in &l.temp {
        match remove_path(p) {
            Ok(true) => r.temp += 1,
            Ok(false) => {}
            Err(e) => r.warn("temp file", p, e),
        }
    }
}

/// Removes a file, or a directory with everything below it; `Ok(false)` when it was
/// already gone (another keel took it first).
fn remove_path(p: &Path) -> std::io::Result<bool> {
    let gone = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => hostfs::remove_dir_all(p),
        Ok(_) => hostfs::remove_file(p),
        Err(e) => Err(e),
    };
    match gone {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// OCI runtime containers and bundles whose owning keel is gone, and empty `keel/<id>`
/// cgroups of no known container (what a killed `keel run` or build step left in runc and
/// the kernel). Failures are logged: the rest of the reclamation still runs.
fn reclaim_runtime_orphans(root: &Path, leased: &BTreeSet<String>) {
    let known: BTreeSet<String> = Containers::new(root)
        .list()
        .map(|cs| cs.into_iter().map(|c| c.id).collect())
        .unwrap_or_default();
    let snapshots: BTreeSet<String> = storage::snapshot_names(root).into_iter().collect();
    let keep = |id: &str| known.contains(id) || leased.contains(id) || snapshots.contains(id);
    let runc = Path::new("runc");
    // Empty cgroups younger than this may belong to a container of another root that is
    // starting right now (`keel/` is host-wide).
    let age = std::time::Duration::from_secs(60);
    if let Err(e) = crate::runtime::reclaim::collect_orphans(root, runc, &keep, age) {
        tracing::warn!("collecting orphaned runtime containers: {e}");
    }
}

/// Containers no live keel is creating whose supervisor is gone: a record still
/// `created` is a start that died (removed); a `running` one is stopped (its processes
/// killed, marked exited 137) and removed if it was `--rm`.
fn reclaim_orphan_containers(root: &Path, r: &mut Reclaimed) {
    let containers = Containers::new(root);
    // Records and states first, leases after: a keel names a container in its lease
    // before making the record and drops it only once the record says running, so a
    // record seen `created` here is in a lease read afterwards while its maker lives.
    let mut seen = Vec::new();
    let listed = match containers.list() {
        Ok(l) => l,
        Err(e) => return r.warn("container records in", &root.join("containers"), e),
    };
    for c in listed {
        if let Ok(st) = containers.state(&c.id) {
            seen.push((c, st));
        }
    }
    let leased = live_containers(root);
    for (c, mut st) in seen {
        if leased.contains(&c.id) {
            continue;
        }
        let supervisor_alive = st.supervisor_alive();
        match st.status {
            Status::Created => remove_container_or_warn(root, &c.id, r),
            Status::Running if !supervisor_alive => {
                stop_container(root, &c.id, &mut st, r);
                let _ = containers.set_state(&c.id, &st);
                if c.auto_remove {
                    remove_container_or_warn(root, &c.id, r);
                }
            }
            _ => {}
        }
    }
}

/// Containers that live leases are creating or removing.
fn live_containers(root: &Path) -> BTreeSet<String> {
    lease::list(root)
        .into_iter()
        .filter(|(_, l)| l.is_live())
        .flat_map(|(_, l)| l.containers)
        .collect()
}

fn rootfs_of(root: &Path, id: &str) -> PathBuf {
    root.join("storage/snapshots").join(id).join("rootfs")
}

/// Kills a container's processes and clears its cgroups and runtime state.
fn stop_container(root: &Path, id: &str, st: &mut ContainerState, r: &mut Reclaimed) {
    r.processes += crate::runtime::reclaim::reclaim_container(root, id, &rootfs_of(root, id));
    st.status = Status::Exited;
    st.exit_code = st.exit_code.or(Some(137));
    r.stopped += 1;
}

/// [`remove_container`]; what it cannot remove is a warning.
fn remove_container_or_warn(root: &Path, id: &str, r: &mut Reclaimed) {
    if let Err(e) = remove_container(root, id, r) {
        r.warn("container", &root.join("containers").join(id), e);
    }
}

/// Removes container `id` whatever state it is in: processes, cgroups, runtime state,
/// snapshot, anonymous volumes, record. A part already gone (another keel removing the
/// same container) is done, not an error.
fn remove_container(root: &Path, id: &str, r: &mut Reclaimed) -> Result<(), ReclaimError> {
    r.processes += crate::runtime::reclaim::reclaim_container(root, id, &rootfs_of(root, id));
    let snap = root.join("storage/snapshots").join(id);
    if storage::remove(&snap)? {
        r.snapshots += 1;
    }
    let containers = Containers::new(root);
    if let Ok(c) = containers.find(id) {
        match containers.remove(&c.id) {
            Err(e) if e.is_gone() => {}
            other => other?,
        }
        let volumes = crate::container::volume::Volumes::new(root);
        for v in c
            .volumes
            .iter()
            .filter(|v| v.starts_with(&id[..12.min(id.len())]))
        {
            let _ = volumes.remove(v, &containers);
        }
        r.containers += 1;
    }
    let staging = root.join("containers").join(format!(".new-{id}"));
    if hostfs::remove_dir_all(&staging).is_ok() {
        r.containers += 1;
    }
    Ok(())
}

/// Snapshots nobody keeps (and the processes, cgroups and runc state of the build step
/// or container that ran in them), dead owners' temp directories, stray mounts.
fn reclaim_storage(root: &Path, r: &mut Reclaimed) {
    // Snapshot directories are listed before the container records are read: a record is
    // made before its snapshot, so a snapshot seen here has its record already.
    let names = storage::snapshot_names(root);
    let records: BTreeSet<String> = container_ids(root);
    for s in storage::stale_snapshots(root, names, &|id| records.contains(id)) {
        r.processes +=
            crate::runtime::reclaim::reclaim_container(root, &s.id, &s.dir.join("rootfs"));
        match storage::remove(&s.dir) {
            Ok(true) => r.snapshots += 1,
            Ok(false) => {}
            Err(e) => r.warn("snapshot", &s.dir, e),
        }
    }
    for t in storage::stale_temp(root) {
        match storage::remove_temp(&t) {
            Ok(()) => r.temp += 1,
            Err(e) => r.warn("temp directory", &t, e),
        }
    }
    let kept = || {
        let mut keep: Vec<PathBuf> = Vec::new();
        // `tmp/` entries are the store's (gc sweeps them, unmounting first).
        for sub in ["storage/snapshots", "storage/tmp", "tmp"] {
            if let Ok(rd) = fs::read_dir(root.join(sub)) {
                keep.extend(rd.flatten().map(|e| e.path()));
            }
        }
        keep
    };
    let points = match storage::stray_mounts(root, kept) {
        Ok(p) => p,
        Err(e) => return r.warn("mounts under", root, e),
    };
    let (n, failed) = storage::unmount_all(&points);
    r.mounts += n;
    for (p, e) in failed {
        r.warn("mount", &p, e);
    }
}

/// Ids of the container records under `containers/`.
fn container_ids(root: &Path) -> BTreeSet<String> {
    fs::read_dir(root.join("containers"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// The spare record directory, and `.new-<id>` (a create), `.rm-<id>` (a removal) and
/// `.request-<id>.json` (a `run -d` hand-over) entries in `containers/` that no live
/// lease names and that are old enough that no running command can still be using them.
fn sweep_container_leftovers(root: &Path, leased: &BTreeSet<String>, r: &mut Reclaimed) {
    let Ok(rd) = fs::read_dir(root.join("containers")) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // The empty directory a removed record left for the next one (`container::
        // Containers::remove`): gc returns the root to what it was. Only while empty, so
        // a record another keel has just made of it stays.
        if name == crate::container::SPARE {
            if hostfs::remove_dir(e.path()).is_ok() {
                r.temp += 1;
            }
            continue;
        }
        let id = [".new-", ".rm-", ".request-"]
            .iter()
            .find_map(|p| name.strip_prefix(p))
            .map(|rest| rest.trim_end_matches(".json"));
        let Some(id) = id else { continue };
        let old = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > CONTAINER_LEFTOVER_AGE);
        if leased.contains(id) || !old {
            continue;
        }
        match remove_path(&e.path()) {
            Ok(true) => r.temp += 1,
            Ok(false) => {}
            Err(err) => r.warn("container leftover", &e.path(), err),
        }
    }
}

/// Directories under the root where keel writes a file through a temp name beside it
/// (what writes there, in `sys::hostfs::TempWriter`'s terms), and whether each of their
/// subdirectories does too. Never a directory that holds an image tree or a user's data:
/// a cache mount's contents, a volume, a snapshot.
const BESIDE_TEMP: &[(&str, bool)] = &[
    // Lease rewrites: `.<lease id>.tmp` (`store::lease`).
    ("leases", false),
    // The stat index and a step's last inputs (`hostfs::replace`).
    ("cache/stat", false),
    ("cache/last", false),
    // Cache entries and selection stamps (`hostfs::write_atomic`).
    ("cache/steps", false),
    ("cache/stamps", false),
    // A seeded cache mount's `<id>.seeded` record (`write_atomic`); not the mounts.
    ("cache/mounts", false),
    // Remote ADD downloads (`hostfs::temp_file_in`) and their URLs' records
    // (`write_atomic`); older keels' untagged `tempfile` names.
    ("cache/remote/blobs", false),
    ("cache/remote/urls", false),
    // Push's memo (`write_atomic`): `<format>/<digest>`, `verified/<digest>`; older
    // keels' `.<digest>.<pid>`.
    ("cache/registry", true),
    // Container records (`containers/<id>/*.json`, `write_atomic`; older keels'
    // untagged `tempfile` names).
    ("containers", true),
    // Deployed apps' `app.json` (`write_atomic`).
    ("apps", true),
    // Buildpacks written out (`<dir>.tmp-<pid>`) and fetched (`hostfs::temp_dir_in`;
    // older keels' untagged `.fetch-XXXXXX`).
    ("buildpacks/shipped", false),
    ("buildpacks/fetched", false),
    // Foreign busybox packages being downloaded (`.download-XXXXXX`, `keel bootstrap`).
    ("cache/busybox", false),
];

/// Temp names beside replaced files (see [`BESIDE_TEMP`]) whose writer is gone: a keel
/// killed between writing the temp file and removing it (or renaming it into place).
fn sweep_beside_temps(root: &Path, r: &mut Reclaimed) {
    for (sub, nested) in BESIDE_TEMP {
        let dir = root.join(sub);
        let mut dirs = vec![dir.clone()];
        if *nested {
            let subdirs = fs::read_dir(&dir).into_iter().flatten().flatten();
            dirs.extend(
                subdirs
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        for d in dirs {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                if stray_temp(&e) != Some(true) {
                    continue;
                }
                match remove_path(&e.path()) {
                    Ok(true) => r.temp += 1,
                    Ok(false) => {}
                    Err(err) => r.warn("temp file", &e.path(), err),
                }
            }
        }
    }
}

/// Removes the temp names in `dir` that carry the owner tag of a keel that is gone
/// ([`hostfs::temp_file_in`], [`hostfs::temp_dir_in`]); returns how many. For a directory
/// outside the root that a command was pointed at (`keel bootstrap --cache-dir`), which
/// `keel gc` never visits: only owner-tagged names are judged there (an untagged or
/// pid-only name may be the user's), and what resists stays for the next time.
pub fn sweep_tagged_temps(dir: &Path) -> usize {
    let mut removed = 0;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(TempWriter::Owner(o)) = hostfs::temp_writer(&name) else {
            continue;
        };
        if !o.alive() && remove_path(&e.path()).is_ok_and(|gone| gone) {
            removed += 1;
        }
    }
    removed
}

/// Whether directory entry `e` is a temp name of keel's ([`hostfs::temp_writer`]) whose
/// writer is gone ([`writer_gone`]); `None` when it is no temp name. For other sweeps of
/// the directories in [`BESIDE_TEMP`], so that they leave a live writer's file alone.
pub fn stray_temp(e: &fs::DirEntry) -> Option<bool> {
    let writer = hostfs::temp_writer(&e.file_name().to_string_lossy())?;
    let age = e
        .metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok());
    Some(writer_gone(writer, age))
}

/// A temp file whose name carries no writer, or only a pid, is this old before it is
/// taken for a leftover (a write takes moments; a pid may be reused meanwhile).
const UNOWNED_TEMP_AGE: Duration = Duration::from_secs(24 * 3600);

/// Whether the writer of a temp file named as `writer` says is gone: an owner tag is
/// decided by pid and start time; a bare pid when no process has it (a live one may be
/// a later process with the same pid, so the file must then be a day old); no writer at
/// all, a day old. `age` is `None` when the file's time cannot be read (kept).
fn writer_gone(writer: TempWriter, age: Option<Duration>) -> bool {
    let old = age.is_some_and(|a| a > UNOWNED_TEMP_AGE);
    match writer {
        TempWriter::Owner(o) => !o.alive(),
        TempWriter::Pid(pid) => crate::sys::proc::start_time(pid).is_none() || old,
        TempWriter::Unknown => old,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::lease::Owner;
    use std::time::SystemTime;

    /// A process that has exited (its pid is free, unless reused at once) and a live one.
    fn dead_and_live() -> (i32, std::process::Child) {
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        dead.wait().unwrap();
        let live = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        (dead.id() as i32, live)
    }

    /// The owner tags of the exited process `dead_pid` and of `live`.
    fn tags(dead_pid: i32, live: &std::process::Child) -> (String, String) {
        let pid = live.id() as i32;
        let start = crate::sys::proc::start_time(pid).unwrap();
        (format!("p{dead_pid}s1"), Owner { pid, start }.tag())
    }

    fn age(p: &Path, secs: u64) {
        let f = fs::File::open(p).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn a_temp_file_goes_once_its_writer_is_gone() {
        let (dead_pid, mut live) = dead_and_live();
        let live_owner = Owner {
            pid: live.id() as i32,
            start: crate::sys::proc::start_time(live.id() as i32).unwrap(),
        };
        let reused = Owner {
            start: live_owner.start + 1,
            ..live_owner
        };
        let day = 24 * 3600;
        let cases = [
            (TempWriter::Owner(live_owner), 2 * day, false),
            (TempWriter::Owner(reused), 0, true),
            (TempWriter::Pid(dead_pid), 0, true),
            (TempWriter::Pid(live_owner.pid), 0, false),
            (TempWriter::Pid(live_owner.pid), 2 * day, true),
            (TempWriter::Unknown, 60, false),
            (TempWriter::Unknown, 2 * day, true),
        ];
        for (w, secs, gone) in cases {
            let got = writer_gone(w, Some(Duration::from_secs(secs)));
            assert_eq!(got, gone, "{w:?} {secs}s old");
        }
        assert!(!writer_gone(TempWriter::Unknown, None));
        let _ = live.kill();
        let _ = live.wait();
    }

    /// Item 1 (session 8): `.<name>.<pid>.tmp` beside the stat index, a step's last
    /// inputs, a lease, … stayed forever when keel was killed before removing it. The
    /// sweep takes dead writers' temp names in the directories keel writes that way,
    /// keeps a live writer's, and never looks anywhere else.
    #[test]
    fn the_sweep_takes_dead_writers_temp_names_and_keeps_live_ones() {
        let (dead_pid, mut live) = dead_and_live();
        let (dead_tag, live_tag) = tags(dead_pid, &live);
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let put = |rel: &str| {
            let p = r.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, "old").unwrap();
            p
        };
        let gone = [
            put(&format!("cache/stat/.abc.{dead_tag}.tmp")),
            put(&format!("cache/last/.abc.json.{dead_pid}.tmp")),
            put(&format!("cache/steps/.abc.json.{dead_tag}-AbC123.tmp")),
            put(&format!("leases/.{dead_tag}-0a1b2c3d.tmp")),
            put(&format!("cache/registry/gzip/.abc.{dead_pid}")),
        ];
        let old_random = put("containers/c1/.tmpAbC123");
        age(&old_random, 2 * 24 * 3600);
        let kept = [
            put(&format!("cache/stat/.abc.{live_tag}.tmp")),
            put(&format!("cache/last/.abc.json.{}.tmp", live.id())),
            put("cache/steps/.tmpXyZ789"),
            put("cache/stat/abc"),
            put("containers/.lock"),
            // Not a directory keel replaces files in: an image tree, a cache mount.
            put(&format!("storage/snapshots/s1/rootfs/.abc.{dead_tag}.tmp")),
            put(&format!("cache/mounts/m1/.abc.{dead_tag}.tmp")),
        ];
        let mut rec = Reclaimed::default();
        sweep_beside_temps(r, &mut rec);
        let _ = live.kill();
        let _ = live.wait();
        for p in gone.iter().chain([&old_random]) {
            assert!(!p.exists(), "{} was left", p.display());
        }
        for p in &kept {
            assert!(p.exists(), "{} was taken", p.display());
        }
        assert_eq!(rec.temp, gone.len() + 1);
        assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
    }

    /// Session 9 item 4: in a directory outside the root (`bootstrap --cache-dir`), the
    /// temp names of dead keels go; a live keel's, untagged and pid-only names (maybe the
    /// user's) and everything else stay.
    #[test]
    fn a_named_directory_loses_only_dead_keels_tagged_temp_names() {
        let (dead_pid, mut live) = dead_and_live();
        let (dead_tag, live_tag) = tags(dead_pid, &live);
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str| {
            let p = dir.path().join(name);
            fs::write(&p, "x").unwrap();
            p
        };
        let gone = [put(&format!(".a_1_amd64.deb.{dead_tag}-AbC123.tmp"))];
        let scratch = dir.path().join(format!(".download.{dead_tag}-XyZ789.tmp"));
        fs::create_dir_all(scratch.join("tree/bin")).unwrap();
        let kept = [
            put(&format!(".a_1_amd64.deb.{live_tag}-AbC123.tmp")),
            put(&format!(".notes.{dead_pid}")),
            put(".download-AbC123"),
            put("a_1_amd64.deb"),
        ];
        let removed = sweep_tagged_temps(dir.path());
        let _ = live.kill();
        let _ = live.wait();
        assert_eq!(removed, 2);
        for p in gone.iter().chain([&scratch]) {
            assert!(!p.exists(), "{} was left", p.display());
        }
        for p in &kept {
            assert!(p.exists(), "{} was taken", p.display());
        }
    }

    /// Item 2 (session 8): another keel's gc may remove a container's snapshot, or the
    /// whole container, between this one's listing and its removal. What is already gone
    /// is removed: no error, and only what this call removed is counted.
    #[test]
    fn removing_a_container_whose_snapshot_or_record_is_gone_is_done() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let containers = Containers::new(r);
        let config = |id: &str| -> crate::container::ContainerConfig {
            serde_json::from_value(serde_json::json!({
                "id": id, "name": format!("n{id}"), "image": "bb",
                "image_digest": crate::digest::of_bytes(b"m").to_string(),
                "command": ["true"], "created": "now", "isolation": "chroot",
                "storage_driver": "copy",
            }))
            .unwrap()
        };
        // Snapshot gone, record there.
        containers.create(&config("c1")).unwrap();
        let mut rec = Reclaimed::default();
        remove_container(r, "c1", &mut rec).unwrap();
        assert!(containers.find("c1").is_err());
        assert_eq!((rec.containers, rec.snapshots), (1, 0));
        // Both gone: a second remover finds nothing left to do.
        remove_container(r, "c1", &mut rec).unwrap();
        assert_eq!((rec.containers, rec.snapshots), (1, 0));
        // Snapshot there, record gone.
        fs::create_dir_all(r.join("storage/snapshots/c2/rootfs")).unwrap();
        remove_container(r, "c2", &mut rec).unwrap();
        assert!(!r.join("storage/snapshots/c2").exists());
        assert_eq!((rec.containers, rec.snapshots), (1, 1));
        assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
    }
}
