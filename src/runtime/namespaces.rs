//! The default backend: new mount, PID, UTS, IPC (and network) namespaces, pivot_root
//! into the rootfs, a tiny init as PID 1 that forwards signals and reaps, and the
//! command as its child with Docker's capabilities, no_new_privs and the requested user.
//!
//! Process tree: keel → outer (host PID namespace; forwards signals) → init (PID 1
//! inside; forwards signals, reaps) → command.
//! An init is used (like `docker run --init`) because the kernel ignores signals without
//! a handler sent to a namespace's PID 1, so `kill -9 $$` and SIGTERM would otherwise
//! not end a shell. `keel run --no-init` leaves it out: the command is PID 1 itself.
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use super::setup::{self, Prepared, Report, Stdio};
use super::spec::{ContainerSpec, MountOp, Namespace};
use super::{Cleanup, Container, Isolation, RuntimeError};
use crate::sys;

/// Linux namespaces + pivot_root.
pub struct Namespaces;

impl Isolation for Namespaces {
    fn name(&self) -> &'static str {
        "namespaces"
    }

    fn available(&self) -> Result<(), RuntimeError> {
        let why = |w: &str| {
            Err(RuntimeError::Unavailable {
                backend: "namespaces",
                why: w.to_string(),
            })
        };
        for kind in ["mnt", "pid", "uts", "ipc", "net"] {
            if !sys::ns::supported(kind) {
                return why(&format!(
                    "the kernel has no {kind} namespaces; use --isolation chroot"
                ));
            }
        }
        // Rootless keel is uid 0 of its user namespace by now (cli enters it first).
        if !sys::proc::is_root() {
            return why("keel runs as an ordinary user outside a user namespace; unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1; docs/rootless.md)");
        }
        Ok(())
    }

    fn start(
        &self,
        spec: &ContainerSpec,
        rootfs: &Path,
        stdio: Stdio,
    ) -> Result<Container, RuntimeError> {
        super::fork_container(
            spec,
            rootfs,
            stdio,
            |_| {
                Ok(if spec.namespaces.contains(&Namespace::Pid) {
                    Cleanup::PidNamespace
                } else {
                    Cleanup::None
                })
            },
            |rootfs, prep, stdio, report| outer(spec, rootfs, prep, stdio, report),
        )
    }
}

/// The first child, still in the host PID namespace: enter new namespaces, fork the
/// container's PID 1, pass signals on to it and exit with its status. (`clone()` straight
/// into the namespaces would skip glibc's fork handlers, leaving malloc locks held by other
/// threads of keel locked in the child.)
fn outer(
    spec: &ContainerSpec,
    rootfs: &Path,
    prep: &Prepared,
    stdio: &Stdio,
    report: &OwnedFd,
) -> ! {
    let setup = |m: String| -> ! { setup::fail(report, Report::Setup(m), 255) };
    let e = |e: sys::SysError| e.to_string();
    if let Err(m) = sys::proc::kill_with_parent()
        .and_then(|_| sys::ns::unshare(&spec.namespaces))
        .and_then(|_| sys::proc::block_all_signals())
        .map_err(e)
    {
        setup(m);
    }
    let init_pid = match sys::proc::fork() {
        Ok(sys::proc::Fork::Child) => init(spec, rootfs, prep, stdio, report),
        Ok(sys::proc::Fork::Parent(pid)) => pid,
        Err(err) => setup(err.to_string()),
    };
    sys::proc::close_raw(report.as_raw_fd());
    supervise(init_pid)
}

/// PID 1 of the container: build the filesystem view, start the command, then forward
/// signals to it and reap zombies until it ends; exit with its status.
fn init(
    spec: &ContainerSpec,
    rootfs: &Path,
    prep: &Prepared,
    stdio: &Stdio,
    report: &OwnedFd,
) -> ! {
    let setup = |m: String| -> ! { setup::fail(report, Report::Setup(m), 255) };
    // PID 1's command line is readable by every process in the container: show a
    // neutral name, not keel's path, root and flags (inherited through fork).
    if let Err(m) = sys::proc::kill_with_parent()
        .and_then(|_| sys::proc::set_cmdline("init"))
        .map_err(|e| e.to_string())
        .and_then(|_| prepare_root(spec, rootfs))
    {
        setup(m);
    }
    if spec.no_init {
        // `--no-init`: the command is PID 1 and gets only the signals it handles.
        setup::exec_child(spec, prep, stdio, report);
    }
    let child = match sys::proc::fork() {
        Ok(sys::proc::Fork::Child) => setup::exec_child(spec, prep, stdio, report),
        Ok(sys::proc::Fork::Parent(pid)) => pid,
        Err(err) => setup(err.to_string()),
    };
    // Our copy of the report pipe must close so the parent sees EOF once the command execs;
    // the terminal's socket to keel is not PID 1's to keep either.
    sys::proc::close_raw(report.as_raw_fd());
    if let Some(sock) = &stdio.console {
        sys::proc::close_raw(sock.as_raw_fd());
    }
    supervise(child)
}

