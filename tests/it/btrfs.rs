//! The `btrfs` storage driver and reflinked copies, on real filesystems: each test
//! mounts a small sparse btrfs (or xfs with reflink=1) image through a loop device, and
//! a guard unmounts it and deletes the image even when the test fails.
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{is_root, run_ok, Keel};
use crate::layer::{dir, file, hardlink, pax, raw, symlink, tarball, three_layers};
use keel::storage::{self, LayerBlob};

/// A loop-mounted filesystem on a sparse image file in a temp dir. Dropping it unmounts
/// the filesystem (the loop device goes with it: `mount -o loop` sets autoclear) and
/// deletes the image.
pub struct LoopFs {
    pub mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    /// A fresh `kind` (`btrfs` or `xfs`) filesystem of `gib` GiB (sparse), mounted.
    pub fn new(kind: &str, gib: u64) -> LoopFs {
        // Outside TMPDIR: the nested suite run points TMPDIR at a loop filesystem. A
        // scratch dir of this process: a killed run's mount and image are swept.
        let dir = crate::common::scratch_dir(Path::new("/var/tmp"));
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        fs::File::create(&img).unwrap().set_len(gib << 30).unwrap();
        let mut mkfs = match kind {
            "btrfs" => {
                let mut c = Command::new("mkfs.btrfs");
                c.arg("-q");
                c
            }
            "xfs" => {
                let mut c = Command::new("mkfs.xfs");
                c.args(["-q", "-m", "reflink=1"]);
                c
            }
            other => panic!("no loop filesystem kind {other}"),
        };
        run_ok(mkfs.arg(&img));
        run_ok(
            Command::new("mount")
                .arg("-o")
                .arg("loop")
                .arg(&img)
                .arg(&mnt),
        );
        LoopFs { mnt, _dir: dir }
    }

