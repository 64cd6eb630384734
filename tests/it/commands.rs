//! The container commands and flags docker users reach for (issue 12): start, restart,
//! `run --restart`, `--init`/`--no-init`, cp both ways, logs --tail/--since/--timestamps,
//! ps --filter/--format, inspect of containers, rename, top, stats, system df/prune.
//! Each drives the real binary as a user would.
use std::time::{Duration, Instant};

use crate::common::{is_root, Keel};
use crate::require;

fn with_busybox() -> Keel {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    k
}

/// Polls `f` until it holds (up to 20 s); panics with `what` otherwise.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn inspect(k: &Keel, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", name])).unwrap();
    v[0].clone()
}

fn status(k: &Keel, name: &str) -> String {
    inspect(k, name)["State"]["Status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn restart_policy_on_failure_is_kept_by_the_supervisor() {
    require!(is_root(), "keel run needs root");
    let k = with_busybox();
    k.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "bb",
        "sh",
        "-c",
        "echo attempt; exit 3",
    ]);
    eventually("two restarts, then exited", || {
        let v = inspect(&k, "flaky");
        v["RestartCount"] == 2 && v["State"]["Status"] == "exited"
    });
    // The supervisor has given up: no third restart.
    std::thread::sleep(Duration::from_millis(500));
    let v = inspect(&k, "flaky");
    assert_eq!(v["RestartCount"], 2);
    assert_eq!(v["State"]["ExitCode"], 3);
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "on-failure:2");
    assert_eq!(k.ok(&["logs", "flaky"]), "attempt\n".repeat(3));
    // A bad policy is a usage error before anything is made.
    let err = k.fails(&["run", "--restart", "sometimes", "bb", "true"]);
    assert!(err.contains("invalid --restart \"sometimes\""), "{err}");
    let err = k.fails(&["run", "--rm", "--restart", "always", "bb", "true"]);
    assert!(err.contains("--rm"), "{err}");
}

#[test]
fn always_restarts_until_the_user_stops_it_and_start_brings_it_back() {
    require!(is_root(), "keel run needs root");
    let k = with_busybox();
    k.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "--restart",
        "always",
        "bb",
        "sh",
        "-c",
        "echo up; sleep 0.3",
    ]);
    eventually("a restart", || {
        inspect(&k, "svc")["RestartCount"].as_u64() >= Some(1)
    });
    k.ok(&["stop", "-t", "1", "svc"]);
    eventually("stopped", || status(&k, "svc") == "exited");
    let count = inspect(&k, "svc")["RestartCount"].clone();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        status(&k, "svc"),
        "exited",
        "stop must not be undone by --restart always"
    );
    assert_eq!(inspect(&k, "svc")["RestartCount"], count);
    // start: the same container (id, rootfs) runs again.
    let id = inspect(&k, "svc")["Id"].clone();
    k.ok(&["start", "svc"]);
    eventually("running again", || status(&k, "svc") == "running");
    assert_eq!(inspect(&k, "svc")["Id"], id);
    k.ok(&["rm", "-f", "svc"]);
    // rm while the supervisor waits to restart: it stays removed.
    k.ok(&[
        "run",
        "-d",
        "--name",
        "crashy",
        "--restart",
        "always",
        "bb",
        "sh",
        "-c",
        "exit 1",
    ]);
    eventually("restarts", || {
        inspect(&k, "crashy")["RestartCount"].as_u64() >= Some(2)
    });
    k.ok(&["rm", "-f", "crashy"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!k
        .ok(&["ps", "-a", "--format", "{{.Names}}"])
        .contains("crashy"));
}

#[test]
fn start_and_restart_keep_the_rootfs_and_log() {
    require!(is_root(), "keel run needs root");
    start_and_restart(&[]);
}

/// Regression: a stopped `--isolation chroot` container exited 127 on `keel start`
/// (its command not found): the container's cleanup unmounted the snapshot's overlay
/// along with its own mounts below it, leaving an empty directory to chroot into.
#[test]
fn start_and_restart_keep_the_rootfs_and_log_under_chroot() {
    require!(is_root(), "keel run needs root");
    start_and_restart(&["--isolation", "chroot"]);
}

