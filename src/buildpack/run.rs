//! Executing a buildpack [`Plan`]: detect, compile and release each run in a container
//! of the stack's build image through keel's runtime (the path RUN steps take:
//! snapshot → `runtime::plan_for_rootfs` → `build::step::run`, output streamed line by
//! line into the build view). The app is a host directory bind-mounted at `/app`
//! (BUILD_DIR), beside CACHE_DIR (`/tmp/cache`, kept in the root per app), ENV_DIR
//! (`/tmp/env`, one file per config var) and the buildpacks (`/tmp/buildpacks/N`,
//! fresh copies, so an `export` file a buildpack writes never reaches the pristine one).
//! The snapshot is thrown away after each container: only `/app` is kept.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::release::{self, Release};
use super::{BuildpackError, Detection, Plan};
use crate::build::exec::State;
use crate::build::progress::BuildView;
use crate::runtime::{BindMount, Isolation, NetworkMode, RunOptions};
use crate::storage::Snapshotter;
use crate::store::{ImageRecord, Store};
use crate::sys::hostfs;

/// Where things are inside the build containers.
const APP: &str = "/app";
const CACHE: &str = "/tmp/cache";
const ENV: &str = "/tmp/env";
const BUILDPACKS: &str = "/tmp/buildpacks";
const OUT: &str = "/tmp/keel";
/// Debian's CA bundle, on the host and in the stack.
const HOST_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A finished buildpack build.
#[derive(Debug)]
pub struct Built {
    pub record: ImageRecord,
    pub release: Release,
    /// The buildpacks that compiled, in order, with what detect called the app.
    pub used: Vec<(super::Fetched, String)>,
}

/// The scratch tree of one build under `<root>/tmp`: `app/`, `bp/N/`, `env/`, `out/`.
struct Work {
    _dir: tempfile::TempDir,
    app: PathBuf,
    bp: PathBuf,
    env: PathBuf,
    out: PathBuf,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BuildpackError + '_ {
    move |source| BuildpackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies the tree `src` to `dst` (modes kept; a top-level `.git` is left out, as
/// Heroku leaves it out of the slug).
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), BuildpackError> {
    use std::os::unix::fs::PermissionsExt;
    let walk = walkdir::WalkDir::new(src)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == ".git"));
    for e in walk {
        let e = e.map_err(|e| io(src)(e.into()))?;
        let rel = e.path().strip_prefix(src).unwrap_or(e.path());
        let to = dst.join(rel);
        let ft = e.file_type();
        if ft.is_dir() {
            hostfs::create_dir_all(&to).map_err(io(&to))?;
            let mode = e
                .metadata()
                .map_err(|e| io(src)(e.into()))?
                .permissions()
                .mode();
            hostfs::set_permissions(&to, std::fs::Permissions::from_mode(mode & 0o7777))
                .map_err(io(&to))?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(e.path()).map_err(io(e.path()))?;
            hostfs::symlink(target, &to).map_err(io(&to))?;
        } else if ft.is_file() {
            hostfs::copy(e.path(), &to).map_err(io(&to))?;
        }
    }
    Ok(())
}

fn work_tree(store: &Store, plan: &Plan) -> Result<Work, BuildpackError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = store.tmp_dir();
    hostfs::create_dir_all(&tmp).map_err(io(&tmp))?;
    // Tagged with this keel's owner tag: gc removes a killed build's tree at once.
    let dir = hostfs::scratch_dir_in(&tmp, "buildpack").map_err(io(&tmp))?;
    let d = dir.path();
    let work = Work {
        app: d.join("app"),
        bp: d.join("bp"),
        env: d.join("env"),
        out: d.join("out"),
        _dir: dir,
    };
    copy_tree(&plan.app_dir, &work.app)?;
    // /app is the slug's top directory: world-readable whatever the umask.
    hostfs::set_permissions(&work.app, std::fs::Permissions::from_mode(0o755))
        .map_err(io(&work.app))?;
    for (i, bp) in plan.buildpacks.iter().enumerate() {
        copy_tree(&bp.dir, &work.bp.join(i.to_string()))?;
    }
    for d in [&work.env, &work.out, &plan.cache_dir] {
        hostfs::create_dir_all(d).map_err(io(d))?;
    }
    for (k, v) in &plan.env {
        let f = work.env.join(k);
        hostfs::write(&f, v).map_err(io(&f))?;
    }
    Ok(work)
}

