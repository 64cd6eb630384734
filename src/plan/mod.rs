//! The build plan (pure, no I/O): the front end's typed instructions turned into stages
//! of typed steps — mounts, network, durations, platforms, `--chown`/`--chmod` — plus the
//! stage graph (which stages a target needs) and the ARG scoping rules. The executor in
//! `build/` only ever sees these types; variables in them are expanded when a step runs.
//!
//! Must not: read files, look at the store, or expand variables other than the global
//! args of FROM lines (`show.rs`, for `keel build --dry-run`).
mod build;
mod copy;
pub mod mount;
mod run;
mod show;
pub mod word;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

pub use crate::dockerfile::instruction::Network;
pub use build::{plan, triggers};
pub use copy::CopyOp;
pub use mount::{Mount, MountSpec};
pub use run::RunOp;
use show::cmd_text;
pub use show::{dry_run, DryRun};
pub use word::{Chmod, Chown, Platform, Word};

/// A command in shell form (run through SHELL) or exec form (argv as written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cmdline {
    Shell(String),
    Exec(Vec<String>),
}

impl Cmdline {
    /// The argv that runs it, with `shell` for the shell form.
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            Cmdline::Shell(s) => shell
                .iter()
                .cloned()
                .chain(std::iter::once(s.clone()))
                .collect(),
            Cmdline::Exec(v) => v.clone(),
        }
    }
}

/// A heredoc attached to RUN/COPY/ADD, `<<-` tabs already stripped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    /// Whether variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
}

/// HEALTHCHECK CMD (`None` in `Op::Healthcheck` is HEALTHCHECK NONE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    pub test: Cmdline,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Run(RunOp),
    Copy(CopyOp),
    Env(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    Label(Vec<(String, String)>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Workdir(String),
    User(String),
    Cmd(Cmdline),
    Entrypoint(Cmdline),
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck(Option<Healthcheck>),
    /// The trigger instruction's source text, stored in the image config.
    Onbuild(String),
    Maintainer(String),
}

/// One instruction of a stage, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    /// The instruction as written (for progress and history).
    pub text: String,
    pub op: Op,
}

/// A `FROM` and the steps after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    pub name: Option<String>,
    /// The base as written (may contain `$ARG`s declared before the first FROM).
    pub base: String,
    pub platform: Option<Word<Platform>>,
    pub line: usize,
    pub steps: Vec<Step>,
}

/// A planned Dockerfile, ready to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The file's escape character (`# escape=`), for expanding its words.
    pub escape: char,
    /// ARGs declared before the first FROM (usable in FROM lines, and in a stage after
    /// being re-declared there without a value).
    pub global_args: Vec<(String, Option<String>)>,
    pub stages: Vec<Stage>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("target stage {0:?} could not be found; the Dockerfile names stages {1}")]
    NoTarget(String, String),
    #[error("the Dockerfile has no FROM; every build starts with FROM IMAGE (or FROM scratch)")]
    NoStages,
    #[error("line {line}: stage {stage} refers to itself or to a later stage ({reference}); a stage can only use stages above it")]
    ForwardReference {
        line: usize,
        stage: String,
        reference: String,
    },
}

