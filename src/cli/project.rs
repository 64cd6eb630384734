//! Project commands (keel.toml): `context-files`, `exec-in` and `integrate`.
//!
//! The lead registers them in `cli/mod.rs`:
//! ```text
//! mod project;
//! /// Print the files an image's build context uses (after .dockerignore).
//! ContextFiles(project::ContextFilesArgs),      => project::context_files(a, ctx)
//! /// Run a command inside an [env] of keel.toml, as the owner of the project tree.
//! ExecIn(project::ExecInArgs),                  => project::exec_in(a, ctx)
//! /// Generate glue for make, scons, maven, jenkins, buildbot, systemd, supervisord, runit.
//! Integrate(project::IntegrateArgs),            => project::integrate(a, ctx)
//! ```
//! All the logic lives in `crate::project` and `crate::integrate`; this file finds the
//! project file, calls them and prints.
use crate::errln;
use crate::outln;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::Ctx;
use crate::integrate::{self, plugin, AdapterOptions, ResolvedProject};
use crate::project::{self, Owner, Project};

/// Finds and loads keel.toml: `-f FILE`, else the current directory or its nearest parent.
fn load_project(file: Option<&Path>) -> Result<Project> {
    let path = match file {
        Some(f) => f.to_path_buf(),
        None => {
            let cwd = std::env::current_dir().context("reading the current directory")?;
            Project::find(&cwd).with_context(|| {
                format!(
                    "no {} in {} or its parents; create one (see docs/keel-toml.md) or pass -f FILE",
                    project::PROJECT_FILE,
                    cwd.display()
                )
            })?
        }
    };
    let mut p = Project::load(&path)?;
    p.dir = p
        .dir
        .canonicalize()
        .with_context(|| format!("resolving the project directory {}", p.dir.display()))?;
    Ok(p)
}

/// Is this context-relative path excluded by .dockerignore?
type IgnoreFn = Box<dyn Fn(&str) -> bool>;

/// The context's .dockerignore as a predicate: the same matcher `keel build` uses, so
/// build tools track exactly the files a build reads.
fn ignore_predicate(context_dir: &Path) -> Result<IgnoreFn> {
    let ign = crate::build::front::dockerignore(context_dir)?;
    Ok(ign)
}

#[derive(Debug, Args)]
pub struct ContextFilesArgs {
    /// Image of keel.toml (default: every image).
    name: Option<String>,
    /// Print a make rule making TARGET depend on the files (what keel.mk uses).
    #[arg(long, value_name = "TARGET")]
    make_deps: Option<String>,
    /// Write the output to FILE instead, and only when it changed (keeps its mtime).
    #[arg(long, value_name = "FILE")]
    update: Option<PathBuf>,
    /// Project file (default: keel.toml here or in the nearest parent directory).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
}

