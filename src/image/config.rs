//! The image config as a type: the OCI image configuration plus the Docker extensions keel
//! reads and writes (`Healthcheck`, `Shell`, `OnBuild`, `ArgsEscaped`), (de)serialised to
//! the JSON docker writes. Fields keel does not know are kept as they came (`extra`), so a
//! base image's config survives a build unchanged where no instruction touched it.
//!
//! A config whose known fields have the wrong type does not deserialise: callers report
//! it naming the image, never fall back to an empty config.
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `null` reads as the empty value (docker writes `"history": null` and the like).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// An empty JSON object: the value type of `ExposedPorts` and `Volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Docker's `HealthConfig`; durations in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", "…"]`.
    #[serde(default, deserialize_with = "nullable")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// The `config` object: how a container of the image runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Empty>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// Fields keel does not interpret (`Hostname`, `Image`, …), kept as they came.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `rootfs`: the layers' uncompressed digests, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub typ: String,
    #[serde(default, deserialize_with = "nullable")]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> RootFs {
        RootFs {
            typ: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// The `comment` of every history entry a Dockerfile build adds, as BuildKit's Dockerfile
/// frontend writes it (`dockerfile2llb/convert.go`: `historyComment`), so tools that tell
/// a BuildKit image's history by it (`docker history`, dive) read keel's alike.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// One `history` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// An image config (`application/vnd.oci.image.config.v1+json`) with docker's fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub config: RunConfig,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, deserialize_with = "nullable")]
    pub history: Vec<History>,
    /// Top-level fields keel does not interpret (`os.version`, `container`, …).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Why a config could not be read or converted.
#[derive(Debug, thiserror::Error)]
#[error("the image config does not fit the OCI/docker config schema: {0}; rebuild or re-import the image")]
pub struct ConfigError(String);

impl ImageConfig {
    /// An empty config for the host (the start of `FROM scratch`).
    pub fn scratch() -> ImageConfig {
        ImageConfig {
            architecture: super::host_arch().to_string(),
            os: "linux".into(),
            ..Default::default()
        }
    }

    /// Parses a config blob.
    pub fn from_slice(bytes: &[u8]) -> Result<ImageConfig, ConfigError> {
        serde_json::from_slice(bytes).map_err(|e| ConfigError(e.to_string()))
    }

    /// The same document as oci-spec's type (for the store's records).
    pub fn to_oci(&self) -> Result<oci_spec::image::ImageConfiguration, ConfigError> {
        let v = serde_json::to_value(self).expect("configs serialise");
        serde_json::from_value(v).map_err(|e| ConfigError(e.to_string()))
    }
}

impl RunConfig {
    /// As oci-spec's `Config`, which the runtime plans containers from.
    pub fn to_oci(&self) -> Result<oci_spec::image::Config, ConfigError> {
        let v = serde_json::to_value(self).expect("configs serialise");
        serde_json::from_value(v).map_err(|e| ConfigError(e.to_string()))
    }

    /// `Env` as a list (empty when unset).
    pub fn env_list(&self) -> &[String] {
        self.env.as_deref().unwrap_or_default()
    }

    /// Sets `key=value`: an earlier value of `key` is replaced where it stands (BuildKit's
    /// `addEnv`), a new key goes last.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let env = self.env.get_or_insert_with(Vec::new);
        let entry = format!("{key}={value}");
        match env.iter().position(|e| e.split('=').next() == Some(key)) {
            Some(i) => env[i] = entry,
            None => env.push(entry),
        }
    }

    /// Whether the environment sets `key`.
    pub fn has_env(&self, key: &str) -> bool {
        self.env_list()
            .iter()
            .any(|e| e.split('=').next() == Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_env_replaces_a_value_where_it_stands() {
        let mut c = RunConfig::default();
        for (k, v) in [("A", "1"), ("B", "2"), ("A", "3"), ("C", "x=y")] {
            c.set_env(k, v);
        }
        assert_eq!(c.env_list(), ["A=3", "B=2", "C=x=y"]);
        assert!(c.has_env("C") && !c.has_env("D"));
    }

    #[test]
    fn docker_configs_round_trip_with_unknown_fields() {
        let text = r#"{"architecture":"amd64","config":{"Cmd":["sh"],"Env":null,"ExposedPorts":{"80/tcp":{}},"Healthcheck":{"Interval":30000000000,"Retries":2,"Test":["CMD-SHELL","true"]},"Hostname":"","OnBuild":["RUN x"],"Shell":["/bin/sh","-c"]},"container":"abc","created":"2024-01-01T00:00:00Z","history":[{"created_by":"x","empty_layer":true}],"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#;
        let c = ImageConfig::from_slice(text.as_bytes()).unwrap();
        assert_eq!(
            c.config.on_build.as_deref(),
            Some(&["RUN x".to_string()][..])
        );
        assert_eq!(c.config.healthcheck.as_ref().unwrap().retries, Some(2));
        assert!(c.history[0].empty_layer);
        let back = serde_json::to_string(&serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, text.replace(r#""Env":null,"#, ""));
        assert!(c.to_oci().is_ok());
    }

    #[test]
    fn wrong_types_are_errors_not_empty_configs() {
        for bad in [
            r#"{"architecture":"amd64","os":"linux","config":{"Env":"PATH=/bin"}}"#,
            r#"{"architecture":"amd64","os":"linux","config":{"User":7}}"#,
            r#"{"os":"linux"}"#,
            r#"not json"#,
        ] {
            let e = ImageConfig::from_slice(bad.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("does not fit"), "{bad}: {e}");
        }
    }
}
