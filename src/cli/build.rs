//! `keel build`: Dockerfile + context → image, with reproducible defaults.
use crate::sys::{hostfs, userfile};
use crate::{errln, outln};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use super::Ctx;
use crate::build::exec::{self, BuildOptions, Executor};
use crate::reference::ImageRef;

#[derive(Debug, Args, Clone)]
pub struct BuildArgs {
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile); `-` reads it from stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<String>,
    /// Name and optionally a tag (NAME[:TAG]); may be repeated.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]", value_parser = |s: &str| ImageRef::parse(s).map_err(|e| e.to_string()))]
    tags: Vec<ImageRef>,
    /// Set a build-time variable (KEY=VALUE, or KEY to pass the host's value).
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_args: Vec<String>,
    /// Build only up to this stage.
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Do not use the build cache.
    #[arg(long)]
    no_cache: bool,
    /// Do not use the build cache for these stages (names or indexes; repeat or comma-separate).
    #[arg(long, value_name = "STAGE", value_delimiter = ',')]
    no_cache_filter: Vec<String>,
    /// Write the image digest, config digest, names and each step's cache result as JSON.
    #[arg(long, value_name = "FILE")]
    metadata_file: Option<PathBuf>,
    /// Fetch FROM images from their registry: missing (only when the store lacks them),
    /// always (follow moved tags), or never (offline).
    #[arg(long, default_value = "missing", value_name = "POLICY", num_args = 0..=1, default_missing_value = "always")]
    pull: crate::registry::PullPolicy,
    /// Export the build cache to a registry: registry:HOST/REPO[:TAG][,mode=min|max].
    #[arg(long, value_name = "registry:REF")]
    cache_to: Option<crate::registry::cache::CacheRef>,
    /// Use a build cache exported to a registry (repeatable).
    #[arg(long, value_name = "registry:REF")]
    cache_from: Vec<crate::registry::cache::CacheRef>,
    /// Add a label to the image (KEY=VALUE).
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Export the result without tagging it: `type=local,dest=DIR` (the target stage's
    /// files, owned by you), `type=tar,dest=FILE`, `type=oci,dest=FILE`,
    /// `type=docker,dest=FILE`; a bare `DIR` means local, `-` a tar on stdout.
    #[arg(short = 'o', long = "output", value_name = "type=TYPE,dest=PATH|DIR")]
    output: Vec<String>,
    /// Write the image id to this file.
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Also write the build's full plain log (every step, all RUN output) to this file;
    /// each build's log is kept under <root>/logs/builds/ too (logs/last-build: the newest).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Target platforms, comma-separated (e.g. linux/amd64,linux/arm64): one image per
    /// platform, under one multi-platform name (an OCI index) when there are several.
    /// Another architecture's RUN steps run under qemu emulation.
    #[arg(long, value_name = "OS/ARCH[,…]")]
    platform: Option<String>,
    /// Print only the image id.
    #[arg(short, long)]
    quiet: bool,
    /// Print every step's full cache-key inputs.
    #[arg(long)]
    explain: bool,
    /// Print the plan (the stages the target needs, their steps and what each step's cache
    /// key is made of) without running anything or opening the store.
    #[arg(long)]
    dry_run: bool,
    /// File timestamps in layers: `reproducible` (SOURCE_DATE_EPOCH or a fixed epoch) or `keep`.
    #[arg(long, default_value = "reproducible", value_parser = ["reproducible", "keep"])]
    timestamps: String,
    /// Build twice without cache in scratch roots and fail, naming the first differing file, if the digests differ.
    #[arg(long)]
    check_reproducible: bool,
    /// A secret for `RUN --mount=type=secret` (id=NAME,src=FILE or id=NAME,env=VAR); it
    /// reaches neither a layer nor a cache key.
    #[arg(long, value_name = "id=NAME[,src=FILE|,env=VAR]")]
    secret: Vec<String>,
    /// An SSH agent socket for `RUN --mount=type=ssh` (`default` is $SSH_AUTH_SOCK).
    #[arg(long, value_name = "ID[=SOCKET]")]
    ssh: Vec<String>,
    /// Network for RUN steps that do not say (`RUN --network`): host (the default) or none.
    #[arg(long, value_name = "host|none", value_parser = ["host", "none", "default"])]
    network: Option<String>,
    /// Add a line to the RUN steps' /etc/hosts (NAME:IP); may be repeated.
    #[arg(long, value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// A resource limit for RUN steps (NAME=SOFT[:HARD], e.g. nofile=1024:2048); repeatable.
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<String>,
    /// Size of the RUN steps' /dev/shm (bytes, or with k/m/g).
    #[arg(long, value_name = "SIZE")]
    shm_size: Option<String>,
    /// A named context for FROM NAME / COPY --from=NAME: NAME=DIR,
    /// NAME=docker-image://REF (from the store) or NAME=oci-layout://PATH[:TAG|@DIGEST].
    #[arg(long, value_name = "NAME=VALUE")]
    build_context: Vec<String>,
    /// Isolation backend for RUN steps.
    #[arg(long, value_name = "BACKEND")]
    isolation: Option<String>,
    /// Storage driver for build steps: btrfs, overlay or copy (default as for `keel run`).
    #[arg(long, value_name = "DRIVER")]
    storage_driver: Option<String>,
    /// The build context directory (or, in a project with keel.toml, an image name).
    context: Option<String>,
}

