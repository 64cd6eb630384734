//! Container commands: run, ps, logs, stop, kill, rm, wait, port, exec, volume, and the
//! hidden supervisor a detached container runs under.
use crate::sys::hostfs;
use crate::{errln, outln};
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::Ctx;
use crate::container::flags::{parse_env, parse_env_file};
use crate::container::launch::{self, Output};
use crate::container::run::RunRequest;
use crate::container::volume::Volumes;
use crate::container::{self, ContainerConfig, Containers, Status};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container (rootfs, anonymous volumes, record) when it exits.
    #[arg(long)]
    rm: bool,
    /// Run in the background and print the container id.
    #[arg(short, long)]
    detach: bool,
    /// Assign a name to the container.
    #[arg(long)]
    name: Option<String>,
    /// Keep standard input open.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines).
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as: NAME, UID, NAME:GROUP or UID:GID.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Bind mount or volume: /host/path:/ctr[:ro], NAME:/ctr[:ro], or /ctr.
    #[arg(short, long = "volume", value_name = "SRC:DST[:ro]")]
    volume: Vec<String>,
    /// Mount a fresh tmpfs at this path.
    #[arg(long, value_name = "DST")]
    tmpfs: Vec<String>,
    /// Publish a container port: HOST:CTR, CTR (random host port) or 0:0 (random both).
    #[arg(short, long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
    /// Publish every EXPOSEd port on a random host port.
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// Network: private (own namespace, default), host, or none.
    #[arg(long, value_name = "MODE")]
    network: Option<String>,
    /// Container hostname (default: the short container id).
    #[arg(long)]
    hostname: Option<String>,
    /// Nameserver for the container's /etc/resolv.conf (replaces the host's).
    #[arg(long, value_name = "IP")]
    dns: Vec<String>,
    /// DNS search domain for /etc/resolv.conf (`.` for none).
    #[arg(long, value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// Resolver option for /etc/resolv.conf (e.g. ndots:2).
    #[arg(long, value_name = "OPT")]
    dns_option: Vec<String>,
    /// Add a line to /etc/hosts: NAME:IP (IP may be host-gateway with --network host).
    #[arg(long, value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Memory limit (e.g. 32m, 1g).
    #[arg(short, long)]
    memory: Option<String>,
    /// Maximum number of processes.
    #[arg(long)]
    pids_limit: Option<u64>,
    /// CPU limit in cores (e.g. 0.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Isolation backend: namespaces (default), chroot, or oci.
    #[arg(long, value_name = "BACKEND")]
    isolation: Option<String>,
    /// OCI runtime binary for --isolation oci (default: runc).
    #[arg(long, value_name = "PATH")]
    runtime: Option<PathBuf>,
    /// Storage driver: btrfs, overlay or copy (default: btrfs when the root is on btrfs, else overlay where it works, else copy).
    #[arg(long, value_name = "DRIVER")]
    storage_driver: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Pull the image: missing (only when the store lacks it), always, or never.
    #[arg(long, default_value = "missing", value_name = "POLICY")]
    pull: crate::registry::PullPolicy,
    /// Security options: seccomp=unconfined, seccomp=default, no-new-privileges.
    #[arg(long, value_name = "OPT")]
    security_opt: Vec<String>,
    /// Restart policy, kept by the container's supervisor: no, on-failure[:N], always,
    /// unless-stopped (`keel stop`/`kill`/`rm` always end it for good).
    #[arg(long, value_name = "POLICY")]
    restart: Option<String>,
    /// Run keel's init as PID 1 (forwards signals, reaps zombies): the default.
    #[arg(long, overrides_with = "no_init")]
    init: bool,
    /// Make the command itself PID 1 (it then gets only the signals it handles).
    #[arg(long)]
    no_init: bool,
    /// Platform of a multi-platform image to run (default: the host's); another
    /// architecture runs under qemu emulation (`keel info` lists what this host runs).
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<crate::platform::Platform>,
    /// Image to run.
    image: String,
    /// Command and arguments (replace the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn host_env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

