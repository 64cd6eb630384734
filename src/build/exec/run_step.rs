//! RUN: the command line as it runs, its mounts expanded and resolved (and what of them is
//! an input), its environment, and the container it runs in on the step's snapshot.
use crate::sys::hostfs;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;

use super::dispatch::shell_of;
use super::*;
use crate::plan::{Cmdline, MountSpec, Network, RunOp};
use crate::runtime::{BindMount, NetworkMode, RunOptions};
use crate::storage::Snapshot;

/// What a step's mounts became on the host for one run; dropped (and cleaned) after it.
#[derive(Default)]
struct Resolved {
    binds: Vec<BindMount>,
    tmpfs: Vec<String>,
    /// Snapshots of `from=` stages, removed after the step.
    snaps: Vec<Snapshot>,
    /// Throwaway copies for read-write binds and private caches.
    scratch: Vec<tempfile::TempDir>,
    /// Locks of `sharing=locked` caches and every cache's use lock, held while the step
    /// runs.
    locks: Vec<std::fs::File>,
    locked: Vec<PathBuf>,
}

/// How to make a cache mount's directory when it does not exist yet: its mode and owner,
/// and the `from=` stage, snapshot name and `source=` path to seed it with, if any.
struct FreshMount<'a> {
    id: &'a str,
    mode: u32,
    uid: u32,
    gid: u32,
    seed: Option<(&'a State, String, &'a str)>,
}

/// The chroot backend makes no network namespace: a RUN step that asked for none
/// (`RUN --network=none`, or `keel build --network none`) would silently reach the host's
/// network, so it is refused by name, as `keel run --isolation chroot --network none` is.
fn refuse_under_chroot(
    isolation: Option<&str>,
    own: Network,
    network: Network,
) -> Result<(), StepFailure> {
    if isolation != Some("chroot") || network != Network::None {
        return Ok(());
    }
    let flag = match own {
        Network::None => "RUN --network=none",
        _ => "keel build --network none",
    };
    Err(StepFailure::Invalid(format!(
        "{flag} cannot be honoured by --isolation chroot, which has no network namespace (the step would reach the host's network); use --isolation namespaces or --isolation oci"
    )))
}

