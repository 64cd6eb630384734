//! `keel run` as a library: a `RunRequest` (the flags, serialisable so a detached
//! container's supervisor can pick it up) is validated up front — every flag error is
//! reported before anything is created — and turned into the runtime's `RunOptions`.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::flags::{FlagError, VolumeSpec};
use super::ports::PortSpec;
use crate::runtime::etc::{self, EtcError, EtcOptions};
use crate::runtime::spec::{parse_memory, Limits, NetworkMode, Seccomp, SpecError};

/// Docker's smallest `--memory` (a smaller limit kills the process before it starts).
pub const MIN_MEMORY: u64 = 6 << 20;

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
    /// `--security-opt` values (`seccomp=unconfined`, `no-new-privileges`).
    #[serde(default)]
    pub security_opt: Vec<String>,
    /// `--dns`, `--dns-search`, `--dns-option`, `--add-host`.
    #[serde(default)]
    pub etc: EtcOptions,
    /// `keel exec-in`'s mapped user: a passwd(5) and a group(5) line for the tree owner
    /// (from `KEEL_RUN_ADD_PASSWD` / `KEEL_RUN_ADD_GROUP` in keel's environment).
    #[serde(default)]
    pub add_passwd: Option<String>,
    #[serde(default)]
    pub add_group: Option<String>,
    /// `--restart` policy text (`no`, `on-failure[:N]`, `always`, `unless-stopped`).
    #[serde(default)]
    pub restart: Option<String>,
    /// `--init` (true) / `--no-init` (false); unset means keel's default, an init.
    #[serde(default)]
    pub init: Option<bool>,
    /// `--platform`: which manifest of a multi-platform image (default: the host's).
    #[serde(default)]
    pub platform: Option<crate::platform::Platform>,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Etc(#[from] EtcError),
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
    #[error("invalid --memory value {0:?}: Minimum memory limit allowed is 6MB")]
    MemoryTooSmall(String),
    #[error("invalid --cpus value {value}: range of CPUs is from 0.01 to {max}.00, as there are only {max} CPUs available")]
    CpusRange { value: f64, max: usize },
    #[error("invalid --security-opt {0:?}: use seccomp=unconfined, seccomp=default or no-new-privileges (keel reads no custom seccomp profiles)")]
    SecurityOpt(String),
    #[error(transparent)]
    Restart(#[from] super::restart::RestartError),
    #[error("--init needs --isolation namespaces: under oci the runtime makes the command PID 1 and keel adds no init; drop --init or use --isolation namespaces")]
    InitWithOci,
    #[error("{flag} cannot be honoured by --isolation chroot, which has no {what} namespace; use --isolation namespaces or --isolation oci")]
    Chroot { flag: String, what: &'static str },
}

/// A request with every flag parsed.
#[derive(Debug, Clone)]
pub struct Validated {
    pub volumes: Vec<VolumeSpec>,
    pub ports: Vec<PortSpec>,
    pub network: NetworkMode,
    pub limits: Limits,
    pub seccomp: Seccomp,
    /// The checked `--dns*`/`--add-host` flags (`host-gateway` resolved).
    pub etc: EtcOptions,
    pub restart: super::restart::RestartPolicy,
}

/// Parses every flag of `req`; nothing is created or started.
pub fn validate(req: &RunRequest) -> Result<Validated, RequestError> {
    let volumes = check_mounts(req)?;
    let (ports, network) = check_network(req)?;
    if req.isolation.as_deref() == Some("chroot") {
        check_chroot(req)?;
    }
    let limits = check_limits(req)?;
    let seccomp = parse_security_opts(&req.security_opt)?;
    let restart = super::restart::RestartPolicy::parse(req.restart.as_deref().unwrap_or("no"))?;
    if req.rm && restart != super::restart::RestartPolicy::No {
        return Err(
            super::restart::RestartError::WithRm(req.restart.clone().unwrap_or_default()).into(),
        );
    }
    if req.init == Some(true) && req.isolation.as_deref() == Some("oci") {
        return Err(RequestError::InitWithOci);
    }
    if req.detach && (req.interactive || req.tty) {
        return Err(RequestError::InteractiveDetached);
    }
    let etc = etc::validate(&req.etc, network)?;
    if let Some(line) = &req.add_passwd {
        etc::mapped_user(line)?;
    }
    Ok(Validated {
        etc,
        volumes,
        ports,
        network,
        limits,
        seccomp,
        restart,
    })
}

/// `-v`, `--tmpfs` and `-w`: parsed, a read-only bind's source present, every
/// destination one keel may mount on — checked here, so nothing is created for a bad one.
fn check_mounts(req: &RunRequest) -> Result<Vec<VolumeSpec>, RequestError> {
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
    for v in &volumes {
        crate::runtime::spec::dest(&super::launch::volume_destination(v))?;
    }
    for t in &req.tmpfs {
        crate::runtime::spec::dest(t)?;
    }
    if let Some(w) = req.workdir.as_deref().filter(|w| !w.is_empty()) {
        if !w.starts_with('/') {
            return Err(SpecError::RelativeWorkdir(w.to_string()).into());
        }
    }
    Ok(volumes)
}

/// `--network` and `-p`/`-P`: published ports need a network of the container's own
/// (not chroot isolation, not `host` or `none`).
fn check_network(req: &RunRequest) -> Result<(Vec<PortSpec>, NetworkMode), RequestError> {
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
    let publishes = !ports.is_empty() || req.publish_all;
    if publishes && req.isolation.as_deref() == Some("chroot") {
        return Err(RequestError::PortsWithChroot);
    }
    if publishes && network != NetworkMode::Private {
        return Err(RequestError::PortsWithoutNetwork(
            req.network.clone().unwrap_or_default(),
        ));
    }
    Ok((ports, network))
}

/// `--memory`, `--pids-limit` and `--cpus`, in the ranges the kernel accepts.
fn check_limits(req: &RunRequest) -> Result<Limits, RequestError> {
    let memory_bytes = req.memory.as_deref().map(parse_memory).transpose()?;
    if let (Some(m), Some(text)) = (memory_bytes, &req.memory) {
        if m < MIN_MEMORY {
            return Err(RequestError::MemoryTooSmall(text.clone()));
        }
    }
    if req.pids_limit == Some(0) {
        return Err(RequestError::Pids);
    }
    if let Some(c) = req.cpus {
        if !(c > 0.0 && c.is_finite()) {
            return Err(SpecError::BadCpus(c).into());
        }
        let max = std::thread::available_parallelism().map_or(1, |n| n.get());
        check_cpus(c, max)?;
    }
    Ok(Limits {
        memory_bytes,
        pids: req.pids_limit,
        cpus: req.cpus,
    })
}

/// Docker's `--cpus` range: 0.01 (a 1 ms CFS quota, the kernel's minimum) up to the
/// number of CPUs this host has.
fn check_cpus(value: f64, max: usize) -> Result<(), RequestError> {
    if value < 0.01 || value > max as f64 {
        return Err(RequestError::CpusRange { value, max });
    }
    Ok(())
}

/// `--security-opt`: `seccomp=unconfined|default`, `no-new-privileges[=true]` (keel
/// always sets no_new_privs); anything else is refused rather than ignored.
fn parse_security_opts(opts: &[String]) -> Result<Seccomp, RequestError> {
    let mut seccomp = Seccomp::Default;
    for o in opts {
        match o.replace(':', "=").as_str() {
            "seccomp=unconfined" => seccomp = Seccomp::Unconfined,
            "seccomp=default" | "seccomp=builtin" => seccomp = Seccomp::Default,
            "no-new-privileges" | "no-new-privileges=true" => {}
            _ => return Err(RequestError::SecurityOpt(o.clone())),
        }
    }
    Ok(seccomp)
}

/// Flags the chroot backend cannot honour without namespaces are refused by name.
fn check_chroot(req: &RunRequest) -> Result<(), RequestError> {
    let refuse = |flag: String, what| Err(RequestError::Chroot { flag, what });
    match req.network.as_deref() {
        None | Some("host") => {}
        Some(n) => return refuse(format!("--network {n}"), "network"),
    }
    if req.hostname.is_some() {
        return refuse("--hostname".into(), "UTS");
    }
    Ok(())
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
            (
                RunRequest {
                    volumes: vec!["/tmp:/proc/sys".into()],
                    ..req()
                },
                "keel mounts /proc itself",
            ),
            (
                RunRequest {
                    workdir: Some("rel".into()),
                    ..req()
                },
                "the working directory 'rel' is invalid",
            ),
        ];
        for (r, want) in cases {
            let e = validate(&r).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
        let chroot = |network: Option<&str>, hostname: Option<&str>| RunRequest {
            isolation: Some("chroot".into()),
            network: network.map(Into::into),
            hostname: hostname.map(Into::into),
            ..req()
        };
        for (r, want) in [
            (chroot(Some("none"), None), "--network none"),
            (chroot(Some("private"), None), "--network private"),
            (chroot(None, Some("h")), "--hostname"),
        ] {
            let e = validate(&r).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains("--isolation namespaces"),
                "{e}"
            );
        }
        assert!(validate(&chroot(Some("host"), None)).is_ok());
        let e = validate(&RunRequest {
            memory: Some("10".into()),
            ..req()
        })
        .unwrap_err();
        assert!(e
            .to_string()
            .contains("Minimum memory limit allowed is 6MB"));
        assert!(check_cpus(0.0001, 2).is_err() && check_cpus(3.0, 2).is_err());
        assert!(check_cpus(0.01, 2).is_ok() && check_cpus(2.0, 2).is_ok());
        assert_eq!(
            parse_security_opts(&["seccomp=unconfined".into()]).unwrap(),
            Seccomp::Unconfined
        );
        assert!(parse_security_opts(&["apparmor=x".into()]).is_err());
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