/// run -d, stop, start, restart, rm of one container made with `flags`: each run sees
/// the file the previous ones appended to, and the log keeps every run's lines.
fn start_and_restart(flags: &[&str]) {
    let k = with_busybox();
    let mut args = vec!["run", "-d", "--name", "web"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[
        "bb",
        "sh",
        "-c",
        "echo run >> /count; cat /count | wc -l; exec sleep 100",
    ]);
    k.ok(&args);
    eventually("first output", || k.ok(&["logs", "web"]).contains('1'));
    k.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(status(&k, "web"), "exited");
    assert_eq!(k.ok(&["start", "web"]), "web\n");
    eventually("second run", || k.ok(&["logs", "web"]).contains('2'));
    assert_eq!(status(&k, "web"), "running");
    k.ok(&["restart", "-t", "1", "web"]);
    eventually("third run", || k.ok(&["logs", "web"]).contains('3'));
    assert_eq!(status(&k, "web"), "running");
    // start of a running container is a no-op.
    k.ok(&["start", "web"]);
    k.ok(&["rm", "-f", "web"]);
    let err = k.fails(&["start", "web"]);
    assert!(err.contains("no such container"), "{err}");
}

#[test]
fn init_is_the_default_and_no_init_makes_the_command_pid_1() {
    require!(is_root(), "keel run needs root");
    let k = with_busybox();
    let pid1 = |flags: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["bb", "sh", "-c", "echo $$; cat /proc/1/cmdline; echo"]);
        k.ok(&args)
    };
    let default = pid1(&[]);
    assert!(default.starts_with("2\ninit"), "{default}");
    assert_eq!(pid1(&["--init"]), default);
    let no_init = pid1(&["--no-init"]);
    assert!(no_init.starts_with("1\nsh"), "{no_init}");
    let err = k.fails(&["run", "--init", "--isolation", "oci", "bb", "true"]);
    assert!(err.contains("--init needs --isolation namespaces"), "{err}");
}