impl RunArgs {
    fn into_request(self) -> Result<RunRequest> {
        let mut env = Vec::new();
        for f in &self.env_file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading --env-file {}", f.display()))?;
            env.extend(parse_env_file(&text, &f.display().to_string(), host_env)?);
        }
        for e in &self.env {
            env.extend(parse_env(e, host_env)?);
        }
        Ok(RunRequest {
            image: self.image,
            command: self.command,
            name: self.name,
            rm: self.rm,
            detach: self.detach,
            interactive: self.interactive,
            tty: self.tty,
            env,
            workdir: self.workdir,
            user: self.user,
            entrypoint: self.entrypoint,
            volumes: self.volume,
            tmpfs: self.tmpfs,
            publish: self.publish,
            publish_all: self.publish_all,
            network: self.network,
            hostname: self.hostname,
            read_only: self.read_only,
            memory: self.memory,
            pids_limit: self.pids_limit,
            cpus: self.cpus,
            isolation: self.isolation,
            storage_driver: self.storage_driver,
            runtime: self.runtime,
            security_opt: self.security_opt,
            etc: crate::runtime::etc::EtcOptions {
                dns: self.dns,
                dns_search: self.dns_search,
                dns_options: self.dns_option,
                add_hosts: self.add_host,
            },
            // Set by `keel exec-in` (see src/project/exec.rs).
            add_passwd: std::env::var(crate::project::PASSWD_VAR).ok(),
            add_group: std::env::var(crate::project::GROUP_VAR).ok(),
            restart: self.restart,
            platform: self.platform.as_ref().map(crate::platform::normalize),
            init: match (self.init, self.no_init) {
                (_, true) => Some(false),
                (true, false) => Some(true),
                _ => None,
            },
        })
    }
}

pub fn run(a: RunArgs, ctx: &Ctx) -> Result<i32> {
    // A foreign platform's emulator is there before the image is looked up or pulled.
    if let Some(p) = &a.platform {
        crate::platform::check(p)?;
    }
    let store = ctx.store()?;
    super::registry::ensure_image(&store, ctx, &a.image, a.pull)?;
    let req = a.into_request()?;
    let id = container::new_id();
    if !req.detach {
        let prepared = launch::prepare(&store, req, &id)?;
        return Ok(prepared.run(Output::Inherit, true, |_| {})?);
    }
    outln!("{}", start_detached(&store, req, &id)?)?;
    Ok(0)
}

/// Starts `req` as detached container `id` and returns its id once it runs (`keel run
/// -d`, and `keel deploy`'s process containers).
pub(super) fn start_detached(
    store: &crate::store::Store,
    req: RunRequest,
    id: &str,
) -> Result<String> {
    // Detached: check everything here, then hand over to a supervisor process that owns
    // the container (and its port proxy) and reports back on a pipe.
    crate::container::run::validate(&req)?;
    store.resolve(&req.image)?;
    let dir = store.root().join("containers");
    hostfs::create_dir_all(&dir)?;
    let request_file = dir.join(format!(".request-{id}.json"));
    store.lease()?.protect_temp(&request_file)?;
    hostfs::write(&request_file, serde_json::to_vec(&req)?)?;
    crate::fault::point("run.request-written");
    let started = spawn_supervisor(store, id, false);
    let _ = hostfs::remove_file(&request_file);
    started
}

/// `keel stop -t TIME` then `keel rm -f` of `names` (a deploy retiring a release).
pub(super) fn stop_and_remove(names: &[String], time: u64, ctx: &Ctx) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    stop(
        StopArgs {
            time,
            containers: names.to_vec(),
        },
        ctx,
    )?;
    rm(
        RmArgs {
            force: true,
            containers: names.to_vec(),
        },
        ctx,
    )?;
    Ok(())
}

/// Starts a detached supervisor for container `id` (a new one, or with `resume` a
/// stopped one) and waits for its word that the container runs; returns the id.
fn spawn_supervisor(store: &crate::store::Store, id: &str, resume: bool) -> Result<String> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("--root")
        .arg(store.root())
        .arg("--progress")
        .arg("quiet")
        .arg("__supervise")
        .arg(id);
    if resume {
        cmd.arg("--resume");
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the container supervisor")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    match line.trim().split_once(' ') {
        Some(("started", id)) => Ok(id.to_string()),
        Some(("error", msg)) => bail!("{msg}"),
        _ => {
            let status = child.wait()?;
            bail!("the container supervisor ended before starting the container ({status})")
        }
    }
}

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    id: String,
    /// Start the existing (stopped) container `id` again.
    #[arg(long)]
    resume: bool,
}