/// Runs containers of the build image for this build.
struct Runner<'a> {
    store: &'a Store,
    snapshotter: Box<dyn Snapshotter>,
    backend: Box<dyn Isolation>,
    image: State,
    binds: Vec<BindMount>,
    env: Vec<String>,
    log_dir: &'a Path,
    id: String,
    view: &'a BuildView,
}

impl Runner<'_> {
    /// Runs `script` under `sh -c` as step `n`, its output streamed to the view.
    fn sh(&self, n: usize, script: &str) -> Result<(), crate::build::step::StepError> {
        let snap_id = format!("{}-{n}", self.id);
        let stack: Vec<_> = self
            .image
            .layers
            .iter()
            .map(|l| l.diff_id.clone())
            .collect();
        self.store.lease()?.protect_stack(&stack)?;
        let snap = crate::build::step::snapshot(
            self.store,
            self.snapshotter.as_ref(),
            &snap_id,
            &self.image.layers,
        )?;
        let ran = self.sh_in(n, script, &snap);
        let _ = self.snapshotter.remove(&snap);
        ran
    }

    fn sh_in(
        &self,
        n: usize,
        script: &str,
        snap: &crate::storage::Snapshot,
    ) -> Result<(), crate::build::step::StepError> {
        let host: String = snap.id.chars().take(12).collect();
        let scratch = self.store.tmp_dir();
        let (_etc, mut binds) = crate::runtime::etc::for_step(&scratch, NetworkMode::Host, &host)
            .map_err(|e| crate::build::step::StepError::Copy {
            dest: "/etc".into(),
            why: e.to_string(),
        })?;
        binds.extend(self.binds.iter().cloned());
        let opts = RunOptions {
            cmd: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
            entrypoint: Some(Vec::new()),
            env: self.env.clone(),
            workdir: Some(APP.into()),
            network: NetworkMode::Host,
            binds,
            ..Default::default()
        };
        let oci =
            self.image
                .config
                .config
                .to_oci()
                .map_err(|e| crate::build::step::StepError::Copy {
                    dest: "the build image's config".into(),
                    why: e.to_string(),
                })?;
        let spec =
            crate::runtime::plan_for_rootfs(&snap.id, &oci, &opts, &snap.rootfs).map_err(|e| {
                crate::build::step::StepError::Copy {
                    dest: "the build container".into(),
                    why: e.to_string(),
                }
            })?;
        let log = self.log_dir.join(format!("step-{n}.log"));
        crate::build::step::run(self.backend.as_ref(), &spec, snap, &log, |l| {
            self.view.step_output(n, l)
        })
    }
}

/// The image's state (config and layers) of a stack image, or the error naming the fix.
fn stack_state(store: &Store, image: &str, stack: &str) -> Result<State, BuildpackError> {
    let rec = store.resolve(image).map_err(|_| BuildpackError::NoStack {
        image: image.to_string(),
        stack: stack.to_string(),
    })?;
    crate::build::exec::state_of_image(store, &rec).map_err(|e| BuildpackError::Image {
        image: image.to_string(),
        why: e.to_string(),
    })
}

