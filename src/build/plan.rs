//! The build plan (pure): stages with their steps, which stages a target needs, and the
//! ARG scoping rules. Built from the Dockerfile front end's instructions; the executor
//! only ever sees these types.
use std::collections::BTreeMap;

/// A command in shell form (run through SHELL) or exec form (argv as written).
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A heredoc attached to RUN/COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    /// Whether variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
}

/// `RUN --mount=...` options, as key → value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunMount {
    pub options: BTreeMap<String, String>,
}

impl RunMount {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.options.get(k).map(String::as_str)
    }
    pub fn kind(&self) -> &str {
        self.get("type").unwrap_or("bind")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["NONE"]`, or `["CMD", ...]` / `["CMD-SHELL", "..."]`.
    pub test: Vec<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub start_interval: Option<String>,
    pub retries: Option<u32>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    Run {
        cmd: Cmdline,
        heredocs: Vec<Heredoc>,
        network: Option<String>,
        mounts: Vec<RunMount>,
    },
    Copy {
        add: bool,
        srcs: Vec<String>,
        dest: String,
        from: Option<String>,
        chown: Option<String>,
        chmod: Option<String>,
        link: bool,
        exclude: Vec<String>,
        heredocs: Vec<Heredoc>,
    },
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
    Healthcheck(Healthcheck),
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
    pub kind: StepKind,
}

/// A `FROM` and the steps after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    pub name: Option<String>,
    /// The base as written (may contain `$ARG`s declared before the first FROM).
    pub base: String,
    pub platform: Option<String>,
    pub line: usize,
    pub steps: Vec<Step>,
}

/// A parsed Dockerfile, ready to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
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

impl Plan {
    /// The index of the stage named `target` (or the last stage).
    pub fn target_index(&self, target: Option<&str>) -> Result<usize, PlanError> {
        if self.stages.is_empty() {
            return Err(PlanError::NoStages);
        }
        match target {
            None => Ok(self.stages.len() - 1),
            Some(t) => self.stage_by_ref(t).ok_or_else(|| {
                let names: Vec<String> = self
                    .stages
                    .iter()
                    .map(|s| s.name.clone().unwrap_or_else(|| s.index.to_string()))
                    .collect();
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

    /// Stages a stage depends on: its base when that is a stage, and `COPY --from` ones.
    pub fn dependencies(&self, i: usize) -> Result<Vec<usize>, PlanError> {
        let s = &self.stages[i];
        let mut deps = Vec::new();
        let refs =
            std::iter::once((s.line, s.base.clone())).chain(s.steps.iter().filter_map(|st| {
                match &st.kind {
                    StepKind::Copy { from: Some(f), .. } => Some((st.line, f.clone())),
                    StepKind::Run { mounts, .. } => mounts
                        .iter()
                        .find_map(|m| m.get("from").map(|f| (st.line, f.to_string()))),
                    _ => None,
                }
            }));
        for (line, r) in refs {
            if let Some(j) = self.stage_by_ref(&r) {
                if j >= i {
                    return Err(PlanError::ForwardReference {
                        line,
                        stage: s.name.clone().unwrap_or_else(|| i.to_string()),
                        reference: r,
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

/// The default value of each global ARG after `--build-arg` overrides, for FROM lines.
/// The platform build args BuildKit defines by itself (`TARGETPLATFORM`, `TARGETARCH`,
/// `BUILDOS`, …) for a build on and for `os/arch`: visible in FROM lines without a
/// declaration, and in a stage once it declares them (`ARG TARGETARCH`).
pub fn platform_args(os: &str, arch: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for side in ["TARGET", "BUILD"] {
        out.insert(format!("{side}PLATFORM"), format!("{os}/{arch}"));
        out.insert(format!("{side}OS"), os.to_string());
        out.insert(format!("{side}ARCH"), arch.to_string());
        out.insert(format!("{side}VARIANT"), String::new());
    }
    out
}

/// The values of the ARGs declared before the first FROM (and the platform args), with
/// `--build-arg` overriding defaults.
pub fn global_arg_values(
    global: &[(String, Option<String>)],
    build_args: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let arch = crate::image::host_arch().to_string();
    let mut out = platform_args("linux", &arch);
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
    fn platform_args_are_global_and_declared_args_override_them() {
        let p = platform_args("linux", "arm64");
        assert_eq!(p["TARGETPLATFORM"], "linux/arm64");
        assert_eq!(p["BUILDARCH"], "arm64");
        assert_eq!(p["TARGETOS"], "linux");
        let host = crate::image::host_arch().to_string();
        let g = global_arg_values(
            &[
                ("BASE".into(), Some("bb".into())),
                ("TARGETOS".into(), Some("other".into())),
            ],
            &BTreeMap::from([("BASE".into(), "alpine".into())]),
        );
        assert_eq!(g["BASE"], "alpine");
        assert_eq!(g["TARGETARCH"], host);
        assert_eq!(g["TARGETOS"], "other");
    }

    fn stage(index: usize, name: Option<&str>, base: &str, copies_from: &[&str]) -> Stage {
        Stage {
            index,
            name: name.map(str::to_string),
            base: base.into(),
            platform: None,
            line: index * 10 + 1,
            steps: copies_from
                .iter()
                .map(|f| Step {
                    line: index * 10 + 2,
                    text: format!("COPY --from={f} /x /x"),
                    kind: StepKind::Copy {
                        add: false,
                        srcs: vec!["/x".into()],
                        dest: "/x".into(),
                        from: Some(f.to_string()),
                        chown: None,
                        chmod: None,
                        link: false,
                        exclude: vec![],
                        heredocs: vec![],
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn only_the_stages_a_target_needs_are_built() {
        let plan = Plan {
            global_args: vec![],
            stages: vec![
                stage(0, Some("deps"), "bb", &[]),
                stage(1, Some("unused"), "bb", &[]),
                stage(2, Some("Build"), "deps", &[]),
                stage(3, None, "bb", &["build", "0"]),
            ],
        };
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
        assert_eq!(e.to_string(), "target stage \"nope\" could not be found; the Dockerfile names stages deps, unused, Build, 3");
    }

    #[test]
    fn a_stage_cannot_use_a_later_one() {
        let plan = Plan {
            global_args: vec![],
            stages: vec![
                stage(0, Some("a"), "bb", &["b"]),
                stage(1, Some("b"), "bb", &[]),
            ],
        };
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
        let v = global_arg_values(&g, &over);
        assert_eq!(v.get("BASE").map(String::as_str), Some("bb"));
        assert_eq!(v.get("TAG").map(String::as_str), Some("1.0"));
        assert!(!v.contains_key("X"));
        assert_eq!(
            Cmdline::Shell("make".into()).argv(&["/bin/sh".into(), "-c".into()]),
            ["/bin/sh", "-c", "make"]
        );
    }
}
