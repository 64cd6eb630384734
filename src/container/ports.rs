//! Port publishing: `-p` specs, `-P`, and the plan of host listeners → container ports.
//! Four flavours: `-p 8080:80` (STATIC1→STATIC2), `-p 80:80` (STATIC→STATIC), `-p 80`
//! (RANDOM→STATIC) and `-p 0:0` / `-P` without EXPOSE (RANDOM→RANDOM: keel picks the
//! container port and passes it as `PORT`). Parsing and planning are pure; binding the
//! host sockets happens before the container starts so a taken port fails early.
use std::net::{IpAddr, SocketAddr, TcpListener};

use super::flags::FlagError;
use super::PortMapping;

/// One `-p` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub host_ip: Option<IpAddr>,
    /// 0 = a random free host port.
    pub host_port: u16,
    /// 0 = a port keel picks inside the container (passed as `PORT`).
    pub container_port: u16,
}

fn bad(v: &str, why: impl Into<String>) -> FlagError {
    FlagError {
        flag: "-p",
        value: v.to_string(),
        why: why.into(),
    }
}

fn port(v: &str, s: &str) -> Result<u16, FlagError> {
    s.parse::<u16>()
        .map_err(|_| bad(v, format!("{s:?} is not a port number (0-65535)")))
}

impl PortSpec {
    pub fn parse(v: &str) -> Result<PortSpec, FlagError> {
        let (body, proto) = match v.rsplit_once('/') {
            Some((b, p)) => (b, p),
            None => (v, "tcp"),
        };
        if proto != "tcp" {
            return Err(bad(
                v,
                format!("protocol {proto:?} is not supported; keel publishes tcp ports"),
            ));
        }
        // [IP:]HOST:CONTAINER or CONTAINER; an IPv6 address is written in brackets.
        let (ip, rest) = if let Some(stripped) = body.strip_prefix('[') {
            let (ip, rest) = stripped
                .split_once("]:")
                .ok_or_else(|| bad(v, "expected [IPv6]:HOST:CONTAINER"))?;
            (Some(ip), rest)
        } else if body.matches(':').count() == 2 {
            let (ip, rest) = body.split_once(':').expect("two colons");
            (Some(ip), rest)
        } else {
            (None, body)
        };
        let host_ip = match ip {
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| bad(v, format!("{ip:?} is not an IP address")))?,
            ),
            None => None,
        };
        let (host_port, container_port) = match rest.split_once(':') {
            Some((h, c)) => (if h.is_empty() { 0 } else { port(v, h)? }, port(v, c)?),
            None => (0, port(v, rest)?),
        };
        if container_port == 0 && host_port != 0 {
            return Err(bad(
                v,
                "a random container port (0) needs a random host port too: use -p 0:0",
            ));
        }
        Ok(PortSpec {
            host_ip,
            host_port,
            container_port,
        })
    }
}

/// A host listener bound for a container port.
#[derive(Debug)]
pub struct Published {
    pub listener: TcpListener,
    pub mapping: PortMapping,
}

/// Turns specs (and `-P` over the image's exposed ports) into mappings; a container port
/// of 0 becomes `private_port`, which the caller passes to the process as `PORT`.
pub fn plan(
    specs: &[PortSpec],
    publish_all: bool,
    exposed: &[u16],
    private_port: u16,
) -> Vec<PortSpec> {
    let mut out: Vec<PortSpec> = specs
        .iter()
        .map(|s| PortSpec {
            container_port: if s.container_port == 0 {
                private_port
            } else {
                s.container_port
            },
            ..s.clone()
        })
        .collect();
    if publish_all {
        if exposed.is_empty() {
            out.push(PortSpec {
                host_ip: None,
                host_port: 0,
                container_port: private_port,
            });
        }
        for &p in exposed {
            if !out.iter().any(|s| s.container_port == p) {
                out.push(PortSpec {
                    host_ip: None,
                    host_port: 0,
                    container_port: p,
                });
            }
        }
    }
    out
}

/// Whether `PORT` must be set for the process (some mapping asked keel to choose).
pub fn needs_private_port(specs: &[PortSpec], publish_all: bool, exposed: &[u16]) -> bool {
    specs.iter().any(|s| s.container_port == 0) || (publish_all && exposed.is_empty())
}

