//! One dispatch function per instruction (BuildKit's `dispatchX`): each expands the words
//! it uses with the stage's variables and edits the typed config. RUN and COPY/ADD, which
//! change the filesystem, live in `run_step.rs` and `copy_step.rs`.
use std::collections::BTreeMap;

use serde_json::json;

use super::{Executor, Outcome, Scope, State, StepFailure};
use crate::build::cache::KeyInputs;
use crate::build::step::{self, StepError};
use crate::image::config::{Empty, HealthConfig, History};
use crate::plan::{Cmdline, Healthcheck, Op, Step};

const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// The stage's SHELL, or `/bin/sh -c`.
pub(super) fn shell_of(state: &State) -> Vec<String> {
    match &state.config.config.shell {
        Some(s) if !s.is_empty() => s.clone(),
        _ => DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
    }
}

type Done = Result<(State, Outcome), StepFailure>;

impl Executor<'_> {
    /// Runs one planned step on `state`.
    pub(super) fn dispatch(&mut self, n: usize, scope: &mut Scope, s: &Step, state: State) -> Done {
        let vars = self.vars(&state, &scope.args);
        let state = match &s.op {
            Op::Run(r) => return self.dispatch_run(n, scope, s, state, r),
            Op::Copy(c) => return self.dispatch_copy(n, s, state, c, &vars),
            Op::Arg(decls) => return self.dispatch_arg(scope, state, decls, &vars),
            Op::Env(pairs) => self.dispatch_env(state, pairs, vars)?,
            Op::Label(pairs) => self.dispatch_label(state, pairs, &vars)?,
            Op::Expose(ports) => self.dispatch_expose(state, ports, &vars)?,
            Op::Volume(v) => self.dispatch_volume(state, v, &vars)?,
            Op::Workdir(w) => return self.dispatch_workdir(n, s, state, w, &vars),
            Op::User(u) => {
                let u = self.expand(u, &vars)?;
                set(state, |c| c.config.user = Some(u))
            }
            Op::StopSignal(sig) => {
                let sig = self.expand(sig, &vars)?;
                set(state, |c| c.config.stop_signal = Some(sig))
            }
            Op::Cmd(c) => dispatch_cmd(scope, state, c),
            Op::Entrypoint(c) => dispatch_entrypoint(scope, state, c),
            Op::Shell(sh) => set(state, |c| c.config.shell = Some(sh.clone())),
            Op::Healthcheck(h) => dispatch_healthcheck(state, h.as_ref()),
            Op::Onbuild(t) => set(state, |c| {
                c.config
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(t.clone())
            }),
            Op::Maintainer(m) => set(state, |c| c.author = Some(m.clone())),
        };
        Ok((metadata_done(state, s), Outcome::Metadata))
    }

    fn dispatch_arg(
        &self,
        scope: &mut Scope,
        state: State,
        decls: &[(String, Option<String>)],
        vars: &BTreeMap<String, String>,
    ) -> Done {
        let globals = self.global_args();
        for (k, default) in decls {
            let default = match default {
                Some(d) => Some(self.expand(d, vars)?),
                None => globals.get(k).cloned(),
            };
            if let Some(v) = self.opts.build_args.get(k).cloned().or(default) {
                scope.args.insert(k.clone(), v);
            }
        }
        // Build args reach the keys of the steps that see them (RUN env, expanded words),
        // not the chain itself: a new value reruns only those.
        Ok((state, Outcome::Metadata))
    }

    /// Every value of one ENV expands with the variables as they were before it
    /// (`ENV A=y B=$A` gives B the old A), as BuildKit's `dispatchEnv` does.
    fn dispatch_env(
        &self,
        state: State,
        pairs: &[(String, String)],
        vars: BTreeMap<String, String>,
    ) -> Result<State, StepFailure> {
        let values = pairs
            .iter()
            .map(|(k, v)| Ok((k, self.expand(v, &vars)?)))
            .collect::<Result<Vec<_>, StepFailure>>()?;
        Ok(set(state, |c| {
            for (k, v) in values {
                c.config.set_env(k, &v);
            }
        }))
    }

    fn dispatch_label(
        &self,
        state: State,
        pairs: &[(String, String)],
        vars: &BTreeMap<String, String>,
    ) -> Result<State, StepFailure> {
        edit(state, |c| {
            let labels = c.config.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in pairs {
                labels.insert(self.expand(k, vars)?, self.expand(v, vars)?);
            }
            Ok(())
        })
    }

    fn dispatch_expose(
        &self,
        state: State,
        ports: &[String],
        vars: &BTreeMap<String, String>,
    ) -> Result<State, StepFailure> {
        edit(state, |c| {
            let all = c.config.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in ports {
                let p = self.expand(p, vars)?;
                for port in exposed_ports(&p).map_err(StepFailure::Invalid)? {
                    all.insert(port, Empty {});
                }
            }
            Ok(())
        })
    }

    fn dispatch_volume(
        &self,
        state: State,
        vols: &[String],
        vars: &BTreeMap<String, String>,
    ) -> Result<State, StepFailure> {
        edit(state, |c| {
            let all = c.config.volumes.get_or_insert_with(BTreeMap::new);
            for v in vols {
                all.insert(self.expand(v, vars)?, Empty {});
            }
            Ok(())
        })
    }

    /// WORKDIR sets the config and creates the directory (with missing parents, mode
    /// 0755, owned by the stage's USER when one is set) even if nothing is ever written
    /// there: BuildKit's `dispatchWorkdir` adds an `llb.Mkdir` with `WithParents` and
    /// `WithUser`. An existing directory is left as it is, so the layer is then empty.
    fn dispatch_workdir(
        &mut self,
        n: usize,
        s: &Step,
        mut state: State,
        w: &str,
        vars: &BTreeMap<String, String>,
    ) -> Done {
        let w = self.expand(w, vars)?;
        let cur = state
            .config
            .config
            .working_dir
            .as_deref()
            .filter(|d| !d.is_empty());
        let abs = match cur {
            _ if w.starts_with('/') => w.clone(),
            Some(cur) => format!("{}/{w}", cur.trim_end_matches('/')),
            None => format!("/{w}"),
        };
        let abs = crate::build::copy::clean_abs(&abs);
        state.config.config.working_dir = Some(abs.clone());
        if abs == "/" {
            return Ok((metadata_done(state, s), Outcome::Metadata));
        }
        let user = state.config.config.user.clone().filter(|u| !u.is_empty());
        let instruction = json!({"workdir": {"path": abs, "user": user}});
        let inputs = KeyInputs::new(state.key.clone(), instruction).keyed();
        let position = self.position(None, s);
        let created_by = format!("WORKDIR {abs}");
        self.in_snapshot(
            n,
            "WORKDIR: ",
            state,
            &inputs,
            &position,
            &created_by,
            |snap, _| {
                let owner = match &user {
                    Some(u) => {
                        let u = crate::runtime::spec::Accounts::read(&snap.rootfs)?.resolve(u)?;
                        Some((u.uid, u.gid))
                    }
                    None => None,
                };
                let tree =
                    crate::sys::rootfs::Rootfs::open(&snap.rootfs).map_err(StepError::from)?;
                tree.mkdir_all(std::path::Path::new(&abs), 0o755, owner)
                    .map_err(StepError::from)?;
                Ok(step::commit(
                    self.store,
                    self.snapshotter.as_ref(),
                    snap,
                    self.opts.epoch,
                )?)
            },
        )
    }
}

