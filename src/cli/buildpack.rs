//! `keel buildpack build`, `keel deploy`, `keel rollback` and `keel apps`: the flags,
//! and the calls into `buildpack::` (plan, run) and `deploy::` (releases, swaps).
use crate::{errln, outln};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

use super::Ctx;
use crate::build::progress::{BuildView, ViewMode};
use crate::buildpack::{self, BuildRequest};

#[derive(Debug, Subcommand)]
pub enum BuildpackCommand {
    /// Build an image from an app directory with Heroku classic buildpacks.
    Build(BuildArgs),
    /// List the buildpacks keel ships, in detection order.
    List,
}

#[derive(Debug, Args, Clone, Default)]
pub struct AppFlags {
    /// A buildpack: a shipped NAME (python, nodejs, static, procfile), a directory, a git
    /// URL (URL#REF) or a tarball URL; repeat for a multi-buildpack build, in order
    /// (default: the app's .buildpacks, else the first shipped one that detects the app).
    #[arg(long = "buildpack", short = 'b', value_name = "DIR|URL|NAME")]
    pub buildpacks: Vec<String>,
    /// The stack: its images STACK-build and STACK-run (`keel bootstrap stack STACK`).
    #[arg(long, value_name = "STACK", default_value = buildpack::DEFAULT_STACK)]
    pub stack: String,
    /// A config var (KEY=VALUE): a file in ENV_DIR while compiling, Env in the image.
    #[arg(long, short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Config vars from a file (KEY=VALUE lines, # comments).
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Container isolation for bin/detect, bin/compile and bin/release.
    #[arg(long, value_name = "BACKEND")]
    pub isolation: Option<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The app's directory (its source: no Dockerfile needed).
    pub app: PathBuf,
    /// The image name to tag.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub flags: AppFlags,
}

/// `--env-file` lines then `--env` values, as `KEY=VALUE` texts.
fn env_entries(flags: &AppFlags) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in &flags.env_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading --env-file {}", f.display()))?;
        out.extend(crate::container::flags::parse_env_file(
            &text,
            &f.display().to_string(),
            |k| std::env::var(k).ok(),
        )?);
    }
    out.extend(flags.env.iter().cloned());
    Ok(out)
}

/// The request for app `dir` tagged `name` with these flags.
pub fn request(dir: PathBuf, name: String, flags: &AppFlags) -> Result<BuildRequest> {
    Ok(BuildRequest {
        app_dir: dir,
        name,
        buildpacks: flags.buildpacks.clone(),
        stack: flags.stack.clone(),
        env: buildpack::run::env_map(&env_entries(flags)?)?,
        isolation: flags.isolation.clone(),
    })
}

/// Builds one app: the plan, then its execution with the build view; the image's name
/// and id are printed.
pub fn build_app(req: &BuildRequest, ctx: &Ctx) -> Result<buildpack::run::Built> {
    let store = ctx.store()?;
    let plan = buildpack::plan(store.root(), req)?;
    let mode = if ctx.reporter.is_quiet() {
        ViewMode::Quiet
    } else if ctx.reporter.is_fancy() {
        ViewMode::Terminal
    } else {
        ViewMode::Plain
    };
    let view = BuildView::new(mode);
    let id = crate::container::new_id();
    let log_dir = crate::build::progress::new_build_log(store.root(), &id[..12]);
    if let Ok(f) = crate::sys::hostfs::create(log_dir.join("build.log")) {
        view.add_transcript(f);
    }
    view.line(&format!(
        "buildpack build of {} on stack {} ({} / {})",
        req.app_dir.display(),
        plan.stack,
        plan.build_image,
        plan.run_image
    ));
    let built = buildpack::run::run(&store, &plan, &view, &log_dir)?;
    view.line(&format!(
        "built {} ({})",
        req.name,
        built.record.id().to_string().get(7..19).unwrap_or("")
    ));
    Ok(built)
}

