//! Image commands: import, bootstrap, images, inspect, tag, rmi, save, load.
use crate::outln;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::Ctx;
use crate::archive;
use crate::reference::ImageRef;
use crate::store::ImageRecord;

fn parse_ref(s: &str) -> Result<ImageRef, String> {
    ImageRef::parse(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Rootfs tarball (.tar or .tar.gz); `-` reads standard input.
    file: String,
    /// Name for the new image (NAME[:TAG]).
    #[arg(value_parser = parse_ref)]
    name: ImageRef,
}

fn open_input(path: &str) -> Result<Box<dyn Read>> {
    if path == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    let f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    Ok(Box::new(f))
}

pub fn import(a: ImportArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let task = ctx
        .reporter
        .task(format!("importing {} as {}", a.file, a.name.tagged_name()));
    let rec = crate::image::import::import(&store, open_input(&a.file)?, &a.file, &a.name)
        .with_context(|| format!("importing {}", a.file))?;
    task.done(rec.manifest_digest());
    outln!("{}", rec.id())?;
    Ok(0)
}

#[derive(Debug, Subcommand)]
pub enum BootstrapCommand {
    /// A minimal image from the host's static busybox, with every applet linked.
    Busybox {
        #[arg(value_parser = parse_ref)]
        name: ImageRef,
        /// Path of the static busybox binary (default: /bin/busybox from busybox-static;
        /// for another architecture, Debian's busybox-static of that architecture).
        #[arg(long, value_name = "PATH")]
        busybox: Option<PathBuf>,
        /// Platforms to make the image for (comma-separated, e.g. linux/amd64,linux/arm64);
        /// more than one makes a multi-platform image.
        #[arg(long, value_name = "OS/ARCH[,…]")]
        platform: Option<String>,
        /// Keep downloaded foreign busybox packages here (default: <root>/cache/busybox).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// A Debian image made with debootstrap (needs network access to the mirror).
    Debian {
        #[arg(value_parser = parse_ref)]
        name: ImageRef,
        /// Debian suite to install.
        #[arg(long, default_value = "bookworm")]
        suite: String,
        /// debootstrap variant (minbase, buildd, …).
        #[arg(long, default_value = "minbase")]
        variant: String,
        /// Debian mirror URL (security updates come from its `-security` sibling).
        #[arg(long, default_value = "http://deb.debian.org/debian")]
        mirror: String,
        /// Keep debootstrap's downloads here between bootstraps (default:
        /// <root>/cache/debootstrap), a subdirectory per suite, variant, mirror and arch.
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Platforms to make the image for (comma-separated); another architecture runs
        /// debootstrap's second stage under qemu emulation.
        #[arg(long, value_name = "OS/ARCH[,…]")]
        platform: Option<String>,
    },
    /// The buildpack stack: NAME-build (compilers, python3, nodejs/npm, git) and NAME-run
    /// (runtimes only) from Debian (docs/buildpacks.md lists the packages).
    Stack {
        /// The stack's name (its images are NAME-build and NAME-run).
        #[arg(default_value = crate::buildpack::DEFAULT_STACK)]
        name: String,
        /// Debian suite to install.
        #[arg(long, default_value = "bookworm")]
        suite: String,
        /// Debian mirror URL (security updates come from its `-security` sibling).
        #[arg(long, default_value = "http://deb.debian.org/debian")]
        mirror: String,
        /// Keep the downloaded packages here between bootstraps (default:
        /// <root>/cache/debootstrap), a subdirectory per suite, mirror and arch.
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
}

/// `keel bootstrap busybox`: one image per platform, named (an index for several).
fn bootstrap_busybox(
    store: &crate::store::Store,
    ctx: &Ctx,
    name: &ImageRef,
    busybox: Option<PathBuf>,
    platform: Option<String>,
    cache_dir: Option<PathBuf>,
) -> Result<Vec<ImageRecord>> {
    let platforms = platforms_of(platform.as_deref())?;
    if busybox.is_some() && platforms.len() > 1 {
        bail!("--busybox names one binary; bootstrap one platform at a time with it");
    }
    let cache = cache_dir.unwrap_or_else(|| store.root().join("cache/busybox"));
    let mut recs = Vec::new();
    for p in &platforms {
        let bb = busybox_binary(busybox.as_deref(), p, &cache)?;
        let task = ctx.reporter.task(format!(
            "bootstrapping {} ({p}) from {}",
            name.tagged_name(),
            bb.display()
        ));
        let rec = crate::bootstrap::busybox_for(store, &bb, p)?;
        task.done(rec.manifest_digest());
        recs.push(rec);
    }
    name_images(store, &recs, name)?;
    Ok(recs)
}

/// `keel bootstrap debian`: one debootstrap per platform, named (an index for several).
fn bootstrap_debian(
    store: &crate::store::Store,
    ctx: &Ctx,
    name: &ImageRef,
    opts: crate::bootstrap::DebianOptions,
    platform: Option<String>,
) -> Result<Vec<ImageRecord>> {
    let mut recs = Vec::new();
    for p in platforms_of(platform.as_deref())? {
        let task = ctx.reporter.task(format!(
            "debootstrap {} ({}, {p}) as {}",
            opts.suite,
            opts.variant,
            name.tagged_name()
        ));
        let one = crate::bootstrap::DebianOptions {
            platform: Some(p),
            ..opts.clone()
        };
        let rec = crate::bootstrap::debian(store, &one)?;
        task.done(rec.manifest_digest());
        recs.push(rec);
    }
    name_images(store, &recs, name)?;
    Ok(recs)
}

/// `--platform` of bootstrap: the list, or the host's alone.
fn platforms_of(arg: Option<&str>) -> Result<Vec<crate::platform::Platform>> {
    match arg {
        Some(s) => crate::platform::parse_list(s).map_err(anyhow::Error::msg),
        None => Ok(vec![crate::platform::host()]),
    }
}

/// Names one image, or an index over several platforms' images.
fn name_images(store: &crate::store::Store, recs: &[ImageRecord], name: &ImageRef) -> Result<()> {
    match recs {
        [one] => store.tag(name, &one.manifest_descriptor)?,
        _ => {
            store.commit_index(recs, std::slice::from_ref(name))?;
        }
    }
    Ok(())
}

/// The busybox binary for `p`: --busybox, the host's, or Debian's for that architecture.
fn busybox_binary(
    explicit: Option<&std::path::Path>,
    p: &crate::platform::Platform,
    cache: &std::path::Path,
) -> Result<PathBuf> {
    if explicit.is_some() || p.arch == crate::platform::host().arch {
        return Ok(crate::bootstrap::find_busybox(explicit)?);
    }
    crate::platform::check(p)?;
    Ok(crate::bootstrap::foreign_busybox(
        &crate::bootstrap::debian_arch(p),
        cache,
    )?)
}

pub fn bootstrap(c: BootstrapCommand, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let recs = match c {
        BootstrapCommand::Busybox {
            name,
            busybox,
            platform,
            cache_dir,
        } => bootstrap_busybox(&store, ctx, &name, busybox, platform, cache_dir)?,
        BootstrapCommand::Debian {
            name,
            suite,
            variant,
            mirror,
            cache_dir,
            platform,
        } => {
            let opts = crate::bootstrap::DebianOptions {
                cache: cache_dir.unwrap_or_else(|| store.root().join("cache/debootstrap")),
                suite,
                variant,
                mirror,
                platform: None,
            };
            bootstrap_debian(&store, ctx, &name, opts, platform)?
        }
        BootstrapCommand::Stack {
            name,
            suite,
            mirror,
            cache_dir,
        } => {
            let (build, run) = crate::buildpack::stack_images(&name);
            let task = ctx.reporter.task(format!(
                "stack {name} from Debian {suite}: {build} and {run}"
            ));
            let opts = crate::bootstrap::DebianOptions {
                cache: cache_dir.unwrap_or_else(|| store.root().join("cache/debootstrap")),
                suite,
                variant: "minbase".into(),
                mirror,
                platform: None,
            };
            let (run, build) = (ImageRef::parse(&run)?, ImageRef::parse(&build)?);
            let images = crate::bootstrap::stack(&store, &opts, &run, &build)?;
            task.done(images.build.manifest_digest());
            outln!("{}", images.run.id())?;
            vec![images.build]
        }
    };
    for rec in &recs {
        outln!("{}", rec.id())?;
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Output format: table or json.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
    /// Show full image ids.
    #[arg(long)]
    no_trunc: bool,
    /// Only print image ids.
    #[arg(short, long)]
    quiet: bool,
}

fn short_id(rec: &ImageRecord) -> String {
    rec.id().digest()[..12].to_string()
}

fn created_of(rec: &ImageRecord) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(rec.config.created().as_deref()?).ok()
}

pub(crate) fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + units[u]
    }
}

pub(crate) fn human_ago(t: std::time::SystemTime) -> String {
    let Ok(d) = std::time::SystemTime::now().duration_since(t) else {
        return "in the future".into();
    };
    let s = d.as_secs();
    let (n, unit) = match s {
        0..=59 => return "Less than a minute ago".into(),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        86_400..=2_591_999 => (s / 86_400, "day"),
        2_592_000..=31_535_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

pub fn images(a: ImagesArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let rows = image_rows(&store)?;
    let mut out = crate::report::stdout().lock();
    let id = |rec: &ImageRecord| match a.no_trunc {
        true => rec.id().to_string(),
        false => short_id(rec),
    };
    if a.quiet {
        for (_, _, rec) in &rows {
            writeln!(out, "{}", id(rec))?;
        }
    } else if a.format == "json" {
        let v: Vec<_> = rows
            .iter()
            .map(|(repo, tag, rec)| {
                serde_json::json!({
                    "repository": repo, "tag": tag, "id": rec.id().to_string(), "digest": rec.manifest_digest().to_string(),
                    "created": rec.config.created(), "size": rec.size(),
                    "platform": rec.platform().to_string(),
                    "index": rec.index.as_ref().map(|i| i.digest().to_string()),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        let table: Vec<[String; 6]> = rows
            .iter()
            .map(|(repo, tag, rec)| {
                [
                    repo.clone(),
                    tag.clone(),
                    id(rec),
                    created_of(rec).map(human_ago).unwrap_or_default(),
                    human_size(rec.size()),
                    rec.platform().to_string(),
                ]
            })
            .collect();
        let head = [
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "CREATED",
            "SIZE",
            "PLATFORM",
        ];
        write_table(&mut out, head.map(String::from), &table)?;
    }
    Ok(0)
}

/// One row per name of each stored image (repository, tag, image); an image without a
/// name is one `<none>` row, as docker lists it.
fn image_rows(store: &crate::store::Store) -> Result<Vec<(String, String, ImageRecord)>> {
    let mut rows = Vec::new();
    for rec in store.images()? {
        let names: Vec<Option<String>> = if rec.names.is_empty() {
            vec![None]
        } else {
            rec.names.iter().cloned().map(Some).collect()
        };
        for n in names {
            let (repo, tag) = match n.as_deref().map(ImageRef::parse) {
                Some(Ok(r)) => (r.repository.clone(), r.tag_or_latest().to_string()),
                _ => ("<none>".to_string(), "<none>".to_string()),
            };
            rows.push((repo, tag, rec.clone()));
        }
    }
    Ok(rows)
}

/// Left-aligned columns as wide as their widest cell, three spaces apart, as docker
/// prints its tables; no trailing blanks.
fn write_table<const N: usize>(
    out: &mut impl Write,
    head: [String; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = head.clone().map(|h| h.len());
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&head).chain(rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("   ").trim_end())?;
    }
    Ok(())
}

/// One image's `keel inspect` document (also used when `keel inspect` finds no container).
pub(super) fn inspect_doc(store: &crate::store::Store, name: &str) -> Result<serde_json::Value> {
    let rec = store.resolve(name)?;
    let mut doc = serde_json::json!({
        "Id": rec.id().to_string(),
        "Digest": rec.manifest_digest().to_string(),
        "RepoTags": rec.names,
        "Size": rec.size(),
        "Platform": rec.platform().to_string(),
        "Manifest": rec.manifest,
        // The stored document itself: docker's fields (Healthcheck, Shell, OnBuild) included.
        "Config": store.read_json::<serde_json::Value>("config", rec.id())?,
    });
    // A multi-platform name: the index it points at (the fields above are the host's).
    if let Some(i) = &rec.index {
        doc["IndexDigest"] = i.digest().to_string().into();
        doc["Index"] = store.read_json::<serde_json::Value>("index", i.digest())?;
    }
    Ok(doc)
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Existing image (name or id).
    source: String,
    /// New name (NAME[:TAG]).
    #[arg(value_parser = parse_ref)]
    target: ImageRef,
}

pub fn tag(a: TagArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let rec = store.resolve(&a.source)?;
    // A multi-platform image is tagged whole: the new name points at its index too.
    store.tag(&a.target, rec.target())?;
    Ok(0)
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images to remove (names or ids).
    #[arg(required = true)]
    images: Vec<String>,
    /// Remove even if containers use the image, and remove every name of an id.
    #[arg(short, long)]
    force: bool,
}

pub fn rmi(a: RmiArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    for i in &a.images {
        let rec = store.resolve(i)?;
        let users: Vec<String> = store
            .container_images()
            .into_iter()
            .filter(|(_, d)| d == rec.manifest_digest())
            .map(|(c, _)| c)
            .collect();
        if !users.is_empty() && !a.force {
            bail!("image {i} is used by container(s) {}; remove them first (`keel rm`) or use --force", users.join(", "));
        }
        // A name removes that name; an id removes every name of the image.
        let by_name = ImageRef::parse(i)
            .ok()
            .map(|r| r.tagged_name())
            .filter(|n| rec.names.contains(n));
        let names = match by_name {
            Some(n) => vec![n],
            None if rec.names.len() > 1 && !a.force => {
                bail!(
                    "image {i} has several names ({}); remove them by name or use --force",
                    rec.names.join(", ")
                )
            }
            None => rec.names.clone(),
        };
        store.untag(&names)?;
        for n in &names {
            outln!("Untagged: {n}")?;
        }
        if store
            .images()?
            .iter()
            .all(|r| r.manifest_digest() != rec.manifest_digest())
        {
            outln!("Deleted: {}", rec.id())?;
        }
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Images to save (names or ids).
    #[arg(required = true)]
    images: Vec<String>,
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn save(a: SaveArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let mut items = Vec::new();
    for i in &a.images {
        let image = store.resolve(i)?;
        store.protect_image(&image)?;
        let names = match ImageRef::parse(i) {
            Ok(r) if image.names.contains(&r.tagged_name()) => vec![r.tagged_name()],
            _ => image.names.clone(),
        };
        items.push(archive::SaveItem { image, names });
    }
    match &a.output {
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            // Beside the user's output, where gc never looks: the lease below names it.
            #[allow(clippy::disallowed_methods)]
            let mut tmp = tempfile::Builder::new()
                .prefix(".keel-save-")
                .tempfile_in(dir)
                .with_context(|| format!("creating a temp file in {}", dir.display()))?;
            // Leased: gc keeps the images' blobs, and removes the temp file if we die.
            store.lease()?.protect_temp(tmp.path())?;
            archive::save(&store, &items, std::io::BufWriter::new(tmp.as_file_mut()))?;
            crate::fault::point("save.partial");
            tmp.as_file().sync_all()?;
            crate::sys::hostfs::persist(tmp, path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            if crate::report::stdout().is_terminal() {
                bail!("refusing to write an archive to a terminal; use -o FILE or redirect the output");
            }
            archive::save(
                &store,
                &items,
                std::io::BufWriter::new(crate::report::stdout().lock()),
            )?;
        }
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this archive instead of standard input.
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
}

pub fn load(a: LoadArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let (src, name): (Box<dyn Read>, String) = match &a.input {
        Some(p) => (
            Box::new(std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?),
            p.display().to_string(),
        ),
        None => (Box::new(std::io::stdin()), "standard input".into()),
    };
    let loaded = archive::load(&store, src).with_context(|| format!("loading {name}"))?;
    for (n, rec) in loaded.images {
        match n {
            Some(n) => outln!("Loaded image: {n}")?,
            None => outln!("Loaded image ID: {}", rec.id())?,
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_as_wide_as_its_widest_cells_without_trailing_blanks() {
        let mut out = Vec::new();
        let head = ["REPOSITORY", "TAG", "SIZE"].map(String::from);
        let rows = [
            ["bb", "latest", "2.1MB"].map(String::from),
            ["registry.example/app", "1", ""].map(String::from),
        ];
        write_table(&mut out, head, &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "REPOSITORY             TAG      SIZE\n\
             bb                     latest   2.1MB\n\
             registry.example/app   1\n"
        );
    }
}