/// The `port/proto` keys one EXPOSE word stands for: a range `7000-7002[/proto]` is one
/// key per port, as BuildKit's `dispatchExpose` gets them from `nat.ParsePortSpecs`.
pub(super) fn exposed_ports(word: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    let bad = || format!("EXPOSE {word}: invalid port; use PORT, PORT/PROTO or FIRST-LAST[/PROTO]");
    let num = |s: &str| s.parse::<u16>().map_err(|_| bad());
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(ports)?, num(ports)?),
    };
    if first > last || proto.is_empty() {
        return Err(bad());
    }
    Ok((first..=last).map(|p| format!("{p}/{proto}")).collect())
}

/// Applies `f` to the state's config.
fn edit(
    mut state: State,
    f: impl FnOnce(&mut crate::image::ImageConfig) -> Result<(), StepFailure>,
) -> Result<State, StepFailure> {
    f(&mut state.config)?;
    Ok(state)
}

/// Applies an edit that cannot fail.
fn set(mut state: State, f: impl FnOnce(&mut crate::image::ImageConfig)) -> State {
    f(&mut state.config);
    state
}

fn dispatch_cmd(scope: &mut Scope, mut state: State, c: &Cmdline) -> State {
    state.config.config.cmd = Some(c.argv(&shell_of(&state)));
    scope.cmd_set = true;
    state
}

fn dispatch_entrypoint(scope: &Scope, mut state: State, c: &Cmdline) -> State {
    state.config.config.entrypoint = Some(c.argv(&shell_of(&state)));
    if !scope.cmd_set {
        state.config.config.cmd = None;
    }
    state
}

fn dispatch_healthcheck(mut state: State, h: Option<&Healthcheck>) -> State {
    let ns = |d: Option<std::time::Duration>| d.map(|d| d.as_nanos() as u64);
    state.config.config.healthcheck = Some(match h {
        None => HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        },
        Some(h) => HealthConfig {
            test: match &h.test {
                Cmdline::Exec(v) => std::iter::once("CMD".to_string())
                    .chain(v.clone())
                    .collect(),
                Cmdline::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
            },
            interval: ns(h.interval),
            timeout: ns(h.timeout),
            start_period: ns(h.start_period),
            start_interval: ns(h.start_interval),
            retries: h.retries,
        },
    });
    state
}

/// A metadata step's history entry, and its key: it follows the resulting config.
/// The entry reads as BuildKit writes it: the instruction, no `/bin/sh -c #(nop)` (the
/// legacy builder's and buildah's form), BuildKit's comment (convert.go `commitToHistory`
/// with no layer).
fn metadata_done(mut state: State, s: &Step) -> State {
    let created_by = s.text.clone();
    state.config.history.push(History {
        created_by: Some(created_by.clone()),
        comment: Some(crate::image::config::HISTORY_COMMENT.into()),
        empty_layer: true,
        ..Default::default()
    });
    let instruction = json!({
        "metadata": {
            "created_by": created_by,
            "config": state.config.config,
            "author": state.config.author,
        }
    });
    state.key = KeyInputs::new(state.key.clone(), instruction)
        .key()
        .0
        .to_string();
    state
}

#[cfg(test)]
mod tests {
    use super::exposed_ports;

    #[test]
    fn expose_words_become_one_key_per_port() {
        let cases: &[(&str, &[&str])] = &[
            ("80", &["80/tcp"]),
            ("53/UDP", &["53/udp"]),
            ("7000-7002", &["7000/tcp", "7001/tcp", "7002/tcp"]),
            ("9-10/sctp", &["9/sctp", "10/sctp"]),
        ];
        for (word, want) in cases {
            assert_eq!(exposed_ports(word).unwrap(), *want, "{word}");
        }
        for bad in ["", "x", "80-", "9-8", "80/", "70000"] {
            assert!(exposed_ports(bad).is_err(), "{bad}");
        }
    }
}
