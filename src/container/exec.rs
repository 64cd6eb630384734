//! `keel exec` as a library: runs another process in a running container through the
//! backend the container was started with. `oci` containers go through the runtime
//! (`runc exec`), `namespaces` and `chroot` ones through `runtime::join`; a chroot
//! container's process gets the same reduced capabilities and syscalls as its first one.
use std::path::Path;

use super::{ContainerConfig, ContainerState};
use crate::runtime::{self, ContainerSpec, Exit, RuntimeError, Stdio};

/// Runs `spec` (planned against the container's image) inside the running container `c`
/// whose main process is `pid` (proven by the caller); waits for it.
pub fn exec(
    keel_root: &Path,
    c: &ContainerConfig,
    pid: i32,
    spec: &ContainerSpec,
    stdio: Stdio,
) -> Result<Exit, RuntimeError> {
    match c.isolation.as_str() {
        "oci" => {
            let runc = c.runtime.clone().unwrap_or_else(|| "runc".into());
            let oci = runtime::oci::Oci::in_root(runc, keel_root);
            runtime::oci::exec(&oci, spec, stdio)
        }
        "chroot" => runtime::join::exec_in(pid, &spec.for_chroot(), stdio),
        _ => runtime::join::exec_in(pid, spec, stdio),
    }
}

/// The root directory to read a running container's accounts from (`-u NAME`): the
/// main process's root for namespaces and chroot; for oci, the runtime's process is on
/// the host, so its first child's (the container's PID 1) root.
pub fn accounts_root(c: &ContainerConfig, st: &ContainerState) -> Option<std::path::PathBuf> {
    let (pid, _) = st.live_pid()?;
    if c.isolation == "oci" {
        let holder = crate::sys::session::netns_holder(pid, std::time::Duration::from_secs(1));
        return holder.map(runtime::join::root_of);
    }
    Some(runtime::join::root_of(pid))
}