#[test]
fn cp_copies_both_ways_through_the_container_root() {
    require!(is_root(), "keel run needs root");
    let k = with_busybox();
    k.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "bb",
        "sh",
        "-c",
        "echo inside > /etc/marker; ln -s / /escape; exec sleep 100",
    ]);
    eventually("setup", || {
        k.cmd()
            .args(["exec", "box", "test", "-L", "/escape"])
            .status()
            .unwrap()
            .success()
    });
    // Out: a file, through a symlink the container planted (it resolves in its root).
    let out = k.path("marker");
    k.ok(&["cp", "box:/escape/etc/marker", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "inside\n");
    let passwd = k.path("passwd");
    k.ok(&["cp", "box:/escape/etc/passwd", passwd.to_str().unwrap()]);
    assert_ne!(
        std::fs::read_to_string(&passwd).unwrap(),
        std::fs::read_to_string("/etc/passwd").unwrap(),
        "cp read the host's /etc/passwd"
    );
    // In: a directory tree, into an existing directory.
    let src = k.path("tree");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/f.txt"), "hello\n").unwrap();
    k.ok(&["cp", src.to_str().unwrap(), "box:/tmp"]);
    assert_eq!(
        k.ok(&["exec", "box", "cat", "/tmp/tree/sub/f.txt"]),
        "hello\n"
    );
    // In through the planted link: lands in the container, not on the host.
    let canary = k.path("canary");
    std::fs::write(&canary, "x").unwrap();
    let host_target = format!("box:/escape{}", k.path("planted").display());
    let _ = k
        .cmd()
        .args(["cp", canary.to_str().unwrap(), &host_target])
        .output();
    assert!(
        !k.path("planted").exists(),
        "cp wrote to the host through a container symlink"
    );
    // Out of a stopped container, and the usage errors.
    k.ok(&["stop", "-t", "1", "box"]);
    let dir = k.path("outdir");
    std::fs::create_dir(&dir).unwrap();
    k.ok(&["cp", "box:/tmp/tree", dir.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(dir.join("tree/sub/f.txt")).unwrap(),
        "hello\n"
    );
    assert!(k.fails(&["cp", "a", "b"]).contains("CONTAINER:PATH"));
    assert!(k
        .fails(&["cp", "box:/nope", "x"])
        .contains("/nope does not exist"));
}

#[test]
fn logs_tail_since_and_timestamps() {
    require!(is_root(), "keel run needs root");
    let k = with_busybox();
    k.ok(&[
        "run",
        "-d",
        "--name",
        "talk",
        "bb",
        "sh",
        "-c",
        "echo one; echo two; sleep 2; echo three",
    ]);
    eventually("exit", || status(&k, "talk") == "exited");
    assert_eq!(k.ok(&["logs", "talk"]), "one\ntwo\nthree\n");
    assert_eq!(k.ok(&["logs", "--tail", "2", "talk"]), "two\nthree\n");
    assert_eq!(k.ok(&["logs", "-n", "all", "talk"]), "one\ntwo\nthree\n");
    let stamped = k.ok(&["logs", "--timestamps", "--tail", "1", "talk"]);
    let (when, line) = stamped.trim_end().split_once(' ').unwrap();
    assert_eq!(line, "three");
    let three = humantime::parse_rfc3339(when).unwrap_or_else(|e| panic!("{e}: {stamped}"));
    // `--since` a time: one second before "three", so after "two" (the command sleeps
    // 2 s between them). Not a duration such as `1s`: how long ago "three" was written
    // depends on the machine's load when the test runs.
    let since = humantime::format_rfc3339_nanos(three - std::time::Duration::from_secs(1));
    assert_eq!(
        k.ok(&["logs", "--since", &since.to_string(), "talk"]),
        "three\n"
    );
    assert_eq!(
        k.ok(&["logs", "--since", "1h", "talk"]),
        "one\ntwo\nthree\n"
    );
    assert!(k
        .fails(&["logs", "--since", "yesterday", "talk"])
        .contains("--since"));
}

#[test]
fn ps_filters_formats_inspect_and_rename() {
    require!(is_root(), "keel run needs root");
    let k = with_busybox();
    k.ok(&["run", "-d", "--name", "alpha", "bb", "sleep", "100"]);
    k.fails(&["run", "--name", "beta", "bb", "sh", "-c", "exit 4"]);
    let names = |args: &[&str]| {
        let mut a = vec!["ps"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--format", "{{.Names}}"]);
        k.ok(&a)
    };
    assert_eq!(names(&[]), "alpha\n");
    assert_eq!(names(&["-a", "--filter", "status=exited"]), "beta\n");
    assert_eq!(names(&["--filter", "exited=4"]), "beta\n");
    assert_eq!(names(&["-a", "--filter", "name=alp"]), "alpha\n");
    let out = k.ok(&[
        "ps",
        "-a",
        "--filter",
        "name=beta",
        "--format",
        "table {{.Names}}\\t{{.Image}}\\t{{.Status}}",
    ]);
    assert_eq!(out, "NAMES\tIMAGE\tSTATUS\nbeta\tbb\tExited (4)\n");
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["ps", "--format", "json"])).unwrap();
    assert_eq!(v[0]["Names"], "alpha");
    assert_eq!(v[0]["State"], "running");
    assert!(k.fails(&["ps", "--format", "{{.Bogus}}"]).contains("Bogus"));
    assert!(k
        .fails(&["ps", "--filter", "colour=red"])
        .contains("--filter"));
    // inspect: a container first (docker's fields), an image otherwise.
    let c = inspect(&k, "beta");
    assert_eq!(c["Name"], "/beta");
    assert_eq!(c["State"]["ExitCode"], 4);
    assert_eq!(c["Config"]["Image"], "bb");
    assert_eq!(c["HostConfig"]["Init"], true);
    assert!(inspect(&k, "bb")["RepoTags"].is_array());
    assert!(inspect(&k, "alpha")["State"]["Pid"].as_i64().unwrap() > 0);
    // rename: the same container under a new name; names stay unique.
    assert!(k
        .fails(&["rename", "beta", "alpha"])
        .contains("already in use"));
    k.ok(&["rename", "beta", "gamma"]);
    assert_eq!(inspect(&k, "gamma")["Id"], c["Id"]);
    assert!(k
        .fails(&["inspect", "--type", "container", "beta"])
        .contains("no such container"));
}

