//! Attacker-side tests: faults. keel is SIGKILLed at named points (`KEEL_FAULT_POINT`,
//! src/fault.rs) during build (COPY, RUN, commit), load, save, import, `run -d`, exec and
//! rm; after each kill `keel gc` must return the host to its state before the command —
//! no mounts under the root, no snapshots, no leftover processes or cgroups, no temp
//! files, no leases — with `keel fsck` clean, and the same command must then succeed.
//! And `keel gc` in a loop must not break builds running beside it (issue 10 items 6, 11).
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use crate::common::{self, Keel};
use crate::regserver::{Auth, Registry};

/// Put in the command line and the environment of every process a case starts in a
/// container (every child inherits the environment: a `sleep` started by `sh -c` has the
/// mark in nothing else), so a leftover one is found through `/proc`. Unique per root,
/// as the areas run in parallel.
fn mark(k: &Keel) -> String {
    let name = k.dir.path().file_name().unwrap().to_string_lossy();
    format!("keelfaultmark{}", name.trim_start_matches("keel-test-"))
}

fn env_mark(k: &Keel) -> String {
    format!("KEEL_FAULT_MARK={}", mark(k))
}

/// One kill: the command, the point, and which hit of the point (1 = first).
struct Case {
    area: &'static str,
    point: &'static str,
    hit: usize,
}

const fn c(area: &'static str, point: &'static str, hit: usize) -> Case {
    Case { area, point, hit }
}

