//! Store-wide and host commands: gc, fsck, info.
use crate::{errln, outln};
use anyhow::Result;
use clap::Args;

use super::image::human_size;
use super::Ctx;

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Also drop the whole build cache (by default entries used in the last 7 days stay).
    #[arg(long)]
    pub(super) cache: bool,
}

pub fn gc(a: GcArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    // First what killed keels left (their leases, containers, snapshots, mounts, temp
    // files): their leases then stop protecting blobs.
    reclaim_killed(&store)?;
    let keep = if a.cache {
        std::time::Duration::ZERO
    } else {
        crate::build::cache::KEEP_UNUSED
    };
    let mut roots = crate::build::cache::BuildCache::new(store.root()).roots(Some(keep));
    // The blobs chunked layer entries read from stay while their entries do: those the
    // prune below keeps, or every one when it will not run.
    // (An unreadable image list fails the prune below, as before, not the blob sweep.)
    let stacks = kept_stacks(&store);
    let prunes = !holds_stacks(&crate::store::lease::list(store.root()));
    let kept = stacks.as_ref().ok().filter(|_| prunes);
    roots.extend(crate::storage::device_blobs(
        store.root(),
        kept.map(Vec::as_slice),
    )?);
    let r = store.gc(&roots)?;
    for w in &r.warnings {
        errln!("warning: {w}");
    }
    outln!(
        "removed {} blobs and {} temporary files, freed {}",
        r.blobs_removed,
        r.temp_files_removed,
        human_size(r.bytes_freed)
    )?;
    // Unpacked layers that no image, cached build step or container needs any more, and
    // build-side caches; left alone while another keel runs (its lease holds a layer
    // stack, and a build may be using a download or a cache mount).
    let leases = crate::store::lease::list(store.root());
    let others = |l: &crate::store::lease::LeaseRecord| {
        l.is_live()
            && l.owner
                .is_some_and(|o| i64::from(o.pid) != i64::from(std::process::id()))
    };
    if !leases.iter().any(|(_, l)| others(l)) {
        prune_build_caches(store.root(), keep, a.cache)?;
    }
    if !holds_stacks(&leases) {
        prune_unpacked_layers(&store, &stacks?)?;
    }
    Ok(0)
}

/// Whether a live keel holds a layer stack (then no unpacked layer is pruned).
fn holds_stacks(leases: &[(std::path::PathBuf, crate::store::lease::LeaseRecord)]) -> bool {
    leases
        .iter()
        .any(|(_, l)| l.is_live() && !l.stacks.is_empty())
}

/// The layer stacks whose unpacked layers stay: every image's and every cached build
/// step's.
fn kept_stacks(store: &crate::store::Store) -> Result<Vec<Vec<crate::digest::Digest>>> {
    let mut stacks: Vec<Vec<crate::digest::Digest>> = Vec::new();
    for img in store.images()? {
        stacks.push(
            img.config
                .rootfs()
                .diff_ids()
                .iter()
                .filter_map(|d| crate::digest::parse(d))
                .collect(),
        );
    }
    stacks.extend(crate::build::cache::BuildCache::new(store.root()).layer_stacks());
    Ok(stacks)
}

/// Reclaims what killed keels left and says what it found.
fn reclaim_killed(store: &crate::store::Store) -> Result<()> {
    let left = crate::reclaim::reclaim(store)?;
    for w in &left.warnings {
        errln!("warning: {w}");
    }
    if !left.is_empty() {
        outln!(
            "reclaimed from killed keels: {} leases, {} containers ({} stopped), {} snapshots, {} processes, {} mounts, {} temporary files",
            left.leases, left.containers, left.stopped, left.snapshots, left.processes, left.mounts, left.temp
        )?;
    }
    Ok(())
}

/// Unpacked layers and merged trees that none of `stacks` (`kept_stacks`) stacks on.
fn prune_unpacked_layers(
    store: &crate::store::Store,
    stacks: &[Vec<crate::digest::Digest>],
) -> Result<()> {
    let p = crate::storage::prune_cache(store.root(), stacks)?;
    if p.layers + p.chains + p.temp > 0 {
        outln!(
            "removed {} unpacked layers, {} merged trees and {} stale temporary directories",
            p.layers,
            p.chains,
            p.temp
        )?;
    }
    Ok(())
}

