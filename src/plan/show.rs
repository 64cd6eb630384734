//! `keel build --dry-run`: the plan as text, without running anything or opening the store
//! — the stages a target needs, each step typed and readable, and each step's cache-key
//! inputs as far as they are known before execution (files, parents and config values
//! are only known when the step runs). FROM lines are shown expanded with the global args.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::{Cmdline, Healthcheck, Op, Plan, PlanError, Stage, Step};
use crate::dockerfile::expand::Lexer;

/// What a dry run is for: the same knobs `keel build` plans with.
#[derive(Debug, Clone, Default)]
pub struct DryRun {
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// The platform args' architecture (the host's in `keel build`).
    pub arch: String,
}

/// The plan for `opts.target`, as text.
pub fn dry_run(plan: &Plan, opts: &DryRun) -> Result<String, PlanError> {
    let target = plan.target_index(opts.target.as_deref())?;
    let needed = plan.needed(target)?;
    let globals = super::global_arg_values(&plan.global_args, &opts.build_args, &opts.arch);
    let mut out = String::new();
    let names: Vec<String> = needed.iter().map(|i| plan.stages[*i].label()).collect();
    let _ = writeln!(
        out,
        "plan: {} of {} stage(s) needed for target stage {}: {}",
        needed.len(),
        plan.stages.len(),
        plan.stages[target].label(),
        names.join(", ")
    );
    if !plan.global_args.is_empty() {
        let _ = writeln!(out, "global args: {}", args_text(&plan.global_args));
    }
    for i in needed {
        stage(&mut out, plan, &plan.stages[i], &globals);
    }
    Ok(out)
}

fn args_text(args: &[(String, Option<String>)]) -> String {
    let shown: Vec<String> = args
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect();
    shown.join(" ")
}

fn stage(out: &mut String, plan: &Plan, s: &Stage, globals: &BTreeMap<String, String>) {
    let lookup = |k: &str| globals.get(k).cloned();
    let base = Lexer::new(plan.escape)
        .process_word(&s.base, &lookup)
        .unwrap_or_else(|_| s.base.clone());
    let kind = match plan.stage_by_ref(&base).filter(|j| *j < s.index) {
        Some(j) => format!("stage {}", plan.stages[j].label()),
        None if base == "scratch" => "empty".into(),
        None => "image".into(),
    };
    let _ = write!(
        out,
        "\nstage {} (line {}): FROM {base} ({kind})",
        s.label(),
        s.line
    );
    if let Some(p) = &s.platform {
        let _ = write!(out, " --platform={p}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "  key: parent = {}", parent_of_base(&base, &kind));
    let mut declared: BTreeSet<String> = BTreeSet::new();
    for (n, st) in s.steps.iter().enumerate() {
        let _ = writeln!(out, "  {}. line {}: {}", n + 1, st.line, st.text);
        for line in describe(st) {
            let _ = writeln!(out, "     {line}");
        }
        if let Op::Arg(a) = &st.op {
            declared.extend(a.iter().map(|(k, _)| k.clone()));
        }
        let _ = writeln!(out, "     key: {}", key_inputs(st, &declared));
    }
}

fn parent_of_base(base: &str, kind: &str) -> String {
    match kind {
        "empty" => "scratch".into(),
        "image" => format!("the manifest digest of {base} (resolved in the store)"),
        stage => format!("the last key of {stage}"),
    }
}

/// A command for a dry run.
pub(super) fn cmd_text(c: &Cmdline) -> String {
    match c {
        Cmdline::Shell(s) => format!("shell form {s:?} (through the stage's SHELL)"),
        Cmdline::Exec(v) => format!("exec form {v:?}"),
    }
}

/// The step's typed content, one fact a line.
fn describe(st: &Step) -> Vec<String> {
    match &st.op {
        Op::Run(r) => super::run::describe_run(r),
        Op::Copy(c) => super::copy::describe_copy(c),
        Op::Env(kv) | Op::Label(kv) => kv.iter().map(|(k, v)| format!("set {k} = {v}")).collect(),
        Op::Arg(a) => a
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("declare {k} (default {v})"),
                None => format!("declare {k}"),
            })
            .collect(),
        Op::Expose(p) => vec![format!("ports {}", p.join(" "))],
        Op::Volume(v) => vec![format!("volumes {}", v.join(" "))],
        Op::Workdir(w) => vec![format!("working directory {w}")],
        Op::User(u) => vec![format!("user {u}")],
        Op::Cmd(c) => vec![format!("command: {}", cmd_text(c))],
        Op::Entrypoint(c) => vec![format!("entrypoint: {}", cmd_text(c))],
        Op::Shell(s) => vec![format!("shell {s:?}")],
        Op::StopSignal(s) => vec![format!("stop signal {s}")],
        Op::Healthcheck(h) => vec![describe_health(h.as_ref())],
        Op::Onbuild(t) => vec![format!("trigger for images built on this one: {t}")],
        Op::Maintainer(m) => vec![format!("author {m}")],
    }
}

