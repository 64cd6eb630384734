//! Running containers: `spec` plans (pure), the backends apply a plan to a prepared rootfs.
//!
//! One trait, three backends: [`namespaces::Namespaces`] (default), [`chroot::Chroot`]
//! (weaker: no namespaces), [`oci::Oci`] (writes a bundle, runs runc/crun/youki). Both
//! `keel run` and `keel build`'s RUN steps call [`Isolation::run`] or [`Isolation::start`].
//! This module does not print: exec failures come back in [`Exit::exec_error`].
pub mod cgroup;
pub mod chroot;
pub mod devices;
pub mod etc;
pub mod join;
pub mod namespaces;
pub mod oci;
pub mod reclaim;
pub mod seccomp;
pub mod setup;
pub mod spec;

use crate::sys::hostfs;
use std::path::{Path, PathBuf};

pub use cgroup::{cgroup_layout, CgroupLayout};
pub use setup::Stdio;
pub use spec::{
    plan, plan_for_rootfs, BindMount, ContainerSpec, Limits, MountOp, NetworkMode, RunOptions,
};

use crate::sys::SysError;

/// Errors starting or running a container; each names the backend step at fault.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("{backend} isolation is not available here: {why}")]
    Unavailable { backend: &'static str, why: String },
    #[error("container setup failed: {0}")]
    Setup(String),
    #[error("rootfs {0} is not a directory; prepare the snapshot first")]
    NoRootfs(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{runtime} {args} failed ({status}): {stderr}")]
    Runtime {
        runtime: String,
        args: String,
        status: String,
        stderr: String,
    },
}

/// How a container ended, in `keel run`'s terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The process's exit code; 128+N after signal N; 127/126 when the command was not
    /// found / not executable in the image.
    pub code: i32,
    /// The error text when the command could not be exec'd (Docker prints it).
    pub exec_error: Option<String>,
}

/// A started container; [`Container::wait`] ends it and cleans up (cgroups, mounts, state).
pub struct Container {
    /// Host pid of the container's first process (keel's supervisor / the command /
    /// runc); 0 when nothing was started (the command was missing, see `exec_error`).
    pub pid: i32,
    exec_error: Option<(i32, String)>,
    cgroup: Option<cgroup::Cgroup>,
    cleanup: Cleanup,
    waited: bool,
    _forwarding: Option<crate::sys::proc::Forwarding>,
    /// With [`Stdio::terminal`]: the master of the container's pseudo-terminal.
    console: Option<std::os::fd::OwnedFd>,
}

/// Backend-specific teardown after the process ends.
enum Cleanup {
    None,
    /// Nothing to undo, and nothing can be left running: the first process is the outer
    /// child of `namespaces`, which exits normally only after reaping the PID namespace's
    /// init, and the kernel kills every other process of a namespace before its init is
    /// gone (`zap_pid_ns_processes`). Lets teardown skip its `/proc/*/root` scan.
    PidNamespace,
    /// Unmount what the container mounted at or below the rootfs (chroot mounts live in
    /// the host namespace): every mount there but those in `kept`, the ones that were
    /// there before it started (an overlay snapshot's rootfs is itself a mount).
    UnmountBelow {
        root: PathBuf,
        kept: Vec<PathBuf>,
    },
    /// `runtime delete -f ID` and remove the bundle directory.
    Oci {
        runtime: PathBuf,
        root: Option<PathBuf>,
        id: String,
        bundle: PathBuf,
    },
}

impl Container {
    /// The master of the terminal the container got with [`Stdio::terminal`] (once); `None`
    /// when none was asked for or the container ended before it made one.
    pub fn take_console(&mut self) -> Option<std::os::fd::OwnedFd> {
        self.console.take()
    }

    /// Forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2/SIGWINCH received by this
    /// process to the container until it is waited for (for a foreground `keel run`).
    pub fn forward_signals(&mut self) -> Result<(), RuntimeError> {
        if self.pid == 0 {
            return Ok(());
        }
        self._forwarding = Some(crate::sys::proc::forward_signals(self.pid)?);
        Ok(())
    }

    /// Sends signal `sig` to the container's first process.
    pub fn kill(&self, sig: i32) -> Result<(), RuntimeError> {
        if self.pid == 0 {
            return Ok(());
        }
        Ok(crate::sys::proc::kill(self.pid, sig)?)
    }