    /// Bytes in use on the filesystem, after flushing it (statvfs, as `df` reports).
    pub fn used(&self) -> u64 {
        run_ok(Command::new("sync").arg("-f").arg(&self.mnt));
        let st = nix::sys::statvfs::statvfs(&self.mnt).unwrap();
        (st.blocks() - st.blocks_free()) as u64 * st.fragment_size() as u64
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds it (a failed test's leftover): detach it lazily so
            // the image can go; the loop device is freed when the last user is gone.
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// Skips (fails under CI) unless this host can make the loop filesystem `kind`.
macro_rules! require_loopfs {
    ($kind:expr) => {
        crate::require!(is_root(), "loop mounts need root");
        let tool = if $kind == "btrfs" {
            "mkfs.btrfs"
        } else {
            "mkfs.xfs"
        };
        crate::require!(
            crate::common::have(tool),
            format!("{tool} is missing (apt-get install btrfs-progs xfsprogs)")
        );
    };
}

/// A fresh loop filesystem `kind` of `gib` GiB (after `require_loopfs!`) and a keel root
/// on it holding `bb` (busybox).
macro_rules! loopfs_with_busybox {
    ($kind:expr, $gib:expr) => {{
        require_loopfs!($kind);
        let fs = LoopFs::new($kind, $gib);
        let k = keel_on(&fs);
        k.ok(&["bootstrap", "busybox", "bb"]);
        (fs, k)
    }};
}

/// A keel root inside the loop filesystem `fs`.
fn keel_on(fs: &LoopFs) -> Keel {
    Keel::new_in(&fs.mnt)
}

/// The btrfs subvolumes of the filesystem at `mnt`, by path (`btrfs subvolume list`).
fn subvolumes(mnt: &Path) -> Vec<String> {
    let out = run_ok(Command::new("btrfs").args(["subvolume", "list"]).arg(mnt));
    out.lines()
        .filter_map(|l| l.split(" path ").nth(1))
        .map(str::to_string)
        .collect()
}

#[test]
fn btrfs_is_chosen_on_btrfs_and_refused_elsewhere() {
    require_loopfs!("btrfs");
    let fs = LoopFs::new("btrfs", 1);
    let k = keel_on(&fs);
    let info = k.ok(&["info"]);
    assert!(
        info.contains("storage:       btrfs (the root is on btrfs)"),
        "{info}"
    );
    k.ok(&["bootstrap", "busybox", "bb"]);
    k.ok(&["run", "--name", "c", "bb", "true"]);
    let inspect = k.ok(&["inspect", "c"]);
    assert!(inspect.contains("\"Driver\": \"btrfs\""), "{inspect}");
    k.ok(&["rm", "c"]);
    // Elsewhere the driver says why it cannot work and what to use instead.
    let other = Keel::new();
    other.ok(&["bootstrap", "busybox", "bb"]);
    let err = other.fails(&["run", "--rm", "--storage-driver", "btrfs", "bb", "true"]);
    assert!(
        err.contains("btrfs not available") && err.contains("is not on a btrfs filesystem"),
        "{err}"
    );
    let info = other.ok(&["info"]);
    assert!(info.contains("drivers:       btrfs: unavailable"), "{info}");
}

#[test]
fn btrfs_driver_snapshot_lifecycle() {
    require_loopfs!("btrfs");
    let fs = LoopFs::new("btrfs", 1);
    crate::layer::snapshot_lifecycle_in("btrfs", &fs.mnt);
    assert_eq!(
        subvolumes(&fs.mnt)
            .iter()
            .filter(|s| s.contains("/snapshots/") || s.contains("/tmp/"))
            .count(),
        0,
        "removed snapshots leave no subvolume: {:?}",
        subvolumes(&fs.mnt)
    );
}

/// A character device layer entry (`1:3`, like /dev/null).
fn chardev(name: &str) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(tar::EntryType::Char);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_mode(0o666);
    h.set_size(0);
    h.set_mtime(1_000_000);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// Every entry below `root` with its type, content, mode, owner, mtime, device number,
/// every xattr, and which visible entries share its inode (hardlinks; overlayfs reports a
/// lower file's own link count even when its peer is hidden, so nlink is not compared).
fn exact_tree(root: &Path) -> BTreeMap<String, String> {
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            inodes
                .entry(e.metadata().unwrap().ino())
                .or_default()
                .push(rel);
        }
    }
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let ft = m.file_type();
        let body = if ft.is_file() {
            format!("file {:?}", fs::read(e.path()).unwrap())
        } else if ft.is_symlink() {
            format!("-> {}", fs::read_link(e.path()).unwrap().display())
        } else if ft.is_char_device() || ft.is_block_device() {
            format!("dev {:x}", m.rdev())
        } else {
            "dir".to_string()
        };
        let mut xattrs: Vec<String> = xattr::list(e.path())
            .unwrap()
            .map(|n| {
                let v = xattr::get(e.path(), &n).unwrap().unwrap_or_default();
                format!("{}={}", n.to_string_lossy(), String::from_utf8_lossy(&v))
            })
            .collect();
        xattrs.sort();
        let link = match inodes.get(&m.ino()) {
            Some(peers) if ft.is_file() && peers.len() > 1 => peers.join(","),
            _ => String::new(),
        };
        let mtime = if ft.is_dir() { 0 } else { m.mtime() };
        let mode = if ft.is_symlink() {
            0
        } else {
            m.mode() & 0o7777
        };
        out.insert(
            rel,
            format!(
                "{body} {mode:o} {}:{} t{mtime} {xattrs:?} link={link}",
                m.uid(),
                m.gid()
            ),
        );
    }
    out
}

/// Writes each tar of `tars` as a layer blob under `at`.
fn blobs(at: &Path, name: &str, tars: &[Vec<u8>]) -> Vec<LayerBlob> {
    tars.iter()
        .enumerate()
        .map(|(i, t)| {
            let blob = at.join(format!("{name}-{i}"));
            fs::write(&blob, t).unwrap();
            LayerBlob {
                diff_id: keel::digest::of_bytes(t),
                blob,
            }
        })
        .collect()
}

