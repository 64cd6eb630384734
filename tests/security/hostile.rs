//! What the attacker-side tests share to run keel against hostile input: a keel command
//! bounded in time and address space, its output as text, and hostile HTTP servers.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::Keel;

/// A keel command bounded in time and address space: a hostile image that makes keel
/// read forever (a fifo) or without bound (`/dev/zero`, an endless HTTP body) must not
/// hang or starve the machine running the suite. Returns the output and how long it took.
pub fn bounded(k: &Keel, args: &[&str]) -> (Output, Duration) {
    bounded_env(k, args, &[])
}

/// [`bounded`] with `env` (name, value) added to keel's environment.
pub fn bounded_env(k: &Keel, args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let mut c = Command::new("timeout");
    c.args(["-s", "KILL", "60", "prlimit", "--as=2147483648", "--"])
        .arg(env!("CARGO_BIN_EXE_keel"))
        .arg("--root")
        .arg(k.root())
        .args(["--progress", "plain"])
        .args(args)
        .env_remove("KEEL_ROOT")
        .env_remove("KEEL_LOG")
        .env_remove("KEEL_NO_FSYNC")
        .env_remove("KEEL_ADD_MAX_SIZE")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let start = Instant::now();
    let out = c
        .output()
        .expect("spawning timeout/prlimit (coreutils, util-linux)");
    (out, start.elapsed())
}

/// Every regular file below `dir`, sorted, links not followed (none when it does not
/// exist).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect();
    v.sort();
    v
}

/// stdout then stderr, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A Python program answering every GET with a body that never ends: a path starting
/// with `/announced` says `Content-Length: 10 GiB` first, any other sends no length. With
/// a directory as argv[1], `/files/NAME` serves that directory's file NAME whole.
pub const ENDLESS_HTTP: &str = r#"
import http.server, os, sys
FILES = sys.argv[1] if len(sys.argv) > 1 else None
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        self.send_response(200)
        if FILES and self.path.startswith("/files/"):
            body = open(os.path.join(FILES, os.path.basename(self.path)), "rb").read()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.startswith("/announced"):
            self.send_header("Content-Length", str(10 << 30))
        self.end_headers()
        write_forever(self.wfile, b"A")
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// What every [`PyServer`] program may call: `write_forever(wfile, byte)` sends that
/// byte to the client until it goes away (a body that never ends).
const PY_HELPERS: &str = r#"
def write_forever(wfile, byte):
    chunk = byte * 65536
    try:
        while True:
            wfile.write(chunk)
    except Exception:
        pass
"#;

/// A hostile HTTP server: a Python 3 stdlib `program` (run with `args`, after
/// [`PY_HELPERS`]) that listens on a free loopback port and prints it on its first line.
/// Killed on drop.
pub struct PyServer {
    child: Child,
    pub port: u16,
}

impl PyServer {
    pub fn start(program: &str, args: &[&str]) -> PyServer {
        let mut child = Command::new("python3")
            .args(["-c", &format!("{PY_HELPERS}{program}")])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the test's HTTP server");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        PyServer {
            port: line.trim().parse().expect("the server prints its port"),
            child,
        }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
