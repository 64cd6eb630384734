//! Buildpack builds and deploys (issue 18, docs/buildpacks.md): the shipped buildpacks
//! build the apps of testdata/apps on keel's Debian stack, the images answer HTTP, a
//! second build reuses CACHE_DIR, multi-buildpack apps see earlier buildpacks' `export`,
//! a failing compile tags nothing, and `git push` deploys with no downtime.
//!
//! The stack (`keel bootstrap stack`) is made once per package list and kept outside the
//! clone: /var/cache/keel-test/stack-<hash>/ holds debootstrap's and apt's downloads
//! (`debs/`) and the saved images (`stack.tar`), so a warm run loads it in seconds.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::common::{have, is_root, run_ok, Keel};
use crate::require;

const BUILD_PACKAGES: &str = include_str!("../../builders/stack/build.packages");
const RUN_PACKAGES: &str = include_str!("../../builders/stack/run.packages");
const SUITE: &str = "bookworm";

fn apps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/apps")
}

/// /var/cache/keel-test/stack-<hash of the package lists and suite>.
fn stack_cache() -> PathBuf {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(BUILD_PACKAGES);
    h.update(RUN_PACKAGES);
    h.update(SUITE);
    let key = hex::encode(h.finalize());
    Path::new("/var/cache/keel-test").join(format!("stack-{}", &key[..16]))
}

/// The saved stack images, made on first use (tests share it; one thread makes it).
fn stack_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = stack_cache();
        std::fs::create_dir_all(&dir).unwrap();
        let tar = dir.join("stack.tar");
        if !tar.exists() {
            let k = Keel::new();
            let debs = dir.join("debs");
            let started = Instant::now();
            k.ok(&[
                "bootstrap",
                "stack",
                "keel-stack",
                "--suite",
                SUITE,
                "--cache-dir",
                debs.to_str().unwrap(),
            ]);
            eprintln!("bootstrapped the stack in {:?}", started.elapsed());
            let tmp = dir.join("stack.tar.tmp");
            k.ok(&[
                "save",
                "-o",
                tmp.to_str().unwrap(),
                "keel-stack-build",
                "keel-stack-run",
            ]);
            std::fs::rename(&tmp, &tar).unwrap();
        }
        tar
    })
    .clone()
}

/// A keel root holding only the loaded stack, made once per stack beside stack.tar
/// (`root/`) and never written afterwards: the tests' roots share its image store.
fn stack_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = stack_cache().join("root");
        if !dir.join("images/index.json").is_file() {
            let tar = stack_tar();
            // Loaded beside it, then renamed into place: another test run racing this
            // one finds either nothing or a whole root.
            let tmp = tempfile::Builder::new()
                .prefix(".root-")
                .tempdir_in(stack_cache())
                .unwrap();
            let t = Instant::now();
            run_ok(
                Command::new(env!("CARGO_BIN_EXE_keel"))
                    .arg("--root")
                    .arg(tmp.path().join("root"))
                    .args(["--progress", "plain", "--no-fsync", "load", "-i"])
                    .arg(&tar)
                    .env_remove("KEEL_ROOT"),
            );
            eprintln!("loaded the shared stack root in {:?}", t.elapsed());
            let _ = std::fs::remove_dir_all(&dir);
            if std::fs::rename(tmp.path().join("root"), &dir).is_err() {
                assert!(dir.join("images/index.json").is_file(), "no stack root");
            }
        }
        dir
    })
    .clone()
}

/// A fresh root with the stack in it: its image store is the shared stack root's, hard
/// linked (`cp -al`: blobs are immutable and written by rename, index.json too, so
/// nothing a test does reaches the shared copy), instead of loading 800 MB per test.
fn with_stack() -> Keel {
    let k = Keel::new();
    let shared = stack_root();
    let t = Instant::now();
    std::fs::create_dir_all(k.root()).unwrap();
    run_ok(
        Command::new("cp")
            .arg("-al")
            .arg(shared.join("images"))
            .arg(k.root().join("images")),
    );
    eprintln!("linked the stack in {:?}", t.elapsed());
    k
}

fn have_debootstrap() -> bool {
    have("debootstrap") || Path::new("/usr/sbin/debootstrap").exists()
}