/// Every kill the suite makes. `build` runs `FROM bb / COPY / RUN` with --no-cache, so its
/// blob points hit for the COPY layer (1), the RUN layer (2) and the config (3).
const CASES: &[Case] = &[
    c("build", "lease.taken", 1),
    // The lease rewritten by exchange, its old record still under the temp name.
    c("build", "hostfs.exchanged", 1),
    c("build", "build.base-resolved", 1),
    c("build", "storage.unpack-partial", 1),
    c("build", "storage.snapshot-dir", 1),
    c("build", "storage.snapshot-mounted", 1),
    c("build", "build.step-snapshot", 1),
    c("build", "store.blob-temp", 1),
    c("build", "store.blob-stored", 1),
    c("build", "build.step-done", 1),
    c("build", "storage.snapshot-mounted", 2),
    c("build", "build.step-snapshot", 2),
    c("build", "build.run-started", 1),
    c("build", "store.blob-temp", 2),
    c("build", "store.blob-stored", 2),
    c("build", "storage.unmount-deferred", 1),
    c("build", "storage.keep-layer-moved", 1),
    c("build", "build.step-done", 2),
    c("build", "store.blob-stored", 3),
    c("build", "build.image-config", 1),
    c("build", "build.image-manifest", 1),
    c("build", "store.index-temp", 1),
    // A rebuild after the context file changed, with the tree cache (KEEL_LAYER_FORMAT=tree):
    // the COPY patches its last layer's tree.
    c("build-incremental", "storage.reuse-taken", 1),
    c("build-incremental", "build.copy-derived", 1),
    c("build-incremental", "store.blob-stored", 1),
    // The patched tree's entry index, half-written behind the build (the RUN running).
    c("build-incremental", "storage.beside-partial", 1),
    // The step's last inputs (3) and the stat index (7) exchanged, the old content still
    // under the temp name beside them (session 8: nothing swept those names).
    c("build-replace", "hostfs.exchanged@cache/last", 1),
    c("build-replace", "hostfs.exchanged@cache/stat", 1),
    // The same rebuild with the default chunked cache: the new blob derived from the old
    // one (mid-way), the new image complete with its blob still a temp file, the blob
    // stored, the entry's device recorded, and the entry complete but not placed.
    c("build-chunk-incremental", "build.copy-derived", 1),
    c("build-chunk-incremental", "layer.chunk-image-written", 1),
    c("build-chunk-incremental", "store.blob-stored", 1),
    c(
        "build-chunk-incremental",
        "storage.chunk-device-recorded",
        1,
    ),
    c("build-chunk-incremental", "storage.unpack-partial", 1),
    c("build-chunk-incremental", "storage.beside-partial", 1),
    // The COPY layer kept as a chunked erofs image over its blob (KEEL_LAYER_FORMAT=chunk,
    // the default): killed once its image is written, before the entry is placed, after
    // the blob is, and with the RUN step's snapshot mounted over the image and its blob.
    c("build-chunk", "layer.chunk-image-written", 1),
    c("build-chunk", "storage.chunk-device-recorded", 1),
    c("build-chunk", "storage.unpack-partial", 1),
    c("build-chunk", "store.blob-stored", 1),
    c("build-chunk", "storage.snapshot-mounted", 2),
    // The cold build with the tree cache (KEEL_LAYER_FORMAT=tree): killed mid-unpack.
    c("build-tree", "storage.unpack-partial", 1),
    c("build-copy", "storage.unpack-partial", 1),
    c("build-copy", "storage.snapshot-mounted", 2),
    c("build-copy", "build.run-started", 1),
    c("build-chroot", "build.run-started", 1),
    c("load", "lease.taken", 1),
    c("load", "store.blob-temp", 1),
    c("load", "store.blob-stored", 2),
    c("load", "load.blobs-stored", 1),
    c("load", "store.index-temp", 1),
    c("save", "lease.taken", 1),
    c("save", "save.partial", 1),
    c("import", "store.blob-temp", 1),
    c("import", "import.layer-stored", 1),
    c("import", "store.blob-stored", 2),
    c("import", "store.index-temp", 1),
    c("run-d", "run.request-written", 1),
    c("run-d", "run.container-created", 1),
    c("run-d", "storage.snapshot-dir", 1),
    c("run-d", "storage.snapshot-mounted", 1),
    c("run-d", "run.container-started", 1),
    c("run-d", "run.container-running", 1),
    c("run-d-oci", "run.container-started", 1),
    c("run-d-limits", "run.container-started", 1),
    c("run-d-chroot", "run.container-started", 1),
    c("run-d-chroot", "run.container-running", 1),
    c("run-rm", "run.container-running", 1),
    c("exec", "exec.joining", 1),
    c("rm", "lease.taken", 1),
    c("rm", "rm.stopped", 1),
    c("rm", "rm.snapshot-removed", 1),
    c("gc", "gc.sweeping", 1),
    // `keel pull` of a one-layer image: blob hits are the config (1), the layer (2) and
    // the manifest (3).
    c("pull", "lease.taken", 1),
    c("pull", "pull.started", 1),
    c("pull", "pull.manifest-fetched", 1),
    c("pull", "store.blob-temp", 1),
    c("pull", "store.blob-stored", 1),
    c("pull", "pull.blob-stored", 1),
    c("pull", "store.blob-temp", 2),
    c("pull", "store.blob-stored", 2),
    c("pull", "pull.blob-stored", 2),
    c("pull", "pull.layers-synced", 1),
    c("pull", "pull.blobs-stored", 1),
    c("pull", "store.blob-temp", 3),
    c("pull", "store.blob-stored", 3),
    c("pull", "pull.manifest-stored", 1),
    c("pull", "store.index-temp", 1),
    // `keel push` (gzip) of the one-layer image: the layer (1, compressed into `tmp/`
    // first) and the config (2).
    c("push", "push.blob-uploading", 1),
    c("push", "push.blob-uploading", 2),
    // The memo of the layer's gzip digest is in its temp file (session 9: named with a
    // bare pid, it was kept for a day whenever another process had taken that pid).
    c("push", "hostfs.temp-written@cache/registry/", 1),
];

/// Whether the suite can run here; under CI a missing root is a failure, not a skip.
fn need_root() -> bool {
    if common::is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the fault suite needs root (mounts, namespaces) under CI"
    );
    eprintln!("SKIP faults: needs root");
    false
}

/// A root with `bb` (busybox) and a build context.
fn setup() -> Keel {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a.txt"), "from the context\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM bb\nENV {}\nCOPY a.txt /a.txt\nRUN echo {} >/dev/null; sleep 0.3; cat /a.txt > /b.txt\n",
            env_mark(&k),
            mark(&k)),
    )
    .unwrap();
    k
}