fn epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The config's `created`: SOURCE_DATE_EPOCH, else the commit time of a clean git checkout,
/// else the epoch: meaningful where possible, reproducible always. git runs only when the
/// context is inside a work tree (as the tree's owner: `context::git`), and in the
/// background while the build walks the context.
struct CreatedTime {
    status: Option<std::process::Child>,
    log: Option<std::process::Child>,
}

impl CreatedTime {
    fn start(context: &Path) -> CreatedTime {
        let git = |args: &[&str]| {
            crate::context::git::command(context)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()
        };
        if epoch().is_some() || !crate::context::git::in_work_tree(context) {
            return CreatedTime {
                status: None,
                log: None,
            };
        }
        CreatedTime {
            status: git(&["status", "--porcelain", "--untracked-files=no"]),
            log: git(&["log", "-1", "--format=%ct"]),
        }
    }

    fn finish(self) -> String {
        let out = |c: Option<std::process::Child>| {
            c.and_then(|c| c.wait_with_output().ok())
                .filter(|o| o.status.success())
                .map(|o| o.stdout)
        };
        let clean = out(self.status).is_some_and(|o| o.is_empty());
        let commit = out(self.log)
            .and_then(|o| String::from_utf8_lossy(&o).trim().parse::<u64>().ok())
            .filter(|_| clean);
        let secs = epoch().or(commit).unwrap_or(0);
        crate::image::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    }
}

fn parse_kv(flag: &str, v: &str, host: bool) -> Result<(String, String)> {
    match v.split_once('=') {
        Some((k, val)) if !k.is_empty() => Ok((k.to_string(), val.to_string())),
        None if host && !v.is_empty() => Ok((v.to_string(), std::env::var(v).unwrap_or_default())),
        _ => bail!("invalid {flag} value {v:?}: expected KEY=VALUE"),
    }
}

