//! The build executor: walks the stages a target needs, evaluates each instruction
//! (variable expansion, ARG scoping), looks up the step cache, and on a miss runs the
//! step in a snapshot and commits its layer. Reports one line per event.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::cache::{BuildCache, KeyInputs};
use super::copy::{self, Owner};
use super::mounts;

mod copy_step;
mod link;
mod run_step;
use super::plan::{Cmdline, Plan, RunMount, Stage, Step, StepKind};
use super::progress::{BuildView, ViewMode};
use super::step::{self, StepError};
use crate::context::{Context, Selection, StatIndex};
use crate::image::StoredLayer;
use crate::runtime::{self, BindMount, Isolation, NetworkMode, RunOptions};
use crate::storage::Snapshotter;
use crate::store::{ImageRecord, Store};

/// Where a build stands after a step: the image config (as JSON, since docker's config
/// has fields the OCI types lack: Healthcheck, Shell, OnBuild) and its layers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub config: Value,
    pub layers: Vec<StoredLayer>,
    /// The cache key chain: the previous step's key, or the base's manifest digest.
    pub key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{file}:{line}: {step}: {source}")]
    Step {
        file: String,
        line: usize,
        step: String,
        source: Box<StepFailure>,
    },
    #[error("{file}:{line}: base image {image:?} is not in the store; create it first (`keel bootstrap busybox {image}`, `keel load -i FILE`, `keel import ROOTFS.tar {image}` or build it)")]
    MissingBase {
        file: String,
        line: usize,
        image: String,
    },
    #[error(transparent)]
    Plan(#[from] super::plan::PlanError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    #[error(
        "interrupted by signal {0}; the step's container was stopped and its snapshot removed"
    )]
    Interrupted(i32),
}

/// Why one step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepFailure {
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    #[error(transparent)]
    Copy(#[from] copy::CopyError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Spec(#[from] runtime::spec::SpecError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// The knobs of `keel build`.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub file_name: String,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub labels: Vec<(String, String)>,
    pub explain: bool,
    pub isolation: Option<String>,
    pub storage_driver: Option<String>,
    /// Layer mtimes and config times: `None` keeps real mtimes (`--timestamps keep`).
    pub epoch: Option<u64>,
    pub quiet: bool,
    /// Spinners with each step's output tail (a terminal) rather than plain lines.
    pub terminal: bool,
    /// Secrets and SSH agents for `RUN --mount=type=secret|ssh`.
    pub credentials: mounts::Credentials,
}

/// What a build produced and did.
pub struct BuildOutcome {
    pub state: State,
    pub ran: usize,
    pub cached: usize,
    pub log_dir: PathBuf,
}

/// One build in progress.
pub struct Executor<'a> {
    store: &'a Store,
    plan: &'a Plan,
    opts: &'a BuildOptions,
    context: &'a Context,
    stat: StatIndex,
    cache: BuildCache,
    snapshotter: Box<dyn Snapshotter>,
    backend: Box<dyn Isolation>,
    results: BTreeMap<usize, State>,
    counter: usize,
    ran: usize,
    cached: usize,
    metadata: usize,
    log_dir: PathBuf,
    build_id: String,
    started: Instant,
    view: BuildView,
}

const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

