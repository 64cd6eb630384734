//! `keel exec` as a library: runs another process in a running container through the
//! backend the container was started with. `oci` containers go through the runtime
//! (`runc exec`), `namespaces` and `chroot` ones through `runtime::join`; a chroot
//! container's process gets the same reduced capabilities and syscalls as its first one.
//!
//! As with `docker exec`, the process starts from what the container was run with (the
//! env of `-e`/`--env-file`/`PORT`, `-w`, `-u`, the hostname), and `-t` gives it a
//! pseudo-terminal of its own as its controlling terminal, opened in the container's own
//! devpts like `keel run -t`'s (the user's terminal is relayed, never handed in: it is
//! already the controlling terminal of the user's session).
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use super::{ContainerConfig, ContainerState};
use crate::runtime::{self, ContainerSpec, Exit, RunOptions, RuntimeError, Stdio};

/// What `keel exec` was asked for.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub command: Vec<String>,
    /// `KEY=VALUE` entries added after the container's own env.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub interactive: bool,
    pub tty: bool,
}

/// The process options of an exec in `c`: the container's run-time env, workdir, user
/// and hostname, overridden by the exec's flags.
pub fn options(c: &ContainerConfig, r: &ExecRequest) -> RunOptions {
    RunOptions {
        cmd: Some(r.command.clone()),
        entrypoint: Some(Vec::new()),
        env: c.env.iter().chain(&r.env).cloned().collect(),
        workdir: r.workdir.clone().or_else(|| c.workdir.clone()),
        user: r.user.clone().or_else(|| c.user.clone()),
        hostname: Some(
            c.hostname
                .clone()
                .unwrap_or_else(|| c.id.chars().take(12).collect()),
        ),
        tty: r.tty,
        ..Default::default()
    }
}

/// Runs `spec` in the running container `c` (see [`exec`]) with the stdio `r` asks for:
/// with `tty`, a new pseudo-terminal in the container relayed to the user's (raw while it
/// runs, resized with it on SIGWINCH).
pub fn exec_attached(
    keel_root: &Path,
    c: &ContainerConfig,
    pid: i32,
    root: &Path,
    spec: &ContainerSpec,
    r: &ExecRequest,
) -> Result<Exit, RuntimeError> {
    let stdin = || -> Option<OwnedFd> {
        if r.interactive {
            std::io::stdin().as_fd().try_clone_to_owned().ok()
        } else {
            std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
        }
    };
    if !r.tty {
        let stdio = Stdio {
            stdin: stdin(),
            ..Default::default()
        };
        return exec(keel_root, c, pid, root, spec, stdio, &mut |_| {});
    }
    // The terminal is made inside the container (its own devpts, as for `keel run -t`);
    // its master comes back before the wait, and the relay starts there.
    let user = std::io::stdin();
    let on_tty = crate::sys::tty::is_terminal(user.as_fd());
    let size = on_tty.then(|| crate::sys::tty::size_of(user.as_fd()));
    let stdio = Stdio {
        terminal: Some(size.flatten().unwrap_or_default()),
        ..Default::default()
    };
    let mut relay = None;
    let mut on_console = |master: OwnedFd| {
        // A copy of the master for the SIGWINCH handler (the relay owns the other),
        // followed before the size is copied: a resize in between is not lost.
        let resize = master.try_clone().ok();
        let follow = resize
            .as_ref()
            .map(|m| crate::sys::proc::follow_window_size(m.as_fd()));
        let raw = on_tty.then(|| {
            crate::sys::tty::copy_window_size(user.as_fd(), master.as_fd());
            crate::sys::tty::RawMode::enter(user.as_fd()).ok()
        });
        let thread = super::launch::relay_pty(master, r.interactive);
        relay = Some((raw, follow, resize, thread));
        crate::fault::delay("exec.terminal-sized");
    };
    let exit = exec(keel_root, c, pid, root, spec, stdio, &mut on_console);
    if let Some((raw, follow, resize, thread)) = relay {
        drop(follow);
        drop(resize);
        let _ = thread.join(); // EOF/EIO once the exec'd process and its children close it
        drop(raw);
    }
    exit
}

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
    on_console: &mut dyn FnMut(OwnedFd),
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
            runtime::oci::exec(&oci, pid, spec, stdio, on_console)
        }
        "chroot" => runtime::join::exec_in(pid, &spec.for_chroot(), stdio, true, on_console),
        _ => runtime::join::exec_in(pid, spec, stdio, false, on_console),
    }
}

/// The root directory to read a running container's accounts from (`-u NAME`): the
/// main process's root for namespaces and chroot; for oci the runtime's process is on the
/// host, so the container's first process as the runtime reports it.
pub fn accounts_root(
    keel_root: &Path,
    c: &ContainerConfig,
    st: &ContainerState,
) -> Option<std::path::PathBuf> {
    let (pid, _) = st.live_pid()?;
    if c.isolation == "oci" {
        let runc = c.runtime.clone().unwrap_or_else(|| "runc".into());
        // Right after `keel run -d` the runtime may still be creating the container. Its
        // state is where keel's runs keep it (rootless: under the user's runtime dir).
        let oci = runtime::oci::Oci::in_root(runc, keel_root);
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
