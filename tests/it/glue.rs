//! Generated glue run as generated (issue 12): each test writes the glue with the real
//! `keel integrate` and drives the real tool — make, mvn, python/buildbot, jenkins-jobs,
//! a local docker-registry for the Jenkinsfile's Push stage, supervisord and runit
//! started without KEEL_ROOT, as at boot.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{have, is_root, run_ok, Keel};
use crate::require;

/// A copy of testdata/integrations/sample in a temp dir.
fn sample() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("sample");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/integrations/sample"))
            .arg(&dir),
    );
    (t, dir)
}

/// `keel integrate TOOL … -w dir` in the project `dir`.
fn integrate(k: &Keel, dir: &Path, tool: &str, extra: &[&str]) -> String {
    let out = k
        .cmd()
        .current_dir(dir)
        .args(["integrate", tool])
        .args(extra)
        .arg("-w")
        .arg(dir)
        .output()
        .unwrap();
    crate::common::assert_success(&out, ("integrate", tool));
    String::from_utf8(out.stderr).unwrap()
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A script running this keel bound to `k`'s root.
fn keel_wrapper(k: &Keel, dir: &Path) -> PathBuf {
    let w = dir.join("keel-wrapper");
    write_exec(
        &w,
        &format!(
            "#!/bin/sh\nexec {} --root {} --progress plain \"$@\"\n",
            env!("CARGO_BIN_EXE_keel"),
            k.root().display()
        ),
    );
    w
}

fn make(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("make")
        .current_dir(dir)
        .args(args)
        .env_remove("MAKEFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .unwrap()
}

#[test]
fn make_include_keeps_the_default_goal_and_an_inner_make_stays_quiet() {
    require!(have("make"), "GNU make is not installed");
    let k = Keel::new();
    let (_t, dir) = sample();
    integrate(&k, &dir, "make", &[]);
    std::fs::write(
        dir.join("Makefile"),
        "include keel.mk\n\nhello:\n\techo hello > hello.out\n\nother:\n\ttouch other.out\n",
    )
    .unwrap();
    // `make` with no goal runs the includer's first target, not keel's `images`.
    let out = make(&dir, &["KEEL=true"]);
    crate::common::assert_success(&out, "make");
    assert!(
        dir.join("hello.out").is_file(),
        "default goal was not hello"
    );
    // An explicit .DEFAULT_GOAL before the include is kept too.
    std::fs::write(
        dir.join("Makefile"),
        ".DEFAULT_GOAL := other\ninclude keel.mk\nhello:\n\techo hello > hello.out\nother:\n\ttouch other.out\n",
    )
    .unwrap();
    crate::common::assert_success(&make(&dir, &["KEEL=true"]), "make");
    assert!(dir.join("other.out").is_file());
    // Inside a build environment keel is not there (`$(KEEL_IN) make` re-reads the
    // Makefile): make must say nothing about it and still run the target.
    let out = make(&dir, &["KEEL=/nonexistent/keel", "hello"]);
    crate::common::assert_success(&out, "inner make");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("No such file"), "{err}");
    assert!(!err.contains("keel"), "{err}");
}

#[test]
fn maven_executions_merge_into_an_existing_exec_plugin_without_duplicates() {
    require!(have("mvn"), "maven is not installed");
    require!(
        Path::new("/usr/share/maven-repo/org/codehaus/mojo/exec-maven-plugin/3.1.0").is_dir(),
        "exec-maven-plugin 3.1.0 is not installed (apt-get install libexec-maven-plugin-java)"
    );
    let k = Keel::new();
    let (t, dir) = sample();
    integrate(&k, &dir, "maven", &[]);
    let body = |name: &str, start: &str| {
        let s = std::fs::read_to_string(dir.join("keel-maven").join(name)).unwrap();
        s[s.find(start).unwrap()..].to_string()
    };
    let props = body("properties.xml", "\n<properties>");
    let executions = body("executions.xml", "    <execution>");
    // The project already runs something through exec-maven-plugin.
    let pom = format!(
        "<project xmlns=\"http://maven.apache.org/POM/4.0.0\"><modelVersion>4.0.0</modelVersion>\n\
         <groupId>example.keel</groupId><artifactId>sample</artifactId><version>0.3.1</version>\n\
         <packaging>pom</packaging>\n{props}\n<build><plugins><plugin>\n\
         <groupId>org.codehaus.mojo</groupId><artifactId>exec-maven-plugin</artifactId><version>3.1.0</version>\n\
         <executions><execution><id>own</id><phase>package</phase><goals><goal>exec</goal></goals>\n\
         <configuration><executable>touch</executable><arguments><argument>own.out</argument></arguments></configuration></execution>\n\
         {executions}</executions></plugin></plugins></build></project>\n"
    );
    std::fs::write(dir.join("pom.xml"), pom).unwrap();
    let log = t.path().join("argv.log");
    let rec = t.path().join("rec");
    write_exec(
        &rec,
        "#!/bin/sh\n{ for a in \"$@\"; do printf '[%s]' \"$a\"; done; echo; } >> \"$ARGV_LOG\"\n",
    );
    let out = Command::new("mvn")
        .current_dir(&dir)
        .args(["-o", "-B", "-Dmaven.repo.local=/usr/share/maven-repo"])
        .arg(format!("-Dkeel.executable={}", rec.display()))
        .arg("package")
        .env("ARGV_LOG", &log)
        .output()
        .unwrap();
    crate::common::assert_success(&out, "mvn package");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("WARNING"), "{text}");
    assert!(
        dir.join("own.out").is_file(),
        "the project's own execution ran"
    );
    let got = std::fs::read_to_string(&log).unwrap();
    assert!(got.starts_with("[build][-f][base/Dockerfile]"), "{got}");
    assert_eq!(got.lines().count(), 2, "{got}");
    // The maven docs point only at files that exist in the repository.
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/integrations/maven.md"),
    )
    .unwrap();
    assert!(
        !doc.contains("/work/"),
        "docs/integrations/maven.md points outside the repo"
    );
    assert!(doc.contains("executions.xml"));
}

