//! Image archives: `archive::load` of arbitrary bytes (plain or gzip) into a fresh store,
//! the path `keel load` takes with a file from anywhere.
//!
//! Invariants: load returns instead of panicking; whatever it did, the store still passes
//! `fsck` (a failed load leaves no half-written image or blob behind) and nothing
//! appears beside the store's root.
use std::fs;

use keel::archive;
use keel::store::Store;

use crate::harness;

const TARGET: &str = "archive";
const DICT: &[&[u8]] = &[
    b"blobs/sha256/",
    b"index.json",
    b"manifest.json",
    b"oci-layout",
    b"repositories",
    b"\"mediaType\"",
    b"\"digest\"",
    b"\"size\"",
    b"\"layers\"",
    b"\"config\"",
    b"\"Layers\"",
    b"\"RepoTags\"",
    b"application/vnd.oci.image.manifest.v1+json",
    b"sha256:",
    b"../",
    b"/",
];

fn property(input: &[u8]) {
    let dir = tempfile::Builder::new()
        .prefix("keel-fuzz-")
        .tempdir()
        .unwrap();
    let store = Store::open(dir.path().join("root"))
        .unwrap()
        .without_fsync();
    let _ = archive::load(&store, std::io::Cursor::new(input.to_vec()));
    let report = store.fsck(false).expect("fsck runs after any load");
    assert!(
        report.problems.is_empty(),
        "store inconsistent after load: {:?}",
        report.problems
    );
    let beside: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(beside.len(), 1, "load wrote beside the store root");
}

#[test]
fn archive_corpus() {
    harness::run_corpus(TARGET, &harness::seeds(TARGET, &[]), &property);
}

#[test]
fn archive_fuzz() {
    harness::fuzz(
        TARGET,
        &harness::seeds(TARGET, &[]),
        DICT,
        32 << 10,
        &property,
    );
}
