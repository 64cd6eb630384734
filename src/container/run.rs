//! `keel run` as a library: a `RunRequest` (the flags, serialisable so a detached
//! container's supervisor can pick it up) is validated up front — every flag error is
//! reported before anything is created — and turned into the runtime's `RunOptions`.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::flags::{FlagError, VolumeSpec};
use super::ports::PortSpec;
use crate::runtime::spec::{parse_memory, Limits, NetworkMode, SpecError};

/// What the user asked `keel run` for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunRequest {
    pub image: String,
    pub command: Vec<String>,
    pub name: Option<String>,
    pub rm: bool,
    pub detach: bool,
    pub interactive: bool,
    pub tty: bool,
    /// `KEY=VALUE` entries, already resolved from `-e` and `--env-file`.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Option<String>,
    pub volumes: Vec<String>,
    pub tmpfs: Vec<String>,
    pub publish: Vec<String>,
    pub publish_all: bool,
    pub network: Option<String>,
    pub hostname: Option<String>,
    pub read_only: bool,
    pub memory: Option<String>,
    pub pids_limit: Option<u64>,
    pub cpus: Option<f64>,
    pub isolation: Option<String>,
    pub storage_driver: Option<String>,
    pub runtime: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("invalid --network value {0:?}: use host, none or private")]
    Network(String),
    #[error("-p/-P need a private network namespace; drop them with --network {0}")]
    PortsWithoutNetwork(String),
    #[error("-p/-P need a network namespace, which --isolation chroot does not make; use --isolation namespaces or oci (a chroot container shares the host's network: reach its ports directly)")]
    PortsWithChroot,
    #[error("invalid --pids-limit 0: give a positive number of processes")]
    Pids,
    #[error("-d cannot be combined with -i or -t: a detached container has no terminal; drop -i/-t or -d")]
    InteractiveDetached,
    #[error("the :ro volume source {0} does not exist; create it first or fix the path")]
    MissingRoSource(PathBuf),
}

/// A request with every flag parsed.
#[derive(Debug, Clone)]
pub struct Validated {
    pub volumes: Vec<VolumeSpec>,
    pub ports: Vec<PortSpec>,
    pub network: NetworkMode,
    pub limits: Limits,
}

/// Parses every flag of `req`; nothing is created or started.
pub fn validate(req: &RunRequest) -> Result<Validated, RequestError> {
    let volumes = req
        .volumes
        .iter()
        .map(|v| VolumeSpec::parse(v))
        .collect::<Result<Vec<_>, _>>()?;
    for v in &volumes {
        if let VolumeSpec::Bind { src, ro: true, .. } = v {
            if !src.exists() {
                return Err(RequestError::MissingRoSource(src.clone()));
            }
        }
    }
    let ports = req
        .publish
        .iter()
        .map(|p| PortSpec::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let network = match req.network.as_deref().unwrap_or("private") {
        "host" => NetworkMode::Host,
        "none" => NetworkMode::None,
        "private" | "bridge" | "default" => NetworkMode::Private,
        other => return Err(RequestError::Network(other.to_string())),
    };
    if (!ports.is_empty() || req.publish_all) && req.isolation.as_deref() == Some("chroot") {
        return Err(RequestError::PortsWithChroot);
    }
    if (!ports.is_empty() || req.publish_all) && network != NetworkMode::Private {
        return Err(RequestError::PortsWithoutNetwork(
            req.network.clone().unwrap_or_default(),
        ));
    }
    let memory_bytes = req.memory.as_deref().map(parse_memory).transpose()?;
    if req.pids_limit == Some(0) {
        return Err(RequestError::Pids);
    }
    if let Some(c) = req.cpus {
        if !(c > 0.0 && c.is_finite()) {
            return Err(SpecError::BadCpus(c).into());
        }
    }
    if req.detach && (req.interactive || req.tty) {
        return Err(RequestError::InteractiveDetached);
    }
    Ok(Validated {
        volumes,
        ports,
        network,
        limits: Limits {
            memory_bytes,
            pids: req.pids_limit,
            cpus: req.cpus,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> RunRequest {
        RunRequest {
            image: "bb".into(),
            ..Default::default()
        }
    }

    #[test]
    fn bad_flags_fail_before_anything_starts_naming_the_flag() {
        let cases: Vec<(RunRequest, &str)> = vec![
            (
                RunRequest {
                    publish: vec!["80:x".into()],
                    ..req()
                },
                "invalid -p value \"80:x\"",
            ),
            (
                RunRequest {
                    volumes: vec!["rel:dst".into()],
                    ..req()
                },
                "invalid -v value",
            ),
            (
                RunRequest {
                    volumes: vec!["/nonexistent/keel:/x:ro".into()],
                    ..req()
                },
                "does not exist",
            ),
            (
                RunRequest {
                    memory: Some("12q".into()),
                    ..req()
                },
                "invalid memory size \"12q\"",
            ),
            (
                RunRequest {
                    network: Some("bridge0".into()),
                    ..req()
                },
                "invalid --network value",
            ),
            (
                RunRequest {
                    network: Some("host".into()),
                    publish: vec!["80".into()],
                    ..req()
                },
                "-p/-P need a private network",
            ),
            (
                RunRequest {
                    cpus: Some(-1.0),
                    ..req()
                },
                "invalid --cpus",
            ),
            (
                RunRequest {
                    pids_limit: Some(0),
                    ..req()
                },
                "--pids-limit",
            ),
        ];
        for (r, want) in cases {
            let e = validate(&r).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
        let ok = validate(&RunRequest {
            publish: vec!["8080:80".into()],
            memory: Some("32m".into()),
            ..req()
        })
        .unwrap();
        assert_eq!(ok.limits.memory_bytes, Some(32 << 20));
        assert_eq!(ok.network, NetworkMode::Private);
    }
}