/// The layer stacks every driver must merge alike: whiteouts and an opaque directory,
/// an opaque whiteout at a layer's root, a layer repeated, hardlinks across layers,
/// xattrs and device nodes.
fn equivalence_stacks(at: &Path) -> Vec<(&'static str, Vec<LayerBlob>)> {
    let base = tarball(&[
        dir("d/"),
        file("d/a", "a"),
        file("keep", "k"),
        dir("dir/"),
        file("dir/file", "data"),
        symlink("sym", "dir"),
        pax("SCHILY.xattr.user.keel", b"base", file("x", "x")),
        chardev("null"),
    ]);
    let opaque_root = tarball(&[file(".wh..wh..opq", ""), file("new", "n")]);
    let links = tarball(&[
        dir("dir2/"),
        file("dir2/target", "t"),
        hardlink("h", "dir2/target"),
        dir("d/"),
        file("d/.wh.a", ""),
    ]);
    // A later layer links to a file of its own and rewrites an earlier file's xattr.
    let more = tarball(&[
        file("dir2/target", "t2"),
        hardlink("h3", "dir2/target"),
        pax("SCHILY.xattr.user.keel", b"top", file("x", "x2")),
        raw(b"dev2", tar::EntryType::Fifo, b"", b""),
    ]);
    vec![
        ("three", three_layers(at)),
        ("opaque", blobs(at, "opaque", &[base.clone(), opaque_root])),
        (
            "dup",
            blobs(at, "dup", &[base.clone(), links.clone(), links.clone()]),
        ),
        ("links", blobs(at, "links", &[links, base, more])),
    ]
}

/// The same layers give the same tree (content, modes, owners, mtimes, xattrs, device
/// numbers, hardlinks) on overlay, copy and btrfs, all with their root on one btrfs.
#[test]
fn overlay_copy_and_btrfs_drivers_build_the_same_tree() {
    require_loopfs!("btrfs");
    let fs = LoopFs::new("btrfs", 1);
    let root = fs.mnt.join("root");
    let stacks = equivalence_stacks(&fs.mnt);
    let drivers: Vec<_> = ["overlay", "copy", "btrfs"]
        .iter()
        .map(|d| storage::open(Some(d), &root).unwrap())
        .collect();
    for (name, layers) in &stacks {
        let mut trees = Vec::new();
        for d in &drivers {
            let snap = d.prepare(&format!("{name}-{}", d.name()), layers).unwrap();
            trees.push((d.name(), exact_tree(&snap.rootfs)));
            assert_eq!(d.changes(&snap).unwrap(), vec![], "{name} {}", d.name());
            d.remove(&snap).unwrap();
        }
        let (first, want) = &trees[0];
        for (driver, got) in &trees[1..] {
            let diff: Vec<String> = want
                .iter()
                .filter(|(p, v)| got.get(*p) != Some(v))
                .map(|(p, v)| format!("{first} {p}: {v}\n  {driver}: {:?}", got.get(p)))
                .chain(
                    got.keys()
                        .filter(|p| !want.contains_key(*p))
                        .map(|p| format!("{driver} only: {p}")),
                )
                .collect();
            assert!(diff.is_empty(), "{name}:\n{}", diff.join("\n"));
        }
    }
    let left = subvolumes(&fs.mnt);
    assert!(
        left.iter().all(|s| s.contains("/storage/subvolumes/")),
        "only the chain cache is left: {left:?}"
    );
}

/// A Dockerfile touching what drivers might disagree on: deletes, an opaque directory
/// re-created, hardlinks, device nodes, modes and owners.
const EQUIV_DOCKERFILE: &str = "FROM bb
COPY f /data/f
RUN rm /etc/group && mkdir -p /x/y && echo 1 > /x/y/z && ln /x/y/z /x/hard
RUN rm -rf /x/y && mkdir /x/y && echo 2 > /x/y/w && chmod 4711 /x/y/w && chown 1000:1000 /x/y
RUN mknod /dev2 c 1 3 && ln /data/f /data/g && rm /data/f
";

