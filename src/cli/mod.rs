//! The command line: clap definitions and dispatch. The only module that talks to the
//! user (through `Reporter` and stdout for results) and the only one that uses `anyhow`.
mod build;
mod buildpack;
mod image;
mod project;
mod registry;
mod rootless;
mod run;
mod system;

use crate::{errln, outln};
use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::report::{Progress, Reporter};
use crate::store::Store;

/// keel builds container images and runs containers, with no daemon.
#[derive(Debug, Parser)]
#[command(name = "keel", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Directory holding images, layers, containers and caches.
    /// Default: /var/lib/keel as root, $XDG_DATA_HOME/keel otherwise.
    #[arg(long, global = true, env = "KEEL_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,
    /// More diagnostics on stderr (-v debug, -vv trace); KEEL_LOG=filter for fine control.
    /// Give it before the command (`keel -v run …`): after it, `-v` is `run`'s volume flag.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// How to show progress: auto (spinners on a terminal), plain (one line per event), quiet.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "MODE"
    )]
    progress: Progress,
    /// Do not fsync store writes. They stay atomic (a killed keel leaves a consistent
    /// store), but a power loss may truncate recent blobs: for throwaway roots such as a
    /// CI job's, where waiting for the disk buys nothing.
    #[arg(long, global = true, env = "KEEL_NO_FSYNC")]
    no_fsync: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an image from a rootfs tarball (plain or gzip; `-` reads stdin).
    Import(image::ImportArgs),
    /// Create a base image from the host's busybox or with debootstrap.
    #[command(subcommand)]
    Bootstrap(image::BootstrapCommand),
    /// List images.
    #[command(alias = "image-ls")]
    Images(image::ImagesArgs),
    /// Show a container's (docker-like) or an image's details as JSON.
    Inspect(run::InspectArgs),
    /// Give an image another name.
    Tag(image::TagArgs),
    /// Remove image names (their blobs go at the next `keel gc`).
    Rmi(image::RmiArgs),
    /// Write images to a tar archive (OCI layout and docker-archive at once).
    Save(image::SaveArgs),
    /// Load images from an OCI or docker archive.
    Load(image::LoadArgs),
    /// Push an image to a registry.
    Push(registry::PushArgs),
    /// Pull an image from a registry.
    Pull(registry::PullArgs),
    /// Store credentials for a registry (where docker and podman read them).
    Login(registry::LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(registry::LogoutArgs),
    /// Remove unreferenced blobs and stray temporary files.
    Gc(system::GcArgs),
    /// Verify every blob and reference in the store.
    Fsck(system::FsckArgs),
    /// Show keel's version, root and what this host supports.
    Info(system::InfoArgs),
    /// Run a command in a new container.
    Run(Box<run::RunArgs>),
    /// List containers.
    Ps(run::PsArgs),
    /// Print a container's output.
    Logs(run::LogsArgs),
    /// Start stopped containers again, as they were made.
    Start(run::StartArgs),
    /// Stop containers and start them again.
    Restart(run::RestartArgs),
    /// Copy files between a container and the host (CONTAINER:PATH on one side).
    Cp(run::CpArgs),
    /// Give a container another name.
    Rename(run::RenameArgs),
    /// List a running container's processes.
    Top(run::TopArgs),
    /// Show containers' CPU, memory and process counts (from their cgroups).
    Stats(run::StatsArgs),
    /// Disk usage (df) and cleanup (prune) of the whole root.
    #[command(subcommand)]
    System(run::SystemCommand),
    /// Stop containers (their StopSignal, then SIGKILL).
    Stop(run::StopArgs),
    /// Send a signal to containers.
    Kill(run::KillArgs),
    /// Remove containers.
    Rm(run::RmArgs),
    /// Wait for containers to stop and print their exit codes.
    Wait(run::WaitArgs),
    /// Print a container's published ports.
    Port(run::PortArgs),
    /// Run a command in a running container.
    Exec(run::ExecArgs),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(run::VolumeCommand),
    /// Build an image from a Dockerfile (or the images of keel.toml).
    Build(Box<build::BuildArgs>),
    /// Print the files an image's build context uses (after .dockerignore).
    ContextFiles(project::ContextFilesArgs),
    /// Run a command inside a keel.toml build environment.
    ExecIn(project::ExecInArgs),
    /// Emit glue for a build tool or process manager (make, maven, scons, jenkins, …).
    Integrate(project::IntegrateArgs),
    /// Build apps with Heroku classic buildpacks (no Dockerfile).
    #[command(subcommand)]
    Buildpack(buildpack::BuildpackCommand),
    /// Build an app with its buildpacks and swap it in with no downtime (git-push style).
    Deploy(Box<buildpack::DeployArgs>),
    /// Bring an app's earlier release back.
    Rollback(buildpack::RollbackArgs),
    /// List deployed apps (`keel apps rm APP` forgets one).
    Apps(buildpack::AppsArgs),
    #[command(name = "__router", hide = true)]
    Router(buildpack::RouterArgs),
    /// Runs `keel-NAME` from PATH (git/cargo-style external subcommands).
    #[command(external_subcommand)]
    External(Vec<OsString>),
    /// Developer tools.
    #[command(subcommand)]
    Debug(DebugCommand),
    #[command(name = "__supervise", hide = true)]
    Supervise(run::SuperviseArgs),
}