pub fn buildpack(c: BuildpackCommand, ctx: &Ctx) -> Result<i32> {
    match c {
        BuildpackCommand::Build(a) => {
            let req = request(a.app, a.name, &a.flags)?;
            let built = build_app(&req, ctx)?;
            outln!("{}", built.record.id())?;
            Ok(0)
        }
        BuildpackCommand::List => {
            for n in buildpack::shipped::names() {
                outln!("{n}")?;
            }
            errln!("(and any Heroku classic buildpack: --buildpack DIR|URL)");
            Ok(0)
        }
    }
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The app's name (lowercase letters, digits, '-'): its images are APP:vN.
    pub app: String,
    /// The app's directory (default: the directory of its last deploy).
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// How many containers of each process type: web=2,worker=1 (kept for later deploys;
    /// default web=1, others 0).
    #[arg(long, value_name = "TYPE=N,…")]
    pub scale: Option<String>,
    /// Seconds to wait for the new release's web processes to answer.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,
    /// How web must answer: http (GET / gives 2xx/3xx) or tcp (a connection stays open).
    #[arg(long, value_enum, default_value = "http")]
    pub check: crate::deploy::health::Check,
    /// The app's stable port on the host (its router; default: a free port, kept).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// What this release is (shown by `keel apps`; the git hook passes the commit).
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    #[command(flatten)]
    pub flags: AppFlags,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    pub app: String,
    /// The release to bring back (default: the one before the current).
    #[arg(long, value_name = "N")]
    pub to: Option<u32>,
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,
    #[arg(long, value_enum, default_value = "http")]
    pub check: crate::deploy::health::Check,
}

#[derive(Debug, Args)]
pub struct AppsArgs {
    #[command(subcommand)]
    pub command: Option<AppsCommand>,
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Stop an app's containers and router and forget it (its images stay).
    Rm { app: String },
    /// Keep an app up, in the foreground: serve its router and start the current
    /// release's containers again whenever they are gone (after a reboot, a crash, a
    /// `keel rm`); SIGTERM stops them. What `keel integrate systemd|supervisord|runit
    /// --app APP` runs.
    Up { app: String },
}

#[derive(Debug, Args)]
pub struct RouterArgs {
    app: String,
    #[arg(long, default_value_t = 0)]
    port: u16,
}

use crate::deploy::{self, health::Check, AppState, Process, Release};

/// How a new release's containers are started and checked.
struct Swap {
    image: String,
    description: String,
    scale: std::collections::BTreeMap<String, u32>,
    /// Each type's command (empty: the buildpack launcher's `TYPE`).
    commands: std::collections::BTreeMap<String, Vec<String>>,
    timeout: u64,
    check: Check,
}

/// The router of `state`'s app runs (started when it does not); its port is saved.
fn ensure_router(state: &mut AppState, ctx: &Ctx) -> Result<()> {
    use std::io::BufRead;
    if state.router_pid.is_some_and(crate::sys::session::alive) {
        return Ok(());
    }
    let store = ctx.store()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--root")
        .arg(store.root())
        .args(["--progress", "quiet", "__router", &state.name, "--port"])
        .arg(state.router_port.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the app's router")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse::<u16>().ok());
    let Some(port) = port else {
        let _ = child.wait();
        anyhow::bail!(
            "the router of {} could not listen on port {} (is it taken? pass --port)",
            state.name,
            state.router_port
        );
    };
    state.router_port = port;
    state.router_pid = Some(child.id() as i32);
    deploy::save(store.root(), state)?;
    Ok(())
}

/// `keel __router APP`: the app's router process (see deploy/router.rs).
pub fn router(a: RouterArgs, ctx: &Ctx) -> Result<i32> {
    crate::sys::session::new_session()?;
    let store = ctx.store()?;
    let (listener, port) = deploy::router::bind(a.port)?;
    outln!("listening {port}")?;
    deploy::router::serve(listener, store.root().to_path_buf(), a.app)?;
    Ok(0)
}

/// Starts one process container of the release; returns it with its host port.
fn start_process(
    store: &crate::store::Store,
    image: &str,
    kind: &str,
    name: &str,
    command: Vec<String>,
) -> Result<Process> {
    let i = name.rsplit('.').next().unwrap_or("1");
    let req = crate::container::run::RunRequest {
        image: image.to_string(),
        command,
        name: Some(name.to_string()),
        detach: true,
        env: vec![format!("DYNO={kind}.{i}")],
        publish: if kind == "web" {
            vec!["0:0".into()]
        } else {
            Vec::new()
        },
        restart: Some("unless-stopped".into()),
        ..Default::default()
    };
    super::run::start_detached(store, req, &crate::container::new_id())?;
    let c = crate::container::Containers::new(store.root()).find(name)?;
    Ok(Process {
        name: name.to_string(),
        kind: kind.to_string(),
        port: c.ports.first().map_or(0, |p| p.host_port),
    })
}

/// Waits until every web process answers; the error says what the last probe saw.
fn wait_healthy(
    procs: &[Process],
    timeout: u64,
    check: Check,
) -> std::result::Result<(), (String, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    for p in procs.iter().filter(|p| p.kind == "web") {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], p.port));
        loop {
            match deploy::health::probe(addr, check) {
                Ok(()) => break,
                Err(e) if std::time::Instant::now() >= deadline => return Err((e, p.name.clone())),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    }
    Ok(())
}

