//! The `oci` backend: writes an OCI runtime bundle (`config.json` built from the same
//! [`ContainerSpec`]) and runs an external runtime: `runc run --bundle DIR ID` (crun and
//! youki take the same arguments). No syscalls here; the runtime does them.
//!
//! Differences from `namespaces`: the command is PID 1 itself (runc has no init), so it
//! ignores signals it has no handler for when they come from inside the container.
use crate::sys::hostfs;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder,
    Process, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::setup::Stdio;
use super::spec::{ContainerSpec, MountOp, Namespace};
use super::{Cleanup, Container, Isolation, RuntimeError};

/// Where bundles go when no keel root is given: private to root, never the shared /tmp
/// (a bundle's config.json holds env values and build secrets).
pub const DEFAULT_BUNDLE_ROOT: &str = "/run/keel/bundles";

/// An external OCI runtime.
pub struct Oci {
    /// The runtime binary (`runc`, a path, `crun`, …).
    pub runtime: PathBuf,
    /// The runtime's state directory (`--root`); `None` uses the runtime's default.
    pub state_root: Option<PathBuf>,
    /// The directory holding one bundle per container (mode 0700).
    pub bundle_root: PathBuf,
}

impl Oci {
    pub fn new(runtime: PathBuf) -> Oci {
        Oci {
            runtime,
            state_root: None,
            bundle_root: DEFAULT_BUNDLE_ROOT.into(),
        }
    }

    /// Bundles under `<keel root>/runtime/bundles`.
    pub fn in_root(runtime: PathBuf, keel_root: &Path) -> Oci {
        // Rootless, the runtime's default state dir (/run/runc for uid 0) is the host's.
        let state_root = crate::sys::userns::rootless_cached()
            .then(|| crate::sys::userns::runtime_dir().join("runc"));
        Oci {
            bundle_root: bundle_root(keel_root),
            state_root,
            ..Oci::new(runtime)
        }
    }

    fn base(&self) -> Command {
        let mut c = Command::new(&self.runtime);
        if let Some(r) = &self.state_root {
            c.arg("--root").arg(r);
        }
        c
    }
}

fn oci_err(e: oci_spec::OciSpecError) -> RuntimeError {
    RuntimeError::Setup(format!("building config.json: {e}"))
}

/// `<keel root>/runtime/bundles`: where the bundles of a keel root's containers live.
pub fn bundle_root(keel_root: &Path) -> PathBuf {
    keel_root.join("runtime").join("bundles")
}

/// A file for one `runc exec` (its process.json or pid file) in the container's bundle
/// directory: it goes with the bundle, which the container's removal (or gc's reclaim of
/// a dead container) deletes whole, so it needs no owner-tagged name.
fn exec_file(bundle: &Path, suffix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    #[allow(clippy::disallowed_methods)]
    tempfile::Builder::new()
        .prefix("exec-")
        .suffix(suffix)
        .tempfile_in(bundle)
}

