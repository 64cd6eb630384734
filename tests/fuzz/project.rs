//! keel.toml: `Project::parse`, then the build order over what it accepted.
//!
//! Invariants: parsing never panics and is deterministic; an accepted project has a build
//! order (or a clear error) for every image and for all of them.
use std::path::Path;

use keel::project::{build_order, Project};

use crate::harness;

const TARGET: &str = "project";
const DICT: &[&[u8]] = &[
    b"[[image]]\n",
    b"[env.dev]\n",
    b"name = \"",
    b"\"\n",
    b"depends_on = [\"",
    b"\"]\n",
    b"context = \"",
    b"dockerfile = \"",
    b"tag = \"",
    b"image = \"",
    b"[image.args]\n",
    b"args = { A = \"1\" }\n",
    b"= ",
    b"'''",
    b"\"\"\"",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b"#",
    b"..",
    b"/",
    b"\\u0000",
    b"1979-05-27T07:32:00Z",
    b"inf",
    b"0x10",
];

fn seeds() -> Vec<Vec<u8>> {
    harness::seeds(
        TARGET,
        &[
            "testdata/project/full/keel.toml",
            "testdata/project/unknown-key/keel.toml",
            "testdata/project/cycle/keel.toml",
            "testdata/project/wrong-type/keel.toml",
            "testdata/integrations/sample/keel.toml",
        ],
    )
}

fn property(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let dir = Path::new("/nonexistent/project");
    let parsed = Project::parse(text, "keel.toml", dir);
    let again = Project::parse(text, "keel.toml", dir);
    assert_eq!(
        parsed.as_ref().map_err(ToString::to_string),
        again.as_ref().map_err(ToString::to_string),
        "parsing is deterministic"
    );
    let Ok(p) = parsed else { return };
    let _ = build_order(&p, None);
    for image in &p.images {
        let _ = build_order(&p, Some(&image.name));
        let _ = image.dockerfile();
        let _ = image.build_args();
    }
    for env in p.envs.values() {
        let _ = env.image_ref();
    }
}

#[test]
fn project_corpus() {
    harness::run_corpus(TARGET, &seeds(), &property);
}

#[test]
fn project_fuzz() {
    harness::fuzz(TARGET, &seeds(), DICT, 4096, &property);
}