/// Starts the new release beside the current one, waits for web, switches the router
/// to it, then stops the previous release: the zero-downtime swap.
/// Starts release `version`'s containers (`s.scale` of each type); when one fails to
/// start, those already started are removed.
fn start_release(app: &str, version: u32, s: &Swap, ctx: &Ctx) -> Result<Vec<Process>> {
    let store = ctx.store()?;
    let names = deploy::container_names(app, version, &s.scale);
    let mut procs = Vec::new();
    for (kind, name) in &names {
        let command = deploy::command_for(&s.commands, kind);
        match start_process(&store, &s.image, kind, name, command) {
            Ok(p) => procs.push(p),
            Err(e) => {
                let started: Vec<String> = procs.iter().map(|p: &Process| p.name.clone()).collect();
                super::run::stop_and_remove(&started, 5, ctx)?;
                return Err(e);
            }
        }
    }
    let names: Vec<&str> = names.iter().map(|(_, n)| n.as_str()).collect();
    ctx.reporter
        .note(format!("v{version}: started {}", names.join(", ")));
    Ok(procs)
}

fn swap(state: &mut AppState, s: Swap, ctx: &Ctx) -> Result<u32> {
    let store = ctx.store()?;
    ensure_router(state, ctx)?;
    let version = state.next_version();
    let procs = start_release(&state.name, version, &s, ctx)?;
    if let Err((last, container)) = wait_healthy(&procs, s.timeout, s.check) {
        let started: Vec<String> = procs.iter().map(|p| p.name.clone()).collect();
        super::run::stop_and_remove(&started, 5, ctx)?;
        return Err(deploy::DeployError::NotHealthy {
            app: state.name.clone(),
            version,
            secs: s.timeout,
            last,
            container,
        }
        .into());
    }
    // `keel apps up` must not restart the previous release's containers as they stop.
    let _lock = deploy::lock(store.root(), &state.name)?;
    if let Some(fresh) = deploy::load(store.root(), &state.name)? {
        // Ports `keel apps up` gave restarted containers since this deploy began.
        state.releases = fresh.releases;
        state.router_pid = fresh.router_pid;
    }
    let previous = state
        .current_release()
        .map(|r| r.processes.clone())
        .unwrap_or_default();
    state.releases.push(Release {
        version,
        image: s.image,
        created: crate::image::rfc3339(std::time::SystemTime::now()),
        description: s.description,
        processes: procs,
        commands: s.commands,
    });
    state.current = Some(version);
    state.scale = s.scale;
    deploy::save(store.root(), state)?;
    // The router sends new connections to the new release from now on; requests already
    // relayed to the old one get a moment to finish before it stops.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let old: Vec<String> = previous.iter().map(|p| p.name.clone()).collect();
    super::run::stop_and_remove(&old, 10, ctx)?;
    if let Some(r) = state
        .releases
        .iter_mut()
        .find(|r| r.processes.iter().any(|p| old.contains(&p.name)))
    {
        r.processes.clear();
    }
    deploy::save(store.root(), state)?;
    Ok(version)
}

/// The process types an image's launcher knows (its `io.keel.processes` label).
fn image_types(image: &str, ctx: &Ctx) -> Result<Vec<String>> {
    let store = ctx.store()?;
    let rec = store.resolve(image)?;
    let config = crate::image::ImageConfig::from_slice(&store.read_blob(rec.id())?)?;
    let label = config
        .config
        .labels
        .as_ref()
        .and_then(|l| l.get(buildpack::slug::LABEL_PROCESSES).cloned())
        .unwrap_or_else(|| "web".into());
    Ok(label
        .split(',')
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect())
}

fn print_up(state: &AppState, version: u32) -> Result<()> {
    outln!(
        "{} v{version} is up at http://127.0.0.1:{}/",
        state.name,
        state.router_port
    )?;
    Ok(())
}