#[derive(Debug, Subcommand)]
enum DebugCommand {
    /// Print a Dockerfile's syntax tree as BuildKit's parser dumps it.
    DumpAst {
        /// The Dockerfile.
        file: PathBuf,
    },
}

/// Shared state for a command: the root (opened on demand) and the reporter.
pub struct Ctx {
    root: PathBuf,
    durable: bool,
    pub reporter: Reporter,
}

impl Ctx {
    pub fn store(&self) -> anyhow::Result<Store> {
        use anyhow::Context;
        let store = Store::open(&self.root)
            .with_context(|| format!("opening the keel store at {}", self.root.display()))?;
        // Cheap unless a keel was killed: then what it left is reclaimed first.
        crate::reclaim::at_startup(&store);
        Ok(if self.durable {
            store
        } else {
            store.without_fsync()
        })
    }
}

fn default_root() -> PathBuf {
    rootless::default_root()
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("KEEL_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::new(f),
        _ => EnvFilter::new(match verbose {
            0 => "warn",
            1 => "keel=debug",
            _ => "keel=trace",
        }),
    };
    // A span's close event carries its time (time.busy): per build step, per container
    // start, per glue command, so a slow step shows in a CI log.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::report::stderr)
        .with_target(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        // Colour codes only on a terminal: a CI log must stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&crate::report::stderr()))
        .try_init();
}

/// Runs keel; returns the process exit code (0 ok, 1 failure, 2 usage error).
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    // Before anything else runs: entering a user namespace needs a single thread.
    // `keel cp` enters (or joins a running container's) later, once it knows which.
    let needs_userns = !matches!(
        cli.command,
        Command::Exec(_)
            | Command::Cp(_)
            | Command::Top(_)
            | Command::Stats(_)
            | Command::External(_)
            | Command::Debug(_)
            | Command::Login(_)
            | Command::Logout(_)
    );
    if let Err(e) = rootless::enter_if_needed(needs_userns) {
        errln!("keel: error: {}", error_text(&e));
        return 1;
    }
    init_logging(cli.verbose);
    // A typo in the layer format would otherwise quietly give trees deep in a build.
    if let Err(why) = crate::storage::overlay::LayerFormat::from_env() {
        errln!("keel: error: {why}");
        return 2;
    }
    let ctx = Ctx {
        root: cli.root.clone().unwrap_or_else(default_root),
        durable: !cli.no_fsync,
        reporter: Reporter::new(cli.progress),
    };
    if let Err(e) = rootless::make_private_root(&ctx.root) {
        errln!("keel: error: {}", error_text(&e));
        return 1;
    }
    match dispatch(cli.command, &ctx) {
        Ok(code) => code,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return 0;
            }
            errln!("keel: error: {}", error_text(&e));
            1
        }
    }
}

