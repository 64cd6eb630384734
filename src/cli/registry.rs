//! Registry commands: pull, push, login, logout; and the `--pull` policy that `run` and
//! `build` apply to their image. Progress: one bar per layer on a terminal, plain lines
//! otherwise.
use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::Ctx;
use crate::reference::ImageRef;
use crate::registry::auth::{self, Credentials};
use crate::registry::pull::Platform;
use crate::registry::{PullEvent, PullOptions, PullPolicy, RegistriesConfig};
use crate::store::{Store, StoreError};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image to pull (`alpine`, `alpine:3.20`, `host:port/team/app:tag`, `name@sha256:…`).
    image: String,
    /// Platform to pick from a multi-platform image (default: the host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<Platform>,
    /// From a multi-platform image, store every platform's image too (reachable by
    /// digest; the name goes to the host's or --platform's).
    #[arg(long)]
    all_platforms: bool,
    /// Print only the image id.
    #[arg(short, long)]
    quiet: bool,
    /// Check TLS certificates (`false` also allows plain HTTP).
    #[arg(long = "tls-verify", default_value_t = true, action = clap::ArgAction::Set)]
    tls_verify: bool,
    /// Layers downloaded at once.
    #[arg(long, default_value_t = 3, value_name = "N")]
    jobs: usize,
}

/// The pull options for a root: its `registries.toml`, TLS choice, platform.
pub fn pull_options(
    store: &Store,
    tls_verify: bool,
    platform: Option<Platform>,
) -> Result<PullOptions> {
    Ok(PullOptions {
        platform: platform.unwrap_or_else(Platform::host),
        all_platforms: false,
        jobs: 3,
        skip_tls_verify: !tls_verify,
        registries: RegistriesConfig::load(store.root())?,
    })
}

/// Draws pull progress: indicatif bars on a terminal, a line per layer otherwise.
pub struct PullProgress {
    multi: Option<indicatif::MultiProgress>,
    bars: Mutex<HashMap<String, indicatif::ProgressBar>>,
    quiet: bool,
}

impl PullProgress {
    pub fn new(ctx: &Ctx, quiet: bool) -> PullProgress {
        let quiet = quiet || ctx.reporter.is_quiet();
        PullProgress {
            multi: (ctx.reporter.is_fancy() && !quiet).then(indicatif::MultiProgress::new),
            bars: Mutex::new(HashMap::new()),
            quiet,
        }
    }

    pub fn event(&self, e: PullEvent) {
        if self.quiet {
            return;
        }
        let short = |d: &crate::digest::Digest| d.digest()[..12].to_string();
        match (&self.multi, e) {
            (_, PullEvent::Resolved { remote, manifest }) => {
                crate::report::err_line(format!("pulling {remote} (manifest {manifest})"))
            }
            (Some(m), PullEvent::LayerStart { digest, size }) => {
                let bar = m.add(indicatif::ProgressBar::new(size));
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("valid template"),
                );
                bar.set_prefix(short(&digest));
                self.bars
                    .lock()
                    .expect("bars")
                    .insert(digest.to_string(), bar);
            }
            (Some(_), PullEvent::LayerBytes { digest, bytes }) => {
                if let Some(b) = self.bars.lock().expect("bars").get(&digest.to_string()) {
                    b.inc(bytes);
                }
            }
            (Some(_), PullEvent::LayerDone { digest, .. }) => {
                if let Some(b) = self.bars.lock().expect("bars").remove(&digest.to_string()) {
                    b.finish();
                }
            }
            (None, PullEvent::LayerStart { digest, size }) => crate::report::err_line(format!(
                "layer {}: downloading {size} bytes",
                short(&digest)
            )),
            (
                None,
                PullEvent::LayerDone {
                    digest,
                    size,
                    fetched,
                },
            ) => crate::report::err_line(format!(
                "layer {}: {}",
                short(&digest),
                if fetched {
                    format!("done ({size} bytes)")
                } else {
                    "already present".into()
                }
            )),
            (None, PullEvent::LayerBytes { .. }) => {}
        }
    }
}

