//! Registry credentials where docker and podman keep them, and the challenges registries
//! send. Files read, first hit wins: `$REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `$DOCKER_CONFIG/config.json` (default
//! `~/.docker/config.json`). Each may name credential helpers (`credHelpers` per
//! registry, `credsStore` for all), run as `docker-credential-NAME get|store|erase` with
//! the docker-credential-helpers protocol. `keel login` writes where `docker login` does
//! (or `$REGISTRY_AUTH_FILE`). These are other programs' files: unknown fields are kept.
use crate::sys::hostfs;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{json, Value};

use super::RegistryError;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// The `Authorization: Basic …` value.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A `WWW-Authenticate` challenge (RFC 7235; the distribution token spec's form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value: `Bearer realm="…",service="…",scope="…"` or
/// `Basic realm="…"`. Quoted values may contain commas.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
}

/// The files credentials are read from, in order.
pub fn auth_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        v.push(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(PathBuf::from(d).join("containers/auth.json"));
    }
    v.push(docker_config());
    v
}

/// `$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`.
pub fn docker_config() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => PathBuf::from(d).join("config.json"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".docker/config.json"),
    }
}

/// Where `keel login` writes: `$REGISTRY_AUTH_FILE`, else docker's config.
pub fn login_file() -> PathBuf {
    std::env::var_os("REGISTRY_AUTH_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(docker_config)
}

/// The keys a registry may be filed under (Docker Hub has several historical ones).
fn keys_for(registry: &str) -> Vec<String> {
    if matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        return vec![
            "docker.io".into(),
            "index.docker.io".into(),
            "https://index.docker.io/v1/".into(),
            "registry-1.docker.io".into(),
        ];
    }
    vec![registry.to_string()]
}

/// `https://host/v1/` → `host`, as docker normalises `auths` keys when matching.
fn normalise_key(k: &str) -> &str {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    k.split('/').next().unwrap_or(k)
}

fn read_json(path: &Path) -> Result<Option<Value>, RegistryError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| RegistryError::Credentials(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RegistryError::Credentials(format!(
            "reading {}: {e}",
            path.display()
        ))),
    }
}

/// What one auth file says about `registry`, if anything.
pub fn lookup_in(doc: &Value, registry: &str) -> Result<Option<Credentials>, RegistryError> {
    let keys = keys_for(registry);
    if let Some(helper) = keys
        .iter()
        .find_map(|k| doc["credHelpers"][k.as_str()].as_str())
    {
        return helper_get(helper, registry);
    }
    if let Some(auths) = doc["auths"].as_object() {
        for (k, v) in auths {
            if keys
                .iter()
                .any(|want| normalise_key(k) == normalise_key(want))
            {
                if let Some(c) = decode_entry(v) {
                    return Ok(Some(c));
                }
            }
        }
    }
    match doc["credsStore"].as_str() {
        Some(store) if !store.is_empty() => helper_get(store, registry),
        _ => Ok(None),
    }
}

fn decode_entry(v: &Value) -> Option<Credentials> {
    if let Some(tok) = v["identitytoken"].as_str().filter(|t| !t.is_empty()) {
        return Some(Credentials {
            username: "<token>".into(),
            password: tok.into(),
        });
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["auth"].as_str()?)
        .ok()?;
    let (u, p) = std::str::from_utf8(&raw).ok()?.split_once(':')?;
    Some(Credentials {
        username: u.into(),
        password: p.into(),
    })
}