/// `keel build` in a project: with no CONTEXT every `[[image]]` of keel.toml in
/// dependency order, with an image NAME that image (after the images it builds on).
fn build_project(a: &BuildArgs, ctx: &Ctx) -> Result<Option<i32>> {
    let here = Path::new(crate::project::PROJECT_FILE);
    let file = match &a.context {
        None if here.is_file() => here.to_path_buf(),
        None if a.file.is_none() && !Path::new("Dockerfile").exists() => {
            match crate::project::Project::find(Path::new(".")) {
                Some(f) => f,
                None => return Ok(None),
            }
        }
        Some(c) if !Path::new(c).is_dir() => match crate::project::Project::find(Path::new(".")) {
            Some(f) => f,
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    let project = crate::project::Project::load(&file)?;
    if a.context.is_none() && project.images.is_empty() && project.apps.is_empty() {
        return Ok(None);
    }
    // `[[app]]` entries build with buildpacks (keel buildpack build), after the images.
    let app = |name: &str| project.apps.iter().find(|p| p.name == name);
    if let Some(one) = a.context.as_deref().and_then(app) {
        return super::buildpack::build_project_apps(&project, std::slice::from_ref(one), ctx);
    }
    let order = if a.context.is_none() && project.images.is_empty() {
        Vec::new()
    } else {
        crate::project::build_order(&project, a.context.as_deref())?
    };
    #[derive(clap::Parser)]
    struct One {
        #[command(flatten)]
        args: BuildArgs,
    }
    for img in order {
        use clap::Parser;
        let argv = img.build_args();
        let mut one = One::try_parse_from(
            std::iter::once("keel".to_string()).chain(argv[1..].iter().cloned()),
        )?
        .args;
        one.file = one.file.map(|f| project.dir.join(f).display().to_string());
        one.context = one
            .context
            .map(|c| project.dir.join(c).display().to_string());
        one.no_cache |= a.no_cache;
        one.dry_run |= a.dry_run;
        one.quiet = a.quiet;
        one.isolation = a.isolation.clone().or(one.isolation);
        one.storage_driver = a.storage_driver.clone().or(one.storage_driver);
        if !a.quiet {
            errln!("== building {} ({})", img.name, img.dockerfile());
        }
        let code = build(one, ctx)?;
        if code != 0 {
            return Ok(Some(code));
        }
    }
    if a.context.is_none() {
        return super::buildpack::build_project_apps(&project, &project.apps, ctx);
    }
    Ok(Some(0))
}

pub fn build(a: BuildArgs, ctx: &Ctx) -> Result<i32> {
    if let Some(code) = build_project(&a, ctx)? {
        return Ok(code);
    }
    let context_dir = PathBuf::from(a.context.clone().unwrap_or_else(|| ".".into()));
    if !context_dir.is_dir() {
        bail!("build context {} is not a directory; give the directory holding your sources (e.g. `keel build .`)", context_dir.display());
    }
    let platforms = match &a.platform {
        Some(list) => crate::platform::parse_list(list).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    // An emulator a platform needs is there before anything is read or run.
    for p in &platforms {
        crate::platform::check(p)?;
    }
    let (file_name, bytes) = read_dockerfile(a.file.as_deref(), &context_dir)?;
    let outputs = a
        .output
        .iter()
        .map(|o| crate::build::output::parse(o))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = crate::build::front::plan(&file_name, &bytes)?;
    let mut build_args = BTreeMap::new();
    for v in &a.build_args {
        let (k, val) = parse_kv("--build-arg", v, true)?;
        build_args.insert(k, val);
    }
    if a.dry_run {
        return dry_run(&plan, &a, build_args, &platforms);
    }
    let opts = build_options(&a, ctx, file_name, build_args, &platforms)?;
    let store = ctx.store()?;
    let created = CreatedTime::start(&context_dir);
    if platforms.len() > 1 {
        return build_platforms(&store, &plan, &opts, &context_dir, &platforms, &a, created);
    }
    if a.check_reproducible {
        return check_reproducible(&store, &plan, &opts, &context_dir, &created.finish());
    }
    let outcome = build_one(&store, &plan, &opts, &context_dir, &a)?;
    finish(&store, &a, &opts, &outputs, &context_dir, outcome, created)
}

/// The Dockerfile's name (for messages) and bytes: `-f FILE`, `-f -` (stdin), or the
/// context's `Dockerfile`.
fn read_dockerfile(file: Option<&str>, context_dir: &Path) -> Result<(String, Vec<u8>)> {
    match file {
        Some("-") => {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b)?;
            Ok(("Dockerfile".to_string(), b))
        }
        Some(f) => Ok((
            f.to_string(),
            std::fs::read(f).with_context(|| format!("reading the Dockerfile {f}"))?,
        )),
        None => {
            let p = context_dir.join("Dockerfile");
            let bytes = std::fs::read(&p).with_context(|| {
                format!(
                    "reading {}; pass -f FILE if the Dockerfile is elsewhere",
                    p.display()
                )
            })?;
            Ok((p.display().to_string(), bytes))
        }
    }
}

/// `keel build --dry-run`: the plan, printed; nothing run, the store not opened.
fn dry_run(
    plan: &crate::plan::Plan,
    a: &BuildArgs,
    build_args: BTreeMap<String, String>,
    platforms: &[crate::platform::Platform],
) -> Result<i32> {
    let arch = platforms
        .first()
        .map_or_else(|| crate::image::host_arch().to_string(), |p| p.arch.clone());
    let opts = crate::plan::DryRun {
        target: a.target.clone(),
        build_args,
        arch,
    };
    crate::report::out_bytes(crate::plan::dry_run(plan, &opts)?.as_bytes())?;
    Ok(0)
}

/// Every flag that shapes the build, checked and typed: a bad one fails here, naming
/// the flag, before the store is opened or anything runs.
fn build_options(
    a: &BuildArgs,
    ctx: &Ctx,
    file_name: String,
    build_args: BTreeMap<String, String>,
    platforms: &[crate::platform::Platform],
) -> Result<BuildOptions> {
    let labels = a
        .label
        .iter()
        .map(|l| parse_kv("--label", l, false))
        .collect::<Result<Vec<_>>>()?;
    let credentials = credentials(a)?;
    let run = run_flags(a)?;
    Ok(BuildOptions {
        file_name,
        build_args,
        target: a.target.clone(),
        no_cache: a.no_cache,
        no_cache_stages: a.no_cache_filter.clone(),
        labels,
        explain: a.explain,
        isolation: a.isolation.clone(),
        storage_driver: a.storage_driver.clone(),
        epoch: if a.timestamps == "keep" {
            None
        } else {
            Some(epoch().unwrap_or(0))
        },
        quiet: a.quiet || ctx.reporter.is_quiet(),
        terminal: ctx.reporter.is_fancy(),
        credentials,
        network: run.network,
        add_hosts: run.add_hosts,
        shm_size: run.shm_size,
        ulimits: run.ulimits,
        contexts: named_contexts(a)?,
        pull: a.pull,
        platform: platforms.first().cloned(),
    })
}

/// `--secret` and `--ssh`: what `RUN --mount=type=secret|ssh` may be given.
fn credentials(a: &BuildArgs) -> Result<crate::build::mounts::Credentials> {
    use crate::build::mounts::{parse_secret, parse_ssh, SecretSource};
    let mut credentials = crate::build::mounts::Credentials::default();
    for spec in &a.secret {
        let (id, src) =
            parse_secret(spec, |v| std::env::var_os(v).is_some()).map_err(anyhow::Error::msg)?;
        if let SecretSource::File(p) = &src {
            if !p.is_file() {
                bail!(
                    "--secret {spec}: {} is not a readable file; give src=FILE or env=VAR",
                    p.display()
                );
            }
        }
        credentials.secrets.insert(id, src);
    }
    let agent = std::env::var("SSH_AUTH_SOCK").ok();
    for spec in &a.ssh {
        let (id, sock) = parse_ssh(spec, agent.as_deref()).map_err(anyhow::Error::msg)?;
        credentials.ssh.insert(id, sock);
    }
    Ok(credentials)
}

/// The RUN steps' container flags (`--network`, `--add-host`, `--shm-size`, `--ulimit`).
struct RunFlags {
    network: Option<crate::plan::Network>,
    add_hosts: Vec<(String, String)>,
    shm_size: Option<u64>,
    ulimits: Vec<crate::runtime::spec::Ulimit>,
}

fn run_flags(a: &BuildArgs) -> Result<RunFlags> {
    let mut add_hosts = Vec::new();
    for h in &a.add_host {
        match h.split_once(':') {
            Some((name, ip)) if !name.is_empty() && ip.parse::<std::net::IpAddr>().is_ok() => {
                add_hosts.push((name.to_string(), ip.to_string()))
            }
            _ => bail!("--add-host {h:?}: expected NAME:IP, e.g. --add-host db:10.0.0.5"),
        }
    }
    let shm_size = match &a.shm_size {
        None => None,
        Some(v) => Some(
            crate::dockerfile::instruction::parse_size(v)
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    anyhow::anyhow!("--shm-size {v:?}: expected a size such as 64m or 1g")
                })?,
        ),
    };
    let ulimits = a
        .ulimit
        .iter()
        .map(|u| crate::runtime::spec::Ulimit::parse(u).map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    let network = a.network.as_deref().map(|n| match n {
        "none" => crate::plan::Network::None,
        "host" => crate::plan::Network::Host,
        _ => crate::plan::Network::Default,
    });
    Ok(RunFlags {
        network,
        add_hosts,
        shm_size,
        ulimits,
    })
}

/// `--build-context NAME=VALUE`, each checked.
fn named_contexts(a: &BuildArgs) -> Result<BTreeMap<String, exec::NamedContext>> {
    let mut contexts = BTreeMap::new();
    for c in &a.build_context {
        let (name, value) = exec::NamedContext::parse(c).map_err(anyhow::Error::msg)?;
        if let exec::NamedContext::Dir(d) = &value {
            if !d.is_dir() {
                bail!("--build-context {c}: {} is not a directory", d.display());
            }
        }
        contexts.insert(name, value);
    }
    Ok(contexts)
}

/// One platform's build: read the context, import `--cache-from`, run the steps.
fn build_one(
    store: &crate::store::Store,
    plan: &crate::plan::Plan,
    opts: &BuildOptions,
    context_dir: &Path,
    a: &BuildArgs,
) -> Result<exec::BuildOutcome> {
    let ignore = crate::build::front::dockerignore(context_dir)?;
    let context = crate::context::Context::new(context_dir, ignore)?;
    for c in &a.cache_from {
        let got = crate::registry::cache::import(store, c)
            .with_context(|| format!("--cache-from registry:{}", c.image))?;
        if !opts.quiet {
            errln!(
                "cache-from {}: {} entries, {} layers available",
                c.image,
                got.entries,
                got.layers
            );
        }
    }
    let executor = Executor::new(store, plan, opts, &context)?;
    if let Some(f) = &a.log_file {
        let file =
            hostfs::create(f).with_context(|| format!("creating --log-file {}", f.display()))?;
        executor.add_transcript(file);
    }
    let logs = executor.log_dir().to_path_buf();
    executor.build().map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "build failed; nothing was tagged; step logs are in {}",
            logs.display()
        ))
    })
}

