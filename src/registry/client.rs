//! One connection to one registry for one transfer: TLS (system roots plus the
//! registry's own CA files from the certs.d directories docker and podman use), the
//! scheme (HTTPS; plain HTTP only for loopback, an `insecure` entry or
//! `--tls-verify=false`), and authentication (distribution's token spec: anonymous,
//! Basic, or a Bearer token fetched from the challenge's realm for the transfer's
//! scopes, refreshed once on a 401).
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ureq::http::{Request, Response};
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
use ureq::Body;

use super::auth::{self, Challenge, Credentials};
use super::RegistryError;

/// Largest answer of a token service keel reads (a token is a few KiB).
const MAX_TOKEN_ANSWER: u64 = 1 << 20;

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// `false`: TLS certificates are not checked and plain HTTP is allowed (asked for).
    pub skip_tls_verify: bool,
    /// An `insecure = true` entry or a loopback registry: plain HTTP is allowed.
    pub insecure: bool,
    /// Credentials to use instead of the auth files' (`keel login`).
    pub credentials: Option<Credentials>,
}

/// A registry connection with its authorization settled.
pub struct Client {
    agent: ureq::Agent,
    host: String,
    base: String,
    credentials: Option<Credentials>,
    scopes: Vec<String>,
    /// The `Authorization` value requests carry, if the registry wants one.
    authorization: Mutex<Option<String>>,
    challenge: Mutex<Option<Challenge>>,
}

/// The directories holding `host`'s CA files: `$KEEL_CERTS_D/HOST` when set (tests),
/// else `/etc/containers/certs.d/HOST` and `/etc/docker/certs.d/HOST`.
pub fn cert_dirs(host: &str) -> Vec<PathBuf> {
    if let Some(base) = std::env::var_os("KEEL_CERTS_D") {
        return vec![PathBuf::from(base).join(host)];
    }
    ["/etc/containers/certs.d", "/etc/docker/certs.d"]
        .iter()
        .map(|b| PathBuf::from(b).join(host))
        .collect()
}

fn system_roots() -> &'static Vec<Certificate<'static>> {
    static ROOTS: OnceLock<Vec<Certificate<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let bundle = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
        pem_certs(&bundle)
    })
}

fn pem_certs(pem: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|i| match i {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// TLS settings for `host`: system roots + `*.crt` CA files, a `*.cert`/`*.key` client
/// pair (docker's certs.d convention).
fn tls_for(host: &str, skip_verify: bool) -> Result<TlsConfig, RegistryError> {
    let mut roots = system_roots().clone();
    let mut client = None;
    for dir in cert_dirs(host) {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| RegistryError::Config {
                    file: p.display().to_string(),
                    why: e.to_string(),
                })
            };
            match f.extension().and_then(|e| e.to_str()) {
                Some("crt") => roots.extend(pem_certs(&read(&f)?)),
                Some("cert") => {
                    let key = f.with_extension("key");
                    let bad = |why: String| RegistryError::Config {
                        file: key.display().to_string(),
                        why,
                    };
                    let k = PrivateKey::from_pem(&read(&key)?).map_err(|e| bad(e.to_string()))?;
                    client = Some(ClientCert::new_with_certs(&pem_certs(&read(&f)?), k));
                }
                _ => {}
            }
        }
    }
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .client_cert(client)
        .disable_verification(skip_verify)
        .build())
}

fn agent_for(host: &str, skip_verify: bool) -> Result<ureq::Agent, RegistryError> {
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls_for(host, skip_verify)?)
        .timeout_connect(Some(Duration::from_secs(30)))
        .user_agent(concat!("keel/", env!("CARGO_PKG_VERSION")))
        .build()
        .into())
}

fn transport(method: &'static str, url: &str, e: ureq::Error) -> RegistryError {
    RegistryError::Http {
        method,
        url: url.to_string(),
        why: e.to_string(),
    }
}

/// The scope a transfer of `repository` needs (`pull` or `pull,push`).
pub fn scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

impl Client {
    /// Connects to `host` and settles authorization for `scopes`.
    pub fn connect(
        host: &str,
        how: &Connect,
        scopes: Vec<String>,
    ) -> Result<Client, RegistryError> {
        let agent = agent_for(host, how.skip_tls_verify)?;
        let credentials = match &how.credentials {
            Some(c) => Some(c.clone()),
            None => auth::lookup(host)?,
        };
        let plain_ok = how.insecure || how.skip_tls_verify;
        let schemes: &[&str] = if plain_ok {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last = None;
        for scheme in schemes {
            let base = format!("{scheme}://{host}");
            let url = format!("{base}/v2/");
            let resp = match agent.get(&url).call() {
                Ok(r) => r,
                Err(e) => {
                    last = Some(transport("GET", &url, e));
                    continue;
                }
            };
            if let (Some(https_error), false) =
                (last.take(), matches!(resp.status().as_u16(), 200 | 401))
            {
                // An HTTPS server answering plain HTTP (400): the TLS failure is the news.
                return Err(https_error);
            }
            let client = Client {
                agent,
                host: host.to_string(),
                base,
                credentials,
                scopes,
                authorization: Mutex::new(None),
                challenge: Mutex::new(None),
            };
            if resp.status() == 401 {
                client.challenged(&resp)?;
            }
            return Ok(client);
        }
        Err(last.expect("at least one scheme was tried"))
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// `scheme://host/v2/<repository>`.
    pub fn repo_url(&self, repository: &str) -> String {
        format!("{}/v2/{repository}", self.base)
    }

    /// A full URL for a registry-relative `Location` (upload sessions).
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_string()
        }
    }