/// The credentials for `registry` from the first file that has them.
pub fn lookup(registry: &str) -> Result<Option<Credentials>, RegistryError> {
    for f in auth_files() {
        if let Some(doc) = read_json(&f)? {
            if let Some(c) = lookup_in(&doc, registry)? {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

fn helper(name: &str, verb: &str, input: &str) -> Result<String, RegistryError> {
    let prog = format!("docker-credential-{name}");
    let mut child = Command::new(&prog)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            RegistryError::Credentials(format!(
                "running {prog} {verb}: {e}; install it or remove it from the auth file"
            ))
        })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .map_err(|e| RegistryError::Credentials(format!("{prog} {verb}: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| RegistryError::Credentials(format!("{prog} {verb}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(RegistryError::Credentials(format!(
            "{prog} {verb} failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(stdout)
}

fn helper_get(name: &str, registry: &str) -> Result<Option<Credentials>, RegistryError> {
    let out = match helper(name, "get", registry) {
        Ok(o) => o,
        // The protocol's "no credentials" answer.
        Err(RegistryError::Credentials(m)) if m.contains("credentials not found") => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let v: Value = serde_json::from_str(&out)
        .map_err(|e| RegistryError::Credentials(format!("docker-credential-{name} get: {e}")))?;
    Ok(Some(Credentials {
        username: v["Username"].as_str().unwrap_or_default().into(),
        password: v["Secret"].as_str().unwrap_or_default().into(),
    }))
}

/// Records `creds` for `registry` (a helper if the file names one, else `auths`).
pub fn store(registry: &str, creds: &Credentials) -> Result<PathBuf, RegistryError> {
    let file = login_file();
    let mut doc = read_json(&file)?.unwrap_or_else(|| json!({}));
    let helper_name = doc["credHelpers"][registry]
        .as_str()
        .or(doc["credsStore"].as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(h) = helper_name {
        let input =
            json!({"ServerURL": registry, "Username": creds.username, "Secret": creds.password});
        helper(&h, "store", &input.to_string())?;
        return Ok(file);
    }
    let raw = format!("{}:{}", creds.username, creds.password);
    let entry = json!({"auth": base64::engine::general_purpose::STANDARD.encode(raw)});
    if !doc.is_object() {
        doc = json!({});
    }
    if !doc["auths"].is_object() {
        doc["auths"] = json!({});
    }
    doc["auths"][registry] = entry;
    write_private(&file, &doc)?;
    Ok(file)
}

/// Forgets `registry` in every auth file (and helper); whether anything was removed.
pub fn erase(registry: &str) -> Result<bool, RegistryError> {
    let mut removed = false;
    for file in auth_files() {
        let Some(mut doc) = read_json(&file)? else {
            continue;
        };
        let helper_name = doc["credHelpers"][registry]
            .as_str()
            .or(doc["credsStore"].as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let Some(h) = helper_name {
            removed |= helper(&h, "erase", registry).is_ok();
        }
        let Some(auths) = doc["auths"].as_object_mut() else {
            continue;
        };
        let before = auths.len();
        auths.retain(|k, _| normalise_key(k) != normalise_key(registry));
        if auths.len() != before {
            removed = true;
            write_private(&file, &doc)?;
        }
    }
    Ok(removed)
}

/// Writes a credentials file atomically, readable by its owner only, through a temp name
/// carrying this keel's owner tag (`hostfs::temp_file_in`, created 0600). The directory is
/// the user's (`~/.docker`, `$REGISTRY_AUTH_FILE`'s), which `keel gc` never visits, so a
/// dead keel's temp names there are swept here, before writing; nothing else is touched.
fn write_private(file: &Path, doc: &Value) -> Result<(), RegistryError> {
    let err =
        |e: std::io::Error| RegistryError::Credentials(format!("writing {}: {e}", file.display()));
    let dir = file.parent().unwrap_or(Path::new("."));
    hostfs::create_dir_all(dir).map_err(err)?;
    crate::reclaim::sweep_tagged_temps(dir);
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let mut tmp = hostfs::temp_file_in(dir, &name).map_err(err)?;
    let mut bytes = serde_json::to_vec_pretty(doc).expect("a JSON value serialises");
    bytes.push(b'\n');
    tmp.write_all(&bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(err)?;
    hostfs::persist(tmp, file).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        for (h, want) in [
            ("Basic realm=\"Registry Realm\"", Some(Challenge::Basic)),
            (
                "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/alpine:pull\"",
                Some(Challenge::Bearer {
                    realm: "https://auth.docker.io/token".into(),
                    service: Some("registry.docker.io".into()),
                    scope: Some("repository:library/alpine:pull".into()),
                }),
            ),
            (
                "bearer realm=\"https://t/x\", scope=\"repository:a:pull,push\"",
                Some(Challenge::Bearer {
                    realm: "https://t/x".into(),
                    service: None,
                    scope: Some("repository:a:pull,push".into()),
                }),
            ),
            ("Bearer service=\"x\"", None),
            ("Negotiate abc", None),
        ] {
            assert_eq!(parse_challenge(h), want, "{h}");
        }
    }

    #[test]
    fn auth_entries_match_as_docker_matches_them() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let doc = json!({"auths": {
            "https://index.docker.io/v1/": {"auth": enc("hub:pw")},
            "localhost:5000": {"auth": enc("u:p:with:colons")},
            "ghcr.io": {"identitytoken": "tok"},
        }});
        let get = |r| {
            lookup_in(&doc, r)
                .unwrap()
                .map(|c| (c.username, c.password))
        };
        assert_eq!(get("docker.io"), Some(("hub".into(), "pw".into())));
        assert_eq!(
            get("localhost:5000"),
            Some(("u".into(), "p:with:colons".into()))
        );
        assert_eq!(get("ghcr.io"), Some(("<token>".into(), "tok".into())));
        assert_eq!(get("quay.io"), None);
        assert_eq!(
            Credentials {
                username: "u".into(),
                password: "p".into()
            }
            .basic(),
            "Basic dTpw"
        );
    }
}