/// Runs the plan and stores the image; tags it only when everything succeeded.
pub fn run(
    store: &Store,
    plan: &Plan,
    view: &BuildView,
    log_dir: &Path,
) -> Result<Built, BuildpackError> {
    let build = stack_state(store, &plan.build_image, &plan.stack)?;
    let run_image = stack_state(store, &plan.run_image, &plan.stack)?;
    let work = work_tree(store, plan)?;
    let binds = stage_binds(plan, &work);
    let runner = Runner {
        store,
        snapshotter: crate::storage::open(None, store.root())?,
        backend: crate::runtime::backend_in(&plan.isolation, None, store.root())
            .ok_or_else(|| BuildpackError::Backend(plan.isolation.clone()))?,
        image: build,
        binds,
        env: vec![
            format!("HOME={APP}"),
            format!("STACK={}", plan.stack),
            format!("APP_DIR={APP}"),
            // node reads only its own CA list unless told about the system's.
            format!("NODE_EXTRA_CA_CERTS={HOST_CAS}"),
        ],
        log_dir,
        id: format!("bp-{}", crate::container::new_id().get(..12).unwrap_or("0")),
        view,
    };
    let detections = detect(&runner, plan, &work)?;
    let chosen = super::select(plan, &detections)?;
    let mut used = Vec::new();
    for (k, &i) in chosen.iter().enumerate() {
        let name = detections[i]
            .output
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        compile(&runner, plan, &chosen[..k], i, k + 2, &name)?;
        used.push((plan.buildpacks[i].clone(), name));
    }
    let rel = releases(&runner, plan, &chosen, &work, chosen.len() + 2)?;
    let record = super::slug::commit(store, plan, &run_image, &work.app, &rel, &used)?;
    Ok(Built {
        record,
        release: rel,
        used,
    })
}

/// What every stage container sees: the app, the cache, the env and output
/// directories, each buildpack, and the host's CA bundle. Compile fetches dependencies
/// over TLS as the host would: with the host's CAs (a host behind a TLS-inspecting proxy
/// trusts its CA; the stack does not know it).
fn stage_binds(plan: &Plan, work: &Work) -> Vec<BindMount> {
    let mut binds = vec![
        bind(&work.app, APP, false),
        bind(&plan.cache_dir, CACHE, false),
        bind(&work.env, ENV, true),
        bind(&work.out, OUT, false),
    ];
    for i in 0..plan.buildpacks.len() {
        binds.push(bind(
            &work.bp.join(i.to_string()),
            &format!("{BUILDPACKS}/{i}"),
            false,
        ));
    }
    let host_cas = Path::new(HOST_CAS);
    if host_cas.is_file() {
        binds.push(bind(host_cas, HOST_CAS, true));
    }
    binds
}

fn bind(src: &Path, dst: &str, ro: bool) -> BindMount {
    BindMount {
        src: src.to_path_buf(),
        dst: dst.to_string(),
        ro,
    }
}

/// Step 1: every candidate's `bin/detect /app`, results written to `/tmp/keel`.
fn detect(r: &Runner, plan: &Plan, work: &Work) -> Result<Vec<Detection>, BuildpackError> {
    let started = Instant::now();
    let names: Vec<&str> = plan.buildpacks.iter().map(|b| b.name.as_str()).collect();
    r.view
        .step_start(1, &format!("detect: {}", names.join(", ")));
    let script: String = (0..plan.buildpacks.len())
        .map(|i| {
            format!(
                "{BUILDPACKS}/{i}/bin/detect {APP} >{OUT}/detect-{i}.out 2>&1; echo $? >{OUT}/detect-{i}.code\n"
            )
        })
        .collect();
    r.sh(1, &script).inspect_err(|_| r.view.step_failed())?;
    let mut out = Vec::new();
    for i in 0..plan.buildpacks.len() {
        let read = |ext: &str| std::fs::read_to_string(work.out.join(format!("detect-{i}.{ext}")));
        let code = read("code")
            .ok()
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(1);
        out.push(Detection {
            code,
            output: read("out").unwrap_or_default(),
        });
    }
    r.view.step_end(
        1,
        Some(&format!("DONE {:.2}s", started.elapsed().as_secs_f64())),
    );
    Ok(out)
}

