//! The build executor: walks the stages a target needs and dispatches each planned step
//! to one small function per instruction (`dispatch.rs`, `run_step.rs`, `copy_step.rs`),
//! with the stage's variables for expansion. Looks up the step cache; on a miss runs the
//! step in a snapshot and commits its layer. Reports one line per event.
//!
//! The state between steps is typed: `image::ImageConfig` and the layers. Must not parse
//! Dockerfile text (the plan is the only input) or write images itself (`image::commit_image`).
use crate::sys::hostfs;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::cache::{BuildCache, CacheKey, KeyInputs, Keyed};
use super::copy::{self, Owner};
use super::mounts;

mod copy_step;
mod dispatch;
mod history;
mod link;
mod named;
mod run_step;
use super::progress::{BuildView, ViewMode};
use super::step::{self, StepError};
use crate::context::{Context, StatIndex};
use crate::image::config::{ConfigError, History};
use crate::image::{ImageConfig, StoredLayer};
use crate::plan::{Plan, Stage, Step};
use crate::runtime::{self, Isolation};
use crate::storage::Snapshotter;
use crate::store::{ImageRecord, Store};
pub use named::NamedContext;

/// The start of `FROM scratch` for `platform`; the key names a foreign platform, so
/// each platform's steps cache apart (the host's keeps the plain key).
fn scratch_state(platform: &crate::platform::Platform) -> State {
    let mut config = ImageConfig::scratch();
    // `FROM scratch` starts with WorkingDir "/" (BuildKit dockerfile2llb `emptyImage`;
    // PATH, its other default, is set for every stage in `build_stage`).
    config.config.working_dir = Some("/".into());
    let mut key = "scratch".to_string();
    if platform.arch != crate::platform::host().arch || platform.variant.is_some() {
        config.os = platform.os.clone();
        config.architecture = platform.arch.clone();
        config.variant = platform.variant.clone();
        key = format!("scratch:{platform}");
    }
    State {
        config,
        layers: Vec::new(),
        key,
    }
}