/// The arguments of the command a case kills, after whatever it needs was prepared.
fn prepare(k: &Keel, area: &str, reg: Option<&Registry>) -> Vec<String> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let ctx = k.path("ctx").display().to_string();
    // `build FLAGS -t out CTX`
    let build = |flags: &[&str]| {
        let mut v = s(&["build"]);
        v.extend(s(flags));
        v.extend(s(&["-t", "out", &ctx]));
        v
    };
    // The container's command sleeps and carries the mark (its processes are found by it).
    let sleeper = sleeper(k);
    let run = |flags: &[&str]| run_sleeper(k, flags);
    match area {
        "build" => build(&["--no-cache"]),
        // `build-replace`: the same rebuild, killed as it replaces the build cache's files.
        "build-incremental" | "build-chunk-incremental" | "build-replace" => {
            let ctx_dir = k.path("ctx");
            // `build-replace` waits out the racy window after each edit, so both builds
            // write the stat index (keel writes none that would trust nothing new) and the
            // rebuild replaces it.
            let settle = || {
                if area == "build-replace" {
                    std::thread::sleep(std::time::Duration::from_millis(2100));
                }
            };
            std::fs::write(ctx_dir.join("a.txt"), "an older version\n").unwrap();
            settle();
            let mut first = k.cmd();
            first.args(["build", "-t", "out", &ctx]);
            if let Some(format) = layer_format(area) {
                first.env("KEEL_LAYER_FORMAT", format);
            }
            common::assert_success(&first.output().unwrap(), "the first build");
            std::fs::write(ctx_dir.join("a.txt"), "from the context\n").unwrap();
            settle();
            s(&["build", "-t", "out", &ctx])
        }
        "build-copy" => build(&["--no-cache", "--storage-driver", "copy"]),
        "build-chunk" | "build-tree" => build(&["--no-cache", "--storage-driver", "overlay"]),
        // No PID namespace: the RUN shell's `sleep` outlives a killed keel. The copy
        // driver, because a chroot RUN on an overlay snapshot fails today: the chroot
        // backend's cleanup unmounts the overlay before the step is committed.
        "build-chroot" => build(&[
            "--no-cache",
            "--isolation",
            "chroot",
            "--storage-driver",
            "copy",
        ]),
        "load" => {
            let tar = k.path("bb.tar").display().to_string();
            k.ok(&["save", "-o", &tar, "bb"]);
            k.ok(&["rmi", "bb"]);
            k.ok(&["gc"]);
            s(&["load", "-i", &tar])
        }
        "save" => {
            std::fs::create_dir_all(k.path("out")).unwrap();
            s(&[
                "save",
                "-o",
                &k.path("out/bb.tar").display().to_string(),
                "bb",
            ])
        }
        "import" => {
            let tar = k.path("rootfs.tar");
            let dir = k.path("rootfs");
            common::busybox_rootfs(&dir);
            common::run_ok(
                Command::new("tar")
                    .arg("-C")
                    .arg(&dir)
                    .arg("-cf")
                    .arg(&tar)
                    .arg("."),
            );
            s(&["import", &tar.display().to_string(), "imp"])
        }
        "run-d" => run(&["-d"]),
        "run-d-oci" => run(&["-d", "--isolation", "oci"]),
        // Limits put the container in `keel/<id>` cgroups, which gc must remove.
        "run-d-limits" => run(&["-d", "--pids-limit", "50", "--memory", "64m"]),
        // chroot mounts /proc, /dev, … inside the rootfs itself.
        "run-d-chroot" => run(&["-d", "--isolation", "chroot"]),
        // In the foreground keel is the supervisor; `--rm` must still remove it.
        "run-rm" => run(&["--rm"]),
        "exec" | "rm" => {
            k.ok(&["run", "-d", "--name", "c1", "bb", "sh", "-c", &sleeper]);
            if area == "exec" {
                s(&["exec", "c1", "sh", "-c", &sleeper])
            } else {
                s(&["rm", "-f", "c1"])
            }
        }
        "gc" => {
            k.ok(&["rmi", "bb"]);
            s(&["gc"])
        }
        // The image is pushed, then removed from the root: the pull fetches every blob.
        "pull" => {
            let name = format!("{}/faults/bb:1", reg.expect("a registry").host());
            k.ok(&["push", "bb", &name]);
            k.ok(&["rmi", "bb"]);
            k.ok(&["gc"]);
            s(&["pull", &name])
        }
        "push" => {
            let name = format!("{}/faults/bb:1", reg.expect("a registry").host());
            s(&["push", "--compression-format", "gzip", "bb", &name])
        }
        other => panic!("unknown area {other}"),
    }
}

