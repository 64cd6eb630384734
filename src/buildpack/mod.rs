//! `keel buildpack build`: an app directory with no Dockerfile becomes an image through
//! Heroku classic buildpacks (docs/buildpacks.md).
//!
//! The pipeline, as data first: the request's buildpack references are parsed and
//! fetched ([`source`]), then a [`Plan`] names the stack's build and run images, the
//! buildpacks in order and the app's cache directory. Executing it ([`run`]) runs
//! `bin/detect`, each `bin/compile BUILD_DIR CACHE_DIR ENV_DIR` and `bin/release` in
//! containers of the stack's build image (keel's runtime, as RUN steps), with the app
//! at `/app`; the releases and the Procfile are merged ([`release`], pure) and the slug
//! becomes one reproducible `/app` layer on the run image ([`slug`], through
//! `image::commit_image`). Nothing is tagged unless every step succeeded.
//!
//! This module does not print: progress goes to the caller's `BuildView`.
pub mod release;
pub mod run;
pub mod shipped;
pub mod slug;
pub mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use source::Fetched;

#[derive(Debug, thiserror::Error)]
pub enum BuildpackError {
    #[error("unknown buildpack {name:?}: name a shipped one ({shipped}), a directory (./dir), a git URL (https://…/x.git#ref) or a tarball URL")]
    UnknownBuildpack { name: String, shipped: String },
    #[error("{0} is not a buildpack: it needs bin/detect and bin/compile")]
    NotABuildpack(PathBuf),
    #[error("fetching buildpack {source_text}: {why}")]
    Fetch { source_text: String, why: String },
    /// The download or checkout itself (its message names the URL).
    #[error("fetching buildpack {0}")]
    Remote(crate::build::remote::RemoteError),
    #[error("{0} is not a directory: give the app's directory")]
    NoApp(PathBuf),
    #[error("stack image {image} is missing: make the stack with `keel bootstrap stack {stack}` (or pass --stack)")]
    NoStack { image: String, stack: String },
    #[error("no buildpack detected this app ({app}); tried:\n{tried}\nadd one of those files, name a buildpack with --buildpack, or list them in .buildpacks")]
    NoneDetected { app: String, tried: String },
    #[error("buildpack {name} does not apply to this app ({why}); drop it from --buildpack/.buildpacks or add what it looks for")]
    NotDetected { name: String, why: String },
    #[error(
        "buildpack {name}: bin/compile failed (exit {code}); its output is above and in {log}"
    )]
    Compile {
        name: String,
        code: i32,
        log: PathBuf,
    },
    #[error("buildpack {buildpack}: bin/release printed bad YAML: {why}")]
    Release { buildpack: String, why: String },
    #[error("Procfile:{line}: {why}")]
    Procfile { line: usize, why: String },
    #[error("the app has no process types: add a Procfile (`web: COMMAND`) or a buildpack whose bin/release names one")]
    NoProcesses,
    #[error("invalid --env value {0:?}: expected KEY=VALUE")]
    Env(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Step(#[from] crate::build::step::StepError),
    #[error(transparent)]
    Spec(#[from] crate::runtime::spec::SpecError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Etc(#[from] crate::runtime::etc::EtcError),
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    #[error("reading image {image}: {why}")]
    Image { image: String, why: String },
    #[error("no isolation backend {0:?}: use namespaces, chroot or oci")]
    Backend(String),
}

impl From<crate::build::remote::RemoteError> for BuildpackError {
    fn from(e: crate::build::remote::RemoteError) -> Self {
        BuildpackError::Remote(e)
    }
}

/// What the user asked for (`keel buildpack build`, or an `[[app]]` entry).
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    pub app_dir: PathBuf,
    /// The image name to tag (`NAME[:TAG]`).
    pub name: String,
    /// `--buildpack` values in order; empty: `.buildpacks`, else detection.
    pub buildpacks: Vec<String>,
    /// The stack's base name: its images are `STACK-build` and `STACK-run`.
    pub stack: String,
    /// Config vars (`--env`, `--env-file`): ENV_DIR at build time, Env at run time.
    pub env: BTreeMap<String, String>,
    /// `namespaces` (default), `chroot` or `oci`.
    pub isolation: Option<String>,
}

/// The default stack name (`keel bootstrap stack keel-stack`).
pub const DEFAULT_STACK: &str = "keel-stack";

/// A stack's build and run image names: `NAME-build[:TAG]`, `NAME-run[:TAG]`.
pub fn stack_images(stack: &str) -> (String, String) {
    let slash = stack.rfind('/').map_or(0, |i| i + 1);
    match stack[slash..].find(':') {
        Some(c) => {
            let (name, tag) = stack.split_at(slash + c);
            (format!("{name}-build{tag}"), format!("{name}-run{tag}"))
        }
        None => (format!("{stack}-build"), format!("{stack}-run")),
    }
}

/// The buildpack plan of one build, before anything runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub app_dir: PathBuf,
    pub name: String,
    pub stack: String,
    pub build_image: String,
    pub run_image: String,
    /// The candidates in order, fetched and pinned.
    pub buildpacks: Vec<Fetched>,
    /// Named by the user (each must detect) or the shipped list (the first that detects).
    pub explicit: bool,
    /// `<root>/buildpacks/cache/<app>`: CACHE_DIR, kept across builds.
    pub cache_dir: PathBuf,
    pub env: BTreeMap<String, String>,
    pub isolation: String,
}

