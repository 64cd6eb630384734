//! From the Dockerfile front end's syntax tree to the build plan: flags checked per
//! instruction, arguments given their meaning, stages split at FROM. Unknown instructions
//! and flags are errors with the file and line and, where close, the known spelling.
use std::collections::BTreeMap;
use std::path::Path;

use super::plan::{Cmdline, Healthcheck, Heredoc, Plan, RunMount, Stage, Step, StepKind};
use crate::dockerfile::{self, Node};

#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error("{0}")]
    Parse(#[from] dockerfile::ParseError),
    #[error("{file}:{line}: {msg}")]
    At {
        file: String,
        line: usize,
        msg: String,
    },
    /// The message names the `.dockerignore` file and line itself.
    #[error("{0}")]
    Ignore(String),
}

/// Flags of one instruction: `--name=value` or `--name` (boolean), checked against the
/// instruction's known flags.
struct Flags {
    values: Vec<(String, Option<String>)>,
}

impl Flags {
    fn parse(file: &str, node: &Node, allowed: &[&str]) -> Result<Flags, FrontError> {
        let mut values = Vec::new();
        for f in &node.flags {
            let body = f.trim_start_matches('-');
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            if !allowed.contains(&name.as_str()) {
                // The front end's typed pass reports unknown flags first, with a caret.
                let hint = if allowed.is_empty() {
                    format!("; {} takes no flags", node.keyword.to_ascii_uppercase())
                } else {
                    let known: Vec<String> = allowed.iter().map(|a| format!("--{a}")).collect();
                    format!(
                        "; {} accepts {}",
                        node.keyword.to_ascii_uppercase(),
                        known.join(", ")
                    )
                };
                return Err(FrontError::At {
                    file: file.into(),
                    line: node.start_line,
                    msg: format!(
                        "unknown flag --{name} for {}{hint}",
                        node.keyword.to_ascii_uppercase()
                    ),
                });
            }
            values.push((name, value));
        }
        Ok(Flags { values })
    }
    fn get(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone().unwrap_or_else(|| "true".into()))
    }
    fn all(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }
    fn bool(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v != "false")
    }
}