    /// Waits for the container to end, then removes its cgroups, mounts and state.
    pub fn wait(self) -> Result<Exit, RuntimeError> {
        self.wait_all().map(|(exit, _)| exit)
    }

    /// [`Container::wait`], also saying whether every process of the container is known
    /// to have ended (its own PID namespace's init was reaped): teardown then need not
    /// look for processes left in the rootfs. False under chroot and oci, and when the
    /// first process was killed by a signal (its init may still be dying).
    pub fn wait_all(mut self) -> Result<(Exit, bool), RuntimeError> {
        let ended = if self.pid == 0 {
            Ok(crate::sys::proc::Ended::Exited(0))
        } else {
            crate::sys::proc::wait(self.pid)
        };
        self.waited = true;
        self._forwarding = None;
        let all_ended = matches!(self.cleanup, Cleanup::PidNamespace)
            && matches!(ended, Ok(crate::sys::proc::Ended::Exited(_)));
        let cleaned = self.cleanup();
        let code = ended?.code();
        cleaned?;
        let exit = match self.exec_error.take() {
            Some((code, msg)) => Exit {
                code,
                exec_error: Some(msg),
            },
            None => Exit {
                code,
                exec_error: None,
            },
        };
        Ok((exit, all_ended))
    }

    fn cleanup(&mut self) -> Result<(), RuntimeError> {
        let mut first: Option<RuntimeError> = None;
        match std::mem::replace(&mut self.cleanup, Cleanup::None) {
            Cleanup::None | Cleanup::PidNamespace => {}
            Cleanup::UnmountBelow { root, kept } => {
                // Without a PID namespace (chroot) the first process's children outlive
                // it; once the rootfs is unmounted nothing could find them any more.
                reclaim::kill_rooted_in(&root);
                if let Err(e) = unmount_below(&root, &kept) {
                    first.get_or_insert(e);
                }
            }
            Cleanup::Oci {
                runtime,
                root,
                id,
                bundle,
            } => {
                if let Err(e) = oci::delete(&runtime, root.as_deref(), &id) {
                    first.get_or_insert(e);
                }
                let _ = hostfs::remove_dir_all(&bundle);
            }
        }
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.destroy() {
                first.get_or_insert(e.into());
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // A container dropped without wait (an error path): do not leave anything behind.
        if !self.waited {
            let _ = crate::sys::proc::kill(self.pid, libc::SIGKILL);
            let _ = crate::sys::proc::wait(self.pid);
            let _ = self.cleanup();
        }
    }
}

/// The mount points at or below `root`, one entry per mount (stacked mounts repeat).
fn mounts_below(root: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    Ok(crate::sys::mount::mount_points()?
        .into_iter()
        .filter(|p| p.starts_with(root))
        .collect())
}

/// Unmounts every mount at or below `root` but those in `kept` (one per entry; mounts
/// that were there before the container), deepest first, the newest of a stack first.
fn unmount_below(root: &Path, kept: &[PathBuf]) -> Result<(), RuntimeError> {
    let mut points = mounts_below(root)?;
    for k in kept {
        // The oldest of a stack is listed first in mountinfo: keep that one.
        if let Some(i) = points.iter().position(|p| p == k) {
            points.remove(i);
        }
    }
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        match crate::sys::mount::umount_detach(&p) {
            Err(e) if e.errno() == Some(libc::EINVAL) || e.errno() == Some(libc::ENOENT) => {}
            r => r?,
        }
    }
    Ok(())
}

/// An isolation backend: applies a [`ContainerSpec`] to a prepared rootfs directory.
pub trait Isolation {
    /// `namespaces`, `chroot` or `oci`.
    fn name(&self) -> &'static str;
    /// Whether this host can run the backend; the error says what is missing.
    fn available(&self) -> Result<(), RuntimeError>;
    /// Starts the container and returns once its command has been exec'd (or failed to).
    fn start(
        &self,
        spec: &ContainerSpec,
        rootfs: &Path,
        stdio: Stdio,
    ) -> Result<Container, RuntimeError>;
    /// Starts the container and waits for it to end.
    fn run(&self, spec: &ContainerSpec, rootfs: &Path, stdio: Stdio) -> Result<Exit, RuntimeError> {
        self.start(spec, rootfs, stdio)?.wait()
    }
}

