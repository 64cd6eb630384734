//! Named fault points: places where the fault suite (tests/security/faults.rs) makes keel
//! SIGKILL itself, to prove that a keel killed there leaves a consistent store and that
//! `keel gc` reclaims what it left. Always compiled in; inactive unless the hidden
//! environment variable `KEEL_FAULT_POINT` names a point, so the cost when off is one
//! cached lookup.
//!
//! `KEEL_FAULT_POINT=NAME` kills at the first time NAME is reached; `NAME#N` at the N-th.
//! With `KEEL_FAULT_LOG=FILE` the point's name is appended to FILE first, so a test can
//! tell which process of a pair (a `run -d` client and its supervisor) reached it.
//! Every point is listed in [`POINTS`]: the suite checks each one is reached.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Every fault point, in the order a command reaches them.
pub const POINTS: &[&str] = &[
    // A lease was written (any writing command).
    "lease.taken",
    // A file replaced by exchange (a lease, the stat index, last inputs) holds its new
    // content; the temp name, holding the old, is not removed yet.
    "hostfs.exchanged",
    // A blob is complete in its temp file, not yet protected or renamed into place.
    "store.blob-temp",
    // A file written through a temp name (`hostfs::persist`: a cache entry, a container
    // record, a push memo, a remote ADD download) is complete under it, not yet renamed.
    "hostfs.temp-written",
    // A blob was renamed into `blobs/`, before anything references it.
    "store.blob-stored",
    // A new index.json is written to its temp file, not yet renamed.
    "store.index-temp",
    // A layer is being unpacked into the storage cache (temp dir, not renamed).
    "storage.unpack-partial",
    // A RUN step's overlay was detached from the mount table while a handle held it (its
    // superblock is taken down on another thread), before its upper dir is moved.
    "storage.unmount-deferred",
    // A build step's overlay upper dir was moved into a temp layer-cache entry (to become
    // the committed layer's unpacked tree), not yet settled, marked or renamed.
    "storage.keep-layer-moved",
    // An incremental COPY took the previous layer's tree out of the cache (into a temp
    // entry) to patch it into the new layer's; nothing of it changed yet.
    "storage.reuse-taken",
    // A file kept beside a layer-cache entry (the layer's entry index, written behind the
    // build while its next step runs) is half-written.
    "storage.beside-partial",
    // An incremental COPY is writing its layer's tar from the previous layer's blob (an
    // unchanged file's content about to be taken from it) while patching the old tree.
    "build.copy-derived",
    // A COPY layer's chunked erofs image is complete in its temp cache entry; the blob its
    // files point into is still being written (the store's temp file).
    "layer.chunk-image-written",
    // A chunked cache entry recorded the stored blob it reads from (`device`), the entry
    // not yet marked or renamed into the cache.
    "storage.chunk-device-recorded",
    // A snapshot directory exists (metadata written), nothing mounted yet.
    "storage.snapshot-dir",
    // A snapshot's rootfs is mounted (overlay) or copied (copy driver).
    "storage.snapshot-mounted",
    // `keel build`: the base image was resolved and leased.
    "build.base-resolved",
    // A filesystem step's snapshot is ready, before COPY/RUN touches it.
    "build.step-snapshot",
    // A RUN step's container is running.
    "build.run-started",
    // A filesystem step's layer is committed, its snapshot not yet removed.
    "build.step-done",
    // The image config is stored; the manifest is not.
    "build.image-config",
    // The manifest is stored; no name points at it yet.
    "build.image-manifest",
    // `keel load`: every blob of the archive is stored, no name is set yet.
    "load.blobs-stored",
    // `keel save -o`: the archive is half-written to its temp file.
    "save.partial",
    // `keel import`: the layer is stored; config and manifest are not.
    "import.layer-stored",
    // `keel run -d`: the request file is written, no supervisor yet.
    "run.request-written",
    // A container record exists; its snapshot does not yet.
    "run.container-created",
    // The container's process runs; its record still says created.
    "run.container-started",
    // The container runs and its record says so (the supervisor reported back).
    "run.container-running",
    // `keel exec`: about to join the container.
    "exec.joining",
    // `keel rm`: the container's process was killed, its snapshot not yet removed.
    "rm.stopped",
    // `keel rm`: the snapshot is removed, the record is not.
    "rm.snapshot-removed",
    // `keel gc`: blobs are being swept.
    "gc.sweeping",
    // `keel pull`: the lease is taken, nothing fetched yet.
    "pull.started",
    // `keel pull`: the manifest to pull is fetched and verified, no blob stored yet.
    "pull.manifest-fetched",
    // `keel pull`: one blob (config or layer) is downloaded and stored.
    "pull.blob-stored",
    // `keel pull`: every layer is stored (unsynced) with its compressed digest verified
    // (diff_ids are checked at unpack, push and fsck), and the final sync pass
    // made them durable; the manifest is not stored.
    "pull.layers-synced",
    // `keel pull`: every blob is stored and verified; the manifest is not.
    "pull.blobs-stored",
    // `keel pull`: the manifest is stored; no name points at it yet.
    "pull.manifest-stored",
    // `keel push`: a blob's upload session is open on the registry, its bytes not sent
    // (a compressed layer is in its temp file under `tmp/`).
    "push.blob-uploading",
];

