//! Temp names that say their writer (session 9, item 4). A keel killed while a container
//! record or a remote ADD download (here) or a push memo (registry.rs) is in its temp file
//! leaves a name carrying its owner tag (`.<name>.p<pid>s<start>-XXXXXX.tmp`), and the
//! next `keel gc` takes it at once; the same name of a keel that still runs stays. Before,
//! those names were random (`.tmpXXXXXX`, kept a day) or pid-only (kept a day whenever
//! the pid had been taken again).
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use crate::common::{is_root, Keel};
use crate::require;
use keel::store::lease::Owner;
use keel::sys::hostfs::{temp_writer, TempWriter};

/// Runs `cmd` (a keel command) with `KEEL_FAULT_POINT=hostfs.temp-written@AT`: it must die
/// of SIGKILL there. Returns the temp name it left below `dir`, found by the owner tag
/// that names the killed process.
pub fn killed_writing(mut cmd: std::process::Command, at: &str, dir: &Path) -> PathBuf {
    let child = cmd
        .env("KEEL_FAULT_POINT", format!("hostfs.temp-written@{at}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{cmd:?} was not killed at {at}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .map(|e| e.into_path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            matches!(temp_writer(&name), Some(TempWriter::Owner(o)) if o.pid == pid)
        });
    found.unwrap_or_else(|| {
        let all: Vec<_> = walkdir::WalkDir::new(dir).into_iter().flatten().collect();
        panic!("no temp name of pid {pid} below {}: {all:?}", dir.display())
    })
}

/// A process that runs until dropped, and the temp names it would write.
pub struct LiveWriter(std::process::Child);

impl LiveWriter {
    pub fn start() -> LiveWriter {
        let sleep = std::process::Command::new("sleep").arg("600").spawn();
        LiveWriter(sleep.unwrap())
    }

    /// Writes, beside `leftover`, the temp name this live process would have left there.
    pub fn plant_beside(&self, leftover: &Path) -> PathBuf {
        let pid = self.0.id() as i32;
        let start = keel::sys::proc::start_time(pid).unwrap();
        let tag = Owner { pid, start }.tag();
        let p = leftover.with_file_name(format!(".live.{tag}-AbC123.tmp"));
        std::fs::write(&p, "being written").unwrap();
        p
    }
}

impl Drop for LiveWriter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `keel gc` removes every one of `gone` and none of `kept`.
pub fn gc_takes_only_the_dead(k: &Keel, gone: &[PathBuf], kept: &[PathBuf]) {
    let out = k.ok(&["gc"]);
    for p in gone {
        assert!(!p.exists(), "gc left {}: {out}", p.display());
    }
    for p in kept {
        assert!(p.exists(), "gc took a live writer's {}: {out}", p.display());
    }
}

/// Serves `body` for every GET on 127.0.0.1 (HTTP/1.1, one request per connection);
/// returns the base URL. The thread ends with the test process.
fn serve(body: &'static [u8]) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn
                .write_all(head.as_bytes())
                .and_then(|_| conn.write_all(body));
        }
    });
    base
}