/// Creates `dir` (and missing parents) readable by root only, and tightens it if it
/// already existed.
fn private_dir(dir: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| RuntimeError::Io {
        path: dir.to_path_buf(),
        source,
    };
    hostfs::create_dir_with(std::fs::DirBuilder::new().recursive(true).mode(0o700), dir)
        .map_err(io)?;
    hostfs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

fn capabilities(names: &[String]) -> Result<oci_spec::runtime::Capabilities, RuntimeError> {
    names
        .iter()
        .map(|c| {
            serde_json::from_value::<Capability>(serde_json::Value::String(c.clone()))
                .map_err(|e| RuntimeError::Setup(format!("capability {c}: {e}")))
        })
        .collect()
}

/// The OCI process for `spec`: bounding set = the spec's capabilities, effective and
/// permitted = its effective list (empty for a non-root user), inheritable and ambient
/// empty (Docker's behaviour).
pub fn process(spec: &ContainerSpec) -> Result<Process, RuntimeError> {
    let bounding = capabilities(&spec.capabilities)?;
    let effective = capabilities(&spec.effective_capabilities)?;
    let user = UserBuilder::default()
        .uid(spec.user.uid)
        .gid(spec.user.gid)
        .additional_gids(spec.user.additional_gids.clone())
        // runc's default too, written out so the bundle says it.
        .umask(super::setup::CONTAINER_UMASK)
        .build()
        .map_err(oci_err)?;
    ProcessBuilder::default()
        // `-t` callers turn it on and pass a console socket (the terminal is made inside).
        .terminal(false)
        .user(user)
        .args(spec.args.clone())
        .env(spec.env.clone())
        .cwd(spec.cwd.clone())
        .no_new_privileges(spec.no_new_privileges)
        .rlimits(rlimits(spec)?)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(bounding)
                .effective(effective.clone())
                .permitted(effective)
                .inheritable(oci_spec::runtime::Capabilities::new())
                .ambient(oci_spec::runtime::Capabilities::new())
                .build()
                .map_err(oci_err)?,
        )
        .build()
        .map_err(oci_err)
}

/// `process.rlimits`: the spec's `--ulimit`s, as runc sets them.
fn rlimits(spec: &ContainerSpec) -> Result<Vec<oci_spec::runtime::PosixRlimit>, RuntimeError> {
    spec.ulimits
        .iter()
        .map(|l| {
            let typ: oci_spec::runtime::PosixRlimitType =
                format!("RLIMIT_{}", l.name.to_uppercase())
                    .parse()
                    .map_err(|_| RuntimeError::Unavailable {
                        backend: "oci",
                        why: format!("unknown --ulimit {}", l.name),
                    })?;
            oci_spec::runtime::PosixRlimitBuilder::default()
                .typ(typ)
                .soft(l.soft)
                .hard(l.hard)
                .build()
                .map_err(oci_err)
        })
        .collect()
}

/// `linux.resources.devices`: the spec's device rules, in order.
fn device_rules(
    spec: &ContainerSpec,
) -> Result<Vec<oci_spec::runtime::LinuxDeviceCgroup>, RuntimeError> {
    spec.devices
        .iter()
        .map(|r| {
            let typ = match r.kind {
                'b' => LinuxDeviceType::B,
                'c' => LinuxDeviceType::C,
                _ => LinuxDeviceType::A,
            };
            let mut b = LinuxDeviceCgroupBuilder::default()
                .allow(r.allow)
                .typ(typ)
                .access(r.access.clone());
            if let Some(m) = r.major {
                b = b.major(m);
            }
            if let Some(m) = r.minor {
                b = b.minor(m);
            }
            b.build().map_err(oci_err)
        })
        .collect()
}

/// `linux.seccomp` for the spec (none with `seccomp=unconfined`).
fn seccomp(spec: &ContainerSpec) -> Result<Option<LinuxSeccomp>, RuntimeError> {
    let host = super::seccomp::Host::this();
    let Some(policy) =
        super::seccomp::for_spec(spec, host).map_err(|e| RuntimeError::Setup(e.to_string()))?
    else {
        return Ok(None);
    };
    serde_json::from_value(super::seccomp::oci_json(&policy))
        .map(Some)
        .map_err(|e| RuntimeError::Setup(format!("building config.json seccomp: {e}")))
}