fn env_list(cfg: &Value) -> Vec<String> {
    cfg["config"]["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn set_env(cfg: &mut Value, k: &str, v: &str) {
    let mut env = env_list(cfg);
    env.retain(|e| e.split('=').next() != Some(k));
    env.push(format!("{k}={v}"));
    cfg["config"]["Env"] = json!(env);
}

fn config_str(cfg: &Value, field: &str) -> Option<String> {
    cfg["config"][field]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn shell_of(cfg: &Value) -> Vec<String> {
    cfg["config"]["Shell"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .filter(|v: &Vec<String>| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_SHELL.iter().map(|s| s.to_string()).collect())
}

fn empty_config() -> Value {
    json!({
        "architecture": crate::image::host_arch().to_string(),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    })
}

impl<'a> Executor<'a> {
    pub fn new(
        store: &'a Store,
        plan: &'a Plan,
        opts: &'a BuildOptions,
        context: &'a Context,
    ) -> Result<Executor<'a>, BuildError> {
        let cache = BuildCache::new(store.root());
        let stat = StatIndex::load(&cache.stat_dir(), context.root());
        let snapshotter = crate::storage::open(opts.storage_driver.as_deref(), store.root())?;
        let isolation = opts.isolation.as_deref().unwrap_or("namespaces");
        let backend = runtime::backend_in(isolation, None, store.root()).ok_or_else(|| {
            runtime::RuntimeError::Unavailable {
                backend: "unknown",
                why: "use --isolation namespaces, chroot or oci".into(),
            }
        })?;
        backend.available()?;
        // Ctrl-C / SIGTERM: record it, let the running step's container get it, and stop
        // between steps with everything cleaned up (rather than dying mid-step).
        crate::sys::proc::catch_termination().map_err(runtime::RuntimeError::from)?;
        let build_id = crate::container::new_id()[..12].to_string();
        let log_dir = store.root().join("logs").join("last-build");
        let _ = std::fs::remove_dir_all(&log_dir);
        let _ = std::fs::create_dir_all(&log_dir);
        Ok(Executor {
            store,
            plan,
            opts,
            context,
            stat,
            cache,
            snapshotter,
            backend,
            results: BTreeMap::new(),
            counter: 0,
            ran: 0,
            cached: 0,
            metadata: 0,
            log_dir,
            build_id,
            started: Instant::now(),
            view: BuildView::new(if opts.quiet {
                ViewMode::Quiet
            } else if opts.terminal {
                ViewMode::Terminal
            } else {
                ViewMode::Plain
            }),
        })
    }

    fn say(&self, line: impl AsRef<str>) {
        self.view.line(line.as_ref());
    }

    /// Builds the target stage and everything it needs.
    pub fn build(mut self) -> Result<BuildOutcome, BuildError> {
        let target = self.plan.target_index(self.opts.target.as_deref())?;
        for i in self.plan.needed(target)? {
            let st = self.build_stage(&self.plan.stages[i])?;
            self.results.insert(i, st);
        }
        self.stat.save();
        let state = self
            .results
            .remove(&target)
            .expect("the target stage was built");
        self.say(format!(
            "built in {:.2}s: {} steps ran, {} cached, {} metadata-only",
            self.started.elapsed().as_secs_f64(),
            self.ran,
            self.cached,
            self.metadata
        ));
        Ok(BuildOutcome {
            state,
            ran: self.ran,
            cached: self.cached,
            log_dir: self.log_dir,
        })
    }

    fn global_args(&self) -> BTreeMap<String, String> {
        super::plan::global_arg_values(&self.plan.global_args, &self.opts.build_args)
    }

    fn expand(&self, word: &str, vars: &BTreeMap<String, String>) -> Result<String, StepFailure> {
        let lookup = |k: &str| vars.get(k).cloned();
        crate::dockerfile::expand::process_word(word, &lookup)
            .map_err(|e| StepFailure::Invalid(e.to_string()))
    }

    fn base_state(&mut self, stage: &Stage) -> Result<State, BuildError> {
        let globals = self.global_args();
        let base = self
            .expand(&stage.base, &globals)
            .map_err(|e| self.fail(stage.line, &format!("FROM {}", stage.base), e))?;
        if let Some(p) = &stage.platform {
            let text = format!("FROM --platform={p} {}", stage.base);
            let wanted = self
                .expand(p, &globals)
                .map_err(|e| self.fail(stage.line, &text, e))?;
            let host = format!("linux/{}", crate::image::host_arch());
            if wanted.trim_end_matches("/v8") != host {
                let why = format!("keel builds for the host platform ({host}) only; drop --platform or use $BUILDPLATFORM");
                return Err(self.fail(stage.line, &text, StepFailure::Invalid(why)));
            }
        }
        if base == "scratch" {
            return Ok(State {
                config: empty_config(),
                layers: Vec::new(),
                key: "scratch".into(),
            });
        }
        if let Some(j) = self.plan.stage_by_ref(&base).filter(|j| *j < stage.index) {
            return Ok(self
                .results
                .get(&j)
                .cloned()
                .expect("dependencies are built first"));
        }
        let rec = match self.store.resolve(&base) {
            Ok(r) => r,
            Err(crate::store::StoreError::NoSuchImage(_)) => {
                return Err(BuildError::MissingBase {
                    file: self.opts.file_name.clone(),
                    line: stage.line,
                    image: base,
                })
            }
            Err(e) => return Err(e.into()),
        };
        Ok(state_of_image(self.store, &rec)?)
    }

    fn fail(&self, line: usize, step: &str, source: StepFailure) -> BuildError {
        BuildError::Step {
            file: self.opts.file_name.clone(),
            line,
            step: step.to_string(),
            source: Box::new(source),
        }
    }

    fn build_stage(&mut self, stage: &Stage) -> Result<State, BuildError> {
        let mut state = self.base_state(stage)?;
        let label = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.index));
        self.counter += 1;
        self.say(format!("#{} [{label}] FROM {}", self.counter, stage.base));
        // Build args visible in this stage (declared by ARG here) and whether ENTRYPOINT
        // was set here (it resets an inherited CMD).
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        let mut cmd_set = false;
        let triggers: Vec<String> = state.config["config"]["OnBuild"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !triggers.is_empty() {
            state.config["config"]["OnBuild"] = Value::Null;
            let steps = super::front::triggers(&triggers)
                .map_err(|e| self.fail(stage.line, "ONBUILD", StepFailure::Invalid(e)))?;
            for mut s in steps {
                s.line = stage.line; // a trigger fails at the FROM that pulled it in
                state = self.step(&label, stage, &s, state, &mut args, &mut cmd_set)?;
            }
        }
        for s in &stage.steps {
            state = self.step(&label, stage, s, state, &mut args, &mut cmd_set)?;
        }
        Ok(state)
    }

    fn step(
        &mut self,
        label: &str,
        stage: &Stage,
        s: &Step,
        state: State,
        args: &mut BTreeMap<String, String>,
        cmd_set: &mut bool,
    ) -> Result<State, BuildError> {
        if let Some(sig) = crate::sys::proc::termination_requested() {
            return Err(BuildError::Interrupted(sig));
        }
        self.counter += 1;
        let n = self.counter;
        let pos = stage
            .steps
            .iter()
            .position(|x| std::ptr::eq(x, s))
            .map(|p| p + 1)
            .unwrap_or(0);
        self.view.step_start(
            n,
            &format!("[{label} {pos}/{}] {}", stage.steps.len(), s.text),
        );
        let t = Instant::now();
        let (state, outcome) = match self.eval(n, stage, s, state, args, cmd_set) {
            Ok(done) => done,
            Err(e) => {
                self.view.step_failed();
                return Err(self.fail(s.line, &s.text, e));
            }
        };
        match outcome {
            Outcome::Cached => {
                self.cached += 1;
                self.view.step_end(n, Some("CACHED"));
            }
            Outcome::Ran => {
                self.ran += 1;
                let done = format!("DONE {:.2}s", t.elapsed().as_secs_f64());
                self.view.step_end(n, Some(&done));
            }
            Outcome::Metadata => {
                self.metadata += 1;
                self.view.step_end(n, None);
            }
        }
        Ok(state)
    }

    /// Variables a step's words expand with: ENV wins over ARG.
    fn vars(&self, state: &State, args: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut v = args.clone();
        for e in env_list(&state.config) {
            if let Some((k, val)) = e.split_once('=') {
                v.insert(k.to_string(), val.to_string());
            }
        }
        v
    }

    fn eval(
        &mut self,
        n: usize,
        stage: &Stage,
        s: &Step,
        mut state: State,
        args: &mut BTreeMap<String, String>,
        cmd_set: &mut bool,
    ) -> Result<(State, Outcome), StepFailure> {
        let vars = self.vars(&state, args);
        let meta = |state: &mut State, created_by: String| {
            let entry = json!({"created_by": created_by, "empty_layer": true});
            push_history(&mut state.config, entry);
        };
        let nop = |t: &str| format!("/bin/sh -c #(nop) {t}");
        match &s.kind {
            StepKind::Arg(decls) => {
                let globals = self.global_args();
                for (k, default) in decls {
                    let default = match default {
                        Some(d) => Some(self.expand(d, &vars)?),
                        None => globals.get(k).cloned(),
                    };
                    if let Some(v) = self.opts.build_args.get(k).cloned().or(default) {
                        args.insert(k.clone(), v);
                    }
                }
                // Build args reach the keys of the steps that see them (RUN env, expanded
                // words), not the chain itself: a new value reruns only those.
                return Ok((state, Outcome::Metadata));
            }
            StepKind::Env(pairs) => {
                let mut vars = vars.clone();
                for (k, v) in pairs {
                    let v = self.expand(v, &vars)?;
                    set_env(&mut state.config, k, &v);
                    vars.insert(k.clone(), v);
                }
                meta(&mut state, nop(&s.text));
            }
            StepKind::Label(pairs) => {
                for (k, v) in pairs {
                    let (k, v) = (self.expand(k, &vars)?, self.expand(v, &vars)?);
                    state.config["config"]["Labels"][k] = json!(v);
                }
                meta(&mut state, nop(&s.text));
            }
            StepKind::Expose(ports) => {
                for p in ports {
                    let p = self.expand(p, &vars)?;
                    let p = if p.contains('/') {
                        p.to_ascii_lowercase()
                    } else {
                        format!("{p}/tcp")
                    };
                    state.config["config"]["ExposedPorts"][p] = json!({});
                }
                meta(&mut state, nop(&s.text));
            }
            StepKind::Volume(vols) => {
                for v in vols {
                    let v = self.expand(v, &vars)?;
                    state.config["config"]["Volumes"][v] = json!({});
                }
                meta(&mut state, nop(&s.text));
            }
            StepKind::Workdir(w) => {
                let w = self.expand(w, &vars)?;
                let cur = config_str(&state.config, "WorkingDir").unwrap_or_else(|| "/".into());
                let abs = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", cur.trim_end_matches('/'))
                };
                state.config["config"]["WorkingDir"] = json!(copy::clean_abs(&abs));
                meta(&mut state, nop(&s.text));
            }
            StepKind::User(u) => {
                state.config["config"]["User"] = json!(self.expand(u, &vars)?);
                meta(&mut state, nop(&s.text));
            }
            StepKind::Cmd(c) => {
                state.config["config"]["Cmd"] = json!(c.argv(&shell_of(&state.config)));
                *cmd_set = true;
                meta(&mut state, nop(&s.text));
            }
            StepKind::Entrypoint(c) => {
                state.config["config"]["Entrypoint"] = json!(c.argv(&shell_of(&state.config)));
                if !*cmd_set {
                    state.config["config"]["Cmd"] = Value::Null;
                }
                meta(&mut state, nop(&s.text));
            }
            StepKind::Shell(sh) => {
                state.config["config"]["Shell"] = json!(sh);
                meta(&mut state, nop(&s.text));
            }
            StepKind::StopSignal(sig) => {
                state.config["config"]["StopSignal"] = json!(self.expand(sig, &vars)?);
                meta(&mut state, nop(&s.text));
            }
            StepKind::Healthcheck(h) => {
                let mut v = Map::new();
                v.insert("Test".into(), json!(h.test));
                for (k, d) in [
                    ("Interval", &h.interval),
                    ("Timeout", &h.timeout),
                    ("StartPeriod", &h.start_period),
                    ("StartInterval", &h.start_interval),
                ] {
                    if let Some(d) = d {
                        v.insert(
                            k.into(),
                            json!(duration_ns(d).ok_or_else(|| StepFailure::Invalid(format!(
                                "invalid duration {d:?} in HEALTHCHECK; use e.g. 30s or 1m30s"
                            )))?),
                        );
                    }
                }
                if let Some(r) = h.retries {
                    v.insert("Retries".into(), json!(r));
                }
                state.config["config"]["Healthcheck"] = Value::Object(v);
                meta(&mut state, nop(&s.text));
            }
            StepKind::Onbuild(t) => {
                let mut list = state.config["config"]["OnBuild"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                list.push(json!(t));
                state.config["config"]["OnBuild"] = json!(list);
                meta(&mut state, nop(&s.text));
            }
            StepKind::Maintainer(m) => {
                state.config["author"] = json!(m);
                meta(&mut state, nop(&s.text));
            }
            StepKind::Run {
                cmd,
                heredocs,
                network,
                mounts,
            } => {
                return self.run_step(
                    n,
                    stage,
                    s,
                    state,
                    args,
                    cmd,
                    heredocs,
                    network.as_deref(),
                    mounts,
                )
            }
            StepKind::Copy { .. } => return self.copy_step(n, s, state, &vars),
        }
        // Metadata steps: the key follows the resulting config.
        state.key = KeyInputs {
            parent: state.key.clone(),
            instruction: s.text.clone(),
            env: BTreeMap::from([("config".into(), state.config["config"].to_string())]),
            ..Default::default()
        }
        .key()
        .0
        .to_string();
        Ok((state, Outcome::Metadata))
    }

    fn position(&self, stage: &Stage, s: &Step) -> String {
        format!(
            "{}|{}|{}|{}",
            self.context.root().display(),
            self.opts.file_name,
            stage.index,
            s.line
        )
    }

    /// Looks the key up; on a hit returns the cached state.
    fn lookup(&self, inputs: &KeyInputs, position: &str) -> (Option<State>, Option<String>) {
        if self.opts.explain {
            self.say(format!(
                "  key inputs: {}",
                serde_json::to_string(inputs).unwrap_or_default()
            ));
        }
        let key = inputs.key();
        if !self.opts.no_cache {
            if let Some(hit) = self.cache.get::<State>(&key) {
                return (Some(hit), None);
            }
        }
        let why = if self.opts.no_cache {
            "--no-cache".to_string()
        } else {
            inputs.explain_change(self.cache.last_inputs(position).as_ref())
        };
        (None, Some(why))
    }

    fn remember(&self, inputs: &KeyInputs, position: &str, state: &State) {
        let _ = self.cache.put(&inputs.key(), state);
        self.cache.record_inputs(position, inputs);
    }

    /// What every filesystem step shares: a cache hit returns the stored state; otherwise
    /// the miss is explained, `body` runs in a fresh snapshot of the state's layers (removed
    /// afterwards whatever happened), and the layer it made is added and remembered.
    #[allow(clippy::too_many_arguments)]
    fn in_snapshot(
        &self,
        n: usize,
        what: &str,
        state: State,
        inputs: &KeyInputs,
        position: &str,
        created_by: &str,
        body: impl FnOnce(&crate::storage::Snapshot, &State) -> Result<Option<StoredLayer>, StepFailure>,
    ) -> Result<(State, Outcome), StepFailure> {
        let (hit, why) = self.lookup(inputs, position);
        if let Some(hit) = hit {
            return Ok((hit, Outcome::Cached));
        }
        if let Some(why) = &why {
            self.view.step_note(n, &format!("running: {what}{why}"));
        }
        let snap_id = format!("build-{}-{n}", self.build_id);
        let snap = step::snapshot(
            self.store,
            self.snapshotter.as_ref(),
            &snap_id,
            &state.layers,
        )?;
        let result = body(&snap, &state);
        let _ = self.snapshotter.remove(&snap);
        Ok(self.finish(state, result?, inputs, position, created_by))
    }

    /// A filesystem step that ran: its layer (if any) added with a history entry, its key
    /// set, and the result remembered.
    fn finish(
        &self,
        mut state: State,
        layer: Option<StoredLayer>,
        inputs: &KeyInputs,
        position: &str,
        created_by: &str,
    ) -> (State, Outcome) {
        add_layer(&mut state, layer, created_by);
        state.key = inputs.key().0.to_string();
        self.remember(inputs, position, &state);
        (state, Outcome::Ran)
    }

    /// What of a selected file goes into a key besides its path and mode: a regular file's
    /// content digest (when `hash_files`), a symlink's target.
    fn content_input(
        &mut self,
        ctx: &Context,
        f: &crate::context::ContextFile,
        hash_files: bool,
    ) -> Result<String, StepFailure> {
        use crate::context::FileKind;
        Ok(match f.kind {
            FileKind::File if hash_files => {
                self.stat.digest_stamped(&ctx.path_of(&f.rel), f.stamp)?
            }
            FileKind::Symlink => f
                .link_target
                .as_ref()
                .map(|t| t.display().to_string())
                .unwrap_or_default(),
            FileKind::File | FileKind::Dir => String::new(),
        })
    }

    /// The uid and gid a `--chown` user name has in `state`'s /etc/passwd and /etc/group.
    fn owner_in(&self, n: usize, state: &State, chown: &str) -> Result<Owner, StepFailure> {
        let snap = step::snapshot(
            self.store,
            self.snapshotter.as_ref(),
            &format!("build-{}-{n}-owner", self.build_id),
            &state.layers,
        )?;
        let resolved = runtime::spec::Accounts::read(&snap.rootfs)
            .and_then(|acc| acc.resolve(chown))
            .map(|u| Owner {
                uid: u.uid,
                gid: u.gid,
            });
        let _ = self.snapshotter.remove(&snap);
        Ok(resolved?)
    }

    /// The state a `--from=` names: an earlier stage (by name or index) or a store image.
    fn state_from(&self, from: &str) -> Result<State, StepFailure> {
        Ok(
            match self
                .plan
                .stage_by_ref(from)
                .and_then(|j| self.results.get(&j).cloned())
            {
                Some(st) => st,
                None => state_of_image(self.store, &self.store.resolve(from)?)?,
            },
        )
    }
}

enum Outcome {
    Cached,
    /// Ran (a cache miss is explained when it is reported).
    Ran,
    /// Changed only the config: nothing to run or cache.
    Metadata,
}

/// `1000:1000` or `1000` (numeric owners need no /etc/passwd).
fn parse_numeric_owner(s: &str) -> Option<Owner> {
    let (u, g) = s.split_once(':').unwrap_or((s, s));
    Some(Owner {
        uid: u.parse().ok()?,
        gid: g.parse().ok()?,
    })
}

/// Docker's duration syntax (`30s`, `1m30s`, `500ms`) in nanoseconds.
pub fn duration_ns(s: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    if s.is_empty() {
        return None;
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&c2) = chars.peek() {
            if c2.is_ascii_alphabetic() {
                unit.push(c2);
                chars.next();
            } else {
                break;
            }
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        let mult = match unit.as_str() {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += (v * mult) as u64;
    }
    num.is_empty().then_some(total)
}

fn push_history(cfg: &mut Value, entry: Value) {
    let mut h = cfg["history"].as_array().cloned().unwrap_or_default();
    h.push(entry);
    cfg["history"] = json!(h);
}

/// History entries this build adds carry no time until `commit` stamps them all with the
/// image's `created`: a cached step then gives the same history as a fresh one.
fn add_layer(state: &mut State, layer: Option<StoredLayer>, created_by: &str) {
    match layer {
        Some(l) => {
            let mut ids = state.config["rootfs"]["diff_ids"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            ids.push(json!(l.diff_id.to_string()));
            state.config["rootfs"] = json!({"type": "layers", "diff_ids": ids});
            push_history(&mut state.config, json!({"created_by": created_by}));
            state.layers.push(l);
        }
        None => push_history(
            &mut state.config,
            json!({"created_by": created_by, "empty_layer": true}),
        ),
    }
}

/// The build state of an image in the store.
pub fn state_of_image(store: &Store, rec: &ImageRecord) -> Result<State, crate::store::StoreError> {
    let config: Value = store.read_json("config", rec.id())?;
    let layers = rec
        .manifest
        .layers()
        .iter()
        .zip(rec.config.rootfs().diff_ids())
        .map(|(l, d)| StoredLayer {
            descriptor: l.clone(),
            diff_id: crate::digest::parse(d).unwrap_or_else(|| l.digest().clone()),
        })
        .collect();
    Ok(State {
        config,
        layers,
        key: rec.manifest_digest().to_string(),
    })
}

/// Stores the final config and manifest, and tags the image.
pub fn commit(
    store: &Store,
    state: &State,
    created: &str,
    labels: &[(String, String)],
    names: &[crate::reference::ImageRef],
) -> Result<ImageRecord, crate::store::StoreError> {
    let mut config = state.config.clone();
    config["created"] = json!(created);
    if let Some(history) = config["history"].as_array_mut() {
        for h in history.iter_mut().filter(|h| h.get("created").is_none()) {
            h["created"] = json!(created);
        }
    }
    for (k, v) in labels {
        config["config"]["Labels"][k] = json!(v);
    }
    if config["config"].is_null() {
        config["config"] = json!({});
    }
    let (config_digest, config_size) = store.put_json(&config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config_size},
        "layers": state.layers.iter().map(|l| &l.descriptor).collect::<Vec<_>>(),
    });
    let (digest, size) = store.put_json(&manifest)?;
    let descriptor =
        oci_spec::image::Descriptor::new(oci_spec::image::MediaType::ImageManifest, size, digest);
    for n in names {
        store.tag(n, &descriptor)?;
    }
    store.load_record(descriptor, names.iter().map(|n| n.tagged_name()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthcheck_durations_use_docker_syntax() {
        assert_eq!(duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(duration_ns("500ms"), Some(500_000_000));
        assert_eq!(duration_ns("x"), None);
        assert_eq!(duration_ns("5"), None);
    }

    #[test]
    fn numeric_owners() {
        assert_eq!(
            parse_numeric_owner("1000:1001"),
            Some(Owner {
                uid: 1000,
                gid: 1001
            })
        );
        assert_eq!(parse_numeric_owner("7"), Some(Owner { uid: 7, gid: 7 }));
        assert_eq!(parse_numeric_owner("app:app"), None);
    }
}
