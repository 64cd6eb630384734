//! Typed instructions → `Plan`: stages split at FROM, one small conversion per
//! instruction, and the plan-level checks (ARG only before the first FROM, values keel
//! refuses). Errors are `dockerfile::ParseError`s, so they keep the file, line, column,
//! caret and hint all the way to the user.
use super::word::Word;
use super::{Cmdline, Healthcheck, Heredoc, Op, Plan, Stage, Step};
use crate::dockerfile::instruction::{Health, ShellOrExec};
use crate::dockerfile::{self, Ast, ErrorKind, Instruction, ParseError, Spanned};

/// Plans a parsed Dockerfile: every instruction typed and checked, stages split at FROM.
pub fn plan(ast: &Ast) -> Result<Plan, ParseError> {
    let mut plan = Plan {
        escape: ast.escape,
        global_args: Vec::new(),
        stages: Vec::new(),
    };
    for ins in dockerfile::instructions(ast)? {
        let fail = |msg: String, hint: &str| located(ast, &ins, msg, hint);
        if let Instruction::From {
            image,
            name,
            platform,
        } = &ins.value
        {
            let platform = platform
                .as_deref()
                .map(Word::new)
                .transpose()
                .map_err(|e| fail(e, "write --platform=linux/amd64"))?;
            plan.stages.push(Stage {
                index: plan.stages.len(),
                name: name.clone(),
                base: image.clone(),
                platform,
                line: ins.start_line,
                steps: Vec::new(),
            });
            continue;
        }
        let step = step(&ins).map_err(|(msg, hint)| fail(msg, hint))?;
        match (plan.stages.last_mut(), step.op) {
            (Some(stage), op) => stage.steps.push(Step { op, ..step }),
            (None, Op::Arg(a)) => plan.global_args.extend(a),
            (None, _) => {
                let msg = format!("{} before the first FROM", ins.value.keyword());
                return Err(fail(
                    msg,
                    "only ARG may come before FROM; move it below a FROM",
                ));
            }
        }
    }
    if plan.stages.is_empty() {
        return Err(ParseError::new(
            ast.file.clone(),
            1,
            1,
            ast.line(1),
            ErrorKind::Invalid {
                instruction: "FROM".into(),
                message: "no FROM instruction".into(),
                hint: Some("a Dockerfile starts with FROM IMAGE (or FROM scratch)".into()),
            },
        ));
    }
    Ok(plan)
}

/// The steps of an image's ONBUILD triggers (each trigger text is planned on its own).
pub fn triggers(texts: &[String]) -> Result<Vec<Step>, ParseError> {
    let mut out = Vec::new();
    for t in texts {
        let ast = dockerfile::parse("ONBUILD trigger", t.as_bytes())?;
        for ins in dockerfile::instructions(&ast)? {
            let step = step(&ins).map_err(|(msg, hint)| located(&ast, &ins, msg, hint))?;
            out.push(Step {
                text: format!("ONBUILD {}", step.text),
                ..step
            });
        }
    }
    Ok(out)
}

fn located(ast: &Ast, ins: &Spanned<Instruction>, message: String, hint: &str) -> ParseError {
    let text = ast.line(ins.start_line).to_string();
    let column = text.len() - text.trim_start().len() + 1;
    let kind = ErrorKind::Invalid {
        instruction: ins.value.keyword().to_string(),
        message,
        hint: Some(hint.to_string()),
    };
    ParseError::new(ast.file.clone(), ins.start_line, column, text, kind)
}

