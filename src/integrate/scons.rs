//! SCons: `site_scons/site_tools/keel.py` (integrations/scons/) giving `env.KeelImage(NAME)`
//! with a target scanner over `keel context-files NAME`, and `env.KeelExec(...)`.
use super::template::{fill, header, py_list, py_str, Comment};
use super::{Adapter, AdapterOptions, GeneratedFile, ResolvedProject, Result};

const KEEL_PY: &str = include_str!("../../integrations/scons/keel.py");

pub struct Scons;

impl Adapter for Scons {
    fn name(&self) -> &'static str {
        "scons"
    }
    fn describe(&self) -> &'static str {
        "site_scons/site_tools/keel.py: env.KeelImage(NAME) with a context scanner, env.KeelExec()"
    }
    fn render(&self, p: &ResolvedProject, opts: &AdapterOptions) -> Result<Vec<GeneratedFile>> {
        let images: String = p
            .images
            .iter()
            .map(|i| format!("    {}: {},\n", py_str(&i.name), py_list(&i.build_args)))
            .collect();
        let depends: String = p
            .images
            .iter()
            .map(|i| format!("    {}: {},\n", py_str(&i.name), py_list(&i.depends_on)))
            .collect();
        let envs: Vec<&str> = p.envs.iter().map(|e| e.name.as_str()).collect();
        let text = fill(
            "scons/keel.py",
            KEEL_PY,
            &[
                (
                    "header",
                    header(Comment::Hash, &p.file, &opts.regen_command("scons")),
                ),
                ("project_file", p.file.clone()),
                ("project_file_py", py_str(&p.file)),
                ("images", images),
                ("depends", depends),
                ("envs", py_list(&envs)),
                (
                    "default_env",
                    opts.test_env(p).map_or("None".into(), |e| py_str(&e.name)),
                ),
            ],
        )?;
        Ok(vec![GeneratedFile::new(
            "site_scons/site_tools/keel.py",
            text,
        )])
    }
}