/// The `.buildpacks` lines of an app (comments and blank lines skipped).
pub fn dot_buildpacks(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// The cache directory name for an image name: its repository, made path-safe.
pub fn cache_name(image: &str) -> String {
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    let repo = match image[slash..].find(':') {
        Some(c) => &image[..slash + c],
        None => image,
    };
    repo.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Parses and fetches the buildpacks and names the stack images: the plan.
pub fn plan(root: &Path, req: &BuildRequest) -> Result<Plan, BuildpackError> {
    if !req.app_dir.is_dir() {
        return Err(BuildpackError::NoApp(req.app_dir.clone()));
    }
    let dot = req.app_dir.join(".buildpacks");
    let (texts, base) = if !req.buildpacks.is_empty() {
        (
            req.buildpacks.clone(),
            std::env::current_dir().unwrap_or_default(),
        )
    } else if let Ok(text) = std::fs::read_to_string(&dot) {
        (dot_buildpacks(&text), req.app_dir.clone())
    } else {
        (Vec::new(), req.app_dir.clone())
    };
    let explicit = !texts.is_empty();
    let texts = if explicit {
        texts
    } else {
        shipped::names().into_iter().map(String::from).collect()
    };
    let buildpacks = texts
        .iter()
        .map(|t| source::fetch(&source::parse(t, &base)?, t, root))
        .collect::<Result<Vec<_>, _>>()?;
    let stack = if req.stack.is_empty() {
        DEFAULT_STACK.to_string()
    } else {
        req.stack.clone()
    };
    let (build_image, run_image) = stack_images(&stack);
    Ok(Plan {
        app_dir: req.app_dir.clone(),
        name: req.name.clone(),
        stack,
        build_image,
        run_image,
        buildpacks,
        explicit,
        cache_dir: root.join("buildpacks/cache").join(cache_name(&req.name)),
        env: req.env.clone(),
        isolation: req.isolation.clone().unwrap_or_else(|| "namespaces".into()),
    })
}

/// One buildpack's `bin/detect` result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub code: i32,
    /// Its output (the framework name on success).
    pub output: String,
}

/// What a buildpack looks for, for the error listing: its `# keel-detect:` line, else
/// what its `bin/detect` said.
fn looks_for(bp: &Fetched, d: &Detection) -> String {
    // Read inside the buildpack's tree (its links resolve there, never on the host),
    // and only its start: the line sought is a comment at the top.
    let mut script = String::new();
    if let Ok(f) = crate::sys::rootfs::Rootfs::open(&bp.dir)
        .and_then(|tree| tree.open_read(std::path::Path::new("bin/detect")))
    {
        let _ = std::io::Read::read_to_string(&mut std::io::Read::take(f, 64 << 10), &mut script);
    }
    match shipped::looks_for(&script) {
        Some(s) => format!("looks for {s}"),
        None => {
            let said = d.output.lines().next().unwrap_or("").trim();
            if said.is_empty() {
                format!("its bin/detect exited {}", d.code)
            } else {
                format!("its bin/detect exited {}: {said}", d.code)
            }
        }
    }
}

/// Which buildpacks compile (indexes into `plan.buildpacks`), Heroku's rule: named
/// buildpacks all run and each must detect; otherwise the first that detects.
pub fn select(plan: &Plan, results: &[Detection]) -> Result<Vec<usize>, BuildpackError> {
    if plan.explicit {
        for (bp, d) in plan.buildpacks.iter().zip(results) {
            if d.code != 0 {
                return Err(BuildpackError::NotDetected {
                    name: bp.name.clone(),
                    why: looks_for(bp, d),
                });
            }
        }
        return Ok((0..plan.buildpacks.len()).collect());
    }
    if let Some(i) = results.iter().position(|d| d.code == 0) {
        return Ok(vec![i]);
    }
    let tried = plan
        .buildpacks
        .iter()
        .zip(results)
        .map(|(bp, d)| format!("  {}: {}", bp.name, looks_for(bp, d)))
        .collect::<Vec<_>>()
        .join("\n");
    Err(BuildpackError::NoneDetected {
        app: plan.app_dir.display().to_string(),
        tried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_image_names() {
        for (stack, build, run) in [
            ("keel-stack", "keel-stack-build", "keel-stack-run"),
            ("heroku:24", "heroku-build:24", "heroku-run:24"),
            (
                "localhost:5000/st",
                "localhost:5000/st-build",
                "localhost:5000/st-run",
            ),
            ("reg:5000/st:1", "reg:5000/st-build:1", "reg:5000/st-run:1"),
        ] {
            assert_eq!(stack_images(stack), (build.into(), run.into()), "{stack}");
        }
        assert_eq!(cache_name("reg:5000/my/app:v2"), "reg_5000_my_app");
        assert_eq!(cache_name("flask"), "flask");
        assert_eq!(
            dot_buildpacks("# order\nnodejs\n\n https://x/y.git#main \n"),
            ["nodejs", "https://x/y.git#main"]
        );
    }

    fn plan_of(explicit: bool) -> Plan {
        let dir = |n: &str| Fetched {
            name: n.into(),
            source: n.into(),
            digest: String::new(),
            commit: None,
            dir: PathBuf::from("/nonexistent"),
        };
        Plan {
            app_dir: "/srv/app".into(),
            name: "app".into(),
            stack: DEFAULT_STACK.into(),
            build_image: String::new(),
            run_image: String::new(),
            buildpacks: vec![dir("nodejs"), dir("python")],
            explicit,
            cache_dir: PathBuf::new(),
            env: BTreeMap::new(),
            isolation: "namespaces".into(),
        }
    }

    #[test]
    fn selection_follows_herokus_rules() {
        let ok = || Detection {
            code: 0,
            output: "X".into(),
        };
        let no = |out: &str| Detection {
            code: 1,
            output: out.into(),
        };
        assert_eq!(select(&plan_of(false), &[no(""), ok()]).unwrap(), [1]);
        assert_eq!(select(&plan_of(false), &[ok(), ok()]).unwrap(), [0]);
        assert_eq!(select(&plan_of(true), &[ok(), ok()]).unwrap(), [0, 1]);
        let e = select(&plan_of(false), &[no(""), no("needs setup.py")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nodejs: its bin/detect exited 1"), "{e}");
        assert!(
            e.contains("python: its bin/detect exited 1: needs setup.py"),
            "{e}"
        );
        let e = select(&plan_of(true), &[ok(), no("")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("buildpack python does not apply"), "{e}");
    }
}
