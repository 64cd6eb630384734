//! Port publishing for containers with a private network namespace, without firewall
//! rules: a userland TCP proxy accepts on the host and relays each connection to a socket
//! created inside the container's network namespace (connecting to 127.0.0.1:PORT there).
//!
//! The four `-p` flavours: `8080:80` (static → static), `80:80`, `80` (random host port →
//! 80), `0:0` (random → random: keel picks the container port and passes it as `PORT`).
//! Host ports are bound before the container starts, so a taken port fails early.
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Errors parsing or binding `-p` specs; each names the spec.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("invalid -p {0:?}: expected [HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp], e.g. 8080:80")]
    Syntax(String),
    #[error("invalid -p {spec:?}: {what} {value:?} is not a port number (0-65535)")]
    Port {
        spec: String,
        what: &'static str,
        value: String,
    },
    #[error("-p {spec}: only tcp is supported; drop /{proto}")]
    Proto { spec: String, proto: String },
    #[error("-p {spec}: host address {addr} is already in use; pick another host port")]
    InUse { spec: String, addr: SocketAddr },
    #[error("-p {spec}: binding {addr}: {source}")]
    Bind {
        spec: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("finding a free port: {0}")]
    Free(std::io::Error),
}

/// One `-p` value. Port 0 means "pick one".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    /// The text as given, for messages.
    pub text: String,
}

impl PortSpec {
    /// Parses `[HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp]`; an empty HOSTPORT is random.
    pub fn parse(text: &str) -> Result<PortSpec, PortError> {
        let syntax = || PortError::Syntax(text.to_string());
        let (body, proto) = match text.rsplit_once('/') {
            Some((b, p)) => (b, p),
            None => (text, "tcp"),
        };
        if proto != "tcp" {
            return Err(PortError::Proto {
                spec: text.to_string(),
                proto: proto.to_string(),
            });
        }
        let parts: Vec<&str> = body.split(':').collect();
        let (ip, host, ctr) = match parts.as_slice() {
            [c] => (None, "", *c),
            [h, c] => (None, *h, *c),
            [ip, h, c] => (Some(*ip), *h, *c),
            _ => return Err(syntax()),
        };
        let port = |what: &'static str, v: &str| {
            v.parse::<u16>().map_err(|_| PortError::Port {
                spec: text.to_string(),
                what,
                value: v.to_string(),
            })
        };
        let host_ip = match ip {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(ip) => ip.parse().map_err(|_| syntax())?,
        };
        Ok(PortSpec {
            host_ip,
            host_port: if host.is_empty() {
                0
            } else {
                port("host port", host)?
            },
            container_port: port("container port", ctr)?,
            text: text.to_string(),
        })
    }
}

/// A published port: where the host listens and the port inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub host: SocketAddr,
    pub container_port: u16,
}

/// Bound host listeners; [`PortProxy::start`] relays them into a container.
pub struct PortProxy {
    listeners: Vec<(Arc<TcpListener>, u16)>,
    published: Vec<Published>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// A port that is free on the host right now (the kernel's pick for 127.0.0.1:0).
fn free_port() -> Result<u16, PortError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(PortError::Free)?;
    Ok(l.local_addr().map_err(PortError::Free)?.port())
}

/// Binds every host port (random where 0) and picks container ports where 0, before the
/// container starts. A taken host port is an error naming the spec.
pub fn bind(specs: &[PortSpec]) -> Result<PortProxy, PortError> {
    let mut p = PortProxy {
        listeners: vec![],
        published: vec![],
        stop: Arc::default(),
        threads: vec![],
    };
    for s in specs {
        let ctr = if s.container_port == 0 {
            free_port()?
        } else {
            s.container_port
        };
        let addr = SocketAddr::new(s.host_ip, s.host_port);
        let l = TcpListener::bind(addr).map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => PortError::InUse {
                spec: s.text.clone(),
                addr,
            },
            _ => PortError::Bind {
                spec: s.text.clone(),
                addr,
                source,
            },
        })?;
        let host = l.local_addr().map_err(|source| PortError::Bind {
            spec: s.text.clone(),
            addr,
            source,
        })?;
        p.published.push(Published {
            host,
            container_port: ctr,
        });
        p.listeners.push((Arc::new(l), ctr));
    }
    Ok(p)
}

