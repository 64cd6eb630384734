//! Typed instructions from the `Ast`: one `Instruction` per node, with its flags checked
//! (an unknown flag is an error naming it), its arguments counted and its line span kept.
//! An unknown instruction is an error with a "did you mean" suggestion.
//!
//! Pure and unexpanded: ENV/LABEL/ARG values, paths and commands stay as written (quotes
//! included); variables are expanded when a stage is evaluated, with `expand.rs`. The stage
//! graph is built from this list in `plan/`, not here.
use super::expand::{Env, ExpandError, Lexer};
use super::parse::{Ast, Heredoc, Node};
use super::{ErrorKind, ParseError};
use std::time::Duration;

/// An instruction with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    /// 1-based, inclusive line span in the Dockerfile (heredoc bodies included).
    pub start_line: usize,
    pub end_line: usize,
    /// The logical line as written (e.g. for history entries and ONBUILD triggers).
    pub original: String,
}

/// A command in shell form (run through the image's SHELL) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellOrExec {
    Shell(String),
    Exec(Vec<String>),
}

/// `RUN --mount=type=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Cache,
    Secret,
    Tmpfs,
    Ssh,
}

/// Sharing mode of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// One `RUN --mount=…` (BuildKit's `instructions.Mount`), values unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    pub kind: MountType,
    /// Where it appears in the container; required except for secret and ssh mounts.
    pub target: Option<String>,
    pub source: Option<String>,
    /// A stage name or image to take the source from (bind, cache).
    pub from: Option<String>,
    /// Cache/secret/ssh id.
    pub id: Option<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub sharing: Sharing,
    pub readonly: bool,
    /// Secret/ssh: fail when it is not provided.
    pub required: bool,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    /// Secret exposed as this environment variable.
    pub env: Option<String>,
    /// The `--mount` value as written: re-parsed after variable expansion when it runs.
    pub written: String,
}

/// `RUN --network=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Default,
    None,
    Host,
}

/// COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyArgs {
    pub srcs: Vec<String>,
    pub dest: String,
    /// COPY --from: a stage name, stage index or image.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub exclude: Vec<String>,
    pub parents: bool,
    /// ADD of a git source: keep the `.git` directory.
    pub keep_git_dir: bool,
    /// ADD of a URL: the expected digest.
    pub checksum: Option<String>,
    /// True when the arguments were a JSON array.
    pub json: bool,
    pub heredocs: Vec<Heredoc>,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    Cmd {
        test: ShellOrExec,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        start_period: Option<Duration>,
        start_interval: Option<Duration>,
        retries: Option<u32>,
    },
}

/// A Dockerfile instruction, arguments as written (not yet expanded).
#[derive(Debug, Clone, PartialEq)]
pub enum Instruction {
    From {
        image: String,
        name: Option<String>,
        platform: Option<String>,
    },
    Run {
        command: ShellOrExec,
        heredocs: Vec<Heredoc>,
        mounts: Vec<RunMount>,
        network: Option<Network>,
        security: Option<String>,
    },
    Cmd(ShellOrExec),
    Entrypoint(ShellOrExec),
    /// Key/value pairs, values raw (quotes kept; unquote with `expand::process_word`).
    Env(Vec<(String, String)>),
    /// Names with optional defaults (raw).
    Arg(Vec<(String, Option<String>)>),
    Label(Vec<(String, String)>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Workdir(String),
    User(String),
    Copy(CopyArgs),
    Add(CopyArgs),
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck(Health),
    /// The trigger, and its text as written (stored in the image config's OnBuild).
    Onbuild {
        trigger: Box<Instruction>,
        text: String,
    },
    Maintainer(String),
}

/// Every instruction keyword keel knows, upper case.
pub const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

impl Instruction {
    /// The keyword in upper case (`RUN`, `COPY`, …).
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From { .. } => "FROM",
            Instruction::Run { .. } => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Env(_) => "ENV",
            Instruction::Arg(_) => "ARG",
            Instruction::Label(_) => "LABEL",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::User(_) => "USER",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Shell(_) => "SHELL",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Onbuild { .. } => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }
}

impl Instruction {
    /// Expands variables and removes quotes in the arguments Docker expands (BuildKit's
    /// `Expand` methods): FROM image and platform; ENV/LABEL keys and values; ARG names
    /// and defaults; WORKDIR, USER, STOPSIGNAL, EXPOSE, VOLUME; COPY/ADD sources,
    /// destination and `--from/--chown/--chmod/--exclude/--checksum`; RUN mount fields.
    /// RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK commands and ONBUILD triggers are left alone
    /// (the shell, or the later build, sees them). `lexer` carries the file's escape
    /// character; `env` is what the step can see (build args and ENV so far).
    pub fn expand(&self, lexer: &Lexer, env: Env) -> Result<Instruction, ExpandError> {
        let x = ArgExpander { lexer, env };
        Ok(match self {
            Instruction::From {
                image,
                name,
                platform,
            } => Instruction::From {
                image: x.word(image)?,
                name: name.clone(),
                platform: x.opt(platform)?,
            },
            Instruction::Env(v) => Instruction::Env(x.pairs(v)?),
            Instruction::Label(v) => Instruction::Label(x.pairs(v)?),
            Instruction::Arg(v) => Instruction::Arg(
                v.iter()
                    .map(|(k, d)| Ok((x.word(k)?, x.opt(d)?)))
                    .collect::<Result<_, ExpandError>>()?,
            ),
            Instruction::Workdir(s) => Instruction::Workdir(x.word(s)?),
            Instruction::User(s) => Instruction::User(x.word(s)?),
            Instruction::StopSignal(s) => Instruction::StopSignal(x.word(s)?),
            Instruction::Expose(v) => Instruction::Expose(
                v.iter()
                    .map(|p| lexer.process_words(p, env))
                    .collect::<Result<Vec<_>, _>>()?
                    .concat(),
            ),
            Instruction::Volume(v) => Instruction::Volume(x.all(v)?),
            Instruction::Copy(c) => Instruction::Copy(x.copy_args(c)?),
            Instruction::Add(c) => Instruction::Add(x.copy_args(c)?),
            Instruction::Run {
                command,
                heredocs,
                mounts,
                network,
                security,
            } => Instruction::Run {
                command: command.clone(),
                heredocs: heredocs.clone(),
                mounts: mounts
                    .iter()
                    .map(|m| x.run_mount(m))
                    .collect::<Result<_, _>>()?,
                network: *network,
                security: security.clone(),
            },
            other => other.clone(),
        })
    }
}

