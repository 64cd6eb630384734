//! Starting and ending containers: the supervisor side of `keel run`. For a foreground
//! run the keel process itself supervises; for `-d` a detached `keel` supervisor does.
//! The steps: image → snapshot → volumes → spec → backend start → state + proxies →
//! wait → state → cleanup (snapshot, anonymous volumes and record with `--rm`).
use crate::errln;
use crate::sys::hostfs;
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::flags::VolumeSpec;
use super::ports;
use super::run::{validate, RunRequest, Validated};
use super::volume::Volumes;
use super::{ContainerConfig, ContainerError, ContainerState, Containers, Status};
use crate::image::rfc3339;
use crate::runtime::{self, BindMount, Isolation, RunOptions};
use crate::storage::{self, LayerBlob, Snapshotter};
use crate::store::{ImageRecord, Store};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Request(#[from] super::run::RequestError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Port(#[from] ports::PortError),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("unknown isolation {0:?}: use namespaces, chroot or oci")]
    UnknownIsolation(String),
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformError),
    #[error("starting the port proxy: {0}")]
    Proxy(crate::sys::SysError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The isolation backend the request (or the host) calls for, checked to work here.
pub fn pick_backend(
    name: Option<&str>,
    oci_runtime: Option<&Path>,
    keel_root: &Path,
) -> Result<Box<dyn Isolation>, LaunchError> {
    let name = name.unwrap_or("namespaces");
    let b = runtime::backend_in(name, oci_runtime, keel_root)
        .ok_or_else(|| LaunchError::UnknownIsolation(name.to_string()))?;
    b.available()?;
    Ok(b)
}

/// A container whose record exists and whose rootfs is ready, not yet started.
pub struct Prepared {
    pub config: ContainerConfig,
    pub request: RunRequest,
    validated: Validated,
    image: ImageRecord,
    snapshotter: Box<dyn Snapshotter>,
    snapshot: storage::Snapshot,
    published: Vec<ports::Published>,
    private_port: Option<u16>,
    anonymous: Vec<String>,
    root: PathBuf,
    started: bool,
    /// Made by [`resume`] (`keel start`): a failed start leaves the record alone.
    resumed: bool,
    /// The last run ended with its PID namespace's init reaped: no process of it is left,
    /// so `--rm` removes the rootfs without looking for any (`Container::wait_all`).
    all_ended: bool,
    /// Names the container until it runs; released then (its record owns it).
    lease: crate::store::Lease,
}

fn pick_private_port() -> u16 {
    // Any port is free inside a fresh network namespace; use the one the host kernel
    // hands out, which is at least in the ephemeral range and differs between runs.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(8080)
}

/// Validates `req`, resolves the image, binds host ports, creates the container record
/// and prepares its rootfs. Every user error surfaces here, before anything starts.
pub fn prepare(store: &Store, req: RunRequest, id: &str) -> Result<Prepared, LaunchError> {
    let validated = validate(&req)?;
    // `--platform` picks a multi-platform image's manifest; a foreign one needs qemu.
    let image = store.resolve_platform(&req.image, req.platform.as_ref())?;
    crate::platform::check(&image.platform())?;
    let cfg = image.config.config().clone().unwrap_or_default();
    let exposed = ports::exposed_tcp(&cfg.exposed_ports().clone().unwrap_or_default());
    let private_port = ports::needs_private_port(&validated.ports, req.publish_all, &exposed)
        .then(pick_private_port);
    let plan = ports::plan(
        &validated.ports,
        req.publish_all,
        &exposed,
        private_port.unwrap_or(0),
    );
    let published = ports::bind(&plan)?;
    let backend = pick_backend(
        req.isolation.as_deref(),
        req.runtime.as_deref(),
        store.root(),
    )?;
    let snapshotter = storage::open(req.storage_driver.as_deref(), store.root())?;
    let root = store.root().to_path_buf();
    let (anonymous, volume_names) = volume_names(&validated, &cfg, id);
    let config = ContainerConfig {
        id: id.to_string(),
        name: req.name.clone().unwrap_or_else(|| id[..12].to_string()),
        image: req.image.clone(),
        image_digest: image.manifest_digest().clone(),
        command: req.command.clone(),
        created: rfc3339(std::time::SystemTime::now()),
        isolation: backend.name().to_string(),
        storage_driver: snapshotter.name().to_string(),
        ports: published.iter().map(|p| p.mapping.clone()).collect(),
        volumes: volume_names,
        stop_signal: cfg.stop_signal().clone(),
        auto_remove: req.rm,
        runtime: req.runtime.clone(),
        env: req
            .env
            .iter()
            .cloned()
            .chain(private_port.map(|p| format!("PORT={p}")))
            .collect(),
        workdir: req.workdir.clone(),
        user: req.user.clone(),
        hostname: req.hostname.clone(),
    };
    let kept = super::restart::Kept {
        request: req.clone(),
        private_port,
        anonymous: anonymous.clone(),
    };
    let (snapshot, lease) = create(store, &config, &kept, &image, snapshotter.as_ref())?;
    Ok(Prepared {
        config,
        request: req,
        validated,
        image,
        snapshotter,
        snapshot,
        published,
        private_port,
        anonymous,
        root,
        started: false,
        resumed: false,
        all_ended: false,
        lease,
    })
}

/// Creates the container: its record (and the request `keel start` and the supervisor's
/// restarts read back) and its rootfs snapshot, under a lease taken first.
fn create(
    store: &Store,
    config: &ContainerConfig,
    kept: &super::restart::Kept,
    image: &ImageRecord,
    snapshotter: &dyn storage::Snapshotter,
) -> Result<(storage::Snapshot, crate::store::Lease), LaunchError> {
    // Leased before the record exists: should we die before the container runs, gc
    // removes it; and the image's blobs stay while we unpack them.
    store.protect_image_for(image, Some(&config.id))?;
    let lease = store.lease()?;
    let containers = Containers::new(store.root());
    containers.create(config)?;
    crate::fault::point("run.container-created");
    let layers = layer_blobs(store, image);
    let made = if config.auto_remove {
        snapshotter.prepare_scratch(&config.id, &layers)
    } else {
        snapshotter.prepare(&config.id, &layers)
    };
    let snapshot = match made {
        Ok(s) => s,
        Err(e) => {
            let _ = containers.remove(&config.id);
            return Err(e.into());
        }
    };
    containers.keep_request(&config.id, kept)?;
    Ok((snapshot, lease))
}

/// The container's volumes by name (`-v NAME:/dst` as given), and the anonymous ones
/// (`-v /dst`, and the image's VOLUMEs no `-v` covers) named after the container.
fn volume_names(
    validated: &Validated,
    cfg: &oci_spec::image::Config,
    id: &str,
) -> (Vec<String>, Vec<String>) {
    let mut anonymous = Vec::new();
    let mut names = Vec::new();
    let new_anonymous = |anonymous: &mut Vec<String>| {
        let n = format!("{}-{}", &id[..12], anonymous.len());
        anonymous.push(n.clone());
        n
    };
    for v in &validated.volumes {
        match v {
            VolumeSpec::Named { name, .. } => names.push(name.clone()),
            VolumeSpec::Anonymous { .. } => names.push(new_anonymous(&mut anonymous)),
            VolumeSpec::Bind { .. } => {}
        }
    }
    let taken: Vec<String> = validated.volumes.iter().map(vol_dst).collect();
    for dst in cfg.volumes().clone().unwrap_or_default() {
        if !taken.contains(&dst) {
            names.push(new_anonymous(&mut anonymous));
        }
    }
    (anonymous, names)
}

/// The image's layers, bottom first, as the snapshotter takes them.
fn layer_blobs(store: &Store, image: &crate::store::ImageRecord) -> Vec<LayerBlob> {
    image
        .manifest
        .layers()
        .iter()
        .zip(image.config.rootfs().diff_ids())
        .map(|(l, diff)| LayerBlob {
            diff_id: crate::digest::parse(diff).unwrap_or_else(|| l.digest().clone()),
            blob: store.blob_path(l.digest()),
        })
        .collect()
}

/// `keel start`: the stopped container `id` made ready to run again as it was made
/// (the kept request, its rootfs, its host ports and volumes).
pub fn resume(store: &Store, id: &str) -> Result<Prepared, LaunchError> {
    let root = store.root().to_path_buf();
    let containers = Containers::new(&root);
    let config = containers.find(id)?;
    let kept = containers
        .kept_request(&config.id)?
        .ok_or_else(|| ContainerError::NotKept(config.name.clone()))?;
    let req = kept.request;
    let validated = validate(&req)?;
    let image = store.resolve(config.image_digest.as_ref())?;
    // The same host ports as before (a port taken meanwhile is an error, as in docker).
    let plan: Vec<ports::PortSpec> = config
        .ports
        .iter()
        .map(|m| ports::PortSpec {
            host_ip: m.host_ip.parse().ok(),
            host_port: m.host_port,
            container_port: m.container_port,
        })
        .collect();
    let published = ports::bind(&plan)?;
    let snapshotter = storage::open(Some(&config.storage_driver), &root)?;
    let snapshot = snapshotter.get(&config.id)?;
    // Rootless, the rootfs was mounted in the namespace of the keel that made it.
    snapshotter.ensure_mounted(&snapshot)?;
    let lease = store.lease()?;
    store.protect_image(&image)?;
    Ok(Prepared {
        config,
        request: req,
        validated,
        image,
        snapshotter,
        snapshot,
        published,
        private_port: kept.private_port,
        anonymous: kept.anonymous,
        root,
        started: false,
        resumed: true,
        all_ended: false,
        lease,
    })
}

/// The container path a volume flag mounts at.
pub fn volume_destination(v: &VolumeSpec) -> String {
    vol_dst(v)
}

fn vol_dst(v: &VolumeSpec) -> String {
    match v {
        VolumeSpec::Bind { dst, .. }
        | VolumeSpec::Named { dst, .. }
        | VolumeSpec::Anonymous { dst } => dst.clone(),
    }
}

/// Where the container's output goes.
pub enum Output {
    /// The terminal of a foreground run.
    Inherit,
    /// The container log (detached).
    Log(PathBuf),
}

impl Prepared {
    /// A named volume mounted below exec-in's mapped home (`~/.m2`, `~/.cache/pip`, …) is
    /// a cache of the tree owner's tools: its top directory is given to the owner, so the
    /// tools can write there (its content keeps whatever owners earlier runs gave it).
    fn own_cache(&self, data: PathBuf, dst: &str) -> Result<PathBuf, LaunchError> {
        let Some(user) = self
            .request
            .add_passwd
            .as_deref()
            .and_then(|l| runtime::etc::mapped_user(l).ok())
        else {
            return Ok(data);
        };
        if Path::new(dst).starts_with(&user.home) {
            crate::sys::fs::lchown(&data, user.uid, user.gid).map_err(|source| {
                LaunchError::Io {
                    path: data.clone(),
                    source,
                }
            })?;
        }
        Ok(data)
    }

    fn binds(&self) -> Result<Vec<BindMount>, LaunchError> {
        let volumes = Volumes::new(&self.root);
        let mut binds = Vec::new();
        let mut anon = self.anonymous.iter();
        for v in &self.validated.volumes {
            binds.push(match v {
                VolumeSpec::Bind { src, dst, ro } => {
                    if !src.exists() {
                        hostfs::create_dir_all(src).map_err(|source| LaunchError::Io {
                            path: src.clone(),
                            source,
                        })?;
                    }
                    let src = fs::canonicalize(src).map_err(|source| LaunchError::Io {
                        path: src.clone(),
                        source,
                    })?;
                    BindMount {
                        src,
                        dst: dst.clone(),
                        ro: *ro,
                    }
                }
                VolumeSpec::Named { name, dst, ro } => BindMount {
                    src: self.own_cache(volumes.ensure(name)?, dst)?,
                    dst: dst.clone(),
                    ro: *ro,
                },
                VolumeSpec::Anonymous { dst } => BindMount {
                    src: volumes.ensure(anon.next().expect("one name per anonymous volume"))?,
                    dst: dst.clone(),
                    ro: false,
                },
            });
        }
        let taken: Vec<String> = self.validated.volumes.iter().map(vol_dst).collect();
        for dst in self
            .image
            .config
            .config()
            .clone()
            .unwrap_or_default()
            .volumes()
            .clone()
            .unwrap_or_default()
        {
            if !taken.contains(&dst) {
                binds.push(BindMount {
                    src: volumes.ensure(anon.next().expect("one name per image volume"))?,
                    dst,
                    ro: false,
                });
            }
        }
        Ok(binds)
    }

    /// Writes the container's resolv.conf, hosts and hostname into its record directory
    /// and returns the binds that put them in `/etc`. A chroot container shares the
    /// host's network and hostname, so it gets the host's view.
    fn etc_files(&self) -> Result<Vec<BindMount>, LaunchError> {
        let chroot = self.request.isolation.as_deref() == Some("chroot");
        let (network, hostname) = if chroot {
            let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            (runtime::NetworkMode::Host, host.trim().to_string())
        } else {
            let id: String = self.config.id.chars().take(12).collect();
            let h = self.request.hostname.clone().unwrap_or(id);
            (self.validated.network, h)
        };
        let dir = Containers::new(&self.root).dir_of(&self.config.id);
        runtime::etc::write(&dir, network, &hostname, &self.validated.etc)
            .map_err(|e| LaunchError::Request(e.into()))
    }

    /// `keel exec-in`'s user mapping: the image's /etc/passwd and /etc/group (read in the
    /// tree) plus the owner's synthesised entries, bind-mounted from the container's
    /// record; the home directory made in the container's own layer, owned by the user.
    fn mapped_user(&self) -> Result<Vec<BindMount>, LaunchError> {
        let Some(line) = &self.request.add_passwd else {
            return Ok(Vec::new());
        };
        let bad = |e: runtime::etc::EtcError| LaunchError::Request(e.into());
        let user = runtime::etc::mapped_user(line).map_err(bad)?;
        let tree = crate::sys::rootfs::Rootfs::open(&self.snapshot.rootfs)
            .map_err(|e| runtime::RuntimeError::Setup(e.to_string()))?;
        let read = |p: &str| -> Result<String, LaunchError> {
            let bytes = tree
                .read_opt(Path::new(p), crate::sys::rootfs::READ_CAP)
                .map_err(|e| runtime::RuntimeError::Setup(e.to_string()))?;
            Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
        };
        let passwd = runtime::etc::with_entry(&read("/etc/passwd")?, line);
        let mut group = read("/etc/group")?;
        if let Some(g) = &self.request.add_group {
            group = runtime::etc::with_entry(&group, g);
        }
        if tree.lstat(Path::new(&user.home)).ok().flatten().is_none() {
            tree.mkdir_all(Path::new(&user.home), 0o755, Some((user.uid, user.gid)))
                .map_err(|e| runtime::RuntimeError::Setup(format!("home {}: {e}", user.home)))?;
        }
        let dir = Containers::new(&self.root).dir_of(&self.config.id);
        runtime::etc::write_accounts(&dir, &passwd, &group).map_err(bad)
    }

    fn options(&self) -> Result<RunOptions, LaunchError> {
        let r = &self.request;
        let mut env = r.env.clone();
        if let Some(p) = self.private_port {
            env.push(format!("PORT={p}"));
        }
        Ok(RunOptions {
            cmd: (!r.command.is_empty()).then(|| r.command.clone()),
            entrypoint: r.entrypoint.as_ref().map(|e| {
                if e.is_empty() {
                    Vec::new()
                } else {
                    vec![e.clone()]
                }
            }),
            env,
            workdir: r.workdir.clone(),
            user: r.user.clone(),
            hostname: r.hostname.clone(),
            network: self.validated.network,
            read_only: r.read_only,
            binds: {
                let mut b = self.etc_files()?;
                b.extend(self.mapped_user()?);
                b.extend(self.binds()?); // a `-v` over /etc/hosts wins, as in docker
                b
            },
            tmpfs: r.tmpfs.clone(),
            limits: self.validated.limits.clone(),
            tty: r.tty,
            shm_size: None,
            ulimits: Vec::new(),
            seccomp: self.validated.seccomp,
            no_init: r.init == Some(false),
        })
    }

    /// Runs the container to its end and returns its exit code; `on_started` sees the
    /// container's pid once its command runs. Under a `--restart` policy the container
    /// is started again (same rootfs, ports and volumes) until the policy says no or the
    /// user stops it. Cleans up with `--rm`.
    pub fn run(
        mut self,
        output: Output,
        foreground: bool,
        on_started: impl FnOnce(i32),
    ) -> Result<i32, LaunchError> {
        let containers = Containers::new(&self.root);
        let mut on_started = Some(on_started);
        loop {
            let result = self.run_inner(&containers, &output, foreground, |pid| {
                if let Some(f) = on_started.take() {
                    f(pid)
                }
            });
            if result.is_err() && !self.started {
                if !self.resumed {
                    // It never ran: leave nothing behind, as if it had not been asked for.
                    let _ = self.remove_all(false);
                }
                return result;
            }
            let code = result.as_ref().map(|c| *c).unwrap_or(125);
            if self.request.rm && foreground {
                return self.remove_foreground(&containers, code, result);
            }
            let mut st = exited(&containers, &self.config.id, code);
            let again = result.is_ok()
                && self.validated.restart.restarts(
                    code,
                    st.restart_count,
                    containers.stopped_by_user(&self.config.id),
                );
            let _ = containers.set_state(&self.config.id, &st);
            if again {
                tracing::debug!(id = %self.config.id, code, restarts = st.restart_count, "restarting per --restart");
                // In slices: `keel stop`/`rm` during the back-off end it at once.
                let until = std::time::Instant::now() + super::restart::backoff(st.restart_count);
                while std::time::Instant::now() < until
                    && !containers.stopped_by_user(&self.config.id)
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                st.restart_count += 1;
                let _ = containers.set_state(&self.config.id, &st);
                if !containers.stopped_by_user(&self.config.id) {
                    continue;
                }
            }
            if self.request.rm {
                self.remove_all(false)?;
            }
            self.published.clear();
            return result;
        }
    }

    /// The end of a foreground `--rm` run: the record goes at once. Nothing but this
    /// process can ask for the exit status, so it is not first rewritten as exited (one
    /// more rewrite, and on ext4 mounted with `discard` one more synchronous discard, for
    /// a state no one reads) — unless the removal fails and the record stays.
    fn remove_foreground(
        &mut self,
        containers: &Containers,
        code: i32,
        result: Result<i32, LaunchError>,
    ) -> Result<i32, LaunchError> {
        if let Err(e) = self.remove_all(true) {
            let st = exited(containers, &self.config.id, code);
            let _ = containers.set_state(&self.config.id, &st);
            return Err(e);
        }
        self.published.clear();
        result
    }

    /// `spare`: keep the record's directory for the next one (a foreground `--rm`).
    fn remove_all(&self, spare: bool) -> Result<(), LaunchError> {
        remove(
            &self.root,
            &self.config,
            self.snapshotter.as_ref(),
            &self.snapshot,
            &self.anonymous,
            (self.all_ended, spare),
        )
    }

    fn run_inner(
        &mut self,
        containers: &Containers,
        output: &Output,
        foreground: bool,
        on_started: impl FnOnce(i32),
    ) -> Result<i32, LaunchError> {
        let opts = self.options()?;
        let cfg = self.image.config.config().clone().unwrap_or_default();
        let spec = runtime::plan_for_rootfs(&self.config.id, &cfg, &opts, &self.snapshot.rootfs)
            .map_err(runtime::RuntimeError::from)?;
        let backend = pick_backend(
            self.request.isolation.as_deref(),
            self.request.runtime.as_deref(),
            &self.root,
        )?;
        let (stdio, log_relay) = self.stdio_for(output)?;
        if foreground {
            // From here on INT/TERM/HUP are recorded (and then passed on) rather than
            // killing keel before the container is there to receive them.
            crate::sys::proc::catch_termination().map_err(runtime::RuntimeError::from)?;
        }
        let _span =
            tracing::info_span!("container", id = %&self.config.id[..12], backend = backend.name())
                .entered();
        tracing::debug!(rootfs = %self.snapshot.rootfs.display(), driver = self.snapshotter.name(), args = ?spec.args, mounts = spec.mounts.len(), "starting the container");
        tracing::trace!(mounts = ?spec.mounts, "container mounts");
        let mut container = backend.start(&spec, &self.snapshot.rootfs, stdio)?;
        tracing::debug!(pid = container.pid, "container started");
        self.started = true;
        crate::fault::point("run.container-started");
        // Dropped in reverse order at the end: the SIGWINCH follower, then the terminal's
        // mode restored (the relay is joined before).
        let (_raw, relay, _resize) = attach_console(&mut container, self.request.interactive);
        if foreground {
            container.forward_signals()?;
            // A signal that came while the container was starting was only recorded.
            if let Some(sig) = crate::sys::proc::termination_requested() {
                let _ = container.kill(sig);
            }
        }
        self.mark_running(containers, container.pid)?;
        let _proxy = self.proxy_ports(container.pid)?;
        on_started(container.pid);
        if !(foreground && self.request.rm) {
            // The record owns the container from now on. A foreground `--rm` container
            // stays in this keel's lease until it is removed instead: its whole life is
            // this process, and should it die, the dead lease has the container removed,
            // which is what `--rm` asks (the rewrite saved is a lease file that would
            // otherwise reach the disk and be discarded when it goes).
            let _ = self.lease.release_container(&self.config.id);
        }
        crate::fault::point("run.container-running");
        let (exit, all_ended) = container.wait_all()?;
        self.all_ended = all_ended;
        if let Some(r) = log_relay {
            // Output the container wrote just before it ended; a process it left behind
            // (chroot has no PID namespace) may hold the pipe, so only briefly.
            let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while !r.is_finished() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        if let Some(r) = relay {
            let _ = r.join(); // the master reads EOF/EIO once the last slave is closed
        }
        if let Some(msg) = &exit.exec_error {
            errln!("keel: {msg}");
        }
        Ok(exit.code)
    }

    /// The container's standard streams for `output`, and the thread relaying them to a
    /// log file when they go to one.
    fn stdio_for(
        &self,
        output: &Output,
    ) -> Result<(runtime::Stdio, Option<std::thread::JoinHandle<()>>), LaunchError> {
        match output {
            Output::Inherit if self.request.tty => {
                // The terminal is made inside the container (its own devpts, as runc
                // does); the backend hands keel the master once the command runs.
                use std::os::fd::AsFd;
                let size = crate::sys::tty::size_of(std::io::stdin().as_fd());
                let stdio = runtime::Stdio {
                    terminal: Some(size.unwrap_or_default()),
                    ..Default::default()
                };
                Ok((stdio, None))
            }
            Output::Inherit => {
                let stdin = if self.request.interactive {
                    stdin_fd()
                } else {
                    devnull()
                };
                Ok((
                    runtime::Stdio {
                        stdin,
                        ..Default::default()
                    },
                    None,
                ))
            }
            Output::Log(path) => {
                let io_err = |source| LaunchError::Io {
                    path: path.clone(),
                    source,
                };
                // Through a pipe, so every line gets its time (`keel logs --timestamps`).
                let (read, out) = crate::sys::proc::pipe().map_err(LaunchError::Proxy)?;
                let relay = super::logs::relay(read, path).map_err(io_err)?;
                let err = out.try_clone().map_err(io_err)?;
                let stdio = runtime::Stdio {
                    stdin: devnull(),
                    stdout: Some(out),
                    stderr: Some(err),
                    ..Default::default()
                };
                Ok((stdio, Some(relay)))
            }
        }
    }

    /// The record says the container runs as `pid`, supervised by this keel.
    fn mark_running(&self, containers: &Containers, pid: i32) -> Result<(), LaunchError> {
        let mut st = containers.state(&self.config.id)?;
        st.status = Status::Running;
        st.exit_code = None;
        st.finished = None;
        st.pid = Some(pid);
        st.pid_start = crate::sys::proc::start_time(pid);
        let me = std::process::id() as i32;
        st.supervisor_pid = Some(me);
        st.supervisor_start = crate::sys::proc::start_time(me);
        st.started = Some(rfc3339(std::time::SystemTime::now()));
        containers.set_state(&self.config.id, &st)?;
        Ok(())
    }

    /// The proxy of the published ports into the container whose first process is `pid`,
    /// on copies of the listeners (the originals stay for a restart's proxy).
    fn proxy_ports(&self, pid: i32) -> Result<Option<super::proxy::Proxy>, LaunchError> {
        if self.published.is_empty() {
            return Ok(None);
        }
        let published = self
            .published
            .iter()
            .map(|p| {
                Ok(ports::Published {
                    listener: p.listener.try_clone().map_err(|source| LaunchError::Io {
                        path: format!("port {}", p.mapping.host_port).into(),
                        source,
                    })?,
                    mapping: p.mapping.clone(),
                })
            })
            .collect::<Result<Vec<_>, LaunchError>>()?;
        start_proxy(published, pid)
    }
}

/// Follows the window-size changes of a `-t` container's terminal.
type ResizeFollower = (Option<crate::sys::proc::FollowWindowSize>, Option<OwnedFd>);

/// `-t`: relay between the user's terminal (raw while the container runs) and the
/// pseudo-terminal's master. The follower holds its own copy of the master and is
/// dropped first, so the SIGWINCH handler never resizes a closed fd number.
fn attach_console(
    container: &mut runtime::Container,
    interactive: bool,
) -> (
    Option<crate::sys::tty::RawMode>,
    Option<std::thread::JoinHandle<()>>,
    Option<ResizeFollower>,
) {
    let Some(master) = container.take_console() else {
        return (None, None, None);
    };
    // A copy of the master for the SIGWINCH handler (the relay owns the other), followed
    // before the size is copied: a resize in between is not lost.
    let resize_fd: Option<OwnedFd> = master.try_clone().ok();
    let follow = resize_fd
        .as_ref()
        .map(|m| crate::sys::proc::follow_window_size(std::os::fd::AsFd::as_fd(m)));
    let raw = {
        use std::os::fd::AsFd;
        let stdin = std::io::stdin();
        if crate::sys::tty::is_terminal(stdin.as_fd()) {
            crate::sys::tty::copy_window_size(stdin.as_fd(), master.as_fd());
            crate::sys::tty::RawMode::enter(stdin.as_fd()).ok()
        } else {
            None
        }
    };
    let relay = relay_pty(master, interactive);
    (raw, Some(relay), Some((follow, resize_fd)))
}

/// Container `id`'s recorded state, marked as exited with `code` now.
fn exited(containers: &Containers, id: &str, code: i32) -> ContainerState {
    let mut st = containers
        .state(id)
        .unwrap_or_else(|_| ContainerState::created());
    st.status = Status::Exited;
    st.exit_code = Some(code);
    st.finished = Some(rfc3339(std::time::SystemTime::now()));
    st
}

/// Starts the port proxy of a container whose first process is `pid`. The sockets must be
/// made in the container's network namespace, which under an OCI runtime belongs to a
/// process below the runtime's. A container that ended before the proxy found it (a
/// short-lived `keel run -p … true`) gets none: as with docker, the run then just ends
/// with the container's status; only a running container without a namespace is an error.
fn start_proxy(
    published: Vec<ports::Published>,
    pid: i32,
) -> Result<Option<super::proxy::Proxy>, LaunchError> {
    crate::fault::delay("run.before-proxy");
    let ended = || !crate::sys::session::alive(pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let netns = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Some(holder) = crate::sys::session::netns_holder(pid, left) else {
            if ended() {
                return Ok(None);
            }
            return Err(LaunchError::Proxy(crate::sys::SysError::new(
                "publish ports",
                std::io::Error::other("the container has no network namespace of its own"),
            )));
        };
        match crate::sys::ns::open_ns(holder, "net") {
            Ok(ns) => break ns,
            // The namespace went away with the container between the look-up and the open.
            Err(_) if ended() => return Ok(None),
            // A runtime's namespace-setup stage (runc's intermediate child) held it for a
            // moment and exited; the container's init holds the same one: look again.
            Err(_) if std::time::Instant::now() < deadline => continue,
            Err(e) => return Err(LaunchError::Proxy(e)),
        }
    };
    super::proxy::start(published, netns)
        .map(Some)
        .map_err(LaunchError::Proxy)
}

/// Copies the pseudo-terminal's output to stdout (and, with `-i`, stdin to it); the
/// returned thread ends when the container's side of the terminal is closed.
pub(crate) fn relay_pty(master: OwnedFd, interactive: bool) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    let mut reader = fs::File::from(master);
    if interactive {
        if let Ok(mut writer) = reader.try_clone() {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin(), &mut writer);
            });
        }
    }
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut out = crate::report::stdout();
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                break;
            }
        }
    })
}

