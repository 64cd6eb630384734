//! `keel exec` for namespaces and chroot containers (`oci` ones go through
//! `oci::exec`, i.e. `runc exec`): a new process that joins the container's cgroups
//! (every hierarchy where keel made `keel/<id>`, so `--memory`, `--pids-limit` and the
//! device allow-list hold for it too), then whatever namespaces the container's process
//! has apart from keel's own, chroots into its root if it shares keel's mount namespace,
//! and takes the same final steps as the container's own process: capabilities, user,
//! workdir, no_new_privs, seccomp, exec.
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use super::setup::{self, Prepared, Report, Stdio};
use super::spec::ContainerSpec;
use super::{Exit, RuntimeError};
use crate::sys;

/// Namespace kinds joined, the mount namespace last (it changes what /proc paths mean).
/// The PID namespace is the one the process gives its children: a namespaces container's
/// first process (keel's outer process) created that namespace without being in it.
/// The user namespace comes first: rootless, `keel exec` runs on the host as the
/// namespace's owner, and joining it grants the capabilities the other joins need.
const KINDS: [&str; 6] = ["user", "ipc", "uts", "net", "pid_for_children", "mnt"];

/// Runs `spec`'s command inside the container whose first process is `pid`; waits.
/// `chrooted`: the container is a chroot (`--isolation chroot`), so the process also
/// chroots into the first process's root — whether or not it shares our mount namespace
/// (rootless, it is the mount namespace of the keel that started it, not ours; joining
/// that alone would leave the process at the host's `/`).
///
/// With `stdio.terminal` (`keel exec -t`) the process opens its terminal in the
/// container's own devpts once it is in the container's root, as `keel run -t` does, and
/// sends the master back: `on_console` gets it before the wait starts.
pub fn exec_in(
    pid: i32,
    spec: &ContainerSpec,
    mut stdio: Stdio,
    chrooted: bool,
    on_console: &mut dyn FnMut(OwnedFd),
) -> Result<Exit, RuntimeError> {
    let prep = Prepared::new(spec).map_err(RuntimeError::Setup)?;
    let console = console_socket(&mut stdio)?;
    let mut joins: Vec<OwnedFd> = Vec::new();
    for kind in KINDS {
        if !sys::ns::same_as_ours(pid, kind) {
            joins.push(sys::ns::open_ns(pid, kind)?);
        }
    }
    // Resolved after the joins: a chroot container shares the mount namespace (and PID
    // namespace) of its keel, whose /proc still shows `pid`.
    let chroot_into = (chrooted || sys::ns::same_as_ours(pid, "mnt"))
        .then(|| std::path::PathBuf::from(format!("/proc/{pid}/root")));
    // Opened here, while the host's cgroupfs is in view: the child moves itself in by
    // writing "0" (`cgroup::join_self`), which spares the RCU grace period a move by pid
    // waits out (docs/performance.md, Session 5 — latency).
    let cgroups = super::cgroup::Cgroup {
        dirs: super::cgroup::Cgroup::existing(&super::cgroup_layout(), &spec.id),
    }
    .self_join_files()?;
    let (rep_r, rep_w) = sys::proc::pipe()?;
    let child = match sys::proc::fork()? {
        sys::proc::Fork::Child => {
            sys::proc::close_raw(rep_r.as_raw_fd());
            // Into the container's cgroups first; everything forked from here on stays
            // inside them.
            if let Err(m) = super::cgroup::join_self(cgroups) {
                setup::fail(&rep_w, Report::Setup(m), 255);
            }
            for fd in &joins {
                if let Err(e) = sys::ns::setns(fd) {
                    setup::fail(&rep_w, Report::Setup(e.to_string()), 255);
                }
            }
            if let Some(root) = &chroot_into {
                if let Err(e) = sys::mount::chroot(root) {
                    setup::fail(&rep_w, Report::Setup(e.to_string()), 255);
                }
            }
            // Joining a PID namespace takes effect for children: fork once more.
            match sys::proc::fork() {
                Ok(sys::proc::Fork::Child) => setup::exec_child(spec, &prep, &stdio, &rep_w),
                Ok(sys::proc::Fork::Parent(grandchild)) => {
                    drop(rep_w);
                    let code = sys::proc::wait(grandchild).map(|e| e.code()).unwrap_or(255);
                    sys::proc::exit(code)
                }
                Err(e) => setup::fail(&rep_w, Report::Setup(e.to_string()), 255),
            }
        }
        sys::proc::Fork::Parent(child) => child,
    };
    drop((rep_w, stdio, cgroups));
    finish(child, &rep_r, console, on_console)
}

/// With `stdio.terminal`: a socket pair whose far end the process sends its terminal's
/// master on (kept in `stdio.console`); keel's end is returned.
fn console_socket(stdio: &mut Stdio) -> Result<Option<OwnedFd>, RuntimeError> {
    if stdio.terminal.is_none() {
        return Ok(None);
    }
    let (keel_end, child_end) = sys::tty::console_pair()?;
    stdio.console = Some(child_end);
    Ok(Some(keel_end))
}

/// keel's side once the process is forked: forward signals to it, read its report (EOF
/// at exec), hand over its terminal's master, wait for it.
fn finish(
    child: i32,
    rep_r: &OwnedFd,
    console: Option<OwnedFd>,
    on_console: &mut dyn FnMut(OwnedFd),
) -> Result<Exit, RuntimeError> {
    let forwarding = sys::proc::forward_signals(child).ok();
    let report = sys::proc::read_to_end(rep_r)?;
    // The master is sent before exec, and the report ends at exec: queued by now.
    if let Some(sock) = console {
        if let Some(master) = sys::tty::recv_fd(std::os::fd::AsFd::as_fd(&sock), false)? {
            on_console(master);
        }
    }
    let code = sys::proc::wait(child)?.code();
    drop(forwarding);
    match setup::Report::decode(&report) {
        None => Ok(Exit {
            code,
            exec_error: None,
        }),
        Some(Report::Exec { code, message }) => Ok(Exit {
            code,
            exec_error: Some(message),
        }),
        Some(Report::Setup(m)) => Err(RuntimeError::Setup(m)),
    }
}

/// The root directory of a running container's first process, for reading its accounts.
pub fn root_of(pid: i32) -> std::path::PathBuf {
    Path::new("/proc").join(pid.to_string()).join("root")
}