/// What `Instruction::expand` applies to each kind of argument: one word (variables
/// expanded, quotes removed), an optional one, a list, key/value pairs.
struct ArgExpander<'a> {
    lexer: &'a Lexer,
    env: Env<'a>,
}

impl ArgExpander<'_> {
    fn word(&self, s: &str) -> Result<String, ExpandError> {
        self.lexer.process_word(s, self.env)
    }

    fn opt(&self, s: &Option<String>) -> Result<Option<String>, ExpandError> {
        s.as_deref().map(|s| self.word(s)).transpose()
    }

    fn all(&self, v: &[String]) -> Result<Vec<String>, ExpandError> {
        v.iter().map(|s| self.word(s)).collect()
    }

    fn pairs(&self, v: &[(String, String)]) -> Result<Vec<(String, String)>, ExpandError> {
        v.iter()
            .map(|(k, x)| Ok((self.word(k)?, self.word(x)?)))
            .collect()
    }

    fn copy_args(&self, c: &CopyArgs) -> Result<CopyArgs, ExpandError> {
        Ok(CopyArgs {
            srcs: c
                .srcs
                .iter()
                .map(|s| {
                    // Heredoc sources (`<<EOF`) name their heredoc; they are not paths.
                    let heredoc = s
                        .trim_start_matches(|c: char| c.is_ascii_digit())
                        .starts_with("<<");
                    if heredoc {
                        Ok(s.clone())
                    } else {
                        self.word(s)
                    }
                })
                .collect::<Result<_, _>>()?,
            dest: self.word(&c.dest)?,
            from: self.opt(&c.from)?,
            chown: self.opt(&c.chown)?,
            chmod: self.opt(&c.chmod)?,
            exclude: self.all(&c.exclude)?,
            checksum: self.opt(&c.checksum)?,
            ..c.clone()
        })
    }

    fn run_mount(&self, m: &RunMount) -> Result<RunMount, ExpandError> {
        Ok(RunMount {
            target: self.opt(&m.target)?,
            source: self.opt(&m.source)?,
            from: self.opt(&m.from)?,
            id: self.opt(&m.id)?,
            env: self.opt(&m.env)?,
            ..m.clone()
        })
    }
}

/// Converts every AST node into a typed instruction, or the first error, located.
pub fn instructions(ast: &Ast) -> Result<Vec<Spanned<Instruction>>, ParseError> {
    ast.children
        .iter()
        .map(|node| {
            let value = instruction(node).map_err(|kind| locate(ast, node, kind))?;
            Ok(Spanned {
                value,
                start_line: node.start_line,
                end_line: node.end_line,
                original: node.original.clone(),
            })
        })
        .collect()
}

/// Places an error on the node's first line, at the offending flag when there is one.
fn locate(ast: &Ast, node: &Node, kind: ErrorKind) -> ParseError {
    let text = ast.line(node.start_line).to_string();
    let indent = text.len() - text.trim_start().len();
    let byte = match &kind {
        ErrorKind::UnknownFlag { flag, .. } => text.find(&format!("--{flag}")).unwrap_or(indent),
        _ => indent,
    };
    let column = text[..byte].chars().count() + 1;
    ParseError::new(ast.file.clone(), node.start_line, column, text, kind)
}

fn invalid(instruction: &str, message: impl Into<String>, hint: Option<&str>) -> ErrorKind {
    ErrorKind::Invalid {
        instruction: instruction.to_string(),
        message: message.into(),
        hint: hint.map(str::to_string),
    }
}

/// Parsed `--flags` of one instruction.
struct Flags {
    instruction: String,
    values: Vec<(String, Option<String>)>,
}

impl Flags {
    /// Splits `--name[=value]` and rejects names not in `allowed`.
    fn new(node: &Node, allowed: &[&str]) -> Result<Flags, ErrorKind> {
        let instruction = node.keyword.to_uppercase();
        let mut values = Vec::new();
        for f in &node.flags {
            let body = f.strip_prefix("--").unwrap_or(f);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            if !allowed.contains(&name.as_str()) {
                return Err(ErrorKind::UnknownFlag {
                    instruction,
                    flag: name,
                    accepted: allowed.iter().map(|a| a.to_string()).collect(),
                });
            }
            values.push((name, value));
        }
        Ok(Flags {
            instruction,
            values,
        })
    }

    /// The last value of a string flag; a flag without `=value` is an error.
    fn string(&self, name: &str) -> Result<Option<String>, ErrorKind> {
        let mut out = None;
        for (n, v) in &self.values {
            if n == name {
                match v {
                    Some(v) => out = Some(v.clone()),
                    None => {
                        return Err(invalid(
                            &self.instruction,
                            format!("missing a value on flag --{name}"),
                            Some("write --flag=value"),
                        ))
                    }
                }
            }
        }
        Ok(out)
    }

    fn strings(&self, name: &str) -> Result<Vec<String>, ErrorKind> {
        let mut out = Vec::new();
        for (n, v) in &self.values {
            if n == name {
                match v {
                    Some(v) => out.push(v.clone()),
                    None => {
                        return Err(invalid(
                            &self.instruction,
                            format!("missing a value on flag --{name}"),
                            Some("write --flag=value"),
                        ))
                    }
                }
            }
        }
        Ok(out)
    }