#[test]
fn buildbot_docstring_example_imports() {
    require!(have("buildbot"), "buildbot is not installed");
    let k = Keel::new();
    let (_t, dir) = sample();
    integrate(&k, &dir, "buildbot", &[]);
    let module = std::fs::read_to_string(dir.join("keel_steps.py")).unwrap();
    let imports: Vec<&str> = module
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("from keel_steps import"))
        .collect();
    assert!(!imports.is_empty(), "{module}");
    // The interpreter buildbot runs under (Debian's, not whatever python3 is on PATH).
    let buildbot = run_ok(Command::new("sh").args(["-c", "command -v buildbot"]));
    let shebang = std::fs::read_to_string(buildbot.trim()).unwrap_or_default();
    let python = shebang
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .map(|l| l.split_whitespace().next().unwrap_or("python3").to_string())
        .unwrap_or_else(|| "python3".into());
    for line in imports {
        let out = Command::new(&python)
            .current_dir(&dir)
            .args(["-c", &format!("{line}\nprint('ok')")])
            .output()
            .unwrap();
        crate::common::assert_success(&out, line);
    }
}

#[test]
fn jenkins_job_builder_job_checks_out_the_repository() {
    require!(have("jenkins-jobs"), "jenkins-job-builder is not installed");
    let k = Keel::new();
    let (t, dir) = sample();
    integrate(
        &k,
        &dir,
        "jenkins",
        &["--scm", "https://git.example/team/sample.git"],
    );
    let out = t.path().join("jjb");
    run_ok(
        Command::new("jenkins-jobs")
            .args(["-l", "error", "test", "--config-xml", "-o"])
            .arg(&out)
            .arg(dir.join("jenkins/keel-jobs.yaml")),
    );
    let xml = std::fs::read_to_string(out.join("sample-keel/config.xml")).unwrap();
    assert!(xml.contains("hudson.plugins.git.GitSCM"), "{xml}");
    assert!(xml.contains("https://git.example/team/sample.git"), "{xml}");
    assert!(xml.contains("<name>main</name>"), "{xml}");
    // Without --scm, the project's git remote is used.
    let repo = t.path().join("repo");
    run_ok(Command::new("cp").arg("-a").arg(&dir).arg(&repo));
    // The copy keeps the checkout's owner (maybe not root): the test trusts its own copy,
    // and the owner, as whom keel then runs git, can reach it.
    run_ok(Command::new("chmod").arg("a+x").arg(t.path()));
    let git = |args: &[&str]| {
        run_ok(
            Command::new("git")
                .args(["-c", "safe.directory=*", "-C"])
                .arg(&repo)
                .args(args),
        )
    };
    git(&["init", "-q"]);
    git(&[
        "remote",
        "add",
        "origin",
        "https://git.example/from-remote.git",
    ]);
    // A checkout's .git belongs to its owner, as the copy does.
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg("--reference")
            .arg(&repo)
            .arg(&repo),
    );
    integrate(&k, &repo, "jenkins", &[]);
    let yaml = std::fs::read_to_string(repo.join("jenkins/keel-jobs.yaml")).unwrap();
    assert!(
        yaml.contains("https://git.example/from-remote.git"),
        "{yaml}"
    );
}

