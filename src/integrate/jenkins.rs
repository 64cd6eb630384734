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
    let push = p
        .images
        .iter()
        .flat_map(|i| {
            if i.tags.is_empty() {
                vec![i.name.clone()]
            } else {
                i.tags.clone()
            }
        })
        .map(|r| format!("\"$KEEL\" push {}", shell_quote(&r)))
        .collect();
    (build, test, push)
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
        let (build, test, push) = stage_commands(p, opts);
        let jenkinsfile = fill(
            "jenkins/Jenkinsfile",
            JENKINSFILE,
            &[
                ("header", header(Comment::Slash, &p.file, &regen)),
                ("project_file", p.file.clone()),
                (
                    "test_env",
                    opts.test_env(p).map_or("(none)".into(), |e| e.name.clone()),
                ),
                ("keel", py_str(&opts.keel).trim_matches('\'').to_string()),
                ("build", groovy_steps(&build)),
                ("test", groovy_steps(&test)),
                (
                    "push",
                    if push.is_empty() {
                        "                echo 'nothing to push'\n".into()
                    } else {
                        groovy_steps(&push)
                    },
                ),
            ],
        )?;
        let step = |t: &'static str, text: &str| {
            fill(
                t,
                text,
                &[("header", header(Comment::Slash, &p.file, &regen))],
            )
        };
        let braces = |s: &str| s.replace('{', "{{").replace('}', "}}");
        let commands: String = build
            .iter()
            .chain(&test)
            .map(|l| format!("          {}\n", braces(l)))
            .collect();
        let jjb = fill(
            "jenkins/keel-jobs.yaml",
            JJB,
            &[
                ("header", header(Comment::Hash, &p.file, &regen)),
                ("keel_braced", braces(&opts.keel)),
                ("commands", commands),
                ("project", p.name.clone()),
                ("project_file", p.file.clone()),
            ],
        )?;
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
