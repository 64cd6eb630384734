//! The differential suite: each case is a Dockerfile and a context built by keel and by
//! buildah (a second, independent implementation), both images reduced to their file tree
//! and the config fields a Dockerfile sets (`image.rs`), and compared. Where buildah 1.28
//! differs from BuildKit (the reference for `docker build`), the case adjusts buildah's
//! result to BuildKit's and says why, citing BuildKit's docs or frontend source.
//!
//! One buildah root is shared by all cases (under `CARGO_TARGET_TMPDIR`, wiped once per
//! run) and holds the same busybox base keel bootstraps, imported from `keel save`.
// Test code writes fixtures with std::fs and prints diagnostics: exempt from the guard
// rails (clippy.toml, Cargo.toml [lints.clippy]), which are for keel's own code.
#![allow(clippy::disallowed_methods, clippy::print_stdout, clippy::print_stderr)]

#[path = "../it/common.rs"]
mod common;

mod archive;
mod cases;
mod history;
mod hunt;
mod image;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::Keel;
use image::Image;

/// The shared buildah storage, holding `localhost/bb` (keel's busybox bootstrap image).
struct Buildah {
    dir: PathBuf,
}

impl Buildah {
    fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--storage-driver")
            .arg("vfs");
        c
    }
}

fn buildah() -> &'static Buildah {
    static B: OnceLock<Buildah> = OnceLock::new();
    B.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("diff-buildah");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let k = Keel::new();
        k.ok(&["bootstrap", "busybox", "bb"]);
        let tar = dir.join("bb.tar");
        k.ok(&["save", "bb", "-o", tar.to_str().unwrap()]);
        let b = Buildah { dir };
        common::run_ok(
            b.cmd()
                .args(["pull", "-q"])
                .arg(format!("docker-archive:{}", tar.display())),
        );
        let id = common::run_ok(b.cmd().args(["images", "-q"]));
        common::run_ok(b.cmd().args(["tag", id.trim(), "localhost/bb:latest"]));
        b
    })
}

/// True when the suite can run here; under `CI=true` a missing prerequisite fails.
fn ready() -> bool {
    let missing = if !common::is_root() {
        Some("root (buildah and keel build as root)")
    } else if !common::have("buildah") {
        Some("buildah (apt-get install buildah)")
    } else if !Path::new("/usr/sbin/runc").exists() {
        Some("/usr/sbin/runc (apt-get install runc)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the differential suite needs {why} under CI")
        }
        Some(why) => {
            eprintln!("SKIP differential case: needs {why}");
            false
        }
    }
}

/// One case: a Dockerfile, its context, build flags both builders take, and how BuildKit's
/// result differs from buildah's (`buildkit`, each adjustment explained where it is made).
pub struct Case {
    name: &'static str,
    dockerfile: String,
    files: Vec<(String, Vec<u8>)>,
    setup: Option<fn(&Path)>,
    args: Vec<String>,
    buildkit: Option<fn(&mut Image)>,
    buildah_as: Option<String>,
    history: bool,
}

impl Case {
    pub fn new(name: &'static str, dockerfile: &str) -> Case {
        Case {
            name,
            dockerfile: dockerfile.to_string(),
            files: Vec::new(),
            setup: None,
            args: Vec::new(),
            buildkit: None,
            buildah_as: None,
            history: false,
        }
    }

    /// Compares the history entries after the base (and the layer count) as well: the
    /// case's `buildkit` adjustment states BuildKit's (`Image::set_history`).
    pub fn history(mut self) -> Case {
        self.history = true;
        self
    }
    /// A context file (a path ending in `/` is a directory).
    pub fn file(mut self, path: &str, content: impl AsRef<[u8]>) -> Case {
        self.files.push((path.into(), content.as_ref().to_vec()));
        self
    }
    /// Anything else the context needs (symlinks, modes, archives).
    pub fn setup(mut self, f: fn(&Path)) -> Case {
        self.setup = Some(f);
        self
    }
    pub fn arg(mut self, a: &str) -> Case {
        self.args.push(a.into());
        self
    }
    /// Turns buildah's image into what BuildKit builds, where the two differ.
    pub fn buildkit(mut self, f: fn(&mut Image)) -> Case {
        self.buildkit = Some(f);
        self
    }