/// Runs keel and returns (success, stdout + stderr).
fn keel_out(k: &Keel, args: &[&str]) -> (bool, String) {
    let out = k.cmd().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `keel buildpack build DIR -t NAME EXTRA…`: asserts success, returns all output.
fn build(k: &Keel, dir: &Path, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["buildpack", "build", dir.to_str().unwrap(), "-t", name];
    args.extend_from_slice(extra);
    let (ok, out) = keel_out(k, &args);
    assert!(ok, "keel {args:?} failed:\n{out}");
    out
}

/// One HTTP GET of `/` on 127.0.0.1:`port`: (status, body).
fn http_get(port: u16) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not HTTP: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Ok((status, body.to_string()))
}

/// Polls until `GET /` answers 200 with a body containing `want`.
fn wait_http(port: u16, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    while Instant::now() < deadline {
        match http_get(port) {
            Ok((200, body)) if body.contains(want) => return body,
            Ok((code, body)) => last = format!("{code} {body}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("port {port} never answered {want:?}; last: {last}");
}

/// The host port `keel port NAME` shows for the container's (only) published port.
fn host_port(k: &Keel, name: &str) -> u16 {
    let out = k.ok(&["port", name]);
    out.lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {out:?}"))
}

/// Builds `app` twice (the second must reuse CACHE_DIR, `cached` is the buildpack's line
/// saying so), runs it with `-p 0:0` and checks it answers `hello`; returns the two
/// build times.
fn build_run_answer(k: &Keel, app: &str, fresh: &str, cached: &str, hello: &str) -> [f64; 2] {
    let dir = apps().join(app);
    let t = Instant::now();
    let first = build(k, &dir, app, &[]);
    let t1 = t.elapsed().as_secs_f64();
    assert!(
        first.contains(fresh),
        "{app}: first build did not {fresh:?}:\n{first}"
    );
    let t = Instant::now();
    let second = build(k, &dir, app, &[]);
    let t2 = t.elapsed().as_secs_f64();
    assert!(
        second.contains(cached) && !second.contains(fresh),
        "{app}: the second build did not reuse CACHE_DIR:\n{second}"
    );
    let name = format!("{app}-web");
    k.ok(&["run", "-d", "--name", &name, "-p", "0:0", app]);
    let body = wait_http(host_port(k, &name), hello);
    assert!(
        body.contains("on web.1"),
        "{app}: DYNO is not web.1: {body}"
    );
    k.ok(&["rm", "-f", &name]);
    eprintln!("{app}: first build {t1:.1}s, second build (CACHE_DIR reused) {t2:.1}s");
    [t1, t2]
}

/// Must show: a Flask app (requirements.txt from PyPI) and an Express app (package.json
/// from npm) build with the shipped buildpacks, run with `-p 0:0` and answer HTTP on the
/// published port; a second build with unchanged dependencies reuses CACHE_DIR.
#[test]
fn r018_flask_and_express_build_answer_http_and_reuse_the_cache() {
    require!(
        is_root(),
        "buildpack builds run containers, which needs root"
    );
    require!(
        have_debootstrap(),
        "the stack needs debootstrap (apt-get install debootstrap)"
    );
    let k = with_stack();
    build_run_answer(
        &k,
        "flask",
        "Installing requirements with pip",
        "Restoring the virtualenv from the cache",
        "hello from flask",
    );
    build_run_answer(
        &k,
        "express",
        "Installing dependencies with npm ci",
        "Restoring node_modules from the cache",
        "hello from express",
    );
    // .profile.d put the virtualenv on PATH; a non-process-type argument is a command.
    let out = k.ok(&[
        "run",
        "--rm",
        "flask",
        "python",
        "-c",
        "import flask; print(flask.__version__)",
    ]);
    assert_eq!(out.trim(), "3.0.3");
    // The image: the run image plus one /app layer, the launcher as Entrypoint, the
    // buildpack pinned by digest in its record.
    let inspect: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "--type", "image", "flask"])).unwrap();
    let img = if inspect.is_array() {
        &inspect[0]
    } else {
        &inspect
    };
    let text = img.to_string();
    assert!(text.contains("/keel/launch"), "{text}");
    assert!(
        text.contains("io.keel.buildpacks") && text.contains("sha256:"),
        "{text}"
    );
    let run_layers = |name: &str| {
        let v: serde_json::Value =
            serde_json::from_str(&k.ok(&["inspect", "--type", "image", name])).unwrap();
        let v = if v.is_array() { v[0].clone() } else { v };
        v["Manifest"]["layers"].as_array().map_or(0, |l| l.len())
    };
    assert!(run_layers("keel-stack-run") > 0);
    assert_eq!(run_layers("flask"), run_layers("keel-stack-run") + 1);
}