/// The same build gives the same image digest with every driver.
#[test]
fn the_same_build_gives_the_same_digest_on_every_driver() {
    let (_fs, k) = loopfs_with_busybox!("btrfs", 1);
    let ctx = k.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), EQUIV_DOCKERFILE).unwrap();
    fs::write(ctx.join("f"), "context file\n").unwrap();
    let ids: Vec<(&str, String)> = ["overlay", "copy", "btrfs"]
        .iter()
        .map(|d| {
            let tag = format!("eq-{d}");
            let args = ["build", "--no-cache", "--storage-driver", d, "-t", &tag];
            let mut args = args.to_vec();
            let c = ctx.display().to_string();
            args.push(&c);
            // `keel build` prints the image id last.
            let out = k.ok(&args);
            (*d, out.lines().last().unwrap_or("").to_string())
        })
        .collect();
    assert!(!ids[0].1.is_empty(), "{ids:?}");
    assert!(ids.iter().all(|(_, id)| *id == ids[0].1), "{ids:?}");
}

#[test]
fn run_rm_leaves_no_subvolume_behind() {
    let (fs, k) = loopfs_with_busybox!("btrfs", 1);
    k.ok(&["run", "--rm", "bb", "true"]);
    let before = subvolumes(&fs.mnt);
    assert_eq!(before.len(), 1, "one chain subvolume: {before:?}");
    let out = k.ok(&["run", "--rm", "bb", "sh", "-c", "echo hi > /f && cat /f"]);
    assert_eq!(out.trim(), "hi");
    let id = k.ok(&["run", "-d", "bb", "sleep", "60"]);
    assert_eq!(subvolumes(&fs.mnt).len(), 2, "a running container has one");
    k.ok(&["rm", "-f", id.trim()]);
    assert_eq!(subvolumes(&fs.mnt), before);
    let snaps: Vec<_> = fs::read_dir(k.root().join("storage/snapshots"))
        .unwrap()
        .collect();
    assert!(snaps.is_empty(), "{snaps:?}");
}

/// A keel SIGKILLed during a build (its fault points) leaves subvolumes behind; `keel
/// gc` removes every one no image needs, and `fsck` is clean.
#[test]
fn gc_removes_the_subvolumes_of_a_killed_build() {
    let (fs, k) = loopfs_with_busybox!("btrfs", 1);
    let ctx = k.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("f"), "f\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM bb\nCOPY f /f\nRUN cat /f > /g\nRUN sleep 5\n",
    )
    .unwrap();
    let c = ctx.display().to_string();
    // Killed while unpacking a layer into a new subvolume, with a step's snapshot
    // prepared, and with a RUN container running in one.
    for point in [
        "storage.unpack-partial",
        "build.step-snapshot#2",
        "build.run-started#2",
    ] {
        let out = k
            .cmd()
            .args(["build", "--no-cache", "-t", "out", &c])
            .env("KEEL_FAULT_POINT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: the build was not killed");
        let left = subvolumes(&fs.mnt);
        assert!(
            left.iter()
                .any(|s| s.contains("/storage/tmp/") || s.contains("/storage/snapshots/")),
            "{point}: the killed build left no subvolume: {left:?}"
        );
        let gc = k.ok(&["gc"]);
        let left = subvolumes(&fs.mnt);
        assert!(
            left.iter().all(|s| s.contains("/storage/subvolumes/")),
            "{point}: gc left subvolumes: {left:?}\n{gc}"
        );
        let fsck = k.ok(&["fsck"]);
        assert!(fsck.contains("ok:"), "{point}: {fsck}");
    }
    // And the store still builds.
    fs::write(ctx.join("Dockerfile"), "FROM bb\nCOPY f /f\nRUN cat /f\n").unwrap();
    k.ok(&["build", "-t", "out", &c]);
    let fsck = k.ok(&["fsck", "--full"]);
    assert!(fsck.contains("ok:"), "{fsck}");
    // fsck checks the btrfs chain subvolumes too: a file slipped into one is found.
    let chains = k.root().join("storage/subvolumes");
    let chain = fs::read_dir(&chains)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::write(chain.join("diff/planted"), "x").unwrap();
    let out = k.cmd().arg("fsck").output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("storage/subvolumes/"),
        "{text}"
    );
}

