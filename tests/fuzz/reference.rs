//! Image references: `ImageRef::parse`.
//!
//! Invariants: an accepted reference prints (`Display`) to text that parses back to the
//! same reference, and `tagged_name` parses too.
use keel::reference::ImageRef;

use crate::harness;

const TARGET: &str = "reference";
const DICT: &[&[u8]] = &[
    b"/",
    b":",
    b"@",
    b"sha256:",
    b"localhost",
    b":5000",
    b".",
    b"-",
    b"_",
    b"__",
    b"latest",
    b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    b"docker.io/",
    b"library/",
    b"A",
    b"\xc3\xa9",
];

fn property(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let Ok(r) = ImageRef::parse(text) else {
        return;
    };
    let shown = r.to_string();
    assert_eq!(
        ImageRef::parse(&shown).as_ref(),
        Ok(&r),
        "{text:?} prints as {shown:?}"
    );
    let tagged = r.tagged_name();
    let t = ImageRef::parse(&tagged).unwrap_or_else(|e| panic!("{text:?}: {tagged:?}: {e}"));
    assert_eq!(t.repository, r.repository);
}

#[test]
fn reference_corpus() {
    harness::run_corpus(TARGET, &harness::seeds(TARGET, &[]), &property);
}

#[test]
fn reference_fuzz() {
    harness::fuzz(TARGET, &harness::seeds(TARGET, &[]), DICT, 512, &property);
}