/// After the steps: commit and tag the image, then every output the flags ask for.
fn finish(
    store: &crate::store::Store,
    a: &BuildArgs,
    opts: &BuildOptions,
    outputs: &[crate::build::output::Output],
    context_dir: &Path,
    mut outcome: exec::BuildOutcome,
    created: CreatedTime,
) -> Result<i32> {
    // Layers of cache hits not fetched yet (no step needed their files) come now.
    crate::registry::cache::fetch_missing(store, &outcome.state.layers)?;
    let rec = exec::commit(
        store,
        &outcome.state,
        &created.finish(),
        &opts.labels,
        &a.tags,
    )?;
    for o in outputs {
        crate::build::output::export(store, &rec, o, invoking_user(context_dir))?;
    }
    if let Some(f) = &a.metadata_file {
        let names: Vec<String> = a.tags.iter().map(|t| t.tagged_name()).collect();
        let doc = serde_json::json!({
            "containerimage.digest": rec.manifest_digest().to_string(),
            "containerimage.config.digest": rec.id().to_string(),
            "image.name": names.join(","),
            "keel.steps": outcome.steps,
        });
        userfile::write(f, &serde_json::to_vec_pretty(&doc)?, Default::default())
            .with_context(|| format!("writing --metadata-file {}", f.display()))?;
    }
    if !a.cache_from.is_empty() && !opts.quiet {
        let (n, bytes) = crate::registry::cache::fetched();
        errln!("cache-from: {n} layers ({bytes} bytes) downloaded");
    }
    if let Some(c) = &a.cache_to {
        export_cache(store, c, &outcome, &rec, opts.quiet)?;
    }
    if let Some(f) = &a.iidfile {
        userfile::write(f, rec.id().to_string().as_bytes(), Default::default())
            .and_then(|()| crate::sys::fs::give_to_tree_owner(f))
            .with_context(|| format!("writing --iidfile {}", f.display()))?;
    }
    if !opts.quiet {
        for t in &a.tags {
            errln!("tagged {}", t.tagged_name());
        }
    }
    let to_stdout = outputs.iter().any(|o| {
        matches!(
            o,
            crate::build::output::Output::Tar(crate::build::output::Dest::Stdout)
        )
    });
    if !to_stdout {
        outln!("{}", rec.id())?;
    }
    // The process exits next: its large indexes need not be freed one allocation at a
    // time (the memory goes back with the process).
    std::mem::forget(outcome.scratch.take());
    Ok(0)
}

