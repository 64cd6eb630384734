//! The `chroot` backend for hosts without namespaces: the same mounts, made in the host's
//! mount namespace below the rootfs (and removed afterwards), then chroot and exec.
//!
//! Weaker isolation, documented as such (docs/run.md): no PID, UTS, IPC or network
//! separation and the host's hostname. What would reach the host without namespaces is
//! taken away instead: CAP_SYS_CHROOT (a second chroot leaves the root), CAP_KILL and the
//! signal/trace syscalls (host processes are visible), raw sockets and privileged ports
//! (host network), CAP_MKNOD. Capabilities, no_new_privs, seccomp, the device allow-list,
//! the user and cgroup limits apply.
use std::path::Path;

use super::setup::{self, Report, Stdio};
use super::spec::{ContainerSpec, MountOp};
use super::{Cleanup, Container, Isolation, RuntimeError};
use crate::sys;

/// chroot(2) with mounts; no namespaces.
pub struct Chroot;

impl Isolation for Chroot {
    fn name(&self) -> &'static str {
        "chroot"
    }

    fn available(&self) -> Result<(), RuntimeError> {
        if !sys::proc::is_root() {
            return Err(RuntimeError::Unavailable {
                backend: "chroot",
                why: "keel must be root, or rootless in its user namespace, for chroot and mounts; see docs/rootless.md".into(),
            });
        }
        Ok(())
    }

    fn start(
        &self,
        spec: &ContainerSpec,
        rootfs: &Path,
        stdio: Stdio,
    ) -> Result<Container, RuntimeError> {
        // Without PID and network namespaces some capabilities and syscalls reach the
        // host; the spec says which (`ContainerSpec::for_chroot`).
        let spec = &spec.for_chroot();
        super::fork_container(
            spec,
            rootfs,
            stdio,
            |root| {
                let kept = super::mounts_below(&root)?;
                Ok(Cleanup::UnmountBelow { root, kept })
            },
            |rootfs, prep, stdio, report| {
                if let Err(m) = enter(spec, rootfs) {
                    setup::fail(report, Report::Setup(m), 255);
                }
                setup::exec_child(spec, prep, stdio, report)
            },
        )
    }
}

/// Mounts below the rootfs (host namespace), then chroot into it.
fn enter(spec: &ContainerSpec, rootfs: &Path) -> Result<(), String> {
    let e = |e: sys::SysError| e.to_string();
    let _ = sys::proc::kill_with_parent();
    if spec.mounts.contains(&MountOp::RootReadOnly) {
        sys::mount::bind(rootfs, rootfs, false).map_err(e)?;
    }
    // mqueue without an IPC namespace would expose the host's queues.
    setup::apply_mounts(rootfs, &spec.mounts, &["mqueue"])?;
    if spec.mounts.contains(&MountOp::RootReadOnly) {
        sys::mount::remount_readonly(rootfs).map_err(e)?;
    }
    sys::mount::chroot(rootfs).map_err(e)
}