/// The detached container's supervisor: prepares and runs it, reporting on stdout.
pub fn supervise(a: SuperviseArgs, ctx: &Ctx) -> Result<i32> {
    crate::sys::session::new_session()?;
    let store = ctx.store()?;
    let mut report = crate::report::stdout();
    let prepared = if a.resume {
        launch::resume(&store, &a.id)
    } else {
        let request_file = store
            .root()
            .join("containers")
            .join(format!(".request-{}.json", a.id));
        let req: RunRequest = serde_json::from_slice(&std::fs::read(&request_file)?)?;
        launch::prepare(&store, req, &a.id)
    };
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(report, "error {e:#}");
            return Ok(125);
        }
    };
    let log = Containers::new(store.root()).log_path(&a.id);
    let id = a.id.clone();
    let result = prepared.run(Output::Log(log), false, |_| {
        let _ = writeln!(report, "started {id}");
        let _ = report.flush();
    });
    if let Err(e) = &result {
        let _ = writeln!(crate::report::stdout(), "error {e:#}");
    }
    Ok(result.unwrap_or(125))
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short, long)]
    all: bool,
    /// Keep containers that match: name=, id=, status=created|running|exited,
    /// ancestor=IMAGE, exited=CODE (repeat a key for alternatives).
    #[arg(short, long, value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Output: table, json (one JSON array), or a template such as
    /// '{{.ID}} {{.Names}} {{.Image}} {{.Status}}' ('table …' adds a header line).
    #[arg(long, default_value = "table")]
    format: String,
    /// Only print container ids.
    #[arg(short, long)]
    quiet: bool,
    /// Only the containers of a deployed app's current release (`keel deploy`).
    #[arg(long, value_name = "APP")]
    app: Option<String>,
}