/// Named delay points: `KEEL_FAULT_DELAY=NAME=MS` makes keel sleep MS milliseconds at
/// NAME, so a regression test can make a race certain instead of hoping for it.
pub const DELAYS: &[&str] = &[
    // `keel run -p`: the container was started, its port proxy not yet (a container that
    // ends within the delay has exited before the proxy looks for its network namespace).
    "run.before-proxy",
    // `Store::tag`: the name's target was resolved; nothing is locked or written yet.
    "store.tag-resolved",
    // `keel bootstrap busybox` for another architecture: Debian's busybox-static is
    // downloaded into its temp directory in the cache, not yet unpacked or renamed.
    "bootstrap.downloaded",
    // `keel exec -t`: the container's terminal took keel's window size and is relayed;
    // the backend has not yet started forwarding signals to the process.
    "exec.terminal-sized",
];

/// Marks delay point `name`: sleeps when `KEEL_FAULT_DELAY` names it.
pub fn delay(name: &str) {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    debug_assert!(DELAYS.contains(&name), "delay point {name:?} is not listed");
    let armed = ARMED.get_or_init(|| {
        let v = std::env::var("KEEL_FAULT_DELAY").ok()?;
        let (point, ms) = v.split_once('=')?;
        Some((point.to_string(), ms.parse().ok()?))
    });
    if let Some((point, ms)) = armed {
        if point == name {
            std::thread::sleep(std::time::Duration::from_millis(*ms));
        }
    }
}

/// The armed point: its name, the text its hits must be at (`NAME@TEXT`), the hit.
type Armed = (String, Option<String>, usize);

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| parse_armed(&std::env::var("KEEL_FAULT_POINT").ok()?))
        .as_ref()
}

/// `NAME`, `NAME#N`, `NAME@TEXT` or `NAME@TEXT#N`.
fn parse_armed(v: &str) -> Option<Armed> {
    let (point, nth) = match v.rsplit_once('#') {
        Some((point, n)) => (point, n.parse().ok()?),
        None => (v, 1),
    };
    Some(match point.split_once('@') {
        Some((name, at)) => (name.to_string(), Some(at.to_string()), nth),
        None => (point.to_string(), None, nth),
    })
}

/// Marks fault point `name`: SIGKILLs this process when the fault suite armed it.
pub fn point(name: &str) {
    point_at(name, "");
}

/// [`point`] at a place named by `at` (a path a shared point is reached for): armed as
/// `NAME@TEXT`, only the hits whose `at` contains TEXT count, so a case can kill at the
/// stat index's replacement whatever else was replaced before it.
pub fn point_at(name: &str, at: &str) {
    static HITS: AtomicUsize = AtomicUsize::new(0);
    debug_assert!(POINTS.contains(&name), "fault point {name:?} is not listed");
    let Some((want, text, nth)) = armed() else {
        return;
    };
    if want != name || text.as_ref().is_some_and(|t| !at.contains(t.as_str())) {
        return;
    }
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 != *nth {
        return;
    }
    if let Some(log) = std::env::var_os("KEEL_FAULT_LOG") {
        use std::io::Write;
        if let Ok(mut f) = crate::sys::hostfs::open_with(
            std::fs::OpenOptions::new().create(true).append(true),
            log,
        ) {
            // The point as it was armed (`NAME` or `NAME@TEXT`).
            match text {
                Some(t) => writeln!(f, "{name}@{t}"),
                None => writeln!(f, "{name}"),
            }
            .ok();
        }
    }
    let _ = crate::sys::proc::kill(std::process::id() as i32, libc::SIGKILL);
    // SIGKILL cannot be caught; this is never reached.
    std::process::abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_point_may_name_the_place_and_the_hit() {
        let a = |v| parse_armed(v);
        assert_eq!(a("x.y"), Some(("x.y".into(), None, 1)));
        assert_eq!(a("x.y#3"), Some(("x.y".into(), None, 3)));
        assert_eq!(
            a("x.y@cache/last"),
            Some(("x.y".into(), Some("cache/last".into()), 1))
        );
        assert_eq!(a("x.y@a#b#2"), Some(("x.y".into(), Some("a#b".into()), 2)));
        assert_eq!(a("x.y#z"), None);
    }

    #[test]
    fn points_are_unique_and_named_area_dot_event() {
        let mut seen = std::collections::BTreeSet::new();
        for p in POINTS {
            assert!(seen.insert(p), "{p} listed twice");
            let (area, event) = p.split_once('.').expect("area.event");
            assert!(!area.is_empty() && !event.is_empty(), "{p}");
        }
    }
}