pub fn pull(a: PullArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let name = ImageRef::parse(&a.image)?;
    let mut opts = pull_options(&store, a.tls_verify, a.platform)?;
    opts.jobs = a.jobs.max(1);
    opts.all_platforms = a.all_platforms;
    let progress = PullProgress::new(ctx, a.quiet);
    let pulled = crate::registry::pull(&store, &name, &opts, &|e| progress.event(e))
        .with_context(|| format!("pulling {}", a.image))?;
    if !a.quiet && !ctx.reporter.is_quiet() {
        crate::report::err_line(format!(
            "pulled {}: {} blobs ({} bytes) downloaded, {} already present",
            pulled.remote, pulled.fetched_blobs, pulled.fetched_bytes, pulled.present_blobs
        ));
    }
    match &pulled.index {
        Some(index) => print_index(&store, index)?,
        None => crate::report::out_line(pulled.record.id())?,
    }
    Ok(0)
}

/// What `keel pull --all-platforms` stored from an index: the index digest, then a line
/// per platform (`PLATFORM MANIFEST-DIGEST IMAGE-ID`), as `keel images` will list them.
fn print_index(store: &Store, index: &oci_spec::image::Descriptor) -> Result<()> {
    crate::report::out_line(format!("index {}", index.digest()))?;
    for r in store.load_index_records(index, Vec::new())? {
        crate::report::out_line(format!(
            "{} {} {}",
            r.platform(),
            r.manifest_digest(),
            r.id()
        ))?;
    }
    Ok(())
}

