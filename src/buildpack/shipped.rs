//! The buildpacks keel ships, embedded from `builders/` at compile time (as the
//! integration templates are), and the files around them: the launcher every slug gets
//! and the stack's package lists. A shipped buildpack is written out into
//! `<root>/buildpacks/shipped/<name>-<digest>/` the first time a build uses it.
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::BuildpackError;
use crate::sys::hostfs;

/// One embedded file: its path inside the buildpack and its text (all are executable).
type File = (&'static str, &'static str);

/// The shipped buildpacks in keel's detection order (Heroku's: a language before the
/// catch-alls), each with its `bin/` scripts.
const SHIPPED: [(&str, [File; 3]); 4] = [
    (
        "nodejs",
        [
            (
                "bin/detect",
                include_str!("../../builders/nodejs/bin/detect"),
            ),
            (
                "bin/compile",
                include_str!("../../builders/nodejs/bin/compile"),
            ),
            (
                "bin/release",
                include_str!("../../builders/nodejs/bin/release"),
            ),
        ],
    ),
    (
        "python",
        [
            (
                "bin/detect",
                include_str!("../../builders/python/bin/detect"),
            ),
            (
                "bin/compile",
                include_str!("../../builders/python/bin/compile"),
            ),
            (
                "bin/release",
                include_str!("../../builders/python/bin/release"),
            ),
        ],
    ),
    (
        "static",
        [
            (
                "bin/detect",
                include_str!("../../builders/static/bin/detect"),
            ),
            (
                "bin/compile",
                include_str!("../../builders/static/bin/compile"),
            ),
            (
                "bin/release",
                include_str!("../../builders/static/bin/release"),
            ),
        ],
    ),
    (
        "procfile",
        [
            (
                "bin/detect",
                include_str!("../../builders/procfile/bin/detect"),
            ),
            (
                "bin/compile",
                include_str!("../../builders/procfile/bin/compile"),
            ),
            (
                "bin/release",
                include_str!("../../builders/procfile/bin/release"),
            ),
        ],
    ),
];

/// The launcher, the Entrypoint of every buildpack image (`/keel/launch`).
pub const LAUNCHER: &str = include_str!("../../builders/launcher/launch");

/// The stack's package lists (`#` comments and blank lines skipped).
pub const BUILD_PACKAGES: &str = include_str!("../../builders/stack/build.packages");
pub const RUN_PACKAGES: &str = include_str!("../../builders/stack/run.packages");

/// The package names of a list.
pub fn packages(list: &str) -> Vec<&str> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Names of the shipped buildpacks, in detection order.
pub fn names() -> Vec<&'static str> {
    SHIPPED.iter().map(|(n, _)| *n).collect()
}

fn files(name: &str) -> Option<&'static [File; 3]> {
    SHIPPED.iter().find(|(n, _)| *n == name).map(|(_, f)| f)
}

/// What a shipped buildpack's `bin/detect` looks for: its `# keel-detect:` line.
pub fn looks_for(detect_script: &str) -> Option<String> {
    detect_script
        .lines()
        .find_map(|l| l.strip_prefix("# keel-detect:"))
        .map(|s| s.trim().to_string())
}

/// Writes shipped buildpack `name` into the root (once per content) and returns its dir.
pub fn write_out(root: &Path, name: &str) -> Result<PathBuf, BuildpackError> {
    use std::os::unix::fs::PermissionsExt;
    let files = files(name).ok_or_else(|| BuildpackError::UnknownBuildpack {
        name: name.to_string(),
        shipped: names().join(", "),
    })?;
    let mut h = Sha256::new();
    for (p, text) in files {
        h.update(p.as_bytes());
        h.update(Sha256::digest(text.as_bytes()));
    }
    let digest = hex::encode(h.finalize());
    let dir = root
        .join("buildpacks/shipped")
        .join(format!("{name}-{}", &digest[..16]));
    if dir.join("bin/release").is_file() {
        return Ok(dir);
    }
    let io = |path: &Path, source| BuildpackError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Written beside, then renamed: a concurrent build sees all of it or none.
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    for (p, text) in files {
        let f = tmp.join(p);
        hostfs::create_dir_all(f.parent().expect("a bin/ file")).map_err(|s| io(&f, s))?;
        hostfs::write(&f, text).map_err(|s| io(&f, s))?;
        hostfs::set_permissions(&f, std::fs::Permissions::from_mode(0o755))
            .map_err(|s| io(&f, s))?;
    }
    if let Err(e) = hostfs::rename(&tmp, &dir) {
        let _ = hostfs::remove_dir_all(&tmp);
        if !dir.is_dir() {
            return Err(io(&dir, e));
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_buildpack_says_what_it_looks_for() {
        for (name, files) in SHIPPED {
            let detect = files.iter().find(|(p, _)| *p == "bin/detect").unwrap().1;
            assert!(
                looks_for(detect).is_some(),
                "{name}: no `# keel-detect:` line"
            );
            for (p, text) in files {
                assert!(text.starts_with("#!"), "{name}/{p} has no #! line");
            }
        }
        assert_eq!(names(), ["nodejs", "python", "static", "procfile"]);
        assert!(packages(BUILD_PACKAGES).contains(&"python3-venv"));
        assert!(!packages(RUN_PACKAGES).contains(&"build-essential"));
        assert!(LAUNCHER.starts_with("#!/bin/sh"));
    }
}
