//! Container commands: run, ps, logs, stop, kill, rm, wait, port, exec, volume, and the
//! hidden supervisor a detached container runs under.
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
    /// Storage driver: overlay or copy (default: overlay where it works).
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
        })
    }
}

pub fn run(a: RunArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    super::registry::ensure_image(&store, ctx, &a.image, a.pull)?;
    let req = a.into_request()?;
    let id = container::new_id();
    if !req.detach {
        let prepared = launch::prepare(&store, req, &id)?;
        return Ok(prepared.run(Output::Inherit, true, |_| {})?);
    }
    // Detached: check everything here, then hand over to a supervisor process that owns
    // the container (and its port proxy) and reports back on a pipe.
    crate::container::run::validate(&req)?;
    store.resolve(&req.image)?;
    let dir = store.root().join("containers");
    std::fs::create_dir_all(&dir)?;
    let request_file = dir.join(format!(".request-{id}.json"));
    store.lease()?.protect_temp(&request_file)?;
    std::fs::write(&request_file, serde_json::to_vec(&req)?)?;
    crate::fault::point("run.request-written");
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--root")
        .arg(store.root())
        .arg("--progress")
        .arg("quiet")
        .arg("__supervise")
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the container supervisor")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let _ = std::fs::remove_file(&request_file);
    match line.trim().split_once(' ') {
        Some(("started", id)) => {
            println!("{id}");
            Ok(0)
        }
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
}

/// The detached container's supervisor: prepares and runs it, reporting on stdout.
pub fn supervise(a: SuperviseArgs, ctx: &Ctx) -> Result<i32> {
    crate::sys::session::new_session()?;
    let store = ctx.store()?;
    let request_file = store
        .root()
        .join("containers")
        .join(format!(".request-{}.json", a.id));
    let req: RunRequest = serde_json::from_slice(&std::fs::read(&request_file)?)?;
    let mut report = std::io::stdout();
    let prepared = match launch::prepare(&store, req, &a.id) {
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
        let _ = writeln!(std::io::stdout(), "error {e:#}");
    }
    Ok(result.unwrap_or(125))
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short, long)]
    all: bool,
    /// Output format: table or json.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
    /// Only print container ids.
    #[arg(short, long)]
    quiet: bool,
}

fn status_text(s: &container::ContainerState) -> String {
    match s.status {
        Status::Created => "Created".into(),
        Status::Running => "Up".into(),
        Status::Exited => format!("Exited ({})", s.exit_code.unwrap_or(-1)),
    }
}

fn ports_text(c: &ContainerConfig) -> String {
    c.ports
        .iter()
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p.host_ip, p.host_port, p.container_port, p.proto
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn ps(a: PsArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    let mut rows = Vec::new();
    for c in containers.list()? {
        let st = containers.refresh(&c)?;
        if a.all || st.status == Status::Running {
            rows.push((c, st));
        }
    }
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for (c, _) in &rows {
            writeln!(out, "{}", &c.id[..12])?;
        }
    } else if a.format == "json" {
        let v: Vec<_> = rows.iter().map(|(c, s)| serde_json::json!({"id": c.id, "name": c.name, "image": c.image, "command": c.command, "created": c.created, "status": s.status, "exit_code": s.exit_code, "pid": s.pid, "ports": c.ports})).collect();
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
                status_text(s),
                ports_text(c),
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
    container: String,
}

pub fn logs(a: LogsArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    let c = containers.find(&a.container)?;
    let path = containers.log_path(&c.id);
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(_) => return Ok(0),
    };
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n > 0 {
            out.write_all(&buf[..n])?;
            continue;
        }
        out.flush()?;
        if !a.follow
            || containers
                .refresh(&c)
                .map(|s| s.status == Status::Exited)
                .unwrap_or(true)
        {
            // One more read: output written just before the exit.
            let n = f.read(&mut buf)?;
            out.write_all(&buf[..n])?;
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

pub fn stop(a: StopArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let containers = Containers::new(store.root());
    for name in &a.containers {
        let c = containers.find(name)?;
        // Only a process provably keel's is signalled (a stale pid may be anyone's now).
        let st = containers.refresh(&c)?;
        if st.status == Status::Running {
            let sig = signal_number(c.stop_signal.as_deref().unwrap_or("TERM"))?;
            let _ = st.signal(sig);
            if !wait_exited(&containers, &c, Duration::from_secs(a.time)) {
                let _ = st.signal(libc::SIGKILL);
                wait_exited(&containers, &c, Duration::from_secs(30));
            }
        }
        println!("{name}");
    }
    Ok(0)
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
    for name in &a.containers {
        let c = containers.find(name)?;
        let st = containers.refresh(&c)?;
        if st.status != Status::Running || !st.signal(sig)? {
            bail!("container {name} is not running");
        }
        println!("{name}");
    }
    Ok(0)
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
    for name in &a.containers {
        let c = containers.find(name)?;
        let st = containers.refresh(&c)?;
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
        }
        if containers.find(&c.id).is_err() {
            println!("{name}");
            continue; // it was --rm and is gone already
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
        println!("{name}");
    }
    Ok(0)
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
        println!("{code}");
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
                println!(
                    "{}/{} -> {}:{}",
                    p.container_port, p.proto, p.host_ip, p.host_port
                );
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
            print!(
                "{}",
                crate::project::render_ports(&c.name, &mappings, format)
            );
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
            println!("VOLUME NAME");
            for v in volumes.list() {
                println!("{v}");
            }
        }
        VolumeCommand::Rm { names } => {
            for n in names {
                volumes.remove(&n, &containers)?;
                println!("{n}");
            }
        }
        VolumeCommand::Prune => {
            for n in volumes.prune(&containers)? {
                println!("{n}");
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
    let Some(root) = crate::container::exec::accounts_root(&c, &st) else {
        bail!("container {} is not running", a.container);
    };
    let spec = crate::runtime::plan_for_rootfs(&c.id, &config, &opts, &root)?;
    crate::fault::point("exec.joining");
    let exit = crate::container::exec::exec_attached(store.root(), &c, pid, &root, &spec, &req)?;
    if let Some(msg) = exit.exec_error {
        eprintln!("keel: {msg}");
    }
    Ok(exit.code)
}