/// Must show: with `.buildpacks` (nodejs then python) the python buildpack's compile
/// sees what the nodejs buildpack's `export` file set.
#[test]
fn r018_multi_buildpack_app_sees_the_first_buildpacks_export() {
    require!(
        is_root(),
        "buildpack builds run containers, which needs root"
    );
    require!(
        have_debootstrap(),
        "the stack needs debootstrap (apt-get install debootstrap)"
    );
    let k = with_stack();
    let out = build(&k, &apps().join("multi"), "multi", &[]);
    let nodejs = out.find("compile: nodejs").expect("nodejs compiled");
    let python = out.find("compile: python").expect("python compiled");
    assert!(nodejs < python, "nodejs must compile first:\n{out}");
    let seen = k.ok(&["run", "--rm", "multi", "cat", "/app/seen-by-python.txt"]);
    assert!(
        seen.contains("NODE_ENV=production"),
        "python did not see nodejs's export: {seen}"
    );
    assert!(seen.contains("NODE_HOME=/usr"), "{seen}");
}

/// Must show: a buildpack whose compile fails fails the build, its output is shown, and
/// nothing is tagged. Also: no buildpack detecting lists every one tried.
#[test]
fn r018_failing_compile_shows_its_output_and_tags_nothing() {
    require!(
        is_root(),
        "buildpack builds run containers, which needs root"
    );
    require!(
        have_debootstrap(),
        "the stack needs debootstrap (apt-get install debootstrap)"
    );
    let k = with_stack();
    let bp = apps().join("failing-buildpack");
    let app = apps().join("failing");
    let args = [
        "buildpack",
        "build",
        app.to_str().unwrap(),
        "-t",
        "broken",
        "--buildpack",
        bp.to_str().unwrap(),
    ];
    let (ok, out) = keel_out(&k, &args);
    assert!(!ok, "the build succeeded:\n{out}");
    assert!(out.contains("compiling with the broken buildpack"), "{out}");
    assert!(out.contains("the widget frobnicator is missing"), "{out}");
    assert!(out.contains("bin/compile failed (exit 3)"), "{out}");
    let images = k.ok(&["images"]);
    assert!(
        !images.contains("broken"),
        "a failed build tagged an image:\n{images}"
    );
    // Nothing detects an app with none of the files the shipped buildpacks look for.
    let empty = k.path("empty-app");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("README"), "nothing to build\n").unwrap();
    let err = k.fails(&["buildpack", "build", empty.to_str().unwrap(), "-t", "none"]);
    for want in [
        "no buildpack detected this app",
        "nodejs: looks for package.json",
        "python: looks for requirements.txt, pyproject.toml, Pipfile or setup.py",
        "static: looks for",
        "procfile: looks for a Procfile",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
}

/// Compatibility: the shipped static buildpack runs under the contract real Heroku
/// buildpacks follow, invoked exactly as herokuish invokes them (BUILD_DIR /tmp/build,
/// CACHE_DIR /tmp/cache, ENV_DIR /tmp/env, `bin/release BUILD_DIR CACHE_DIR` into
/// `.release`), and its release is YAML of the documented shape.
#[test]
fn r018_shipped_buildpack_follows_the_heroku_contract_as_herokuish_runs_it() {
    require!(is_root(), "keel run needs root");
    require!(
        have_debootstrap(),
        "the stack needs debootstrap (apt-get install debootstrap)"
    );
    let k = with_stack();
    let work = k.path("herokuish");
    let build_dir = work.join("build");
    std::fs::create_dir_all(build_dir.join("public")).unwrap();
    std::fs::create_dir_all(work.join("env")).unwrap();
    std::fs::write(build_dir.join("public/index.html"), "<h1>hi</h1>\n").unwrap();
    std::fs::write(work.join("env/GREETING"), "hello").unwrap();
    // herokuish clones buildpacks into a writable directory (bin/compile may write its
    // `export` file there): a copy of keel's.
    let bp = work.join("static");
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("builders/static"))
            .arg(&bp),
    );
    let script = "set -e; cd /tmp/build; bp=/tmp/buildpacks/static; \
        name=$($bp/bin/detect /tmp/build); echo \"detected: $name\"; \
        $bp/bin/compile /tmp/build /tmp/cache /tmp/env; \
        $bp/bin/release /tmp/build /tmp/cache > /tmp/build/.release";
    let v = |host: &Path, ctr: &str| format!("{}:{ctr}", host.display());
    let out = k.ok(&[
        "run",
        "--rm",
        "-v",
        &v(&build_dir, "/tmp/build"),
        "-v",
        &v(&work.join("cache"), "/tmp/cache"),
        "-v",
        &v(&work.join("env"), "/tmp/env"),
        "-v",
        &v(&bp, "/tmp/buildpacks/static"),
        "keel-stack-build",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.contains("detected: Static site"), "{out}");
    let release = std::fs::read_to_string(build_dir.join(".release")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&release).unwrap();
    let doc = &docs[0];
    assert!(doc["addons"].as_vec().is_some(), "{release}");
    let types = doc["default_process_types"].as_hash().expect("a mapping");
    assert!(
        types
            .iter()
            .all(|(k, v)| k.as_str().is_some() && v.as_str().is_some()),
        "{release}"
    );
    assert!(doc["default_process_types"]["web"]
        .as_str()
        .unwrap()
        .contains("$PORT"));
    assert!(
        bp.join("export").is_file(),
        "no export file for later buildpacks"
    );
    // .profile.d scripts use $HOME, never the build path.
    let profile = std::fs::read_to_string(build_dir.join(".profile.d/static.sh")).unwrap();
    assert!(
        profile.contains("$HOME") && !profile.contains("/tmp/build"),
        "{profile}"
    );
}