/// The bundle's `config.json` for `spec` with its root at `rootfs`. Host device binds and
/// `/dev` symlinks are left to the runtime, which creates the default devices itself.
pub fn config(spec: &ContainerSpec, rootfs: &Path) -> Result<Spec, RuntimeError> {
    let process = process(spec)?;
    let planned = planned_mounts(spec)?;
    let mut linux = LinuxBuilder::default();
    if let Some(sc) = seccomp(spec)? {
        linux = linux.seccomp(sc);
    }
    let mut linux = linux
        .namespaces(namespaces(spec)?)
        .masked_paths(planned.masked)
        .readonly_paths(planned.readonly)
        .resources(resources(spec)?);
    if !crate::sys::userns::rootless_cached() {
        linux = linux.cgroups_path(PathBuf::from(format!("/keel/{}", spec.id)));
    }
    let linux = linux.build().map_err(oci_err)?;
    let root = RootBuilder::default()
        .path(rootfs)
        .readonly(planned.root_read_only)
        .build()
        .map_err(oci_err)?;
    let mut b = SpecBuilder::default()
        .version("1.0.2")
        .root(root)
        .process(process)
        .mounts(planned.mounts)
        .linux(linux);
    if spec.namespaces.contains(&Namespace::Uts) {
        b = b.hostname(spec.hostname.clone());
    }
    b.build().map_err(oci_err)
}

/// The spec's mount plan in config.json's terms: mounts, masked and read-only paths.
struct PlannedMounts {
    mounts: Vec<Mount>,
    masked: Vec<String>,
    readonly: Vec<String>,
    root_read_only: bool,
}

fn planned_mounts(spec: &ContainerSpec) -> Result<PlannedMounts, RuntimeError> {
    let mut p = PlannedMounts {
        mounts: Vec::new(),
        masked: Vec::new(),
        readonly: Vec::new(),
        root_read_only: false,
    };
    let mount = |target: &str, typ: &str, source: &Path, options: Vec<String>| {
        MountBuilder::default()
            .destination(target)
            .typ(typ)
            .source(source)
            .options(options)
            .build()
            .map_err(oci_err)
    };
    for op in &spec.mounts {
        match op {
            MountOp::Fs {
                fstype,
                source,
                target,
                options,
            } => p
                .mounts
                .push(mount(target, fstype, Path::new(source), options.clone())?),
            MountOp::Bind { source, target, .. }
                if source.starts_with("/dev") && target.starts_with("/dev/") => {}
            MountOp::Bind {
                source,
                target,
                readonly,
            } => {
                let mut o = vec!["rbind".to_string(), "rprivate".to_string()];
                if *readonly {
                    o.push("ro".into());
                }
                p.mounts.push(mount(target, "bind", source, o)?);
            }
            MountOp::Symlink { .. } => {}
            MountOp::Mask { path } => p.masked.push(path.clone()),
            MountOp::ReadOnly { path } => p.readonly.push(path.clone()),
            MountOp::RootReadOnly => p.root_read_only = true,
        }
    }
    Ok(p)
}

fn namespaces(spec: &ContainerSpec) -> Result<Vec<LinuxNamespace>, RuntimeError> {
    spec.namespaces
        .iter()
        .map(|n| {
            let typ = match n {
                Namespace::Mount => LinuxNamespaceType::Mount,
                Namespace::Pid => LinuxNamespaceType::Pid,
                Namespace::Uts => LinuxNamespaceType::Uts,
                Namespace::Ipc => LinuxNamespaceType::Ipc,
                Namespace::Network => LinuxNamespaceType::Network,
            };
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(oci_err)
        })
        .collect()
}

/// Devices, memory, pids and CPU limits.
fn resources(spec: &ContainerSpec) -> Result<LinuxResources, RuntimeError> {
    // Rootless there is no device cgroup to program (and none needed: a user namespace
    // cannot open device nodes beyond the bound defaults); runc then leaves cgroups alone.
    let mut res = if crate::sys::userns::rootless_cached() {
        LinuxResourcesBuilder::default()
    } else {
        LinuxResourcesBuilder::default().devices(device_rules(spec)?)
    };
    if let Some(m) = spec.limits.memory_bytes {
        res = res.memory(
            LinuxMemoryBuilder::default()
                .limit(m as i64)
                .swap(m as i64)
                .build()
                .map_err(oci_err)?,
        );
    }
    if let Some(p) = spec.limits.pids {
        res = res.pids(
            LinuxPidsBuilder::default()
                .limit(p as i64)
                .build()
                .map_err(oci_err)?,
        );
    }
    if let Some(q) = spec.limits.cpu_quota() {
        res = res.cpu(
            LinuxCpuBuilder::default()
                .quota(q)
                .period(super::Limits::CPU_PERIOD)
                .build()
                .map_err(oci_err)?,
        );
    }
    res.build().map_err(oci_err)
}