/// The backend called `name` (`namespaces`, `chroot`, `oci`); `oci_runtime` is the OCI
/// runtime binary for `oci` (default `runc`). OCI bundles go to
/// [`oci::DEFAULT_BUNDLE_ROOT`]; [`backend_in`] puts them under a keel root.
pub fn backend(name: &str, oci_runtime: Option<&Path>) -> Option<Box<dyn Isolation>> {
    backend_at(name, oci_runtime, None)
}

/// [`backend`] for the keel root `keel_root`: OCI bundles live in
/// `<keel_root>/runtime/bundles/<id>` (mode 0700).
pub fn backend_in(
    name: &str,
    oci_runtime: Option<&Path>,
    keel_root: &Path,
) -> Option<Box<dyn Isolation>> {
    backend_at(name, oci_runtime, Some(keel_root))
}

fn backend_at(
    name: &str,
    oci_runtime: Option<&Path>,
    keel_root: Option<&Path>,
) -> Option<Box<dyn Isolation>> {
    let runtime = oci_runtime
        .map(Path::to_path_buf)
        .unwrap_or_else(|| "runc".into());
    match name {
        "namespaces" => Some(Box::new(namespaces::Namespaces)),
        "chroot" => Some(Box::new(chroot::Chroot)),
        "oci" => Some(Box::new(match keel_root {
            Some(r) => oci::Oci::in_root(runtime, r),
            None => oci::Oci::new(runtime),
        })),
        _ => None,
    }
}

fn check_rootfs(rootfs: &Path) -> Result<PathBuf, RuntimeError> {
    if !rootfs.is_dir() {
        return Err(RuntimeError::NoRootfs(rootfs.to_path_buf()));
    }
    rootfs.canonicalize().map_err(|source| RuntimeError::Io {
        path: rootfs.to_path_buf(),
        source,
    })
}

/// Creates the working directory in the rootfs when the image lacks it (as Docker does).
fn ensure_cwd(rootfs: &Path, cwd: &str) -> Result<(), RuntimeError> {
    setup::ensure_dir(rootfs, cwd).map_err(RuntimeError::Setup)
}

/// Creates the container's cgroups: always the device allow-list, plus the limits.
fn make_cgroup(spec: &ContainerSpec) -> Result<Option<cgroup::Cgroup>, RuntimeError> {
    if spec.limits.is_empty() && spec.devices.is_empty() {
        return Ok(None);
    }
    let layout = cgroup_layout();
    Ok(Some(cgroup::Cgroup::create(
        &layout,
        &spec.id,
        &spec.limits,
        &spec.devices,
    )?))
}

/// How `namespaces` and `chroot` start a container: check the rootfs, prepare what the
/// child needs, make the cgroup, fork; the child waits for the go byte and then becomes the
/// container through `child` (which never returns); the parent runs the handshake.
fn fork_container(
    spec: &ContainerSpec,
    rootfs: &Path,
    mut stdio: Stdio,
    cleanup: impl FnOnce(PathBuf) -> Result<Cleanup, RuntimeError>,
    child: impl FnOnce(
        &Path,
        &setup::Prepared,
        &Stdio,
        &std::os::fd::OwnedFd,
    ) -> std::convert::Infallible,
) -> Result<Container, RuntimeError> {
    use crate::sys;
    let rootfs = check_rootfs(rootfs)?;
    let prep = setup::Prepared::new(spec).map_err(RuntimeError::Setup)?;
    ensure_cwd(&rootfs, &spec.cwd)?;
    let cgroup = make_cgroup(spec)?;
    let joins = match cgroup.as_ref().map(cgroup::Cgroup::self_join_files) {
        Some(Err(e)) => {
            let _ = cgroup.map(cgroup::Cgroup::destroy);
            return Err(e.into());
        }
        j => j.and_then(Result::ok).unwrap_or_default(),
    };
    let (go_r, go_w) = sys::proc::pipe()?;
    let (rep_r, rep_w) = sys::proc::pipe()?;
    let console = match stdio.terminal {
        Some(_) => {
            let (keel_end, child_end) = sys::tty::console_pair()?;
            stdio.console = Some(child_end);
            Some(keel_end)
        }
        None => None,
    };
    let pid = match sys::proc::fork() {
        Ok(sys::proc::Fork::Child) => {
            let ready = ForkedChild {
                go: &go_r,
                report: &rep_w,
                joins,
                stdio: &stdio,
            };
            ready.join_and_wait();
            // `child` never returns (it execs or exits); the match just says so to the types.
            #[allow(unreachable_code)]
            match child(&rootfs, &prep, &stdio, &rep_w) {}
        }
        Ok(sys::proc::Fork::Parent(pid)) => pid,
        Err(e) => {
            if let Some(cg) = cgroup {
                let _ = cg.destroy();
            }
            return Err(e.into());
        }
    };
    drop((go_r, rep_w, stdio, joins));
    // Before the go byte: the child has mounted nothing yet.
    let cleanup = match cleanup(rootfs) {
        Ok(c) => c,
        Err(e) => {
            let _ = sys::proc::kill(pid, libc::SIGKILL);
            let _ = sys::proc::wait(pid);
            if let Some(cg) = cgroup {
                let _ = cg.destroy();
            }
            return Err(e);
        }
    };
    let mut c = handshake(pid, cgroup, go_w, rep_r, cleanup)?;
    if let Some(sock) = console {
        // Sent before exec, and the handshake returns after it: queued by now.
        c.console = sys::tty::recv_fd(std::os::fd::AsFd::as_fd(&sock), false)?;
    }
    Ok(c)
}

