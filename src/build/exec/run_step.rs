//! RUN: the command line as it runs, its mounts (and what of them is an input), its
//! environment, and the container it runs in on the step's snapshot.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;

use super::*;

impl Executor<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_step(
        &mut self,
        n: usize,
        stage: &Stage,
        s: &Step,
        state: State,
        args: &BTreeMap<String, String>,
        cmd: &Cmdline,
        heredocs: &[crate::build::plan::Heredoc],
        network: Option<&str>,
        mounts: &[RunMount],
    ) -> Result<(State, Outcome), StepFailure> {
        let shell = shell_of(&state.config);
        let argv = match (cmd, heredocs.is_empty()) {
            (Cmdline::Shell(c), false)
                if c.split_whitespace().all(|w| {
                    w.trim_start_matches(|ch: char| ch.is_ascii_digit())
                        .starts_with("<<")
                }) =>
            {
                // `RUN <<EOF`: the body is the script.
                let body: String = heredocs.iter().map(|h| h.content.as_str()).collect();
                shell.iter().cloned().chain(std::iter::once(body)).collect()
            }
            (Cmdline::Shell(c), false) => {
                // `RUN cmd <<EOF`: the shell runs heredocs itself; hand it the command
                // followed by the bodies and their terminators.
                let mut script = c.clone();
                for h in heredocs {
                    script.push('\n');
                    script.push_str(&h.content);
                    if !h.content.ends_with('\n') && !h.content.is_empty() {
                        script.push('\n');
                    }
                    script.push_str(&h.name);
                }
                shell
                    .iter()
                    .cloned()
                    .chain(std::iter::once(script))
                    .collect()
            }
            _ => cmd.argv(&shell),
        };
        let net = match network.unwrap_or("default") {
            "none" => NetworkMode::None,
            "host" | "default" => NetworkMode::Host,
            other => {
                return Err(StepFailure::Invalid(format!(
                    "RUN --network={other} is not supported; use default, host or none"
                )))
            }
        };
        // Bind mounts are inputs: from the context, the files they show; from a stage or an
        // image, its key. (Secrets and agents are not: they never reach the layer.)
        let mut bind_from = Vec::new();
        let mut bind_files = BTreeMap::new();
        for m in mounts {
            let from = match (m.kind(), m.get("from")) {
                ("bind", Some(f)) => Some(self.state_from(f)?),
                ("bind", None) => {
                    let src = m.get("source").unwrap_or(".");
                    for sel in self.context.select(src)? {
                        for (f, rel) in sel.files() {
                            let content = self.content_input(self.context, f, true)?;
                            bind_files.insert(
                                format!("bind {src}:{rel}"),
                                format!("{:?} {:o} {content}", f.kind, f.mode),
                            );
                        }
                    }
                    None
                }
                _ => None,
            };
            bind_from.push(from);
        }
        let from_keys: Vec<&str> = bind_from.iter().flatten().map(|s| s.key.as_str()).collect();
        let inputs = KeyInputs {
            parent: state.key.clone(),
            instruction: format!(
                "RUN {} network={net:?} mounts={:?} from={from_keys:?}",
                json!(argv),
                mounts
            ),
            args: args.clone(),
            env: BTreeMap::from([
                ("env".into(), json!(env_list(&state.config)).to_string()),
                (
                    "user".into(),
                    config_str(&state.config, "User").unwrap_or_default(),
                ),
                (
                    "workdir".into(),
                    config_str(&state.config, "WorkingDir").unwrap_or_default(),
                ),
            ]),
            files: bind_files,
        };
        let position = self.position(stage, s);
        let created_by = format!("RUN {}", argv.join(" "));
        self.in_snapshot(n, "", state, &inputs, &position, &created_by, |snap, state| {
            let mut from_snaps = Vec::new();
            let result = (|| {
                let mut binds = Vec::new();
                let mut tmpfs = Vec::new();
                for (i, m) in mounts.iter().enumerate() {
                    let target = || {
                        m.get("target")
                            .or(m.get("dst"))
                            .or(m.get("destination"))
                            .map(str::to_string)
                            .ok_or_else(|| StepFailure::Invalid(format!("RUN --mount=type={} needs target=PATH", m.kind())))
                    };
                    match m.kind() {
                        "cache" => {
                            let target = target()?;
                            let id = m.get("id").unwrap_or(&target).to_string();
                            let dir = self
                                .cache
                                .mounts_dir()
                                .join(crate::digest::of_bytes(id.as_bytes()).digest());
                            std::fs::create_dir_all(&dir).map_err(|source| StepError::Io {
                                path: dir.clone(),
                                source,
                            })?;
                            binds.push(BindMount {
                                src: dir,
                                dst: target,
                                ro: false,
                            });
                        }
                        "tmpfs" => tmpfs.push(target()?),
                        "bind" => {
                            let rel = crate::context::clean_source(m.get("source").unwrap_or("."))?;
                            let src = match &bind_from[i] {
                                None => self.context.path_of(&rel),
                                Some(st) => {
                                    let from = step::snapshot(
                                        self.store,
                                        self.snapshotter.as_ref(),
                                        &format!("build-{}-{n}-mount{i}", self.build_id),
                                        &st.layers,
                                    )?;
                                    let root = from.rootfs.clone();
                                    from_snaps.push(from);
                                    // The source is resolved inside the image it comes from
                                    // (its symlinks re-rooted there, never the host's).
                                    let inside = crate::sys::rootfs::Rootfs::open(&root)
                                        .and_then(|t| t.in_tree_path(std::path::Path::new(&rel)))
                                        .map_err(|e| {
                                            StepFailure::Invalid(format!("RUN --mount=type=bind,from={},source={rel}: {e}", m.get("from").unwrap_or_default()))
                                        })?;
                                    root.join(inside)
                                }
                            };
                            binds.push(BindMount {
                                src,
                                dst: target()?,
                                ro: m.get("rw").is_none() && m.get("readwrite").is_none(),
                            });
                        }
                        "secret" | "ssh" => {}
                        other => {
                            return Err(StepFailure::Invalid(format!(
                                "unknown RUN --mount type {other:?}; use bind, cache, tmpfs, secret or ssh"
                            )))
                        }
                    }
                }
                let creds = mounts::credentials(mounts, &self.opts.credentials, &self.store.tmp_dir())
                    .map_err(StepFailure::Invalid)?;
                binds.extend(creds.binds.iter().cloned());
                let stubs: Vec<PathBuf> = binds
                    .iter()
                    .map(|b| b.dst.as_str())
                    .chain(tmpfs.iter().map(String::as_str))
                    .flat_map(|t| mounts::stubs_for(&snap.rootfs, t))
                    .collect();
                let mut env: Vec<String> = args
                    .iter()
                    .filter(|(k, _)| {
                        !env_list(&state.config)
                            .iter()
                            .any(|e| e.split('=').next() == Some(k.as_str()))
                    })
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                env.sort();
                env.extend(creds.env.iter().cloned());
                let opts = RunOptions {
                    cmd: Some(argv.clone()),
                    entrypoint: Some(Vec::new()),
                    env,
                    network: net,
                    binds,
                    tmpfs,
                    ..Default::default()
                };
                let cfg: oci_spec::image::Config =
                    serde_json::from_value(state.config["config"].clone()).unwrap_or_default();
                let spec = runtime::plan_for_rootfs(&snap.id, &cfg, &opts, &snap.rootfs)?;
                let log = self.log_dir.join(format!("step-{n}.log"));
                let ran = step::run(self.backend.as_ref(), &spec, snap, &log, |l| {
                    self.view.step_output(n, l)
                });
                // Mount points belong to the mounts, not to the image.
                mounts::remove_stubs(&snap.rootfs, &stubs);
                ran?;
                Ok(step::commit(
                    self.store,
                    self.snapshotter.as_ref(),
                    snap,
                    self.opts.epoch,
                )?)
            })();
            for f in &from_snaps {
                let _ = self.snapshotter.remove(f);
            }
            result
        })
    }
}