/// Looks the command up in the rootfs before starting the runtime, so a missing or
/// non-executable command gives Docker's 127/126 instead of the runtime's generic failure.
pub fn check_command(rootfs: &Path, spec: &ContainerSpec) -> Result<(), (i32, String)> {
    let argv0 = &spec.args[0];
    let path_env = spec.env_value("PATH").unwrap_or(super::spec::DEFAULT_PATH);
    let candidates: Vec<String> = if argv0.contains('/') {
        vec![if argv0.starts_with('/') {
            argv0.clone()
        } else {
            format!("{}/{argv0}", spec.cwd)
        }]
    } else {
        path_env
            .split(':')
            .map(|d| format!("{}/{argv0}", if d.is_empty() { "." } else { d }))
            .collect()
    };
    // Candidates are resolved inside the image (sys::rootfs): a symlinked command
    // counts as the image would see it, never as a host path.
    let tree = crate::sys::rootfs::Rootfs::open(rootfs).map_err(|e| (127, e.to_string()))?;
    let mut denied = None;
    for c in &candidates {
        if let Ok(Some(m)) = tree.stat(Path::new(c)) {
            if m.kind == crate::sys::rootfs::Kind::File && m.mode & 0o111 != 0 {
                return Ok(());
            }
            denied.get_or_insert(c.clone());
        }
    }
    match (denied, argv0.contains('/')) {
        (Some(p), _) => Err((126, format!("exec {p}: permission denied"))),
        (None, true) => Err((127, format!("exec {argv0}: no such file or directory"))),
        (None, false) => Err((
            127,
            format!("exec: {argv0:?}: executable file not found in $PATH"),
        )),
    }
}

/// Runs `spec`'s process in the running container `spec.id` with `runtime exec`
/// (`keel exec`): the process joins the container's namespaces, cgroups, seccomp
/// filter and root as runc sets them up. The process description goes to a private file
/// in the container's bundle directory. Waits for the process and returns how it ended.
/// The runtime runs in the user namespace of `pid` (a process of the container): rootless,
/// `keel exec` itself stays on the host, and runc must be the namespace's root to join.
pub fn exec(
    oci: &Oci,
    pid: i32,
    spec: &ContainerSpec,
    stdio: Stdio,
    on_console: &mut dyn FnMut(std::os::fd::OwnedFd),
) -> Result<super::Exit, RuntimeError> {
    let dir = oci.bundle_root.join(&spec.id);
    private_dir(&dir)?;
    let file = exec_file(&dir, ".json").map_err(|source| RuntimeError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut p = process(spec)?;
    if let Some(size) = stdio.terminal {
        // As for `keel run -t`: the runtime makes the terminal in the container's devpts.
        p.set_terminal(Some(true));
        p.set_console_size(console_size(size)?);
    }
    let json = serde_json::to_vec(&p)
        .map_err(|e| RuntimeError::Setup(format!("serializing process.json: {e}")))?;
    hostfs::write(file.path(), json).map_err(|source| RuntimeError::Io {
        path: file.path().to_path_buf(),
        source,
    })?;
    let mut cmd = oci.base();
    cmd.arg("exec").arg("--process").arg(file.path());
    crate::sys::userns::join_user_ns_of_in_child(&mut cmd, pid)?;
    if stdio.terminal.is_some() {
        return exec_with_terminal(oci, cmd, &dir, &spec.id, on_console);
    }
    cmd.arg(&spec.id);
    if let Some(fd) = stdio.stdin {
        cmd.stdin(std::process::Stdio::from(fd));
    }
    if let Some(fd) = stdio.stdout {
        cmd.stdout(std::process::Stdio::from(fd));
    }
    if let Some(fd) = stdio.stderr {
        cmd.stderr(std::process::Stdio::from(fd));
    }
    let status = cmd.status().map_err(|source| RuntimeError::Io {
        path: oci.runtime.clone(),
        source,
    })?;
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255);
    Ok(super::Exit {
        code,
        exec_error: None,
    })
}