/// The build and runtime suites of this binary, run again with every keel root on a
/// loop-mounted btrfs, where keel picks the btrfs driver by itself.
#[test]
fn build_and_runtime_suites_pass_on_btrfs() {
    require_loopfs!("btrfs");
    if std::env::var_os("KEEL_NESTED_SUITE").is_some() {
        return; // this is the nested run
    }
    let fs = LoopFs::new("btrfs", 4);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["build::", "runtime::", "run::", "--test-threads", "2"])
        // Inspects the overlay driver's layer cache, which btrfs does not have.
        .args(["--skip", "r012_umask_077_builds_the_same_image_as_022"])
        // debootstrap, not storage: minutes, and nothing a busybox base does not cover.
        .args(["--skip", "r012_bootstrap_debian"])
        .env("TMPDIR", &fs.mnt)
        .env("KEEL_NESTED_SUITE", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the suites failed on btrfs:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = text.lines().filter(|l| l.ends_with("... ok")).count();
    assert!(passed >= 40, "only {passed} tests ran on btrfs:\n{text}");
}

/// Fills a new file with `mib` MiB of non-zero data (real extents, not a hole).
fn write_data(path: &Path, mib: usize) {
    use std::io::Write;
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8 + 1).collect();
    let mut f = fs::File::create(path).unwrap();
    for _ in 0..mib {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
}

/// keel's clone-or-copy primitive writes metadata only for a 1 GiB file on btrfs and on
/// xfs with reflink=1, and the copy has the same bytes.
#[test]
fn a_1gib_copy_is_a_reflink_on_btrfs_and_xfs() {
    for kind in ["btrfs", "xfs"] {
        require_loopfs!(kind);
        let fs = LoopFs::new(kind, 3);
        let (src, dst) = (fs.mnt.join("big"), fs.mnt.join("copy"));
        write_data(&src, 1024);
        let before = fs.used();
        let mut from = fs::File::open(&src).unwrap();
        let mut to = fs::File::create(&dst).unwrap();
        let n = keel::sys::btrfs::clone_or_copy(&mut from, &mut to, &src).unwrap();
        assert_eq!(n, 1 << 30);
        let grew = fs.used().saturating_sub(before);
        assert!(grew < 32 << 20, "{kind}: the copy wrote {grew} bytes");
        assert_eq!(fs::metadata(&dst).unwrap().len(), 1 << 30);
        let same = Command::new("cmp").arg(&src).arg(&dst).status().unwrap();
        assert!(same.success(), "{kind}: the copy differs");
    }
}

/// With the copy driver on xfs (reflink=1), a container's snapshot of an image shares
/// its file data with the cached tree: starting it writes metadata only. On a
/// filesystem without reflinks the same start copies the data (checked on ext4 by the
/// byte count only, as a control).
#[test]
fn copy_driver_snapshots_are_reflinks_on_xfs() {
    let (fs, k) = loopfs_with_busybox!("xfs", 2);
    let ctx = k.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    write_data(&ctx.join("big"), 128);
    fs::write(ctx.join("Dockerfile"), "FROM bb\nCOPY big /big\n").unwrap();
    let c = ctx.display().to_string();
    k.ok(&["build", "--storage-driver", "copy", "-t", "big", &c]);
    // The first start unpacks the layer into the cache; the second only copies it.
    k.ok(&["run", "--rm", "--storage-driver", "copy", "big", "true"]);
    let before = fs.used();
    let out = k
        .cmd()
        .args([
            "-v",
            "run",
            "--name",
            "c",
            "--storage-driver",
            "copy",
            "big",
        ])
        .args(["wc", "-c", "/big"])
        .output()
        .unwrap();
    crate::common::assert_success(&out, "run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("134217728"));
    let grew = fs.used().saturating_sub(before);
    assert!(grew < 16 << 20, "starting the container wrote {grew} bytes");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("no reflink"), "{log}");
    k.ok(&["rm", "c"]);
}

