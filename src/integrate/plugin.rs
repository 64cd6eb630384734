//! External adapters: `keel integrate NAME` for a NAME that is not built in runs
//! `keel-integrate-NAME` from PATH, writes the resolved project as JSON on its stdin and
//! takes what it prints as the generated output. The protocol is documented in
//! docs/plugins.md; [`SCHEMA_VERSION`] changes only when a field changes meaning.
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::{AdapterOptions, GeneratedFile, IntegrateError, ResolvedProject, Result};

/// Version of the JSON written to a plugin's stdin (`keel_integrate` field).
pub const SCHEMA_VERSION: u32 = 1;
/// Executable name prefix of plugins.
pub const PREFIX: &str = "keel-integrate-";

/// A plugin found on PATH.
#[derive(Debug, Clone, PartialEq)]
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
}

/// What a plugin reads on stdin.
#[derive(Debug, Serialize)]
pub struct PluginInput<'a> {
    pub keel_integrate: u32,
    pub keel_version: &'static str,
    pub tool: &'a str,
    pub options: &'a AdapterOptions,
    pub project: &'a ResolvedProject,
}

/// The optional structured reply (otherwise stdout is one file).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginOutput {
    keel_integrate_files: Vec<GeneratedFile>,
}

/// The JSON a plugin gets for `tool`.
pub fn input_json(tool: &str, project: &ResolvedProject, opts: &AdapterOptions) -> String {
    let input = PluginInput {
        keel_integrate: SCHEMA_VERSION,
        keel_version: env!("CARGO_PKG_VERSION"),
        tool,
        options: opts,
        project,
    };
    let mut s = serde_json::to_string_pretty(&input).expect("plain data serialises");
    s.push('\n');
    s
}

/// Plugins on `path` (a PATH value): executables named `keel-integrate-NAME`, the first
/// per NAME in PATH order, sorted by name.
pub fn find_plugins(path: &OsStr) -> Vec<Plugin> {
    use std::os::unix::fs::PermissionsExt;
    let mut found: Vec<Plugin> = Vec::new();
    for dir in std::env::split_paths(path) {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let fname = e.file_name();
            let Some(name) = fname.to_str().and_then(|f| f.strip_prefix(PREFIX)) else {
                continue;
            };
            let exec = std::fs::metadata(e.path())
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            if exec && !name.is_empty() && !found.iter().any(|p| p.name == name) {
                found.push(Plugin {
                    name: name.to_string(),
                    path: e.path(),
                });
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The plugin called `name` on `path`.
pub fn find_plugin(path: &OsStr, name: &str) -> Option<Plugin> {
    find_plugins(path).into_iter().find(|p| p.name == name)
}

/// Runs `plugin` in `cwd` with the project on stdin. Its stdout is either
/// `{"keel_integrate_files": [{"path", "contents", "mode"?}…]}` or plain text, which
/// becomes one file named `keel-NAME.out`. A non-zero exit is an error quoting stderr.
pub fn run_plugin(
    plugin: &Plugin,
    cwd: &Path,
    project: &ResolvedProject,
    opts: &AdapterOptions,
) -> Result<Vec<GeneratedFile>> {
    let spawn_err = |source| IntegrateError::PluginSpawn {
        path: plugin.path.clone(),
        source,
    };
    let mut child = Command::new(&plugin.path)
        .current_dir(cwd)
        .env("KEEL_INTEGRATE_SCHEMA", SCHEMA_VERSION.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let input = input_json(&plugin.name, project, opts);
    {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // A plugin may exit without reading stdin; that is its business.
        match stdin.write_all(input.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(spawn_err(e)),
            _ => {}
        }
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(IntegrateError::PluginFailed {
            path: plugin.path.clone(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let text = String::from_utf8(out.stdout).map_err(|_| IntegrateError::PluginOutput {
        path: plugin.path.clone(),
        message: "stdout is not UTF-8".into(),
    })?;
    // Structured output is recognised by its key; once recognised it must parse.
    let structured =
        text.trim_start().starts_with('{') && text.contains("\"keel_integrate_files\"");
    if structured {
        let parsed: PluginOutput =
            serde_json::from_str(&text).map_err(|e| IntegrateError::PluginOutput {
                path: plugin.path.clone(),
                message: e.to_string(),
            })?;
        return Ok(parsed.keel_integrate_files);
    }
    Ok(vec![GeneratedFile::new(
        format!("keel-{}.out", plugin.name),
        text,
    )])
}