/// `keel build FLAGS CTX` started in the background, its output collected.
fn spawn_build(k: &Keel, flags: &[&str], ctx: &Path) -> std::process::Child {
    k.cmd()
        .arg("build")
        .args(flags)
        .arg(ctx)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// What a keel may leave on the host, as far as this root is concerned.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    mounts: Vec<String>,
    snapshots: Vec<String>,
    temp: Vec<String>,
    leases: Vec<String>,
    processes: Vec<String>,
    cgroups: Vec<String>,
    oci_bundles: Vec<String>,
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Container and snapshot ids seen under the root (to find their cgroups and bundles).
fn ids_under(root: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for n in names(&root.join("containers"))
        .into_iter()
        .chain(names(&root.join("storage/snapshots")))
    {
        let n = n
            .trim_start_matches(".new-")
            .trim_start_matches(".rm-")
            .trim_start_matches(".request-");
        let n = n.trim_end_matches(".json");
        // `.new-<owner tag>-<id>` staging directories of snapshots.
        let id = match n.split_once('-') {
            Some((tag, rest)) if tag.starts_with('p') && tag.contains('s') => rest,
            _ => n,
        };
        ids.insert(id.to_string());
    }
    ids
}

/// This root's processes (by the mark in their environment or command line) that are
/// still there after up to two seconds: a child a build left closing its RUN step's
/// detached overlay (`sys::proc::close_in_child`) ends on its own within milliseconds
/// and is not a leak; a leaked process stays.
fn marked_processes(k: &Keel, root: &Path) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let found = scan_marked_processes(k, root);
        if found.is_empty() || std::time::Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn scan_marked_processes(k: &Keel, root: &Path) -> Vec<String> {
    let mut processes = Vec::new();
    for pid in names(Path::new("/proc"))
        .into_iter()
        .filter(|n| n.parse::<u32>().is_ok())
    {
        if pid == std::process::id().to_string() {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let marked = String::from_utf8_lossy(&env).contains(&env_mark(k));
        if marked || cmd.contains(&mark(k)) || cmd.contains(&*root.to_string_lossy()) {
            processes.push(format!("{pid}: {cmd}"));
        }
    }
    processes
}

fn host_state(k: &Keel, ids: &BTreeSet<String>) -> HostState {
    let root = k.root();
    // A `run --rm` that ended hands its snapshot's files to a child that removes them
    // (`.rm-*`); a removal that never ends shows up below as a snapshot left.
    let _ = crate::common::wait_removals(&root);
    let real = std::fs::canonicalize(&root).unwrap_or(root.clone());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&*real.to_string_lossy()))
        .map(str::to_string)
        .collect();
    let mut temp = Vec::new();
    for d in ["tmp", "storage/tmp"] {
        temp.extend(names(&root.join(d)).into_iter().map(|n| format!("{d}/{n}")));
    }
    temp.extend(
        names(&root.join("images"))
            .into_iter()
            .filter(|n| n.starts_with(".tmp")),
    );
    temp.extend(
        names(&root.join("containers"))
            .into_iter()
            .filter(|n| n.starts_with('.') && n != ".lock"),
    );
    temp.extend(
        names(&k.path("out"))
            .into_iter()
            .filter(|n| n.starts_with(".keel-save")),
    );
    // Temp names beside files keel replaces (`.<name>.<writer>.tmp`, `.tmpXXXXXX`).
    temp.extend(beside_temps(&root));
    let processes = marked_processes(k, &root);
    let mut cgroups = Vec::new();
    for hierarchy in names(Path::new("/sys/fs/cgroup")) {
        let base = Path::new("/sys/fs/cgroup").join(&hierarchy);
        let keel = if hierarchy == "keel" {
            base
        } else {
            base.join("keel")
        };
        for id in ids {
            if keel.join(id).is_dir() {
                cgroups.push(keel.join(id).display().to_string());
            }
        }
    }
    let oci_bundles = ids
        .iter()
        .map(|id| std::env::temp_dir().join(format!("keel-oci-{id}")))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    HostState {
        mounts,
        snapshots: names(&root.join("storage/snapshots")),
        temp,
        leases: names(&root.join("leases")),
        processes,
        cgroups,
        oci_bundles,
    }
}