/// Where the filesystem cannot share extents, the copy falls back to writing the data:
/// silently, but `-v` says so.
#[test]
fn reflink_fallback_is_silent_but_traced() {
    crate::require!(is_root(), "the copy driver keeps owners as root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let plain = k
        .cmd()
        .args(["run", "--rm", "--storage-driver", "copy", "bb", "true"])
        .output()
        .unwrap();
    crate::common::assert_success(&plain, "run");
    assert!(plain.stderr.is_empty(), "{plain:?}");
    let on_ext4 =
        crate::common::run_ok(Command::new("stat").args(["-f", "-c", "%T"]).arg(k.root()));
    let traced = k
        .cmd()
        .args([
            "-v",
            "run",
            "--rm",
            "--storage-driver",
            "copy",
            "bb",
            "true",
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&traced.stderr);
    if on_ext4.trim().starts_with("ext") {
        assert!(log.contains("no reflink"), "{log}");
    }
}

/// A layer that fails half-way through its unpack leaves no subvolume and no cache
/// entry behind; the chains below it stay cached.
#[test]
fn a_failed_unpack_leaves_no_subvolume() {
    require_loopfs!("btrfs");
    let fs = LoopFs::new("btrfs", 1);
    let root = fs.mnt.join("root");
    let drv = storage::open(Some("btrfs"), &root).unwrap();
    let mut layers = three_layers(&fs.mnt);
    let full = fs::read(&layers[2].blob).unwrap();
    let cut = fs.mnt.join("cut");
    fs::write(&cut, &full[..3 * 512 + 1]).unwrap();
    layers[2].blob = cut;
    let err = drv.prepare("s", &layers).unwrap_err().to_string();
    assert!(err.contains(&layers[2].diff_id.to_string()), "{err}");
    let tmps: Vec<_> = fs::read_dir(root.join("storage/tmp")).unwrap().collect();
    assert!(tmps.is_empty(), "temp dirs left: {tmps:?}");
    let subs = subvolumes(&fs.mnt);
    assert_eq!(subs.len(), 2, "the two good chains only: {subs:?}");
    assert!(!root.join("storage/snapshots/s").exists());
}

/// Measures the two ways to find a btrfs snapshot's changeset on a 10,000-file tree with
/// one file rewritten, one deleted and one chmod'ed: keel's tree walk (the driver's
/// `changes`) and the generation search (`btrfs subvolume find-new`, which runs
/// BTRFS_IOC_TREE_SEARCH). Prints the best of five and what each found. Run by
/// bench/storage.sh: `cargo test --test it changeset_bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn btrfs_changeset_walk_vs_find_new_bench() {
    require_loopfs!("btrfs");
    let fs = LoopFs::new("btrfs", 1);
    let mut entries = Vec::new();
    for d in 0..100 {
        entries.push(dir(&format!("d{d}/")));
        for f in 0..100 {
            entries.push(file(&format!("d{d}/f{f}"), &"x".repeat(512)));
        }
    }
    let layers = blobs(&fs.mnt, "many", &[tarball(&entries)]);
    let drv = storage::open(Some("btrfs"), &fs.mnt.join("root")).unwrap();
    let snap = drv.prepare("s", &layers).unwrap();
    let find_new = |gen: &str| {
        let out = run_ok(
            Command::new("btrfs")
                .args(["subvolume", "find-new"])
                .arg(&snap.rootfs)
                .arg(gen),
        );
        out
    };
    run_ok(Command::new("sync").arg("-f").arg(&snap.rootfs));
    let marker = find_new("999999999");
    // find-new lists items of that generation too: start past the last committed one.
    let last: u64 = marker.split_whitespace().last().unwrap().parse().unwrap();
    let gen = (last + 1).to_string();
    let r = &snap.rootfs;
    fs::write(r.join("d1/f1"), "changed").unwrap();
    fs::remove_file(r.join("d2/f2")).unwrap();
    fs::set_permissions(
        r.join("d3/f3"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    run_ok(Command::new("sync").arg("-f").arg(r));
    let best = |f: &dyn Fn() -> usize| {
        let mut best = std::time::Duration::MAX;
        let mut n = 0;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            n = f();
            best = best.min(t.elapsed());
        }
        (best, n)
    };
    let (walk, walk_n) = best(&|| drv.changes(&snap).unwrap().len());
    let (gen_t, gen_n) = best(&|| {
        find_new(&gen)
            .lines()
            .filter(|l| l.starts_with("inode"))
            .count()
    });
    println!("tree walk (keel, debug build): {walk:?}, {walk_n} changes (the rewrite, the delete, the chmod)");
    println!("find-new (btrfs-progs): {gen_t:?}, {gen_n} changed file extents (the rewrite only)");
    drv.remove(&snap).unwrap();
}
