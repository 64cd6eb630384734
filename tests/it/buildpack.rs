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

/// A root with the stack loaded.
fn with_stack() -> Keel {
    let k = Keel::new();
    // A throwaway root: no fsync (the blobs are still written atomically).
    let t = Instant::now();
    k.ok(&["--no-fsync", "load", "-i", stack_tar().to_str().unwrap()]);
    eprintln!("loaded the stack in {:?}", t.elapsed());
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
        v["RootFS"]["Layers"].as_array().map_or(0, |l| l.len())
    };
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
