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