#[test]
fn top_stats_and_system_df_prune() {
    require!(is_root(), "keel run needs root");
    let k = with_busybox();
    k.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "-m",
        "64m",
        "bb",
        "sh",
        "-c",
        "sleep 300 & exec sleep 301",
    ]);
    eventually("two processes", || {
        k.ok(&["top", "busy"]).contains("sleep 300")
    });
    let top = k.ok(&["top", "busy"]);
    assert!(top.starts_with("PID"), "{top}");
    assert!(top.contains("sleep 301"), "{top}");
    let stats = k.ok(&["stats", "--no-stream", "busy"]);
    let row = stats.lines().nth(1).expect("a row");
    assert!(
        row.contains("busy") && row.contains("/ 64.00MiB"),
        "{stats}"
    );
    let v: serde_json::Value = serde_json::from_str(
        k.ok(&["stats", "--no-stream", "--format", "json", "busy"])
            .trim(),
    )
    .unwrap();
    assert!(v["MemUsage"].as_u64().unwrap() > 0, "{v}");
    assert!(v["PIDs"].as_u64().unwrap() >= 2, "{v}");
    k.ok(&["run", "--name", "done", "bb", "true"]);
    let df = k.ok(&["system", "df"]);
    let line = |kind: &str| {
        df.lines()
            .find(|l| l.starts_with(kind))
            .unwrap()
            .to_string()
    };
    let ctr: Vec<String> = line("Containers")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!((ctr[1].as_str(), ctr[2].as_str()), ("2", "1"), "{df}");
    assert!(
        line("Images").split_whitespace().nth(1) == Some("1"),
        "{df}"
    );
    let pruned = k.ok(&["system", "prune"]);
    assert!(pruned.contains("removing 1 stopped containers"), "{pruned}");
    assert!(k
        .fails(&["inspect", "--type", "container", "done"])
        .contains("no such container"));
    assert_eq!(status(&k, "busy"), "running");
    assert!(k.fails(&["top", "done"]).contains("no such container"));
}

/// A one-RUN Dockerfile on the busybox base in a fresh context directory.
fn context(k: &Keel, name: &str, run: &str) -> std::path::PathBuf {
    let dir = k.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), format!("FROM bb\nRUN {run}\n")).unwrap();
    dir
}