/// A plan-time refusal: the message and the hint.
pub(super) type Refusal = (String, &'static str);

/// One instruction (not FROM) → its step.
fn step(ins: &Spanned<Instruction>) -> Result<Step, Refusal> {
    let op = match &ins.value {
        Instruction::From { .. } => unreachable!("FROM starts a stage"),
        Instruction::Run {
            command,
            heredocs: docs,
            mounts,
            network,
            security,
        } => Op::Run(super::run::run(
            command,
            docs,
            mounts,
            *network,
            security.as_deref(),
        )?),
        Instruction::Copy(c) => Op::Copy(super::copy::copy(c, false)?),
        Instruction::Add(c) => Op::Copy(super::copy::copy(c, true)?),
        Instruction::Cmd(c) => Op::Cmd(cmdline(c)),
        Instruction::Entrypoint(c) => Op::Entrypoint(cmdline(c)),
        Instruction::Env(v) => Op::Env(v.clone()),
        Instruction::Arg(v) => Op::Arg(v.clone()),
        Instruction::Label(v) => Op::Label(v.clone()),
        Instruction::Expose(v) => Op::Expose(v.clone()),
        Instruction::Volume(v) => Op::Volume(v.clone()),
        Instruction::Workdir(w) => Op::Workdir(w.clone()),
        Instruction::User(u) => Op::User(u.clone()),
        Instruction::Shell(v) => Op::Shell(v.clone()),
        Instruction::StopSignal(s) => Op::StopSignal(s.clone()),
        Instruction::Healthcheck(h) => Op::Healthcheck(health(h)),
        Instruction::Onbuild { text, .. } => Op::Onbuild(text.clone()),
        Instruction::Maintainer(m) => Op::Maintainer(m.clone()),
    };
    Ok(Step {
        line: ins.start_line,
        text: ins.original.trim().to_string(),
        op,
    })
}

pub(super) fn cmdline(c: &ShellOrExec) -> Cmdline {
    match c {
        ShellOrExec::Shell(s) => Cmdline::Shell(s.clone()),
        ShellOrExec::Exec(v) => Cmdline::Exec(v.clone()),
    }
}

pub(super) fn heredocs(docs: &[dockerfile::Heredoc]) -> Vec<Heredoc> {
    docs.iter()
        .map(|h| Heredoc {
            name: h.name.clone(),
            content: if h.chomp {
                dockerfile::parse::chomp_heredoc_content(&h.content)
            } else {
                h.content.clone()
            },
            expand: h.expand,
        })
        .collect()
}

fn health(h: &Health) -> Option<Healthcheck> {
    match h {
        Health::None => None,
        Health::Cmd {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => Some(Healthcheck {
            test: cmdline(test),
            interval: *interval,
            timeout: *timeout,
            start_period: *start_period,
            start_interval: *start_interval,
            retries: *retries,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Result<Op, ParseError> {
        let ast = dockerfile::parse("Dockerfile", format!("FROM bb\n{src}\n").as_bytes())?;
        Ok(plan(&ast)?.stages.remove(0).steps.remove(0).op)
    }

    #[test]
    fn copy_flags_become_types() {
        let Op::Copy(c) = one("COPY --parents --chown=app:1 --chmod=0640 ./x/a.txt /dst/").unwrap()
        else {
            panic!()
        };
        assert!(c.parents && !c.add);
        assert_eq!(c.chmod.unwrap().known, Some(super::super::Chmod(0o640)));
        assert_eq!(c.chown.unwrap().known.unwrap().group.as_deref(), Some("1"));
        let Op::Copy(c) = one("COPY <<EOF /x\nhi\nEOF").unwrap() else {
            panic!()
        };
        assert!(c.srcs.is_empty());
        assert_eq!(c.heredocs[0].content, "hi\n");
    }

    #[test]
    fn refusals_are_located() {
        let e = one("COPY --chmod=rwx a b").unwrap_err().to_string();
        assert!(
            e.starts_with("Dockerfile:2:1: COPY: invalid --chmod value \"rwx\""),
            "{e}"
        );
        assert!(
            e.contains("\n 2 | COPY --chmod=rwx a b\n   | ^\nhint: write --chmod=0644"),
            "{e}"
        );
        assert!(one("ADD --checksum=sha256:ab --keep-git-dir https://x/y /z").is_ok());
        let e = one("RUN --security=insecure true").unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
        let ast = dockerfile::parse("Dockerfile", b"ENV a=b\nFROM bb\n").unwrap();
        let e = plan(&ast).unwrap_err().to_string();
        assert!(e.contains("ENV before the first FROM"), "{e}");
    }

    #[test]
    fn run_and_healthcheck_are_typed() {
        let Op::Run(r) =
            one("RUN --network=none --mount=type=tmpfs,target=/t,size=1k true").unwrap()
        else {
            panic!()
        };
        assert_eq!(r.network, super::super::Network::None);
        assert_eq!(
            r.mounts[0].spec,
            super::super::MountSpec::Tmpfs {
                target: "/t".into(),
                size: Some(1024)
            }
        );
        let Op::Healthcheck(Some(h)) = one("HEALTHCHECK --interval=1m30s CMD true").unwrap() else {
            panic!()
        };
        assert_eq!(h.interval, Some(std::time::Duration::from_secs(90)));
        assert_eq!(one("HEALTHCHECK NONE").unwrap(), Op::Healthcheck(None));
    }
}
