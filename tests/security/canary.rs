//! Host canaries: things on the host that an escaped container, build or archive would
//! read, write, signal or reach. Each canary records its state when made and `assert_intact`
//! proves it afterwards.
#![allow(dead_code)]
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A host directory holding one file with known content; nothing may be added, removed
/// or changed in it, and the file's access time is not a reliable witness, so reads are
/// proven by the secret never appearing in keel's output (`assert_not_leaked`).
pub struct CanaryDir {
    pub dir: tempfile::TempDir,
    pub secret: String,
    listing: Vec<(String, u64, i64)>,
}

impl CanaryDir {
    pub fn new() -> CanaryDir {
        let dir = tempfile::Builder::new()
            .prefix("keel-canary-")
            .tempdir()
            .unwrap();
        let secret = format!("canary-secret-{}-{}", std::process::id(), rand_suffix());
        std::fs::write(dir.path().join("file"), &secret).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut c = CanaryDir {
            dir,
            secret,
            listing: Vec::new(),
        };
        c.listing = c.snapshot();
        c
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn file(&self) -> PathBuf {
        self.dir.path().join("file")
    }
    fn snapshot(&self) -> Vec<(String, u64, i64)> {
        let mut out: Vec<_> = walkdir::WalkDir::new(self.dir.path())
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                let m = e.path().symlink_metadata().unwrap();
                (
                    e.path().display().to_string(),
                    m.len(),
                    m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                )
            })
            .collect();
        out.sort();
        out
    }
    /// Nothing in the canary directory was created, removed or modified.
    pub fn assert_intact(&self) {
        assert_eq!(
            self.snapshot(),
            self.listing,
            "host canary directory changed"
        );
        assert_eq!(std::fs::read_to_string(self.file()).unwrap(), self.secret);
    }
    /// The secret does not appear in `text` (keel's output, an image's files).
    pub fn assert_not_leaked(&self, text: &str) {
        assert!(
            !text.contains(&self.secret),
            "host canary content leaked: {text}"
        );
    }
}

fn rand_suffix() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.as_nanos() as u64 ^ (std::process::id() as u64) << 32
}

/// A host process that must stay alive (nothing in a container may signal it).
pub struct CanaryProcess {
    pub child: Child,
}

impl CanaryProcess {
    pub fn new() -> CanaryProcess {
        CanaryProcess {
            child: Command::new("sleep").arg("600").spawn().unwrap(),
        }
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "host canary process was killed"
        );
    }
}

impl Drop for CanaryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP service on the host's 127.0.0.1 that counts connections.
pub struct CanaryService {
    pub port: u16,
    hits: Arc<AtomicUsize>,
}

impl CanaryService {
    pub fn new() -> CanaryService {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                h.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut s) = s {
                    let _ = s.read(&mut [0u8; 64]);
                }
            }
        });
        CanaryService { port, hits }
    }
    pub fn assert_unreached(&self) {
        assert_eq!(
            self.hits.load(Ordering::SeqCst),
            0,
            "host canary service was reached"
        );
    }
}

/// A loop device backed by a file with known content (root only): reading or writing the
/// block device from a container is the escape under test. Detached on drop.
pub struct CanaryLoop {
    pub device: String,
    pub backing: tempfile::NamedTempFile,
    pub content: Vec<u8>,
}

impl CanaryLoop {
    pub fn new() -> Option<CanaryLoop> {
        let mut backing = tempfile::NamedTempFile::new().ok()?;
        let content: Vec<u8> = format!("loop-canary-{}", rand_suffix())
            .into_bytes()
            .repeat(4096 / 24 + 1)[..4096]
            .to_vec();
        std::io::Write::write_all(&mut backing, &content).ok()?;
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing.path())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let device = String::from_utf8(out.stdout).ok()?.trim().to_string();
        Some(CanaryLoop {
            device,
            backing,
            content,
        })
    }
    /// (major, minor) of the loop device.
    pub fn numbers(&self) -> (u64, u64) {
        let rdev = std::fs::metadata(&self.device).unwrap().rdev();
        (
            ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
            (rdev & 0xff) | ((rdev >> 12) & !0xff),
        )
    }
    pub fn assert_intact(&self) {
        assert_eq!(
            std::fs::read(self.backing.path()).unwrap(),
            self.content,
            "loop canary written"
        );
    }
}

impl Drop for CanaryLoop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}