/// Temp names left beside the build cache's files (dot-names: the cache's own files have
/// none), as `dir/name`.
fn beside_temps(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for d in [
        "cache/stat",
        "cache/last",
        "cache/steps",
        "cache/stamps",
        "cache/registry/gzip",
        "cache/registry/zstd",
        "cache/registry/verified",
    ] {
        out.extend(
            names(&root.join(d))
                .into_iter()
                .filter(|n| n.starts_with('.'))
                .map(|n| format!("{d}/{n}")),
        );
    }
    out
}

/// The kills whose point is a shared one (`hostfs.exchanged`) check that they hit the
/// file they are meant to: the temp name is beside it when keel dies.
fn left_before_gc(k: &Keel, case: &Case, what: &str) {
    let dir = match (case.area, case.point, case.hit) {
        ("build-replace", "hostfs.exchanged@cache/last", 1) => "cache/last",
        ("build-replace", "hostfs.exchanged@cache/stat", 1) => "cache/stat",
        _ => return,
    };
    let left = beside_temps(&k.root());
    assert!(
        left.iter().any(|t| t.starts_with(dir)),
        "{what}: no temp name was left in {dir} (the hit count moved?): {left:?}"
    );
}

/// `keel __supervise` processes of this root.
fn supervisors(k: &Keel) -> usize {
    let root = k.root().display().to_string();
    names(Path::new("/proc"))
        .into_iter()
        .filter(|n| n.parse::<u32>().is_ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(&root) && cmd.contains("__supervise")
        })
        .count()
}

fn clean_state() -> HostState {
    HostState {
        mounts: vec![],
        snapshots: vec![],
        temp: vec![],
        leases: vec![],
        processes: vec![],
        cgroups: vec![],
        oci_bundles: vec![],
    }
}

