//! What a slug runs (pure): `bin/release` YAML (`default_process_types`, `config_vars`,
//! `addons`) and the app's `Procfile`, merged as Heroku merges them — later buildpacks
//! over earlier ones, the Procfile over every buildpack. No I/O: the texts come in, a
//! typed [`Release`] goes out.
//!
//! The YAML is read with a real YAML parser (herokuish uses go-yaml) because buildpacks
//! print both block (`default_process_types:\n  web: …`) and flow (`--- {web: …}`) styles.
use std::collections::BTreeMap;

use yaml_rust2::{Yaml, YamlLoader};

use super::BuildpackError;

/// The merged result: what the image's Procfile, Env and labels say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    /// Process type → command (`web` → `npm start`).
    pub processes: BTreeMap<String, String>,
    /// `config_vars` of the buildpacks: the image's Env (the user's `--env` wins).
    pub config_vars: BTreeMap<String, String>,
    /// `addons` the buildpacks asked for: recorded, keel provisions none.
    pub addons: Vec<String>,
}

/// A process type name as Heroku allows it (letters, digits, `_`, `-`).
pub fn valid_process_type(t: &str) -> bool {
    !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A string → string mapping under `key` (absent or `{}` is empty).
fn string_map(
    doc: &Yaml,
    key: &str,
    who: &str,
) -> Result<BTreeMap<String, String>, BuildpackError> {
    let bad = |why: String| BuildpackError::Release {
        buildpack: who.to_string(),
        why,
    };
    match &doc[key] {
        Yaml::BadValue | Yaml::Null => Ok(BTreeMap::new()),
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| match (scalar(k), scalar(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(bad(format!("{key} must map names to strings"))),
            })
            .collect(),
        _ => Err(bad(format!("{key} must be a mapping"))),
    }
}

/// Parses one buildpack's `bin/release` output (`who` names it in errors). Empty output
/// is an empty release, as Heroku treats a buildpack without `bin/release`.
pub fn parse_release(text: &str, who: &str) -> Result<Release, BuildpackError> {
    let bad = |why: String| BuildpackError::Release {
        buildpack: who.to_string(),
        why,
    };
    let docs = YamlLoader::load_from_str(text).map_err(|e| bad(format!("not YAML: {e}")))?;
    let Some(doc) = docs.into_iter().next() else {
        return Ok(Release::default());
    };
    if !matches!(doc, Yaml::Hash(_) | Yaml::Null) {
        return Err(bad("the output must be a YAML mapping".into()));
    }
    let processes = string_map(&doc, "default_process_types", who)?;
    if let Some(t) = processes.keys().find(|t| !valid_process_type(t)) {
        return Err(bad(format!(
            "process type {t:?} may only hold letters, digits, '_' and '-'"
        )));
    }
    let addons = match &doc["addons"] {
        Yaml::Array(a) => a.iter().filter_map(scalar).collect(),
        _ => Vec::new(),
    };
    Ok(Release {
        processes,
        config_vars: string_map(&doc, "config_vars", who)?,
        addons,
    })
}

/// The `type: command` lines of a Procfile (blank lines and `#` comments skipped).
pub fn parse_procfile(text: &str) -> Result<BTreeMap<String, String>, BuildpackError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let bad = |why: &str| BuildpackError::Procfile {
            line: i + 1,
            why: why.to_string(),
        };
        let (name, cmd) = t
            .split_once(':')
            .ok_or_else(|| bad("expected `type: command`"))?;
        let name = name.trim();
        if !valid_process_type(name) {
            return Err(bad(
                "a process type may only hold letters, digits, '_' and '-'",
            ));
        }
        if cmd.trim().is_empty() {
            return Err(bad("the command is empty"));
        }
        out.insert(name.to_string(), cmd.trim().to_string());
    }
    Ok(out)
}