/// The PATH a stage gets when its base sets none (BuildKit's `system.DefaultPathEnv`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where a build stands after a step: the image config and its layers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub config: ImageConfig,
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
    #[error("{file}:{line}: base image {image:?} is not in the store and pulling it failed: {source}; check the name and registry (`keel pull {image}`), or create it (`keel bootstrap busybox {image}`, `keel load -i FILE`)")]
    PullBase {
        file: String,
        line: usize,
        image: String,
        source: Box<crate::registry::RegistryError>,
    },
    #[error("{file}:{line}: base image {image:?} is not in the store (and --pull=never); pull it (`keel pull {image}`) or create it (`keel bootstrap busybox {image}`, `keel load -i FILE`, `keel import ROOTFS.tar {image}` or build it)")]
    MissingBase {
        file: String,
        line: usize,
        image: String,
    },
    #[error("{file}:{line}: image {image:?}: {source}")]
    BadImage {
        file: String,
        line: usize,
        image: String,
        source: Box<ImageStateError>,
    },
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error(transparent)]
    Front(#[from] crate::dockerfile::ParseError),
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

/// Why an image in the store cannot be a build's starting point.
#[derive(Debug, thiserror::Error)]
pub enum ImageStateError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    #[error("image {image:?}: {source}")]
    Image {
        image: String,
        source: Box<ImageStateError>,
    },
    #[error(transparent)]
    Front(#[from] crate::dockerfile::ParseError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

/// The knobs of `keel build`.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub file_name: String,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    /// `--no-cache-filter`: stages (by name or index) whose steps ignore the cache.
    pub no_cache_stages: Vec<String>,
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
    /// `keel build --network`: what a RUN without `--network` gets (`None`: the host's).
    pub network: Option<crate::plan::Network>,
    /// `--add-host NAME:IP`: extra lines of the RUN steps' `/etc/hosts`.
    pub add_hosts: Vec<(String, String)>,
    /// `--shm-size`: the RUN steps' `/dev/shm` size in bytes.
    pub shm_size: Option<u64>,
    /// `--ulimit`: resource limits of the RUN steps' processes.
    pub ulimits: Vec<runtime::spec::Ulimit>,
    /// `--build-context NAME=…`: what FROM/COPY --from/mount from= NAME mean.
    pub contexts: BTreeMap<String, NamedContext>,
    /// When a FROM image is fetched from its registry (`--pull`).
    pub pull: crate::registry::PullPolicy,
    /// `--platform`: the platform this build produces (`None`: the host's). Sets the
    /// `TARGET*` args and picks each FROM image's manifest for that platform.
    pub platform: Option<crate::platform::Platform>,
}

/// The tree a filesystem step's body gets.
#[derive(Clone, Copy)]
enum Tree {
    /// A snapshot with a writable top, whose changes can become the layer.
    Writable,
    /// A read-only view of the layers below (`Snapshotter::prepare_view`).
    View,
}

/// A build's large in-memory indexes (the stat index, the last inputs it read), handed
/// back with its outcome so that a command about to exit may skip freeing them
/// (`std::mem::forget`): for a 10,000-file COPY that is ~40,000 small allocations,
/// milliseconds of a rebuild. Dropped normally otherwise. With them goes the storage
/// driver: dropping it waits for the overlays it detached to be taken down (the kernel
/// evicts what a RUN step's overlay cached, tens of milliseconds after a `find` over
/// 10,000 files), which can then overlap the image commit; a process that exits instead
/// leaves that to its exit (the mounts are out of the mount table already).
pub struct Scratch {
    _stat: StatIndex,
    _cache: BuildCache,
    _snapshotter: Box<dyn Snapshotter>,
}

/// What a build produced and did.
pub struct BuildOutcome {
    /// See [`Scratch`].
    pub scratch: Option<Scratch>,
    pub state: State,
    pub ran: usize,
    pub cached: usize,
    pub log_dir: PathBuf,
    /// Every step that ran or hit the cache, in order (for `--metadata-file`).
    pub steps: Vec<StepRecord>,
    /// The cache entries this build used or made (what `--cache-to` exports).
    pub keys: Vec<super::cache::CacheKey>,
    /// The `RUN --mount=type=cache` ids its RUN steps name, with their sharing (what
    /// `--cache-to ...,mounts=true` exports).
    pub cache_mounts: Vec<(String, crate::plan::mount::Sharing)>,
}

/// What happened to one step: `cached`, `ran` or `metadata` (config only).
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub stage: String,
    pub line: usize,
    pub instruction: String,
    pub cache: &'static str,
}

/// One build in progress.
pub struct Executor<'a> {
    store: &'a Store,
    plan: &'a Plan,
    opts: &'a BuildOptions,
    context: &'a Context,
    stat: StatIndex,
    /// A process may still run in the current step's snapshot (a RUN step's container
    /// whose end was not proven, `step::run`): its removal looks for one first.
    live: std::cell::Cell<bool>,
    cache: BuildCache,
    snapshotter: Box<dyn Snapshotter>,
    backend: Box<dyn Isolation>,
    results: BTreeMap<usize, State>,
    /// Each built stage's ARGs (values, declaration order): a stage based on it inherits
    /// them (Dockerfile reference, ARG: "automatically inherited by other stages based on
    /// that stage"; convert.go `dispatchState.init` copies `buildArgs` and the env).
    stage_args: BTreeMap<usize, (BTreeMap<String, String>, Vec<String>)>,
    counter: usize,
    ran: usize,
    cached: usize,
    metadata: usize,
    log_dir: PathBuf,
    /// Whether `log_dir` and its `build.log` exist yet (`open_log`).
    log_open: std::cell::Cell<bool>,
    build_id: String,
    started: Instant,
    view: BuildView,
    records: Vec<StepRecord>,
    /// Named contexts resolved so far (each once per build).
    named: BTreeMap<String, State>,
    /// The stage being built ignores the cache (`--no-cache`, `--no-cache-filter`).
    stage_no_cache: bool,
    keys: std::cell::RefCell<Vec<super::cache::CacheKey>>,
    /// Cache mount ids named by RUN steps (see `BuildOutcome::cache_mounts`).
    cache_mounts: std::cell::RefCell<Vec<(String, crate::plan::mount::Sharing)>>,
}