impl Step {
    /// Every stage or image this step reads from: `COPY --from` and each mount's `from=`.
    pub fn sources(&self) -> Vec<&str> {
        match &self.op {
            Op::Copy(c) => c.from.as_deref().into_iter().collect(),
            Op::Run(r) => r
                .mounts
                .iter()
                .filter_map(|m| m.spec.source_stage())
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Plan {
    /// The index of the stage named `target` (or the last stage).
    pub fn target_index(&self, target: Option<&str>) -> Result<usize, PlanError> {
        if self.stages.is_empty() {
            return Err(PlanError::NoStages);
        }
        match target {
            None => Ok(self.stages.len() - 1),
            Some(t) => self.stage_by_ref(t).ok_or_else(|| {
                let names: Vec<String> = self.stages.iter().map(Stage::label).collect();
                PlanError::NoTarget(t.to_string(), names.join(", "))
            }),
        }
    }

    /// A stage by name (case-insensitive, as Docker) or index.
    pub fn stage_by_ref(&self, r: &str) -> Option<usize> {
        let lower = r.to_ascii_lowercase();
        self.stages
            .iter()
            .position(|s| {
                s.name.as_deref().map(str::to_ascii_lowercase).as_deref() == Some(lower.as_str())
            })
            .or_else(|| r.parse::<usize>().ok().filter(|i| *i < self.stages.len()))
    }

    /// Stages a stage depends on: its base when that is a stage, every `COPY --from` and
    /// every `from=` of every RUN mount.
    pub fn dependencies(&self, i: usize) -> Result<Vec<usize>, PlanError> {
        let s = &self.stages[i];
        let refs = std::iter::once((s.line, s.base.as_str())).chain(
            s.steps
                .iter()
                .flat_map(|st| st.sources().into_iter().map(move |f| (st.line, f))),
        );
        let mut deps = Vec::new();
        for (line, r) in refs {
            if let Some(j) = self.stage_by_ref(r) {
                if j >= i {
                    return Err(PlanError::ForwardReference {
                        line,
                        stage: s.label(),
                        reference: r.to_string(),
                    });
                }
                deps.push(j);
            }
        }
        deps.sort();
        deps.dedup();
        Ok(deps)
    }

    /// The stages needed to build `target`, in build order (only those).
    pub fn needed(&self, target: usize) -> Result<Vec<usize>, PlanError> {
        let mut needed = vec![false; self.stages.len()];
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if needed[i] {
                continue;
            }
            needed[i] = true;
            todo.extend(self.dependencies(i)?);
        }
        Ok((0..self.stages.len()).filter(|i| needed[*i]).collect())
    }
}

impl Stage {
    /// The stage's name, or its index.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.index.to_string())
    }
}

/// The platform build args BuildKit defines by itself (`TARGETPLATFORM`, `TARGETARCH`,
/// `BUILDOS`, …) for a build on and for `os/arch`: visible in FROM lines without a
/// declaration, and in a stage once it declares them (`ARG TARGETARCH`).
pub fn platform_args(os: &str, arch: &str) -> BTreeMap<String, String> {
    let p = Platform {
        os: os.to_string(),
        arch: arch.to_string(),
        variant: None,
    };
    platform_args_for(&p, &p)
}

/// [`platform_args`] for a build on `build` (the host: `BUILD*`) producing an image for
/// `target` (`TARGET*`), as BuildKit sets them: `TARGETPLATFORM` is `os/arch[/variant]`
/// and `TARGETVARIANT` is empty when the platform has none.
pub fn platform_args_for(target: &Platform, build: &Platform) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (side, p) in [("TARGET", target), ("BUILD", build)] {
        out.insert(format!("{side}PLATFORM"), p.to_string());
        out.insert(format!("{side}OS"), p.os.clone());
        out.insert(format!("{side}ARCH"), p.arch.clone());
        out.insert(
            format!("{side}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    out
}

/// The values of the ARGs declared before the first FROM (and the platform args for
/// `arch`), with `--build-arg` overriding defaults.
pub fn global_arg_values(
    global: &[(String, Option<String>)],
    build_args: &BTreeMap<String, String>,
    arch: &str,
) -> BTreeMap<String, String> {
    let p = Platform {
        os: "linux".into(),
        arch: arch.to_string(),
        variant: None,
    };
    global_arg_values_for(global, build_args, &p, &p)
}

/// [`global_arg_values`] for a build on `build` for `target`.
pub fn global_arg_values_for(
    global: &[(String, Option<String>)],
    build_args: &BTreeMap<String, String>,
    target: &Platform,
    build: &Platform,
) -> BTreeMap<String, String> {
    let mut out = platform_args_for(target, build);
    for (k, default) in global {
        if let Some(v) = build_args.get(k).cloned().or_else(|| default.clone()) {
            out.insert(k.clone(), v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_builds_set_target_and_build_sides_apart() {
        let target: Platform = "linux/arm/v7".parse().unwrap();
        let build: Platform = "linux/amd64".parse().unwrap();
        let p = platform_args_for(&target, &build);
        let want = [
            ("TARGETPLATFORM", "linux/arm/v7"),
            ("TARGETOS", "linux"),
            ("TARGETARCH", "arm"),
            ("TARGETVARIANT", "v7"),
            ("BUILDPLATFORM", "linux/amd64"),
            ("BUILDARCH", "amd64"),
            ("BUILDVARIANT", ""),
        ];
        for (k, v) in want {
            assert_eq!(p[k], v, "{k}");
        }
    }

    #[test]
    fn platform_args_are_global_and_declared_args_override_them() {
        let p = platform_args("linux", "arm64");
        assert_eq!(p["TARGETPLATFORM"], "linux/arm64");
        assert_eq!(p["BUILDARCH"], "arm64");
        assert_eq!(p["TARGETOS"], "linux");
        let g = global_arg_values(
            &[
                ("BASE".into(), Some("bb".into())),
                ("TARGETOS".into(), Some("other".into())),
            ],
            &BTreeMap::from([("BASE".into(), "alpine".into())]),
            "riscv64",
        );
        assert_eq!(g["BASE"], "alpine");
        assert_eq!(g["TARGETARCH"], "riscv64");
        assert_eq!(g["TARGETOS"], "other");
    }

    fn planned(src: &str) -> Plan {
        let ast = crate::dockerfile::parse("Dockerfile", src.as_bytes()).unwrap();
        plan(&ast).unwrap()
    }

    #[test]
    fn only_the_stages_a_target_needs_are_built() {
        let plan = planned(
            "FROM bb AS deps\nFROM bb AS unused\nFROM deps AS Build\n\
             FROM bb\nCOPY --from=build /x /x\nCOPY --from=0 /x /x\n",
        );
        assert_eq!(
            plan.needed(plan.target_index(None).unwrap()).unwrap(),
            [0, 2, 3]
        );
        assert_eq!(
            plan.needed(plan.target_index(Some("unused")).unwrap())
                .unwrap(),
            [1]
        );
        assert_eq!(plan.target_index(Some("BUILD")).unwrap(), 2);
        let e = plan.target_index(Some("nope")).unwrap_err();
        assert_eq!(e.to_string(), "target stage \"nope\" could not be found; the Dockerfile names stages deps, unused, build, 3");
    }

    #[test]
    fn every_mount_from_is_a_dependency() {
        let plan = planned(
            "FROM bb AS a\nFROM bb AS b\nFROM bb AS c\nFROM bb\n\
             RUN --mount=from=a,target=/a --mount=type=cache,from=b,target=/b \
             --mount=type=bind,from=bb,target=/bb true\n",
        );
        assert_eq!(plan.needed(3).unwrap(), [0, 1, 3]);
    }

    #[test]
    fn a_stage_cannot_use_a_later_one() {
        let plan = planned("FROM bb AS a\nCOPY --from=b /x /x\nFROM bb AS b\n");
        assert!(matches!(
            plan.needed(0),
            Err(PlanError::ForwardReference { .. })
        ));
    }

    #[test]
    fn global_args_take_build_arg_overrides() {
        let g = vec![
            ("BASE".to_string(), Some("bb".to_string())),
            ("TAG".to_string(), None),
            ("X".to_string(), None),
        ];
        let over = BTreeMap::from([("TAG".to_string(), "1.0".to_string())]);
        let v = global_arg_values(&g, &over, "amd64");
        assert_eq!(v.get("BASE").map(String::as_str), Some("bb"));
        assert_eq!(v.get("TAG").map(String::as_str), Some("1.0"));
        assert!(!v.contains_key("X"));
        assert_eq!(
            Cmdline::Shell("make".into()).argv(&["/bin/sh".into(), "-c".into()]),
            ["/bin/sh", "-c", "make"]
        );
    }
}