fn heredocs(node: &Node) -> Vec<Heredoc> {
    node.heredocs
        .iter()
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

fn cmdline(node: &Node) -> Cmdline {
    if node.json {
        Cmdline::Exec(node.args.clone())
    } else {
        Cmdline::Shell(node.args.join(" "))
    }
}

fn mount(spec: &str) -> RunMount {
    let mut options = BTreeMap::new();
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').unwrap_or((part, "true"));
        options.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    RunMount { options }
}

/// The text after the keyword: what ONBUILD stores as its trigger.
fn after_keyword(original: &str) -> String {
    original
        .trim_start()
        .split_once(char::is_whitespace)
        .map(|(_, r)| r.trim().to_string())
        .unwrap_or_default()
}

fn step(file: &str, node: &Node) -> Result<StepKind, FrontError> {
    let at = |msg: String| FrontError::At {
        file: file.into(),
        line: node.start_line,
        msg,
    };
    let kw = node.keyword.as_str();
    let need = |n: usize, usage: &str| {
        if node.args.len() < n {
            Err(at(format!("{} needs {usage}", kw.to_ascii_uppercase())))
        } else {
            Ok(())
        }
    };
    Ok(match kw {
        "run" => {
            let f = Flags::parse(file, node, &["mount", "network", "security"])?;
            if f.get("security").is_some_and(|s| s != "sandbox") {
                return Err(at("RUN --security=insecure is not supported; keel runs every step with the default capabilities".into()));
            }
            if node.args.is_empty() && node.heredocs.is_empty() {
                return Err(at("RUN needs a command".into()));
            }
            StepKind::Run {
                cmd: cmdline(node),
                heredocs: heredocs(node),
                network: f.get("network"),
                mounts: f.all("mount").iter().map(|m| mount(m)).collect(),
            }
        }
        "cmd" => {
            Flags::parse(file, node, &[])?;
            StepKind::Cmd(cmdline(node))
        }
        "entrypoint" => {
            Flags::parse(file, node, &[])?;
            StepKind::Entrypoint(cmdline(node))
        }
        "env" | "label" => {
            Flags::parse(file, node, &[])?;
            let kv: Vec<(String, String)> = node
                .key_values()
                .into_iter()
                .map(|(k, v, _)| (k.to_string(), v.to_string()))
                .collect();
            if kv.is_empty() {
                return Err(at(format!("{} needs KEY=VALUE", kw.to_ascii_uppercase())));
            }
            if kw == "env" {
                StepKind::Env(kv)
            } else {
                StepKind::Label(kv)
            }
        }
        "arg" => {
            Flags::parse(file, node, &[])?;
            need(1, "a name (ARG NAME or ARG NAME=default)")?;
            StepKind::Arg(
                node.args
                    .iter()
                    .map(|a| match a.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (a.clone(), None),
                    })
                    .collect(),
            )
        }
        "expose" => {
            Flags::parse(file, node, &[])?;
            need(1, "a port (EXPOSE 80 or 80/tcp)")?;
            StepKind::Expose(node.args.clone())
        }
        "volume" => {
            Flags::parse(file, node, &[])?;
            need(1, "a path")?;
            StepKind::Volume(node.args.clone())
        }
        "workdir" => {
            Flags::parse(file, node, &[])?;
            need(1, "a path")?;
            StepKind::Workdir(node.args.join(" "))
        }
        "user" => {
            Flags::parse(file, node, &[])?;
            need(1, "a user (USER name, uid, name:group or uid:gid)")?;
            StepKind::User(node.args[0].clone())
        }
        "copy" | "add" => {
            let allowed: &[&str] = if kw == "copy" {
                &["from", "chown", "chmod", "link", "exclude", "parents"]
            } else {
                &[
                    "chown",
                    "chmod",
                    "link",
                    "exclude",
                    "keep-git-dir",
                    "checksum",
                    "unpack",
                ]
            };
            let f = Flags::parse(file, node, allowed)?;
            let hd = heredocs(node);
            let words: Vec<String> = node
                .args
                .iter()
                .filter(|a| {
                    !hd.iter().any(|h| {
                        a.trim_start_matches(|c: char| c.is_ascii_digit())
                            .starts_with("<<")
                            && a.contains(&h.name)
                    })
                })
                .cloned()
                .collect();
            if words.is_empty() || (words.len() < 2 && hd.is_empty()) {
                return Err(at(format!(
                    "{} needs a source and a destination; add the destination path",
                    kw.to_ascii_uppercase()
                )));
            }
            let (srcs, dest) = words.split_at(words.len() - 1);
            StepKind::Copy {
                add: kw == "add",
                srcs: srcs.to_vec(),
                dest: dest[0].clone(),
                from: f.get("from"),
                chown: f.get("chown"),
                chmod: f.get("chmod"),
                link: f.bool("link"),
                exclude: f.all("exclude"),
                heredocs: hd,
            }
        }
        "shell" => {
            Flags::parse(file, node, &[])?;
            if !node.json || node.args.is_empty() {
                return Err(at(
                    "SHELL needs the JSON form, e.g. SHELL [\"/bin/bash\", \"-c\"]".into(),
                ));
            }
            StepKind::Shell(node.args.clone())
        }
        "stopsignal" => {
            Flags::parse(file, node, &[])?;
            need(1, "a signal (STOPSIGNAL SIGTERM)")?;
            StepKind::StopSignal(node.args[0].clone())
        }
        "healthcheck" => {
            let f = Flags::parse(
                file,
                node,
                &[
                    "interval",
                    "timeout",
                    "start-period",
                    "start-interval",
                    "retries",
                ],
            )?;
            let kind = node
                .args
                .first()
                .map(|a| a.to_ascii_uppercase())
                .unwrap_or_else(|| "NONE".into());
            let test = match kind.as_str() {
                "NONE" => vec!["NONE".to_string()],
                "CMD" if node.json => std::iter::once("CMD".to_string()).chain(node.args[1..].iter().cloned()).collect(),
                "CMD" => vec!["CMD-SHELL".to_string(), node.args[1..].join(" ")],
                other => return Err(at(format!("HEALTHCHECK type {other:?} is unknown; use HEALTHCHECK CMD ... or HEALTHCHECK NONE"))),
            };
            let retries = f
                .get("retries")
                .map(|r| {
                    r.parse::<u32>()
                        .map_err(|_| at(format!("HEALTHCHECK --retries={r} is not a number")))
                })
                .transpose()?;
            StepKind::Healthcheck(Healthcheck {
                test,
                interval: f.get("interval"),
                timeout: f.get("timeout"),
                start_period: f.get("start-period"),
                start_interval: f.get("start-interval"),
                retries,
            })
        }
        "onbuild" => {
            Flags::parse(file, node, &[])?;
            let sub = node
                .sub
                .as_ref()
                .ok_or_else(|| at("ONBUILD needs an instruction".into()))?;
            if matches!(sub.keyword.as_str(), "onbuild" | "from" | "maintainer") {
                return Err(at(format!(
                    "ONBUILD {} is not allowed",
                    sub.keyword.to_ascii_uppercase()
                )));
            }
            step(file, sub)?; // a trigger must itself be valid
            StepKind::Onbuild(after_keyword(&node.original))
        }
        "maintainer" => {
            Flags::parse(file, node, &[])?;
            StepKind::Maintainer(node.args.join(" "))
        }
        other => {
            let hint = dockerfile::instruction::suggest(other)
                .map(|s| format!("; did you mean {s}?"))
                .unwrap_or_default();
            return Err(at(format!(
                "unknown instruction {}{hint}",
                other.to_ascii_uppercase()
            )));
        }
    })
}