    fn bool(&self, name: &str) -> Result<bool, ErrorKind> {
        let mut out = false;
        for (n, v) in &self.values {
            if n == name {
                out = match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(other) => {
                        return Err(invalid(
                            &self.instruction,
                            format!("expecting boolean value for flag --{name}, not: {other}"),
                            Some("use true or false"),
                        ))
                    }
                };
            }
        }
        Ok(out)
    }
}

fn command(node: &Node) -> ShellOrExec {
    if node.json {
        ShellOrExec::Exec(node.args.clone())
    } else {
        ShellOrExec::Shell(node.args.first().cloned().unwrap_or_default())
    }
}

fn at_least_one(node: &Node, what: &str) -> Result<(), ErrorKind> {
    if node.args.is_empty() && !node.json {
        let kw = node.keyword.to_uppercase();
        return Err(invalid(
            &kw,
            format!("{kw} requires at least one argument"),
            Some(what),
        ));
    }
    Ok(())
}

fn exactly_one(node: &Node, what: &str) -> Result<String, ErrorKind> {
    let kw = node.keyword.to_uppercase();
    match node.args.as_slice() {
        [one] if !one.is_empty() => Ok(one.clone()),
        [] => Err(invalid(
            &kw,
            format!("{kw} requires exactly one argument"),
            Some(what),
        )),
        _ => Err(invalid(
            &kw,
            format!("{kw} requires exactly one argument"),
            Some(what),
        )),
    }
}

/// One node → instruction.
fn instruction(node: &Node) -> Result<Instruction, ErrorKind> {
    let kw = node.keyword.to_uppercase();
    let no_flags = |node: &Node| Flags::new(node, &[]).map(|_| ());
    Ok(match kw.as_str() {
        "FROM" => parse_from(node)?,
        "RUN" => parse_run(node)?,
        "CMD" => {
            no_flags(node)?;
            Instruction::Cmd(command(node))
        }
        "ENTRYPOINT" => {
            no_flags(node)?;
            Instruction::Entrypoint(command(node))
        }
        "ENV" => Instruction::Env(parse_key_values(node, &kw)?),
        "LABEL" => Instruction::Label(parse_key_values(node, &kw)?),
        "ARG" => parse_arg(node)?,
        "EXPOSE" => {
            no_flags(node)?;
            at_least_one(node, "give a port such as 80 or 53/udp")?;
            Instruction::Expose(node.args.clone())
        }
        "VOLUME" => parse_volume(node)?,
        "WORKDIR" => {
            no_flags(node)?;
            Instruction::Workdir(exactly_one(node, "give the directory, e.g. WORKDIR /app")?)
        }
        "USER" => {
            no_flags(node)?;
            Instruction::User(exactly_one(node, "give a user, e.g. USER 1000:1000")?)
        }
        "STOPSIGNAL" => {
            no_flags(node)?;
            Instruction::StopSignal(exactly_one(node, "give a signal, e.g. STOPSIGNAL SIGTERM")?)
        }
        "MAINTAINER" => {
            no_flags(node)?;
            Instruction::Maintainer(exactly_one(node, "give a name")?)
        }
        "COPY" => Instruction::Copy(parse_copy(node, &kw)?),
        "ADD" => Instruction::Add(parse_copy(node, &kw)?),
        "SHELL" => parse_shell(node)?,
        "HEALTHCHECK" => Instruction::Healthcheck(health(node)?),
        "ONBUILD" => parse_onbuild(node)?,
        _ => {
            return Err(ErrorKind::UnknownInstruction {
                name: kw.clone(),
                suggestion: suggest(&kw),
            });
        }
    })
}

/// `FROM image [AS name]` with `--platform`.
fn parse_from(node: &Node) -> Result<Instruction, ErrorKind> {
    let flags = Flags::new(node, &["platform"])?;
    let (image, name) = match node.args.as_slice() {
        [image] => (image.clone(), None),
        [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let name = name.to_lowercase();
            if !valid_stage_name(&name) {
                return Err(invalid("FROM", format!("invalid name for build stage: {name:?}"), Some("a stage name starts with a letter and holds letters, digits, '-', '_' and '.'")));
            }
            (image.clone(), Some(name))
        }
        _ => {
            return Err(invalid(
                "FROM",
                "FROM requires either one or three arguments",
                Some("write FROM image [AS name]"),
            ))
        }
    };
    Ok(Instruction::From {
        image,
        name,
        platform: flags.string("platform")?,
    })
}

/// `RUN [--mount …] [--network …] [--security …] command`.
fn parse_run(node: &Node) -> Result<Instruction, ErrorKind> {
    let flags = Flags::new(node, &["mount", "network", "security"])?;
    at_least_one(node, "give the command to run")?;
    let mounts = flags
        .strings("mount")?
        .iter()
        .map(|m| parse_mount(m))
        .collect::<Result<_, _>>()?;
    let network = match flags.string("network")?.as_deref() {
        None => None,
        Some("default") => Some(Network::Default),
        Some("none") => Some(Network::None),
        Some("host") => Some(Network::Host),
        Some(other) => {
            return Err(invalid(
                "RUN",
                format!("unsupported network mode: {other}"),
                Some("use --network=default, none or host"),
            ))
        }
    };
    let security = flags.string("security")?;
    if let Some(s) = &security {
        if s != "sandbox" && s != "insecure" {
            return Err(invalid(
                "RUN",
                format!("unsupported security mode: {s}"),
                Some("use --security=sandbox or insecure"),
            ));
        }
    }
    Ok(Instruction::Run {
        command: command(node),
        heredocs: node.heredocs.clone(),
        mounts,
        network,
        security,
    })
}