/// Applies `--pull` for an image a command is about to use.
pub fn ensure_image(store: &Store, ctx: &Ctx, image: &str, policy: PullPolicy) -> Result<()> {
    let have = match store.resolve(image) {
        Ok(_) => true,
        Err(StoreError::NoSuchImage(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let wanted = match policy {
        PullPolicy::Never => false,
        PullPolicy::Missing => !have,
        PullPolicy::Always => true,
    };
    if !wanted {
        return Ok(());
    }
    let Ok(name) = ImageRef::parse(image) else {
        return Ok(());
    };
    let opts = pull_options(store, true, None)?;
    let progress = PullProgress::new(ctx, false);
    match crate::registry::pull(store, &name, &opts, &|e| progress.event(e)) {
        Ok(_) => Ok(()),
        Err(e) if !have => bail!("no such image: {image} in the store, and pulling it failed: {e}"),
        Err(e) => Err(e).with_context(|| format!("pulling {image} (--pull=always)")),
    }
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Image to push, named with its registry (`localhost:5000/team/app:tag`).
    image: String,
    /// Push under this name instead (it names the registry).
    destination: Option<String>,
    /// Check TLS certificates (`false` also allows plain HTTP).
    #[arg(long = "tls-verify", default_value_t = true, action = clap::ArgAction::Set)]
    tls_verify: bool,
    /// How layers travel: gzip (as docker and podman push), zstd, or none.
    #[arg(long, default_value = "gzip", value_name = "FORMAT")]
    compression_format: crate::registry::Compression,
}

/// `keel push` of a multi-platform name: every platform's image, then the index.
fn push_index(
    store: &Store,
    image: &crate::store::ImageRecord,
    a: &PushArgs,
    dest: &ImageRef,
    ctx: &Ctx,
) -> Result<i32> {
    let target = crate::registry::target_of(dest)?;
    let registries = RegistriesConfig::load(store.root())?;
    let task = ctx
        .reporter
        .task(format!("pushing {} (multi-platform) to {dest}", a.image));
    let pushed = crate::registry::index_push::push_index(
        store,
        image,
        &target,
        &registries,
        !a.tls_verify,
        a.compression_format,
    )
    .with_context(|| format!("pushing {dest}"))?;
    let each: Vec<String> = pushed
        .manifests
        .iter()
        .map(|(p, m)| format!("{p} {} ({} blobs uploaded)", m.manifest, m.uploaded))
        .collect();
    task.done(format!("{}; index {}", each.join(", "), pushed.index));
    crate::report::out_line(&pushed.index)?;
    Ok(0)
}

pub fn push(a: PushArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let image = store.resolve(&a.image)?;
    let dest = ImageRef::parse(a.destination.as_deref().unwrap_or(&a.image))?;
    let target = crate::registry::target_of(&dest)?;
    let registries = RegistriesConfig::load(store.root())?;
    if image.index.is_some() {
        return push_index(&store, &image, &a, &dest, ctx);
    }
    let task = ctx
        .reporter
        .task(format!("pushing {} to {}", a.image, dest));
    let pushed = crate::registry::push(
        &store,
        &image,
        &target,
        &registries,
        !a.tls_verify,
        a.compression_format,
    )
    .with_context(|| format!("pushing {dest}"))?;
    task.done(format!(
        "{} blobs uploaded, {} already there, {} mounted from other repositories, {} layers compressed ({} bytes sent), manifest {}",
        pushed.uploaded, pushed.present, pushed.mounted, pushed.compressed, pushed.bytes, pushed.manifest
    ));
    crate::report::out_line(&pushed.manifest)?;
    Ok(0)
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry (`host[:port]`; default docker.io).
    registry: Option<String>,
    /// User name.
    #[arg(short, long)]
    username: Option<String>,
    /// Password (prefer --password-stdin: a flag shows in `ps`).
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Check TLS certificates (`false` also allows plain HTTP).
    #[arg(long = "tls-verify", default_value_t = true, action = clap::ArgAction::Set)]
    tls_verify: bool,
}

fn registry_arg(r: Option<String>) -> String {
    let r = r.unwrap_or_else(|| "docker.io".into());
    let r = r
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    r.split('/').next().unwrap_or(r).to_string()
}

pub fn login(a: LoginArgs, ctx: &Ctx) -> Result<i32> {
    let registry = registry_arg(a.registry);
    let Some(username) = a.username else {
        bail!("keel login {registry}: give the user with -u USER (and the password on standard input with --password-stdin)");
    };
    let password = match (a.password, a.password_stdin) {
        (Some(_), true) => bail!("give --password or --password-stdin, not both"),
        (Some(p), false) => p,
        (None, _) => {
            if !a.password_stdin && std::io::stdin().is_terminal() {
                bail!("keel login {registry}: pass the password on standard input with --password-stdin");
            }
            let mut p = String::new();
            std::io::stdin().read_to_string(&mut p)?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    let creds = Credentials { username, password };
    // Checked against the registry first, as docker login does.
    let store = ctx.store()?;
    let registries = RegistriesConfig::load(store.root())?;
    let host = crate::registry::Remote::endpoint_of(&registry);
    let how = crate::registry::Connect {
        skip_tls_verify: !a.tls_verify,
        insecure: registries.is_insecure(host),
        credentials: Some(creds.clone()),
    };
    crate::registry::Client::connect(host, &how, Vec::new())
        .with_context(|| format!("logging in to {registry}"))?;
    let file = auth::store(&registry, &creds)?;
    ctx.reporter.note(format!(
        "credentials for {registry} stored in {}",
        file.display()
    ));
    crate::report::out_line("Login Succeeded")?;
    Ok(0)
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry (`host[:port]`; default docker.io).
    registry: Option<String>,
}

pub fn logout(a: LogoutArgs, _ctx: &Ctx) -> Result<i32> {
    let registry = registry_arg(a.registry);
    if !auth::erase(&registry)? {
        bail!("not logged in to {registry}");
    }
    crate::report::out_line(format!("Removing login credentials for {registry}"))?;
    Ok(0)
}