/// `process.consoleSize` for a terminal of `size` (none when keel's stdin is no terminal).
fn console_size(
    size: crate::sys::tty::WindowSize,
) -> Result<Option<oci_spec::runtime::Box>, RuntimeError> {
    if size == Default::default() {
        return Ok(None);
    }
    oci_spec::runtime::BoxBuilder::default()
        .height(u64::from(size.rows))
        .width(u64::from(size.cols))
        .build()
        .map(Some)
        .map_err(oci_err)
}

/// `keel exec -t`: `runtime exec --detach --tty --console-socket` (a foreground one relays
/// the terminal itself), like [`Oci::start_with_terminal`]: keel is a subreaper, so the
/// exec'd process is reparented to keel when the runtime exits, and keel waits for it.
fn exec_with_terminal(
    oci: &Oci,
    mut cmd: Command,
    dir: &Path,
    id: &str,
    on_console: &mut dyn FnMut(std::os::fd::OwnedFd),
) -> Result<super::Exit, RuntimeError> {
    let io = |source| RuntimeError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let console = ConsoleSocket::bind(dir)?;
    let pid_file = exec_file(dir, ".pid").map_err(io)?.into_temp_path();
    cmd.args(["--detach", "--tty", "--console-socket"])
        .arg(&console.path)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(id)
        .stdin(std::process::Stdio::null());
    run_quoting_stderr(oci, cmd, || {
        format!(
            "exec --detach --tty --console-socket {}",
            console.path.display()
        )
    })?;
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .map_err(io)?
        .trim()
        .parse()
        .unwrap_or(0);
    if let Some(master) = console.master()? {
        on_console(master);
    }
    if pid <= 0 {
        return Err(io(std::io::Error::other("the runtime wrote no exec pid")));
    }
    let _forwarding = crate::sys::proc::forward_signals(pid).ok();
    let code = crate::sys::proc::wait(pid)?.code();
    Ok(super::Exit {
        code,
        exec_error: None,
    })
}

