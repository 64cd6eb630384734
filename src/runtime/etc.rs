//! The per-container `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname`, as Docker
//! makes them: generated from the host's files and the `--dns*`, `--add-host` and
//! `--hostname` flags, written to a directory outside the image (the container's record,
//! or a build step's scratch directory) and bind-mounted over the image's copies, so they
//! are never committed into a layer.
//!
//! The text is planned by pure functions ([`resolv_conf`], [`hosts`]) with table tests;
//! [`write`] is the only part that touches the filesystem. Rules follow Docker's
//! libnetwork `resolvconf` package (read, not copied): in a network namespace of its own
//! a container cannot reach the host's loopback resolvers (127.0.0.0/8, ::1), so they are
//! dropped, and Google's public resolvers stand in when none is left; with
//! `--network host` the host's file is used as it is.
use crate::sys::hostfs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{BindMount, NetworkMode};

/// Docker's fallback resolvers when the host has only loopback ones.
pub const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// The networking flags of `keel run` that shape the files (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcOptions {
    /// `--dns`: nameservers replacing the host's.
    #[serde(default)]
    pub dns: Vec<String>,
    /// `--dns-search`: search domains replacing the host's (`.` means none).
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// `--dns-option`: resolver options replacing the host's.
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// `--add-host NAME:IP` entries, validated.
    #[serde(default)]
    pub add_hosts: Vec<String>,
}

/// A bad `--dns*` or `--add-host` value.
#[derive(Debug, thiserror::Error)]
pub enum EtcError {
    #[error(
        "invalid --add-host value {0:?}: use NAME:IP (for example db:10.0.0.5 or gw:host-gateway)"
    )]
    AddHost(String),
    #[error("invalid --dns value {0:?}: give an IP address such as 1.1.1.1")]
    Dns(String),
    #[error("--add-host {0}:host-gateway needs --network host: a private network namespace has no route to the host")]
    HostGateway(String),
    #[error("invalid passwd line {0:?} for the mapped user: use NAME:x:UID:GID:GECOS:HOME:SHELL")]
    Account(String),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks the flags; `--add-host NAME:host-gateway` becomes `NAME:127.0.0.1` with the
/// host's network (the container *is* on the host) and is refused otherwise.
pub fn validate(opts: &EtcOptions, network: NetworkMode) -> Result<EtcOptions, EtcError> {
    for d in &opts.dns {
        d.parse::<std::net::IpAddr>()
            .map_err(|_| EtcError::Dns(d.clone()))?;
    }
    let mut out = opts.clone();
    out.add_hosts.clear();
    for h in &opts.add_hosts {
        // IPv6 addresses contain ':', so the name is what comes before the first one.
        let (name, ip) = h
            .split_once(':')
            .or_else(|| h.split_once('='))
            .ok_or_else(|| EtcError::AddHost(h.clone()))?;
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(EtcError::AddHost(h.clone()));
        }
        let ip = match ip {
            "host-gateway" if network == NetworkMode::Host => "127.0.0.1".to_string(),
            "host-gateway" => return Err(EtcError::HostGateway(name.to_string())),
            ip => {
                ip.parse::<std::net::IpAddr>()
                    .map_err(|_| EtcError::AddHost(h.clone()))?;
                ip.to_string()
            }
        };
        out.add_hosts.push(format!("{name}:{ip}"));
    }
    Ok(out)
}

