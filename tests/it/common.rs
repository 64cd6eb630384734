//! Shared test helpers: a temporary keel root and a `keel` command bound to it.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch keel root (deleted on drop) and helpers to run `keel` against it.
pub struct Keel {
    pub dir: tempfile::TempDir,
}

/// A test that fails half-way must not leave a detached container running (its
/// processes, mounts and snapshot would outlive the deleted root): containers still in
/// the root are removed before it is.
impl Drop for Keel {
    fn drop(&mut self) {
        if !self.root().join("containers").is_dir() {
            return;
        }
        let Ok(out) = self.cmd().args(["ps", "-a", "-q"]).output() else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = self.cmd().args(["rm", "-f", id]).output();
        }
    }
}

impl Keel {
    pub fn new() -> Keel {
        Keel {
            dir: tempfile::Builder::new()
                .prefix("keel-test-")
                .tempdir()
                .unwrap(),
        }
    }
    /// Like [`Keel::new`], with the root in a temp dir below `base` (say, a loop-mounted
    /// btrfs, where keel picks the btrfs driver).
    pub fn new_in(base: &Path) -> Keel {
        Keel {
            dir: tempfile::Builder::new()
                .prefix("keel-test-")
                .tempdir_in(base)
                .unwrap(),
        }
    }
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    /// A `keel` command with `--root` set and plain progress output.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
        c.arg("--root")
            .arg(self.root())
            .arg("--progress")
            .arg("plain");
        c.env_remove("KEEL_ROOT")
            .env_remove("KEEL_LOG")
            .env_remove("KEEL_NO_FSYNC");
        c
    }
    /// Runs keel with `args` and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert_success(&out, args);
        String::from_utf8(out.stdout).unwrap()
    }
    /// Runs keel with `args` and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            !out.status.success(),
            "keel {args:?} succeeded but should fail\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

pub fn assert_success(out: &Output, what: impl std::fmt::Debug) {
    assert!(
        out.status.success(),
        "{what:?} failed with {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs an external command and asserts success; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert_success(&out, &cmd);
    String::from_utf8(out.stdout).unwrap()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True when `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Skips the calling test (with a message saying why) unless the condition holds.
/// Under CI (`CI=true`) a skip is a failure, so a missing tool cannot hide a regression.
#[macro_export]
macro_rules! require {
    ($cond:expr, $why:expr) => {
        if !$cond {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("required for this test under CI: {}", $why);
            }
            eprintln!("SKIP {}: {}", module_path!(), $why);
            return;
        }
    };
}

/// Builds a small rootfs tree from the host's static busybox (with applet links).
pub fn busybox_rootfs(dir: &Path) {
    let bb = Path::new("/bin/busybox");
    assert!(
        bb.exists(),
        "busybox-static is not installed (apt-get install busybox-static)"
    );
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy(bb, dir.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "ls", "cat", "echo", "true", "false", "id", "hostname", "sleep", "httpd", "env",
        "pwd", "mkdir", "touch", "rm", "wc",
    ] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    for d in ["etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nalice:x:1000:\n").unwrap();
}