/// What the forked child of [`fork_container`] holds before it runs its backend's code.
struct ForkedChild<'a> {
    go: &'a std::os::fd::OwnedFd,
    report: &'a std::os::fd::OwnedFd,
    joins: Vec<std::os::fd::OwnedFd>,
    stdio: &'a Stdio,
}

impl ForkedChild<'_> {
    /// Closes every descriptor the child does not need, joins the cgroup (device
    /// allow-list, limits) before anything else runs, and waits for the parent's go
    /// byte; exits if the parent gives up.
    fn join_and_wait(self) {
        use crate::sys;
        let mut keep: Vec<&std::os::fd::OwnedFd> = vec![self.go, self.report];
        keep.extend(self.joins.iter());
        sys::proc::close_fds_except(&keep_fds(&keep, self.stdio));
        if let Err(m) = cgroup::join_self(self.joins) {
            setup::fail(self.report, setup::Report::Setup(m), 255);
        }
        if !await_go(self.go) {
            sys::proc::exit(1);
        }
    }
}

/// Parent side of the start handshake shared by `namespaces` and `chroot`: let the child
/// go (it has moved itself into `cgroup`), then read what it reports before exec.
fn handshake(
    pid: i32,
    cgroup: Option<cgroup::Cgroup>,
    go: std::os::fd::OwnedFd,
    report: std::os::fd::OwnedFd,
    cleanup: Cleanup,
) -> Result<Container, RuntimeError> {
    let mut c = Container {
        pid,
        exec_error: None,
        cgroup,
        cleanup,
        waited: false,
        _forwarding: None,
        console: None,
    };
    // A child that failed to join its cgroup has reported and exited: the go byte then
    // meets a closed pipe, and the report says why.
    let went = crate::sys::proc::write_all(&go, b"g");
    drop(go);
    let bytes = crate::sys::proc::read_to_end(&report)?;
    match setup::Report::decode(&bytes) {
        None => {
            went?;
            Ok(c)
        }
        Some(setup::Report::Exec { code, message }) => {
            c.exec_error = Some((code, message));
            Ok(c)
        }
        Some(setup::Report::Setup(m)) => {
            let _ = crate::sys::proc::wait(c.pid);
            c.waited = true;
            let _ = c.cleanup();
            Err(RuntimeError::Setup(m))
        }
    }
}

/// Child side of the handshake: wait for the parent's go byte (EOF means it gave up).
fn await_go(go_read: &std::os::fd::OwnedFd) -> bool {
    matches!(crate::sys::proc::read_to_end(go_read).as_deref(), Ok(b"g"))
}

/// The fds a forked child keeps: its pipe ends and the container's stdio.
fn keep_fds(pipes: &[&std::os::fd::OwnedFd], stdio: &Stdio) -> Vec<i32> {
    use std::os::fd::AsRawFd;
    let io = [&stdio.stdin, &stdio.stdout, &stdio.stderr, &stdio.console];
    pipes
        .iter()
        .map(|f| f.as_raw_fd())
        .chain(io.into_iter().flatten().map(|f| f.as_raw_fd()))
        .collect()
}
