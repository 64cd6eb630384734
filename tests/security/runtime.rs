//! Attacker-side tests: runtime. Each test is one break found by trying to leave a
//! container: its doc comment names the break, the container does what an attacker
//! would, and a host canary proves nothing outside was read, written, signalled or reached.
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::canary::{CanaryDir, CanaryLoop, CanaryProcess, CanaryService};
use crate::common::{have, is_root, Keel};
use crate::require;

/// A keel root with a busybox base image called `bb`.
fn with_busybox() -> Keel {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    k
}

/// `keel ARGS` with stdin closed: (exit code, stdout, stderr).
fn keel(k: &Keel, args: &[&str]) -> (i32, String, String) {
    let out = k.cmd().args(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `keel run --rm --isolation BACKEND ARGS…`.
fn run_in(k: &Keel, backend: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["run", "--rm", "--isolation", backend];
    all.extend_from_slice(args);
    keel(k, &all)
}

fn require_runc() {
    require!(have("runc"), "runc is not installed (apt-get install runc)");
}

/// Waits until `keel logs NAME` prints `ready`.
fn await_ready(k: &Keel, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !k.ok(&["logs", name]).contains("ready") {
        assert!(Instant::now() < deadline, "{name} never printed ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Break (issue 10 item 1): CAP_MKNOD was kept with no device allow-list, so a container
/// could `mknod` a node for a host disk and read or write it, and a non-root user could
/// open a 0666 node the image (or a volume) ships. Only Docker's default devices may be
/// opened now (device cgroup on v1, `linux.resources.devices` for runc); mknod itself
/// still works, as in Docker.
#[test]
fn host_block_devices_cannot_be_opened_from_a_container() {
    require!(is_root(), "needs root");
    let lo = CanaryLoop::new();
    require!(lo.is_some(), "losetup could not attach a loop device");
    let lo = lo.unwrap();
    let (maj, min) = lo.numbers();
    let k = with_busybox();
    // A 0666 block node for the loop device, shipped in a volume the container sees.
    let vol = k.path("vol");
    std::fs::create_dir_all(&vol).unwrap();
    crate::common::run_ok(std::process::Command::new("mknod").args([
        vol.join("disk").to_str().unwrap(),
        "b",
        &maj.to_string(),
        &min.to_string(),
    ]));
    crate::common::run_ok(
        std::process::Command::new("chmod").args(["666", vol.join("disk").to_str().unwrap()]),
    );
    let volume = format!("{}:/vol", vol.display());
    let attack = "dd if=$D bs=4096 count=1 2>/dev/null | head -c 64; echo; \
                  echo pwned | dd of=$D conv=notrunc 2>/dev/null && echo wrote; \
                  echo ok > /dev/null && head -c 3 /dev/zero | wc -c";
    let prefix = String::from_utf8_lossy(&lo.content[..16]).into_owned();
    let mut backends = vec!["namespaces", "chroot"];
    if have("runc") {
        backends.push("oci");
    } else {
        require_runc();
    }
    for b in backends {
        let mknod = format!("mknod /tmp/d b {maj} {min} && D=/tmp/d; {attack}");
        let shipped = format!("D=/vol/disk; {attack}");
        for (user, script) in [("0", mknod.as_str()), ("1000", shipped.as_str())] {
            let (_, out, err) = run_in(
                &k,
                b,
                &["-u", user, "-v", &volume, "bb", "sh", "-c", script],
            );
            assert!(
                !out.contains(&prefix) && !out.contains("wrote"),
                "{b} -u {user}: the container opened the host's block device: {out} {err}"
            );
            // The default devices still work.
            assert!(
                out.ends_with("3\n"),
                "{b} -u {user}: /dev/zero: {out} {err}"
            );
            lo.assert_intact();
        }
    }
}

/// Break (issue 10 item 7, part 1): `keel exec` on an `--isolation oci` container ran on
/// the host (host hostname, host processes). Part 2: under namespaces, exec'd processes
/// were outside the container's cgroups and escaped `--memory`/`--pids-limit`.
#[test]
fn exec_runs_inside_the_container_and_its_cgroups() {
    require!(is_root(), "needs root");
    require_runc();
    let k = with_busybox();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    k.ok(&[
        "run",
        "-d",
        "--name",
        "o",
        "--isolation",
        "oci",
        "--hostname",
        "inbox",
        "bb",
        "sh",
        "-c",
        "echo ready; exec sleep 1000",
    ]);
    await_ready(&k, "o");
    let (code, out, err) = keel(
        &k,
        &[
            "exec",
            "o",
            "sh",
            "-c",
            "hostname; ls /proc | grep -c '^[0-9]'",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "inbox",
        "exec ran outside the container: {out} (host {host})"
    );
    let procs: usize = lines[1].parse().unwrap();
    assert!(procs <= 5, "exec sees the host's processes: {out}");

    k.ok(&[
        "run",
        "-d",
        "--name",
        "n",
        "--memory",
        "64m",
        "--pids-limit",
        "30",
        "bb",
        "sh",
        "-c",
        "echo ready; exec sleep 1000",
    ]);
    await_ready(&k, "n");
    let (code, out, err) = keel(&k, &["exec", "n", "cat", "/proc/self/cgroup"]);
    assert_eq!(code, 0, "{err}");
    for ctl in ["memory", "pids", "devices"] {
        assert!(
            out.lines()
                .any(|l| l.split(':').nth(1) == Some(ctl) && l.contains("/keel/")),
            "exec'd process is outside the container's {ctl} cgroup:\n{out}"
        );
    }
    // The pids limit holds for exec'd processes: 40 sleepers cannot all start.
    let (_, out, _) = keel(
        &k,
        &[
            "exec",
            "n",
            "sh",
            "-c",
            // The sleepers must not hold keel's stdout open after the shell exits.
            "n=0; while [ $n -lt 40 ]; do sleep 1000 >/dev/null 2>&1 & n=$((n+1)); echo $n; done",
        ],
    );
    let last: usize = out.lines().last().and_then(|l| l.parse().ok()).unwrap_or(0);
    assert!(last < 30, "exec escaped --pids-limit 30: started {last}");
    k.ok(&["rm", "-f", "o", "n"]);
}

/// Break (issue 10 item 3): the chroot backend kept CAP_SYS_CHROOT and CAP_KILL with no
/// PID namespace (double-chroot escape; `kill -9` reached host processes) and silently
/// ignored `--network none`. Now those capabilities are dropped and flags chroot cannot
/// honour are refused, naming the flag and the backend to use.
#[test]
fn chroot_container_cannot_chroot_signal_the_host_or_fake_network_isolation() {
    require!(is_root(), "needs root");
    let k = with_busybox();
    let mut canary = CanaryProcess::new();
    let script = format!(
        "kill -9 {} && echo killed; chroot / /bin/true && echo chrooted; \
         mkdir -p /e && chroot /e /bin/true 2>/dev/null; grep CapBnd /proc/self/status",
        canary.pid()
    );
    let (_, out, err) = run_in(&k, "chroot", &["bb", "sh", "-c", &script]);
    std::thread::sleep(Duration::from_millis(100));
    canary.assert_alive();
    assert!(!out.contains("killed"), "{out} {err}");
    assert!(
        !out.contains("chrooted"),
        "chroot(2) still allowed: {out} {err}"
    );

    let svc = CanaryService::new();
    let port = svc.port.to_string();
    for (flags, named) in [
        (vec!["--network", "none"], "--network none"),
        (vec!["--network", "private"], "--network private"),
        (vec!["--hostname", "x"], "--hostname"),
    ] {
        let mut args = flags.clone();
        args.extend(["bb", "sh", "-c"]);
        let dial = format!("echo hi | nc 127.0.0.1 {port}; echo dialed");
        args.push(&dial);
        let (code, out, err) = run_in(&k, "chroot", &args);
        assert_ne!(code, 0, "{flags:?} accepted under chroot: {out}");
        assert!(
            err.contains(named) && err.contains("--isolation namespaces"),
            "{flags:?}: the error must name the flag and the backend to use: {err}"
        );
        assert!(
            !out.contains("dialed"),
            "{flags:?}: the container ran: {out}"
        );
    }
    svc.assert_unreached();
    assert!(k.ok(&["ps", "-a", "-q"]).trim().is_empty());
}

/// Break (issue 10 item 5): a supervisor that died left `state.json` saying running;
/// after pid reuse `ps` showed Up and `rm -f`/`stop`/`kill` signalled an unrelated host
/// process. A pid is only trusted with its recorded start time.
#[test]
fn a_stale_pid_in_the_state_file_is_never_signalled() {
    require!(is_root(), "needs root");
    let k = with_busybox();
    let mut canary = CanaryProcess::new();
    // Start times count clock ticks (10 ms): keep the canary's apart from the
    // supervisor's, whose recorded start the forged record keeps.
    std::thread::sleep(Duration::from_millis(100));
    let id = k
        .ok(&["run", "-d", "--name", "gone", "bb", "true"])
        .trim()
        .to_string();
    assert_eq!(k.ok(&["wait", "gone"]).trim(), "0");
    // Forge what a dead supervisor plus pid reuse leaves: running, pids now someone else's.
    let path = k.root().join("containers").join(&id).join("state.json");
    let pid = canary.pid();
    let forge = || {
        let mut st: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        st["status"] = "running".into();
        st["pid"] = pid.into();
        st["supervisor_pid"] = pid.into();
        std::fs::write(&path, serde_json::to_vec(&st).unwrap()).unwrap();
    };
    forge();
    let ps = k.ok(&["ps"]);
    assert!(
        !ps.contains("gone"),
        "ps shows a dead container as running:\n{ps}"
    );
    for cmd in [
        vec!["kill", "gone"],
        vec!["stop", "-t", "1", "gone"],
        vec!["rm", "-f", "gone"],
    ] {
        forge_if_present(&path, &forge);
        let _ = keel(&k, &cmd);
        std::thread::sleep(Duration::from_millis(100));
        canary.assert_alive();
    }
    assert!(
        k.ok(&["ps", "-a", "-q"]).trim().is_empty(),
        "rm -f did not remove it"
    );
}

fn forge_if_present(path: &std::path::Path, forge: &dyn Fn()) {
    if path.exists() {
        forge();
    }
}

/// Break (issue 10 item 8): under `--isolation oci`, `-u 1000` kept KILL,
/// NET_BIND_SERVICE and AUDIT_WRITE in its effective and ambient sets, and the bundle (in
/// /tmp, world-readable) held env values and build secrets. Now a non-root user has no
/// effective/permitted/ambient capabilities and the bundle is private to root.
#[test]
fn oci_non_root_has_no_capabilities_and_the_bundle_is_private() {
    require!(is_root(), "needs root");
    require_runc();
    let k = with_busybox();
    let (code, out, err) = run_in(
        &k,
        "oci",
        &["-u", "1000", "bb", "grep", "^Cap", "/proc/self/status"],
    );
    assert_eq!(code, 0, "{err}");
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert!(
            out.contains(&format!("{set}:\t0000000000000000")),
            "uid 1000 keeps {set} capabilities:\n{out}"
        );
    }
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");

    let secret = CanaryDir::new();
    let env = format!("TOKEN={}", secret.secret);
    k.ok(&[
        "run",
        "-d",
        "--name",
        "s",
        "--isolation",
        "oci",
        "-e",
        &env,
        "bb",
        "sh",
        "-c",
        "echo ready; exec sleep 1000",
    ]);
    await_ready(&k, "s");
    let mut found = Vec::new();
    for root in [std::env::temp_dir(), k.root()] {
        for e in walkdir::WalkDir::new(&root).into_iter().flatten() {
            if e.file_name() == "config.json" && e.path().parent().is_some() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                if text.contains(&secret.secret) {
                    found.push(e.path().to_path_buf());
                }
            }
        }
    }
    assert!(!found.is_empty(), "no bundle found holding the env value");
    for f in &found {
        assert!(
            !f.starts_with(std::env::temp_dir()) || f.starts_with(k.root()),
            "the bundle is in the shared temp directory: {}",
            f.display()
        );
        let dir = f.parent().unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&dir.metadata().unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", dir.display());
    }
    k.ok(&["rm", "-f", "s"]);
}

/// Break (issue 10 item 14): no seccomp profile, so a container could make new user
/// namespaces (`unshare -U`); capabilities were inheritable; and `/proc/1/cmdline` of
/// keel's init showed the host binary path, keel's root and flags. Docker's default
/// profile now applies (`--security-opt seccomp=unconfined` turns it off), the
/// inheritable set is empty and PID 1 shows a neutral name.
#[test]
fn seccomp_blocks_user_namespaces_and_pid1_hides_the_host_command_line() {
    require!(is_root(), "needs root");
    let k = with_busybox();
    let root = k.root().display().to_string();
    let mut backends = vec!["namespaces"];
    if have("runc") {
        backends.push("oci");
    } else {
        require_runc();
    }
    // PID 1 under runc is this very command, so the marker must not appear in it verbatim.
    let script = "unshare -U true && echo userns-$((6*7)); grep -E '^(CapInh|Seccomp|NoNewPrivs):' /proc/self/status; \
                  tr '\\0' ' ' < /proc/1/cmdline; echo";
    for b in backends {
        let (_, out, err) = run_in(&k, b, &["bb", "sh", "-c", script]);
        assert!(
            !out.contains("userns-42"),
            "{b}: unshare -U worked: {out} {err}"
        );
        assert!(out.contains("CapInh:\t0000000000000000"), "{b}: {out}");
        assert!(out.contains("Seccomp:\t2"), "{b}: no seccomp filter: {out}");
        assert!(out.contains("NoNewPrivs:\t1"), "{b}: {out}");
        assert!(
            !out.contains(&root) && !out.contains("--root") && !out.contains("target/"),
            "{b}: PID 1 shows the host command line: {out}"
        );
        let (_, out, err) = run_in(
            &k,
            b,
            &[
                "--security-opt",
                "seccomp=unconfined",
                "bb",
                "grep",
                "^Seccomp:",
                "/proc/self/status",
            ],
        );
        assert_eq!(out.trim(), "Seccomp:\t0", "{b}: seccomp=unconfined: {err}");
    }
}
