//! The overlay driver's opt-in erofs layer cache (`KEEL_LAYER_FORMAT=erofs`, issue 14
//! "never unpack"): a build gives the image and the RUN-step files the tree cache gives,
//! the entries are images, nothing stays mounted after a build or after a killed one
//! (gc reclaims), and `keel fsck --full` checks an image as it checks a tree. The same
//! for the chunked cache (`KEEL_LAYER_FORMAT=chunk`): COPY layers kept as metadata-only
//! images over their blobs, whose blobs gc keeps while the entries stay.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::build::context;
use crate::common::{is_root, Keel};
use crate::require;

/// Steps whose layers hold a directory tree, a symlink, a hardlink, deletions (whiteouts),
/// a directory made again (opaque), a fifo, a chmod, and a COPY after a RUN.
const STEPS: &str = "FROM bb
COPY app/ /app/
RUN mkdir -p /d/e && echo 1 > /d/one && echo 2 > /d/e/two && ln /app/a.txt /app/hard && mkfifo /app/fifo
RUN rm -rf /d && mkdir /d && echo new > /d/new && rm /app/b.txt && chmod 700 /app/sub
COPY app/a.txt /x/a.txt
RUN find / -xdev -mindepth 1 \\( -path /proc -o -path /sys -o -path /dev -o -path /list -o -path /etc \\) -prune -o -print | sort | while read -r f; do stat -c '%n %f %u:%g %s %h %Y' \"$f\"; if [ -f \"$f\" ] && [ ! -L \"$f\" ]; then md5sum < \"$f\"; fi; done > /list
";

fn app(k: &Keel) -> PathBuf {
    app_with(k, STEPS)
}

fn app_with(k: &Keel, steps: &str) -> PathBuf {
    let ctx = context(
        k,
        "ctx",
        &[
            ("Dockerfile", steps),
            ("app/a.txt", "a\n"),
            ("app/b.txt", "b\n"),
            ("app/sub/c.txt", "c\n"),
        ],
    );
    std::os::unix::fs::symlink("a.txt", ctx.join("app/link")).unwrap();
    ctx
}

/// A keel command with the erofs layer cache on (or explicitly off).
fn keel(k: &Keel, erofs: bool) -> Command {
    keel_as(k, if erofs { "erofs" } else { "tree" })
}

/// A keel command with `KEEL_LAYER_FORMAT=format`.
fn keel_as(k: &Keel, format: &str) -> Command {
    let mut c = k.cmd();
    c.env("KEEL_LAYER_FORMAT", format).stdin(Stdio::null());
    c
}

fn ok(k: &Keel, erofs: bool, args: &[&str]) -> String {
    ok_as(k, if erofs { "erofs" } else { "tree" }, args)
}

fn ok_as(k: &Keel, format: &str, args: &[&str]) -> String {
    let out = keel_as(k, format).args(args).output().unwrap();
    crate::common::assert_success(&out, (args, format));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the kernel lists erofs (6.12 and later mount images file-backed).
fn kernel_has_erofs() -> bool {
    fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("erofs"))
}

/// Whether keel keeps plain COPY layers as chunked erofs images here by default: root,
/// erofs, and Linux 6.12 or later (file-backed erofs with an extra device; keel's own
/// probe decides the same at build time).
pub(crate) fn chunk_mounts() -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>());
    let version = match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor),
        _ => (0, 0),
    };
    is_root() && kernel_has_erofs() && version >= (6, 12)
}

/// The mounts whose path is under the store `root`.
fn mounts_under(root: &Path) -> Vec<String> {
    let root = fs::canonicalize(root).unwrap().display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&root))
        .map(str::to_string)
        .collect()
}