    /// Handles a 401: takes its challenge and gets an authorization for it.
    fn challenged(&self, resp: &Response<Body>) -> Result<(), RegistryError> {
        let challenge = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(auth::parse_challenge)
            .max_by_key(|c| matches!(c, Challenge::Bearer { .. }))
            .ok_or_else(|| RegistryError::NeedsLogin {
                registry: self.host.clone(),
                why: "it answered 401 without a Basic or Bearer challenge".into(),
            })?;
        let value = match &challenge {
            Challenge::Basic => {
                let c = self
                    .credentials
                    .as_ref()
                    .ok_or_else(|| RegistryError::NeedsLogin {
                        registry: self.host.clone(),
                        why: "it asks for a user and password and none is stored".into(),
                    })?;
                let value = c.basic();
                self.check_basic(&value)?;
                value
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let mut scopes = self.scopes.clone();
                scopes.extend(scope.clone().filter(|s| !scopes.contains(s)));
                format!("Bearer {}", self.token(realm, service.as_deref(), &scopes)?)
            }
        };
        *self.challenge.lock().expect("challenge") = Some(challenge);
        *self.authorization.lock().expect("authorization") = Some(value);
        Ok(())
    }

    /// A wrong password must fail here, naming the registry, before anything is fetched.
    fn check_basic(&self, value: &str) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base);
        let resp = self
            .agent
            .get(&url)
            .header("Authorization", value)
            .call()
            .map_err(|e| transport("GET", &url, e))?;
        if resp.status() == 401 {
            return Err(self.refused(format!("{url} answered 401")));
        }
        Ok(())
    }

    fn refused(&self, why: String) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.host.clone(),
            user: self.credentials.as_ref().map(|c| c.username.clone()),
            why,
        }
    }

    /// Fetches a token from `realm` (with Basic credentials when there are some).
    fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<String, RegistryError> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        for s in scopes {
            query.push(("scope", s));
        }
        let mut req = self.agent.get(realm).query_pairs(query);
        if let Some(c) = &self.credentials {
            req = req.header("Authorization", &c.basic());
        }
        let resp = req.call().map_err(|e| transport("GET", realm, e))?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 if self.credentials.is_some() => {
                return Err(self.refused(format!(
                    "the token service {realm} answered {}",
                    resp.status()
                )))
            }
            401 | 403 => {
                return Err(RegistryError::NeedsLogin {
                    registry: self.host.clone(),
                    why: format!("its token service {realm} refuses anonymous access"),
                })
            }
            s => {
                return Err(RegistryError::Status {
                    method: "GET",
                    url: realm.to_string(),
                    status: s,
                    body: body_text(resp),
                })
            }
        }
        let bytes = read_body(resp, MAX_TOKEN_ANSWER, "GET", realm)?.ok_or_else(|| {
            RegistryError::Http {
                method: "GET",
                url: realm.to_string(),
                why: format!(
                    "the token service's answer is larger than {} MiB",
                    MAX_TOKEN_ANSWER >> 20
                ),
            }
        })?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::Http {
                method: "GET",
                url: realm.to_string(),
                why: format!("the token service answered with invalid JSON: {e}"),
            })?;
        v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Http {
                method: "GET",
                url: realm.to_string(),
                why: "the token service answered without a token".into(),
            })
    }

    /// Sends a request without a body, authorized; a 401 (an expired token) gets one
    /// fresh authorization and one retry.
    pub fn call(
        &self,
        method: &'static str,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response<Body>, RegistryError> {
        let resp = self.send(method, url, headers, ())?;
        if resp.status() != 401 {
            return Ok(resp);
        }
        self.challenged(&resp)?;
        let resp = self.send(method, url, headers, ())?;
        if resp.status() == 401 {
            return Err(self.refused(format!("{method} {url} answered 401 after authenticating")));
        }
        Ok(resp)
    }

    /// Sends a request with a body (no retry: a body is read once).
    pub fn send(
        &self,
        method: &'static str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl ureq::AsSendBody,
    ) -> Result<Response<Body>, RegistryError> {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(a) = self.authorization.lock().expect("authorization").clone() {
            b = b.header("Authorization", a);
        }
        let req = b.body(body).map_err(|e| RegistryError::Http {
            method,
            url: url.to_string(),
            why: e.to_string(),
        })?;
        self.agent.run(req).map_err(|e| transport(method, url, e))
    }
}

/// An answer's whole body when it is at most `limit` bytes, None when it is longer: a
/// registry (or token service) is never trusted to send a small document, so every
/// body kept in memory is read through this bound.
pub fn read_body(
    resp: Response<Body>,
    limit: u64,
    method: &'static str,
    url: &str,
) -> Result<Option<Vec<u8>>, RegistryError> {
    match resp.into_body().with_config().limit(limit).read_to_vec() {
        Ok(bytes) => Ok(Some(bytes)),
        Err(ureq::Error::BodyExceedsLimit(_)) => Ok(None),
        Err(e) => Err(transport(method, url, e)),
    }
}

/// Up to 2000 bytes of an answer's body, for error messages.
pub fn body_text(resp: Response<Body>) -> String {
    use std::io::Read;
    let mut s = String::new();
    let _ = resp
        .into_body()
        .into_reader()
        .take(2000)
        .read_to_string(&mut s);
    s.trim().to_string()
}

/// The status error for an unexpected answer.
pub fn unexpected(method: &'static str, url: &str, resp: Response<Body>) -> RegistryError {
    RegistryError::Status {
        method,
        url: url.to_string(),
        status: resp.status().as_u16(),
        body: body_text(resp),
    }
}