/// Heroku's merge: each buildpack's release over the ones before it, then the Procfile
/// over all of them.
pub fn merge(releases: &[Release], procfile: Option<&BTreeMap<String, String>>) -> Release {
    let mut out = Release::default();
    for r in releases {
        out.processes.extend(r.processes.clone());
        out.config_vars.extend(r.config_vars.clone());
        for a in &r.addons {
            if !out.addons.contains(a) {
                out.addons.push(a.clone());
            }
        }
    }
    if let Some(p) = procfile {
        out.processes.extend(p.clone());
    }
    out
}

/// The Procfile written into the slug: every merged process type, sorted.
pub fn procfile_text(processes: &BTreeMap<String, String>) -> String {
    processes
        .iter()
        .map(|(t, c)| format!("{t}: {c}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn release_yaml_in_block_and_flow_style() {
        let cases = [
            (
                "---\naddons: []\ndefault_process_types:\n  web: python app.py\n",
                map(&[("web", "python app.py")]),
                map(&[]),
            ),
            (
                "--- {addons: [heroku-postgresql], default_process_types: {web: \"bin/start $PORT\", worker: bin/w}}",
                map(&[("web", "bin/start $PORT"), ("worker", "bin/w")]),
                map(&[]),
            ),
            (
                "---\nconfig_vars:\n  LANG: en_US.UTF-8\n  WEB_CONCURRENCY: 2\ndefault_process_types: {}\n",
                map(&[]),
                map(&[("LANG", "en_US.UTF-8"), ("WEB_CONCURRENCY", "2")]),
            ),
            ("", map(&[]), map(&[])),
            ("---\n", map(&[]), map(&[])),
        ];
        for (text, procs, vars) in cases {
            let r = parse_release(text, "bp").unwrap();
            assert_eq!(r.processes, procs, "{text}");
            assert_eq!(r.config_vars, vars, "{text}");
        }
        let r = parse_release("--- {addons: [a, b]}", "bp").unwrap();
        assert_eq!(r.addons, ["a", "b"]);
        for (bad, want) in [
            ("- a\n- b\n", "must be a YAML mapping"),
            ("default_process_types: [web]\n", "must be a mapping"),
            (
                "default_process_types:\n  'we b': x\n",
                "process type \"we b\"",
            ),
            ("{unclosed", "not YAML"),
        ] {
            let e = parse_release(bad, "python").unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("python"), "{bad}: {e}");
        }
    }

    #[test]
    fn procfile_lines_and_errors() {
        let p = parse_procfile(
            "# comment\nweb: gunicorn app:app --bind 0.0.0.0:$PORT\n\nworker:  python w.py\n",
        )
        .unwrap();
        assert_eq!(
            p,
            map(&[
                ("web", "gunicorn app:app --bind 0.0.0.0:$PORT"),
                ("worker", "python w.py")
            ])
        );
        for (bad, want) in [
            (
                "web python app.py\n",
                "Procfile:1: expected `type: command`",
            ),
            ("\nw b: x\n", "Procfile:2: a process type"),
            ("web:\n", "the command is empty"),
        ] {
            let e = parse_procfile(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn procfile_wins_over_later_buildpacks_over_earlier() {
        let node = Release {
            processes: map(&[("web", "npm start"), ("worker", "node w.js")]),
            config_vars: map(&[("A", "node"), ("B", "node")]),
            addons: vec!["x".into()],
        };
        let python = Release {
            processes: map(&[("web", "python app.py")]),
            config_vars: map(&[("B", "python")]),
            addons: vec!["x".into(), "y".into()],
        };
        let procfile = map(&[("web", "gunicorn app:app")]);
        let m = merge(&[node.clone(), python.clone()], Some(&procfile));
        assert_eq!(
            m.processes,
            map(&[("web", "gunicorn app:app"), ("worker", "node w.js")])
        );
        assert_eq!(m.config_vars, map(&[("A", "node"), ("B", "python")]));
        assert_eq!(m.addons, ["x", "y"]);
        let m = merge(&[node, python], None);
        assert_eq!(m.processes["web"], "python app.py");
        assert_eq!(
            procfile_text(&m.processes),
            "web: python app.py\nworker: node w.js\n"
        );
    }
}