/// A container record (`keel rename` rewrites its config.json) and a remote ADD download,
/// each killed in its temp file: gc takes both at once and keeps a live keel's beside
/// them; the record and the build are whole afterwards.
#[test]
fn killed_writers_temp_names_go_at_once_and_live_ones_stay() {
    require!(is_root(), "keel run and build need root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    k.ok(&["run", "--name", "c", "bb", "true"]);
    let mut rename = k.cmd();
    rename.args(["rename", "c", "d"]);
    let record = killed_writing(rename, "containers/", &k.root().join("containers"));
    assert!(
        record.to_string_lossy().contains(".config.json."),
        "{}",
        record.display()
    );
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let url = format!("{}/f.txt", serve(b"payload\n"));
    let dockerfile = format!("FROM bb\nADD {url} /f.txt\n");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let ctx_s = ctx.display().to_string();
    let mut build = k.cmd();
    build.args(["build", "-t", "app", &ctx_s]);
    let blobs = k.root().join("cache/remote/blobs");
    let download = killed_writing(build, "cache/remote/blobs", &blobs);
    let live = LiveWriter::start();
    let kept = [live.plant_beside(&record), live.plant_beside(&download)];
    gc_takes_only_the_dead(&k, &[record, download], &kept);
    k.ok(&["rename", "c", "d"]);
    k.ok(&["build", "-t", "app", &ctx_s]);
    assert_eq!(k.ok(&["run", "--rm", "app", "cat", "/f.txt"]), "payload\n");
}

/// `keel bootstrap busybox --platform <foreign> --cache-dir DIR`, DIR outside the root
/// (where gc never looks): a bootstrap killed with the package downloaded leaves its
/// scratch directory, named for it, in DIR (it was `.download-XXXXXX`, there for good).
/// The next bootstrap with DIR removes it, keeps a live keel's, and completes.
#[test]
fn a_killed_bootstraps_download_goes_with_the_next_bootstrap() {
    require!(is_root(), "bootstrapping needs root");
    if let Err(why) = crate::crossarch::emulation() {
        require!(false, why);
    }
    let k = Keel::new();
    let cache = k.path("busybox-cache");
    let platform = format!("linux/{}", crate::crossarch::foreign().0);
    let bootstrap = |delay: Option<&str>| {
        let mut c = k.cmd();
        c.args(["bootstrap", "busybox", "bbf", "--platform", &platform])
            .arg("--cache-dir")
            .arg(&cache)
            .stdin(std::process::Stdio::null());
        if let Some(d) = delay {
            c.env("KEEL_FAULT_DELAY", d);
        }
        c
    };
    let mut first = bootstrap(Some("bootstrap.downloaded=120000"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id() as i32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(100);
    let scratch = loop {
        let downloaded = std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| {
                let deb = std::fs::read_dir(e.path()).into_iter().flatten().flatten();
                deb.map(|f| f.file_name().to_string_lossy().into_owned())
                    .any(|n| n.ends_with(".deb"))
            });
        // Killed in the delay, once apt-get is done: no child is left writing there.
        let children = format!("/proc/{pid}/task/{pid}/children");
        let alone = std::fs::read_to_string(children).is_ok_and(|c| c.trim().is_empty());
        if let Some(e) = downloaded.filter(|_| alone) {
            let name = e.file_name().to_string_lossy().into_owned();
            let mine = matches!(temp_writer(&name), Some(TempWriter::Owner(o)) if o.pid == pid);
            assert!(
                mine,
                "the download directory {name} does not name its keel ({pid})"
            );
            break e.path();
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the bootstrap ended before its download was seen in {}",
            cache.display()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no download in {}",
            cache.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(scratch.is_dir(), "{}", scratch.display());
    let live = LiveWriter::start();
    let kept = live.plant_beside(&scratch);
    let out = bootstrap(None).output().unwrap();
    crate::common::assert_success(&out, "the bootstrap after the killed one");
    assert!(
        !scratch.exists(),
        "the killed bootstrap's {} was left",
        scratch.display()
    );
    assert!(kept.exists(), "a live keel's {} was taken", kept.display());
    let left: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left.len(),
        2,
        "the unpacked package and the live name: {left:?}"
    );
}

/// A build killed while its RUN step runs leaves the step's `/etc` files and its secret
/// mount's directory in the store's `tmp/`, named for it: `keel gc` takes them at once,
/// even while another build holds a lease. They were `etc-XXXXXX` and `secrets-XXXXXX`,
/// which gc took only when no keel ran at all.
#[test]
fn a_killed_run_steps_etc_and_secret_dirs_go_with_the_next_gc() {
    require!(is_root(), "keel build needs root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let run = "RUN --mount=type=secret,id=s cat /run/secrets/s >/dev/null; sleep 5\n";
    std::fs::write(ctx.join("Dockerfile"), format!("FROM bb\n{run}")).unwrap();
    let secret = k.path("s.txt");
    std::fs::write(&secret, "hush\n").unwrap();
    let ctx_s = ctx.display().to_string();
    let secret_arg = format!("id=s,src={}", secret.display());
    let build = |tag: &str| {
        let mut c = k.cmd();
        c.args([
            "build",
            "--no-cache",
            "--secret",
            &secret_arg,
            "-t",
            tag,
            &ctx_s,
        ]);
        c
    };
    let out = build("killed")
        .env("KEEL_FAULT_POINT", "build.run-started")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "the build was not killed");
    let tmp = k.root().join("tmp");
    let left = |what: &str| -> Vec<PathBuf> {
        std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().contains(what))
            .collect()
    };
    let killed: Vec<PathBuf> = [left("-etc-"), left("-secrets-")].concat();
    assert_eq!(
        killed.len(),
        2,
        "the kill left {killed:?} in {}",
        tmp.display()
    );
    for p in &killed {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(Owner::from_tag(&name).is_some(), "untagged: {name}");
    }
    let mut live = build("live")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while left("-secrets-").len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the live build never ran its step"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    gc_takes_only_the_dead(&k, &killed, &[]);
    assert_eq!(
        left("-secrets-").len(),
        1,
        "gc took the live build's secrets"
    );
    assert!(live.wait().unwrap().success(), "the live build failed");
    k.ok(&["gc"]);
    assert_eq!(left("-"), Vec::<PathBuf>::new());
}