/// Step `n`: buildpack `i`'s `bin/compile`, after sourcing the `export` files of the
/// buildpacks that compiled before it (`before`).
fn compile(
    r: &Runner,
    plan: &Plan,
    before: &[usize],
    i: usize,
    n: usize,
    detected: &str,
) -> Result<(), BuildpackError> {
    let started = Instant::now();
    let bp = &plan.buildpacks[i];
    let shown = if detected.is_empty() {
        bp.name.clone()
    } else {
        format!("{} ({detected})", bp.name)
    };
    r.view.step_start(n, &format!("compile: {shown}"));
    let mut script = String::from("set -e\n");
    for j in before {
        let e = format!("{BUILDPACKS}/{j}/export");
        script.push_str(&format!("if [ -f {e} ]; then . {e}; fi\n"));
    }
    script.push_str(&format!(
        "cd {APP}\nexec {BUILDPACKS}/{i}/bin/compile {APP} {CACHE} {ENV}\n"
    ));
    match r.sh(n, &script) {
        Ok(()) => {
            r.view.step_end(
                n,
                Some(&format!("DONE {:.2}s", started.elapsed().as_secs_f64())),
            );
            Ok(())
        }
        Err(crate::build::step::StepError::Failed { code, .. }) => {
            r.view.step_failed();
            Err(BuildpackError::Compile {
                name: bp.name.clone(),
                code,
                log: r.log_dir.join(format!("step-{n}.log")),
            })
        }
        Err(e) => {
            r.view.step_failed();
            Err(e.into())
        }
    }
}

/// Step `n`: each compiled buildpack's `bin/release /app` (when it has one), merged with
/// the app's Procfile.
fn releases(
    r: &Runner,
    plan: &Plan,
    chosen: &[usize],
    work: &Work,
    n: usize,
) -> Result<Release, BuildpackError> {
    let started = Instant::now();
    r.view.step_start(n, "release");
    let script: String = chosen
        .iter()
        .map(|i| {
            let bin = format!("{BUILDPACKS}/{i}/bin/release");
            format!("if [ -x {bin} ]; then {bin} {APP} >{OUT}/release-{i}.yml; fi\n")
        })
        .collect();
    r.sh(n, &format!("set -e\n{script}"))
        .inspect_err(|_| r.view.step_failed())?;
    let mut parsed = Vec::new();
    for &i in chosen {
        let text =
            std::fs::read_to_string(work.out.join(format!("release-{i}.yml"))).unwrap_or_default();
        parsed.push(release::parse_release(&text, &plan.buildpacks[i].name)?);
    }
    let procfile = match std::fs::read_to_string(work.app.join("Procfile")) {
        Ok(text) => Some(release::parse_procfile(&text)?),
        Err(_) => None,
    };
    let merged = release::merge(&parsed, procfile.as_ref());
    if merged.processes.is_empty() {
        r.view.step_failed();
        return Err(BuildpackError::NoProcesses);
    }
    let types: Vec<String> = merged.processes.keys().cloned().collect();
    r.view
        .step_output(n, &format!("process types: {}", types.join(", ")));
    r.view.step_end(
        n,
        Some(&format!("DONE {:.2}s", started.elapsed().as_secs_f64())),
    );
    Ok(merged)
}

/// `KEY=VALUE` config vars from `--env`/`--env-file` texts, in order (a later key wins).
pub fn env_map(entries: &[String]) -> Result<BTreeMap<String, String>, BuildpackError> {
    let mut out = BTreeMap::new();
    for e in entries {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| BuildpackError::Env(e.clone()))?;
        if k.is_empty() || k.contains('/') || k.contains(char::is_whitespace) {
            return Err(BuildpackError::Env(e.clone()));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn env_entries() {
        let m = super::env_map(&["A=1".into(), "B=x=y".into(), "A=2".into()]).unwrap();
        assert_eq!(m["A"], "2");
        assert_eq!(m["B"], "x=y");
        for bad in ["novalue", "=x", "a/b=1"] {
            assert!(super::env_map(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
