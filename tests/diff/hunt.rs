//! Session 9's cases: where keel's image was found to differ from `docker build`'s, or
//! was checked and found the same (empty directory sources, archives ADD extracts, long
//! names, odd owners and values). Each divergence from buildah 1.28 cites BuildKit.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::Case;

fn mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Runs `sh -c script` in the context directory (compressors, setcap, touch).
fn sh(dir: &Path, script: &str) {
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "{script}");
}

// ---- empty directory sources -------------------------------------------------------

/// `COPY empty/ /app/` creates `/app` even though there is nothing to copy into it:
/// BuildKit makes the destination of a directory's contents first (tonistiigi/fsutil
/// `copy/copy.go` `prepareTargetDir`: `MkdirAll(dest, 0755, chown)`), 0755, owned by
/// `--chown`'s owner or root; an existing destination is left as it is.
#[test]
fn copy_empty_dir_creates_dest() {
    Case::new(
        "copy_empty_dir_creates_dest",
        "FROM bb\nCOPY empty/ /app/\nCOPY --chown=1:1 empty /owned/deep\nCOPY empty /etc/\nWORKDIR /w\nCOPY empty rel\n",
    )
    .file("empty/", "")
    .setup(|d| mode(&d.join("empty"), 0o700))
    .check();
}

/// The same from a stage, with ADD, and through a wildcard that matches only empty
/// directories (each match is a directory source: fsutil `Copy` runs `prepareTargetDir`
/// per match).
#[test]
fn copy_empty_dir_from_stage_add_and_wildcard() {
    Case::new(
        "copy_empty_dir_from_stage_add_and_wildcard",
        "FROM bb AS s\nRUN mkdir -p /e /full && echo f > /full/f\nFROM bb\nCOPY --from=s /e/ /x/\nADD empty /added/\nCOPY e? /wild/\n",
    )
    .file("empty/", "")
    .file("e1/", "")
    .file("e2/", "")
    .check();
}
