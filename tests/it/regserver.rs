//! A real registry for the tests: Debian's `docker-registry` (distribution 2.8) on
//! 127.0.0.1, optionally behind TLS with a CA made with openssl at test time (keel finds
//! it through `KEEL_CERTS_D`, the certs.d base the tests point it at), with htpasswd
//! (Basic) or token (Bearer) auth. The token server is a small Python 3 stdlib program
//! written here; it signs RS256 JWTs with `openssl dgst`. Everything is started on free
//! loopback ports and killed on drop.
#![allow(dead_code)]
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "keeluser";
pub const PASSWORD: &str = "s3cret-pw";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic,
    Token,
}

pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tls: bool,
    children: Vec<Child>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether the tools the registry tests need are here; under CI a missing one fails.
pub fn available() -> bool {
    let missing: Vec<&str> = ["docker-registry", "openssl"]
        .into_iter()
        .filter(|t| !crate::common::have(t))
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "registry tests need {missing:?} under CI (scripts/setup-debian installs them)"
    );
    eprintln!("SKIP registry tests: {missing:?} not installed");
    false
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sh(cmd: &mut Command) {
    crate::common::run_ok(cmd.stdin(Stdio::null()));
}

/// A CA and a server certificate for 127.0.0.1/localhost signed by it.
fn make_certs(dir: &Path) {
    let o = |args: &[&str]| sh(Command::new("openssl").current_dir(dir).args(args));
    o(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=keel-test-ca",
    ]);
    o(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    o(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    // The token server's signing pair.
    o(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "token.key",
        "-out",
        "token.crt",
        "-days",
        "2",
        "-subj",
        "/CN=keel-test-token",
    ]);
}

/// A bcrypt htpasswd line (docker-registry accepts bcrypt only).
fn htpasswd_line() -> String {
    if crate::common::have("htpasswd") {
        let out = crate::common::run_ok(Command::new("htpasswd").args(["-nbB", USER, PASSWORD]));
        return out.trim().to_string();
    }
    let py = "import crypt,sys; print(sys.argv[1]+':'+crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH)))";
    let out = crate::common::run_ok(
        Command::new("/usr/bin/python3").args(["-W", "ignore", "-c", py, USER, PASSWORD]),
    );
    out.trim().to_string()
}

const TOKEN_SERVER: &str = r#"
import base64, http.server, json, subprocess, sys, time, urllib.parse
port, user, pw, key, crt, service = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
der = subprocess.run(["openssl", "x509", "-in", crt, "-outform", "DER"], capture_output=True, check=True).stdout
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        auth = self.headers.get("Authorization", "")
        who = None
        if auth.startswith("Basic "):
            u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            if u != user or p != pw:
                self.send_response(401); self.end_headers(); return
            who = u
        if who is None:
            self.send_response(401); self.end_headers(); return
        access = []
        for s in q.get("scope", []):
            parts = s.split(":")
            if len(parts) >= 3:
                access.append({"type": parts[0], "name": ":".join(parts[1:-1]), "actions": parts[-1].split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": "keel-test-issuer", "sub": who, "aud": service, "exp": now + 300, "nbf": now - 10, "iat": now, "jti": str(time.time_ns()), "access": access}
        signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing.encode(), capture_output=True, check=True).stdout
        body = json.dumps({"token": signing + "." + b64(sig), "expires_in": 300}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json"); self.end_headers(); self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), H).serve_forever()
"#;

impl Registry {
    /// Starts a registry; waits until it answers.
    pub fn start(tls: bool, auth: Auth) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("keel-reg-")
            .tempdir()
            .unwrap();
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        let port = free_port();
        if tls || auth == Auth::Token {
            make_certs(d);
        }
        let mut children = Vec::new();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            d.join("data").display()
        );
        if tls {
            cfg += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display()
            );
        }
        match auth {
            Auth::None => {}
            Auth::Basic => {
                std::fs::write(d.join("htpasswd"), htpasswd_line() + "\n").unwrap();
                cfg += &format!(
                    "auth:\n  htpasswd:\n    realm: keel-test\n    path: {}\n",
                    d.join("htpasswd").display()
                );
            }
            Auth::Token => {
                let tport = free_port();
                std::fs::write(d.join("token_server.py"), TOKEN_SERVER).unwrap();
                let child = Command::new("/usr/bin/python3")
                    .arg(d.join("token_server.py"))
                    .args([&tport.to_string(), USER, PASSWORD])
                    .arg(d.join("token.key"))
                    .arg(d.join("token.crt"))
                    .arg("keel-test-registry")
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("starting the token server (python3)");
                children.push(child);
                wait_port(tport);
                cfg += &format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{tport}/token\n    service: keel-test-registry\n    issuer: keel-test-issuer\n    rootcertbundle: {}\n",
                    d.join("token.crt").display()
                );
            }
        }
        std::fs::write(d.join("config.yml"), cfg).unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        children.push(child);
        let reg = Registry {
            dir,
            port,
            tls,
            children,
        };
        if tls {
            for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
                let cd = reg.certs_d().join(host);
                std::fs::create_dir_all(&cd).unwrap();
                std::fs::copy(d.join("ca.crt"), cd.join("ca.crt")).unwrap();
            }
        }
        wait_port(port);
        reg
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The certs.d base keel is pointed at (`KEEL_CERTS_D`).
    pub fn certs_d(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    /// The registry's CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// An auth file (docker's config.json format) holding the test user's credentials.
    pub fn auth_file(&self, password: &str) -> PathBuf {
        use base64_like::encode;
        let tag: String = password.bytes().map(|b| format!("{b:02x}")).collect();
        let p = self.dir.path().join(format!("auth-{tag}.json"));
        let mut f = std::fs::File::create(&p).unwrap();
        write!(
            f,
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{}\"}}}}}}",
            self.host(),
            encode(&format!("{USER}:{password}"))
        )
        .unwrap();
        p
    }

    /// GET of a path under `/v2/` on a plain-HTTP registry without auth (a test crafting
    /// what a hostile or foreign registry would serve).
    pub fn get(&self, path: &str, accept: &str) -> Vec<u8> {
        assert!(!self.tls, "Registry::get speaks plain HTTP");
        ureq::get(format!("http://{}/v2/{path}", self.host()))
            .header("Accept", accept)
            .call()
            .unwrap()
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap()
    }

    /// Uploads a blob to `repo` (plain HTTP, no auth); returns its digest.
    pub fn put_blob(&self, repo: &str, bytes: &[u8]) -> String {
        use sha2::Digest as _;
        let digest = format!("sha256:{:x}", sha2::Sha256::digest(bytes));
        let start = ureq::post(format!("http://{}/v2/{repo}/blobs/uploads/", self.host()))
            .send_empty()
            .unwrap();
        let loc = start.headers()["location"].to_str().unwrap().to_string();
        let loc = if loc.starts_with('/') {
            format!("http://{}{loc}", self.host())
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        ureq::put(format!("{loc}{sep}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .send(bytes)
            .unwrap();
        digest
    }

    /// Puts a manifest under `repo:tag` (plain HTTP, no auth).
    pub fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, bytes: &[u8]) {
        ureq::put(format!("http://{}/v2/{repo}/manifests/{tag}", self.host()))
            .header("Content-Type", media_type)
            .send(bytes)
            .unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port} after 20s");
}

/// Standard base64 (for auth files), kept here so the tests need no extra crate.
mod base64_like {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    pub fn encode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = (chunk[0] as u32) << 16
                | (*chunk.get(1).unwrap_or(&0) as u32) << 8
                | *chunk.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
