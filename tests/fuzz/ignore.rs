//! `.dockerignore`: `Matcher::from_file` (reader + matcher) over the file's bytes.
//!
//! Invariants: building never panics; it agrees with `read_patterns` + `Matcher::new`
//! (same verdict on every path, or both fail); an error's line exists in the file; a
//! directory the matcher says can be skipped is itself ignored; without `!` patterns,
//! everything below an ignored directory is ignored.
use std::path::Path;

use keel::dockerfile::ignore::{self, Matcher};

use crate::harness;

const TARGET: &str = "dockerignore";
const DICT: &[&[u8]] = &[
    b"*",
    b"**",
    b"**/",
    b"?",
    b"[",
    b"]",
    b"[^",
    b"[a-z]",
    b"[z-a]",
    b"-",
    b"\\",
    b"!",
    b"/",
    b"./",
    b"../",
    b"\n",
    b"\r\n",
    b"#",
    b" ",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
    b"[[:alpha:]]",
    b"\\<",
    b".",
    b"{",
    b"}",
    b"(",
    b")",
    b"|",
    b"$",
    b"+",
    b"^",
];

/// Paths to ask about, derived from the input so matches are likely.
fn paths(input: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(input);
    let mut out: Vec<String> = ["a", "a/b", "a/b/c", "-", "]", "x.log", "dir/sub/file"]
        .into_iter()
        .map(String::from)
        .collect();
    for line in text.lines().take(8) {
        let word: String = line
            .trim_start_matches('!')
            .chars()
            .map(|c| if "*?[]\\".contains(c) { 'x' } else { c })
            .collect();
        let word = ignore::clean(word.trim());
        if word != "." && !word.starts_with('/') && !word.starts_with("..") {
            out.push(format!("{word}/inner"));
            out.push(word);
        }
    }
    out
}

fn property(input: &[u8]) {
    let from_file = Matcher::from_file(input);
    let via_list = std::str::from_utf8(input)
        .ok()
        .map(|text| Matcher::new(&ignore::read_patterns(text)));
    let m = match (&from_file, via_list) {
        (Err(e), None) => {
            assert!(
                matches!(e.error, ignore::IgnoreError::NotUtf8 { .. }),
                "{e}"
            );
            return;
        }
        (Err(e), Some(list)) => {
            assert!(list.is_err(), "from_file fails ({e}) but the list builds");
            let lines = input.split(|b| *b == b'\n').count();
            assert!(1 <= e.line && e.line <= lines, "line {} of {lines}", e.line);
            return;
        }
        (Ok(m), Some(Ok(list))) => {
            for p in paths(input) {
                assert_eq!(m.matches(&p), list.matches(&p), "{p:?}");
            }
            m
        }
        (Ok(_), other) => panic!("from_file builds but the list gives {other:?}"),
    };
    for p in paths(input) {
        let ignored = m.matches(&p);
        if m.can_skip_dir(&p) {
            assert!(ignored, "can skip {p:?} that is not ignored");
        }
        if ignored && !m.has_exclusions() {
            assert!(m.matches(&format!("{p}/child")), "{p:?} ignored, child not");
        }
    }
}

/// The corpus, plus every pattern of the conformance tables as a one-line file.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = harness::seeds(TARGET, &["testdata/conformance/dockerignore/readall"]);
    let tsv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/conformance/dockerignore/patterns.tsv");
    let text = std::fs::read_to_string(tsv).unwrap();
    for line in text.lines().skip(1) {
        let pattern = line.split('\t').next().unwrap_or_default();
        seeds.push(format!("{pattern}\n").into_bytes());
    }
    seeds
}

#[test]
fn dockerignore_corpus() {
    harness::run_corpus(TARGET, &seeds(), &property);
}

#[test]
fn dockerignore_fuzz() {
    harness::fuzz(TARGET, &seeds(), DICT, 2048, &property);
}