/// `--cache-to registry:REF`: the entries this build used or made, its final layers and
/// (with `mounts=true`) its cache mounts.
fn export_cache(
    store: &crate::store::Store,
    c: &crate::registry::cache::CacheRef,
    outcome: &exec::BuildOutcome,
    rec: &crate::store::ImageRecord,
    quiet: bool,
) -> Result<()> {
    let finals: Vec<_> = rec
        .manifest
        .layers()
        .iter()
        .map(|l| l.digest().clone())
        .collect();
    let sent =
        crate::registry::cache::export(store, c, &outcome.keys, &finals, &outcome.cache_mounts)
            .with_context(|| format!("--cache-to registry:{}", c.image))?;
    for (id, bytes) in &sent.mounts_skipped {
        errln!(
            "warning: cache mount {id} not exported: {bytes} bytes, more than mounts-max={} (raise it in --cache-to)",
            c.mounts_max
        );
    }
    if !quiet && sent.mounts > 0 {
        errln!("cache-to {}: {} cache mounts", c.image, sent.mounts);
    }
    if !quiet {
        errln!(
            "cache-to {}: {} entries, {} layers ({} uploaded), manifest {}",
            c.image,
            sent.entries,
            sent.layers,
            sent.uploaded,
            sent.manifest
        );
    }
    Ok(())
}