/// Parses a Dockerfile into a plan.
pub fn plan(file: &str, bytes: &[u8]) -> Result<Plan, FrontError> {
    let ast = dockerfile::parse(file, bytes)?;
    // The front end's typed pass checks every instruction and flag and reports problems
    // with the line, a caret and a hint; the plan below is built from the same tree.
    dockerfile::instructions(&ast)?;
    let mut plan = Plan {
        global_args: Vec::new(),
        stages: Vec::new(),
    };
    for node in &ast.children {
        if node.keyword == "from" {
            let f = Flags::parse(file, node, &["platform"])?;
            let at = |msg: String| FrontError::At {
                file: file.into(),
                line: node.start_line,
                msg,
            };
            let (base, name) = match node.args.as_slice() {
                [b] => (b.clone(), None),
                [b, as_, n] if as_.eq_ignore_ascii_case("as") => (b.clone(), Some(n.clone())),
                _ => {
                    return Err(at(
                        "FROM needs an image, optionally followed by AS NAME".into()
                    ))
                }
            };
            plan.stages.push(Stage {
                index: plan.stages.len(),
                name,
                base,
                platform: f.get("platform"),
                line: node.start_line,
                steps: Vec::new(),
            });
            continue;
        }
        let kind = step(file, node)?;
        match plan.stages.last_mut() {
            Some(stage) => stage.steps.push(Step {
                line: node.start_line,
                text: node.original.trim().to_string(),
                kind,
            }),
            None => match kind {
                StepKind::Arg(a) => plan.global_args.extend(a),
                _ => {
                    return Err(FrontError::At {
                        file: file.into(),
                        line: node.start_line,
                        msg: format!(
                            "{} before the first FROM; only ARG may come before FROM",
                            node.keyword.to_ascii_uppercase()
                        ),
                    })
                }
            },
        }
    }
    if plan.stages.is_empty() {
        return Err(FrontError::At {
            file: file.into(),
            line: 1,
            msg: "no FROM instruction; a Dockerfile starts with FROM IMAGE (or FROM scratch)"
                .into(),
        });
    }
    Ok(plan)
}

/// The steps of an image's ONBUILD triggers.
pub fn triggers(texts: &[String]) -> Result<Vec<Step>, String> {
    let mut out = Vec::new();
    for t in texts {
        let ast = dockerfile::parse("ONBUILD trigger", t.as_bytes()).map_err(|e| e.to_string())?;
        for node in &ast.children {
            let kind = step("ONBUILD trigger", node).map_err(|e| e.to_string())?;
            out.push(Step {
                line: 0,
                text: format!("ONBUILD {}", node.original.trim()),
                kind,
            });
        }
    }
    Ok(out)
}

/// The context's `.dockerignore` as a path predicate (moved to `context::dockerignore`).
pub fn dockerignore(context: &Path) -> Result<crate::context::IgnoreFn, FrontError> {
    crate::context::dockerignore(context).map_err(|e| FrontError::Ignore(e.to_string()))
}