/// `keel NAME ARGS…` for an unknown NAME runs `keel-NAME ARGS…` from PATH, with the
/// root in KEEL_ROOT, and passes its exit status through.
fn external(args: Vec<std::ffi::OsString>, ctx: &Ctx) -> anyhow::Result<i32> {
    let name = args[0].to_string_lossy().into_owned();
    let exe = format!("keel-{name}");
    let status = match std::process::Command::new(&exe)
        .args(&args[1..])
        .env("KEEL_ROOT", &ctx.root)
        .status()
    {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("unknown command {name:?}: it is not a keel command and no {exe} is on PATH; see `keel --help`")
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("running {exe}"))),
    };
    Ok(status.code().unwrap_or(1))
}

/// The error and its causes on one line, each cause once (many library errors already
/// quote their source in their own message).
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !msg.contains(&s) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&s);
        }
    }
    msg
}

fn dispatch(cmd: Command, ctx: &Ctx) -> anyhow::Result<i32> {
    match cmd {
        Command::Import(a) => image::import(a, ctx),
        Command::Bootstrap(c) => image::bootstrap(c, ctx),
        Command::Images(a) => image::images(a, ctx),
        Command::Inspect(a) => run::inspect(a, ctx),
        Command::Tag(a) => image::tag(a, ctx),
        Command::Rmi(a) => image::rmi(a, ctx),
        Command::Save(a) => image::save(a, ctx),
        Command::Load(a) => image::load(a, ctx),
        Command::Push(a) => registry::push(a, ctx),
        Command::Pull(a) => registry::pull(a, ctx),
        Command::Login(a) => registry::login(a, ctx),
        Command::Logout(a) => registry::logout(a, ctx),
        Command::Gc(a) => system::gc(a, ctx),
        Command::Fsck(a) => system::fsck(a, ctx),
        Command::Info(a) => system::info(a, ctx),
        Command::Run(a) => run::run(*a, ctx),
        Command::Ps(a) => run::ps(a, ctx),
        Command::Logs(a) => run::logs(a, ctx),
        Command::Start(a) => run::start(a, ctx),
        Command::Restart(a) => run::restart(a, ctx),
        Command::Cp(a) => run::cp(a, ctx),
        Command::Rename(a) => run::rename(a, ctx),
        Command::Top(a) => run::top(a, ctx),
        Command::Stats(a) => run::stats(a, ctx),
        Command::System(c) => run::system(c, ctx),
        Command::Stop(a) => run::stop(a, ctx),
        Command::Kill(a) => run::kill(a, ctx),
        Command::Rm(a) => run::rm(a, ctx),
        Command::Wait(a) => run::wait(a, ctx),
        Command::Port(a) => run::port(a, ctx),
        Command::Exec(a) => run::exec(a, ctx),
        Command::Volume(c) => run::volume(c, ctx),
        Command::Supervise(a) => run::supervise(a, ctx),
        Command::Build(a) => build::build(*a, ctx),
        Command::ContextFiles(a) => project::context_files(a, ctx),
        Command::ExecIn(a) => project::exec_in(a, ctx),
        Command::Integrate(a) => project::integrate(a, ctx),
        Command::Buildpack(c) => buildpack::buildpack(c, ctx),
        Command::Deploy(a) => buildpack::deploy_app(*a, ctx),
        Command::Rollback(a) => buildpack::rollback(a, ctx),
        Command::Apps(a) => buildpack::apps(a, ctx),
        Command::Router(a) => buildpack::router(a, ctx),
        Command::External(args) => external(args, ctx),
        Command::Debug(DebugCommand::DumpAst { file }) => {
            use anyhow::Context;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let ast = crate::dockerfile::parse(&file.display().to_string(), &bytes)?;
            outln!("{}", ast.dump())?;
            Ok(0)
        }
    }
}