#[test]
fn verbose_build_shows_step_spans_with_timings_and_cache_decisions() {
    require!(is_root(), "keel build runs RUN steps as root");
    let k = with_busybox();
    let dir = context(&k, "ctx", "echo built > /f");
    let build = |extra: &[&str]| {
        let out = k
            .cmd()
            .args(extra)
            .args(["build", "-t", "img", dir.to_str().unwrap()])
            .output()
            .unwrap();
        crate::common::assert_success(&out, "keel build");
        String::from_utf8(out.stderr).unwrap()
    };
    let first = build(&["-v"]);
    // The step's span: its text, and the close event with its time.
    assert!(first.contains("step{"), "{first}");
    assert!(first.contains("RUN echo built > /f"), "{first}");
    assert!(first.contains("close time.busy="), "{first}");
    assert!(
        first.contains("cache miss") && first.contains("not built before"),
        "{first}"
    );
    assert!(
        first.contains("starting the RUN container") && first.contains("backend="),
        "{first}"
    );
    assert!(first.contains("blob written"), "{first}");
    let second = build(&["-v"]);
    assert!(second.contains("cache hit"), "{second}");
    // KEEL_LOG selects the same events; without either flag nothing of it shows.
    let out = k
        .cmd()
        .env("KEEL_LOG", "debug")
        .args(["build", "-t", "img", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cache hit"));
    let quiet = build(&[]);
    assert!(!quiet.contains("cache hit"), "{quiet}");
}

#[test]
fn concurrent_builds_get_their_own_logs_and_log_file() {
    require!(is_root(), "keel build runs RUN steps as root");
    let k = with_busybox();
    let a = context(
        &k,
        "a",
        "for i in 1 2 3 4 5; do echo from-a-$i; sleep 0.1; done",
    );
    let b = context(
        &k,
        "b",
        "for i in 1 2 3 4 5; do echo from-b-$i; sleep 0.1; done",
    );
    let (fa, fb) = (k.path("a.log"), k.path("b.log"));
    let spawn = |dir: &std::path::Path, file: &std::path::Path| {
        k.cmd()
            .args([
                "build",
                "--log-file",
                file.to_str().unwrap(),
                dir.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut pa, mut pb) = (spawn(&a, &fa), spawn(&b, &fb));
    assert!(pa.wait().unwrap().success() && pb.wait().unwrap().success());
    let (la, lb) = (
        std::fs::read_to_string(&fa).unwrap(),
        std::fs::read_to_string(&fb).unwrap(),
    );
    assert!(la.contains("from-a-5") && !la.contains("from-b"), "{la}");
    assert!(lb.contains("from-b-5") && !lb.contains("from-a"), "{lb}");
    // One directory per build, each with its own transcript; last-build is the newest.
    let builds: Vec<_> = std::fs::read_dir(k.root().join("logs/builds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(builds.len(), 2, "{builds:?}");
    let mut seen = Vec::new();
    for d in &builds {
        let t = std::fs::read_to_string(d.join("build.log")).unwrap();
        assert!(
            t.contains("from-a") != t.contains("from-b"),
            "interleaved: {t}"
        );
        seen.push(t.contains("from-a"));
    }
    assert!(seen.contains(&true) && seen.contains(&false));
    let last = k.root().join("logs/last-build");
    assert!(std::fs::symlink_metadata(&last)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(last.join("build.log").is_file());
    // A failed build names its own log directory.
    let bad = context(&k, "bad", "echo doomed; exit 7");
    let err = k.fails(&["build", bad.to_str().unwrap()]);
    let dir = crate::common::step_log_dir(&err);
    assert!(dir.contains("logs/builds/"), "{err}");
    assert!(
        std::fs::read_to_string(std::path::Path::new(&dir).join("build.log"))
            .unwrap()
            .contains("doomed")
    );
}

/// `stop`, `kill`, `rm` with several names go on past one that fails, as docker's and
/// podman's do: the others are done and printed, the failure is named on stderr, and the
/// exit status is 1.
#[test]
fn a_failing_name_does_not_stop_the_others() {
    require!(is_root(), "keel run needs root");
    let k = with_busybox();
    for name in ["one", "two"] {
        k.ok(&["run", "-d", "--name", name, "bb", "sleep", "1000"]);
    }
    let multi = |args: &[&str]| {
        let out = k.cmd().args(args).output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, err) = multi(&["stop", "-t", "1", "one", "nosuch", "two"]);
    assert_eq!((code, out.as_str()), (Some(1), "one\ntwo\n"), "{err}");
    assert!(err.contains("nosuch"), "{err}");
    assert_eq!(
        (status(&k, "one"), status(&k, "two")),
        ("exited".into(), "exited".into())
    );
    let (code, out, err) = multi(&["kill", "one", "nosuch"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        err.contains("one is not running") && err.contains("nosuch"),
        "{err}"
    );
    let (code, out, err) = multi(&["rm", "nosuch", "one", "two"]);
    assert_eq!((code, out.as_str()), (Some(1), "one\ntwo\n"), "{err}");
    assert!(err.contains("nosuch"), "{err}");
    assert_eq!(k.ok(&["ps", "-a", "-q"]), "");
}
