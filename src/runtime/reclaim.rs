//! What a dead keel's containers leave in the kernel and the OCI runtime: processes
//! still running in a rootfs nobody keeps, `keel/<id>` cgroups, runc state and the
//! bundle under the temp dir. `crate::reclaim` decides which container ids are dead;
//! this module only finds and removes.
//!
//! Processes are found by their root directory: `/proc/PID/root` is the directory the
//! process sees as `/`, and stat(2) through it gives the device and inode of that
//! directory even across mount namespaces and `pivot_root`, so comparing it with the
//! snapshot's rootfs finds every process of the container (its init, a `keel exec`'d
//! shell, a RUN step's children), whichever backend started it.
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroup::{cgroup_layout, Cgroup};

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
            match fs::remove_dir(&dir) {
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

/// Where keel writes the OCI bundle of container `id` (`oci.rs`): the temp dir today,
/// `<root>/runtime/bundles/<id>` in the runtime rework under way; both are looked at.
fn bundles_of(root: &Path, id: &str) -> [PathBuf; 2] {
    [
        std::env::temp_dir().join(format!("keel-oci-{id}")),
        root.join("runtime/bundles").join(id),
    ]
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
    for bundle in bundles_of(root, id) {
        if bundle.exists() {
            found = true;
            let _ = fs::remove_dir_all(&bundle);
        }
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
