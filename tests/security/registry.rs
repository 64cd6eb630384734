//! Attacker-side tests: registry replies. A hostile registry answers a manifest, a token
//! request, a build cache's config or an image's blobs with a body that never ends. keel
//! reads no reply past its bound: each pull or build fails naming what was too large and
//! the bound, is neither killed (time) nor aborted (address space), stores nothing, and
//! leaves the host's canaries alone.

use crate::canary::CanaryDir;
use crate::common::Keel;
use crate::hostile::{bounded_env, files_below, text, PyServer};
use crate::require;

/// A registry on plain HTTP (keel allows it for loopback) whose answers depend on its
/// mode (argv[1]):
/// - `manifest`: every manifest is an endless stream of JSON whitespace;
/// - `token`: `/v2/` asks for a Bearer token from `/token`, which answers without end;
/// - `cache-config`: manifests are a keel build cache's, whose config blob never ends;
/// - `blob`: manifests are an image's, whose blobs (100 bytes, they say) never end.
const HOSTILE_REGISTRY: &str = r#"
import http.server, json, sys
MODE = sys.argv[1]
CONFIG = "sha256:" + "ab" * 32
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def endless(self, media_type):
        self.send_response(200)
        self.send_header("Content-Type", media_type)
        self.end_headers()
        write_forever(self.wfile, b" ")
    def answer(self, status, media_type="application/json", body=b"", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
    def do_HEAD(self):
        self.answer(404)
    def do_GET(self):
        port = self.server.server_address[1]
        if self.path == "/v2/":
            if MODE == "token":
                realm = f'Bearer realm="http://127.0.0.1:{port}/token",service="hostile"'
                return self.answer(401, headers=[("WWW-Authenticate", realm)])
            return self.answer(200, body=b"{}")
        if self.path.startswith("/token"):
            return self.endless("application/json")
        if "/manifests/" in self.path:
            oci = "application/vnd.oci.image.manifest.v1+json"
            if MODE == "cache-config":
                manifest = {
                    "schemaVersion": 2,
                    "mediaType": oci,
                    "artifactType": "application/vnd.keel.build-cache.v1+json",
                    "config": {
                        "mediaType": "application/vnd.keel.build-cache.config.v1+json",
                        "digest": CONFIG,
                        "size": 100,
                    },
                    "layers": [],
                }
            elif MODE == "blob":
                manifest = {
                    "schemaVersion": 2,
                    "mediaType": oci,
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": CONFIG,
                        "size": 100,
                    },
                    "layers": [{
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": "sha256:" + "cd" * 32,
                        "size": 100,
                    }],
                }
            else:
                return self.endless(oci)
            return self.answer(200, oci, json.dumps(manifest).encode())
        if "/blobs/" in self.path:
            return self.endless("application/octet-stream")
        self.answer(404)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// Registry credentials and certificates of the machine running the suite stay out.
fn isolated(k: &Keel) -> Vec<(&'static str, String)> {
    let no_auth = k.path("no-auth.json").display().to_string();
    vec![
        ("REGISTRY_AUTH_FILE", no_auth),
        ("HOME", k.path("home").display().to_string()),
        (
            "DOCKER_CONFIG",
            k.path("docker-config").display().to_string(),
        ),
        ("XDG_RUNTIME_DIR", k.path("runtime").display().to_string()),
    ]
}

/// Runs keel (`args`) against a hostile registry in `mode` and checks the failure: not
/// killed or aborted, the message has each of `want`, nothing was stored, and the host's
/// canaries are intact.
fn refused(k: &Keel, mode: &str, args: impl Fn(u16) -> Vec<String>, want: &[&str]) {
    let canary = CanaryDir::new();
    let server = PyServer::start(HOSTILE_REGISTRY, &[mode]);
    let args = args(server.port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = isolated(k);
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let blobs_before = files_below(&k.root().join("images/blobs"));
    let (out, took) = bounded_env(k, &args, &env);
    let t = text(&out);
    assert!(
        !out.status.success(),
        "{mode}: keel {args:?} succeeded: {t}"
    );
    assert!(
        matches!(out.status.code(), Some(1..=125)),
        "{mode}: keel was killed or aborted ({:?}, after {took:?}): {t}",
        out.status
    );
    for w in want {
        assert!(t.contains(w), "{mode}: the error lacks {w:?}: {t}");
    }
    assert_eq!(
        files_below(&k.root().join("images/blobs")),
        blobs_before,
        "{mode}: a blob was stored"
    );
    let tmp = files_below(&k.root().join("tmp"));
    assert!(tmp.is_empty(), "{mode}: left in the root's tmp: {tmp:?}");
    assert!(
        !k.ok(&["images"]).contains("hostile"),
        "{mode}: an image was recorded"
    );
    canary.assert_intact();
}

/// `keel pull` of the hostile registry's image on `port`.
fn pull_hostile_app(port: u16) -> Vec<String> {
    vec!["pull".into(), format!("127.0.0.1:{port}/hostile/app:1")]
}

/// Break: a registry answers `keel pull`'s manifest request with a body that never
/// ends, to exhaust keel's memory. keel reads 4 MiB at most and refuses the rest,
/// naming the manifest's URL and the bound.
#[test]
fn an_endless_manifest_is_refused_at_its_bound() {
    require!(
        crate::common::have("python3"),
        "python3 is not installed (the hostile registry)"
    );
    refused(
        &Keel::new(),
        "manifest",
        pull_hostile_app,
        &["/hostile/app/manifests/1", "larger than 4 MiB"],
    );
}

/// Break: the token service a registry names (`WWW-Authenticate: Bearer realm=…`) is
/// the attacker's, and its answer never ends. keel reads 1 MiB of it at most.
#[test]
fn an_endless_token_answer_is_refused_at_its_bound() {
    require!(
        crate::common::have("python3"),
        "python3 is not installed (the hostile registry)"
    );
    refused(
        &Keel::new(),
        "token",
        pull_hostile_app,
        &["/token", "the token service's answer is larger than 1 MiB"],
    );
}

/// Break: `--cache-from` names the attacker's registry, whose cache manifest points at
/// a config blob without end. keel reads 64 MiB of it at most, and the build fails
/// before any step, naming the cache.
#[test]
fn an_endless_cache_config_is_refused_at_its_bound() {
    require!(
        crate::common::have("python3"),
        "python3 is not installed (the hostile registry)"
    );
    let k = Keel::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n").unwrap();
    let ctx = ctx.display().to_string();
    refused(
        &k,
        "cache-config",
        |port| {
            vec![
                "build".into(),
                "-t".into(),
                "app".into(),
                "--cache-from".into(),
                format!("registry:127.0.0.1:{port}/hostile/cache:main"),
                ctx.clone(),
            ]
        },
        &[
            "--cache-from registry:127.0.0.1:",
            "cache config sha256:abab",
            "larger than 64 MiB",
        ],
    );
}

/// Break: a manifest's blobs say 100 bytes, and the registry sends them without end, to
/// fill keel's disk. keel stores no more than the descriptor says and fails the blob.
#[test]
fn a_blob_longer_than_its_descriptor_is_cut_off() {
    require!(
        crate::common::have("python3"),
        "python3 is not installed (the hostile registry)"
    );
    refused(
        &Keel::new(),
        "blob",
        pull_hostile_app,
        &[
            "/hostile/app/blobs/sha256:",
            "more than the 100 bytes its descriptor says",
        ],
    );
}