/// With all signals blocked: forward every signal but SIGCHLD to `child`, reap any child
/// that ends, and exit with `child`'s status (128+N for signal N) when it ends. Never exits
/// before `child` is reaped: keel takes the outer's normal exit to mean the container's
/// init, and so every process of its PID namespace, is gone (`Cleanup::PidNamespace`).
fn supervise(child: i32) -> ! {
    loop {
        let Ok(sig) = sys::proc::sigwait() else {
            let _ = sys::proc::kill(child, libc::SIGKILL);
            let _ = sys::proc::wait(child);
            sys::proc::exit(255)
        };
        if sig == libc::SIGCHLD {
            while let Ok(Some((pid, ended))) = sys::proc::reap_any() {
                if pid == child {
                    sys::proc::exit(ended.code());
                }
            }
        } else {
            let _ = sys::proc::kill(child, sig);
        }
    }
}

/// Mount namespace setup, ending inside the new root.
fn prepare_root(spec: &ContainerSpec, rootfs: &Path) -> Result<(), String> {
    let e = |e: sys::SysError| e.to_string();
    sys::mount::make_rprivate(Path::new("/")).map_err(e)?;
    // pivot_root needs the new root to be a mount point.
    sys::mount::bind(rootfs, rootfs, false).map_err(e)?;
    setup::apply_mounts(rootfs, &spec.mounts, &[])?;
    if spec.namespaces.contains(&Namespace::Uts) {
        sys::ns::sethostname(&spec.hostname).map_err(e)?;
    }
    if spec.namespaces.contains(&Namespace::Network) {
        sys::net::loopback_up().map_err(e)?;
    }
    sys::mount::pivot_root(rootfs).map_err(e)?;
    if spec.mounts.contains(&MountOp::RootReadOnly) {
        sys::mount::remount_root_readonly().map_err(e)?;
    }
    Ok(())
}

/// Runs another command in a running container (`keel exec`): joins the namespaces and
/// cgroups of the container whose supervisor is `container_pid` (a [`Container::pid`] from
/// this backend), then applies `spec`'s user, env, cwd and capabilities and execs
/// `spec.args`. Only `spec.id` (for the cgroups) and the process fields of `spec` are used.
pub fn exec(
    container_pid: i32,
    spec: &ContainerSpec,
    stdio: Stdio,
) -> Result<Container, RuntimeError> {
    let prep = Prepared::new(spec).map_err(RuntimeError::Setup)?;
    // Open every namespace before joining any: /proc changes meaning after the mount setns.
    // Rootless, `keel exec` runs outside any user namespace and joins the container's
    // first: as its owner it then holds the capabilities the other joins need.
    let mut fds = Vec::new();
    let user: &[&str] = if sys::proc::is_root() { &[] } else { &["user"] };
    for kind in user
        .iter()
        .chain(&["ipc", "uts", "net", "pid_for_children", "mnt"])
    {
        fds.push(sys::ns::open_ns(container_pid, kind)?);
    }
    // Joined, not owned (the container's own handle removes the cgroups), and by the
    // child itself: it writes "0" to the files opened here, sparing the RCU grace period
    // that moving it by pid waits out (docs/performance.md, Session 5 — latency).
    let joins = super::cgroup::Cgroup {
        dirs: super::cgroup::Cgroup::existing(&super::cgroup_layout(), &spec.id),
    }
    .self_join_files()?;
    let (go_r, go_w) = sys::proc::pipe()?;
    let (rep_r, rep_w) = sys::proc::pipe()?;
    let mut keep: Vec<&OwnedFd> = vec![&go_r, &rep_w];
    keep.extend(fds.iter());
    keep.extend(joins.iter());
    let pid = match sys::proc::fork()? {
        sys::proc::Fork::Child => {
            sys::proc::close_fds_except(&super::keep_fds(&keep, &stdio));
            let setup = |m: String| -> ! { setup::fail(&rep_w, Report::Setup(m), 255) };
            // Into the cgroups (device allow-list, limits) before anything else runs;
            // a failure is reported through the handshake, as for `keel run`.
            if let Err(m) = super::cgroup::join_self(joins) {
                setup(m);
            }
            if !super::await_go(&go_r) {
                sys::proc::exit(1);
            }
            if let Err(e) = sys::proc::kill_with_parent() {
                setup(e.to_string());
            }
            for fd in &fds {
                if let Err(e) = sys::ns::setns(fd) {
                    setup(format!("{e}; is the container still running?"));
                }
            }
            if let Err(e) = sys::proc::block_all_signals() {
                setup(e.to_string());
            }
            let child = match sys::proc::fork() {
                Ok(sys::proc::Fork::Child) => setup::exec_child(spec, &prep, &stdio, &rep_w),
                Ok(sys::proc::Fork::Parent(pid)) => pid,
                Err(e) => setup(e.to_string()),
            };
            sys::proc::close_raw(rep_w.as_raw_fd());
            supervise(child)
        }
        sys::proc::Fork::Parent(pid) => pid,
    };
    drop((go_r, rep_w, fds, joins));
    super::handshake(pid, None, go_w, rep_r, Cleanup::None)
}