fn devnull() -> Option<OwnedFd> {
    fs::File::open("/dev/null").ok().map(OwnedFd::from)
}

fn stdin_fd() -> Option<OwnedFd> {
    use std::os::fd::AsFd;
    std::io::stdin().as_fd().try_clone_to_owned().ok()
}

/// Removes a stopped container's rootfs, anonymous volumes and record. `all_ended`: no
/// process of the container can be left (see [`Prepared::all_ended`]); `spare`: the
/// record's directory is kept for the next one ([`Containers::remove_keeping_spare`]).
pub fn remove(
    root: &Path,
    config: &ContainerConfig,
    snapshotter: &dyn Snapshotter,
    snapshot: &storage::Snapshot,
    anonymous: &[String],
    (all_ended, spare): (bool, bool),
) -> Result<(), LaunchError> {
    if all_ended && spare {
        // The foreground `run --rm`'s end: keel exits next.
        snapshotter.remove_unused_at_exit(snapshot)?;
    } else if all_ended {
        snapshotter.remove_unused(snapshot)?;
    } else {
        snapshotter.remove(snapshot)?;
    }
    let containers = Containers::new(root);
    if spare {
        containers.remove_keeping_spare(&config.id)?;
    } else {
        containers.remove(&config.id)?;
    }
    let volumes = Volumes::new(root);
    for a in anonymous {
        let _ = volumes.remove(a, &containers);
    }
    Ok(())
}

/// For a container being removed: an `oci` container whose supervisor died may still be
/// running under the runtime (`runc run` outlives a SIGKILLed keel), so it is deleted
/// there (`runtime delete -f` kills it) and its bundle removed. Nothing for other backends.
pub fn reclaim_runtime(root: &Path, config: &ContainerConfig) -> Result<(), LaunchError> {
    if config.isolation != "oci" {
        return Ok(());
    }
    let runc = config.runtime.clone().unwrap_or_else(|| "runc".into());
    runtime::oci::delete(&runc, None, &config.id)?;
    let bundle = runtime::oci::bundle_root(root).join(&config.id);
    match hostfs::remove_dir_all(&bundle) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LaunchError::Io {
            path: bundle,
            source: e,
        }),
        _ => Ok(()),
    }
}