/// Remote-ADD downloads unused for `keep`, and with `--cache` every RUN cache mount
/// (`docker builder prune --all` drops those too).
fn prune_build_caches(root: &std::path::Path, keep: std::time::Duration, all: bool) -> Result<()> {
    let remote = crate::build::remote::prune(&crate::build::remote::cache_dir(root), keep);
    let mut mounts = 0;
    if all {
        let dir = crate::build::cache::BuildCache::new(root).mounts_dir();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            match is_dir {
                true => crate::sys::hostfs::remove_dir_all(&p),
                false => crate::sys::hostfs::remove_file(&p), // its `.lock`
            }
            .map_err(|e| anyhow::anyhow!("removing cache mount {}: {e}", p.display()))?;
            mounts += usize::from(is_dir);
        }
    }
    if remote.files + mounts > 0 {
        outln!(
            "removed {} remote ADD downloads ({}) and {mounts} RUN cache mounts",
            remote.files,
            human_size(remote.bytes)
        )?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Also decompress every compressed layer to check its diff_id, and unpack every
    /// cached layer again to compare it file by file (slow; reads everything).
    #[arg(long, visible_alias = "deep")]
    full: bool,
}

/// Every image's layer stack with its blob files (bottom first): tagged images, the
/// images of containers, and the build cache's stacks (whose layers are stored
/// uncompressed, so the blob of a diff_id is the blob of that digest).
fn layer_stacks(store: &crate::store::Store) -> Result<Vec<Vec<crate::storage::LayerBlob>>> {
    use crate::storage::LayerBlob;
    // Images that cannot be read are skipped here: the store half of fsck names them.
    let mut manifests: Vec<crate::digest::Digest> = store
        .read_index()?
        .manifests()
        .iter()
        .map(|d| d.digest().clone())
        .collect();
    manifests.extend(store.container_images().into_iter().map(|(_, d)| d));
    let records = manifests.into_iter().filter_map(|d| {
        let desc =
            oci_spec::image::Descriptor::new(oci_spec::image::MediaType::ImageManifest, 0, d);
        store.load_record(desc, Vec::new()).ok()
    });
    let mut stacks = Vec::new();
    for r in records {
        let stack = r
            .manifest
            .layers()
            .iter()
            .zip(r.config.rootfs().diff_ids())
            .filter_map(|(l, d)| {
                Some(LayerBlob {
                    diff_id: crate::digest::parse(d)?,
                    blob: store.blob_path(l.digest()),
                })
            })
            .collect();
        stacks.push(stack);
    }
    for ids in crate::build::cache::BuildCache::new(store.root()).layer_stacks() {
        let stack: Vec<LayerBlob> = ids
            .into_iter()
            .map(|d| LayerBlob {
                blob: store.blob_path(&d),
                diff_id: d,
            })
            .collect();
        if stack.iter().all(|l| l.blob.is_file()) {
            stacks.push(stack);
        }
    }
    Ok(stacks)
}