impl Executor<'_> {
    pub(super) fn dispatch_run(
        &mut self,
        n: usize,
        scope: &Scope,
        s: &Step,
        state: State,
        r: &RunOp,
    ) -> Result<(State, Outcome), StepFailure> {
        let vars = self.vars(&state, &scope.args);
        let expand = self.expander(&vars);
        let mounts: Vec<MountSpec> = r
            .mounts
            .iter()
            .map(|m| m.expand(&expand))
            .collect::<Result<_, _>>()
            .map_err(StepFailure::Invalid)?;
        self.note_cache_mounts(&mounts);
        let argv = run_argv(&shell_of(&state), &r.cmd, &r.heredocs);
        let from: Vec<Option<State>> = mounts
            .iter()
            .map(|m| m.source_stage().map(|f| self.state_from(f)).transpose())
            .collect::<Result<_, _>>()?;
        // `keel build --network` decides for RUN steps that do not say.
        let network = match (r.network, self.opts.network) {
            (Network::Default, Some(build)) => build,
            (own, _) => own,
        };
        refuse_under_chroot(self.opts.isolation.as_deref(), r.network, network)?;
        // BuildKit's form (convert.go `dispatchRun` → `commitToHistory`, which marks a
        // step with a layer `# buildkit`).
        let created_by = super::history::run(&argv, &run_args(scope, &vars));
        let mut inputs = self.run_inputs(&state, &scope.args, &argv, network, &mounts, &from)?;
        // The ARGs the history lists are part of the result a cache entry carries; their
        // values are keyed as args and env, but an ARG declared without a value is in no
        // other input: the names are keyed too.
        if !scope.declared.is_empty() {
            inputs.instruction["run"]["declared_args"] = json!(scope.declared);
        }
        let inputs = inputs.keyed();
        let position = self.position(Some(scope.stage), s);
        self.in_snapshot(
            n,
            "",
            state,
            &inputs,
            &position,
            &created_by,
            |snap, state| {
                let mut res = Resolved::default();
                let ran = self
                    .resolve_mounts(n, &mounts, &from, &mut res)
                    .and_then(|()| {
                        self.run_in(n, snap, state, &scope.args, &argv, network, &mounts, &res)
                    });
                for f in &res.snaps {
                    let _ = self.snapshotter.remove(f);
                }
                ran
            },
        )
    }

    /// Remembers the cache mounts this build uses (each id once, with its sharing).
    fn note_cache_mounts(&self, mounts: &[MountSpec]) {
        for m in mounts {
            if let MountSpec::Cache { id, sharing, .. } = m {
                let mut used = self.cache_mounts.borrow_mut();
                if !used.iter().any(|(u, _)| u == id) {
                    used.push((id.clone(), *sharing));
                }
            }
        }
    }

    /// The key inputs of a RUN: the typed step after expansion, the args and config it
    /// runs with, and the files of context bind mounts (stage binds: that stage's key).
    fn run_inputs(
        &mut self,
        state: &State,
        args: &BTreeMap<String, String>,
        argv: &[String],
        network: Network,
        mounts: &[MountSpec],
        from: &[Option<State>],
    ) -> Result<KeyInputs, StepFailure> {
        let mut files = BTreeMap::new();
        for m in mounts {
            let MountSpec::Bind {
                source, from: None, ..
            } = m
            else {
                continue;
            };
            for sel in self.context.select(source)? {
                for (f, rel) in sel.files() {
                    let content = self.content_input(self.context, f, true)?;
                    let entry = format!("{:?} {:o} {content}", f.kind, f.mode);
                    files.insert(format!("bind {source}:{rel}"), entry);
                }
            }
        }
        let from_keys: Vec<Option<&str>> = from
            .iter()
            .map(|s| s.as_ref().map(|s| s.key.as_str()))
            .collect();
        let mut run =
            json!({"run": {"argv": argv, "network": network, "mounts": mounts, "from": from_keys}});
        // Build-wide container settings are inputs only when given, so other keys stay.
        if !self.opts.add_hosts.is_empty() {
            run["run"]["add_hosts"] = json!(self.opts.add_hosts);
        }
        if let Some(shm) = self.opts.shm_size {
            run["run"]["shm_size"] = json!(shm);
        }
        if !self.opts.ulimits.is_empty() {
            run["run"]["ulimits"] = json!(self.opts.ulimits);
        }
        let cfg = &state.config.config;
        let mut inputs = KeyInputs::new(state.key.clone(), run);
        inputs.args = args.clone();
        inputs.env = BTreeMap::from([
            ("env".into(), json!(cfg.env_list()).to_string()),
            ("user".into(), cfg.user.clone().unwrap_or_default()),
            (
                "workdir".into(),
                cfg.working_dir.clone().unwrap_or_default(),
            ),
        ]);
        inputs.files = files;
        Ok(inputs)
    }

    /// Turns each mount into a bind or tmpfs on the host side (secrets and agents are
    /// added when the step runs).
    fn resolve_mounts(
        &self,
        n: usize,
        mounts: &[MountSpec],
        from: &[Option<State>],
        res: &mut Resolved,
    ) -> Result<(), StepFailure> {
        for (i, m) in mounts.iter().enumerate() {
            match m {
                MountSpec::Bind {
                    target,
                    source,
                    readwrite,
                    ..
                } => {
                    let src = match &from[i] {
                        Some(st) => self.stage_source(n, i, st, source, res)?,
                        // Never the host directory, read-only or not: a throwaway copy
                        // without the files .dockerignore keeps out.
                        None => self.context_copy(source, res)?,
                    };
                    res.binds.push(BindMount {
                        src,
                        dst: target.clone(),
                        ro: !readwrite,
                    });
                }
                MountSpec::Cache { .. } => {
                    let seed = from[i].as_ref().map(|st| (st, format!("{n}-seed{i}")));
                    self.cache_mount(m, seed, res)?
                }
                MountSpec::Tmpfs { target, size } => res.tmpfs.push(match size {
                    Some(s) => format!("{target}:size={s}"),
                    None => target.clone(),
                }),
                MountSpec::Secret { .. } | MountSpec::Ssh { .. } => {}
            }
        }
        Ok(())
    }

    /// A `from=` bind's source: inside a fresh snapshot of that stage (thrown away after
    /// the step, so a read-write bind's writes go nowhere).
    fn stage_source(
        &self,
        n: usize,
        i: usize,
        st: &State,
        source: &str,
        res: &mut Resolved,
    ) -> Result<PathBuf, StepFailure> {
        let rel = crate::context::clean_source(source)?;
        let snap = self.snapshot(&format!("{n}-mount{i}"), &st.layers, Tree::Writable)?;
        let root = snap.rootfs.clone();
        res.snaps.push(snap);
        // Resolved inside the image it comes from (its symlinks re-rooted there, never
        // followed to the host's files).
        let inside = crate::sys::rootfs::Rootfs::open(&root)
            .and_then(|t| t.in_tree_path(std::path::Path::new(&rel)))
            .map_err(|e| StepFailure::Invalid(format!("RUN --mount source {rel}: {e}")))?;
        Ok(root.join(inside))
    }

    /// A bind of the context: a throwaway copy of what the source selects (after
    /// `.dockerignore`), so the step neither sees ignored files nor writes to the host's
    /// (BuildKit discards a read-write bind's writes too).
    fn context_copy(&self, source: &str, res: &mut Resolved) -> Result<PathBuf, StepFailure> {
        let tmp = crate::sys::hostfs::scratch_dir_in(&self.store.tmp_dir(), "rw-bind")
            .map_err(|e| StepFailure::Invalid(format!("creating a copy of {source}: {e}")))?;
        let sels = copy_into(self.context, source, tmp.path())?;
        let path = match sels.as_slice() {
            [one] if one.top.kind != crate::context::FileKind::Dir => tmp.path().join(&one.name),
            _ => tmp.path().to_path_buf(),
        };
        res.scratch.push(tmp);
        Ok(path)
    }

    /// A cache mount: its directory under the cache (made with the mount's mode and
    /// owner, and seeded from `source` of the `from=` stage when it has one), locked for
    /// `sharing=locked`, a fresh one for `private` when another build holds it.
    fn cache_mount(
        &self,
        m: &MountSpec,
        seed: Option<(&State, String)>,
        res: &mut Resolved,
    ) -> Result<(), StepFailure> {
        let MountSpec::Cache {
            target,
            id,
            source,
            sharing,
            mode,
            uid,
            gid,
            readonly,
            ..
        } = m
        else {
            unreachable!("called for cache mounts")
        };
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| StepFailure::Step(StepError::Io { path, source })
        };
        let dir = self.cache.mount_dir(id);
        let fresh = FreshMount {
            id,
            mode: *mode,
            uid: *uid,
            gid: *gid,
            seed: seed.map(|(st, name)| (st, name, source.as_deref().unwrap_or("/"))),
        };
        self.seed_under_use_lock(&dir, fresh, res)?;
        let mut src = dir.clone();
        let lock_path = dir.with_extension("lock");
        // A step that mounts one cache twice takes its lock once (flock would deadlock).
        let held = res.locked.contains(&lock_path);
        if *sharing != crate::plan::mount::Sharing::Shared && !held {
            let lock = hostfs::create(&lock_path).map_err(io(&lock_path))?;
            match sharing {
                crate::plan::mount::Sharing::Locked => lock.lock().map_err(io(&lock_path))?,
                _ if lock.try_lock().is_ok() => {}
                _ => {
                    // Private and in use by another build: this step gets its own.
                    let tmp =
                        crate::sys::hostfs::scratch_dir_in(&self.store.tmp_dir(), "cache-private")
                            .map_err(io(&dir))?;
                    src = tmp.path().to_path_buf();
                    res.scratch.push(tmp);
                }
            }
            res.locks.push(lock);
            res.locked.push(lock_path);
        }
        res.binds.push(BindMount {
            src,
            dst: target.clone(),
            ro: *readonly,
        });
        Ok(())
    }

    /// Holds the cache directory `dir`'s use lock (`<dir>.use`) shared for the step, after
    /// creating and seeding it if it is cold. Every step using a cache mount holds that
    /// lock shared while it runs, whatever its `sharing=`; seeding holds it exclusive,
    /// taken without waiting: a mount some step is using is not seeded (a seed renamed
    /// over the directory a running step has mounted would swallow that step's writes),
    /// and a step arriving while a seed is unpacked waits for it.
    fn seed_under_use_lock(
        &self,
        dir: &std::path::Path,
        fresh: FreshMount<'_>,
        res: &mut Resolved,
    ) -> Result<(), StepFailure> {
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| StepFailure::Step(StepError::Io { path, source })
        };
        let use_path = dir.with_extension("use");
        // A step that mounts one cache twice took (and seeded under) it the first time.
        if res.locked.contains(&use_path) {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            hostfs::create_dir_all(parent).map_err(io(parent))?;
        }
        let lock = hostfs::create(&use_path).map_err(io(&use_path))?;
        let exclusive = lock.try_lock().is_ok();
        if !exclusive {
            // In use (it exists, unseeded stays so), or being seeded: wait for the seed.
            lock.lock_shared().map_err(io(&use_path))?;
        }
        if !dir.exists() {
            hostfs::create_dir_all(dir).map_err(io(dir))?;
            use std::os::unix::fs::PermissionsExt;
            hostfs::set_permissions(dir, std::fs::Permissions::from_mode(fresh.mode))
                .map_err(io(dir))?;
            hostfs::chown(dir, Some(fresh.uid), Some(fresh.gid)).map_err(io(dir))?;
            if let (true, Some((st, name, src))) = (exclusive, &fresh.seed) {
                self.seed_cache(st, name, src, dir)?;
            }
        }
        if exclusive && fresh.seed.is_none() {
            self.seed_from_registry(fresh.id, dir);
        }
        if exclusive {
            // flock(2) converts the exclusive lock in place.
            lock.lock_shared().map_err(io(&use_path))?;
        }
        res.locks.push(lock);
        res.locked.push(use_path);
        Ok(())
    }

    /// Fills a new (or empty) cache directory from a `--cache-from` cache that exported
    /// it (`mounts=true`). Only a head start: a failure is a warning, the step runs with
    /// what the directory has.
    fn seed_from_registry(&self, id: &str, dir: &std::path::Path) {
        match crate::registry::mounts::seed_mount(self.store, id, dir) {
            Ok(true) => tracing::info!("cache mount {id} seeded from --cache-from"),
            Ok(false) => {}
            Err(e) => self.say(format!(
                "warning: cache mount {id}: not seeded from --cache-from: {e}"
            )),
        }
    }

    /// Fills a new cache directory with `source` of a stage (BuildKit's `from=` base).
    fn seed_cache(
        &self,
        st: &State,
        name: &str,
        source: &str,
        dir: &std::path::Path,
    ) -> Result<(), StepFailure> {
        let snap = self.snapshot(name, &st.layers, Tree::View)?;
        let seeded = Context::new(&snap.rootfs, Box::new(|_: &str| false))
            .map_err(StepFailure::from)
            .and_then(|ctx| copy_into(&ctx, source, dir).map(drop));
        let _ = self.snapshotter.remove(&snap);
        seeded
    }

    /// Runs the command in `snap` with the resolved mounts and commits what it changed.
    #[allow(clippy::too_many_arguments)]
    fn run_in(
        &self,
        n: usize,
        snap: &Snapshot,
        state: &State,
        args: &BTreeMap<String, String>,
        argv: &[String],
        network: Network,
        mounts: &[MountSpec],
        res: &Resolved,
    ) -> Result<Option<StoredLayer>, StepFailure> {
        let creds = mounts::credentials(mounts, &self.opts.credentials, &self.store.tmp_dir())
            .map_err(StepFailure::Invalid)?;
        let net = match network {
            Network::None => NetworkMode::None,
            Network::Host | Network::Default => NetworkMode::Host,
        };
        // resolv.conf, hosts and hostname as for a container, first so a step's own
        // mounts win; mounted, never committed (their stubs are removed below).
        let host: String = snap.id.chars().take(12).collect();
        let (_etc_dir, mut binds) = runtime::etc::for_step(&self.store.tmp_dir(), net, &host)
            .map_err(|e| StepFailure::Invalid(e.to_string()))?;
        binds.extend(res.binds.iter().cloned());
        binds.extend(creds.binds.iter().cloned());
        let hosts = self.hosts_file()?;
        if let Some(h) = &hosts {
            binds.push(runtime::BindMount {
                src: h.path().to_path_buf(),
                dst: "/etc/hosts".into(),
                ro: true,
            });
        }
        let stubs: Vec<PathBuf> = binds
            .iter()
            .map(|b| b.dst.as_str())
            .chain(res.tmpfs.iter().map(|t| t.split(':').next().unwrap_or(t)))
            .flat_map(|t| mounts::stubs_for(&snap.rootfs, t))
            .collect();
        let cfg = &state.config.config;
        let mut env = arg_env(args, cfg.env_list());
        env.extend(creds.env.iter().cloned());
        let opts = RunOptions {
            cmd: Some(argv.to_vec()),
            entrypoint: Some(Vec::new()),
            env,
            network: net,
            binds,
            tmpfs: res.tmpfs.clone(),
            shm_size: self.opts.shm_size,
            ulimits: self.opts.ulimits.clone(),
            ..Default::default()
        };
        let oci = cfg
            .to_oci()
            .map_err(|e| StepFailure::Invalid(e.to_string()))?;
        let spec = runtime::plan_for_rootfs(&snap.id, &oci, &opts, &snap.rootfs)?;
        let log = self.log_dir.join(format!("step-{n}.log"));
        self.live.set(true);
        let ran = step::run_ended(self.backend.as_ref(), &spec, snap, &log, |l| {
            self.view.step_output(n, l)
        });
        // Mount points belong to the mounts, not to the image.
        mounts::remove_stubs(&snap.rootfs, &stubs);
        if ran? {
            self.live.set(false);
        }
        self.commit_kept(snap)
    }

    /// Commits what changed in `snap` as one layer (`None` when nothing did), then keeps
    /// the snapshot's writes as that layer's unpacked tree where the driver can, so the
    /// next step mounts it without extracting the tar just written (issue 14). `snap` is
    /// only good for removal afterwards. Unless a RUN's processes may outlive it (`live`:
    /// chroot, oci, an init that did not end normally), no host process is looked at.
    pub(super) fn commit_kept(&self, snap: &Snapshot) -> Result<Option<StoredLayer>, StepFailure> {
        let changes = self.snapshotter.changes(snap)?;
        if changes.is_empty() {
            return Ok(None);
        }
        let opts = crate::layer::pack::PackOptions {
            epoch: self.opts.epoch,
            ..Default::default()
        };
        let mut blob = self.store.blob_writer()?;
        crate::layer::pack::pack(&changes, &snap.rootfs, &mut blob, &opts)
            .map_err(StepError::from)?;
        // Nothing reads through the mount from here on: its teardown (after a RUN that
        // looked at many files, the slowest part of the step's end) overlaps the blob's
        // fsync and the rest of the build. A failure leaves it to `keep_as_layer`.
        let _ = self.snapshotter.release_mount(snap, !self.live.get());
        let layer = step::stored(blob)?;
        // Only a shortcut: when it fails the layer is extracted when needed, as before.
        match self.snapshotter.keep_as_layer(
            snap,
            &layer.diff_id,
            &changes,
            &opts,
            !self.live.get(),
        ) {
            Ok(kept) => tracing::debug!(kept, diff_id = %layer.diff_id, "layer tree kept"),
            Err(e) => tracing::debug!("layer {} not kept as a tree: {e}", layer.diff_id),
        }
        Ok(Some(layer))
    }
}