/// A docker-registry on 127.0.0.1 (a free port), stopped on drop.
struct Registry {
    child: std::process::Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> Registry {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("registry.yml");
    std::fs::write(
        &conf,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("registry-data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry { child, port }
}

/// The `sh '…'` steps of a Jenkinsfile with their stages (Groovy single quotes undone).
fn sh_steps(text: &str) -> Vec<(String, String)> {
    let mut stage = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("stage('") {
            stage = rest.split('\'').next().unwrap().to_string();
        }
        if let Some(rest) = line.strip_prefix("sh '") {
            let body = rest.strip_suffix('\'').expect("one-line sh step");
            let mut cmd = String::new();
            let mut chars = body.chars();
            while let Some(c) = chars.next() {
                cmd.push(if c == '\\' { chars.next().unwrap() } else { c });
            }
            out.push((stage.clone(), cmd));
        }
    }
    out
}

#[test]
fn jenkinsfile_runs_green_end_to_end_against_a_local_registry() {
    require!(is_root(), "keel build needs root");
    require!(
        have("docker-registry") && have("skopeo"),
        "docker-registry and skopeo are not installed"
    );
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "busybox"]);
    let (t, dir) = sample();
    integrate(&k, &dir, "jenkins", &["--test", "id -u > check.uid"]);
    let jf = std::fs::read_to_string(dir.join("Jenkinsfile")).unwrap();
    assert!(
        jf.contains("KEEL_REGISTRY = \"${env.KEEL_REGISTRY ?:"),
        "{jf}"
    );
    let registry = start_registry(t.path());
    let target = format!("localhost:{}", registry.port);
    let keel = keel_wrapper(&k, t.path());
    // Every stage, Push included, as Jenkins runs them: the pipeline's environment
    // (KEEL, and the agent's KEEL_REGISTRY) and one `sh` per step.
    let steps = sh_steps(&jf);
    let stages: Vec<&str> = steps.iter().map(|(s, _)| s.as_str()).collect();
    assert!(stages.contains(&"Push"), "{stages:?}");
    for (stage, cmd) in &steps {
        let out = Command::new("sh")
            .current_dir(&dir)
            .arg("-c")
            .arg(cmd)
            .env("KEEL", &keel)
            .env("KEEL_REGISTRY", &target)
            .output()
            .unwrap();
        crate::common::assert_success(&out, (stage, cmd));
    }
    assert!(
        dir.join("check.uid").is_file(),
        "the Test stage ran in the env"
    );
    // The registry has the pushed images.
    for name in ["app:1.0", "base:latest"] {
        let seen = run_ok(
            Command::new("skopeo")
                .args(["inspect", "--tls-verify=false"])
                .arg(format!("docker://{target}/{name}")),
        );
        assert!(seen.contains("\"Digest\""), "{seen}");
    }
}

