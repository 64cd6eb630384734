//! Jenkins (integrations/jenkins/): a declarative `Jenkinsfile` (build, test inside an
//! env, push), shared-library steps `vars/keelBuild.groovy` and `vars/keelExec.groovy`, and
//! a Jenkins Job Builder YAML for a freestyle job running the same commands.
//!
//! Shell commands go into Groovy single-quoted strings (no Groovy interpolation; the shell
//! expands `$KEEL`). In the JJB file every literal brace is doubled: JJB runs
//! `str.format` on job templates (integration-tools.md, "Version trap with braces").
use super::template::{fill, header, py_str, shell_join, shell_quote, Comment};
use super::{Adapter, AdapterOptions, GeneratedFile, ResolvedProject, Result};

const JENKINSFILE: &str = include_str!("../../integrations/jenkins/Jenkinsfile");
const KEEL_BUILD: &str = include_str!("../../integrations/jenkins/keelBuild.groovy");
const KEEL_EXEC: &str = include_str!("../../integrations/jenkins/keelExec.groovy");
const JJB: &str = include_str!("../../integrations/jenkins/keel-jobs.yaml");

pub struct Jenkins;

/// The shell lines of the pipeline, per stage: (build, test, push). `$KEEL` is the keel
/// program (set by the pipeline's environment / the job's shell).
pub(crate) fn stage_commands(
    p: &ResolvedProject,
    opts: &AdapterOptions,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let build = p
        .images
        .iter()
        .map(|i| format!("\"$KEEL\" {}", shell_join(&i.build_args)))
        .collect();
    let test = match opts.test_env(p) {
        Some(e) => vec![format!(
            "\"$KEEL\" exec-in {} -- sh -c {}",
            e.name,
            shell_quote(opts.test_command())
        )],
        None => vec![opts.test_command().to_string()],
    };
    (build, test, push_commands(p))
}

/// The repository path and tag of `r` without its registry host: `app:1.0` for
/// `registry.example/app:1.0`, `team/app:latest` for `team/app`.
fn path_and_tag(r: &str) -> String {
    let parsed = crate::reference::ImageRef::parse(r).ok();
    let (repo, tag) = match &parsed {
        Some(p) => (p.repository.as_str(), p.tag_or_latest()),
        None => (r, "latest"),
    };
    let path = match repo.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            rest
        }
        _ => repo,
    };
    format!("{path}:{tag}")
}

/// Push lines: every image name (its tags, or its name) goes to `$KEEL_REGISTRY` under
/// its repository path, so the stage works against whatever registry the agent sets
/// (a bare `keel push NAME` names no registry and fails).
pub(crate) fn push_commands(p: &ResolvedProject) -> Vec<String> {
    let refs = p.images.iter().flat_map(|i| {
        if i.tags.is_empty() {
            vec![i.name.clone()]
        } else {
            i.tags.clone()
        }
    });
    refs.map(|r| {
        format!(
            "\"$KEEL\" push {} \"$KEEL_REGISTRY\"/{}",
            shell_quote(&r),
            shell_quote(&path_and_tag(&r))
        )
    })
    .collect()
}

/// The registry pushes go to unless the agent sets `KEEL_REGISTRY`: `--registry`, else
/// the registry the project's first registry-qualified tag names, else localhost:5000.
pub(crate) fn default_registry(p: &ResolvedProject, opts: &AdapterOptions) -> String {
    if let Some(r) = &opts.registry {
        return r.clone();
    }
    p.images
        .iter()
        .flat_map(|i| i.tags.iter())
        .find_map(|t| {
            let (host, _) = t.split_once('/')?;
            (host.contains('.') || host.contains(':') || host == "localhost")
                .then(|| host.to_string())
        })
        .unwrap_or_else(|| "localhost:5000".into())
}

fn groovy_steps(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| format!("                sh {}\n", py_str(l)))
        .collect()
}

impl Adapter for Jenkins {
    fn name(&self) -> &'static str {
        "jenkins"
    }
    fn describe(&self) -> &'static str {
        "Jenkinsfile, vars/keelBuild.groovy + vars/keelExec.groovy, Jenkins Job Builder YAML"
    }
    fn render(&self, p: &ResolvedProject, opts: &AdapterOptions) -> Result<Vec<GeneratedFile>> {
        let regen = opts.regen_command("jenkins");
        let commands = stage_commands(p, opts);
        let jenkinsfile = jenkinsfile(p, opts, &regen, &commands)?;
        let jjb = jjb_jobs(p, opts, &regen, &commands)?;
        let step = |t: &'static str, text: &str| {
            fill(
                t,
                text,
                &[("header", header(Comment::Slash, &p.file, &regen))],
            )
        };
        Ok(vec![
            GeneratedFile::new("Jenkinsfile", jenkinsfile),
            GeneratedFile::new(
                "vars/keelBuild.groovy",
                step("jenkins/keelBuild.groovy", KEEL_BUILD)?,
            ),
            GeneratedFile::new(
                "vars/keelExec.groovy",
                step("jenkins/keelExec.groovy", KEEL_EXEC)?,
            ),
            GeneratedFile::new("jenkins/keel-jobs.yaml", jjb),
        ])
    }
}

/// The declarative pipeline: one stage each for build, test and push.
fn jenkinsfile(
    p: &ResolvedProject,
    opts: &AdapterOptions,
    regen: &str,
    (build, test, push): &(Vec<String>, Vec<String>, Vec<String>),
) -> Result<String> {
    fill(
        "jenkins/Jenkinsfile",
        JENKINSFILE,
        &[
            ("header", header(Comment::Slash, &p.file, regen)),
            ("project_file", p.file.clone()),
            (
                "test_env",
                opts.test_env(p).map_or("(none)".into(), |e| e.name.clone()),
            ),
            ("keel", py_str(&opts.keel).trim_matches('\'').to_string()),
            (
                "registry",
                py_str(&default_registry(p, opts))
                    .trim_matches('\'')
                    .to_string(),
            ),
            ("build", groovy_steps(build)),
            ("test", groovy_steps(test)),
            (
                "push",
                if push.is_empty() {
                    "                echo 'nothing to push'\n".into()
                } else {
                    groovy_steps(push)
                },
            ),
        ],
    )
}

/// The Jenkins Job Builder job: the same commands in one shell step, the pushes only
/// when the job (or the agent) names a registry.
fn jjb_jobs(
    p: &ResolvedProject,
    opts: &AdapterOptions,
    regen: &str,
    (build, test, push): &(Vec<String>, Vec<String>, Vec<String>),
) -> Result<String> {
    let braces = |s: &str| s.replace('{', "{{").replace('}', "}}");
    let commands: String = build
        .iter()
        .chain(test)
        .map(|l| format!("          {}\n", braces(l)))
        .collect();
    let pushes: String = push
        .iter()
        .map(|l| format!("            {}\n", braces(l)))
        .collect();
    let commands = if pushes.is_empty() {
        commands
    } else {
        format!(
            "{commands}          if [ -n \"${{{{KEEL_REGISTRY:-}}}}\" ]; then\n{pushes}          fi\n"
        )
    };
    fill(
        "jenkins/keel-jobs.yaml",
        JJB,
        &[
            ("header", header(Comment::Hash, &p.file, regen)),
            ("keel_braced", braces(&opts.keel)),
            ("commands", commands),
            ("project", p.name.clone()),
            ("project_file", p.file.clone()),
            (
                "scm_url",
                opts.scm
                    .clone()
                    .unwrap_or_else(|| "CHANGE-ME (keel integrate jenkins --scm URL)".into()),
            ),
        ],
    )
}