    /// Gives buildah this Dockerfile instead: for syntax buildah 1.28 does not parse
    /// (heredocs, `RUN --network`, `${V-w}`), an equivalent BuildKit gives the same image
    /// for. The case's comment says why.
    pub fn buildah_as(mut self, dockerfile: &str) -> Case {
        self.buildah_as = Some(dockerfile.to_string());
        self
    }

    fn context(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("Dockerfile"), &self.dockerfile).unwrap();
        for (p, c) in &self.files {
            let path = dir.join(p);
            if p.ends_with('/') {
                std::fs::create_dir_all(&path).unwrap();
                continue;
            }
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        if let Some(f) = self.setup {
            f(dir);
        }
    }

    /// The build flags, `{ctx}` standing for the context directory.
    fn flags(&self, ctx: &Path) -> Vec<String> {
        let ctx = ctx.to_str().unwrap();
        self.args.iter().map(|a| a.replace("{ctx}", ctx)).collect()
    }

    fn keel(&self, ctx: &Path) -> (Image, (usize, usize)) {
        let k = Keel::new();
        k.ok(&["bootstrap", "busybox", "bb"]);
        let base: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "bb"])).unwrap();
        let base = (
            base[0]["Config"]["history"].as_array().map_or(0, Vec::len),
            base[0]["Manifest"]["layers"].as_array().map_or(0, Vec::len),
        );
        let mut args = vec!["build", "-q", "-t", "case"];
        let flags = self.flags(ctx);
        args.extend(flags.iter().map(String::as_str));
        args.push(ctx.to_str().unwrap());
        k.ok(&args);
        (
            Image::from_oci_layout(&k.root().join("images"), "case"),
            base,
        )
    }

    fn buildah(&self, ctx: &Path, out: &Path) -> Image {
        self.buildah_image(ctx, out)
    }

    /// Builds with buildah and pushes the image to `out` (a `dir:` transport).
    fn buildah_image(&self, ctx: &Path, out: &Path) -> Image {
        let b = buildah();
        let tag = format!("localhost/{}", self.name.replace('_', "-"));
        common::run_ok(
            b.cmd()
                // Layers as docker makes them, but no layer cache: cases run in parallel on
                // one buildah root, and another case's cached layer must never stand in for
                // this one's reference (it did: /f came back with another case's content).
                .args(["bud", "-q", "--layers", "--no-cache"])
                .args(["--runtime", "/usr/sbin/runc"])
                .args(["--pull=never", "--format", "docker", "-t", &tag])
                .args(self.flags(ctx))
                .arg(ctx),
        );
        common::run_ok(
            b.cmd()
                .args(["push", "-q", &tag])
                .arg(format!("dir:{}", out.display())),
        );
        Image::from_dir_transport(out)
    }

    /// Builds with both and asserts the images agree (after the BuildKit adjustments).
    pub fn check(self) {
        if !ready() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        self.context(&ctx);
        let (mut got, base) = self.keel(&ctx);
        let base = self.history.then_some(base);
        got.skip_history(base);
        if let Some(df) = &self.buildah_as {
            std::fs::write(ctx.join("Dockerfile"), df).unwrap();
        }
        let mut want = self.buildah(&ctx, &tmp.path().join("buildah"));
        want.drop_mount_stubs();
        want.skip_history(base);
        if let Some(f) = self.buildkit {
            f(&mut want);
        }
        if got != want {
            panic!(
                "{}: keel's image differs from BuildKit's:\n{}",
                self.name,
                diff(&want, &got)
            );
        }
    }
}

/// The differing paths and config fields, one per line: `-` expected, `+` keel's.
fn diff(want: &Image, got: &Image) -> String {
    let mut out = String::new();
    let keys: std::collections::BTreeSet<&String> =
        want.tree.keys().chain(got.tree.keys()).collect();
    for k in keys {
        let (w, g) = (want.tree.get(k), got.tree.get(k));
        if w != g {
            out += &format!("  /{k}\n    - {w:?}\n    + {g:?}\n");
        }
    }
    let keys: std::collections::BTreeSet<&String> =
        want.config.keys().chain(got.config.keys()).collect();
    for k in keys {
        let (w, g) = (want.config.get(k), got.config.get(k));
        if w != g {
            out += &format!("  config {k}\n    - {w:?}\n    + {g:?}\n");
        }
    }
    if want.history != got.history || want.layers != got.layers {
        out += &format!(
            "  history ({} vs {} layers)\n    - {:#?}\n    + {:#?}\n",
            want.layers, got.layers, want.history, got.history
        );
    }
    out
}