/// The generated service runs `keel` from a clean environment (no KEEL_ROOT: as at
/// boot), so only the glue can tell it which root holds the image.
fn clean_env(cmd: &mut Command) -> &mut Command {
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
}

#[test]
fn supervisord_and_runit_glue_use_the_root_they_were_made_for() {
    require!(is_root(), "keel run needs root");
    require!(
        have("supervisord") && have("runsv") && have("sv"),
        "supervisor and runit are not installed"
    );
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let t = tempfile::tempdir().unwrap();
    let keel_bin = env!("CARGO_BIN_EXE_keel");
    let gen = |tool: &str, name: &str, image: &str| {
        let out = k
            .cmd()
            .current_dir(t.path())
            .args(["integrate", tool, "--keel", keel_bin, "--name", name, "-w"])
            .arg(t.path())
            .args([image, "--", "sh", "-c", "echo serving; exec sleep 300"])
            .output()
            .unwrap();
        crate::common::assert_success(&out, tool);
        String::from_utf8(out.stderr).unwrap()
    };
    // Generating for an image the root lacks warns at once.
    let warned = gen("runit", "missing", "no-such-image");
    assert!(warned.contains("no image no-such-image"), "{warned}");
    gen("runit", "rsvc", "bb");
    let run = std::fs::read_to_string(t.path().join("rsvc/run")).unwrap();
    assert!(run.contains(&k.root().display().to_string()), "{run}");
    // runit: the service runs from a clean environment.
    let mut runsv = clean_env(Command::new("runsv").arg(t.path().join("rsvc")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !k.ok(&["ps", "--format", "{{.Names}}"]).contains("rsvc") {
        assert!(
            Instant::now() < deadline,
            "the runit service's container never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let svc = t.path().join("rsvc");
    run_ok(Command::new("sv").args(["-w", "30", "exit"]).arg(&svc));
    let _ = runsv.wait();
    // The missing image: the run script fails at once, naming the image and the root.
    let out = clean_env(&mut Command::new(t.path().join("missing/run")))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stdout);
    assert!(
        err.contains("no such image") && err.contains(&k.root().display().to_string()),
        "{err}"
    );
    // supervisord: the program section runs against the same root.
    gen("supervisord", "ssvc", "bb");
    let sup = t.path().join("sup");
    std::fs::create_dir(&sup).unwrap();
    let conf = crate::integrate::supervisord_conf(&sup, &t.path().join("keel-ssvc.conf"));
    let mut daemon = clean_env(Command::new("supervisord").arg("-c").arg(&conf))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = loop {
        let st = Command::new("supervisorctl")
            .arg("-c")
            .arg(&conf)
            .args(["status", "ssvc"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&st.stdout).to_string();
        if text.contains("RUNNING") && k.ok(&["ps", "--format", "{{.Names}}"]).contains("ssvc") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = Command::new("supervisorctl")
        .arg("-c")
        .arg(&conf)
        .arg("shutdown")
        .output();
    let _ = daemon.wait();
    assert!(
        running,
        "supervisord never ran the container in {}",
        k.root().display()
    );
}

#[test]
fn systemd_unit_pins_the_root_and_checks_the_image() {
    require!(have("systemd-analyze"), "systemd-analyze is not installed");
    let k = Keel::new();
    let t = tempfile::tempdir().unwrap();
    let out = k
        .cmd()
        .current_dir(t.path())
        .args([
            "integrate",
            "systemd",
            "--keel",
            "/bin/true",
            "--name",
            "web",
            "app:1",
        ])
        .arg("-w")
        .arg(t.path())
        .output()
        .unwrap();
    crate::common::assert_success(&out, "integrate systemd");
    let unit = std::fs::read_to_string(t.path().join("keel-web.service")).unwrap();
    assert!(
        unit.contains(&format!("Environment=KEEL_ROOT={}", k.root().display())),
        "{unit}"
    );
    assert!(
        unit.contains("ExecStartPre=/bin/true inspect --type image --quiet app:1"),
        "{unit}"
    );
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(t.path().join("keel-web.service"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");
}