/// Stops the app's containers and router however the test ends.
struct AppGuard<'a>(&'a Keel, &'static str);

impl Drop for AppGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.cmd().args(["apps", "rm", self.1]).output();
    }
}

/// The app's URL port from `keel apps`.
fn app_port(k: &Keel, app: &str) -> u16 {
    let out = k.ok(&["apps"]);
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(app))
        .and_then(|l| l.split("http://127.0.0.1:").nth(1))
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no URL for {app} in:\n{out}"))
}

fn git(dir: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=keel", "-c", "user.email=keel@example.com"])
            .args(args),
    )
}

/// Must show: `git push` to a bare repo with the generated hook deploys v1, then v2 with
/// no moment in which the app does not answer (a client polling every 50 ms sees no
/// error), then `keel rollback` brings v1 back.
#[test]
fn r018_git_push_deploys_v1_then_v2_without_downtime_and_rollback_brings_v1_back() {
    require!(is_root(), "deploys run containers, which needs root");
    require!(
        have_debootstrap(),
        "the stack needs debootstrap (apt-get install debootstrap)"
    );
    require!(have("git"), "git is not installed");
    let k = with_stack();
    let _guard = AppGuard(&k, "site");
    let bare = k.path("site.git");
    run_ok(
        Command::new("git")
            .args(["init", "--quiet", "--bare", "-b", "main"])
            .arg(&bare),
    );
    k.ok(&[
        "integrate",
        "git-deploy",
        "site",
        "-w",
        bare.to_str().unwrap(),
    ]);
    assert!(bare.join("hooks/post-receive").is_file());
    let work = k.path("site");
    run_ok(
        Command::new("git")
            .args(["clone", "--quiet"])
            .arg(&bare)
            .arg(&work),
    );
    git(&work, &["checkout", "--quiet", "-b", "main"]);
    std::fs::create_dir_all(work.join("public")).unwrap();
    std::fs::copy(apps().join("site/static.json"), work.join("static.json")).unwrap();
    let push = |version: &str| {
        std::fs::write(
            work.join("public/index.html"),
            format!("<h1>{version}</h1>\n"),
        )
        .unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "--quiet", "-m", version]);
        let out = Command::new("git")
            .arg("-C")
            .arg(&work)
            .args(["push", "origin", "main"])
            .env("KEEL_ROOT", k.root())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "git push of {version} failed:\n{text}"
        );
        text
    };
    let out = push("v1");
    assert!(out.contains("site v1 is up"), "{out}");
    let port = app_port(&k, "site");
    wait_http(port, "v1");
    // A client polling every 50 ms through the whole v1 → v2 swap.
    let stop = Arc::new(AtomicBool::new(false));
    let (errors, seen_v2) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let poller = {
        let (stop, errors, seen_v2) = (stop.clone(), errors.clone(), seen_v2.clone());
        std::thread::spawn(move || {
            let mut polls = 0;
            while !stop.load(Ordering::SeqCst) {
                polls += 1;
                match http_get(port) {
                    Ok((200, body)) if body.contains("v1") || body.contains("v2") => {
                        if body.contains("v2") {
                            seen_v2.store(true, Ordering::SeqCst);
                        }
                    }
                    other => {
                        eprintln!("poll {polls}: {other:?}");
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            polls
        })
    };
    let out = push("v2");
    assert!(out.contains("site v2 is up"), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let polls = poller.join().unwrap();
    assert!(polls > 10, "the client polled only {polls} times");
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "the client saw errors during the deploy"
    );
    assert!(seen_v2.load(Ordering::SeqCst), "the client never saw v2");
    let ps = k.ok(&["ps", "--app", "site"]);
    assert!(
        ps.contains("site.v2.web.1") && !ps.contains("site.v1.web.1"),
        "{ps}"
    );
    k.ok(&["logs", "--app", "site"]);
    k.ok(&["rollback", "site"]);
    assert_eq!(app_port(&k, "site"), port, "the app's address changed");
    wait_http(port, "v1");
    let apps = k.ok(&["apps"]);
    assert!(apps.contains("rollback to v1"), "{apps}");
}

/// A root with busybox as `bb`, the base of the Dockerfile apps below.
fn with_busybox() -> Keel {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    k
}

/// A copy of testdata/apps/`app` in `k`'s temp dir (deploys change it).
fn app_copy(k: &Keel, app: &str) -> PathBuf {
    let dir = k.path(app);
    run_ok(Command::new("cp").arg("-r").arg(apps().join(app)).arg(&dir));
    dir
}

/// `keel deploy ARGS…`: asserts success, returns stdout + stderr.
fn deploy(k: &Keel, args: &[&str]) -> String {
    let mut all = vec!["deploy"];
    all.extend_from_slice(args);
    let (ok, out) = keel_out(k, &all);
    assert!(ok, "keel {all:?} failed:\n{out}");
    out
}

/// Runs `swap` while a client polls `GET /` on `port` every 50 ms; asserts that every
/// poll answered 200 with `old` or `new` and that `new` was seen.
fn without_downtime(port: u16, old: &'static str, new: &'static str, swap: impl FnOnce()) {
    let stop = Arc::new(AtomicBool::new(false));
    let (errors, seen_new) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let poller = {
        let (stop, errors, seen_new) = (stop.clone(), errors.clone(), seen_new.clone());
        std::thread::spawn(move || {
            let mut polls = 0;
            while !stop.load(Ordering::SeqCst) {
                polls += 1;
                match http_get(port) {
                    Ok((200, body)) if body.contains(old) || body.contains(new) => {
                        if body.contains(new) {
                            seen_new.store(true, Ordering::SeqCst);
                        }
                    }
                    other => {
                        eprintln!("poll {polls}: {other:?}");
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            polls
        })
    };
    swap();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let polls = poller.join().unwrap();
    assert!(polls > 10, "the client polled only {polls} times");
    assert_eq!(errors.load(Ordering::SeqCst), 0, "the client saw errors");
    assert!(
        seen_new.load(Ordering::SeqCst),
        "the client never saw {new}"
    );
}

/// `keel logs --app APP -f` in the background, its stdout lines sent to the receiver.
fn follow_logs(k: &Keel, app: &str) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = k
        .cmd()
        .args(["logs", "--app", app, "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits up to 20 s for a line containing `want`; returns every line read.
fn wait_line(rx: &std::sync::mpsc::Receiver<String>, want: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains(want);
                seen.push(line);
                if hit {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no line with {want:?} in 20 s; read: {seen:?}");
}

/// Issue 18 gap: `keel deploy` of an app with a Dockerfile (and no buildpack) builds it
/// with keel's Dockerfile front end; web runs the image's CMD with PORT passed in, or
/// the Procfile's web line; v1 → v2 swaps with no failed request; rollback brings v1
/// back; `keel logs --app -f` follows the new release's output.
#[test]
fn r018_dockerfile_app_deploys_swaps_without_downtime_and_rolls_back() {
    require!(is_root(), "deploys run containers, which needs root");
    let k = with_busybox();
    let _guard = AppGuard(&k, "dapp");
    let dir = app_copy(&k, "dockerfile");
    let out = deploy(&k, &["dapp", "--path", dir.to_str().unwrap()]);
    assert!(
        out.contains("Dockerfile") && out.contains("tagged dapp:v1"),
        "{out}"
    );
    assert!(out.contains("dapp v1 is up"), "{out}");
    let port = app_port(&k, "dapp");
    wait_http(port, "v1 from a Dockerfile");
    // v2: a Procfile's web line overrides the image's CMD (through /bin/sh -c, with
    // $PORT), and the app directory is the one remembered from v1.
    std::fs::write(
        dir.join("Procfile"),
        "web: echo 'v2 from the Procfile' > /www/index.html && exec httpd -f -v -p $PORT -h /www\n",
    )
    .unwrap();
    without_downtime(port, "v1 from a Dockerfile", "v2 from the Procfile", || {
        let out = deploy(&k, &["dapp"]);
        assert!(out.contains("dapp v2 is up"), "{out}");
    });
    let ps = k.ok(&["ps", "--app", "dapp"]);
    assert!(
        ps.contains("dapp.v2.web.1") && !ps.contains("dapp.v1.web.1"),
        "{ps}"
    );
    without_downtime(port, "v2 from the Procfile", "v1 from a Dockerfile", || {
        k.ok(&["rollback", "dapp"]);
    });
    assert!(k.ok(&["apps"]).contains("rollback to v1"));
    // `keel logs --app -f`: the health checks' lines, then a line for a request made
    // after it started (httpd -v logs each response).
    let (mut child, rx) = follow_logs(&k, "dapp");
    let first = wait_line(&rx, "web.1| ");
    assert!(first[0].starts_with("web.1| "), "{first:?}");
    std::thread::sleep(Duration::from_millis(300));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /no-such-page HTTP/1.0\r\n\r\n").unwrap();
    let _ = s.read_to_end(&mut Vec::new());
    wait_line(&rx, "response:404");
    assert!(
        child.try_wait().unwrap().is_none(),
        "logs -f ended by itself"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Issue 18 gap: the TCP health check. An app that accepts TCP but speaks no HTTP (an
/// echo server) deploys with `--check tcp`; a release whose web never listens fails the
/// deploy after `--timeout`, its containers are removed and the previous one serves on.
#[test]
fn r018_tcp_check_deploys_a_non_http_app_and_a_silent_release_fails() {
    require!(is_root(), "deploys run containers, which needs root");
    let k = with_busybox();
    let _guard = AppGuard(&k, "echo");
    let dir = k.path("echo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM bb\nCMD nc -ll -p $PORT -e cat\n",
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let out = deploy(
        &k,
        &["echo", "--path", d, "--check", "tcp", "--timeout", "30"],
    );
    assert!(out.contains("echo v1 is up"), "{out}");
    let port = app_port(&k, "echo");
    let echo = || -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"ping\n").unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).unwrap();
        String::from_utf8_lossy(&b).into_owned()
    };
    assert_eq!(echo(), "ping\n");
    // v2's web never listens.
    std::fs::write(dir.join("Procfile"), "web: sleep 1000\n").unwrap();
    let t = Instant::now();
    let (ok, out) = keel_out(&k, &["deploy", "echo", "--check", "tcp", "--timeout", "5"]);
    assert!(!ok, "a release that never listens deployed:\n{out}");
    assert!(
        out.contains("release v2 of echo did not answer on its web port within 5s")
            && out.contains("the previous release keeps running"),
        "{out}"
    );
    assert!(
        t.elapsed() >= Duration::from_secs(5),
        "failed before the timeout"
    );
    assert_eq!(echo(), "ping\n", "the previous release stopped serving");
    let ps = k.ok(&["ps", "-a"]);
    assert!(
        ps.contains("echo.v1.web.1") && !ps.contains("echo.v2"),
        "{ps}"
    );
}

/// Issue 18 gap: `keel deploy --scale web=2` runs two web containers; both answer on
/// their own ports, both are in `keel ps --app`, and the router spreads requests.
#[test]
fn r018_deploy_scale_web_2_runs_two_answering_web_containers() {
    require!(is_root(), "deploys run containers, which needs root");
    let k = with_busybox();
    let _guard = AppGuard(&k, "pair");
    let dir = k.path("pair");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM bb\nRUN mkdir /www\nCMD echo \"i am $DYNO\" > /www/index.html && exec httpd -f -p $PORT -h /www\n",
    )
    .unwrap();
    let out = deploy(
        &k,
        &["pair", "--path", dir.to_str().unwrap(), "--scale", "web=2"],
    );
    assert!(out.contains("pair v1 is up"), "{out}");
    let ps = k.ok(&["ps", "--app", "pair"]);
    for i in [1, 2] {
        let name = format!("pair.v1.web.{i}");
        assert!(ps.contains(&name), "{ps}");
        wait_http(host_port(&k, &name), &format!("i am web.{i}"));
    }
    let port = app_port(&k, "pair");
    let bodies: Vec<String> = (0..6).map(|_| http_get(port).unwrap().1).collect();
    for i in [1, 2] {
        assert!(
            bodies.iter().any(|b| b.contains(&format!("i am web.{i}"))),
            "the router never reached web.{i}: {bodies:?}"
        );
    }
    assert!(k.ok(&["apps"]).contains("web=2"));
}

/// A one-shot `python3 -m http.server` serving `dir` on 127.0.0.1; its access log goes
/// to `log`.
fn http_server(dir: &Path, log: &Path) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir)
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::options().append(true).open(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "http.server never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, port)
}

/// The `io.keel.buildpacks` label of image `name` (what the build pinned).
fn pinned(k: &Keel, name: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "--type", "image", name])).unwrap();
    let v = if v.is_array() { v[0].clone() } else { v };
    v.to_string()
}

/// Issue 18 gap: a tarball-URL and a git-URL buildpack build end to end (on a busybox
/// stack: the hello buildpack needs only sh); each is pinned by its tree digest (the
/// git one by the commit its `#REF` names too) and a second build does not fetch it again.
#[test]
fn r018_tarball_and_git_buildpacks_are_fetched_once_and_pinned() {
    require!(
        is_root(),
        "buildpack builds run containers, which needs root"
    );
    require!(have("python3") && have("git"), "needs python3 and git");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bbstack-build"]);
    k.ok(&["tag", "bbstack-build", "bbstack-run"]);
    let app = apps().join("hello");
    let bp = apps().join("hello-buildpack");
    let serve = k.path("serve");
    std::fs::create_dir_all(&serve).unwrap();
    run_ok(
        Command::new("tar")
            .arg("czf")
            .arg(serve.join("hello.tgz"))
            .arg("-C")
            .arg(&bp)
            .arg("."),
    );
    let log = k.path("http.log");
    let (mut server, port) = http_server(&serve, &log);
    let url = format!("http://127.0.0.1:{port}/hello.tgz");
    let stack = ["--stack", "bbstack", "--buildpack"];
    let out = build(&k, &app, "tar1", &[stack[0], stack[1], stack[2], &url]);
    assert!(out.contains("hello buildpack: compiling"), "{out}");
    let ran = k.ok(&["run", "--rm", "tar1"]);
    assert!(
        ran.contains("compiled by the hello buildpack: hi there"),
        "{ran}"
    );
    let label = pinned(&k, "tar1");
    assert!(label.contains(&url) && label.contains("sha256:"), "{label}");
    // The server is gone: a second build uses the copy in the root.
    server.kill().unwrap();
    server.wait().unwrap();
    build(&k, &app, "tar2", &[stack[0], stack[1], stack[2], &url]);
    let gets = std::fs::read_to_string(&log).unwrap();
    assert_eq!(gets.matches("GET /hello.tgz").count(), 1, "{gets}");
    assert!(pinned(&k, "tar2").contains(&url));
    // A git repository, by file:// URL.
    let repo = k.path("hello-buildpack.git");
    run_ok(Command::new("cp").arg("-r").arg(&bp).arg(&repo));
    run_ok(
        Command::new("git")
            .args(["init", "--quiet", "-b", "main"])
            .arg(&repo),
    );
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "hello buildpack"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();
    // A later commit: `#<full commit id>` fetches the one named, not the head.
    std::fs::write(repo.join("NOTES"), "later\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "later"]);
    let head = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();
    let git_url = format!("file://{}#{commit}", repo.display());
    build(&k, &app, "git1", &[stack[0], stack[1], stack[2], &git_url]);
    let label = pinned(&k, "git1");
    assert!(
        label.contains(&commit) && !label.contains(&head) && label.contains("sha256:"),
        "{label}"
    );
    std::fs::rename(&repo, k.path("moved.git")).unwrap();
    build(&k, &app, "git2", &[stack[0], stack[1], stack[2], &git_url]);
    assert!(pinned(&k, "git2").contains(&commit));
}

/// The pid of the app's router (`keel apps up` once a process manager runs it).
fn router_pid(k: &Keel, app: &str) -> Option<i32> {
    let text = std::fs::read_to_string(k.root().join("apps").join(app).join("app.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["router_pid"].as_i64().map(|p| p as i32)
}

/// Waits until the app's router is a `keel apps up` (the process manager's) other
/// than `not`; returns its pid.
fn wait_new_router(k: &Keel, app: &str, not: Option<i32>) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = router_pid(k, app).filter(|p| Some(*p) != not) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("apps\0up\0") {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no new router for {app}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A "reboot" of the app: everything keel started for it is killed (its containers
/// removed, the router process killed); the process manager must bring it back on the
/// same port.
fn reboot_and_recover(k: &Keel, app: &str, port: u16, want: &str) {
    let before = wait_new_router(k, app, None);
    wait_http(port, want);
    let ids = k.ok(&["ps", "--app", app, "-q"]);
    assert!(!ids.trim().is_empty(), "{app} runs no container");
    run_ok(Command::new("kill").args(["-KILL", &before.to_string()]));
    for name in k
        .ok(&["ps", "--app", app, "--format", "{{.Names}}"])
        .lines()
    {
        let _ = k.cmd().args(["rm", "-f", name.trim()]).output();
    }
    wait_new_router(k, app, Some(before));
    wait_http(port, want);
    let after = k.ok(&["ps", "--app", app, "-q"]);
    assert!(
        !after.trim().is_empty() && after.lines().all(|id| !ids.contains(id)),
        "the containers were not started again: before {ids:?}, after {after:?}"
    );
    let ps = k.ok(&["ps", "--app", app]);
    assert!(ps.contains(&format!("{app}.v1.web.1")), "{ps}");
}

/// Deploys the Dockerfile app as `app` and writes `keel integrate TOOL --app APP` into
/// `out` (a dir); returns the app's port.
fn deploy_for_glue(k: &Keel, app: &str, tool: &str, out: &Path) -> u16 {
    let dir = app_copy(k, "dockerfile");
    deploy(k, &[app, "--path", dir.to_str().unwrap()]);
    std::fs::create_dir_all(out).unwrap();
    k.ok(&["integrate", tool, "--app", app, "-w", out.to_str().unwrap()]);
    app_port(k, app)
}

/// Issue 18 gap: `keel integrate supervisord --app APP` keeps a deployed app up under a
/// real supervisord: it answers, comes back after a "reboot", and `supervisorctl
/// shutdown` stops its containers.
#[test]
fn r018_supervisord_keeps_a_deployed_app_up_across_a_reboot() {
    require!(
        is_root() && have("supervisord"),
        "needs root and supervisor"
    );
    let k = with_busybox();
    let _guard = AppGuard(&k, "supapp");
    let glue = k.path("glue");
    let port = deploy_for_glue(&k, "supapp", "supervisord", &glue);
    let d = k.path("sup");
    std::fs::create_dir_all(&d).unwrap();
    let conf = crate::integrate::supervisord_conf(&d, &glue.join("keel-supapp.conf"));
    // As at boot: no KEEL_ROOT but the one the glue pins.
    let mut sup = Command::new("supervisord")
        .arg("-c")
        .arg(&conf)
        .env_remove("KEEL_ROOT")
        .spawn()
        .unwrap();
    reboot_and_recover(&k, "supapp", port, "v1 from a Dockerfile");
    run_ok(
        Command::new("supervisorctl")
            .arg("-c")
            .arg(&conf)
            .arg("shutdown"),
    );
    sup.wait().unwrap();
    assert!(http_get(port).is_err(), "still answering after shutdown");
    let ps = k.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!ps.contains("supapp."), "containers left behind: {ps}");
}

/// Issue 18 gap: `keel integrate runit --app APP` under a real runsv: the app answers,
/// comes back after a "reboot", and `sv down` stops its containers.
#[test]
fn r018_runit_keeps_a_deployed_app_up_across_a_reboot() {
    require!(is_root() && have("runsv"), "needs root and runit");
    let k = with_busybox();
    let _guard = AppGuard(&k, "runapp");
    let glue = k.path("glue");
    let port = deploy_for_glue(&k, "runapp", "runit", &glue);
    let sdir = glue.join("runapp");
    let mut runsv = Command::new("runsv")
        .arg(&sdir)
        .env_remove("KEEL_ROOT")
        .spawn()
        .unwrap();
    reboot_and_recover(&k, "runapp", port, "v1 from a Dockerfile");
    run_ok(Command::new("sv").args(["-w", "30", "down"]).arg(&sdir));
    assert!(http_get(port).is_err(), "still answering after sv down");
    let ps = k.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!ps.contains("runapp."), "containers left behind: {ps}");
    run_ok(Command::new("sv").args(["-w", "30", "exit"]).arg(&sdir));
    runsv.wait().unwrap();
}
