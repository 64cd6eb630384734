//! Shared test helpers: a temporary keel root and a `keel` command bound to it, and the
//! scratch directories of test processes, swept when their process was killed.
#![allow(dead_code)]
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// A scratch keel root (deleted on drop) and helpers to run `keel` against it.
pub struct Keel {
    pub dir: tempfile::TempDir,
    /// Environment every command of this root gets (say, a forced layer cache format).
    env: Vec<(String, String)>,
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
            dir: scratch_dir(&std::env::temp_dir()),
            env: Vec::new(),
        }
    }
    /// Like [`Keel::new`], with the root in a temp dir below `base` (say, a loop-mounted
    /// btrfs, where keel picks the btrfs driver).
    pub fn new_in(base: &Path) -> Keel {
        Keel {
            dir: scratch_dir(base),
            env: Vec::new(),
        }
    }
    /// This root with `key=value` in the environment of every command it runs.
    pub fn with_env(mut self, key: &str, value: &str) -> Keel {
        self.env.push((key.to_string(), value.to_string()));
        self
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
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
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
    /// [`wait_removals`] for this root.
    pub fn removals_done(&self) -> bool {
        wait_removals(&self.root())
    }
}

/// Waits up to 5 s for the children that remove finished `run --rm` snapshots
/// (`storage/snapshots/.rm-*`, issue 14) to be done; true when none is left. A foreground
/// `run --rm` returns once its snapshot is unmounted and renamed; its files go just after.
pub fn wait_removals(root: &Path) -> bool {
    let pending = || {
        std::fs::read_dir(root.join("storage/snapshots"))
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(".rm-"))
            })
            .unwrap_or(false)
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pending() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    !pending()
}

