//! Integration tests: runtime. One conformance list runs against every isolation backend
//! (namespaces, chroot, oci via runc) on a busybox rootfs; a backend is skipped only when
//! the host lacks it, saying why. Needs root (cgroups, mounts, namespaces).
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use keel::runtime::spec::{plan_for_rootfs, BindMount, Limits, NetworkMode, RunOptions};
use keel::runtime::{self, Isolation, Stdio};

use crate::common::{busybox_rootfs, is_root};
use crate::require;

/// What one run printed and how it ended.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    exec_error: Option<String>,
}

static N: AtomicUsize = AtomicUsize::new(0);

fn unique_id(tag: &str) -> String {
    format!(
        "kt-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A busybox rootfs with the extra applets the cases use.
fn rootfs(dir: &Path) -> PathBuf {
    let r = dir.join("rootfs");
    busybox_rootfs(&r);
    for applet in ["head", "tail", "tr", "seq", "grep", "kill"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
    }
    std::fs::write(r.join("etc/motd"), "not executable\n").unwrap();
    // An image's directories are 0755 whatever the umask of whoever runs the tests
    // (uid 1000 must reach /bin/sh under umask 077 too).
    use std::os::unix::fs::PermissionsExt;
    let fix = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    for e in walkdir::WalkDir::new(&r).into_iter().flatten() {
        if e.file_type().is_dir() {
            fix(e.path(), 0o755);
        } else if e.file_type().is_file() {
            let m = e.metadata().unwrap().permissions().mode();
            fix(e.path(), (m & 0o7777) | 0o044);
        }
    }
    r
}

fn image() -> oci_spec::image::Config {
    oci_spec::image::ConfigBuilder::default()
        .env(vec!["FOO=img".to_string()])
        .working_dir("/srv")
        .build()
        .unwrap()
}

fn sh(script: &str) -> Option<Vec<String>> {
    Some(vec!["sh".into(), "-c".into(), script.into()])
}

/// Mount points at or below `dir` in the host's mount table.
fn mounts_below(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// The keel cgroup directories named `id` that exist in any hierarchy.
fn cgroups_named(id: &str) -> Vec<PathBuf> {
    let layout = runtime::cgroup_layout();
    layout
        .v1
        .values()
        .chain(layout.v2.iter())
        .map(|m| m.join("keel").join(id))
        .filter(|p| p.exists())
        .collect()
}

/// Runs `opts` in `rootfs` with `backend`, capturing output; asserts nothing is left behind.
fn run(backend: &dyn Isolation, rootfs: &Path, opts: RunOptions) -> Outcome {
    let id = unique_id(backend.name());
    let spec = plan_for_rootfs(&id, &image(), &opts, rootfs).unwrap();
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let stdio = Stdio {
        stdin: None,
        stdout: Some(out.try_clone().unwrap().into()),
        stderr: Some(err.try_clone().unwrap().into()),
        ..Default::default()
    };
    let before = mounts_below(rootfs);
    let exit = backend
        .run(&spec, rootfs, stdio)
        .unwrap_or_else(|e| panic!("{} run {:?}: {e}", backend.name(), spec.args));
    assert_eq!(
        mounts_below(rootfs),
        before,
        "{}: mounts left below the rootfs after {:?}",
        backend.name(),
        spec.args
    );
    assert_eq!(
        cgroups_named(&id),
        Vec::<PathBuf>::new(),
        "{}: cgroups left after {:?}",
        backend.name(),
        spec.args
    );
    let read = |mut f: std::fs::File| {
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    };
    Outcome {
        code: exit.code,
        stdout: read(out),
        stderr: read(err),
        exec_error: exit.exec_error,
    }
}

fn cmd(c: Option<Vec<String>>) -> RunOptions {
    RunOptions {
        cmd: c,
        ..Default::default()
    }
}

/// The conformance list. `kind` adjusts only what a backend cannot do by design.
fn conformance(backend: &dyn Isolation) {
    let name = backend.name();
    let d = tempfile::tempdir().unwrap();
    let r = rootfs(d.path());
    let mut failures: Vec<String> = Vec::new();
    let mut check = |what: &str, ok: bool, o: &Outcome| {
        if !ok {
            failures.push(format!(
                "{name}: {what}: code {} stdout {:?} stderr {:?} exec_error {:?}",
                o.code, o.stdout, o.stderr, o.exec_error
            ));
        }
    };
    let namespaced = name != "chroot";

    // Exit codes.
    let o = run(backend, &r, cmd(Some(vec!["true".into()])));
    check("exit 0", o.code == 0, &o);
    let o = run(backend, &r, cmd(sh("exit 3")));
    check("exit 3", o.code == 3, &o);
    let o = run(backend, &r, cmd(Some(vec!["no-such-command".into()])));
    check(
        "127 for a missing command",
        o.code == 127
            && o.exec_error
                .as_deref()
                .is_some_and(|e| e.contains("not found")),
        &o,
    );
    let o = run(backend, &r, cmd(Some(vec!["/etc/motd".into()])));
    check(
        "126 for a non-executable file",
        o.code == 126 && o.exec_error.is_some(),
        &o,
    );
    // A signal death is 128+N. Under runc the command is PID 1, which the kernel protects
    // from its own SIGKILL, so the signal comes from a child there; namespaces has an init.
    let script = if name == "oci" {
        "sh -c 'kill -9 $$'; exit $?"
    } else {
        "kill -9 $$"
    };
    let o = run(backend, &r, cmd(sh(script)));
    if namespaced {
        check("137 after SIGKILL", o.code == 137, &o);
    } else {
        // Without a PID namespace a signal could reach host processes: chroot refuses
        // kill(2) and friends (seccomp), documented in docs/run.md.
        check(
            "chroot refuses to send signals",
            o.code != 0 && o.stderr.contains("Operation not permitted"),
            &o,
        );
    }

    // Env and workdir from the image, then from flags.
    let o = run(
        backend,
        &r,
        RunOptions {
            env: vec!["BAR=flag".into()],
            ..cmd(sh("echo $FOO $BAR $HOME; pwd"))
        },
    );
    check(
        "env and workdir from image and flags",
        o.stdout == "img flag /root\n/srv\n",
        &o,
    );
    let o = run(
        backend,
        &r,
        RunOptions {
            env: vec!["FOO=over".into()],
            workdir: Some("/tmp".into()),
            ..cmd(sh("echo $FOO; pwd"))
        },
    );
    check("env and workdir overridden", o.stdout == "over\n/tmp\n", &o);

    // Users.
    let o = run(
        backend,
        &r,
        RunOptions {
            user: Some("1000:1000".into()),
            ..cmd(sh("id -u; id -g"))
        },
    );
    check("user 1000:1000", o.stdout == "1000\n1000\n", &o);
    let o = run(
        backend,
        &r,
        RunOptions {
            user: Some("alice".into()),
            ..cmd(sh("id -un; echo $HOME"))
        },
    );
    check("user alice", o.stdout == "alice\n/home/alice\n", &o);

    // Namespaces: hostname and PID 1.
    if namespaced {
        let o = run(
            backend,
            &r,
            RunOptions {
                hostname: Some("box1".into()),
                ..cmd(Some(vec!["hostname".into()]))
            },
        );
        check("own hostname", o.stdout == "box1\n", &o);
        let o = run(
            backend,
            &r,
            cmd(sh("test -d /proc/1 && ls -d /proc/[0-9]* | wc -l")),
        );
        let n: usize = o.stdout.trim().parse().unwrap_or(999);
        check(
            "own PID namespace (PID 1 exists, few processes)",
            o.code == 0 && n <= 4,
            &o,
        );
    }

    // /proc mounted; Docker's capability set.
    let o = run(backend, &r, cmd(sh("grep CapEff /proc/self/status")));
    // chroot drops what reaches the host without namespaces (spec::CHROOT_DROPPED_CAPS):
    // SYS_CHROOT, KILL, MKNOD, NET_RAW, NET_BIND_SERVICE, AUDIT_WRITE.
    let want = if namespaced {
        "CapEff:\t00000000a80425fb"
    } else {
        "CapEff:\t00000000800001db"
    };
    check(
        "CapEff is Docker's default set",
        o.stdout.trim() == want,
        &o,
    );
    let o = run(
        backend,
        &r,
        cmd(sh(
            "cat /proc/kcore | wc -c; touch /proc/sys/x 2>/dev/null || echo ro",
        )),
    );
    check(
        "masked and read-only /proc paths",
        o.stdout == "0\nro\n",
        &o,
    );

    // Volumes: ro refuses writes, rw writes reach the host.
    let (ro, rw) = (d.path().join("ro"), d.path().join("rw"));
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    let binds = vec![
        BindMount {
            src: ro.clone(),
            dst: "/ro".into(),
            ro: true,
        },
        BindMount {
            src: rw.clone(),
            dst: "/rw".into(),
            ro: false,
        },
    ];
    let o = run(
        backend,
        &r,
        RunOptions {
            binds,
            ..cmd(sh(
                "touch /ro/x 2>/dev/null || echo refused; echo hi > /rw/y",
            ))
        },
    );
    check(
        "ro bind refuses writes",
        o.stdout == "refused\n" && !ro.join("x").exists(),
        &o,
    );
    check(
        "rw bind writes reach the host",
        std::fs::read_to_string(rw.join("y")).ok().as_deref() == Some("hi\n"),
        &o,
    );
    let o = run(
        backend,
        &r,
        RunOptions {
            read_only: true,
            ..cmd(sh("touch /x 2>/dev/null || echo ro; touch /tmp/x"))
        },
    );
    check("--read-only root", o.stdout == "ro\n" && o.code != 0, &o);

    // Limits.
    let limits = Limits {
        memory_bytes: Some(32 << 20),
        ..Default::default()
    };
    let o = run(
        backend,
        &r,
        RunOptions {
            limits,
            ..cmd(sh(
                "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
            ))
        },
    );
    check(
        "--memory 32m stops a memory hog",
        o.code != 0 && !o.stdout.contains("survived"),
        &o,
    );
    let limits = Limits {
        pids: Some(20),
        ..Default::default()
    };
    let o = run(
        backend,
        &r,
        RunOptions {
            limits,
            ..cmd(sh(
                "n=0; while [ $n -lt 40 ]; do sleep 1000 & n=$((n+1)); echo $n; done",
            ))
        },
    );
    let last: usize = o
        .stdout
        .lines()
        .last()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    check(
        "--pids-limit 20 contains a fork bomb",
        (1..20).contains(&last),
        &o,
    );

    assert!(
        failures.is_empty(),
        "{} conformance failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn conformance_namespaces() {
    require!(is_root(), "needs root");
    let b = runtime::namespaces::Namespaces;
    if let Err(e) = b.available() {
        require!(false, e.to_string());
    }
    conformance(&b);
}

#[test]
fn conformance_chroot() {
    require!(is_root(), "needs root");
    let b = runtime::chroot::Chroot;
    if let Err(e) = b.available() {
        require!(false, e.to_string());
    }
    conformance(&b);
}

#[test]
fn conformance_oci() {
    require!(is_root(), "needs root");
    let runc = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| "runc".into());
    let b = runtime::oci::Oci::new(runc);
    if let Err(e) = b.available() {
        require!(false, e.to_string());
    }
    conformance(&b);
}

/// A network namespace has only loopback, and it is up; `--network host` sees the host's.
#[test]
fn network_modes() {
    require!(is_root(), "needs root");
    let d = tempfile::tempdir().unwrap();
    let r = rootfs(d.path());
    let b = runtime::namespaces::Namespaces;
    let o = run(
        &b,
        &r,
        cmd(sh(
            "cat /proc/net/dev | tail -n +3 | wc -l; grep -c lo /proc/net/dev",
        )),
    );
    assert_eq!(o.stdout, "1\n1\n", "{}", o.stderr);
    let o = run(
        &b,
        &r,
        RunOptions {
            network: NetworkMode::Host,
            ..cmd(sh("cat /proc/net/dev | tail -n +3 | wc -l"))
        },
    );
    let host = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count()
        - 2;
    assert_eq!(o.stdout.trim(), host.to_string(), "{}", o.stderr);
}

/// A bad spec fails before anything starts, with the flag named.
#[test]
fn unknown_user_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let r = rootfs(d.path());
    let e = plan_for_rootfs(
        "x",
        &image(),
        &RunOptions {
            user: Some("mallory".into()),
            ..cmd(sh("true"))
        },
        &r,
    )
    .unwrap_err();
    assert!(e.to_string().contains("unable to find user mallory"), "{e}");
}

/// `start` returns a handle; a signal sent to it reaches the command (through the
/// namespaces backend's init, or runc's forwarding), and `wait` reports the outcome.
#[test]
fn signals_reach_the_command() {
    use std::io::BufRead;
    require!(is_root(), "needs root");
    let d = tempfile::tempdir().unwrap();
    let r = rootfs(d.path());
    let runc = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| "runc".into());
    let backends: Vec<Box<dyn Isolation>> = vec![
        Box::new(runtime::namespaces::Namespaces),
        Box::new(runtime::chroot::Chroot),
        Box::new(runtime::oci::Oci::new(runc)),
    ];
    // A trap works everywhere (runc's PID 1 ignores untrapped SIGTERM); without a trap the
    // default action applies except for a namespace's PID 1, which keel's init avoids.
    let cases = [
        (
            "trap 'exit 7' TERM; echo ready; while :; do sleep 1; done",
            7,
            true,
        ),
        ("echo ready; while :; do sleep 1; done", 143, false),
    ];
    for b in backends {
        if let Err(e) = b.available() {
            eprintln!("SKIP {}: {e}", b.name());
            continue;
        }
        for (script, want, everywhere) in cases {
            if !everywhere && b.name() == "oci" {
                continue;
            }
            let id = unique_id(b.name());
            let spec = plan_for_rootfs(&id, &image(), &cmd(sh(script)), &r).unwrap();
            let (rd, wr) = nix::unistd::pipe().unwrap();
            let c = b
                .start(
                    &spec,
                    &r,
                    Stdio {
                        stdin: None,
                        stdout: Some(wr),
                        stderr: None,
                        ..Default::default()
                    },
                )
                .unwrap();
            let mut line = String::new();
            std::io::BufReader::new(std::fs::File::from(rd))
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line, "ready\n", "{}", b.name());
            c.kill(libc::SIGTERM).unwrap();
            let exit = c.wait().unwrap();
            assert_eq!(exit.code, want, "{}: {script}", b.name());
            assert_eq!(cgroups_named(&id), Vec::<PathBuf>::new());
        }
    }
}

