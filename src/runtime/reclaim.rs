//! What dead keels leave in the kernel and the OCI runtime, found and removed: processes
//! still running in a rootfs nobody keeps, `keel/<id>` cgroups, runc containers and their
//! bundles. `crate::reclaim` decides which container ids are dead and calls
//! [`reclaim_container`]; [`collect_orphans`] finds the rest by ownership.
//!
//! Processes are found by their root directory: `/proc/PID/root` is the directory the
//! process sees as `/`, and stat(2) through it gives the device and inode of that
//! directory even across mount namespaces and `pivot_root`, so comparing it with the
//! snapshot's rootfs finds every process of the container (its init, a `keel exec`'d
//! shell, a RUN step's children), whichever backend started it.
//!
//! OCI containers are found by ownership, not records: each bundle holds `owner.json`,
//! the pid and start time of the keel process that started the container (a `keel run`,
//! a detached supervisor or a build). While that process provably lives, it will clean up
//! itself; once it is gone, nothing else will. Build steps have no container record, so a
//! record check alone would kill a running build's step.
use crate::sys::hostfs;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::cgroup::{cgroup_layout, Cgroup};
use super::RuntimeError;
pub use crate::store::lease::Owner;

/// How long to wait for killed processes and busy cgroups.
const PATIENCE: Duration = Duration::from_secs(5);

/// Pids of processes whose root directory is `rootfs`.
pub fn rooted_in(rootfs: &Path) -> Vec<i32> {
    let Ok(want) = fs::metadata(rootfs).map(|m| (m.dev(), m.ino())) else {
        return Vec::new();
    };
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/root")).is_ok_and(|m| (m.dev(), m.ino()) == want)
        })
        .collect()
}

/// `/proc/PID/root` of the first process at or below `pid` (following first children,
/// a few levels: keel's outer process, the container's init) whose root is not this
/// process's: where a rootless container's rootfs can be seen from the host.
pub fn contained_root(pid: i32) -> Option<PathBuf> {
    let id = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let ours = id(Path::new("/"))?;
    let mut pid = pid;
    for _ in 0..4 {
        let root = Path::new("/proc").join(pid.to_string()).join("root");
        if id(&root).is_some_and(|r| r != ours) {
            return Some(root);
        }
        pid = first_child(pid)?;
    }
    None
}

/// The lowest-numbered child of `pid`, forked by any of its threads: a multi-threaded
/// parent such as `runc run` (Go) forks from whichever thread, and
/// `/proc/PID/task/TID/children` lists only the children of that thread.
fn first_child(pid: i32) -> Option<i32> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .min()
}

/// SIGKILLs every process rooted in `rootfs` and waits (bounded) until none is left;
/// returns how many were killed.
pub fn kill_rooted_in(rootfs: &Path) -> usize {
    let mut killed = std::collections::BTreeSet::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let pids = rooted_in(rootfs);
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for p in pids {
            if crate::sys::proc::kill(p, libc::SIGKILL).is_ok() {
                killed.insert(p);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    killed.len()
}

/// The `keel/<id>` cgroup directories of container `id` (every hierarchy).
pub fn cgroups_of(id: &str) -> Vec<PathBuf> {
    Cgroup::existing(&cgroup_layout(), id)
}

/// Kills what is left in container `id`'s cgroups and removes them; returns how many
/// directories went.
pub fn remove_cgroups(id: &str) -> usize {
    let mut removed = 0;
    for dir in cgroups_of(id) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for p in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
                let _ = crate::sys::proc::kill(p, libc::SIGKILL);
            }
            match hostfs::remove_dir(&dir) {
                Ok(()) => {
                    removed += 1;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    tracing::warn!("cannot remove cgroup {}: {e}", dir.display());
                    break;
                }
            }
        }
    }
    removed
}

/// runc's default state directory for `id`.
fn runc_state_of(id: &str) -> PathBuf {
    Path::new("/run/runc").join(id)
}

/// Deletes what the OCI runtime keeps for container `id` (`runc delete -f`, only when
/// runc has state for it) and keel's bundle for it; returns whether anything was there.
pub fn remove_oci_leftovers(root: &Path, id: &str) -> bool {
    let mut found = false;
    if runc_state_of(id).exists() {
        found = true;
        if let Err(e) = super::oci::delete(Path::new("runc"), None, id) {
            tracing::warn!("{e}");
        }
    }
    let bundle = super::oci::bundle_root(root).join(id);
    if bundle.exists() {
        found = true;
        let _ = hostfs::remove_dir_all(&bundle);
    }
    found
}

/// Everything a dead container `id` of keel root `root`, with root filesystem `rootfs`,
/// may have left in the kernel and the runtime: processes, cgroups, runc state, bundle.
/// Returns how many processes were killed.
pub fn reclaim_container(root: &Path, id: &str, rootfs: &Path) -> usize {
    let killed = kill_rooted_in(rootfs);
    remove_oci_leftovers(root, id);
    remove_cgroups(id);
    killed
}

/// The file naming a bundle's owner.
pub fn owner_file(bundle: &Path) -> PathBuf {
    bundle.join("owner.json")
}

/// What [`find_orphans`] found (and [`collect_orphans`] removed).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Orphans {
    /// OCI runtime container ids (bundle under this keel root, owner gone).
    pub runtime_containers: Vec<String>,
    /// Bundle directories whose owner is gone.
    pub bundles: Vec<PathBuf>,
    /// Empty `keel/<id>` cgroup directories, in any hierarchy.
    pub cgroups: Vec<PathBuf>,
}