/// The log directory a failed build's error names ("step logs are in DIR").
pub fn step_log_dir(err: &str) -> String {
    err.split("step logs are in ")
        .nth(1)
        .and_then(|r| r.split([':', ' ', '\n']).next())
        .unwrap_or_else(|| panic!("no log directory named in: {err}"))
        .to_string()
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

/// A scratch directory below `base` owned by this test process: `keel-test-<pid>-XXXXXX`,
/// deleted on drop. A killed test process drops nothing, and its roots may hold mounts (a
/// container's rootfs, a debootstrap chroot's `/proc`): the first scratch directory a
/// process makes in a `base` sweeps that base of the directories of dead test processes.
/// A process holds a lock on its owner file (`/tmp/keel-test-owner-<pid>.lock`) for its
/// lifetime, so a directory whose owner file is unlocked (or gone) is a dead process's.
pub fn scratch_dir(base: &Path) -> tempfile::TempDir {
    claim_owner();
    static SWEPT: OnceLock<Mutex<BTreeSet<PathBuf>>> = OnceLock::new();
    let swept = SWEPT.get_or_init(Default::default);
    if swept.lock().unwrap().insert(base.to_path_buf()) {
        sweep_stale_scratch(base);
    }
    tempfile::Builder::new()
        .prefix(&format!("keel-test-{}-", std::process::id()))
        .tempdir_in(base)
        .unwrap()
}

fn owner_file(pid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/keel-test-owner-{pid}.lock"))
}

/// Takes this process's owner lock, once; held until the process ends.
fn claim_owner() {
    static OWNER: OnceLock<File> = OnceLock::new();
    OWNER.get_or_init(|| loop {
        let path = owner_file(std::process::id());
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        f.lock().unwrap();
        // A sweeper may have unlinked the file of a dead process with this pid after
        // we opened it: the lock counts only on the file at the path.
        let same = std::fs::metadata(&path).is_ok_and(|m| m.ino() == f.metadata().unwrap().ino());
        if same {
            sweep_dead_owner_files();
            return f;
        }
    });
}

/// Owner files of dead processes (their directories count as dead without them too).
fn sweep_dead_owner_files() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("keel-test-owner-")
            .and_then(|n| n.strip_suffix(".lock"))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(Some(Some(_lock))) = pid.map(dead_owner) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The pid in a scratch directory's name `keel-test-<pid>-XXXXXX`. (Roots made before
/// owners were recorded, `keel-test-XXXXXX`, carry no pid: see [`unowned_scratch`].)
fn scratch_owner(name: &str) -> Option<u32> {
    let (pid, rest) = name.strip_prefix("keel-test-")?.split_once('-')?;
    (!rest.is_empty() && !rest.contains('-')).then_some(())?;
    pid.parse().ok()
}

/// A scratch directory made before owners were recorded: `keel-test-XXXXXX` (tempfile's
/// six random characters, no pid). Only a dead test run can have made one.
fn unowned_scratch(name: &str) -> bool {
    name.strip_prefix("keel-test-")
        .is_some_and(|r| r.len() == 6 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Unowned scratch directories are this old before the sweep takes them: no test process
/// runs for a day, and a young one may be a test binary's of an older checkout running
/// beside this one.
const UNOWNED_SCRATCH_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn older_than(e: &std::fs::DirEntry, age: std::time::Duration) -> bool {
    e.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|a| a > age)
}

/// The owner lock of `pid` when that process is gone (taken here: held while its
/// directories are swept, so a new process that reuses the pid waits for the sweep).
fn dead_owner(pid: u32) -> Option<Option<File>> {
    let Ok(f) = File::open(owner_file(pid)) else {
        return Some(None);
    };
    f.try_lock().ok().map(|()| Some(f))
}

/// Removes the scratch directories in `base` of dead test processes, and unowned ones
/// (`keel-test-XXXXXX`, from runs before owners were recorded) once a day old: what is
/// mounted below one is detached (lazily) first, and one that still has a mount is left
/// whole. Returns the directories removed.
pub fn sweep_stale_scratch(base: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(base) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let _lock = match scratch_owner(&name) {
            Some(pid) if pid == std::process::id() => continue,
            Some(pid) => match dead_owner(pid) {
                Some(lock) => lock,
                None => continue,
            },
            None if unowned_scratch(&name) && older_than(&e, UNOWNED_SCRATCH_AGE) => None,
            None => continue,
        };
        if sweep_scratch(&e.path()) {
            removed.push(e.path());
        }
    }
    removed
}

/// Detaches every mount below `dir` and deletes it; false (and why, on stderr) when a
/// mount stays or the deletion fails.
fn sweep_scratch(dir: &Path) -> bool {
    // Deepest first; a few passes for mounts stacked on one point.
    for _ in 0..8 {
        for m in mounts_below(dir).iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let left = mounts_below(dir);
    if !left.is_empty() {
        eprintln!(
            "not sweeping {}: still mounted there: {left:?}",
            dir.display()
        );
        return false;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("sweeping {}: {e}", dir.display());
            false
        }
    }
}

/// Mount points at or below `dir` in this process's mount namespace, outermost first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// mountinfo writes space, tab, newline and backslash in paths as octal escapes.
fn unescape_mountinfo(p: &str) -> String {
    let mut out = Vec::new();
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .and_then(|o| std::str::from_utf8(o).ok());
        match oct.map(|o| u8::from_str_radix(o, 8)) {
            Some(Ok(c)) if b[i] == b'\\' => {
                out.push(c);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Session 6 follow-up: a killed test run left `/tmp/keel-test-*` roots behind, one with
/// a debootstrap chroot's `/proc` still mounted inside. The sweep removes a dead test
/// process's directory, detaching its (nested) mounts first, and leaves alone the
/// directory of a live test process (mount included) and a young root without an owner
/// pid. Session 8 item 3: a day-old root without an owner pid (`keel-test-XXXXXX`, from
/// runs before owners were recorded) was never swept; it is now, mounts first.
/// (This file is shared by tests/it, tests/security and tests/diff: each runs it.)
#[test]
fn a_killed_test_process_scratch_dir_is_swept_with_its_mounts() {
    crate::require!(is_root(), "mounting needs root");
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    // Owned itself: should this test die half-way, the next run sweeps it.
    let base = scratch_dir(&std::env::temp_dir());
    // Test processes as sh processes that exec flock(1) on their owner file: one
    // finished (its lock is free), one alive (holding it). `--no-fork`: flock becomes the
    // command, so killing `live` kills the process holding the lock (a forked `sleep 600`
    // outlived the test by ten minutes, holding the harness's output pipe open).
    let owner = "exec flock --no-fork /tmp/keel-test-owner-$$.lock";
    let mut dead = Command::new("sh")
        .args(["-c", &format!("{owner} true")])
        .spawn()
        .unwrap();
    assert!(dead.wait().unwrap().success());
    let mut live = Command::new("sh")
        .args(["-c", &format!("{owner} sleep 600")])
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if dead_owner(live.id()).is_none() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(
        dead_owner(live.id()).is_none(),
        "the live owner never took its lock"
    );
    let tmpfs = |at: &Path| {
        std::fs::create_dir_all(at).unwrap();
        let none: Option<&str> = None;
        mount(Some("tmpfs"), at, Some("tmpfs"), MsFlags::empty(), none).unwrap();
    };
    let stale = base.path().join(format!("keel-test-{}-aBc123", dead.id()));
    let chroot = stale.join("root/storage/chroot");
    tmpfs(&chroot);
    std::fs::create_dir(chroot.join("proc")).unwrap();
    let none: Option<&str> = None;
    mount(
        Some("proc"),
        &chroot.join("proc"),
        Some("proc"),
        MsFlags::empty(),
        none,
    )
    .unwrap();
    let running = base.path().join(format!("keel-test-{}-dEf456", live.id()));
    tmpfs(&running.join("root/mnt"));
    let unowned = base.path().join("keel-test-gHi789");
    std::fs::create_dir(&unowned).unwrap();
    let unowned_old = base.path().join("keel-test-jKl012");
    tmpfs(&unowned_old.join("root/storage/snapshots/x/rootfs"));
    let two_days = std::time::Duration::from_secs(2 * 24 * 3600);
    File::open(&unowned_old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - two_days)
        .unwrap();
    assert_eq!(mounts_below(&stale).len(), 2);

    let removed = sweep_stale_scratch(base.path());
    let still_mounted = mounts_below(&running);
    let _ = live.kill();
    let _ = live.wait();
    for m in &still_mounted {
        let _ = umount2(m, MntFlags::MNT_DETACH);
    }
    for pid in [dead.id(), live.id()] {
        let _ = std::fs::remove_file(owner_file(pid));
    }
    let mut removed = removed;
    removed.sort();
    let mut want = vec![stale.clone(), unowned_old.clone()];
    want.sort();
    assert_eq!(removed, want);
    assert!(!stale.exists() && mounts_below(&stale).is_empty());
    assert!(!unowned_old.exists() && mounts_below(&unowned_old).is_empty());
    assert_eq!(
        still_mounted,
        vec![running.join("root/mnt")],
        "the live one's mount"
    );
    assert!(running.exists() && unowned.exists());
}