fn is_loopback(ns: &str) -> bool {
    ns.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// The container's resolv.conf from the host's text `host` and the flags.
pub fn resolv_conf(host: &str, network: NetworkMode, opts: &EtcOptions) -> String {
    let flagged =
        !(opts.dns.is_empty() && opts.dns_search.is_empty() && opts.dns_options.is_empty());
    if network == NetworkMode::Host && !flagged {
        return host.to_string();
    }
    let (mut servers, mut search, mut options) = (Vec::new(), Vec::new(), Vec::new());
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => servers.extend(words.next().map(str::to_string)),
            Some("search") | Some("domain") => search = words.map(str::to_string).collect(),
            Some("options") => options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    if !opts.dns.is_empty() {
        servers = opts.dns.clone();
    } else if network != NetworkMode::Host {
        servers.retain(|s| !is_loopback(s));
        if servers.is_empty() {
            servers = FALLBACK_NAMESERVERS.iter().map(|s| s.to_string()).collect();
        }
    }
    if !opts.dns_search.is_empty() {
        search = opts.dns_search.clone();
        search.retain(|s| s != ".");
    }
    if !opts.dns_options.is_empty() {
        options = opts.dns_options.clone();
    }
    let mut out = String::new();
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The container's hosts file: the host's with `--network host`, otherwise Docker's
/// localhost block plus the hostname on loopback (the only interface a private network
/// has), then the `--add-host` entries.
pub fn hosts(host: &str, network: NetworkMode, hostname: &str, opts: &EtcOptions) -> String {
    let mut out = if network == NetworkMode::Host {
        let mut h = host.to_string();
        if !h.is_empty() && !h.ends_with('\n') {
            h.push('\n');
        }
        h
    } else {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
             ff02::2\tip6-allrouters\n127.0.0.1\t{hostname}\n"
        )
    };
    for h in &opts.add_hosts {
        if let Some((name, ip)) = h.split_once(':') {
            out.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    out
}

/// The host's resolv.conf text: systemd-resolved's upstream list when the stub file
/// only names its 127.0.0.53 listener (as Docker does), else `/etc/resolv.conf`.
pub fn host_resolv_conf() -> String {
    let main = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let stub_only = main
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .all(|s| s.trim() == "127.0.0.53");
    if stub_only && main.contains("127.0.0.53") {
        if let Ok(up) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return up;
        }
    }
    main
}

/// Writes the three files into `dir` (mode 0644, whatever the umask) and returns the
/// binds that put them at their `/etc` paths. With `--network host` the hostname is the
/// host's (the container shares its UTS view of the network).
pub fn write(
    dir: &Path,
    network: NetworkMode,
    hostname: &str,
    opts: &EtcOptions,
) -> Result<Vec<BindMount>, EtcError> {
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let files = [
        (
            "resolv.conf",
            resolv_conf(&host_resolv_conf(), network, opts),
        ),
        ("hosts", hosts(&host_hosts, network, hostname, opts)),
        ("hostname", format!("{hostname}\n")),
    ];
    bound_files(dir, files.iter().map(|(name, text)| (*name, text.as_str())))
}

/// The files for one build step (RUN), resolv.conf and hosts as BuildKit mounts them:
/// written in a fresh private directory under
/// `scratch`, which the caller keeps until the step ends; the binds go with the step's
/// other mounts, so their mount points are removed before the layer is committed.
pub fn for_step(
    scratch: &Path,
    network: NetworkMode,
    hostname: &str,
) -> Result<(tempfile::TempDir, Vec<BindMount>), EtcError> {
    let io = |source| EtcError::Io {
        path: scratch.to_path_buf(),
        source,
    };
    hostfs::create_dir_all(scratch).map_err(io)?;
    let dir = hostfs::scratch_dir_in(scratch, "etc").map_err(io)?;
    let mut binds = write(dir.path(), network, hostname, &EtcOptions::default())?;
    // As in BuildKit, a step's hostname is only the UTS one: /etc/hostname stays the
    // image's file, which a step may change or delete like any other.
    binds.retain(|b| b.dst != "/etc/hostname");
    Ok((dir, binds))
}

/// The user `keel exec-in` maps the tree owner to, from its synthesised passwd line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedUser {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Parses a passwd(5) line `NAME:x:UID:GID:GECOS:HOME:SHELL` as exec-in writes it.
pub fn mapped_user(line: &str) -> Result<MappedUser, EtcError> {
    let bad = || EtcError::Account(line.to_string());
    let f: Vec<&str> = line.trim_end().split(':').collect();
    if f.len() != 7 || f[0].is_empty() || !f[5].starts_with('/') {
        return Err(bad());
    }
    Ok(MappedUser {
        uid: f[2].parse().map_err(|_| bad())?,
        gid: f[3].parse().map_err(|_| bad())?,
        home: f[5].to_string(),
    })
}

/// `db` (an image's passwd or group text) with `line` appended when no entry of `db`
/// has the id in `line`'s third field (the image's own entry for that id wins).
pub fn with_entry(db: &str, line: &str) -> String {
    let id = |l: &str| l.split(':').nth(2).map(str::to_string);
    let want = id(line);
    let mut out = db.to_string();
    if db.lines().any(|l| !l.starts_with('#') && id(l) == want) {
        return out;
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

/// Writes `passwd` and `group` texts into `dir` (0644) and returns the binds that put
/// them over the image's `/etc/passwd` and `/etc/group`.
pub fn write_accounts(dir: &Path, passwd: &str, group: &str) -> Result<Vec<BindMount>, EtcError> {
    bound_files(dir, [("passwd", passwd), ("group", group)])
}

/// Writes each `(name, text)` into `dir` (0644) and returns the binds that put them at
/// `/etc/<name>` in the container.
fn bound_files<'t>(
    dir: &Path,
    files: impl IntoIterator<Item = (&'t str, &'t str)>,
) -> Result<Vec<BindMount>, EtcError> {
    let mut binds = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        crate::sys::fs::write_file_mode(&path, text.as_bytes(), 0o644).map_err(|source| {
            EtcError::Io {
                path: path.clone(),
                source,
            }
        })?;
        binds.push(BindMount {
            src: path,
            dst: format!("/etc/{name}"),
            ro: false,
        });
    }
    Ok(binds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp.example\noptions edns0\n";
    const LOOPBACK_ONLY: &str = "nameserver 127.0.0.1\nnameserver ::1\n";

    #[test]
    fn resolv_conf_follows_docker() {
        let none = EtcOptions::default();
        let dns = EtcOptions {
            dns: vec!["1.1.1.1".into()],
            dns_search: vec![".".into()],
            dns_options: vec!["ndots:2".into()],
            ..Default::default()
        };
        let cases: &[(&str, NetworkMode, &EtcOptions, &str)] = &[
            (HOST, NetworkMode::Host, &none, HOST),
            (
                HOST,
                NetworkMode::Private,
                &none,
                "nameserver 10.0.0.2\nsearch corp.example\noptions edns0\n",
            ),
            (
                LOOPBACK_ONLY,
                NetworkMode::Private,
                &none,
                "nameserver 8.8.8.8\nnameserver 8.8.4.4\n",
            ),
            (
                LOOPBACK_ONLY,
                NetworkMode::None,
                &none,
                "nameserver 8.8.8.8\nnameserver 8.8.4.4\n",
            ),
            (
                HOST,
                NetworkMode::Private,
                &dns,
                "nameserver 1.1.1.1\noptions ndots:2\n",
            ),
            (
                LOOPBACK_ONLY,
                NetworkMode::Host,
                &dns,
                "nameserver 1.1.1.1\noptions ndots:2\n",
            ),
            (
                "",
                NetworkMode::Private,
                &none,
                "nameserver 8.8.8.8\nnameserver 8.8.4.4\n",
            ),
        ];
        for (host, net, opts, want) in cases {
            assert_eq!(resolv_conf(host, *net, opts), *want, "{host:?} {net:?}");
        }
    }

    #[test]
    fn hosts_have_localhost_the_hostname_and_added_entries() {
        let opts = EtcOptions {
            add_hosts: vec!["db:10.0.0.5".into(), "v6:::1".into()],
            ..Default::default()
        };
        let h = hosts("", NetworkMode::Private, "box", &opts);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost"), "{h}");
        assert!(h.contains("127.0.0.1\tbox\n"), "{h}");
        assert!(h.ends_with("10.0.0.5\tdb\n::1\tv6\n"), "{h}");
        let h = hosts("127.0.0.1 localhost host1", NetworkMode::Host, "x", &opts);
        assert_eq!(h, "127.0.0.1 localhost host1\n10.0.0.5\tdb\n::1\tv6\n");
    }

    #[test]
    fn flags_are_checked() {
        let add = |h: &str, net| {
            validate(
                &EtcOptions {
                    add_hosts: vec![h.into()],
                    ..Default::default()
                },
                net,
            )
            .map(|o| o.add_hosts)
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            add("db:10.0.0.5", NetworkMode::Private),
            Ok(vec!["db:10.0.0.5".into()])
        );
        assert_eq!(
            add("v6:[::1]", NetworkMode::Private),
            Ok(vec!["v6:::1".into()])
        );
        assert_eq!(
            add("gw:host-gateway", NetworkMode::Host),
            Ok(vec!["gw:127.0.0.1".into()])
        );
        assert!(add("gw:host-gateway", NetworkMode::Private)
            .unwrap_err()
            .contains("needs --network host"));
        assert!(add("nocolon", NetworkMode::Private)
            .unwrap_err()
            .contains("NAME:IP"));
        assert!(add("db:not-an-ip", NetworkMode::Private).is_err());
        let dns = EtcOptions {
            dns: vec!["example.com".into()],
            ..Default::default()
        };
        assert!(validate(&dns, NetworkMode::Private).is_err());
    }

    #[test]
    fn synthesised_entries_are_added_only_for_new_ids() {
        let pw = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh";
        let me = "bob:x:1001:1001:keel exec-in user:/home/keel:/bin/sh";
        assert_eq!(with_entry(pw, me), format!("{pw}\n{me}\n"));
        let taken = "carol:x:1000:1000:keel exec-in user:/home/keel:/bin/sh";
        assert_eq!(with_entry(pw, taken), pw);
        assert_eq!(with_entry("", "g:x:5:"), "g:x:5:\n");
        assert_eq!(
            mapped_user(me).unwrap(),
            MappedUser {
                uid: 1001,
                gid: 1001,
                home: "/home/keel".into()
            }
        );
        assert!(mapped_user("bob:x:notanumber:1:x:/h:/bin/sh").is_err());
        assert!(mapped_user("bob:x:1:1").is_err());
    }
}