pub fn context_files(a: ContextFilesArgs, _ctx: &Ctx) -> Result<i32> {
    let p = load_project(a.file.as_deref())?;
    let images = match &a.name {
        Some(n) => vec![p.image(n)?],
        None => p.images.iter().collect(),
    };
    let mut files = std::collections::BTreeSet::new();
    for img in images {
        let ign = ignore_predicate(&p.dir.join(&img.context))?;
        files.extend(project::context_files(&p, img, &*ign)?);
    }
    let files: Vec<String> = files.into_iter().collect();
    tracing::debug!(files = files.len(), "context files listed");
    let out = match &a.make_deps {
        Some(target) => project::render_make_deps(target, &files),
        None => files.iter().map(|f| format!("{f}\n")).collect(),
    };
    match &a.update {
        Some(path) => {
            project::write_if_changed(path, &out)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            use std::io::Write;
            crate::report::stdout().write_all(out.as_bytes())?;
        }
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct ExecInArgs {
    /// Environment: an [env.NAME] table of keel.toml.
    env: String,
    /// Command and arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<String>,
    /// Project file (default: keel.toml here or in the nearest parent directory).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
}

/// The owner of `dir` and names for it from the host's passwd/group (else "keel").
fn owner_of(dir: &Path) -> Result<Owner> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
    let name = |db: &str, id: u32| {
        std::fs::read_to_string(db)
            .ok()
            .and_then(|t| project::name_for_id(&t, id))
            .unwrap_or_else(|| "keel".into())
    };
    Ok(Owner {
        uid: md.uid(),
        gid: md.gid(),
        user: name("/etc/passwd", md.uid()),
        group: name("/etc/group", md.gid()),
    })
}

/// `keel exec-in ENV -- CMD…`: plans the equivalent `keel run` and execs it, so the
/// command's exit status is keel's.
pub fn exec_in(a: ExecInArgs, ctx: &Ctx) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let p = load_project(a.file.as_deref())?;
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let cwd = cwd.canonicalize().unwrap_or(cwd);
    let plan = project::plan_exec(&p, &a.env, &p.dir, &cwd, &owner_of(&p.dir)?, &a.command)?;
    tracing::debug!(env = ?a.env, build_first = ?plan.build_first, command = ?a.command, "exec-in plan");
    let keel = std::env::current_exe().context("finding the keel binary")?;
    if let Some(image) = &plan.build_first {
        let status = std::process::Command::new(&keel)
            .arg("--root")
            .arg(&ctx.root)
            .args(["build", image])
            .current_dir(&p.dir)
            .status()
            .with_context(|| format!("running {} build {image}", keel.display()))?;
        if !status.success() {
            bail!(
                "building image `{image}` for env `{}` failed ({status})",
                a.env
            );
        }
    }
    let err = std::process::Command::new(&keel)
        .arg("--root")
        .arg(&ctx.root)
        .args(&plan.run_args)
        .envs(plan.run_env.iter().map(|(k, v)| (k, v)))
        .exec();
    Err(err).with_context(|| format!("executing {} run", keel.display()))
}

#[derive(Debug, Args)]
pub struct IntegrateArgs {
    /// Adapter: make, scons, maven, jenkins, buildbot, systemd, supervisord, runit, or
    /// NAME for a `keel-integrate-NAME` plugin on PATH.
    #[arg(required_unless_present = "list")]
    tool: Option<String>,
    /// Image to run (systemd, supervisord, runit) or the main image (maven).
    image: Option<String>,
    /// Command for the container (process managers), after `--`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
    /// List built-in adapters and plugins found on PATH.
    #[arg(long)]
    list: bool,
    /// Write the files under DIR (atomically) instead of printing them.
    #[arg(short = 'w', long, value_name = "DIR")]
    write: Option<PathBuf>,
    /// Service name (process managers).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Process managers: keep this deployed app up (`keel apps up APP`: its router and
    /// the current release's containers) instead of running IMAGE.
    #[arg(long, value_name = "APP", conflicts_with_all = ["image", "publish", "command"])]
    app: Option<String>,
    /// The [env] test steps run in (default: dev, else the first).
    #[arg(long, value_name = "ENV")]
    env: Option<String>,
    /// Test command CI steps run inside the env (default: make test).
    #[arg(long, value_name = "CMD")]
    test: Option<String>,
    /// Publish a port (process managers; passed to `keel run -p`).
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
    /// CI glue: the registry pushes go to (HOST[:PORT]) unless the agent sets
    /// KEEL_REGISTRY (default: the registry the project's tags name, else localhost:5000).
    #[arg(long, value_name = "HOST[:PORT]")]
    registry: Option<String>,
    /// CI glue: the repository a job checks out (default: the project's git remote origin).
    #[arg(long, value_name = "URL")]
    scm: Option<String>,
    /// How the generated files call keel (default: `keel`; the absolute path of this
    /// binary for process managers).
    #[arg(long, value_name = "PATH")]
    keel: Option<String>,
    /// Project file (default: keel.toml here or in the nearest parent directory).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
}

/// `p` made absolute against the current directory (glue runs from elsewhere).
fn absolute(p: &Path) -> Result<std::path::PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("reading the current directory")?
        .join(p))
}

/// A service for an image the root does not hold would fail at every start: say so now
/// (not an error: the image may be built or loaded before the service starts).
fn warn_missing_image(opts: &AdapterOptions, ctx: &Ctx) {
    let Some(image) = &opts.image else { return };
    let found = ctx.root.is_dir()
        && crate::store::Store::open(&ctx.root).is_ok_and(|s| s.resolve(image).is_ok());
    if !found {
        errln!(
            "keel: warning: no image {image} in {}; build or load it there before the service starts (or pass --root)",
            ctx.root.display()
        );
    }
}