/// Each `-p` flavour answers an HTTP request from the host (busybox httpd inside a private
/// network namespace), through keel's userland proxy.
#[test]
fn exec_joins_a_running_container() {
    use std::io::BufRead;
    require!(is_root(), "needs root");
    let d = tempfile::tempdir().unwrap();
    let r = rootfs(d.path());
    std::fs::write(r.join("marker"), "inside\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let p = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(r.join("marker"), p).unwrap();
    }
    let id = unique_id("exec");
    let limits = Limits {
        pids: Some(50),
        ..Default::default()
    };
    let opts = RunOptions {
        hostname: Some("execbox".into()),
        limits,
        ..cmd(sh("echo ready; exec sleep 1000"))
    };
    let spec = plan_for_rootfs(&id, &image(), &opts, &r).unwrap();
    let (rd, wr) = nix::unistd::pipe().unwrap();
    let c = runtime::namespaces::Namespaces
        .start(
            &spec,
            &r,
            Stdio {
                stdin: None,
                stdout: Some(wr),
                stderr: None,
                ..Default::default()
            },
        )
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(std::fs::File::from(rd))
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");

    let opts = RunOptions { user: Some("alice".into()), ..cmd(sh("hostname; cat /marker; id -u; cat /proc/1/cmdline | tr '\\0' ' '; echo; grep CapEff /proc/self/status; grep -c :pids:/keel/ /proc/self/cgroup")) };
    let xspec = plan_for_rootfs(&id, &image(), &opts, &r).unwrap();
    let out = tempfile::tempfile().unwrap();
    let x = runtime::namespaces::exec(
        c.pid,
        &xspec,
        Stdio {
            stdin: None,
            stdout: Some(out.try_clone().unwrap().into()),
            stderr: None,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(x.wait().unwrap().code, 0);
    let mut text = String::new();
    use std::io::{Read, Seek};
    let mut out = out;
    out.seek(std::io::SeekFrom::Start(0)).unwrap();
    out.read_to_string(&mut text).unwrap();
    // PID 1 is keel's init (a fork of the test binary), so only its presence is checked.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..3], ["execbox", "inside", "1000"], "{text}");
    assert!(
        !lines[3].is_empty() && lines[4] == "CapEff:\t0000000000000000",
        "{text}"
    );
    if runtime::cgroup_layout().v1.contains_key("pids") {
        assert_eq!(
            lines[5], "1",
            "exec'd process is not in the container's pids cgroup: {text}"
        );
    }
    c.kill(libc::SIGTERM).unwrap();
    assert_eq!(c.wait().unwrap().code, 143);
    assert_eq!(cgroups_named(&id), Vec::<PathBuf>::new());
}

/// Not a timed test: prints start-to-exit latency of `/bin/true` per backend
/// (`cargo test --release --test it runtime::bench -- --ignored --nocapture`).
#[test]
#[ignore]
fn bench_start_to_exit() {
    require!(is_root(), "needs root");
    let d = tempfile::tempdir().unwrap();
    let r = rootfs(d.path());
    let runc = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| "runc".into());
    let backends: Vec<Box<dyn Isolation>> = vec![
        Box::new(runtime::namespaces::Namespaces),
        Box::new(runtime::chroot::Chroot),
        Box::new(runtime::oci::Oci::new(runc)),
    ];
    for b in &backends {
        for network in [NetworkMode::Host, NetworkMode::Private] {
            let n = 50;
            let t = std::time::Instant::now();
            for _ in 0..n {
                let spec = plan_for_rootfs(
                    &unique_id("bench"),
                    &image(),
                    &RunOptions {
                        network,
                        ..cmd(Some(vec!["/bin/true".into()]))
                    },
                    &r,
                )
                .unwrap();
                assert_eq!(b.run(&spec, &r, Stdio::default()).unwrap().code, 0);
            }
            eprintln!(
                "{:<10} network={network:?}: {:.2} ms per run ({n} runs)",
                b.name(),
                t.elapsed().as_secs_f64() * 1000.0 / n as f64
            );
        }
    }
}

/// Issue 10 item 11: a keel killed while its OCI container runs leaves `runc run` and
/// the container going with nobody to clean up; `runtime::reclaim::collect_orphans` (what
/// `keel gc` calls) finds it by its dead owner and removes it, its bundle and the empty
/// cgroups, and leaves a container whose keel still runs alone.
#[test]
fn orphans_of_a_killed_keel_are_collected() {
    require!(is_root(), "needs root");
    require!(crate::common::have("runc"), "runc is not installed");
    let k = crate::common::Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let run = |name: &str| {
        k.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--isolation",
            "oci",
            "bb",
            "sleep",
            "1000",
        ])
        .trim()
        .to_string()
    };
    let (dead, live, removed) = (run("dead"), run("live"), run("removed"));
    let state = |id: &str| -> serde_json::Value {
        let p = k.root().join("containers").join(id).join("state.json");
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let kill_supervisor = |id: &str| {
        let supervisor = state(id)["supervisor_pid"].as_i64().unwrap() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(supervisor),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
        let gone = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{supervisor}")).exists() {
            assert!(std::time::Instant::now() < gone, "supervisor did not die");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    kill_supervisor(&dead);
    kill_supervisor(&removed);
    // A leaked empty cgroup, as a killed keel leaves when it dies during setup.
    let layout = runtime::cgroup_layout();
    let leaked = layout
        .v1
        .get("pids")
        .map(|m| m.join("keel").join(unique_id("leak")));
    if let Some(l) = &leaked {
        std::fs::create_dir_all(l).unwrap();
    }
    let runc_ids = || {
        let out = std::process::Command::new("runc")
            .args(["list", "-q"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(runc_ids().contains(&dead));
    // Only this test's ids may go (other tests' containers may be starting right now).
    let leaked_id = leaked
        .as_ref()
        .map(|l| l.file_name().unwrap().to_string_lossy().into_owned());
    let keep = |id: &str| id != dead && Some(id) != leaked_id.as_deref();
    let found = runtime::reclaim::collect_orphans(
        &k.root(),
        Path::new("runc"),
        &keep,
        std::time::Duration::ZERO,
    )
    .unwrap();
    // Both containers whose keel was killed are orphans; the live one is not.
    assert!(found.runtime_containers.contains(&dead), "{found:?}");
    assert!(!found.runtime_containers.contains(&live), "{found:?}");
    let ids = runc_ids();
    assert!(!ids.contains(&dead), "orphan still known to runc: {ids}");
    assert!(
        ids.contains(&live),
        "a live keel's container was collected: {ids}"
    );
    assert!(!runtime::oci::bundle_root(&k.root()).join(&dead).exists());
    assert_eq!(cgroups_named(&dead), Vec::<PathBuf>::new());
    if let Some(l) = &leaked {
        assert!(!l.exists(), "empty leaked cgroup left");
    }
    // `keel rm -f` of a container whose keel died deletes it from the runtime too (this
    // runs last: any keel that starts after a dead owner's lease reclaims its orphans).
    k.ok(&["rm", "-f", "removed"]);
    assert!(
        !runc_ids().contains(&removed),
        "rm -f left the runtime container"
    );
    k.ok(&["rm", "-f", "live", "dead"]);
    assert!(!runc_ids().contains(&live));
}

/// Issue 10 item 1 on cgroup v2: with no v1 devices controller the allow-list becomes a
/// BPF device program on the container's v2 cgroup. Forced here by a layout without v1
/// controllers (this also runs on hybrid hosts, whose empty v2 tree takes programs): a
/// process in the cgroup may open /dev/null but not /dev/loop-control (10:237).
#[test]
fn cgroup_v2_device_program_allows_only_the_default_devices() {
    use keel::runtime::cgroup::Cgroup;
    require!(is_root(), "needs root");
    let host = runtime::cgroup_layout();
    require!(host.v2.is_some(), "no cgroup2 mount on this host");
    let v2_only = runtime::CgroupLayout {
        v1: Default::default(),
        v2: host.v2.clone(),
        v2_controllers: Vec::new(),
    };
    let id = unique_id("devices-v2");
    let rules = keel::runtime::spec::default_device_rules();
    let cg = Cgroup::create(&v2_only, &id, &Limits::default(), &rules).unwrap();
    let procs = cg.dirs[0].join("cgroup.procs");
    let script = format!(
        "echo $$ > {}; (exec 3</dev/null) && echo null-ok; \
         (exec 3</dev/loop-control) 2>/dev/null && echo loop-control-opened; echo done",
        procs.display()
    );
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    cg.destroy().unwrap();
    assert_eq!(
        text,
        "null-ok\ndone\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cgroups_named(&id), Vec::<PathBuf>::new());
}