/// The `KEY=value` pairs of ENV and LABEL (`kw`), none blank.
fn parse_key_values(node: &Node, kw: &str) -> Result<Vec<(String, String)>, ErrorKind> {
    Flags::new(node, &[])?;
    if node.args.is_empty() {
        return Err(invalid(
            kw,
            format!("{kw} requires at least one argument"),
            Some("write KEY=value"),
        ));
    }
    let pairs: Vec<(String, String)> = node
        .key_values()
        .into_iter()
        .map(|(k, v, _)| (k.to_string(), v.to_string()))
        .collect();
    if pairs.iter().any(|(k, _)| k.is_empty()) {
        return Err(invalid(
            kw,
            format!("{kw} names can not be blank"),
            Some("write KEY=value"),
        ));
    }
    Ok(pairs)
}

/// `ARG NAME[=default] …`.
fn parse_arg(node: &Node) -> Result<Instruction, ErrorKind> {
    Flags::new(node, &[])?;
    if node.args.is_empty() {
        return Err(invalid(
            "ARG",
            "ARG requires at least one argument",
            Some("write ARG NAME or ARG NAME=default"),
        ));
    }
    let mut out = Vec::new();
    for w in &node.args {
        let (name, default) = match w.split_once('=') {
            Some((n, d)) => (n.to_string(), Some(d.to_string())),
            None => (w.clone(), None),
        };
        if name.is_empty() {
            return Err(invalid(
                "ARG",
                format!("ARG names can not be blank ({w:?})"),
                Some("write ARG NAME=default"),
            ));
        }
        out.push((name, default));
    }
    Ok(Instruction::Arg(out))
}

/// `VOLUME path …`, no entry empty.
fn parse_volume(node: &Node) -> Result<Instruction, ErrorKind> {
    Flags::new(node, &[])?;
    at_least_one(node, "give a path such as /data")?;
    if node.args.iter().any(|a| a.trim().is_empty()) {
        return Err(invalid(
            "VOLUME",
            "VOLUME specified can not be an empty string",
            Some("remove the empty entry"),
        ));
    }
    Ok(Instruction::Volume(node.args.clone()))
}

/// The sources, destination and flags of COPY or ADD (`kw`: each has its own flags).
fn parse_copy(node: &Node, kw: &str) -> Result<CopyArgs, ErrorKind> {
    let allowed: &[&str] = if kw == "COPY" {
        &["from", "chown", "chmod", "link", "exclude", "parents"]
    } else {
        &[
            "chown",
            "chmod",
            "link",
            "exclude",
            "keep-git-dir",
            "checksum",
        ]
    };
    let flags = Flags::new(node, allowed)?;
    let (dest, srcs) = match node.args.split_last() {
        Some((dest, srcs)) if !srcs.is_empty() => (dest.clone(), srcs.to_vec()),
        _ => {
            return Err(invalid(
                kw,
                format!(
                    "{kw} requires at least two arguments, but only {} provided",
                    node.args.len()
                ),
                Some("add the destination path"),
            ))
        }
    };
    Ok(CopyArgs {
        srcs,
        dest,
        from: flags.string("from")?,
        chown: flags.string("chown")?,
        chmod: flags.string("chmod")?,
        link: flags.bool("link")?,
        exclude: flags.strings("exclude")?,
        parents: flags.bool("parents")?,
        keep_git_dir: flags.bool("keep-git-dir")?,
        checksum: flags.string("checksum")?,
        json: node.json,
        heredocs: node.heredocs.clone(),
    })
}

/// `SHELL ["executable", "parameters"]`: JSON form only.
fn parse_shell(node: &Node) -> Result<Instruction, ErrorKind> {
    Flags::new(node, &[])?;
    if !node.json {
        return Err(invalid(
            "SHELL",
            "SHELL requires the arguments to be in JSON form",
            Some("write SHELL [\"/bin/sh\", \"-c\"]"),
        ));
    }
    if node.args.is_empty() {
        return Err(invalid(
            "SHELL",
            "SHELL requires at least one argument",
            Some("write SHELL [\"/bin/sh\", \"-c\"]"),
        ));
    }
    Ok(Instruction::Shell(node.args.clone()))
}

/// `ONBUILD INSTRUCTION`: any instruction but ONBUILD, FROM and MAINTAINER.
fn parse_onbuild(node: &Node) -> Result<Instruction, ErrorKind> {
    Flags::new(node, &[])?;
    let Some(sub) = &node.sub else {
        return Err(invalid(
            "ONBUILD",
            "ONBUILD requires at least one argument",
            Some("give the instruction to run later, e.g. ONBUILD RUN make"),
        ));
    };
    let sub_kw = sub.keyword.to_uppercase();
    if matches!(sub_kw.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
        let msg = if sub_kw == "ONBUILD" {
            "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string()
        } else {
            format!("{sub_kw} isn't allowed as an ONBUILD trigger")
        };
        return Err(invalid(
            "ONBUILD",
            msg,
            Some("use another instruction as the trigger"),
        ));
    }
    let mut sub = (**sub).clone();
    sub.heredocs = node.heredocs.clone();
    let text = node.original.trim_start()[node.keyword.len()..]
        .trim()
        .to_string();
    Ok(Instruction::Onbuild {
        trigger: Box::new(instruction(&sub)?),
        text,
    })
}

fn health(node: &Node) -> Result<Health, ErrorKind> {
    let flags = Flags::new(
        node,
        &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
    )?;
    let Some(typ) = node.args.first() else {
        return Err(invalid(
            "HEALTHCHECK",
            "HEALTHCHECK requires at least one argument",
            Some("write HEALTHCHECK CMD command or HEALTHCHECK NONE"),
        ));
    };
    match typ.to_uppercase().as_str() {
        "NONE" => {
            if node.args.len() > 1 || !node.flags.is_empty() {
                return Err(invalid(
                    "HEALTHCHECK",
                    "HEALTHCHECK NONE takes no arguments",
                    Some("remove the arguments after NONE"),
                ));
            }
            Ok(Health::None)
        }
        "CMD" => health_cmd(node, &flags),
        other => Err(invalid(
            "HEALTHCHECK",
            format!("unknown type {other:?} in HEALTHCHECK"),
            Some("try CMD"),
        )),
    }
}