fn fsck_clean(k: &Keel, what: &str) {
    let out = k.cmd().arg("fsck").output().unwrap();
    assert!(
        out.status.success(),
        "{what}: fsck after gc is not clean:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The layer cache format an area's builds ask for: the tree cache where the area is
/// about its tree (the patched tree of an incremental COPY), else the default (chunked
/// COPY layers as root, when the kernel mounts them).
fn layer_format(area: &str) -> Option<&'static str> {
    match area {
        "build-incremental" | "build-tree" => Some("tree"),
        "build-chunk" | "build-chunk-incremental" => Some("chunk"),
        _ => None,
    }
}

/// Runs one case: kill, gc, check the host, re-run.
fn run_case(case: &Case) {
    let what = format!("{} killed at {}#{}", case.area, case.point, case.hit);
    let k = setup();
    let reg = matches!(case.area, "pull" | "push").then(|| Registry::start(false, Auth::None));
    let args = prepare(&k, case.area, reg.as_ref());
    let log = k.path("fault.log");
    let mut cmd = k.cmd();
    if let Some(format) = layer_format(case.area) {
        cmd.env("KEEL_LAYER_FORMAT", format);
    }
    let out = cmd
        .args(&args)
        .env("KEEL_FAULT_POINT", format!("{}#{}", case.point, case.hit))
        .env("KEEL_FAULT_LOG", &log)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    // A `run -d` supervisor may reach its point just after the client returned.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut reached = String::new();
    while std::time::Instant::now() < deadline {
        reached = std::fs::read_to_string(&log).unwrap_or_default();
        if reached.lines().any(|l| l == case.point) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        reached.lines().any(|l| l == case.point),
        "{what}: the point was never reached (status {}, stderr {})",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    if case.area.starts_with("run-d") {
        // The supervisor logged its point and is being killed: let it be gone first.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while supervisors(&k) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    if out.status.signal() != Some(9) {
        // The point was reached in a child (the `run -d` supervisor): the command itself
        // must not claim a success it cannot have, unless the child died after reporting.
        assert!(
            !out.status.success() || case.point == "run.container-running",
            "{what}: keel {args:?} succeeded"
        );
    }
    let ids = ids_under(&k.root());
    left_before_gc(&k, case, &what);
    k.ok(&["gc"]);
    after_gc(&k, case, &what, &ids);
    fsck_clean(&k, &what);
    let state = host_state(&k, &ids);
    assert_eq!(
        state,
        clean_state(),
        "{what}: gc did not return the host to its state before"
    );
    rerun(&k, case, &args, &what);
}

/// Containers a case leaves on purpose (still running, or exited because their
/// supervisor died after `run -d` had returned) are checked, then removed.
fn after_gc(k: &Keel, case: &Case, what: &str, ids: &BTreeSet<String>) {
    let ps = k.ok(&["ps", "-a", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_str(&ps).unwrap();
    let list = list.as_array().unwrap();
    match (case.area, case.point) {
        // Killed before it did anything (exec before joining, rm before its lease named
        // the container): the container is untouched.
        ("exec", _) | ("rm", "lease.taken") => {
            assert_eq!(list.len(), 1, "{what}: {ps}");
            assert_eq!(
                list[0]["status"], "running",
                "{what}: the container must survive: {ps}"
            );
            k.ok(&["rm", "-f", "c1"]);
        }
        ("run-d" | "run-d-chroot", "run.container-running") => {
            assert_eq!(list.len(), 1, "{what}: {ps}");
            assert_eq!(list[0]["status"], "exited", "{what}: {ps}");
            let st = host_state(k, ids);
            assert!(
                st.processes.is_empty(),
                "{what}: gc left processes: {:?}",
                st.processes
            );
            k.ok(&["rm", "c1"]);
        }
        _ => assert!(list.is_empty(), "{what}: gc left containers: {ps}"),
    }
}

/// A command that sleeps and carries the mark.
fn sleeper(k: &Keel) -> String {
    format!("sleep 1000; echo {}", mark(k))
}

/// `run FLAGS -e MARK --name c1 bb sh -c SLEEPER`: a container whose command sleeps and
/// carries the mark (its processes are found by it).
fn run_sleeper(k: &Keel, flags: &[&str]) -> Vec<String> {
    let sleeper = sleeper(k);
    let mark_env = env_mark(k);
    let tail = ["-e", &mark_env, "--name", "c1", "bb", "sh", "-c", &sleeper];
    ["run"]
        .iter()
        .chain(flags)
        .chain(&tail)
        .map(|x| x.to_string())
        .collect()
}

/// The same command succeeds after the cleanup (and a built image runs).
fn rerun(k: &Keel, case: &Case, args: &[String], what: &str) {
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    if case.area == "run-rm" {
        args = vec!["run", "--rm", "bb", "true"];
    }
    if matches!(case.area, "exec" | "rm") {
        // gc removed the container (or the test did): start it again.
        let again = run_sleeper(k, &["-d"]);
        k.ok(&again.iter().map(String::as_str).collect::<Vec<_>>());
        if case.area == "exec" {
            args = vec!["exec", "c1", "true"];
        }
    }
    let mut again = k.cmd();
    if let Some(format) = layer_format(case.area) {
        again.env("KEEL_LAYER_FORMAT", format);
    }
    let out = again
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    common::assert_success(&out, format!("{what}: then {args:?}"));
    match case.area {
        "build"
        | "build-incremental"
        | "build-replace"
        | "build-copy"
        | "build-chroot"
        | "build-chunk"
        | "build-chunk-incremental"
        | "build-tree" => {
            let o = k.ok(&["run", "--rm", "out", "cat", "/b.txt"]);
            assert_eq!(o, "from the context\n", "{what}");
        }
        "run-d" | "run-d-oci" | "run-d-limits" | "run-d-chroot" | "exec" => {
            k.ok(&["rm", "-f", "c1"]);
        }
        "pull" => {
            let o = k.ok(&["run", "--rm", args[1], "echo", "pulled"]);
            assert_eq!(o, "pulled\n", "{what}");
        }
        // What was pushed after the kill is whole: it comes back and runs.
        "push" => {
            let name = args.last().unwrap();
            k.ok(&["pull", name]);
            let o = k.ok(&["run", "--rm", name, "echo", "pushed"]);
            assert_eq!(o, "pushed\n", "{what}");
        }
        _ => {}
    }
    fsck_clean(k, &format!("{what}, after the re-run"));
    // `rm -f` of the re-run container must leave nothing running either (under chroot,
    // with no PID namespace, killing the container's first process orphaned the rest).
    let st = host_state(k, &ids_under(&k.root()));
    assert!(
        st.processes.is_empty(),
        "{what}: processes left after the re-run and rm -f: {:?}",
        st.processes
    );
}

fn run_area(areas: &[&str]) {
    if !need_root() {
        return;
    }
    for case in CASES.iter().filter(|c| areas.contains(&c.area)) {
        if case.area == "run-d-oci" && !common::have("runc") {
            crate::require!(false, "runc is not installed (apt-get install runc)");
        }
        run_case(case);
    }
}

/// Break (item 11): a keel SIGKILLed during a build left overlay mounts, snapshots and
/// temp files that nothing ever collected, and its RUN container could outlive it.
#[test]
fn sigkill_during_build_then_gc_leaves_the_host_as_before() {
    run_area(&[
        "build",
        "build-incremental",
        "build-tree",
        "build-copy",
        "build-chroot",
    ]);
}

/// Session 8 item 1: a rebuild killed between exchanging the stat index or a step's last
/// inputs with its temp file and removing the temp name (which holds the old content)
/// left `.<name>.<pid>.tmp` in `cache/stat` / `cache/last` for good: nothing swept it.
/// gc takes it now (its name carries the writer's pid and start time).
/// The chunked erofs layer cache: a kill while its entry is made or mounted leaves
/// nothing that `keel gc` does not take back, and `keel fsck` clean.
#[test]
fn sigkill_during_a_chunked_build_then_gc_leaves_the_host_as_before() {
    run_area(&["build-chunk", "build-chunk-incremental"]);
}

#[test]
fn sigkill_while_replacing_a_cache_file_then_gc_takes_its_temp_name() {
    run_area(&["build-replace"]);
}

/// Break (item 11): killed load, save and import left temp files (a `.keel-save-*` next
/// to the output) and unreferenced blobs; the store must stay consistent.
#[test]
fn sigkill_during_load_save_import_then_gc_leaves_the_host_as_before() {
    run_area(&["load", "save", "import", "gc"]);
}

/// Break (item 11): a killed `run -d`, exec or rm left an orphaned container process, a
/// runc container, its mounts and snapshot, and a half-removed record.
#[test]
fn sigkill_during_run_exec_rm_then_gc_leaves_the_host_as_before() {
    run_area(&[
        "run-d",
        "run-d-oci",
        "run-d-limits",
        "run-d-chroot",
        "run-rm",
        "exec",
        "rm",
    ]);
}

/// Issue 13: a keel SIGKILLed at any point of a pull leaves a store `keel fsck` passes,
/// gc takes what it left, and the next pull completes.
#[test]
fn sigkill_during_pull_then_gc_leaves_the_host_as_before() {
    if !crate::regserver::available() {
        return;
    }
    run_area(&["pull"]);
}

/// Session 8 item 4: a keel SIGKILLed mid-push (an upload session open, a compressed
/// layer in its temp file) leaves a store `keel fsck` passes, gc takes the temp file and
/// the lease, and the next push completes with an image that pulls back whole.
#[test]
fn sigkill_during_push_then_gc_leaves_the_host_as_before() {
    if !crate::regserver::available() {
        return;
    }
    run_area(&["push"]);
}

/// Every fault point keel lists is exercised by at least one case (each case asserts
/// its point was reached).
#[test]
fn every_listed_fault_point_has_a_case() {
    // A case armed at a place (`NAME@TEXT`) exercises point NAME.
    let covered: BTreeSet<&str> = CASES
        .iter()
        .map(|c| c.point.split('@').next().unwrap_or(c.point))
        .collect();
    let listed: BTreeSet<&str> = keel::fault::POINTS.iter().copied().collect();
    assert_eq!(
        listed.difference(&covered).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "listed fault points without a case"
    );
    assert!(
        CASES.len() >= 30,
        "the suite kills at {} points",
        CASES.len()
    );
}

/// Break (item 6): `keel gc` during a build deleted the build's temp files and fresh
/// blobs (10/10 builds failed). Eight parallel builds under a gc loop must all succeed,
/// every image must run, and fsck must be clean.
#[test]
fn gc_in_a_loop_beside_eight_parallel_builds_breaks_none() {
    if !need_root() {
        return;
    }
    let k = setup();
    let started = std::time::Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc_loop = {
        let (stop, cmd_root) = (stop.clone(), k.root());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let out = Command::new(env!("CARGO_BIN_EXE_keel"))
                    .arg("--root")
                    .arg(&cmd_root)
                    .args(["gc", "--cache"])
                    .output()
                    .unwrap();
                common::assert_success(&out, "keel gc --cache (in the loop)");
                runs += 1;
            }
            runs
        })
    };
    let builds: Vec<_> = (0..8)
        .map(|i| {
            let ctx = k.path(&format!("ctx{i}"));
            std::fs::create_dir_all(&ctx).unwrap();
            std::fs::write(ctx.join("f"), format!("file {i}\n")).unwrap();
            std::fs::write(
                ctx.join("Dockerfile"),
                format!("FROM bb\nCOPY f /f\nRUN cat /f > /g && echo step {i} >> /g\n"),
            )
            .unwrap();
            spawn_build(&k, &["-t", &format!("img{i}")], &ctx)
        })
        .collect();
    let outs: Vec<_> = builds
        .into_iter()
        .map(|b| b.wait_with_output().unwrap())
        .collect();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let gcs = gc_loop.join().unwrap();
    for (i, out) in outs.iter().enumerate() {
        common::assert_success(out, format!("build {i} beside {gcs} gc runs"));
    }
    assert!(gcs >= 2, "gc ran only {gcs} times beside the builds");
    for i in 0..8 {
        let o = k.ok(&["run", "--rm", &format!("img{i}"), "cat", "/g"]);
        assert_eq!(o, format!("file {i}\nstep {i}\n"));
    }
    fsck_clean(&k, "after the builds and gc loop");
    k.ok(&["gc"]);
    assert_eq!(host_state(&k, &BTreeSet::new()), clean_state());
    assert!(
        started.elapsed().as_secs() < 120,
        "took {:?}",
        started.elapsed()
    );
}

/// Break (item 6): removing the base image mid-build, then gc, gave rc 0 and an image
/// with a dangling reference. The build's lease holds the base's blobs: the build
/// completes with a consistent image.
#[test]
fn removing_the_base_mid_build_leaves_no_dangling_reference() {
    if !need_root() {
        return;
    }
    let k = setup();
    let ctx = k.path("slow");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb\nRUN sleep 2\nRUN echo done > /done\n",
    )
    .unwrap();
    let build = spawn_build(&k, &["--no-cache", "-t", "slow"], &ctx);
    // Wait until the build has its lease (and so the base) before removing the base.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while names(&k.root().join("storage/snapshots")).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the build never started a step"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    k.ok(&["rmi", "bb"]);
    k.ok(&["gc", "--cache"]);
    let out = build.wait_with_output().unwrap();
    common::assert_success(&out, "the build whose base was removed");
    fsck_clean(&k, "after removing the base mid-build");
    assert_eq!(k.ok(&["run", "--rm", "slow", "cat", "/done"]), "done\n");
    k.ok(&["gc"]);
    fsck_clean(&k, "after a gc once the build is done");
    assert_eq!(k.ok(&["run", "--rm", "slow", "cat", "/done"]), "done\n");
}