/// The image's EXPOSE entries that are tcp ports (`80/tcp`, `8080`).
pub fn exposed_tcp(exposed: &[String]) -> Vec<u16> {
    let mut v: Vec<u16> = exposed
        .iter()
        .filter_map(|e| {
            let (p, proto) = e.split_once('/').unwrap_or((e, "tcp"));
            (proto == "tcp").then(|| p.parse().ok()).flatten()
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("host port {addr} is already in use; pick another host port (-p OTHER:{container}) or let keel choose one (-p {container})")]
    InUse { addr: SocketAddr, container: u16 },
    #[error("host port {addr} is below {start}, which only root may bind (net.ipv4.ip_unprivileged_port_start = {start}); publish on a port of {start} or above (-p {alt}:{container}), or lower the sysctl (docs/rootless.md)")]
    Privileged {
        addr: SocketAddr,
        start: u16,
        alt: u32,
        container: u16,
    },
    #[error("binding host port {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds every host listener now, before anything starts.
pub fn bind(plan: &[PortSpec]) -> Result<Vec<Published>, PortError> {
    let mut out = Vec::new();
    for s in plan {
        let addr = SocketAddr::new(s.host_ip.unwrap_or(IpAddr::from([0, 0, 0, 0])), s.host_port);
        let listener = TcpListener::bind(addr).map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => PortError::InUse {
                addr,
                container: s.container_port,
            },
            std::io::ErrorKind::PermissionDenied => PortError::Privileged {
                addr,
                start: crate::sys::userns::unprivileged_port_start(),
                alt: 8000 + u32::from(s.host_port),
                container: s.container_port,
            },
            _ => PortError::Bind { addr, source },
        })?;
        let local = listener
            .local_addr()
            .map_err(|source| PortError::Bind { addr, source })?;
        out.push(Published {
            listener,
            mapping: PortMapping {
                host_ip: local.ip().to_string(),
                host_port: local.port(),
                container_port: s.container_port,
                proto: "tcp".into(),
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_flavours_and_addresses_parse() {
        let p = |v| PortSpec::parse(v).unwrap();
        assert_eq!(
            p("8080:80"),
            PortSpec {
                host_ip: None,
                host_port: 8080,
                container_port: 80
            }
        );
        assert_eq!(
            p("80:80"),
            PortSpec {
                host_ip: None,
                host_port: 80,
                container_port: 80
            }
        );
        assert_eq!(
            p("80"),
            PortSpec {
                host_ip: None,
                host_port: 0,
                container_port: 80
            }
        );
        assert_eq!(
            p("0:0"),
            PortSpec {
                host_ip: None,
                host_port: 0,
                container_port: 0
            }
        );
        assert_eq!(
            p("127.0.0.1:8080:80/tcp").host_ip,
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(p("127.0.0.1::80").host_port, 0);
        assert_eq!(p("[::1]:8080:80").host_ip, Some("::1".parse().unwrap()));
        for bad in ["x", "80:x", "70000", "80/udp", "8080:0", "1.2.3:80:80"] {
            assert!(
                PortSpec::parse(bad)
                    .unwrap_err()
                    .to_string()
                    .starts_with("invalid -p value"),
                "{bad}"
            );
        }
    }

    #[test]
    fn planning_fills_random_container_ports_and_publish_all() {
        let specs = [PortSpec::parse("0:0").unwrap()];
        assert!(needs_private_port(&specs, false, &[]));
        assert_eq!(plan(&specs, false, &[], 41234)[0].container_port, 41234);
        let all = plan(&[], true, &[80, 443], 1);
        assert_eq!(
            all.iter().map(|s| s.container_port).collect::<Vec<_>>(),
            [80, 443]
        );
        assert!(all.iter().all(|s| s.host_port == 0));
        assert_eq!(plan(&[], true, &[], 5000)[0].container_port, 5000);
        assert_eq!(
            exposed_tcp(&["80/tcp".into(), "53/udp".into(), "8080".into()]),
            [80, 8080]
        );
    }

    #[test]
    fn a_taken_host_port_fails_before_anything_starts() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let spec = PortSpec::parse(&format!("127.0.0.1:{port}:80")).unwrap();
        let e = bind(&[spec]).unwrap_err();
        assert!(e.to_string().contains("already in use"), "{e}");
        let ok = bind(&[PortSpec::parse("127.0.0.1::80").unwrap()]).unwrap();
        assert_ne!(ok[0].mapping.host_port, 0);
    }
}