/// `keel deploy APP`: build the app with its buildpacks as `APP:vN`, then swap.
pub fn deploy_app(a: DeployArgs, ctx: &Ctx) -> Result<i32> {
    deploy::check_name(&a.app)?;
    let store = ctx.store()?;
    let mut state = deploy::load(store.root(), &a.app)?.unwrap_or_else(|| AppState {
        name: a.app.clone(),
        ..Default::default()
    });
    if let Some(p) = a.port {
        state.router_port = p;
    }
    let path = a
        .path
        .clone()
        .or(state.path.clone())
        .ok_or_else(|| anyhow::anyhow!("{}: say where the app is with --path DIR", a.app))?;
    let path = std::path::absolute(&path)?;
    let image = format!("{}:v{}", a.app, state.next_version());
    let kind = deploy::kind_of(
        path.join("Dockerfile").is_file(),
        path.join(".buildpacks").is_file(),
        !a.flags.buildpacks.is_empty(),
    );
    let (types, commands) = match kind {
        deploy::AppKind::Buildpacks => {
            let built = build_app(&request(path.clone(), image.clone(), &a.flags)?, ctx)?;
            let types: Vec<String> = built.release.processes.keys().cloned().collect();
            (types, Default::default())
        }
        deploy::AppKind::Dockerfile => {
            let commands = build_dockerfile_app(&path, &image, ctx)?;
            (commands.keys().cloned().collect(), commands)
        }
    };
    let asked = match &a.scale {
        Some(s) => deploy::parse_scale(s)?,
        None => Default::default(),
    };
    let scale = deploy::formation(&types, &state.scale, &asked)?;
    // A path given once is where later deploys build from (a git hook's checkout is not).
    if a.path.is_some() && a.description.is_none() {
        state.path = Some(path.clone());
    }
    let swap_req = Swap {
        image,
        description: a
            .description
            .unwrap_or_else(|| format!("deploy {}", path.display())),
        scale,
        commands,
        timeout: a.timeout,
        check: a.check,
    };
    let version = swap(&mut state, swap_req, ctx)?;
    print_up(&state, version)?;
    Ok(0)
}

/// A Dockerfile app: `keel build -t IMAGE DIR` through the same code as the command
/// (the Dockerfile front end, the build cache); returns each process type's command
/// (`web`: the image's CMD, unless the app's Procfile says otherwise).
fn build_dockerfile_app(
    dir: &std::path::Path,
    image: &str,
    ctx: &Ctx,
) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
    use clap::Parser;
    #[derive(Parser)]
    struct One {
        #[command(flatten)]
        args: super::build::BuildArgs,
    }
    errln!("== building {} (Dockerfile, {})", image, dir.display());
    let dir_arg = dir.display().to_string();
    let one = One::try_parse_from(["keel", "-t", image, dir_arg.as_str()])?;
    let code = super::build::build(one.args, ctx)?;
    if code != 0 {
        anyhow::bail!("building {image} from {}/Dockerfile failed", dir.display());
    }
    let procfile = match std::fs::read_to_string(dir.join("Procfile")) {
        Ok(text) => Some(buildpack::release::parse_procfile(&text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| format!("reading {}/Procfile", dir.display()));
        }
    };
    Ok(deploy::dockerfile_commands(procfile.as_ref()))
}

/// `keel rollback APP`: start an earlier release's image again as a new release.
pub fn rollback(a: RollbackArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let mut state = deploy::load(store.root(), &a.app)?
        .ok_or_else(|| deploy::DeployError::NoApp(a.app.clone()))?;
    let target = state.rollback_target(a.to)?.clone();
    let types = if target.commands.is_empty() {
        image_types(&target.image, ctx)?
    } else {
        target.commands.keys().cloned().collect()
    };
    let scale = deploy::formation(&types, &state.scale, &Default::default())?;
    let swap_req = Swap {
        image: target.image.clone(),
        description: format!("rollback to v{}", target.version),
        scale,
        commands: target.commands.clone(),
        timeout: a.timeout,
        check: a.check,
    };
    let version = swap(&mut state, swap_req, ctx)?;
    print_up(&state, version)?;
    Ok(0)
}

/// `keel apps rm APP`: its containers and router stopped, its state removed.
fn apps_rm(app: &str, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let state =
        deploy::load(store.root(), app)?.ok_or_else(|| deploy::DeployError::NoApp(app.into()))?;
    let mut names: Vec<String> = state
        .releases
        .iter()
        .flat_map(|r| r.processes.iter().map(|p| p.name.clone()))
        .collect();
    // Containers already gone (removed by hand, lost in a reboot) are not an error.
    let containers = crate::container::Containers::new(store.root());
    names.retain(|n| containers.find(n).is_ok());
    super::run::stop_and_remove(&names, 10, ctx)?;
    if let Some(pid) = state.router_pid.filter(|p| crate::sys::session::alive(*p)) {
        crate::sys::proc::kill(pid, libc::SIGTERM)?;
    }
    crate::sys::hostfs::remove_dir_all(deploy::app_dir(store.root(), app))?;
    Ok(0)
}