impl Executor<'_> {
    /// With `--add-host`, the RUN steps' `/etc/hosts`: loopback names, then each
    /// `NAME IP` given (BuildKit writes its own hosts file the same way).
    fn hosts_file(&self) -> Result<Option<tempfile::NamedTempFile>, StepFailure> {
        if self.opts.add_hosts.is_empty() {
            return Ok(None);
        }
        let mut text =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for (name, ip) in &self.opts.add_hosts {
            text.push_str(&format!("{ip}\t{name}\n"));
        }
        let tmp = self.store.tmp_dir();
        let io = |source| StepError::Io {
            path: tmp.clone(),
            source,
        };
        let mut f = tempfile::NamedTempFile::new_in(&tmp).map_err(io)?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        hostfs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o644)).map_err(io)?;
        Ok(Some(f))
    }
}

/// Copies what `source` selects in `ctx` into the directory `dir` (a directory's
/// contents, or a file under its own name).
fn copy_into(
    ctx: &Context,
    source: &str,
    dir: &std::path::Path,
) -> Result<Vec<crate::context::Selection>, StepFailure> {
    let sels = ctx.select(source)?;
    let ops = copy::plan("RUN --mount", &sels, "/", "/", None, None, true)?;
    step::apply_copy(ctx, dir, &ops, None)?;
    Ok(sels)
}