pub fn fsck(a: FsckArgs, ctx: &Ctx) -> Result<i32> {
    let store = ctx.store()?;
    let mut r = store.fsck(a.full)?;
    let stacks = layer_stacks(&store)?;
    r.problems.extend(crate::storage::verify::check(
        store.root(),
        &stacks,
        a.full,
    )?);
    for p in &r.problems {
        outln!("{p}")?;
    }
    if r.stray_temp_files > 0 {
        ctx.reporter.note(format!(
            "{} stray temporary files from interrupted writes (harmless; `keel gc` removes them)",
            r.stray_temp_files
        ));
    }
    if r.problems.is_empty() {
        outln!(
            "ok: {} blobs and {} images checked",
            r.blobs_checked,
            r.images_checked
        )?;
        Ok(0)
    } else {
        errln!(
            "keel: fsck found {} problem(s) in {}",
            r.problems.len(),
            store.root().display()
        );
        Ok(1)
    }
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

/// Each isolation backend and whether it works here (with the reason when not).
fn backends() -> Vec<(&'static str, Result<(), String>)> {
    ["namespaces", "chroot", "oci"]
        .into_iter()
        .map(|name| {
            let b = crate::runtime::backend(name, None).expect("a known backend");
            (name, b.available().map_err(|e| e.to_string()))
        })
        .collect()
}

fn cgroups() -> String {
    let l = crate::runtime::cgroup_layout();
    match l.kind() {
        "hybrid" => format!(
            "hybrid (v1 controllers: {}; v2 controllers: {})",
            l.v1.keys().cloned().collect::<Vec<_>>().join(" "),
            if l.v2_controllers.is_empty() {
                "none".into()
            } else {
                l.v2_controllers.join(" ")
            }
        ),
        "v1" => format!(
            "v1 ({})",
            l.v1.keys().cloned().collect::<Vec<_>>().join(" ")
        ),
        "v2" => format!("v2 ({})", l.v2_controllers.join(" ")),
        other => other.to_string(),
    }
}

/// The platforms this host runs, natively or through a qemu emulator in binfmt_misc.
fn platforms_json() -> Vec<serde_json::Value> {
    crate::platform::runnable()
        .into_iter()
        .map(|(p, how)| match how {
            crate::platform::Runs::Native => {
                serde_json::json!({"platform": p.to_string(), "native": true})
            }
            crate::platform::Runs::Emulated { interpreter } => serde_json::json!({
                "platform": p.to_string(), "native": false, "emulator": interpreter,
            }),
        })
        .collect()
}

/// `keel info`'s rootless line: whether keel runs in a user namespace and what it maps.
fn rootless_text() -> String {
    if !crate::sys::userns::rootless() {
        return "no (real root)".into();
    }
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let lines: Vec<&str> = map.lines().collect();
    let ids: u64 = lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum();
    let host = crate::sys::userns::host_uid();
    match ids {
        0 | 1 => format!("yes: uid 0 is host uid {host}, no subordinate ids (add a range to /etc/subuid and /etc/subgid; docs/rootless.md)"),
        n => format!("yes: uid 0 is host uid {host}, {} subordinate ids mapped", n - 1),
    }
}

/// `keel info`'s platform lines: native ones, then emulated ones with their emulator.
fn print_platforms() -> Result<()> {
    for (p, how) in crate::platform::runnable() {
        match how {
            crate::platform::Runs::Native => outln!("platform:      {p} (native)")?,
            crate::platform::Runs::Emulated { interpreter } => {
                outln!("platform:      {p} (emulated: {interpreter})")?
            }
        }
    }
    Ok(())
}

/// `keel info`'s storage line: the driver a container would get here (`default`, what
/// `storage::open` picks), and why.
fn storage_text(default: &str, found: &[crate::storage::DriverSupport]) -> String {
    let overlay = found.iter().find(|d| d.name == "overlay");
    match (default, overlay) {
        ("btrfs", _) => "btrfs (the root is on btrfs)".into(),
        ("overlay", _) if crate::sys::userns::rootless() => {
            "overlay (mounted inside the user namespace with userxattr)".into()
        }
        ("overlay", _) => "overlay".into(),
        ("copy", Some(o)) if !o.available => {
            format!("copy (overlay is unavailable: {})", o.detail)
        }
        (other, _) => other.into(),
    }
}

pub fn info(a: InfoArgs, ctx: &Ctx) -> Result<i32> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    // The driver `keel run`/`build` pick without --storage-driver, and what each needs.
    // Probing writes under the root: open the store first, so a new root is made private
    // as the store makes it (best effort: info still reports the rest without one).
    let _ = crate::store::Store::open(&ctx.root);
    let drivers = crate::storage::detect(&ctx.root);
    let default = crate::storage::open(None, &ctx.root)
        .map(|d| d.name())
        .unwrap_or("none");
    let info = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "root": ctx.root.display().to_string(),
        "kernel": kernel,
        "arch": std::env::consts::ARCH,
        "cgroups": cgroups(),
        "platforms": platforms_json(),
        "rootless": rootless_text(),
        "storage": storage_text(default, &drivers),
        "storage_drivers": drivers.iter().map(|d| (d.name.to_string(), serde_json::json!({"available": d.available, "why": (!d.available).then_some(&d.detail)}))).collect::<serde_json::Map<_, _>>(),
        "isolation": backends().into_iter().map(|(n, r)| (n.to_string(), serde_json::json!({"available": r.is_ok(), "why": r.err()}))).collect::<serde_json::Map<_, _>>(),
    });
    if a.format == "json" {
        outln!("{}", serde_json::to_string_pretty(&info)?)?;
    } else {
        outln!("keel version:  {}", env!("CARGO_PKG_VERSION"))?;
        outln!("root:          {}", ctx.root.display())?;
        outln!("kernel:        {kernel} ({})", std::env::consts::ARCH)?;
        outln!("cgroups:       {}", cgroups())?;
        print_platforms()?;
        outln!("rootless:      {}", rootless_text())?;
        outln!("storage:       {}", storage_text(default, &drivers))?;
        for d in &drivers {
            match d.available {
                true => outln!("drivers:       {}: available", d.name)?,
                false => outln!("drivers:       {}: unavailable ({})", d.name, d.detail)?,
            }
        }
        for (name, r) in backends() {
            match r {
                Ok(()) => outln!("isolation:     {name}: available")?,
                Err(why) => outln!("isolation:     {name}: unavailable ({why})")?,
            }
        }
    }
    Ok(0)
}