impl PortProxy {
    /// The host address and container port of each published spec, in order.
    pub fn published(&self) -> &[Published] {
        &self.published
    }

    /// `PORT=N` for the first spec whose container port keel picked (`-p 0:0`).
    pub fn port_env(&self, specs: &[PortSpec]) -> Option<String> {
        specs
            .iter()
            .zip(&self.published)
            .find(|(s, _)| s.container_port == 0)
            .map(|(_, p)| format!("PORT={}", p.container_port))
    }

    /// Starts relaying: each accepted host connection gets a socket created in the network
    /// namespace of process `netns_pid`, connected to 127.0.0.1:CONTAINERPORT there.
    pub fn start(&mut self, netns_pid: i32) {
        for (l, ctr) in &self.listeners {
            let (l, ctr, stop) = (Arc::clone(l), *ctr, Arc::clone(&self.stop));
            self.threads.push(std::thread::spawn(move || {
                for conn in l.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(host_side) = conn else { continue };
                    std::thread::spawn(move || relay(host_side, netns_pid, ctr));
                }
            }));
        }
    }
}

/// Copies bytes both ways until each side closes; a failed inside connect closes the client.
fn relay(mut outside: TcpStream, pid: i32, port: u16) {
    let inside =
        match crate::sys::net::connect_in_netns(pid, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        {
            Ok(s) => s,
            // Nothing listens inside (yet): closing the client is all a proxy can say.
            Err(_) => return,
        };
    let (Ok(mut o2), Ok(mut i2)) = (outside.try_clone(), inside.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut o2, &mut i2);
        let _ = i2.shutdown(Shutdown::Write);
    });
    let mut inside = inside;
    let _ = std::io::copy(&mut inside, &mut outside);
    let _ = outside.shutdown(Shutdown::Write);
    let _ = up.join();
}

impl Drop for PortProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for (l, _) in &self.listeners {
            crate::sys::net::wake_listener(l);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::type_complexity)]
    fn specs_parse() {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let cases: &[(&str, Option<(IpAddr, u16, u16)>)] = &[
            ("8080:80", Some((any, 8080, 80))),
            ("80:80", Some((any, 80, 80))),
            ("80", Some((any, 0, 80))),
            ("0:0", Some((any, 0, 0))),
            (":80", Some((any, 0, 80))),
            ("80/tcp", Some((any, 0, 80))),
            (
                "127.0.0.1:8080:80",
                Some((IpAddr::V4(Ipv4Addr::LOCALHOST), 8080, 80)),
            ),
            (
                "127.0.0.1::80",
                Some((IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 80)),
            ),
            ("80/udp", None),
            ("x:80", None),
            ("70000", None),
            ("1:2:3:4", None),
            ("", None),
            ("nohost:1:2", None),
        ];
        for (t, want) in cases {
            let got = PortSpec::parse(t)
                .ok()
                .map(|p| (p.host_ip, p.host_port, p.container_port));
            assert_eq!(got, *want, "{t:?}");
        }
        let e = PortSpec::parse("8080:http").unwrap_err().to_string();
        assert!(e.contains("container port \"http\""), "{e}");
    }

    #[test]
    fn taken_host_port_fails_before_start() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let spec = PortSpec::parse(&format!("127.0.0.1:{port}:80")).unwrap();
        let e = bind(&[spec]).err().unwrap();
        assert!(matches!(e, PortError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("already in use"), "{e}");
    }

    #[test]
    fn random_ports_are_resolved() {
        let specs = [
            PortSpec::parse("127.0.0.1:0:0").unwrap(),
            PortSpec::parse("127.0.0.1::80").unwrap(),
        ];
        let p = bind(&specs).unwrap();
        assert!(p.published().iter().all(|x| x.host.port() != 0));
        assert_ne!(p.published()[0].container_port, 0);
        assert_eq!(p.published()[1].container_port, 80);
        assert_eq!(
            p.port_env(&specs),
            Some(format!("PORT={}", p.published()[0].container_port))
        );
    }
}