/// `keel apps`: every app, its current release and address; `keel apps rm APP`.
pub fn apps(a: AppsArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    if let Some(AppsCommand::Up { app }) = &a.command {
        return apps_up(app, ctx);
    }
    if let Some(AppsCommand::Rm { app }) = a.command {
        return apps_rm(&app, ctx);
    }
    outln!(
        "{:<20} {:<8} {:<28} {:<24} DESCRIPTION",
        "APP",
        "RELEASE",
        "URL",
        "PROCESSES"
    )?;
    for s in deploy::list(store.root())? {
        let (version, procs, desc) = match s.current_release() {
            Some(r) => {
                let mut counts = std::collections::BTreeMap::<&str, usize>::new();
                for p in &r.processes {
                    *counts.entry(p.kind.as_str()).or_default() += 1;
                }
                let procs: Vec<String> = counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
                (
                    format!("v{}", r.version),
                    procs.join(","),
                    r.description.clone(),
                )
            }
            None => ("-".into(), String::new(), String::new()),
        };
        let up = s.router_pid.is_some_and(crate::sys::session::alive);
        let url = if up {
            format!("http://127.0.0.1:{}/", s.router_port)
        } else {
            "(router down)".into()
        };
        outln!(
            "{:<20} {:<8} {:<28} {:<24} {desc}",
            s.name,
            version,
            url,
            procs
        )?;
    }
    Ok(0)
}