/// `keel build --platform A,B,…`: the target once per platform (sequentially: each
/// build already uses the cores it can), then one OCI index over the images, tagged.
/// Stages on `$BUILDPLATFORM` are the same for every platform and hit the cache after
/// the first.
fn build_platforms(
    store: &crate::store::Store,
    plan: &crate::plan::Plan,
    opts: &BuildOptions,
    context_dir: &Path,
    platforms: &[crate::platform::Platform],
    a: &BuildArgs,
    created: CreatedTime,
) -> Result<i32> {
    let unsupported = [
        ("--output", !a.output.is_empty()),
        ("--check-reproducible", a.check_reproducible),
        ("--cache-to", a.cache_to.is_some()),
        ("--cache-from", !a.cache_from.is_empty()),
    ];
    if let Some((flag, _)) = unsupported.iter().find(|(_, set)| *set) {
        bail!(
            "{flag} works with one platform at a time; build each platform with its own --platform"
        );
    }
    let created = created.finish();
    let mut images = Vec::new();
    for p in platforms {
        let mut o = opts.clone();
        o.platform = Some(p.clone());
        if !o.quiet {
            errln!("== platform {p}");
        }
        let ignore = crate::build::front::dockerignore(context_dir)?;
        let context = crate::context::Context::new(context_dir, ignore)?;
        let executor = Executor::new(store, plan, &o, &context)?;
        let logs = executor.log_dir().to_path_buf();
        let outcome = executor.build().map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "build for {p} failed; nothing was tagged; step logs are in {}",
                logs.display()
            ))
        })?;
        crate::registry::cache::fetch_missing(store, &outcome.state.layers)?;
        images.push(exec::commit(
            store,
            &outcome.state,
            &created,
            &o.labels,
            &[],
        )?);
    }
    let index = store.commit_index(&images, &a.tags)?;
    if let Some(f) = &a.iidfile {
        userfile::write(f, index.digest().to_string().as_bytes(), Default::default())
            .and_then(|()| crate::sys::fs::give_to_tree_owner(f))
            .with_context(|| format!("writing --iidfile {}", f.display()))?;
    }
    if let Some(f) = &a.metadata_file {
        write_index_metadata(f, &index, &images, &a.tags)?;
    }
    if !opts.quiet {
        for t in &a.tags {
            errln!("tagged {} ({} platforms)", t.tagged_name(), images.len());
        }
    }
    outln!("{}", index.digest())?;
    Ok(0)
}

/// `--metadata-file` of a multi-platform build: the index, and each platform's image.
fn write_index_metadata(
    f: &Path,
    index: &oci_spec::image::Descriptor,
    images: &[crate::store::ImageRecord],
    tags: &[ImageRef],
) -> Result<()> {
    let names: Vec<String> = tags.iter().map(|t| t.tagged_name()).collect();
    let doc = serde_json::json!({
        "containerimage.digest": index.digest().to_string(),
        "containerimage.platforms": images.iter().map(|r| serde_json::json!({
            "platform": r.platform().to_string(),
            "digest": r.manifest_digest().to_string(),
            "config.digest": r.id().to_string(),
        })).collect::<Vec<_>>(),
        "image.name": names.join(","),
    });
    userfile::write(f, &serde_json::to_vec_pretty(&doc)?, Default::default())
        .with_context(|| format!("writing --metadata-file {}", f.display()))
}