/// Start-up of the next keel reclaims what a killed one left (here a build killed with
/// its step's overlay mounted), without an explicit `keel gc`.
#[test]
fn the_next_keel_reclaims_what_a_killed_one_left() {
    if !need_root() {
        return;
    }
    let k = setup();
    let ctx = k.path("ctx").display().to_string();
    let out = k
        .cmd()
        .args(["build", "--no-cache", "-t", "out", &ctx])
        .env("KEEL_FAULT_POINT", "build.run-started")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "the build was not killed");
    let ids = ids_under(&k.root());
    assert!(
        !host_state(&k, &ids).snapshots.is_empty(),
        "the kill left no snapshot"
    );
    k.ok(&["images"]);
    let mut st = host_state(&k, &ids);
    // The store's own temp files are gc's business, not start-up's.
    st.temp.retain(|t| !t.starts_with("tmp/"));
    assert_eq!(st, clean_state(), "start-up did not reclaim");
}

/// Session 8 item 1: start-up reclaims a killed keel's temp names beside the build
/// cache's files too (here a rebuild killed as it replaced a step's last inputs), with
/// no `keel gc`.
#[test]
fn the_next_keel_takes_the_temp_name_a_killed_rebuild_left() {
    if !need_root() {
        return;
    }
    let k = setup();
    let case = c("build-replace", "hostfs.exchanged@cache/last", 1);
    let args = prepare(&k, case.area, None);
    let out = k
        .cmd()
        .args(&args)
        .env("KEEL_FAULT_POINT", format!("{}#{}", case.point, case.hit))
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "the rebuild was not killed");
    left_before_gc(&k, &case, "a rebuild killed replacing its last inputs");
    k.ok(&["images"]);
    assert_eq!(beside_temps(&k.root()), Vec::<String>::new());
}