/// One entry of `runc list --format json`.
#[derive(Debug, Deserialize)]
struct Listed {
    id: String,
    bundle: PathBuf,
}

/// The cgroup mount points (v1 hierarchies of any kind, and cgroup2) in a mountinfo text.
pub fn cgroup_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let mp = pre.split(' ').nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(mp))
        })
        .collect()
}

fn owned_elsewhere(bundle: &Path) -> bool {
    std::fs::read(owner_file(bundle))
        .ok()
        .and_then(|b| serde_json::from_slice::<Owner>(&b).ok())
        .is_some_and(|o| o.alive())
}

/// The runtime's containers (`runtime list`), as (id, bundle).
fn listed(runtime: &Path) -> Result<Vec<Listed>, RuntimeError> {
    let out = Command::new(runtime)
        .args(["list", "--format", "json"])
        .output()
        .map_err(|source| RuntimeError::Io {
            path: runtime.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(RuntimeError::Runtime {
            runtime: runtime.display().to_string(),
            args: "list --format json".into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let list: Option<Vec<Listed>> = serde_json::from_slice(&out.stdout)
        .map_err(|e| RuntimeError::Setup(format!("parsing `runc list` output: {e}")))?;
    Ok(list.unwrap_or_default())
}

/// Lists what a dead keel left behind under `keel_root`: runtime containers and bundles
/// whose owner is gone, and empty `keel/<id>` cgroups for which `keep(id)` is false (pass
/// the ids of containers and build steps this keel knows are starting or running).
/// `runtime` is the OCI runtime binary (`runc`); when it cannot be run, only cgroups and
/// bundles are looked at.
pub fn find_orphans(
    keel_root: &Path,
    runtime: &Path,
    keep: &dyn Fn(&str) -> bool,
    min_cgroup_age: Duration,
) -> Result<Orphans, RuntimeError> {
    let bundles_dir = super::oci::bundle_root(keel_root);
    let mut o = Orphans::default();
    if let Ok(list) = listed(runtime) {
        for c in list {
            if c.bundle.starts_with(&bundles_dir) && !owned_elsewhere(&c.bundle) {
                o.runtime_containers.push(c.id);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(&bundles_dir) {
        for e in entries.flatten() {
            if !owned_elsewhere(&e.path()) {
                o.bundles.push(e.path());
            }
        }
    }
    let mountinfo = crate::sys::mount::mount_table().unwrap_or_default();
    for m in cgroup_mounts(&mountinfo) {
        let Ok(entries) = std::fs::read_dir(m.join("keel")) else {
            continue;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let procs = std::fs::read_to_string(e.path().join("cgroup.procs"));
            // `keel/` is shared by every keel root on the host, and a container's cgroup is
            // empty for a moment before its first process joins: only old ones are orphans.
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() >= min_cgroup_age);
            let empty = procs.is_ok_and(|p| p.trim().is_empty());
            if e.path().is_dir() && !keep(&id) && old && empty {
                o.cgroups.push(e.path());
            }
        }
    }
    o.cgroups.sort();
    Ok(o)
}

/// [`find_orphans`], then removes them: `runtime delete -f` for each container (which
/// kills it and removes the runtime's cgroups), the bundles, then the cgroups that are
/// still there and empty. Returns what was found; the first error is returned after
/// trying everything.
pub fn collect_orphans(
    keel_root: &Path,
    runtime: &Path,
    keep: &dyn Fn(&str) -> bool,
    min_cgroup_age: Duration,
) -> Result<Orphans, RuntimeError> {
    let o = find_orphans(keel_root, runtime, keep, min_cgroup_age)?;
    let mut first: Option<RuntimeError> = None;
    for id in &o.runtime_containers {
        if let Err(e) = super::oci::delete(runtime, None, id) {
            first.get_or_insert(e);
        }
    }
    for b in &o.bundles {
        if let Err(source) = hostfs::remove_dir_all(b) {
            first.get_or_insert(RuntimeError::Io {
                path: b.clone(),
                source,
            });
        }
    }
    // Deleting runtime containers can empty more cgroups; look again.
    let cgroups = find_orphans(keel_root, runtime, keep, min_cgroup_age)
        .map(|again| again.cgroups)
        .unwrap_or_default();
    for c in cgroups.iter().chain(o.cgroups.iter()) {
        match hostfs::remove_dir(c) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A child cgroup or a process that arrived since: not an orphan after all.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(source) => {
                first.get_or_insert(RuntimeError::Io {
                    path: c.clone(),
                    source,
                });
            }
        }
    }
    first.map_or(Ok(o), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_mounts_of_a_hybrid_host() {
        let text = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                    40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                    31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n";
        assert_eq!(
            cgroup_mounts(text),
            [
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn owners_are_proven_by_start_time() {
        let me = Owner::current();
        assert!(me.alive());
        assert!(!Owner {
            start: me.start + 1,
            ..me
        }
        .alive());
        let d = tempfile::tempdir().unwrap();
        assert!(!owned_elsewhere(d.path()));
        std::fs::write(owner_file(d.path()), serde_json::to_vec(&me).unwrap()).unwrap();
        assert!(owned_elsewhere(d.path()));
    }
}
