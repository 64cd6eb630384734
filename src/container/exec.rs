//! `keel exec` as a library: runs another process in a running container through the
//! backend the container was started with. `oci` containers go through the runtime
//! (`runc exec`), `namespaces` and `chroot` ones through `runtime::join`; a chroot
//! container's process gets the same reduced capabilities and syscalls as its first one.
use std::path::Path;

use super::{ContainerConfig, ContainerState};
use crate::runtime::{self, ContainerSpec, Exit, RuntimeError, Stdio};

/// Runs `spec` (planned against the container's image) inside the running container `c`
/// whose main process is `pid` (proven by the caller) and whose root directory the host
/// sees at `root` ([`accounts_root`]); waits for it.
pub fn exec(
    keel_root: &Path,
    c: &ContainerConfig,
    pid: i32,
    root: &Path,
    spec: &ContainerSpec,
    stdio: Stdio,
) -> Result<Exit, RuntimeError> {
    match c.isolation.as_str() {
        "oci" => {
            // Docker's 127/126 for a missing or non-executable command, not runc's 255.
            if let Err((code, message)) = runtime::oci::check_command(root, spec) {
                return Ok(Exit {
                    code,
                    exec_error: Some(message),
                });
            }
            let runc = c.runtime.clone().unwrap_or_else(|| "runc".into());
            let oci = runtime::oci::Oci::in_root(runc, keel_root);
            runtime::oci::exec(&oci, spec, stdio)
        }
        "chroot" => runtime::join::exec_in(pid, &spec.for_chroot(), stdio),
        _ => runtime::join::exec_in(pid, spec, stdio),
    }
}

/// The root directory to read a running container's accounts from (`-u NAME`): the
/// main process's root for namespaces and chroot; for oci the runtime's process is on the
/// host, so the container's first process as the runtime reports it.
pub fn accounts_root(c: &ContainerConfig, st: &ContainerState) -> Option<std::path::PathBuf> {
    let (pid, _) = st.live_pid()?;
    if c.isolation == "oci" {
        let runc = c.runtime.clone().unwrap_or_else(|| "runc".into());
        // Right after `keel run -d` the runtime may still be creating the container.
        let oci = runtime::oci::Oci::new(runc);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(init) = runtime::oci::init_pid(&oci, &c.id) {
                return Some(runtime::join::root_of(init));
            }
            if std::time::Instant::now() >= deadline || st.live_pid().is_none() {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    Some(runtime::join::root_of(pid))
}