pub fn ps(a: PsArgs, ctx: &Ctx) -> Result<i32> {
    use crate::container::query::{self, Filter, Template};
    let filters = a
        .filter
        .iter()
        .map(|f| Filter::parse(f))
        .collect::<Result<Vec<_>, _>>()?;
    let template = match a.format.as_str() {
        "table" | "json" => None,
        f => Some(Template::parse(f)?),
    };
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    let app = match &a.app {
        Some(app) => Some(crate::deploy::current_containers(store.root(), app)?),
        None => None,
    };
    let mut rows = Vec::new();
    for (c, st) in containers.list_with_state()? {
        if app.as_ref().is_some_and(|names| !names.contains(&c.name)) {
            continue;
        }
        // A status filter other than running implies -a, as in docker.
        let shown = a.all || st.status == Status::Running || !filters.is_empty();
        if shown && query::matches(&filters, &c, &st) {
            rows.push((c, st));
        }
    }
    let mut out = crate::report::stdout().lock();
    if a.quiet {
        for (c, _) in &rows {
            writeln!(out, "{}", &c.id[..12])?;
        }
    } else if let Some(t) = template {
        if t.table {
            writeln!(out, "{}", t.header())?;
        }
        for (c, s) in &rows {
            writeln!(out, "{}", t.render(c, s))?;
        }
    } else if a.format == "json" {
        let v: Vec<_> = rows.iter().map(|(c, s)| query::ps_json(c, s)).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(
            out,
            "{:<12}   {:<20}   {:<24}   {:<12}   {:<30}   NAMES",
            "CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "PORTS"
        )?;
        for (c, s) in &rows {
            let cmd: String = c.command.join(" ").chars().take(24).collect();
            writeln!(
                out,
                "{:<12}   {:<20}   {:<24}   {:<12}   {:<30}   {}",
                &c.id[..12],
                c.image,
                cmd,
                query::status_text(s),
                query::ports_text(c),
                c.name
            )?;
        }
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines (or all).
    #[arg(short = 'n', long, value_name = "N")]
    tail: Option<String>,
    /// Only lines written since: an RFC 3339 time, unix seconds, or a duration (10m).
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Prefix each line with the time it was written (RFC 3339, nanoseconds).
    #[arg(short, long)]
    timestamps: bool,
    #[arg(required_unless_present = "app")]
    container: Option<String>,
    /// The output of every container of a deployed app's current release, each line
    /// prefixed with its process (`web.1| `).
    #[arg(long, value_name = "APP", conflicts_with = "container")]
    app: Option<String>,
}

pub fn logs(a: LogsArgs, ctx: &Ctx) -> Result<i32> {
    use crate::container::logs::{parse_since, parse_tail, select, times_path, Selection};
    let sel = Selection {
        tail: a.tail.as_deref().map(parse_tail).transpose()?.flatten(),
        since: a
            .since
            .as_deref()
            .map(|s| parse_since(s, std::time::SystemTime::now()))
            .transpose()?,
        timestamps: a.timestamps,
    };
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    if let Some(app) = &a.app {
        return super::buildpack::app_logs(&containers, app, &sel, store.root(), a.follow);
    }
    let c = containers.find(
        a.container
            .as_deref()
            .expect("clap requires CONTAINER or --app"),
    )?;
    let path = containers.log_path(&c.id);
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(_) => return Ok(0),
    };
    let mut out = crate::report::stdout().lock();
    // What is there now, selected; then (with -f) everything new as it comes.
    let mut log = Vec::new();
    f.read_to_end(&mut log)?;
    let times = std::fs::read_to_string(times_path(&path)).unwrap_or_default();
    out.write_all(&select(&log, &times, &sel))?;
    let mut lines_seen = log.iter().filter(|b| **b == b'\n').count();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        out.flush()?;
        let ended = containers
            .refresh(&c)
            .map(|s| s.status != Status::Running)
            .unwrap_or(true);
        if !a.follow {
            return Ok(0);
        }
        let n = f.read(&mut buf)?;
        if n > 0 {
            let chunk = &buf[..n];
            if a.timestamps {
                let times = std::fs::read_to_string(times_path(&path)).unwrap_or_default();
                let rest: String = times
                    .lines()
                    .skip(lines_seen)
                    .map(|l| format!("{l}\n"))
                    .collect();
                out.write_all(&select(
                    chunk,
                    &rest,
                    &Selection {
                        timestamps: true,
                        ..Default::default()
                    },
                ))?;
            } else {
                out.write_all(chunk)?;
            }
            lines_seen += chunk.iter().filter(|b| **b == b'\n').count();
            continue;
        }
        if ended {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after the stop signal before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    time: u64,
    #[arg(required = true)]
    containers: Vec<String>,
}

fn signal_number(name: &str) -> Result<i32> {
    crate::sys::session::signal_number(name)
        .ok_or_else(|| anyhow::anyhow!("unknown signal {name:?}; use a name like TERM or a number"))
}

/// Waits until the container is recorded as exited, up to `limit`.
fn wait_exited(containers: &Containers, c: &ContainerConfig, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        match containers.state(&c.id) {
            Ok(st) if st.status != Status::Running => return true,
            Err(_) => return true, // removed (--rm)
            Ok(_) => {
                if containers
                    .refresh(c)
                    .is_ok_and(|st| st.status != Status::Running)
                {
                    return true;
                }
            }
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `one` for every named container and prints each name it did, as docker and podman
/// do for stop, kill, rm, start and restart: a name that fails is reported and the others
/// are still done; the exit status is 1 when any failed.
fn for_each_container(names: &[String], mut one: impl FnMut(&str) -> Result<()>) -> Result<i32> {
    let mut failed = false;
    for name in names {
        match one(name) {
            Ok(()) => outln!("{name}")?,
            Err(e) => {
                errln!("keel: error: {}", super::error_text(&e));
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

pub fn stop(a: StopArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    for_each_container(&a.containers, |name| {
        let c = containers.find(name)?;
        // Only a process provably keel's is signalled (a stale pid may be anyone's now).
        let st = containers.refresh(&c)?;
        // Before the signal: the supervisor must not restart what the user stopped.
        containers.mark_stopped_by_user(&c.id)?;
        if st.status == Status::Running {
            let sig = signal_number(c.stop_signal.as_deref().unwrap_or("TERM"))?;
            signal_for_stop(&st, sig, &c.id);
            if !wait_exited(&containers, &c, Duration::from_secs(a.time)) {
                tracing::debug!(container = %c.id, seconds = a.time, "still running after the stop signal: SIGKILL");
                signal_for_stop(&st, libc::SIGKILL, &c.id);
                wait_exited(&containers, &c, Duration::from_secs(30));
            }
        }
        Ok(())
    })
}

/// Sends `stop`'s signal; one that could not be sent is said (the container is then
/// waited for as if it had been: it may have ended on its own meanwhile).
fn signal_for_stop(st: &crate::container::ContainerState, sig: i32, id: &str) {
    match st.signal(sig) {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "container {}: signal {sig} not sent: its process is gone or no longer provably the container's",
            &id[..12.min(id.len())]
        ),
        Err(e) => tracing::warn!("container {}: signal {sig}: {e}", &id[..12.min(id.len())]),
    }
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send (name or number).
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn kill(a: KillArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    let sig = signal_number(&a.signal)?;
    for_each_container(&a.containers, |name| {
        let c = containers.find(name)?;
        let st = containers.refresh(&c)?;
        if st.status == Status::Running {
            containers.mark_stopped_by_user(&c.id)?;
        }
        if st.status != Status::Running || !st.signal(sig)? {
            bail!("container {name} is not running");
        }
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill the container first if it is running.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn rm(a: RmArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    for_each_container(&a.containers, |name| {
        let c = containers.find(name)?;
        let st = containers.refresh(&c)?;
        // A supervisor waiting to restart it (--restart) must not bring it back.
        containers.mark_stopped_by_user(&c.id)?;
        // Should this rm die half-way, gc finishes the removal.
        store.lease()?.protect_container(&c.id)?;
        if st.status == Status::Running {
            if !a.force {
                bail!(
                    "container {name} is running; stop it first (`keel stop {name}`) or use rm -f"
                );
            }
            let _ = st.signal(libc::SIGKILL);
            wait_exited(&containers, &c, Duration::from_secs(30));
        }
        if st.supervisor_alive() {
            wait_exited(&containers, &c, Duration::from_secs(30));
            // Its supervisor may be between restarts: it sees the mark and ends.
            let deadline = Instant::now() + Duration::from_secs(30);
            while containers.state(&c.id).is_ok_and(|s| s.supervisor_alive())
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if containers.find(&c.id).is_err() {
            return Ok(()); // it was --rm and is gone already
        }
        crate::fault::point("rm.stopped");
        launch::reclaim_runtime(store.root(), &c)?;
        let snapshotter = crate::storage::open(Some(&c.storage_driver), store.root())?;
        snapshotter.remove_id(&c.id)?;
        crate::fault::point("rm.snapshot-removed");
        let anonymous: Vec<String> = c
            .volumes
            .iter()
            .filter(|v| v.starts_with(&c.id[..12]))
            .cloned()
            .collect();
        containers.remove(&c.id)?;
        let volumes = Volumes::new(store.root());
        for v in anonymous {
            let _ = volumes.remove(&v, &containers);
        }
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn wait(a: WaitArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    for name in &a.containers {
        let c = containers.find(name)?;
        wait_exited(&containers, &c, Duration::from_secs(u64::MAX / 4));
        let code = containers
            .state(&c.id)
            .ok()
            .and_then(|s| s.exit_code)
            .unwrap_or(0);
        outln!("{code}")?;
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct PortArgs {
    container: String,
    /// Output format: text, env, make, json or properties.
    #[arg(long, default_value = "text")]
    format: String,
}

pub fn port(a: PortArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    let c = containers.find(&a.container)?;
    match a.format.as_str() {
        "text" => {
            for p in &c.ports {
                outln!(
                    "{}/{} -> {}:{}",
                    p.container_port,
                    p.proto,
                    p.host_ip,
                    p.host_port
                )?;
            }
        }
        other => {
            let format = match other {
                "env" => crate::project::PortFormat::Env,
                "make" => crate::project::PortFormat::Make,
                "json" => crate::project::PortFormat::Json,
                "properties" => crate::project::PortFormat::Properties,
                _ => bail!("unknown --format {other:?}; use text, env, make, json or properties"),
            };
            let mappings: Vec<crate::project::PortMapping> = c
                .ports
                .iter()
                .map(|p| crate::project::PortMapping {
                    container: format!("{}/{}", p.container_port, p.proto),
                    host_ip: p.host_ip.clone(),
                    host_port: p.host_port,
                })
                .collect();
            crate::report::out_bytes(
                crate::project::render_ports(&c.name, &mappings, format).as_bytes(),
            )?;
        }
    }
    Ok(0)
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List volumes.
    Ls,
    /// Remove volumes.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses.
    Prune,
}

pub fn volume(c: VolumeCommand, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let volumes = Volumes::new(store.root());
    let containers = Containers::new(store.root());
    match c {
        VolumeCommand::Ls => {
            outln!("VOLUME NAME")?;
            for v in volumes.list() {
                outln!("{v}")?;
            }
        }
        VolumeCommand::Rm { names } => {
            for n in names {
                volumes.remove(&n, &containers)?;
                outln!("{n}")?;
            }
        }
        VolumeCommand::Prune => {
            for n in volumes.prune(&containers)? {
                outln!("{n}")?;
            }
        }
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Set an environment variable (KEY=VALUE).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as: NAME, UID, NAME:GROUP or UID:GID.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Keep standard input open.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal (the process's controlling terminal).
    #[arg(short, long)]
    tty: bool,
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

pub fn exec(a: ExecArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    let c = containers.find(&a.container)?;
    let st = containers.refresh(&c)?;
    let pid = match (st.status, st.live_pid()) {
        (Status::Running, Some((pid, _))) => pid,
        _ => bail!(
            "container {} is not running; start a new one with `keel run`",
            a.container
        ),
    };
    let image = store.resolve(c.image_digest.as_ref())?;
    let config = image.config.config().clone().unwrap_or_default();
    let mut env = Vec::new();
    for e in &a.env {
        env.extend(parse_env(e, host_env)?);
    }
    let req = crate::container::exec::ExecRequest {
        command: a.command.clone(),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        interactive: a.interactive,
        tty: a.tty,
    };
    let opts = crate::container::exec::options(&c, &req);
    let Some(root) = crate::container::exec::accounts_root(store.root(), &c, &st) else {
        bail!("container {} is not running", a.container);
    };
    let spec = crate::runtime::plan_for_rootfs(&c.id, &config, &opts, &root)?;
    crate::fault::point("exec.joining");
    let exit = crate::container::exec::exec_attached(store.root(), &c, pid, &root, &spec, &req)?;
    if let Some(msg) = exit.exec_error {
        errln!("keel: {msg}");
    }
    Ok(exit.code)
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Stopped containers to start again (as they were made: command, flags, rootfs).
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Starts each stopped container under a new supervisor; a running one is left alone.
fn start_one(store: &crate::store::Store, containers: &Containers, name: &str) -> Result<()> {
    let c = containers.find(name)?;
    let st = containers.refresh(&c)?;
    if st.status == Status::Running {
        return Ok(());
    }
    // Right after `keel stop` the supervisor is still winding down (runtime delete,
    // unmounts; rootless and `--isolation oci` take a second): wait for it rather than
    // take it for one about to restart the container and start nothing.
    if containers.stopped_by_user(&c.id) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while containers.state(&c.id).is_ok_and(|s| s.supervisor_alive())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if containers.state(&c.id)?.supervisor_alive() {
        return Ok(());
    }
    containers.clear_stopped_by_user(&c.id)?;
    spawn_supervisor(store, &c.id, true).with_context(|| format!("starting container {name}"))?;
    Ok(())
}

pub fn start(a: StartArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    for_each_container(&a.containers, |name| start_one(&store, &containers, name))
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Seconds to wait after the stop signal before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    time: u64,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn restart(a: RestartArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    for_each_container(&a.containers, |name| {
        let c = containers.find(name)?;
        containers.mark_stopped_by_user(&c.id)?;
        let st = containers.refresh(&c)?;
        if st.status == Status::Running {
            let sig = signal_number(c.stop_signal.as_deref().unwrap_or("TERM"))?;
            let _ = st.signal(sig);
            if !wait_exited(&containers, &c, Duration::from_secs(a.time)) {
                let _ = st.signal(libc::SIGKILL);
            }
        }
        // The old supervisor must be gone before a new one takes the container.
        let deadline = Instant::now() + Duration::from_secs(30);
        while containers.state(&c.id).is_ok_and(|s| s.supervisor_alive())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        start_one(&store, &containers, name)
    })
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

pub fn rename(a: RenameArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    Containers::new(store.root()).rename(&a.container, &a.new_name)?;
    Ok(0)
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// CONTAINER:PATH or a host path.
    src: String,
    /// CONTAINER:PATH or a host path (exactly one side is a container's).
    dst: String,
}

/// `keel cp`: the container's tree is opened as an in-root handle on its rootfs, so a
/// symlink inside it can never lead to a host path.
pub fn cp(a: CpArgs, ctx: &Ctx) -> Result<i32> {
    use crate::container::cp::{self, Direction};
    let dir = cp::parse(&a.src, &a.dst)?;
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    let name = match &dir {
        Direction::Out { container, .. } | Direction::In { container, .. } => container,
    };
    let c = containers.find(name)?;
    let rootfs = if crate::sys::userns::rootless() {
        rootless_cp_rootfs(store.root(), &containers, &c, name)?
    } else {
        let snapshotter = crate::storage::open(Some(&c.storage_driver), store.root())?;
        snapshotter.get(&c.id)?.rootfs
    };
    let tree = crate::sys::rootfs::Rootfs::open(&rootfs)?;
    match &dir {
        Direction::Out { path, host, .. } => cp::copy_out(&tree, path, host)?,
        Direction::In { host, path, .. } => cp::copy_in(host, &tree, path)?,
    }
    Ok(0)
}

/// Rootless `keel cp` starts outside any user namespace (see `main`) and picks one here:
/// for a running container, the container's own (joined: its owner may), with the rootfs
/// reached through the root of the keel that mounted it; for a stopped one, a namespace
/// of its own in which the rootfs is mounted again. Either way files it writes belong to
/// the container's root (the user), and files of every container user can be read.
fn rootless_cp_rootfs(
    keel_root: &std::path::Path,
    containers: &Containers,
    c: &ContainerConfig,
    name: &str,
) -> Result<PathBuf> {
    let st = containers.refresh(c)?;
    if let (Status::Running, Some((pid, _))) = (st.status, st.live_pid()) {
        let snapshotter = crate::storage::open(Some(&c.storage_driver), keel_root)?;
        let snap = snapshotter.get(&c.id)?;
        let (mounter, rootfs) = crate::container::cp::running_rootfs(name, pid, &snap.rootfs)?;
        crate::sys::userns::join_user_ns_of(mounter)
            .with_context(|| format!("joining the user namespace of container {name}"))?;
        return Ok(rootfs);
    }
    super::rootless::enter_if_needed(true)?;
    let snapshotter = crate::storage::open(Some(&c.storage_driver), keel_root)?;
    let snap = snapshotter.get(&c.id)?;
    snapshotter.ensure_mounted(&snap)?;
    Ok(snap.rootfs)
}

#[derive(Debug, Args)]
pub struct TopArgs {
    container: String,
}

/// The running container's processes (every process whose root is its rootfs).
fn container_pids(ctx: &Ctx, name: &str) -> Result<(ContainerConfig, Vec<i32>)> {
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    let c = containers.find(name)?;
    let st = containers.refresh(&c)?;
    if st.status != Status::Running {
        bail!("container {name} is not running; `keel start {name}` starts it again");
    }
    let rootfs = if crate::sys::userns::rootless() {
        // Rootless, the rootfs is mounted only in the container's own namespace: the
        // root of its first process that left the host's root stands for it (keel top
        // and stats run outside any user namespace, as its owner, to read /proc).
        st.live_pid()
            .and_then(|(pid, _)| crate::runtime::reclaim::contained_root(pid))
            .with_context(|| format!("finding the root of container {name}"))?
    } else {
        let snapshotter = crate::storage::open(Some(&c.storage_driver), store.root())?;
        snapshotter.get(&c.id)?.rootfs
    };
    let mut pids = crate::runtime::reclaim::rooted_in(&rootfs);
    pids.sort_unstable();
    Ok((c, pids))
}

pub fn top(a: TopArgs, ctx: &Ctx) -> Result<i32> {
    let (_, pids) = container_pids(ctx, &a.container)?;
    let mut out = crate::report::stdout().lock();
    writeln!(out, "{:<8} {:<8} {:<9} CMD", "PID", "PPID", "TIME")?;
    for row in pids
        .iter()
        .filter_map(|p| crate::container::stats::process_row(*p))
    {
        writeln!(out, "{:<8} {:<8} {:<9} {}", row[0], row[1], row[2], row[3])?;
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one sample and exit (default: refresh every second until interrupted).
    #[arg(long)]
    no_stream: bool,
    /// Output: table or json.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

/// The cgroup directories of container `c` for `keel stats`; with none to read (rootless
/// without a delegated subtree), one line saying why, once per container.
fn stats_cgroups(
    c: &ContainerConfig,
    pids: &[i32],
    noted: &mut std::collections::BTreeSet<String>,
) -> Vec<PathBuf> {
    match crate::container::stats::cgroup_dirs(&c.id, pids) {
        Ok(dirs) => dirs,
        Err(why) => {
            if noted.insert(c.id.clone()) {
                errln!(
                    "keel: no cgroup figures for container {}: {why}; its CPU, memory and PIDS are summed over its processes, and no limit is shown",
                    c.name
                );
            }
            Vec::new()
        }
    }
}

pub fn stats(a: StatsArgs, ctx: &Ctx) -> Result<i32> {
    use crate::container::stats::{cpu_percent, human_bytes, sample};
    let interval = Duration::from_millis(500);
    let mut noted = std::collections::BTreeSet::new();
    loop {
        let mut rows = Vec::new();
        for name in &a.containers {
            let (c, pids) = container_pids(ctx, name)?;
            let dirs = stats_cgroups(&c, &pids, &mut noted);
            let before = sample(&dirs, &pids);
            rows.push((c, pids, dirs, before));
        }
        std::thread::sleep(interval);
        let mut out = crate::report::stdout().lock();
        if a.format == "table" {
            writeln!(
                out,
                "{:<12}   {:<20}   {:<7}   {:<24}   PIDS",
                "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT"
            )?;
        }
        for (c, pids, dirs, before) in rows {
            let after = sample(&dirs, &pids);
            let cpu = cpu_percent(&before, &after, interval);
            let limit = after
                .memory_limit
                .map_or_else(|| "-".to_string(), human_bytes);
            if a.format == "json" {
                let v = serde_json::json!({"ID": &c.id[..12], "Name": c.name, "CPUPerc": cpu,
                    "MemUsage": after.memory, "MemLimit": after.memory_limit, "PIDs": after.pids});
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "{:<12}   {:<20}   {:<7}   {:<24}   {}",
                    &c.id[..12],
                    c.name,
                    format!("{cpu:.2}%"),
                    format!("{} / {limit}", human_bytes(after.memory)),
                    after.pids
                )?;
            }
        }
        if a.no_stream {
            return Ok(0);
        }
    }
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// What to look for: container, image, or (default) a container first, then an image.
    #[arg(long = "type", value_name = "KIND", value_parser = ["container", "image"])]
    kind: Option<String>,
    /// Print nothing: only the exit status says whether everything named exists.
    #[arg(short, long)]
    quiet: bool,
    /// Container or image names or ids.
    #[arg(required = true)]
    names: Vec<String>,
}

/// `keel inspect`: docker's order, a container of that name or id first, then an image.
pub fn inspect(a: InspectArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    let mut docs = Vec::new();
    for n in &a.names {
        let found = match a.kind.as_deref() {
            Some("image") => None,
            _ => containers.find(n).ok(),
        };
        match found {
            Some(c) => {
                let st = containers.refresh(&c)?;
                let kept = containers.kept_request(&c.id)?;
                let extra = serde_json::json!({
                    "RestartCount": st.restart_count,
                    "LogPath": containers.log_path(&c.id),
                    "HostConfig": {
                        "RestartPolicy": {"Name": kept.as_ref().and_then(|k| k.request.restart.clone()).unwrap_or_else(|| "no".into())},
                        "Init": kept.as_ref().map(|k| k.request.init != Some(false)),
                    },
                    "Config": {"Env": kept.as_ref().map(|k| k.request.env.clone())},
                });
                docs.push(crate::container::query::inspect_json(&c, &st, extra));
            }
            None if a.kind.as_deref() == Some("container") => {
                bail!("no such container: {n}; `keel ps -a` lists them")
            }
            None => docs.push(super::image::inspect_doc(&store, n).with_context(|| {
                format!(
                    "looking for image {n} in the keel root {}",
                    store.root().display()
                )
            })?),
        }
    }
    if !a.quiet {
        outln!("{}", serde_json::to_string_pretty(&docs)?)?;
    }
    Ok(0)
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show what the root holds: images, containers, volumes, build cache.
    Df,
    /// Remove stopped containers, then unreferenced blobs and stale caches (`keel gc`).
    Prune {
        /// Also drop the whole build cache, not only entries unused for 7 days.
        #[arg(short, long)]
        all: bool,
        /// Also remove volumes no container uses.
        #[arg(long)]
        volumes: bool,
    },
}

pub fn system(c: SystemCommand, ctx: &Ctx) -> Result<i32> {
    match c {
        SystemCommand::Df => system_df(ctx),
        SystemCommand::Prune { all, volumes } => {
            let store = ctx.store()?;
            let containers = Containers::new(store.root());
            let mut stopped = Vec::new();
            for (c, st) in containers.list_with_state()? {
                if st.status != Status::Running && !st.supervisor_alive() {
                    stopped.push(c.id.clone());
                }
            }
            outln!("removing {} stopped containers", stopped.len())?;
            if !stopped.is_empty() {
                rm(
                    RmArgs {
                        force: false,
                        containers: stopped,
                    },
                    ctx,
                )?;
            }
            if volumes {
                let vols = Volumes::new(store.root());
                for n in vols.prune(&containers)? {
                    outln!("removed volume {n}")?;
                }
            }
            super::system::gc(super::system::GcArgs { cache: all }, ctx)
        }
    }
}

fn system_df(ctx: &Ctx) -> Result<i32> {
    use crate::container::usage::{disk_usage, reclaimable_text};
    let store = ctx.store()?;
    let rows = disk_usage(&store)?;
    let human = super::image::human_size;
    outln!(
        "{:<15} {:<7} {:<7} {:<12} RECLAIMABLE",
        "TYPE",
        "TOTAL",
        "ACTIVE",
        "SIZE"
    )?;
    for r in &rows {
        outln!(
            "{:<15} {:<7} {:<7} {:<12} {}",
            r.kind,
            r.total,
            r.active,
            human(r.size),
            reclaimable_text(r, human)
        )?;
    }
    Ok(0)
}
