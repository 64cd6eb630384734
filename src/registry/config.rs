//! `registries.toml`: the unqualified-name search list, per-registry mirrors and
//! `insecure` entries (a small subset of containers-registries.conf(5), same names).
//! Read from `<root>/registries.toml`, else `/etc/keel/registries.toml`; none means
//! docker's behaviour (search docker.io only, no mirrors, nothing insecure).
//!
//! ```toml
//! unqualified-search-registries = ["docker.io"]
//! [[registry]]
//! location = "registry.local:5000"
//! insecure = true
//! mirrors = ["mirror.local:5000"]
//! ```
use std::path::Path;

use serde::Deserialize;

use super::RegistryError;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RegistriesConfig {
    #[serde(default = "default_search")]
    pub unqualified_search_registries: Vec<String>,
    #[serde(default, rename = "registry")]
    pub registries: Vec<RegistryEntry>,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RegistryEntry {
    /// `host[:port]` the entry is about.
    pub location: String,
    /// Plain HTTP is allowed for it (after HTTPS fails).
    #[serde(default)]
    pub insecure: bool,
    /// Tried first, in order, when pulling (each `host[:port]`).
    #[serde(default)]
    pub mirrors: Vec<String>,
}

fn default_search() -> Vec<String> {
    vec![super::name::DOCKER_HUB.to_string()]
}

impl Default for RegistriesConfig {
    fn default() -> Self {
        RegistriesConfig {
            unqualified_search_registries: default_search(),
            registries: Vec::new(),
        }
    }
}

impl RegistriesConfig {
    /// The configuration for a keel root: its own file, else the system one, else defaults.
    pub fn load(root: &Path) -> Result<RegistriesConfig, RegistryError> {
        for p in [
            root.join("registries.toml"),
            Path::new("/etc/keel/registries.toml").to_path_buf(),
        ] {
            match std::fs::read_to_string(&p) {
                Ok(text) => return Self::parse(&text, &p.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(RegistryError::Config {
                        file: p.display().to_string(),
                        why: e.to_string(),
                    })
                }
            }
        }
        Ok(RegistriesConfig::default())
    }

    pub fn parse(text: &str, file: &str) -> Result<RegistriesConfig, RegistryError> {
        let cfg: RegistriesConfig = toml::from_str(text).map_err(|e| RegistryError::Config {
            file: file.to_string(),
            why: e.message().to_string(),
        })?;
        if cfg.unqualified_search_registries.is_empty() {
            return Err(RegistryError::Config {
                file: file.to_string(),
                why: "unqualified-search-registries is empty; list at least one registry (e.g. [\"docker.io\"])".into(),
            });
        }
        Ok(cfg)
    }

    fn entry(&self, host: &str) -> Option<&RegistryEntry> {
        self.registries.iter().find(|e| e.location == host)
    }

    /// Whether plain HTTP is allowed for `host`: localhost always (as docker), else an
    /// `insecure = true` entry.
    pub fn is_insecure(&self, host: &str) -> bool {
        is_local(host) || self.entry(host).is_some_and(|e| e.insecure)
    }

    /// Where to fetch `host`'s content from: its mirrors first, then itself.
    pub fn endpoints(&self, host: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .entry(host)
            .map(|e| e.mirrors.clone())
            .unwrap_or_default();
        v.push(host.to_string());
        v
    }
}

/// A loopback registry (`localhost`, `127.x.y.z`, `[::1]`, with any port).
pub fn is_local(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.starts_with("::1]"),
        None => host.split(':').next().unwrap_or(host),
    };
    name == "localhost" || name.starts_with("127.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_parse_and_answer() {
        let cfg = RegistriesConfig::parse(
            "unqualified-search-registries = [\"quay.io\", \"docker.io\"]\n\
             [[registry]]\nlocation = \"reg.local:5000\"\ninsecure = true\nmirrors = [\"m.local\"]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(cfg.unqualified_search_registries, ["quay.io", "docker.io"]);
        assert!(cfg.is_insecure("reg.local:5000"));
        assert!(!cfg.is_insecure("reg.local"));
        assert_eq!(
            cfg.endpoints("reg.local:5000"),
            ["m.local", "reg.local:5000"]
        );
        assert_eq!(cfg.endpoints("quay.io"), ["quay.io"]);
        assert_eq!(
            RegistriesConfig::parse("", "t").unwrap(),
            RegistriesConfig::default()
        );
        let bad = RegistriesConfig::parse("unqualified-search-registries = []", "t.toml");
        assert!(bad.unwrap_err().to_string().contains("t.toml"));
        assert!(RegistriesConfig::parse("typo = 1", "t.toml").is_err());
    }

    #[test]
    fn loopback_hosts_are_local() {
        for (h, want) in [
            ("localhost", true),
            ("localhost:5000", true),
            ("127.0.0.1:443", true),
            ("[::1]:5000", true),
            ("localhost.example.com", false),
            ("registry-1.docker.io", false),
            ("10.0.0.1:5000", false),
        ] {
            assert_eq!(is_local(h), want, "{h}");
        }
    }
}