/// `HEALTHCHECK [--interval …] CMD command`.
fn health_cmd(node: &Node, flags: &Flags) -> Result<Health, ErrorKind> {
    let rest = &node.args[1..];
    if rest.is_empty() && !node.json {
        return Err(invalid(
            "HEALTHCHECK",
            "missing command after HEALTHCHECK CMD",
            Some("write HEALTHCHECK CMD command"),
        ));
    }
    let test = if node.json {
        ShellOrExec::Exec(rest.to_vec())
    } else {
        ShellOrExec::Shell(rest[0].clone())
    };
    let retries = match flags.string("retries")? {
        None => None,
        Some(v) => Some(v.parse::<u32>().map_err(|_| {
            invalid(
                "HEALTHCHECK",
                format!("invalid --retries value {v:?}"),
                Some("use a whole number"),
            )
        })?),
    };
    Ok(Health::Cmd {
        test,
        interval: health_duration(flags, "interval")?,
        timeout: health_duration(flags, "timeout")?,
        start_period: health_duration(flags, "start-period")?,
        start_interval: health_duration(flags, "start-interval")?,
        retries,
    })
}

/// A HEALTHCHECK duration flag: Go's syntax, zero (the default) or at least 1ms.
fn health_duration(flags: &Flags, name: &str) -> Result<Option<Duration>, ErrorKind> {
    let Some(v) = flags.string(name)? else {
        return Ok(None);
    };
    let d = parse_go_duration(&v).ok_or_else(|| {
        invalid(
            "HEALTHCHECK",
            format!("invalid duration {v:?} for --{name}"),
            Some("use a duration like 30s, 1m30s or 500ms"),
        )
    })?;
    if !d.is_zero() && d < Duration::from_millis(1) {
        return Err(invalid(
            "HEALTHCHECK",
            format!("--{name} cannot be less than 1ms"),
            None,
        ));
    }
    Ok(Some(d))
}