/// Build args the config's Env does not set, as the command's environment (sorted).
fn arg_env(args: &BTreeMap<String, String>, env: &[String]) -> Vec<String> {
    let set = |k: &str| env.iter().any(|e| e.split('=').next() == Some(k));
    let mut out: Vec<String> = args
        .iter()
        .filter(|(k, _)| !set(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    out.sort();
    out
}

/// The argv of a RUN: `RUN <<EOF` runs the body as the script; `RUN cmd <<EOF` hands the
/// shell the command followed by the bodies and their terminators (it reads them itself).
fn run_argv(shell: &[String], cmd: &Cmdline, heredocs: &[crate::plan::Heredoc]) -> Vec<String> {
    let script = match (cmd, heredocs.is_empty()) {
        (Cmdline::Shell(c), false)
            if c.split_whitespace().all(|w| {
                w.trim_start_matches(|ch: char| ch.is_ascii_digit())
                    .starts_with("<<")
            }) =>
        {
            heredocs.iter().map(|h| h.content.as_str()).collect()
        }
        (Cmdline::Shell(c), false) => {
            let mut script = c.clone();
            for h in heredocs {
                script.push('\n');
                script.push_str(&h.content);
                if !h.content.ends_with('\n') && !h.content.is_empty() {
                    script.push('\n');
                }
                script.push_str(&h.name);
            }
            script
        }
        _ => return cmd.argv(shell),
    };
    shell
        .iter()
        .cloned()
        .chain(std::iter::once(script))
        .collect()
}

/// The ARGs a RUN's history lists (convert.go `runCommandString`): every declared ARG in
/// declaration order, with the value the step sees (an ENV of the same name wins), or
/// empty.
fn run_args(scope: &Scope, vars: &BTreeMap<String, String>) -> Vec<(String, String)> {
    scope
        .declared
        .iter()
        .map(|k| (k.clone(), vars.get(k).cloned().unwrap_or_default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Heredoc;

    #[test]
    fn run_argv_table() {
        let sh = vec!["/bin/sh".to_string(), "-c".to_string()];
        let doc = |name: &str, content: &str| Heredoc {
            name: name.into(),
            content: content.into(),
            expand: true,
        };
        let cases: Vec<(Cmdline, Vec<Heredoc>, Vec<&str>)> = vec![
            (
                Cmdline::Shell("make".into()),
                vec![],
                vec!["/bin/sh", "-c", "make"],
            ),
            (
                Cmdline::Exec(vec!["a".into(), "b".into()]),
                vec![],
                vec!["a", "b"],
            ),
            (
                Cmdline::Shell("<<EOF".into()),
                vec![doc("EOF", "echo hi\n")],
                vec!["/bin/sh", "-c", "echo hi\n"],
            ),
            (
                Cmdline::Shell("cat <<EOF".into()),
                vec![doc("EOF", "x")],
                vec!["/bin/sh", "-c", "cat <<EOF\nx\nEOF"],
            ),
        ];
        for (cmd, docs, want) in cases {
            assert_eq!(run_argv(&sh, &cmd, &docs), want, "{cmd:?}");
        }
    }
}