/// Takes the app's router over: an earlier router (a deploy's `keel __router`, or a
/// previous `keel apps up`) is stopped, its port bound here and this process recorded.
fn take_router(app: &str, ctx: &Ctx) -> Result<std::net::TcpListener> {
    let store = ctx.store()?;
    let state =
        deploy::load(store.root(), app)?.ok_or_else(|| deploy::DeployError::NoApp(app.into()))?;
    let me = std::process::id() as i32;
    if let Some(pid) = state.router_pid.filter(|p| *p != me) {
        if crate::sys::session::alive(pid) {
            let _ = crate::sys::proc::kill(pid, libc::SIGTERM);
            let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while crate::sys::session::alive(pid) && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
    let (listener, port) = deploy::router::bind(state.router_port)
        .with_context(|| format!("binding the router port {} of {app}", state.router_port))?;
    let _lock = deploy::lock(store.root(), app)?;
    let mut state =
        deploy::load(store.root(), app)?.ok_or_else(|| deploy::DeployError::NoApp(app.into()))?;
    state.router_port = port;
    state.router_pid = Some(me);
    deploy::save(store.root(), &state)?;
    Ok(listener)
}

/// Starts every container of the app's current release that is not running (a stale
/// one is removed first) under its own name; returns the names started.
fn heal(app: &str, ctx: &Ctx) -> Result<Vec<String>> {
    let store = ctx.store()?;
    let _lock = deploy::lock(store.root(), app)?;
    let mut state =
        deploy::load(store.root(), app)?.ok_or_else(|| deploy::DeployError::NoApp(app.into()))?;
    let Some(release) = state.current_release().cloned() else {
        return Ok(Vec::new());
    };
    let containers = crate::container::Containers::new(store.root());
    let mut started = Vec::new();
    for p in &release.processes {
        let found = containers.find(&p.name).ok();
        let running = found.as_ref().is_some_and(|c| {
            containers
                .refresh(c)
                .is_ok_and(|st| st.status == crate::container::Status::Running)
        });
        if running {
            continue;
        }
        if found.is_some() {
            super::run::stop_and_remove(std::slice::from_ref(&p.name), 1, ctx)?;
        }
        let command = deploy::command_for(&release.commands, &p.kind);
        let fresh = start_process(&store, &release.image, &p.kind, &p.name, command)?;
        if let Some(r) = state
            .releases
            .iter_mut()
            .find(|r| r.version == release.version)
        {
            for q in r.processes.iter_mut().filter(|q| q.name == p.name) {
                q.port = fresh.port;
            }
        }
        started.push(p.name.clone());
    }
    if !started.is_empty() {
        deploy::save(store.root(), &state)?;
    }
    Ok(started)
}

/// `keel apps up APP`: the router in a thread, and every half second the current
/// release's containers checked and started again; on SIGTERM/SIGINT they are stopped.
fn apps_up(app: &str, ctx: &Ctx) -> Result<i32> {
    deploy::check_name(app)?;
    crate::sys::proc::catch_termination()?;
    let store = ctx.store()?;
    let listener = take_router(app, ctx)?;
    let port = listener.local_addr()?.port();
    let (root, name) = (store.root().to_path_buf(), app.to_string());
    std::thread::spawn(move || deploy::router::serve(listener, root, name));
    let mut first = true;
    loop {
        if let Some(sig) = crate::sys::proc::termination_requested() {
            let containers = crate::container::Containers::new(store.root());
            let mut names = deploy::current_containers(store.root(), app)?;
            names.retain(|n| containers.find(n).is_ok());
            errln!("{app}: signal {sig}: stopping {}", names.join(", "));
            super::run::stop_and_remove(&names, 10, ctx)?;
            return Ok(0);
        }
        let started = heal(app, ctx)?;
        if !started.is_empty() {
            errln!("{app}: started {}", started.join(", "));
        }
        if std::mem::take(&mut first) {
            outln!("{app} is up at http://127.0.0.1:{port}/")?;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// `keel logs --app APP [-f]`: each current container's selected output, every line
/// prefixed with its process (`web.1| `), one container after the other; with `follow`,
/// then every new line of the current release's containers (a deploy's new ones too)
/// until the process is interrupted.
pub fn app_logs(
    containers: &crate::container::Containers,
    app: &str,
    sel: &crate::container::logs::Selection,
    root: &std::path::Path,
    follow: bool,
) -> Result<i32> {
    use crate::container::logs::{select, times_path};
    // How far each container's log has been shown, by container id (`keel apps up`
    // starts a container again under its name, with a new id and log).
    let mut shown_to = std::collections::BTreeMap::<String, u64>::new();
    for name in deploy::current_containers(root, app)? {
        let Ok(c) = containers.find(&name) else {
            continue;
        };
        let path = containers.log_path(&c.id);
        let log = std::fs::read(&path).unwrap_or_default();
        let times = std::fs::read_to_string(times_path(&path)).unwrap_or_default();
        print_prefixed(&name, &select(&log, &times, sel))?;
        shown_to.insert(c.id.clone(), log.len() as u64);
    }
    if !follow {
        return Ok(0);
    }
    crate::sys::proc::catch_termination()?;
    while crate::sys::proc::termination_requested().is_none() {
        for name in deploy::current_containers(root, app)? {
            let Ok(c) = containers.find(&name) else {
                continue;
            };
            let from = shown_to.entry(c.id.clone()).or_insert(0);
            let new = read_from(&containers.log_path(&c.id), *from);
            // Whole lines only: a partial last line waits for its newline.
            let end = new.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            print_prefixed(&name, &new[..end])?;
            *from += end as u64;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(0)
}

/// The bytes of file `path` from `offset` on (none when it cannot be read).
fn read_from(path: &std::path::Path, offset: u64) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut out = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(std::io::SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut out);
        }
    }
    out
}

/// Prints `bytes`' lines as `TYPE.I| line` for container `APP.vN.TYPE.I`.
fn print_prefixed(name: &str, bytes: &[u8]) -> Result<()> {
    let process = name.splitn(3, '.').nth(2).unwrap_or(name);
    for line in String::from_utf8_lossy(bytes).lines() {
        outln!("{process}| {line}")?;
    }
    Ok(())
}

/// `keel build` in a project: its `[[app]]` entries, each a buildpack build tagged with
/// the app's name.
pub fn build_project_apps(
    project: &crate::project::Project,
    apps: &[crate::project::AppSpec],
    ctx: &Ctx,
) -> Result<Option<i32>> {
    for app in apps {
        errln!("== building {} (buildpacks, {})", app.name, app.path);
        let flags = AppFlags {
            buildpacks: app.buildpacks.clone(),
            stack: app
                .stack
                .clone()
                .unwrap_or_else(|| buildpack::DEFAULT_STACK.into()),
            ..Default::default()
        };
        let mut req = request(project.dir.join(&app.path), app.name.clone(), &flags)?;
        req.env = app.env.clone();
        let built = build_app(&req, ctx)?;
        outln!("{}", built.record.id())?;
    }
    Ok(Some(0))
}