/// Parses Go's `time.ParseDuration` syntax (`1h2m3.5s`, `500ms`, `0`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[u..];
    }
    Duration::try_from_secs_f64(total).ok()
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Splits a `--mount` value at commas outside double quotes (like Go's `encoding/csv`).
fn csv_fields(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Parses one `--mount=` value (BuildKit `instructions.parseMount`) as written: a value
/// holding a variable is kept as text and, for numeric, boolean and enum options, checked
/// only when the step runs (`parse_mount_expanded`).
pub fn parse_mount(value: &str) -> Result<RunMount, ErrorKind> {
    parse_mount_with(value, None)
}

/// Parses one `--mount=` value after expanding each option's value with `expand` (BuildKit
/// expands mount options with the stage's build args and env).
pub fn parse_mount_expanded(
    value: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> Result<RunMount, ErrorKind> {
    parse_mount_with(value, Some(expand))
}

type Expander<'a> = Option<&'a dyn Fn(&str) -> Result<String, String>>;

fn parse_mount_with(value: &str, expand: Expander) -> Result<RunMount, ErrorKind> {
    let mut m = RunMount {
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        id: None,
        mode: None,
        uid: None,
        gid: None,
        sharing: Sharing::Shared,
        readonly: false,
        required: false,
        size: None,
        env: None,
        written: value.to_string(),
    };
    let fields = mount_fields(value, expand)?;
    // The type decides defaults, so read it first.
    m.kind = mount_type(&fields)?.unwrap_or(MountType::Bind);
    let mut readonly: Option<bool> = None;
    for f in fields {
        let f = f.trim();
        if f.is_empty() {
            continue;
        }
        let (key, val) = match f.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (f.to_ascii_lowercase(), None),
        };
        // Unexpanded: a variable in a typed option is checked once it has a value.
        let typed = !matches!(
            key.as_str(),
            "target" | "dst" | "destination" | "source" | "src" | "from" | "id" | "env"
        );
        if expand.is_none() && typed && val.as_deref().is_some_and(|v| v.contains('$')) {
            continue;
        }
        set_mount_option(&mut m, &mut readonly, &key, &val, value)?;
    }
    // Bind mounts are read-only unless asked otherwise; the rest are writable.
    m.readonly = readonly.unwrap_or(m.kind == MountType::Bind);
    mount_defaults(m, value)
}

fn bad_mount(msg: String, hint: &str) -> ErrorKind {
    invalid("RUN", msg, Some(hint))
}

/// The `key=value` fields of a `--mount` value, each value expanded when `expand` is given.
fn mount_fields(value: &str, expand: Expander) -> Result<Vec<String>, ErrorKind> {
    let mut fields = csv_fields(value);
    if let Some(expand) = expand {
        for f in fields.iter_mut() {
            if let Some((k, v)) = f.split_once('=') {
                let v =
                    expand(v).map_err(|e| bad_mount(e, "define the variable with ARG or ENV"))?;
                *f = format!("{k}={v}");
            }
        }
    }
    Ok(fields)
}

/// The mount's `type=` (the last one given), if any.
fn mount_type(fields: &[String]) -> Result<Option<MountType>, ErrorKind> {
    let mut kind = None;
    for f in fields {
        if let Some(t) = f.trim().strip_prefix("type=") {
            kind = Some(match t.to_ascii_lowercase().as_str() {
                "bind" => MountType::Bind,
                "cache" => MountType::Cache,
                "secret" => MountType::Secret,
                "tmpfs" => MountType::Tmpfs,
                "ssh" => MountType::Ssh,
                other => {
                    return Err(bad_mount(
                        format!("unsupported mount type {other:?}"),
                        "use type=bind, cache, tmpfs, secret or ssh",
                    ))
                }
            });
        }
    }
    Ok(kind)
}

/// A mount option's value, which it must have.
fn mount_value(key: &str, v: &Option<String>) -> Result<String, ErrorKind> {
    v.clone().ok_or_else(|| {
        bad_mount(
            format!("mount option {key:?} needs a value"),
            "write key=value",
        )
    })
}

/// A numeric mount option (`mode` in octal, `uid`/`gid` in decimal).
fn mount_number(key: &str, v: &Option<String>, radix: u32) -> Result<u32, ErrorKind> {
    let s = mount_value(key, v)?;
    u32::from_str_radix(&s, radix).map_err(|_| {
        bad_mount(
            format!("invalid value {s:?} for mount option {key}"),
            "use a number",
        )
    })
}

/// A boolean mount option: a bare key is true.
fn mount_bool(key: &str, v: &Option<String>) -> Result<bool, ErrorKind> {
    match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(o) => Err(bad_mount(
            format!("invalid boolean {o:?} for mount option {key}"),
            "use true or false",
        )),
    }
}

/// Sets one option `key[=val]` of the mount written `value` on `m`.
fn set_mount_option(
    m: &mut RunMount,
    readonly: &mut Option<bool>,
    key: &str,
    val: &Option<String>,
    value: &str,
) -> Result<(), ErrorKind> {
    let need = |v: &Option<String>| mount_value(key, v);
    match key {
        "type" => {}
        "target" | "dst" | "destination" => m.target = Some(need(val)?),
        "source" | "src" => m.source = Some(need(val)?),
        "from" => m.from = Some(need(val)?),
        "id" => m.id = Some(need(val)?),
        "mode" => m.mode = Some(mount_number(key, val, 8)?),
        "uid" => m.uid = Some(mount_number(key, val, 10)?),
        "gid" => m.gid = Some(mount_number(key, val, 10)?),
        "readonly" | "ro" => *readonly = Some(mount_bool(key, val)?),
        "readwrite" | "rw" => *readonly = Some(!mount_bool(key, val)?),
        "required" => m.required = mount_bool(key, val)?,
        "env" => m.env = Some(need(val)?),
        "size" => {
            let s = need(val)?;
            m.size = Some(parse_size(&s).ok_or_else(|| {
                bad_mount(
                    format!("invalid tmpfs size {s:?}"),
                    "use bytes or a suffix like 64m",
                )
            })?);
        }
        "sharing" => {
            m.sharing = match need(val)?.as_str() {
                "shared" => Sharing::Shared,
                "private" => Sharing::Private,
                "locked" => Sharing::Locked,
                o => {
                    return Err(bad_mount(
                        format!("unsupported sharing value {o:?}"),
                        "use shared, private or locked",
                    ))
                }
            }
        }
        _ => {
            return Err(bad_mount(
                format!("unexpected key {key:?} in mount option {value:?}"),
                "see the RUN --mount reference for the keys of each type",
            ))
        }
    }
    Ok(())
}

/// The defaults each type fills in: a secret's id from its target and its target from
/// its id, a cache's id from its target; every other type needs a target.
fn mount_defaults(mut m: RunMount, value: &str) -> Result<RunMount, ErrorKind> {
    match m.kind {
        MountType::Secret | MountType::Ssh => {
            if m.id.is_none() && m.kind == MountType::Secret {
                m.id = m
                    .target
                    .as_deref()
                    .map(|t| t.rsplit('/').next().unwrap_or(t).to_string());
            }
            if m.target.is_none() && m.kind == MountType::Secret && m.env.is_none() {
                let id = m.id.clone().ok_or_else(|| {
                    bad_mount("secret mount needs an id or a target".into(), "add id=NAME")
                })?;
                m.target = Some(format!("/run/secrets/{id}"));
            }
        }
        _ => {
            if m.target.is_none() {
                return Err(bad_mount(
                    format!("mount {value:?} has no target"),
                    "add target=/path",
                ));
            }
        }
    }
    if m.kind == MountType::Cache && m.id.is_none() {
        m.id = m.target.clone();
    }
    Ok(m)
}

/// A size: bytes, or with a k/m/g suffix (an optional trailing b), binary multiples.
pub fn parse_size(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let (num, mult) = match lower.trim_end_matches('b').chars().last()? {
        'k' => (&lower[..lower.trim_end_matches('b').len() - 1], 1u64 << 10),
        'm' => (&lower[..lower.trim_end_matches('b').len() - 1], 1 << 20),
        'g' => (&lower[..lower.trim_end_matches('b').len() - 1], 1 << 30),
        _ => (lower.trim_end_matches('b'), 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

/// The closest known keyword within edit distance 2 (or a third of its length).
pub fn suggest(word: &str) -> Option<String> {
    let word = word.to_uppercase();
    KEYWORDS
        .iter()
        .map(|k| (edit_distance(&word, k), *k))
        .filter(|(d, k)| *d > 0 && *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k.to_string())
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parse;

    fn one(src: &str) -> Result<Instruction, ParseError> {
        let ast = parse("Dockerfile", format!("FROM scratch\n{src}\n").as_bytes())?;
        instructions(&ast).map(|mut v| v.remove(1).value)
    }

    fn err(src: &str) -> String {
        one(src).unwrap_err().to_string()
    }

    #[test]
    fn from_table() {
        let cases = [
            ("FROM alpine", ("alpine", None, None)),
            ("FROM alpine AS Build", ("alpine", Some("build"), None)),
            (
                "FROM --platform=linux/arm64 alpine as b",
                ("alpine", Some("b"), Some("linux/arm64")),
            ),
        ];
        for (src, (image, name, platform)) in cases {
            let ast = parse("Dockerfile", src.as_bytes()).unwrap();
            let got = instructions(&ast).unwrap().remove(0).value;
            let want = Instruction::From {
                image: image.into(),
                name: name.map(Into::into),
                platform: platform.map(Into::into),
            };
            assert_eq!(got, want, "{src}");
        }
        assert!(err("FROM a b").contains("one or three arguments"));
    }

    #[test]
    fn unknown_instruction_suggests() {
        let e = err("COPPY a b");
        assert!(e.contains("unknown instruction: COPPY"), "{e}");
        assert!(e.contains("did you mean COPY?"), "{e}");
        assert!(e.starts_with("Dockerfile:2:1:"), "{e}");
        assert!(e.contains(" 2 | COPPY a b\n   | ^"), "{e}");
        assert!(!err("XYZZYFOO a").contains("did you mean"));
        assert_eq!(suggest("entrypiont").as_deref(), Some("ENTRYPOINT"));
        assert_eq!(suggest("RUNN").as_deref(), Some("RUN"));
    }

    #[test]
    fn unknown_flag_named_with_column() {
        let e = one("COPY --frm=a x y").unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::UnknownFlag {
                instruction: "COPY".into(),
                flag: "frm".into(),
                accepted: ["from", "chown", "chmod", "link", "exclude", "parents"]
                    .map(String::from)
                    .to_vec(),
            }
        );
        assert!(
            e.to_string()
                .contains("hint: remove or fix the flag; COPY accepts --from, --chown"),
            "{e}"
        );
        assert!(err("CMD --x a").contains("CMD accepts no flags"));
        assert_eq!(e.column, 6);
        assert!(err("CMD --doit echo").contains("unknown flag doit on CMD"));
    }

    #[test]
    fn run_table() {
        let got =
            one("RUN --mount=type=cache,target=/root/.cache,sharing=locked --network=none make")
                .unwrap();
        let Instruction::Run {
            command,
            mounts,
            network,
            ..
        } = got
        else {
            panic!()
        };
        assert_eq!(command, ShellOrExec::Shell("make".into()));
        assert_eq!(network, Some(Network::None));
        assert_eq!(mounts[0].kind, MountType::Cache);
        assert_eq!(mounts[0].target.as_deref(), Some("/root/.cache"));
        assert_eq!(mounts[0].sharing, Sharing::Locked);
        assert!(!mounts[0].readonly);
        let Instruction::Run { command, .. } = one("RUN [\"a\", \"b\"]").unwrap() else {
            panic!()
        };
        assert_eq!(command, ShellOrExec::Exec(vec!["a".into(), "b".into()]));
        assert!(err("RUN --network=bogus x").contains("unsupported network mode"));
        assert!(err("RUN --mount=type=cache x").contains("no target"));
        assert!(err("RUN --mount=type=nfs,target=/x x").contains("unsupported mount type"));
    }

    #[test]
    fn mount_table() {
        let m = parse_mount("type=secret,id=tok").unwrap();
        assert_eq!(
            (m.kind, m.target.as_deref()),
            (MountType::Secret, Some("/run/secrets/tok"))
        );
        let m = parse_mount("target=/src,from=build,source=/out,rw").unwrap();
        assert_eq!(
            (m.kind, m.readonly, m.from.as_deref()),
            (MountType::Bind, false, Some("build"))
        );
        let m = parse_mount("type=cache,target=/c,mode=0700,uid=1,gid=2").unwrap();
        assert_eq!(
            (m.mode, m.uid, m.gid, m.id.as_deref()),
            (Some(0o700), Some(1), Some(2), Some("/c"))
        );
        let m = parse_mount("type=tmpfs,target=/t,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
        assert!(parse_mount("type=cache,target=/c,bogus=1").is_err());
        // A variable in a typed option waits for its value; then it is checked.
        let m = parse_mount("type=cache,target=$D,uid=$U,size=$S").unwrap();
        assert_eq!((m.target.as_deref(), m.uid), (Some("$D"), None));
        let vars = |v: &str| Ok(v.replace("$D", "/d").replace("$U", "7").replace("$S", "1k"));
        let m = parse_mount_expanded(&m.written, &vars).unwrap();
        assert_eq!((m.target.as_deref(), m.uid), (Some("/d"), Some(7)));
        let bad = |v: &str| Ok(v.replace("$D", "/d").replace("$U", "x").replace("$S", "1k"));
        assert!(parse_mount_expanded("type=cache,target=$D,uid=$U", &bad).is_err());
    }

    #[test]
    fn copy_table() {
        let Instruction::Copy(c) = one(
            "COPY --from=build --chown=1:2 --chmod=755 --link --exclude=*.md --exclude=x a b /dst/",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.srcs, vec!["a", "b"]);
        assert_eq!(c.dest, "/dst/");
        assert_eq!(
            (
                c.from.as_deref(),
                c.chown.as_deref(),
                c.chmod.as_deref(),
                c.link
            ),
            (Some("build"), Some("1:2"), Some("755"), true)
        );
        assert_eq!(c.exclude, vec!["*.md", "x"]);
        assert!(err("COPY onlyone").contains("at least two arguments"));
        assert!(err("ADD --from=x a b").contains("unknown flag from on ADD"));
        let Instruction::Add(a) =
            one("ADD --keep-git-dir=true --checksum=sha256:ab https://x/y /z").unwrap()
        else {
            panic!()
        };
        assert!(a.keep_git_dir);
        assert_eq!(a.checksum.as_deref(), Some("sha256:ab"));
        let Instruction::Copy(c) = one("COPY <<EOF /x\nhi\nEOF").unwrap() else {
            panic!()
        };
        assert_eq!(c.heredocs[0].content, "hi\n");
    }

    #[test]
    fn env_arg_label_table() {
        assert_eq!(
            one("ENV a=1 b=\"2 3\"").unwrap(),
            Instruction::Env(vec![
                ("a".into(), "1".into()),
                ("b".into(), "\"2 3\"".into())
            ])
        );
        assert_eq!(
            one("ENV a 1 2").unwrap(),
            Instruction::Env(vec![("a".into(), "1 2".into())])
        );
        assert_eq!(
            one("ARG A B=2").unwrap(),
            Instruction::Arg(vec![("A".into(), None), ("B".into(), Some("2".into()))])
        );
        assert_eq!(
            one("LABEL x=y").unwrap(),
            Instruction::Label(vec![("x".into(), "y".into())])
        );
        assert!(err("ARG").contains("at least one argument"));
    }

    #[test]
    fn healthcheck_table() {
        assert_eq!(
            one("HEALTHCHECK NONE").unwrap(),
            Instruction::Healthcheck(Health::None)
        );
        let got =
            one("HEALTHCHECK --interval=5s --timeout=1m30s --retries=3 CMD curl -f http://x/")
                .unwrap();
        let Instruction::Healthcheck(Health::Cmd {
            test,
            interval,
            timeout,
            retries,
            ..
        }) = got
        else {
            panic!()
        };
        assert_eq!(test, ShellOrExec::Shell("curl -f http://x/".into()));
        assert_eq!(
            (interval, timeout, retries),
            (
                Some(Duration::from_secs(5)),
                Some(Duration::from_secs(90)),
                Some(3)
            )
        );
        assert!(err("HEALTHCHECK BOGUS x").contains("try CMD"));
        assert!(err("HEALTHCHECK --interval=5 CMD x").contains("invalid duration"));
        assert!(err("HEALTHCHECK --bogus=1 CMD x").contains("unknown flag bogus"));
    }

    #[test]
    fn onbuild_and_misc_table() {
        let Instruction::Onbuild { trigger, text } = one("ONBUILD RUN echo hi").unwrap() else {
            panic!()
        };
        assert_eq!(
            *trigger,
            Instruction::Run {
                command: ShellOrExec::Shell("echo hi".into()),
                heredocs: vec![],
                mounts: vec![],
                network: None,
                security: None
            }
        );
        assert_eq!(text, "RUN echo hi");
        assert!(err("ONBUILD FROM x").contains("isn't allowed as an ONBUILD trigger"));
        assert!(err("ONBUILD ONBUILD RUN x").contains("chaining"));
        assert!(err("SHELL /bin/sh -c").contains("JSON form"));
        assert_eq!(
            one("SHELL [\"/bin/bash\", \"-c\"]").unwrap(),
            Instruction::Shell(vec!["/bin/bash".into(), "-c".into()])
        );
        assert_eq!(
            one("WORKDIR /app").unwrap(),
            Instruction::Workdir("/app".into())
        );
        assert_eq!(one("USER 1:2").unwrap(), Instruction::User("1:2".into()));
        assert_eq!(
            one("EXPOSE 80 53/udp").unwrap(),
            Instruction::Expose(vec!["80".into(), "53/udp".into()])
        );
        assert_eq!(
            one("VOLUME [\"/a\", \"/b\"]").unwrap(),
            Instruction::Volume(vec!["/a".into(), "/b".into()])
        );
        assert_eq!(
            one("STOPSIGNAL SIGKILL").unwrap(),
            Instruction::StopSignal("SIGKILL".into())
        );
        assert_eq!(
            one("MAINTAINER me <me@x>").unwrap(),
            Instruction::Maintainer("me <me@x>".into())
        );
        assert_eq!(
            one("CMD [\"a\"]").unwrap(),
            Instruction::Cmd(ShellOrExec::Exec(vec!["a".into()]))
        );
        assert_eq!(
            one("ENTRYPOINT a b").unwrap(),
            Instruction::Entrypoint(ShellOrExec::Shell("a b".into()))
        );
        assert!(err("WORKDIR").contains("exactly one argument"));
    }

    #[test]
    fn spans_kept() {
        let ast = parse("Dockerfile", b"FROM a\n\nRUN x \\\n  y\n").unwrap();
        let v = instructions(&ast).unwrap();
        assert_eq!((v[1].start_line, v[1].end_line), (3, 4));
        assert_eq!(v[1].original, "RUN x   y");
    }

    #[test]
    fn expand_table() {
        let env = |n: &str| match n {
            "V" => Some("1.2".to_string()),
            "D" => Some("/srv".to_string()),
            "PS" => Some("80 443".to_string()),
            _ => None,
        };
        let lx = Lexer::new('\\');
        let cases = [
            (
                "ENV a=\"x $V\" b=${U:-d}",
                "ENV",
                Instruction::Env(vec![("a".into(), "x 1.2".into()), ("b".into(), "d".into())]),
            ),
            (
                "LABEL 'k'=\"v w\"",
                "LABEL",
                Instruction::Label(vec![("k".into(), "v w".into())]),
            ),
            (
                "ARG X=$V",
                "ARG",
                Instruction::Arg(vec![("X".into(), Some("1.2".into()))]),
            ),
            (
                "WORKDIR $D/app",
                "WORKDIR",
                Instruction::Workdir("/srv/app".into()),
            ),
            (
                "RUN echo $V",
                "RUN",
                Instruction::Run {
                    command: ShellOrExec::Shell("echo $V".into()),
                    heredocs: vec![],
                    mounts: vec![],
                    network: None,
                    security: None,
                },
            ),
            (
                "EXPOSE $PS ${P:-22}",
                "EXPOSE",
                Instruction::Expose(vec!["80".into(), "443".into(), "22".into()]),
            ),
        ];
        for (src, kw, want) in cases {
            let got = one(src).unwrap().expand(&lx, &env).unwrap();
            assert_eq!(got.keyword(), kw);
            assert_eq!(got, want, "{src}");
        }
        let Instruction::Copy(c) = one("COPY --chown=$V a${V} <<EOF $D/\nx\nEOF")
            .unwrap()
            .expand(&lx, &env)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (c.chown.as_deref(), c.srcs.clone(), c.dest.as_str()),
            (
                Some("1.2"),
                vec!["a1.2".to_string(), "<<EOF".to_string()],
                "/srv/"
            )
        );
        assert!(one("ENV a=${U:?needed}")
            .unwrap()
            .expand(&lx, &env)
            .is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