/// The overlay driver's cache entries holding an erofs image.
fn images(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(root.join("storage/layers"))
        .unwrap()
        .map(|e| e.unwrap().path().join("layer.erofs"))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn erofs_layers_give_the_tree_caches_image_and_files() {
    require!(is_root(), "erofs mounts need root");
    require!(
        kernel_has_erofs(),
        "the kernel has no erofs (CONFIG_EROFS_FS)"
    );
    let (tree, erofs) = (Keel::new(), Keel::new());
    let mut listings = Vec::new();
    let mut ids = Vec::new();
    // One context for both: COPY keeps its files' mtimes.
    let ctx = app(&tree);
    let ctx = ctx.to_str().unwrap();
    for (k, on) in [(&tree, false), (&erofs, true)] {
        ok(k, on, &["bootstrap", "busybox", "bb"]);
        ids.push(ok(
            k,
            on,
            &[
                "build",
                "-q",
                "--storage-driver",
                "overlay",
                "-t",
                "out",
                ctx,
            ],
        ));
        listings.push(ok(k, on, &["run", "--rm", "out", "cat", "/list"]));
    }
    assert_eq!(ids[0], ids[1], "the erofs cache gave another image");
    assert!(listings[1].contains("/app/sub/c.txt"), "{}", listings[1]);
    assert_eq!(listings[0], listings[1], "a RUN step saw other files");
    // The base layer and both COPY layers are images; the RUN layers stay trees.
    assert_eq!(
        images(&erofs.root()).len(),
        3,
        "{:?}",
        images(&erofs.root())
    );
    assert!(images(&tree.root()).is_empty());
    assert_eq!(
        mounts_under(&erofs.root()),
        Vec::<String>::new(),
        "left mounted"
    );
    ok(&erofs, true, &["fsck", "--full"]);
    // A rebuild from the cache and a run of the image mount the images again.
    ok(&erofs, true, &["build", "-q", "-t", "out", ctx]);
    assert_eq!(
        ok(&erofs, true, &["run", "--rm", "out", "cat", "/x/a.txt"]),
        "a\n"
    );
    ok(&erofs, true, &["rmi", "out"]);
    ok(&erofs, true, &["rmi", "bb"]);
    ok(&erofs, true, &["gc", "--cache"]);
    assert!(images(&erofs.root()).is_empty(), "gc left images");
    assert_eq!(mounts_under(&erofs.root()), Vec::<String>::new());
}

#[test]
fn a_killed_build_leaves_its_erofs_mounts_to_gc() {
    require!(is_root(), "erofs mounts need root");
    require!(
        kernel_has_erofs(),
        "the kernel has no erofs (CONFIG_EROFS_FS)"
    );
    let k = Keel::new();
    ok(&k, true, &["bootstrap", "busybox", "bb"]);
    let ctx = app(&k);
    let killed = keel(&k, true)
        .args(["build", "--storage-driver", "overlay", "-t", "out"])
        .arg(&ctx)
        .env("KEEL_FAULT_POINT", "storage.snapshot-mounted")
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the fault point was not reached");
    let left = mounts_under(&k.root());
    assert!(
        left.iter().any(|l| l.contains(" erofs ")),
        "the killed step's snapshot mounted no image: {left:?}"
    );
    ok(&k, true, &["gc"]);
    assert_eq!(
        mounts_under(&k.root()),
        Vec::<String>::new(),
        "gc left a mount"
    );
    ok(&k, true, &["fsck"]);
    ok(
        &k,
        true,
        &["build", "-q", "-t", "out", ctx.to_str().unwrap()],
    );
    assert_eq!(
        ok(&k, true, &["run", "--rm", "out", "cat", "/app/a.txt"]),
        "a\n"
    );
    assert_eq!(mounts_under(&k.root()), Vec::<String>::new());
}

#[test]
fn fsck_full_finds_a_changed_byte_in_an_erofs_layer() {
    require!(is_root(), "erofs mounts need root");
    require!(
        kernel_has_erofs(),
        "the kernel has no erofs (CONFIG_EROFS_FS)"
    );
    let k = Keel::new();
    ok(&k, true, &["bootstrap", "busybox", "bb"]);
    let body = "a file whose bytes are looked for in the image\n";
    let ctx = context(
        &k,
        "ctx",
        &[
            ("Dockerfile", "FROM bb\nCOPY f.txt /f.txt\n"),
            ("f.txt", body),
        ],
    );
    ok(
        &k,
        true,
        &["build", "-q", "-t", "out", ctx.to_str().unwrap()],
    );
    ok(&k, true, &["fsck", "--full"]);
    let image = images(&k.root())
        .into_iter()
        .find(|p| {
            let b = fs::read(p).unwrap();
            b.windows(body.len()).any(|w| w == body.as_bytes())
        })
        .expect("the COPY layer's image holds the file's bytes");
    let mut b = fs::read(&image).unwrap();
    let at = b
        .windows(body.len())
        .position(|w| w == body.as_bytes())
        .unwrap();
    b[at] ^= 0x20;
    fs::write(&image, b).unwrap();
    let out = keel(&k, true).args(["fsck", "--full"]).output().unwrap();
    let err =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "fsck --full missed the change: {err}"
    );
    assert!(err.contains("f.txt changed"), "{err}");
    assert_eq!(mounts_under(&k.root()), Vec::<String>::new());
}

/// The chunked cache's entries: (entry directory, the blob digest its `device` names).
fn chunked(root: &Path) -> Vec<(PathBuf, String)> {
    images(root)
        .into_iter()
        .filter_map(|i| {
            let entry = i.parent().unwrap().to_path_buf();
            let d = fs::read_to_string(entry.join("device")).ok()?;
            Some((entry, d))
        })
        .collect()
}

fn blob_of(root: &Path, digest: &str) -> PathBuf {
    root.join("images/blobs/sha256")
        .join(digest.trim().strip_prefix("sha256:").unwrap())
}

