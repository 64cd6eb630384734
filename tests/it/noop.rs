//! The no-op rebuild's shortcuts (issue 14): what a build whose every step hits the
//! cache no longer writes, and that skipping it never leaves a stale name or a wrong
//! image behind.
use crate::common::*;
use crate::require;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// A context with two files and a Dockerfile that copies them and runs a step.
fn context(k: &Keel) -> PathBuf {
    let ctx = k.path("ctx");
    std::fs::create_dir_all(ctx.join("src/sub")).unwrap();
    std::fs::write(ctx.join("src/a.txt"), "a\n").unwrap();
    std::fs::write(ctx.join("src/sub/b.txt"), "b\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb\nCOPY src/ /app/\nRUN cat /app/a.txt /app/sub/b.txt > /both\n",
    )
    .unwrap();
    ctx
}

/// `keel build -t t CTX` plus `extra`: the image id it prints.
fn build(k: &Keel, ctx: &Path, extra: &[&str]) -> String {
    let out = k
        .cmd()
        .arg("build")
        .args(extra)
        .args(["-t", "t"])
        .arg(ctx)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_success(&out, ("keel build", extra));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn log_dirs(k: &Keel) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(k.root().join("logs/builds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    dirs
}

fn last_build(k: &Keel) -> PathBuf {
    std::fs::read_link(k.root().join("logs/last-build")).unwrap()
}

/// A build that ran a step keeps its log directory; one whose every step hit the cache
/// makes none (nor moves `last-build`); a failing build names a directory that holds
/// its transcript from the first line, kept in memory until the failing step ran.
#[test]
fn a_build_whose_every_step_hit_the_cache_keeps_no_log_directory() {
    require!(is_root(), "RUN steps need root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let ctx = context(&k);
    build(&k, &ctx, &[]);
    let first = log_dirs(&k);
    assert_eq!(first.len(), 1, "{first:?}");
    let log = std::fs::read_to_string(first[0].join("build.log")).unwrap();
    assert!(
        log.contains("#1 [stage-0] FROM bb") && log.contains("RUN cat"),
        "{log}"
    );
    let last = last_build(&k);
    build(&k, &ctx, &[]);
    assert_eq!(log_dirs(&k), first, "a no-op rebuild made a log directory");
    assert_eq!(last_build(&k), last);
    // A step runs again: a directory of its own, and last-build points at it.
    std::fs::write(ctx.join("src/a.txt"), "changed\n").unwrap();
    build(&k, &ctx, &[]);
    let second = log_dirs(&k);
    assert_eq!(second.len(), 2, "{second:?}");
    assert_ne!(last_build(&k), last);
    // A failure after cached steps: the directory it names has the whole transcript.
    let bad = k.path("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("Dockerfile"), "FROM bb\nRUN true\n").unwrap();
    k.ok(&["build", "-t", "ok", bad.to_str().unwrap()]);
    std::fs::write(
        bad.join("Dockerfile"),
        "FROM bb\nRUN true\nRUN echo doomed; exit 7\n",
    )
    .unwrap();
    let err = k.fails(&["build", bad.to_str().unwrap()]);
    let dir = step_log_dir(&err);
    let log = std::fs::read_to_string(Path::new(&dir).join("build.log")).unwrap();
    for want in ["#1 [stage-0] FROM bb", "RUN true", "CACHED", "exit 7"] {
        assert!(log.contains(want), "{want:?} missing from {log}");
    }
}

/// The image a no-op rebuild commits is stored and tagged even when its name was moved
/// elsewhere and its config and manifest were collected meanwhile: the commit protects
/// both documents with one lease write and still stores and tags what is missing.
#[test]
fn a_no_op_rebuild_moves_a_retagged_name_back_and_restores_collected_documents() {
    require!(is_root(), "RUN steps need root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let ctx = context(&k);
    let id = build(&k, &ctx, &[]);
    let inspect_id = |name: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", name])).unwrap();
        v[0]["Id"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(inspect_id("t"), id);
    k.ok(&["tag", "bb", "t"]);
    assert_ne!(inspect_id("t"), id, "the tag moved to bb");
    assert_eq!(build(&k, &ctx, &[]), id);
    assert_eq!(inspect_id("t"), id, "the no-op rebuild moved the name back");
    // Untagged and collected: the cache still has the layers, the image's config and
    // manifest are gone; the next no-op rebuild stores them again.
    k.ok(&["rmi", "t"]);
    k.ok(&["gc"]);
    let config = k
        .root()
        .join("images/blobs/sha256")
        .join(id.trim_start_matches("sha256:"));
    assert!(!config.exists(), "gc kept the untagged config");
    assert_eq!(build(&k, &ctx, &[]), id);
    assert_eq!(inspect_id("t"), id);
    assert!(config.is_file());
    k.ok(&["fsck"]);
}

/// The stat index and a step's last inputs are replaced without an fsync: after a
/// crash either may be empty. An empty one is read as nothing known — files are hashed
/// again and the miss is explained as a first build — never as a stale hit.
#[test]
fn emptied_stat_index_and_last_inputs_give_the_right_image() {
    require!(is_root(), "RUN steps need root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let ctx = context(&k);
    // Past the racy window: the first build writes a stat index (it writes none that
    // would trust nothing).
    std::thread::sleep(std::time::Duration::from_secs(2));
    build(&k, &ctx, &[]);
    std::fs::write(ctx.join("src/sub/b.txt"), "bb\n").unwrap();
    let mut emptied = 0;
    for dir in ["cache/stat", "cache/last"] {
        for e in std::fs::read_dir(k.root().join(dir)).unwrap() {
            std::fs::write(e.unwrap().path(), "").unwrap();
            emptied += 1;
        }
    }
    assert!(emptied >= 3, "{emptied} files emptied");
    let changed = build(&k, &ctx, &[]);
    let fresh = build(&k, &ctx, &["--no-cache"]);
    assert_eq!(changed, fresh);
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "t"])).unwrap();
    assert_eq!(v[0]["Id"].as_str(), Some(fresh.as_str()));
    assert_eq!(
        k.ok(&["run", "--rm", "t", "cat", "/both"]),
        "a\nbb\n",
        "the rebuilt image has the changed file"
    );
}

/// A COPY found by its settled files' stamp is a cache hit like any other: its layers are
/// leased, and a layer gone from the store (gc took it between builds, here deleted by
/// hand) makes it a miss that writes the layer again — never an image naming a blob the
/// store does not have.
#[test]
fn a_stamp_hit_whose_layer_is_gone_runs_the_copy_again() {
    require!(is_root(), "RUN steps need root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let ctx = context(&k);
    std::thread::sleep(std::time::Duration::from_secs(2)); // past the stamp's racy window
    build(&k, &ctx, &[]);
    build(&k, &ctx, &[]); // the stamp is remembered once the files have settled
    let blobs = k.root().join("images/blobs/sha256");
    let mut gone = 0;
    for e in std::fs::read_dir(&blobs).unwrap() {
        let path = e.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let mut ar = tar::Archive::new(std::io::Cursor::new(bytes));
        let Ok(mut entries) = ar.entries() else {
            continue;
        };
        if entries.any(|en| en.is_ok_and(|en| en.path().is_ok_and(|p| p == Path::new("app/a.txt"))))
        {
            std::fs::remove_file(&path).unwrap();
            gone += 1;
        }
    }
    assert_eq!(gone, 1, "the COPY layer's blob was not found");
    let out = k
        .cmd()
        .args(["-v", "build", "-t", "t"])
        .arg(&ctx)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_success(&out, "the rebuild without the COPY's layer");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("COPY src/ /app/}: cache miss"),
        "the COPY hit a missing layer:\n{log}"
    );
    let fsck = k.ok(&["fsck"]);
    assert!(fsck.starts_with("ok"), "{fsck}");
    assert_eq!(k.ok(&["run", "--rm", "t", "cat", "/both"]), "a\nb\n");
}