/// The unix socket a runtime's `--console-socket` sends a terminal's master to. Binding it
/// makes keel a subreaper first: the runtime then runs `--detach`, so the process it
/// starts is reparented to keel when the runtime exits and keel waits for it.
struct ConsoleSocket {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    /// `near` only names errors: the socket is not in the bundle, since a unix socket path
    /// has at most 107 bytes (SUN_LEN), and a private (0700) temp directory keeps other
    /// users from connecting first.
    fn bind(near: &Path) -> Result<Self, RuntimeError> {
        let io = |source| RuntimeError::Io {
            path: near.to_path_buf(),
            source,
        };
        crate::sys::proc::become_subreaper()?;
        let dir = tempfile::Builder::new()
            .prefix("keel-console-")
            .tempdir()
            .map_err(io)?;
        let path = dir.path().join("sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).map_err(io)?;
        Ok(Self {
            _dir: dir,
            path,
            listener,
        })
    }

    /// The master, once the runtime has exited: it connected and sent it before, so both
    /// are queued and nothing waits.
    fn master(&self) -> Result<Option<std::os::fd::OwnedFd>, RuntimeError> {
        self.listener
            .set_nonblocking(true)
            .map_err(|source| RuntimeError::Io {
                path: self.path.clone(),
                source,
            })?;
        match self.listener.accept() {
            Ok((conn, _)) => Ok(crate::sys::tty::recv_fd(
                std::os::fd::AsFd::as_fd(&conn),
                false,
            )?),
            Err(_) => Ok(None),
        }
    }
}

/// Runs the runtime to its end; a failure quotes its stderr (`args` names the call).
fn run_quoting_stderr(
    oci: &Oci,
    mut cmd: Command,
    args: impl FnOnce() -> String,
) -> Result<(), RuntimeError> {
    let out = cmd.output().map_err(|source| RuntimeError::Io {
        path: oci.runtime.clone(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(RuntimeError::Runtime {
        runtime: oci.runtime.display().to_string(),
        args: args(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// The host pid of the container's first process (`runtime state ID`), e.g. to read the
/// container's files through `/proc/PID/root`.
pub fn init_pid(oci: &Oci, id: &str) -> Option<i32> {
    let out = oci.base().args(["state", id]).output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["pid"].as_i64().map(|p| p as i32).filter(|p| *p > 0)
}

/// `runtime delete -f ID`; a container the runtime no longer knows is not an error.
pub fn delete(runtime: &Path, state_root: Option<&Path>, id: &str) -> Result<(), RuntimeError> {
    let mut c = Command::new(runtime);
    if let Some(r) = state_root {
        c.arg("--root").arg(r);
    }
    let out = c
        .args(["delete", "-f", id])
        .output()
        .map_err(|source| RuntimeError::Io {
            path: runtime.to_path_buf(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || stderr.contains("does not exist") || stderr.contains("not found") {
        return Ok(());
    }
    Err(RuntimeError::Runtime {
        runtime: runtime.display().to_string(),
        args: format!("delete -f {id}"),
        status: out.status.to_string(),
        stderr: stderr.trim().to_string(),
    })
}

impl Isolation for Oci {
    fn name(&self) -> &'static str {
        "oci"
    }

    fn available(&self) -> Result<(), RuntimeError> {
        match self.base().arg("--version").output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(RuntimeError::Unavailable {
                backend: "oci",
                why: format!(
                    "{} --version failed: {}",
                    self.runtime.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            }),
            Err(e) => Err(RuntimeError::Unavailable {
                backend: "oci",
                why: format!(
                    "cannot run {}: {e}; install runc or pass --runtime PATH",
                    self.runtime.display()
                ),
            }),
        }
    }

    fn start(
        &self,
        spec: &ContainerSpec,
        rootfs: &Path,
        stdio: Stdio,
    ) -> Result<Container, RuntimeError> {
        if crate::sys::userns::rootless_cached() {
            // Rootless, the config has no cgroup: a limit would be dropped silently.
            super::cgroup::refuse_rootless_runtime_limits(&spec.limits)?;
        }
        let rootfs = super::check_rootfs(rootfs)?;
        super::ensure_cwd(&rootfs, &spec.cwd)?;
        let bundle = self.write_bundle(spec, &rootfs, stdio.terminal)?;
        let cleanup = || Cleanup::Oci {
            runtime: self.runtime.clone(),
            root: self.state_root.clone(),
            id: spec.id.clone(),
            bundle: bundle.clone(),
        };
        if let Err((code, msg)) = check_command(&rootfs, spec) {
            // Nothing to run: pid 0 tells wait() there is no process.
            let _ = hostfs::remove_dir_all(&bundle);
            return Ok(Container {
                pid: 0,
                exec_error: Some((code, msg)),
                cgroup: None,
                cleanup: Cleanup::None,
                waited: true,
                _forwarding: None,
                console: None,
            });
        }
        if stdio.terminal.is_some() {
            return self.start_with_terminal(&bundle, spec, cleanup());
        }
        let mut cmd = self.base();
        cmd.arg("run").arg("--bundle").arg(&bundle).arg(&spec.id);
        if let Some(fd) = stdio.stdin {
            cmd.stdin(std::process::Stdio::from(fd));
        }
        if let Some(fd) = stdio.stdout {
            cmd.stdout(std::process::Stdio::from(fd));
        }
        if let Some(fd) = stdio.stderr {
            cmd.stderr(std::process::Stdio::from(fd));
        }
        let child = cmd.spawn().map_err(|source| RuntimeError::Io {
            path: self.runtime.clone(),
            source,
        })?;
        // The child is reaped by Container::wait (waitpid), not by std.
        Ok(Container {
            pid: child.id() as i32,
            exec_error: None,
            cgroup: None,
            cleanup: cleanup(),
            waited: false,
            _forwarding: None,
            console: None,
        })
    }
}

impl Oci {
    /// Writes the container's bundle (private directories, its owner first, then
    /// `config.json`, with a terminal of `terminal`'s size when asked); returns its path.
    fn write_bundle(
        &self,
        spec: &ContainerSpec,
        rootfs: &Path,
        terminal: Option<crate::sys::tty::WindowSize>,
    ) -> Result<PathBuf, RuntimeError> {
        let bundle = self.bundle_root.join(&spec.id);
        let io = |source| RuntimeError::Io {
            path: bundle.clone(),
            source,
        };
        private_dir(&self.bundle_root)?;
        private_dir(&bundle)?;
        // First, so `reclaim::collect_orphans` knows the bundle has a live owner.
        let owner = serde_json::to_vec(&super::reclaim::Owner::current()).unwrap_or_default();
        hostfs::write(super::reclaim::owner_file(&bundle), owner).map_err(io)?;
        let mut cfg = config(spec, rootfs)?;
        if let (Some(size), Some(p)) = (terminal, cfg.process_mut()) {
            // The runtime makes the terminal in the container's devpts and sends its
            // master to `--console-socket` (runtime-spec config.md "terminal").
            p.set_terminal(Some(true));
            p.set_console_size(console_size(size)?);
        }
        let json = serde_json::to_vec_pretty(&cfg)
            .map_err(|e| RuntimeError::Setup(format!("serializing config.json: {e}")))?;
        hostfs::write(bundle.join("config.json"), json).map_err(io)?;
        Ok(bundle)
    }
    /// `keel run -t`: `runc run --detach --console-socket` (a foreground `runc run` ignores
    /// the socket and relays the terminal itself), so keel becomes a subreaper first: the
    /// container's process is reparented to keel when runc exits and is waited for like
    /// the other backends' first process. The master arrives on the socket.
    fn start_with_terminal(
        &self,
        bundle: &Path,
        spec: &ContainerSpec,
        cleanup: super::Cleanup,
    ) -> Result<Container, RuntimeError> {
        let io = |source| RuntimeError::Io {
            path: bundle.to_path_buf(),
            source,
        };
        let console = ConsoleSocket::bind(bundle)?;
        let pid_file = bundle.join("container.pid");
        let mut cmd = self.base();
        cmd.arg("run")
            .arg("--detach")
            .arg("--console-socket")
            .arg(&console.path);
        cmd.arg("--pid-file").arg(&pid_file);
        cmd.arg("--bundle").arg(bundle).arg(&spec.id);
        cmd.stdin(std::process::Stdio::null());
        let ran = run_quoting_stderr(self, cmd, || {
            format!("run --detach --console-socket {}", console.path.display())
        });
        let mut c = Container {
            pid: 0,
            exec_error: None,
            cgroup: None,
            cleanup,
            waited: true,
            _forwarding: None,
            console: None,
        };
        if let Err(e) = ran {
            let _ = c.cleanup();
            return Err(e);
        }
        let pid = std::fs::read_to_string(&pid_file).map_err(io)?;
        c.pid = pid.trim().parse().unwrap_or(0);
        c.waited = c.pid == 0;
        c.console = console.master()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::{plan, Accounts, BindMount, Limits, NetworkMode, RunOptions};

    fn specs() -> Vec<ContainerSpec> {
        let a = Accounts::parse("root:x:0:0::/root:/bin/sh\n", "").unwrap();
        let cfg = oci_spec::image::Config::default();
        let full = RunOptions {
            cmd: Some(vec!["sh".into()]),
            network: NetworkMode::Host,
            read_only: true,
            binds: vec![BindMount {
                src: "/tmp".into(),
                dst: "/data".into(),
                ro: true,
            }],
            tmpfs: vec!["/run".into()],
            limits: Limits {
                memory_bytes: Some(1 << 25),
                pids: Some(20),
                cpus: Some(0.5),
            },
            ..Default::default()
        };
        vec![
            plan(
                "c1",
                &cfg,
                &RunOptions {
                    cmd: Some(vec!["true".into()]),
                    ..Default::default()
                },
                &a,
            )
            .unwrap(),
            plan("c2", &cfg, &full, &a).unwrap(),
        ]
    }

    /// config.json validates against the OCI runtime-spec JSON schema (python3-jsonschema).
    #[test]
    fn config_matches_the_runtime_spec_schema() {
        let have = Command::new("python3")
            .args(["-c", "import jsonschema"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        let why = "python3 with jsonschema (apt-get install python3-jsonschema)";
        if !crate::testing::can_run(have, why) {
            return;
        }
        let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/conformance/oci-runtime-spec-schema");
        let d = tempfile::tempdir().unwrap();
        for spec in specs() {
            let path = d.path().join(format!("{}.json", spec.id));
            std::fs::write(
                &path,
                serde_json::to_vec_pretty(&config(&spec, Path::new("/rootfs")).unwrap()).unwrap(),
            )
            .unwrap();
            let script = r#"
import json, sys, pathlib, jsonschema
d = pathlib.Path(sys.argv[1])
schema = json.loads((d / "config-schema.json").read_text())
resolver = jsonschema.RefResolver(base_uri=d.as_uri() + "/", referrer=schema)
jsonschema.Draft4Validator(schema, resolver=resolver).validate(json.loads(pathlib.Path(sys.argv[2]).read_text()))
"#;
            let out = Command::new("python3")
                .arg("-W")
                .arg("ignore")
                .arg("-c")
                .arg(script)
                .arg(&schema)
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} fails the schema:\n{}",
                spec.id,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn config_maps_the_spec() {
        let s = &specs()[1];
        let v = serde_json::to_value(config(s, Path::new("/r")).unwrap()).unwrap();
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50000);
        assert_eq!(v["linux"]["maskedPaths"].as_array().unwrap().len(), 11);
        assert!(v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["type"] != "network"));
        let binds: Vec<_> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "bind")
            .collect();
        assert_eq!(
            binds.len(),
            1,
            "host /dev binds are left to the runtime: {binds:?}"
        );
        assert_eq!(
            binds[0]["options"],
            serde_json::json!(["rbind", "rprivate", "ro"])
        );
        assert!(v.get("hostname").is_some());
    }

    #[test]
    fn commands_resolve_inside_the_rootfs() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::create_dir_all(r.join("usr")).unwrap();
        std::fs::write(r.join("bin/busybox"), "").unwrap();
        std::fs::set_permissions(
            r.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(r.join("bin/data"), "").unwrap();
        std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("/bin", r.join("usr/bin")).unwrap();
        let a = Accounts::default();
        let cfg = oci_spec::image::Config::default();
        let code = |argv0: &str| {
            let s = plan(
                "x",
                &cfg,
                &RunOptions {
                    cmd: Some(vec![argv0.into()]),
                    ..Default::default()
                },
                &a,
            )
            .unwrap();
            check_command(r, &s).err().map(|e| e.0)
        };
        assert_eq!(code("sh"), None);
        assert_eq!(code("/usr/bin/sh"), None);
        assert_eq!(code("data"), Some(126));
        assert_eq!(code("/bin/data"), Some(126));
        assert_eq!(code("nope"), Some(127));
        assert_eq!(code("/nope"), Some(127));
    }
}