#[test]
fn chunk_layers_give_the_tree_caches_image_and_files() {
    require!(is_root(), "erofs mounts need root");
    require!(
        kernel_has_erofs(),
        "the kernel has no erofs (CONFIG_EROFS_FS)"
    );
    let (tree, chunk) = (Keel::new(), Keel::new());
    let (mut listings, mut ids) = (Vec::new(), Vec::new());
    // Without directories' sizes: a chunked image's blocks are 512 bytes, so a RUN step
    // sees a directory of its layer as 512 × n bytes where ext4 (and the flat image)
    // show 4096 × n (the kernel refuses erofs directory blocks of another size).
    let ctx = app_with(&tree, &STEPS.replace("%s %h", "%h"));
    let ctx = ctx.to_str().unwrap();
    for (k, format) in [(&tree, "tree"), (&chunk, "chunk")] {
        ok_as(k, format, &["bootstrap", "busybox", "bb"]);
        let build = [
            "build",
            "-q",
            "--storage-driver",
            "overlay",
            "-t",
            "out",
            ctx,
        ];
        ids.push(ok_as(k, format, &build));
        listings.push(ok_as(k, format, &["run", "--rm", "out", "cat", "/list"]));
    }
    assert_eq!(ids[0], ids[1], "the chunked cache gave another image");
    assert_eq!(listings[0], listings[1], "a RUN step saw other files");
    // Both COPY layers are chunked images over their blobs (the base layer was
    // extracted, the RUN layers are trees), each smaller than its blob.
    let entries = chunked(&chunk.root());
    assert_eq!(entries.len(), 2, "{entries:?}");
    for (entry, digest) in &entries {
        let blob = blob_of(&chunk.root(), digest);
        assert!(blob.is_file(), "{} names no blob", entry.display());
        assert!(!entry.join("diff").exists());
    }
    assert_eq!(mounts_under(&chunk.root()), Vec::<String>::new());
    ok_as(&chunk, "chunk", &["fsck", "--full"]);
    ok_as(&chunk, "chunk", &["build", "-q", "-t", "out", ctx]);
    assert_eq!(
        ok_as(&chunk, "chunk", &["run", "--rm", "out", "cat", "/x/a.txt"]),
        "a\n"
    );
    // gc keeps an entry's blob while the entry stays, and both go together.
    ok_as(&chunk, "chunk", &["rmi", "out"]);
    ok_as(&chunk, "chunk", &["gc"]);
    for (entry, digest) in chunked(&chunk.root()) {
        assert!(
            blob_of(&chunk.root(), &digest).is_file(),
            "{}",
            entry.display()
        );
    }
    ok_as(&chunk, "chunk", &["fsck"]);
    ok_as(&chunk, "chunk", &["gc", "--cache"]);
    assert!(chunked(&chunk.root()).is_empty(), "gc left chunked entries");
    assert_eq!(mounts_under(&chunk.root()), Vec::<String>::new());
}

/// A chunked entry whose blob is gone is never mounted: gc drops it, and a build that
/// needs the layer makes it again.
#[test]
fn a_chunked_entry_without_its_blob_is_dropped() {
    require!(is_root(), "erofs mounts need root");
    require!(
        kernel_has_erofs(),
        "the kernel has no erofs (CONFIG_EROFS_FS)"
    );
    let k = Keel::new();
    ok_as(&k, "chunk", &["bootstrap", "busybox", "bb"]);
    let ctx = context(
        &k,
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM bb\nCOPY f.txt /f.txt\nRUN cat /f.txt > /g\n",
            ),
            ("f.txt", "f\n"),
        ],
    );
    let ctx = ctx.to_str().unwrap();
    ok_as(&k, "chunk", &["build", "-q", "-t", "out", ctx]);
    let entries = chunked(&k.root());
    assert_eq!(entries.len(), 1, "{entries:?}");
    let (entry, digest) = &entries[0];
    // The blob as a person (or an old keel's gc) might remove it.
    fs::remove_file(blob_of(&k.root(), digest)).unwrap();
    ok_as(&k, "chunk", &["gc"]);
    assert!(!entry.exists(), "gc kept an entry whose blob is gone");
    ok_as(
        &k,
        "chunk",
        &["build", "-q", "--no-cache", "-t", "out", ctx],
    );
    assert_eq!(
        ok_as(&k, "chunk", &["run", "--rm", "out", "cat", "/g"]),
        "f\n"
    );
    assert!(blob_of(&k.root(), digest).is_file());
    ok_as(&k, "chunk", &["fsck"]);
}

/// A `KEEL_LAYER_FORMAT` keel does not know is refused before any command runs (exit 2,
/// a usage error), naming the value and the accepted ones, with nothing made in the
/// store: a typo must not quietly give another kind of layer.
#[test]
fn an_unknown_layer_format_is_refused_before_anything_runs() {
    let k = Keel::new();
    for value in ["chunked", "Tree", "overlay"] {
        let out = keel_as(&k, value).args(["images"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{value}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "KEEL_LAYER_FORMAT={value:?} is not a layer format"
            )) && err.contains("tree, chunk or erofs"),
            "{value}: {err}"
        );
        assert!(!k.root().exists(), "{value}: the store was made");
    }
    ok_as(&k, "chunk", &["images"]);
}