/// Who `--output` files belong to: the caller, or under sudo (root with `SUDO_UID` set)
/// the owner of the context directory — the user who ran sudo in their own project.
fn invoking_user(context: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let (uid, gid) = crate::sys::proc::effective_ids();
    if uid == 0 && std::env::var_os("SUDO_UID").is_some() {
        if let Ok(m) = std::fs::metadata(context) {
            return (m.uid(), m.gid());
        }
    }
    (uid, gid)
}

/// Builds twice, without cache, in two scratch roots that hold only the base images.
fn check_reproducible(
    store: &crate::store::Store,
    plan: &crate::plan::Plan,
    opts: &BuildOptions,
    context_dir: &Path,
    created: &str,
) -> Result<i32> {
    let mut ids = Vec::new();
    let mut roots = Vec::new();
    for round in 0..2 {
        let scratch = hostfs::scratch_dir_in(&store.tmp_dir(), "repro")?;
        // Scratch roots are thrown away: their writes need not reach the disk.
        let sub = crate::store::Store::open(scratch.path())?.without_fsync();
        copy_bases(store, &sub, plan, opts)?;
        let mut o = opts.clone();
        o.no_cache = true;
        o.quiet = true;
        let ignore = crate::build::front::dockerignore(context_dir)?;
        let context = crate::context::Context::new(context_dir, ignore)?;
        let outcome = Executor::new(&sub, plan, &o, &context)?
            .build()
            .with_context(|| format!("reproducibility build {}", round + 1))?;
        let rec = exec::commit(&sub, &outcome.state, created, &o.labels, &[])?;
        ids.push(rec);
        roots.push(scratch);
    }
    if ids[0].manifest_digest() == ids[1].manifest_digest() {
        outln!(
            "reproducible: both builds gave {}",
            ids[0].manifest_digest()
        )?;
        return Ok(0);
    }
    let a = crate::store::Store::open(roots[0].path())?;
    let b = crate::store::Store::open(roots[1].path())?;
    let diff = crate::build::repro::first_difference(&a, &ids[0], &b, &ids[1])?;
    errln!(
        "keel: not reproducible: {} vs {}: {diff}",
        ids[0].manifest_digest(),
        ids[1].manifest_digest()
    );
    Ok(1)
}

/// Copies the store images the plan's FROM lines name into `to` (blobs are hard-linked).
fn copy_bases(
    from: &crate::store::Store,
    to: &crate::store::Store,
    plan: &crate::plan::Plan,
    opts: &BuildOptions,
) -> Result<()> {
    let host = crate::platform::host();
    let target = opts.platform.clone().unwrap_or_else(|| host.clone());
    let globals =
        crate::plan::global_arg_values_for(&plan.global_args, &opts.build_args, &target, &host);
    for s in &plan.stages {
        let lookup = |k: &str| globals.get(k).cloned();
        let base = crate::dockerfile::expand::Lexer::new(plan.escape)
            .process_word(&s.base, &lookup)
            .unwrap_or_else(|_| s.base.clone());
        if base == "scratch" || plan.stage_by_ref(&base).is_some_and(|j| j < s.index) {
            continue;
        }
        let Ok(rec) = from.resolve(&base) else {
            continue;
        };
        // A multi-platform base goes whole (its index and every platform's image).
        let members = match &rec.index {
            Some(i) => from.load_index_records(i, Vec::new())?,
            None => vec![rec.clone()],
        };
        let mut digests: Vec<_> = rec.index.iter().map(|i| i.digest().clone()).collect();
        for m in &members {
            digests.extend([m.manifest_digest().clone(), m.id().clone()]);
            digests.extend(m.manifest.layers().iter().map(|l| l.digest().clone()));
        }
        for d in digests {
            let dst = to.blob_path(&d);
            if !dst.exists() {
                hostfs::hard_link(from.blob_path(&d), &dst)
                    .or_else(|_| hostfs::copy(from.blob_path(&d), &dst).map(drop))?;
            }
        }
        if let Ok(r) = ImageRef::parse(&base) {
            to.tag(&r, rec.target())?;
        }
    }
    Ok(())
}