/// A stage while it is being built: its build args so far and whether ENTRYPOINT was
/// set after CMD here (an ENTRYPOINT resets an inherited CMD).
pub(super) struct Scope<'s> {
    pub stage: &'s Stage,
    pub args: BTreeMap<String, String>,
    /// Every ARG name declared in the stage (or the stage it is based on), in the order
    /// first declared: RUN's history lists them (`history::run`).
    pub declared: Vec<String>,
    pub cmd_set: bool,
}

#[derive(Debug)]
enum Outcome {
    Cached,
    /// Ran (a cache miss is explained when it is reported).
    Ran,
    /// Changed only the config: nothing to run or cache.
    Metadata,
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
        // The build's lease, before its first write: what it writes and reads survives gc.
        store.lease()?;
        // Ctrl-C / SIGTERM: record it, let the running step's container get it, and stop
        // between steps with everything cleaned up (rather than dying mid-step).
        crate::sys::proc::catch_termination().map_err(runtime::RuntimeError::from)?;
        let build_id = crate::container::new_id()[..12].to_string();
        // Named now, made when a step runs or the build fails (`open_log`): a build whose
        // every step hits the cache keeps none. Making one and pruning the oldest cost a
        // no-op rebuild 1–8 ms of directory and inode work on a busy disk.
        let log_dir = super::progress::build_log_dir(store.root(), &build_id);
        let mode = match (opts.quiet, opts.terminal) {
            (true, _) => ViewMode::Quiet,
            (false, true) => ViewMode::Terminal,
            (false, false) => ViewMode::Plain,
        };
        let view = BuildView::new(mode);
        view.hold_transcript();
        Ok(Executor {
            store,
            plan,
            opts,
            context,
            stat,
            live: std::cell::Cell::new(false),
            cache,
            snapshotter,
            backend,
            results: BTreeMap::new(),
            stage_args: BTreeMap::new(),
            counter: 0,
            ran: 0,
            cached: 0,
            metadata: 0,
            log_dir,
            log_open: std::cell::Cell::new(false),
            build_id,
            started: Instant::now(),
            view,
            records: Vec::new(),
            named: BTreeMap::new(),
            stage_no_cache: opts.no_cache,
            keys: Default::default(),
            cache_mounts: Default::default(),
        })
    }

    /// This build's log directory (its step logs and `build.log`); it exists once a step
    /// has run or the build has failed.
    pub fn log_dir(&self) -> &std::path::Path {
        &self.log_dir
    }

    /// Makes the log directory (pointing `logs/last-build` at it, pruning the oldest) and
    /// its `build.log`, with the transcript so far; once per build.
    fn open_log(&self) {
        if self.log_open.replace(true) {
            return;
        }
        super::progress::new_build_log(self.store.root(), &self.build_id);
        if let Ok(f) = hostfs::create(self.log_dir.join("build.log")) {
            self.view.release_transcript(f);
        }
    }

    /// Writes the plain transcript of the build to `file` as well.
    pub fn add_transcript(&self, file: std::fs::File) {
        self.view.add_transcript(file);
    }

    fn say(&self, line: impl AsRef<str>) {
        self.view.line(line.as_ref());
    }

    /// Builds the target stage and everything it needs.
    pub fn build(mut self) -> Result<BuildOutcome, BuildError> {
        let mut built = self.build_target();
        // Before the cache can be forgotten with the scratch (the writes would be lost).
        self.cache.behind().finish();
        match &mut built {
            Err(_) => self.open_log(), // the error names the log directory
            Ok(outcome) => {
                let root = self.store.root();
                outcome.scratch = Some(Scratch {
                    _stat: std::mem::replace(&mut self.stat, StatIndex::in_memory()),
                    _cache: std::mem::replace(&mut self.cache, BuildCache::new(root)),
                    _snapshotter: self.snapshotter,
                });
            }
        }
        built
    }

    fn build_target(&mut self) -> Result<BuildOutcome, BuildError> {
        let target = self.plan.target_index(self.opts.target.as_deref())?;
        // Every stage's platform is runnable (an emulator is there) before any step runs.
        for i in self.plan.needed(target)? {
            let stage = &self.plan.stages[i];
            self.stage_platform(stage)
                .map_err(|e| self.fail(stage.line, &format!("FROM {}", stage.base), e))?;
        }
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
            scratch: None,
            state,
            ran: self.ran,
            cached: self.cached,
            log_dir: self.log_dir.clone(),
            steps: std::mem::take(&mut self.records),
            keys: self.keys.take(),
            cache_mounts: self.cache_mounts.take(),
        })
    }

    fn global_args(&self) -> BTreeMap<String, String> {
        crate::plan::global_arg_values_for(
            &self.plan.global_args,
            &self.opts.build_args,
            &self.target_platform(),
            &crate::platform::host(),
        )
    }

    /// The platform this build produces (`--platform`, else the host's).
    fn target_platform(&self) -> crate::platform::Platform {
        self.opts
            .platform
            .clone()
            .unwrap_or_else(crate::platform::host)
    }

    /// Expands `word` with `vars` (the file's escape character, BuildKit's rules).
    fn expand(&self, word: &str, vars: &BTreeMap<String, String>) -> Result<String, StepFailure> {
        self.expander(vars)(word).map_err(StepFailure::Invalid)
    }

    /// `expand` as a closure, for typed words and mount options.
    fn expander<'v>(
        &self,
        vars: &'v BTreeMap<String, String>,
    ) -> impl Fn(&str) -> Result<String, String> + 'v {
        let lexer = crate::dockerfile::expand::Lexer::new(self.plan.escape);
        move |word: &str| {
            let lookup = |k: &str| vars.get(k).cloned();
            lexer.process_word(word, &lookup).map_err(|e| e.to_string())
        }
    }

    fn fail(&self, line: usize, step: &str, source: StepFailure) -> BuildError {
        BuildError::Step {
            file: self.opts.file_name.clone(),
            line,
            step: step.to_string(),
            source: Box::new(source),
        }
    }

    fn base_state(&mut self, stage: &Stage) -> Result<State, BuildError> {
        let globals = self.global_args();
        let text = format!("FROM {}", stage.base);
        let base = self
            .expand(&stage.base, &globals)
            .map_err(|e| self.fail(stage.line, &text, e))?;
        let platform = self
            .stage_platform(stage)
            .map_err(|e| self.fail(stage.line, &text, e))?;
        if base == "scratch" {
            return Ok(scratch_state(&platform));
        }
        if let Some(j) = self.plan.stage_by_ref(&base).filter(|j| *j < stage.index) {
            return Ok(self.results[&j].clone());
        }
        if let Some(named) = self.named_state(&base) {
            return named.map_err(|e| self.fail(stage.line, &text, e));
        }
        let bad = |source: ImageStateError| BuildError::BadImage {
            file: self.opts.file_name.clone(),
            line: stage.line,
            image: base.clone(),
            source: Box::new(source),
        };
        self.pull_base(stage, &base)?;
        // A plain host build takes the base as it is; a platform build (--platform or
        // FROM --platform) takes the base's manifest for that platform.
        let wanted =
            (self.opts.platform.is_some() || stage.platform.is_some()).then_some(&platform);
        let rec = match self.store.resolve_platform(&base, wanted) {
            Ok(r) => r,
            Err(crate::store::StoreError::NoSuchImage(_)) => {
                return Err(BuildError::MissingBase {
                    file: self.opts.file_name.clone(),
                    line: stage.line,
                    image: base,
                })
            }
            Err(e @ crate::store::StoreError::BadDocument { .. }) => return Err(bad(e.into())),
            // The base lacks the stage's platform: located at the FROM line.
            Err(e @ crate::store::StoreError::NoPlatform { .. }) => return Err(bad(e.into())),
            Err(e) => return Err(e.into()),
        };
        // Leased before use: a concurrent `rmi` + `gc` cannot take the base from under us.
        self.store.protect_image(&rec)?;
        if let Err(e) = crate::platform::check(&rec.platform()) {
            return Err(self.fail(stage.line, &text, StepFailure::Invalid(e.to_string())));
        }
        crate::fault::point("build.base-resolved");
        state_of_image(self.store, &rec).map_err(bad)
    }

    /// The platform a stage runs on: its `FROM --platform` (expanded with the global
    /// args, so `$BUILDPLATFORM` is the host) or the build's target; checked runnable.
    fn stage_platform(&self, stage: &Stage) -> Result<crate::platform::Platform, StepFailure> {
        let p = match &stage.platform {
            Some(p) => crate::platform::normalize(
                &p.resolve(&self.expander(&self.global_args()))
                    .map_err(StepFailure::Invalid)?,
            ),
            None => self.target_platform(),
        };
        crate::platform::check(&p).map_err(|e| StepFailure::Invalid(e.to_string()))?;
        Ok(p)
    }

    /// Applies `--pull` to a FROM image: fetched when missing (or always); a digest-pinned
    /// one the store has never touches the network.
    fn pull_base(&self, stage: &Stage, base: &str) -> Result<(), BuildError> {
        use crate::registry::PullPolicy;
        let have = self.store.resolve(base).is_ok();
        let want = match self.opts.pull {
            PullPolicy::Never => false,
            PullPolicy::Missing => !have,
            PullPolicy::Always => !base.contains('@'),
        };
        let Some(name) = want
            .then(|| crate::reference::ImageRef::parse(base).ok())
            .flatten()
        else {
            return Ok(());
        };
        let fail = |e| BuildError::PullBase {
            file: self.opts.file_name.clone(),
            line: stage.line,
            image: base.to_string(),
            source: Box::new(e),
        };
        let opts = crate::registry::PullOptions {
            registries: crate::registry::RegistriesConfig::load(self.store.root()).map_err(fail)?,
            ..Default::default()
        };
        let quiet = self.opts.quiet;
        let report = |e: crate::registry::PullEvent| {
            if let (crate::registry::PullEvent::Resolved { remote, .. }, false) = (e, quiet) {
                crate::report::err_line(format!("FROM {base}: pulling {remote}"));
            }
        };
        crate::registry::pull(self.store, &name, &opts, &report).map_err(fail)?;
        Ok(())
    }

    fn build_stage(&mut self, stage: &Stage) -> Result<State, BuildError> {
        let mut state = self.base_state(stage)?;
        // Every stage has a PATH: BuildKit's convert.go gives a base without one (scratch,
        // a bare imported rootfs) the default, in the image config and so for RUN.
        if !state.config.config.has_env("PATH") {
            state.config.config.set_env("PATH", DEFAULT_PATH);
        }
        let label = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.index));
        let index = stage.index.to_string();
        self.stage_no_cache = self.opts.no_cache
            || self
                .opts
                .no_cache_stages
                .iter()
                .any(|f| Some(f.as_str()) == stage.name.as_deref() || *f == index);
        self.counter += 1;
        self.say(format!("#{} [{label}] FROM {}", self.counter, stage.base));
        let (args, declared) = self.inherited_args(stage);
        let mut scope = Scope {
            stage,
            args,
            declared,
            cmd_set: false,
        };
        // An image's ONBUILD triggers run first, and are not inherited further.
        if let Some(triggers) = state.config.config.on_build.take() {
            let steps = crate::plan::triggers(&triggers)
                .map_err(|e| self.fail(stage.line, "ONBUILD", e.into()))?;
            for mut s in steps {
                s.line = stage.line; // a trigger fails at the FROM that pulled it in
                state = self.step(&label, &mut scope, &s, state)?;
            }
        }
        for s in &stage.steps {
            state = self.step(&label, &mut scope, s, state)?;
        }
        self.stage_args
            .insert(stage.index, (scope.args, scope.declared));
        Ok(state)
    }

    /// The ARGs a stage starts with: those of the earlier stage it is based on, if any.
    fn inherited_args(&self, stage: &Stage) -> (BTreeMap<String, String>, Vec<String>) {
        let base = self.expand(&stage.base, &self.global_args()).ok();
        base.and_then(|b| self.plan.stage_by_ref(&b))
            .filter(|j| *j < stage.index)
            .and_then(|j| self.stage_args.get(&j).cloned())
            .unwrap_or_default()
    }

    fn step(
        &mut self,
        label: &str,
        scope: &mut Scope,
        s: &Step,
        state: State,
    ) -> Result<State, BuildError> {
        if let Some(sig) = crate::sys::proc::termination_requested() {
            return Err(BuildError::Interrupted(sig));
        }
        self.counter += 1;
        let n = self.counter;
        let steps = &scope.stage.steps;
        let pos = steps
            .iter()
            .position(|x| std::ptr::eq(x, s))
            .map_or(0, |p| p + 1);
        self.view
            .step_start(n, &format!("[{label} {pos}/{}] {}", steps.len(), s.text));
        // `-v`: the span's close event carries the step's time (time.busy).
        let span = tracing::info_span!("step", n, stage = label, line = s.line, text = %s.text);
        let _entered = span.enter();
        let t = Instant::now();
        let before = state.config.history.clone();
        let (state, outcome) = match self.dispatch(n, scope, s, state) {
            Ok(done) => done,
            Err(e) => {
                self.view.step_failed();
                return Err(self.fail(s.line, &s.text, e));
            }
        };
        tracing::debug!(
            outcome = ?outcome,
            elapsed_ms = t.elapsed().as_millis() as u64,
            "step finished"
        );
        let state = match outcome {
            Outcome::Cached => with_history(state, before),
            _ => state,
        };
        self.step_ended(n, label, s, &outcome, t);
        Ok(state)
    }

    /// Records a finished step (`--metadata-file`) and ends its progress line.
    fn step_ended(&mut self, n: usize, label: &str, s: &Step, outcome: &Outcome, t: Instant) {
        let cache = match outcome {
            Outcome::Cached => "cached",
            Outcome::Ran => "ran",
            Outcome::Metadata => "metadata",
        };
        self.records.push(StepRecord {
            stage: label.to_string(),
            line: s.line,
            instruction: s.text.clone(),
            cache,
        });
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
    }

    /// Variables a step's words expand with: ENV wins over ARG.
    fn vars(&self, state: &State, args: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut v = args.clone();
        for e in state.config.config.env_list() {
            if let Some((k, val)) = e.split_once('=') {
                v.insert(k.to_string(), val.to_string());
            }
        }
        v
    }

    /// Where step `s` is, for finding the inputs the previous build used there
    /// (`BuildCache::last_inputs`): the context, the Dockerfile, the stage (when given)
    /// and the line. The Dockerfile is named by its canonical path, so `keel build .` in
    /// the project and `keel build /abs/project` elsewhere are the same place (as the
    /// context is); `file_name` is the name as given, for messages.
    fn position(&self, stage: Option<&Stage>, s: &Step) -> String {
        let file = std::fs::canonicalize(&self.opts.file_name)
            .map_or_else(|_| self.opts.file_name.clone(), |p| p.display().to_string());
        let root = self.context.root().display();
        match stage {
            Some(stage) => format!("{root}|{file}|{}|{}", stage.index, s.line),
            None => format!("{root}|{file}|{}", s.line),
        }
    }

    /// Looks the key up; on a hit returns the cached state.
    fn lookup(&self, inputs: &Keyed, position: &str) -> (Option<State>, Option<String>) {
        if self.opts.explain {
            self.say(format!(
                "  key inputs: {}",
                serde_json::to_string(inputs.inputs()).unwrap_or_default()
            ));
        }
        let key = inputs.key();
        if let Some(hit) = self.peek(key) {
            return (Some(hit), None);
        }
        self.open_log(); // a step runs: its log has a home from now on
        let why = if self.stage_no_cache {
            "--no-cache".to_string()
        } else {
            let last = self.cache.last_inputs(position);
            inputs.inputs().explain_change(last.as_deref())
        };
        tracing::debug!(key = %key.0, reason = %why, "cache miss");
        (None, Some(why))
    }

    /// The cached state for `key`, its layers leased (and noted for `--cache-to`),
    /// unless the cache is bypassed.
    fn peek(&self, key: &CacheKey) -> Option<State> {
        if self.stage_no_cache {
            return None;
        }
        let hit = self.cache.get::<State>(key).filter(|h| self.hold(h))?;
        tracing::debug!(key = %key.0, "cache hit");
        self.keys.borrow_mut().push(key.clone());
        Some(hit)
    }

    /// Leases a cached state's layers; false when one is gone (gc took it: a miss)
    /// unless an imported registry cache can fetch it when it is needed (`snapshot`).
    fn hold(&self, state: &State) -> bool {
        let ds: Vec<_> = state.layers.iter().map(|l| l.descriptor.digest()).collect();
        self.store.protect(ds.iter().copied()).is_ok()
            && ds
                .iter()
                .all(|d| self.store.has_blob(d) || crate::registry::cache::fetchable(self.store, d))
    }

    fn remember(&self, inputs: &Keyed, position: &str, state: &State) {
        let _ = self.cache.put(inputs.key(), state);
        self.keys.borrow_mut().push(inputs.key().clone());
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
        inputs: &Keyed,
        position: &str,
        created_by: &str,
        body: impl FnOnce(&crate::storage::Snapshot, &State) -> Result<Option<StoredLayer>, StepFailure>,
    ) -> Result<(State, Outcome), StepFailure> {
        self.in_tree(
            Tree::Writable,
            n,
            what,
            state,
            inputs,
            position,
            created_by,
            body,
        )
    }

    /// [`Self::in_snapshot`] with the kind of tree `body` gets: a step that only reads the
    /// tree below it (a COPY written straight into its layer) asks for a read-only view.
    #[allow(clippy::too_many_arguments)]
    fn in_tree(
        &self,
        tree: Tree,
        n: usize,
        what: &str,
        state: State,
        inputs: &Keyed,
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
        let snap = self.snapshot(&format!("{n}"), &state.layers, tree)?;
        crate::fault::point("build.step-snapshot");
        self.live.set(false);
        let result = body(&snap, &state);
        crate::fault::point("build.step-done");
        // Without a process that could still be in it (a COPY, or a RUN whose PID
        // namespace's init was reaped), no host process is looked at on the way out.
        let _ = match self.live.get() {
            true => self.snapshotter.remove(&snap),
            false => self.snapshotter.remove_unused(&snap),
        };
        self.finish(state, result?, inputs, position, created_by)
    }

    /// A fresh snapshot of `layers` named for this build and `suffix`.
    fn snapshot(
        &self,
        suffix: &str,
        layers: &[StoredLayer],
        tree: Tree,
    ) -> Result<crate::storage::Snapshot, StepFailure> {
        self.open_log();
        let id = format!("build-{}-{suffix}", self.build_id);
        // Layers of registry-cache hits arrive only now, when a step needs their files.
        crate::registry::cache::fetch_missing(self.store, layers)?;
        // The stack is leased first: gc leaves its unpacked layers alone meanwhile.
        let stack: Vec<_> = layers.iter().map(|l| l.diff_id.clone()).collect();
        self.store.lease()?.protect_stack(&stack)?;
        let prepare = match tree {
            Tree::Writable => step::snapshot,
            Tree::View => step::view,
        };
        Ok(prepare(self.store, self.snapshotter.as_ref(), &id, layers)?)
    }

    /// A filesystem step that ran: its layer added with a history entry, its key set, and
    /// the result remembered. A step that changed nothing still has a layer, the empty
    /// tar (BuildKit commits every RUN/COPY/ADD/WORKDIR as a layer, and the image exporter
    /// keeps an empty diff as a layer: `exporter/containerimage/writer.go`
    /// `normalizeLayersAndHistory` drops nothing and marks no such entry `empty_layer`).
    fn finish(
        &self,
        mut state: State,
        layer: Option<StoredLayer>,
        inputs: &Keyed,
        position: &str,
        created_by: &str,
    ) -> Result<(State, Outcome), StepFailure> {
        let layer = match layer {
            Some(l) => l,
            None => self.empty_layer()?,
        };
        add_layer(&mut state, layer, created_by);
        state.key = inputs.key().0.to_string();
        self.remember(inputs, position, &state);
        Ok((state, Outcome::Ran))
    }

    /// The empty layer: a tar of no entries, its two zero end blocks (1024 bytes; the
    /// diff_id `sha256:5f70bf18…` BuildKit's empty layers have too).
    fn empty_layer(&self) -> Result<StoredLayer, StepFailure> {
        use std::io::Write;
        let mut blob = self.store.blob_writer()?;
        blob.write_all(&[0u8; 1024])
            .map_err(|source| StepError::Io {
                path: self.store.root().join("tmp"),
                source,
            })?;
        Ok(step::stored(blob)?)
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

    /// The uid and gid a `--chown` user has in `state`'s /etc/passwd and /etc/group.
    fn owner_in(&self, n: usize, state: &State, chown: &str) -> Result<Owner, StepFailure> {
        let snap = self.snapshot(&format!("{n}-owner"), &state.layers, Tree::View)?;
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
    fn state_from(&mut self, from: &str) -> Result<State, StepFailure> {
        if let Some(st) = self
            .plan
            .stage_by_ref(from)
            .and_then(|j| self.results.get(&j))
        {
            return Ok(st.clone());
        }
        if let Some(named) = self.named_state(from) {
            return named;
        }
        let image = |source: ImageStateError| StepFailure::Image {
            image: from.to_string(),
            source: Box::new(source),
        };
        // An image's files for the build's platform (BuildKit: COPY --from=IMAGE).
        let rec = self
            .store
            .resolve_platform(from, self.opts.platform.as_ref())
            .map_err(|e| image(e.into()))?;
        self.store
            .protect_image(&rec)
            .map_err(|e| image(e.into()))?;
        state_of_image(self.store, &rec).map_err(image)
    }
}

/// A cached step's result with the history as this build has it: the entries before the
/// step are this build's (an ARG's entry, which is in no key, may differ from the cached
/// build's), followed by the step's own entry from the cache.
fn with_history(mut hit: State, before: Vec<History>) -> State {
    let own = hit.config.history.pop();
    hit.config.history = before;
    hit.config.history.extend(own);
    hit
}

/// History entries this build adds carry no time until `commit` stamps them all with the
/// image's `created`: a cached step then gives the same history as a fresh one.
fn add_layer(state: &mut State, layer: StoredLayer, created_by: &str) {
    state.config.rootfs.diff_ids.push(layer.diff_id.to_string());
    state.layers.push(layer);
    state.config.history.push(History {
        created_by: Some(created_by.to_string()),
        comment: Some(crate::image::config::HISTORY_COMMENT.into()),
        ..Default::default()
    });
}

/// The build state of an image in the store; its config must deserialise as a config.
pub fn state_of_image(store: &Store, rec: &ImageRecord) -> Result<State, ImageStateError> {
    let config = ImageConfig::from_slice(&store.read_blob(rec.id())?)?;
    let layers = rec
        .manifest
        .layers()
        .iter()
        .zip(&config.rootfs.diff_ids)
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

/// The image a build made: `created` stamped on the config and on the history entries
/// this build added, `labels` added; stored and tagged through `image::commit_image`.
pub fn commit(
    store: &Store,
    state: &State,
    created: &str,
    labels: &[(String, String)],
    names: &[crate::reference::ImageRef],
) -> Result<ImageRecord, crate::store::StoreError> {
    let mut config = state.config.clone();
    config.created = Some(created.to_string());
    for h in config.history.iter_mut().filter(|h| h.created.is_none()) {
        h.created = Some(created.to_string());
    }
    if !labels.is_empty() {
        let all = config.config.labels.get_or_insert_with(BTreeMap::new);
        all.extend(labels.iter().cloned());
    }
    crate::image::commit_image(store, &config, &state.layers, names)
}
