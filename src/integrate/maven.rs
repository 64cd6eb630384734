//! Maven: pom fragments (integrations/maven/) binding `keel build` to `package` and
//! `keel push` to `deploy` through exec-maven-plugin, with the main image also tagged
//! from the project's coordinates (`${keel.image}`).
//!
//! The main image is IMAGE when given, else the last image in build order (the one the
//! others are built for). Running `mvn` itself inside an `[env]` needs no glue: `keel
//! exec-in dev -- mvn -o package` (docs/integrations/maven.md).
use super::template::{fill, header, xml_escape, Comment};
use super::{Adapter, AdapterOptions, GeneratedFile, IntegrateError, ResolvedProject, Result};

const PROPERTIES: &str = include_str!("../../integrations/maven/properties.xml");
const PLUGIN: &str = include_str!("../../integrations/maven/plugin.xml");
const EXECUTION: &str = include_str!("../../integrations/maven/execution.xml");

pub struct Maven;

fn execution(id: &str, phase: &str, args: &[String]) -> Result<String> {
    let arguments: String = args
        .iter()
        .map(|a| format!("          <argument>{}</argument>\n", xml_escape(a)))
        .collect();
    fill(
        "maven/execution.xml",
        EXECUTION,
        &[
            ("id", id.to_string()),
            ("phase", phase.to_string()),
            ("arguments", arguments),
        ],
    )
}

impl Adapter for Maven {
    fn name(&self) -> &'static str {
        "maven"
    }
    fn describe(&self) -> &'static str {
        "pom.xml fragments: exec-maven-plugin runs keel build at package, keel push at deploy"
    }
    fn render(&self, p: &ResolvedProject, opts: &AdapterOptions) -> Result<Vec<GeneratedFile>> {
        let main = match &opts.image {
            Some(i) => p.images.iter().find(|x| &x.name == i),
            None => p.images.last(),
        }
        .ok_or_else(|| IntegrateError::Options {
            adapter: "maven",
            message: match &opts.image {
                Some(i) => format!("no image `{i}` in {}", p.file),
                None => format!("{} has no [[image]] to build", p.file),
            },
        })?;
        let mut executions = String::new();
        for img in &p.images {
            let mut args = img.build_args.clone();
            if img.name == main.name {
                // Insert the coordinate tag before the context (the last argument).
                let ctx = args.pop().expect("build args end with the context");
                args.extend(["-t".to_string(), "${keel.image}".to_string(), ctx]);
            }
            executions += &execution(&format!("keel-build-{}", img.name), "package", &args)?;
        }
        executions += &execution(
            "keel-push",
            "deploy",
            &["push".to_string(), "${keel.image}".to_string()],
        )?;
        let regen = opts.regen_command("maven");
        let props = fill(
            "maven/properties.xml",
            PROPERTIES,
            &[
                ("header", header(Comment::Xml, &p.file, &regen)),
                ("keel", xml_escape(&opts.keel)),
            ],
        )?;
        let executions_for_plugin = executions.clone();
        let plugin = fill(
            "maven/plugin.xml",
            PLUGIN,
            &[
                ("header", header(Comment::Xml, &p.file, &regen)),
                ("project_file", p.file.clone()),
                ("main", main.name.clone()),
                ("executions", executions_for_plugin),
            ],
        )?;
        // For a pom that already declares exec-maven-plugin: a second <plugin> of the
        // same artifact is a duplicate declaration (Maven warns and keeps only one), so
        // keel's executions go into the existing plugin's <executions> instead.
        let only_executions = format!(
            "{}<!-- If pom.xml already declares exec-maven-plugin, paste these <execution>s into
     its <executions> instead of adding plugin.xml (a second declaration of the same
     plugin is a duplicate: Maven warns and ignores one of them). -->
{executions}",
            header(Comment::Xml, &p.file, &regen)
        );
        Ok(vec![
            GeneratedFile::new("keel-maven/properties.xml", props),
            GeneratedFile::new("keel-maven/plugin.xml", plugin),
            GeneratedFile::new("keel-maven/executions.xml", only_executions),
        ])
    }
}
