//! Reclaiming what a killed keel left behind: OCI runtime containers whose keel owner is
//! gone (`runc run` keeps going when the keel above it is SIGKILLed) and empty `keel/<id>`
//! cgroups (a killed keel never ran its teardown). `keel gc` calls [`collect_orphans`].
//!
//! Ownership, not records, decides: each OCI bundle holds `owner.json`, the pid and start
//! time of the keel process that started the container (a `keel run`, a detached
//! supervisor or a build). While that process provably lives, it will clean up itself;
//! once it is gone, nothing else will. Build steps have no container record, so a record
//! check alone would kill a running build's step.
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::RuntimeError;

/// The keel process that owns an OCI container: `<bundle>/owner.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: i32,
    /// Start time of `pid` (`/proc/PID/stat` field 22).
    pub start: u64,
}

impl Owner {
    /// This process.
    pub fn me() -> Option<Owner> {
        let pid = std::process::id() as i32;
        Some(Owner {
            pid,
            start: crate::sys::proc::start_time(pid)?,
        })
    }

    /// Whether the owner provably still runs (same pid, same start time).
    pub fn alive(&self) -> bool {
        crate::sys::proc::start_time(self.pid) == Some(self.start)
    }
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
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in cgroup_mounts(&mountinfo) {
        let Ok(entries) = std::fs::read_dir(m.join("keel")) else {
            continue;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let procs = std::fs::read_to_string(e.path().join("cgroup.procs"));
            if e.path().is_dir() && !keep(&id) && procs.is_ok_and(|p| p.trim().is_empty()) {
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
) -> Result<Orphans, RuntimeError> {
    let o = find_orphans(keel_root, runtime, keep)?;
    let mut first: Option<RuntimeError> = None;
    for id in &o.runtime_containers {
        if let Err(e) = super::oci::delete(runtime, None, id) {
            first.get_or_insert(e);
        }
    }
    for b in &o.bundles {
        if let Err(source) = std::fs::remove_dir_all(b) {
            first.get_or_insert(RuntimeError::Io {
                path: b.clone(),
                source,
            });
        }
    }
    // Deleting runtime containers can empty more cgroups; look again.
    let cgroups = find_orphans(keel_root, runtime, keep)
        .map(|again| again.cgroups)
        .unwrap_or_default();
    for c in cgroups.iter().chain(o.cgroups.iter()) {
        match std::fs::remove_dir(c) {
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
        let me = Owner::me().unwrap();
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
