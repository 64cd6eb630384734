//! Reclaiming what dead keels left: the containers they were creating or removing (and
//! containers whose supervisor died), snapshots nobody keeps, processes still running in
//! them, their cgroups and runc state, mounts under the root, temp files and the dead
//! leases themselves. `keel gc` runs it before collecting blobs; any keel command runs it
//! at start-up when it finds a dead lease ([`at_startup`]).
//!
//! Safe while other keels run: a live lease's containers, a snapshot whose owner lives,
//! a container whose supervisor lives, and a temp entry whose owner lives are never
//! touched. The decision rules are in docs/store.md ("Leases and reclamation").
use crate::sys::hostfs;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::container::{ContainerState, Containers, Status};
use crate::storage::reclaim as storage;
use crate::store::lease::{self, LeaseRecord, Owner};
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

/// What [`reclaim`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reclaimed {
    pub leases: usize,
    pub containers: usize,
    pub stopped: usize,
    pub snapshots: usize,
    pub processes: usize,
    pub mounts: usize,
    pub temp: usize,
}

impl Reclaimed {
    pub fn is_empty(&self) -> bool {
        *self == Reclaimed::default()
    }
}

/// Staging and removal entries in `containers/` are this old before a sweep takes them
/// when no lease names them (`keel rm` renames a record to `.rm-<id>` just before
/// deleting it).
const CONTAINER_LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// Reclaims everything dead keels left under the store's root.
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
        reclaim_lease_resources(root, l, &leased, &mut r)?;
    }
    reclaim_orphan_containers(root, &mut r)?;
    reclaim_runtime_orphans(root, &leased);
    reclaim_storage(root, &mut r)?;
    sweep_container_leftovers(root, &leased, &mut r);
    for (path, _) in &dead {
        if hostfs::remove_file(path).is_ok() {
            r.leases += 1;
        }
    }
    sweep_lease_staging(root);
    Ok(r)
}

/// Start-up: reclaims only when a dead lease is found (a directory listing and a few
/// `/proc` reads otherwise). Failures are logged, never fatal to the command.
pub fn at_startup(store: &Store) {
    if !lease::any_dead(store.root()) {
        return;
    }
    match reclaim(store) {
        Ok(r) if !r.is_empty() => tracing::info!("reclaimed what a killed keel left: {r:?}"),
        Ok(_) => {}
        Err(e) => tracing::warn!("reclaiming what a killed keel left: {e}"),
    }
}

/// The containers a dead lease was creating or removing, and its temp paths.
fn reclaim_lease_resources(
    root: &Path,
    l: &LeaseRecord,
    leased: &BTreeSet<String>,
    r: &mut Reclaimed,
) -> Result<(), ReclaimError> {
    for id in l.containers.iter().filter(|id| !leased.contains(*id)) {
        if crate::storage::check_id(id).is_ok() {
            remove_container(root, id, r)?;
        }
    }
    for p in &l.temp {
        let gone = if p.is_dir() {
            hostfs::remove_dir_all(p)
        } else {
            hostfs::remove_file(p)
        };
        if gone.is_ok() {
            r.temp += 1;
        }
    }
    Ok(())
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
fn reclaim_orphan_containers(root: &Path, r: &mut Reclaimed) -> Result<(), ReclaimError> {
    let containers = Containers::new(root);
    // Records and states first, leases after: a keel names a container in its lease
    // before making the record and drops it only once the record says running, so a
    // record seen `created` here is in a lease read afterwards while its maker lives.
    let mut seen = Vec::new();
    for c in containers.list()? {
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
            Status::Created => remove_container(root, &c.id, r)?,
            Status::Running if !supervisor_alive => {
                stop_container(root, &c.id, &mut st, r);
                let _ = containers.set_state(&c.id, &st);
                if c.auto_remove {
                    remove_container(root, &c.id, r)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
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

/// Removes container `id` whatever state it is in: processes, cgroups, runtime state,
/// snapshot, anonymous volumes, record.
fn remove_container(root: &Path, id: &str, r: &mut Reclaimed) -> Result<(), ReclaimError> {
    r.processes += crate::runtime::reclaim::reclaim_container(root, id, &rootfs_of(root, id));
    let snap = root.join("storage/snapshots").join(id);
    if snap.exists() {
        storage::remove(&snap)?;
        r.snapshots += 1;
    }
    let containers = Containers::new(root);
    if let Ok(c) = containers.find(id) {
        containers.remove(&c.id)?;
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
fn reclaim_storage(root: &Path, r: &mut Reclaimed) -> Result<(), ReclaimError> {
    // Snapshot directories are listed before the container records are read: a record is
    // made before its snapshot, so a snapshot seen here has its record already.
    let names = storage::snapshot_names(root);
    let records: BTreeSet<String> = container_ids(root);
    for s in storage::stale_snapshots(root, names, &|id| records.contains(id)) {
        r.processes +=
            crate::runtime::reclaim::reclaim_container(root, &s.id, &s.dir.join("rootfs"));
        storage::remove(&s.dir)?;
        r.snapshots += 1;
    }
    for t in storage::stale_temp(root) {
        storage::remove_temp(&t)?;
        r.temp += 1;
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
    r.mounts += storage::unmount_all(&storage::stray_mounts(root, kept)?)?;
    Ok(())
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

/// `.new-<id>` (a create), `.rm-<id>` (a removal) and `.request-<id>.json` (a `run -d`
/// hand-over) entries in `containers/` that no live lease names and that are old enough
/// that no running command can still be using them.
fn sweep_container_leftovers(root: &Path, leased: &BTreeSet<String>, r: &mut Reclaimed) {
    let Ok(rd) = fs::read_dir(root.join("containers")) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
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
        let gone = if e.path().is_dir() {
            hostfs::remove_dir_all(e.path())
        } else {
            hostfs::remove_file(e.path())
        };
        if gone.is_ok() {
            r.temp += 1;
        }
    }
}

/// `leases/.<id>.tmp` files of dead owners (a lease rewrite that was cut short).
fn sweep_lease_staging(root: &Path) {
    let Ok(rd) = fs::read_dir(lease::leases_dir(root)) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix('.') {
            if Owner::from_tag(rest).is_none_or(|o| !o.alive()) {
                let _ = hostfs::remove_file(e.path());
            }
        }
    }
}