fn describe_health(h: Option<&Healthcheck>) -> String {
    let Some(h) = h else {
        return "healthcheck: none (disables an inherited one)".into();
    };
    let mut s = format!("healthcheck: {}", cmd_text(&h.test));
    for (name, d) in [
        ("interval", h.interval),
        ("timeout", h.timeout),
        ("start period", h.start_period),
        ("start interval", h.start_interval),
    ] {
        if let Some(d) = d {
            let _ = write!(s, ", {name} {}", duration_text(d));
        }
    }
    if let Some(r) = h.retries {
        let _ = write!(s, ", {r} retries");
    }
    s
}

/// A duration as a Dockerfile writes it: `1m30s`, `500ms`.
fn duration_text(d: std::time::Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (d.as_secs() / 3600, d.as_secs() / 60 % 60, d.as_secs() % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n != 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// What the step's cache key will be made of (see docs/build.md, "Cache keys").
fn key_inputs(st: &Step, declared: &BTreeSet<String>) -> String {
    let args = if declared.is_empty() {
        "no build args".to_string()
    } else {
        let v: Vec<&str> = declared.iter().map(String::as_str).collect();
        format!("build args {} visible", v.join(" "))
    };
    match &st.op {
        Op::Run(r) => {
            let binds = r
                .mounts
                .iter()
                .any(|m| matches!(&m.spec, super::MountSpec::Bind { from: None, .. }));
            let files = if binds {
                " + the bound context files"
            } else {
                ""
            };
            format!("parent + run (argv, network, mounts after expansion) + {args} + config env, user, workdir{files}")
        }
        Op::Copy(c) => {
            let files = match &c.from {
                Some(f) => format!("the key of {f}"),
                None => "every selected file's path, type, mode and content digest".into(),
            };
            format!(
                "parent + copy (sources, destination, flags after expansion; {args}) + workdir + {files}"
            )
        }
        Op::Arg(_) => "none (a build arg reaches the keys of the steps that see it)".into(),
        _ => "parent + the resulting image config (metadata only, nothing runs)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_shows_needed_stages_typed() {
        let src = "ARG BASE=bb\nFROM $BASE AS tools\nRUN --mount=type=cache,target=/c make\n\
                   FROM scratch AS unused\nFROM tools\nARG V\nCOPY --parents --chmod=600 ./a/b /x/\n";
        let ast = crate::dockerfile::parse("Dockerfile", src.as_bytes()).unwrap();
        let plan = super::super::plan(&ast).unwrap();
        let text = dry_run(
            &plan,
            &DryRun {
                arch: "amd64".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            text.starts_with("plan: 2 of 3 stage(s) needed for target stage 2: tools, 2\n"),
            "{text}"
        );
        assert!(
            text.contains("stage tools (line 2): FROM bb (image)\n"),
            "{text}"
        );
        assert!(
            text.contains("     mount: cache \"/c\" at /c (sharing shared, mode 755, owner 0:0)\n"),
            "{text}"
        );
        assert!(
            text.contains("stage 2 (line 5): FROM tools (stage tools)\n"),
            "{text}"
        );
        assert!(
            text.contains("mode 600, keeping parent directories"),
            "{text}"
        );
        assert!(text.contains("expansion; build args V visible)"), "{text}");
        assert!(!text.contains("unused"), "{text}");
        let d = std::time::Duration::from_millis;
        let shown: Vec<String> = [90_000, 500, 3_600_000, 0]
            .map(|ms| duration_text(d(ms)))
            .to_vec();
        assert_eq!(shown, ["1m30s", "500ms", "1h", "0s"]);
    }
}
