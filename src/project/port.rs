//! Renderers for `keel port NAME --format env|make|json|properties`: the live host-port
//! mappings of a running container, in the calling tool's own syntax, so a Makefile,
//! Maven (properties) or a Jenkins/Buildbot step can reach a service published on a
//! random host port.
//!
//! Pure: the engine supplies the mappings. Variable names are `<NAME>_PORT_<port>_<PROTO>`
//! (docker's link-variable shape) in env and make syntax, `<name>.port.<port>.<proto>` in
//! properties. `_ADDR` is an address a client can connect to: a wildcard bind (0.0.0.0,
//! ::, empty) is reported as the loopback address of its family.
use std::fmt::Write;

/// One published port: `container` is "PORT/PROTO" (e.g. "8080/tcp").
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PortMapping {
    pub container: String,
    pub host_ip: String,
    pub host_port: u16,
}

/// Output syntax of `keel port --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PortFormat {
    /// `KEY=VALUE` lines for `eval`, `set -a; . file` or an env file.
    Env,
    /// `KEY := VALUE` lines for `include` or `$(eval $(shell …))`.
    Make,
    /// A JSON array of every mapping.
    Json,
    /// Java properties (`-Dkey=value`, properties-maven-plugin).
    Properties,
}

fn connect_addr(ip: &str) -> &str {
    match ip {
        "" | "0.0.0.0" => "127.0.0.1",
        "::" | "[::]" => "::1",
        ip => ip,
    }
}

fn split(container: &str) -> (&str, &str) {
    container.split_once('/').unwrap_or((container, "tcp"))
}

fn ident(s: &str, upper: bool) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                if upper {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            } else if upper {
                '_'
            } else {
                '.'
            }
        })
        .collect()
}

/// Renders `mappings` of container `name`. For env/make/properties the first binding of
/// each container port wins (an IPv4 and an IPv6 binding share a port); json lists all.
pub fn render_ports(name: &str, mappings: &[PortMapping], format: PortFormat) -> String {
    let mut out = String::new();
    if format == PortFormat::Json {
        let mut s = serde_json::to_string_pretty(mappings).expect("plain data serialises");
        s.push('\n');
        return s;
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in mappings {
        if !seen.insert(m.container.clone()) {
            continue;
        }
        let (port, proto) = split(&m.container);
        let addr = connect_addr(&m.host_ip);
        let hostport = if addr.contains(':') {
            format!("[{addr}]:{}", m.host_port)
        } else {
            format!("{addr}:{}", m.host_port)
        };
        match format {
            PortFormat::Env | PortFormat::Make => {
                let key = format!("{}_PORT_{}_{}", ident(name, true), port, ident(proto, true));
                let op = if format == PortFormat::Env {
                    "="
                } else {
                    " := "
                };
                let _ = writeln!(out, "{key}{op}{hostport}");
                let _ = writeln!(out, "{key}_ADDR{op}{addr}");
                let _ = writeln!(out, "{key}_PORT{op}{}", m.host_port);
            }
            PortFormat::Properties => {
                let key = format!(
                    "{}.port.{}.{}",
                    ident(name, false),
                    port,
                    ident(proto, false)
                );
                let _ = writeln!(out, "{key}={}", hostport.replace(':', "\\:"));
                let _ = writeln!(out, "{key}.addr={}", addr.replace(':', "\\:"));
                let _ = writeln!(out, "{key}.port={}", m.host_port);
            }
            PortFormat::Json => unreachable!("handled above"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: &str, ip: &str, p: u16) -> PortMapping {
        PortMapping {
            container: c.into(),
            host_ip: ip.into(),
            host_port: p,
        }
    }

    #[test]
    fn formats() {
        let maps = [
            m("8080/tcp", "0.0.0.0", 32768),
            m("8080/tcp", "::", 32768),
            m("53/udp", "127.0.0.1", 5353),
        ];
        let cases = [
            (
                PortFormat::Env,
                "WEB_APP_PORT_8080_TCP=127.0.0.1:32768\nWEB_APP_PORT_8080_TCP_ADDR=127.0.0.1\nWEB_APP_PORT_8080_TCP_PORT=32768\n\
                 WEB_APP_PORT_53_UDP=127.0.0.1:5353\nWEB_APP_PORT_53_UDP_ADDR=127.0.0.1\nWEB_APP_PORT_53_UDP_PORT=5353\n",
            ),
            (
                PortFormat::Make,
                "WEB_APP_PORT_8080_TCP := 127.0.0.1:32768\nWEB_APP_PORT_8080_TCP_ADDR := 127.0.0.1\nWEB_APP_PORT_8080_TCP_PORT := 32768\n\
                 WEB_APP_PORT_53_UDP := 127.0.0.1:5353\nWEB_APP_PORT_53_UDP_ADDR := 127.0.0.1\nWEB_APP_PORT_53_UDP_PORT := 5353\n",
            ),
            (
                PortFormat::Properties,
                "web.app.port.8080.tcp=127.0.0.1\\:32768\nweb.app.port.8080.tcp.addr=127.0.0.1\nweb.app.port.8080.tcp.port=32768\n\
                 web.app.port.53.udp=127.0.0.1\\:5353\nweb.app.port.53.udp.addr=127.0.0.1\nweb.app.port.53.udp.port=5353\n",
            ),
        ];
        for (f, want) in cases {
            assert_eq!(render_ports("web-app", &maps, f), want, "{f:?}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&render_ports("web-app", &maps, PortFormat::Json)).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 3);
        assert_eq!(json[1]["host_ip"], "::");
        assert_eq!(json[2]["host_port"], 5353);
        assert_eq!(render_ports("x", &[], PortFormat::Env), "");
        assert_eq!(render_ports("x", &[], PortFormat::Json), "[]\n");
        assert_eq!(
            render_ports("x", &[m("80", "::1", 1)], PortFormat::Env),
            "X_PORT_80_TCP=[::1]:1\nX_PORT_80_TCP_ADDR=::1\nX_PORT_80_TCP_PORT=1\n"
        );
    }
}