/// Glue for an app the root has never deployed would fail at every start: say so now
/// (not an error: the app may be deployed before the service starts).
fn warn_missing_app(opts: &AdapterOptions, ctx: &Ctx) {
    let Some(app) = &opts.app else { return };
    if !matches!(crate::deploy::load(&ctx.root, app), Ok(Some(_))) {
        errln!(
            "keel: warning: no app {app} deployed in {}; `keel deploy {app} --path DIR` there before the service starts (or pass --root)",
            ctx.root.display()
        );
    }
}

pub fn integrate(a: IntegrateArgs, ctx: &Ctx) -> Result<i32> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    if a.list {
        list_adapters(&path_var)?;
        return Ok(0);
    }
    let tool = a.tool.clone().expect("clap requires TOOL without --list");
    let builtin = integrate::adapter(&tool);
    let service = !integrate::needs_project(&tool);
    let write = a.write.clone();
    let file = a.file.clone();
    let mut opts = adapter_options(a, service, ctx)?;
    // git-deploy's positional is an app, which is deployed later, not an image.
    if service && tool != "git-deploy" {
        warn_missing_image(&opts, ctx);
        warn_missing_app(&opts, ctx);
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let project = if service {
        ResolvedProject::empty(&cwd)
    } else if builtin.is_some() || file.is_some() || Project::find(&cwd).is_some() {
        ResolvedProject::resolve(&load_project(file.as_deref())?)?
    } else {
        ResolvedProject::empty(&cwd)
    };
    if opts.scm.is_none() && !service {
        opts.scm = origin_url(Path::new(&project.dir));
    }
    let files = match builtin {
        Some(ad) => ad.render(&project, &opts)?,
        None => {
            let pl = plugin::find_plugin(&path_var, &tool).ok_or_else(|| {
                integrate::IntegrateError::NoAdapter {
                    name: tool.clone(),
                    builtin: integrate::builtin()
                        .iter()
                        .map(|a| a.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
            plugin::run_plugin(&pl, Path::new(&project.dir), &project, &opts)?
        }
    };
    match &write {
        Some(dir) => {
            for p in integrate::write_files(dir, &files)? {
                outln!("{}", p.display())?;
            }
        }
        None => {
            use std::io::Write;
            crate::report::stdout().write_all(integrate::to_stdout(&files).as_bytes())?;
        }
    }
    Ok(0)
}

/// `keel integrate --list`: the built-in adapters, then the plugins on PATH that do not
/// shadow one.
fn list_adapters(path_var: &std::ffi::OsStr) -> Result<()> {
    for ad in integrate::builtin() {
        outln!("{:<12} {}", ad.name(), ad.describe())?;
    }
    for pl in plugin::find_plugins(path_var) {
        if integrate::adapter(&pl.name).is_none() {
            outln!("{:<12} plugin {}", pl.name, pl.path.display())?;
        }
    }
    Ok(())
}

/// The adapter's inputs from the command line. A service's glue runs keel outside any
/// shell profile, so it names this binary by its absolute path; a project's glue runs
/// `keel` from the PATH of whoever builds it.
fn adapter_options(a: IntegrateArgs, service: bool, ctx: &Ctx) -> Result<AdapterOptions> {
    let keel = match a.keel {
        Some(k) => k,
        None if service => std::env::current_exe()
            .context("finding the keel binary")?
            .display()
            .to_string(),
        None => "keel".into(),
    };
    Ok(AdapterOptions {
        keel,
        name: a.name,
        image: a.image,
        command: a.command,
        env: a.env,
        test: a.test,
        publish: a.publish,
        write: a.write.as_ref().map(|w| w.display().to_string()),
        registry: a.registry,
        root: Some(absolute(&ctx.root)?.display().to_string()),
        scm: a.scm,
        user_service: crate::sys::userns::rootless(),
        app: a.app,
    })
}

/// The repository the project lives in (its `origin`), for CI jobs that check it out.
fn origin_url(dir: &Path) -> Option<String> {
    crate::context::git::command(dir)
        .args(["remote", "get-url", "origin"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|u| !u.is_empty())
}
