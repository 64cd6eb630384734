//! Buildbot (integrations/buildbot/): a `keel_steps.py` module with `KeelBuild` and
//! `KeelExec` steps built on Buildbot's ShellCommand, and a complete example master.cfg
//! using them (loopback-only ports, no web UI unless asked, no usage reporting).
use super::template::{fill, header, py_list, py_str, Comment};
use super::{Adapter, AdapterOptions, GeneratedFile, ResolvedProject, Result};

const STEPS: &str = include_str!("../../integrations/buildbot/keel_steps.py");
const MASTER: &str = include_str!("../../integrations/buildbot/master.cfg");

pub struct Buildbot;

impl Adapter for Buildbot {
    fn name(&self) -> &'static str {
        "buildbot"
    }
    fn describe(&self) -> &'static str {
        "keel_steps.py (KeelBuild, KeelExec on ShellCommand) and an example master.cfg"
    }
    fn render(&self, p: &ResolvedProject, opts: &AdapterOptions) -> Result<Vec<GeneratedFile>> {
        let regen = opts.regen_command("buildbot");
        let images: String = p
            .images
            .iter()
            .map(|i| format!("    ({}, {}),\n", py_str(&i.name), py_list(&i.build_args)))
            .collect();
        let envs: Vec<&str> = p.envs.iter().map(|e| e.name.as_str()).collect();
        let steps = fill(
            "buildbot/keel_steps.py",
            STEPS,
            &[
                ("header", header(Comment::Hash, &p.file, &regen)),
                ("project_file", p.file.clone()),
                ("keel", py_str(&opts.keel)),
                ("images", images),
                ("envs", py_list(&envs)),
                (
                    "default_env",
                    opts.test_env(p).map_or("None".into(), |e| py_str(&e.name)),
                ),
                ("test", py_str(opts.test_command())),
            ],
        )?;
        let build_steps: String = p
            .images
            .iter()
            .map(|i| format!("    KeelBuild({}, workdir=workdir),\n", py_str(&i.name)))
            .collect();
        let master = fill(
            "buildbot/master.cfg",
            MASTER,
            &[
                ("header", header(Comment::Hash, &p.file, &regen)),
                ("test", py_str(opts.test_command())),
                ("build_steps", build_steps),
                (
                    "has_env",
                    if p.envs.is_empty() { "False" } else { "True" }.into(),
                ),
                ("builder", py_str(&format!("{}-keel", p.name))),
            ],
        )?;
        Ok(vec![
            GeneratedFile::new("keel_steps.py", steps),
            GeneratedFile::new("master.cfg.keel-example", master),
        ])
    }
}
