//! Attacker-side tests: build. A hostile base image plants symlinks (absolute, and
//! relative `..` chains long enough to climb out of any snapshot directory) pointing at
//! a host canary, at every path a later build step writes to or reads from; the step
//! must write inside the image tree or fail clearly, and the canary stays intact and
//! unread.
#![allow(unused_imports)]
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::canary::{self, CanaryDir};
use crate::common::{self, is_root, Keel};
use crate::hostile::{bounded, bounded_env, files_below, text, PyServer, ENDLESS_HTTP};
use crate::require;

fn with_base() -> Keel {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    k
}

/// A build context with `files` (path → content).
fn context(k: &Keel, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = k.path(name);
    for (p, body) in files {
        let f = dir.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, body).unwrap();
    }
    dir
}

/// Link targets at `host` (a canary path) from inside an image: absolute, and a `..`
/// chain from a snapshot below the keel root.
fn link_targets(host: &Path) -> [(&'static str, String); 2] {
    [
        ("absolute", host.display().to_string()),
        (
            "relative",
            format!(
                "{}{}",
                "../".repeat(24).trim_end_matches('/'),
                host.display()
            ),
        ),
    ]
}

/// Builds `dockerfile` (plus `files`) as `tag`; returns the output (bounded).
fn build(
    k: &Keel,
    name: &str,
    tag: &str,
    dockerfile: &str,
    files: &[(&str, &str)],
    extra: &[&str],
) -> Output {
    let mut all = vec![("Dockerfile", dockerfile)];
    all.extend_from_slice(files);
    let ctx = context(k, name, &all);
    let mut args = vec!["build", "-t", tag];
    args.extend_from_slice(extra);
    let ctx = ctx.to_str().unwrap().to_string();
    args.push(&ctx);
    bounded(k, &args).0
}

/// The hostile base for one link style: `/app/cfg` → the canary's file, `/app/d` → the
/// canary directory, `/etc/passwd` left alone.
fn hostile_base(k: &Keel, canary: &CanaryDir, style: &str, target: &str) -> String {
    let tag = format!("hostile-{style}");
    let df = format!(
        "FROM bb\n\
         RUN mkdir -p /app && ln -s {target}/file /app/cfg && ln -s {target} /app/d\n"
    );
    let out = build(k, &format!("base-{style}"), &tag, &df, &[], &[]);
    common::assert_success(&out, ("hostile base", style));
    canary.assert_intact();
    tag
}

/// What a step against the hostile base must do: succeed writing inside the tree (the
/// image shows `want` at `check`) or fail clearly; the canary is intact either way.
fn step_stays_inside(
    k: &Keel,
    canary: &CanaryDir,
    case: &str,
    step: &str,
    files: &[(&str, &str)],
    extra: &[&str],
    check: Option<(&str, &str)>,
) {
    for (style, target) in link_targets(canary.path()) {
        let base = hostile_base(k, canary, style, &target);
        let tag = format!("{case}-{style}");
        let df = format!("FROM {base}\n{step}\n");
        let out = build(k, &format!("{case}-{style}"), &tag, &df, files, extra);
        canary.assert_intact();
        canary.assert_not_leaked(&text(&out));
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("error") || err.contains("Error"),
                "{case} ({style}) failed without a clear error: {err}"
            );
            eprintln!(
                "{case} ({style}): refused: {}",
                err.lines().last().unwrap_or("")
            );
            continue;
        }
        if let Some((path, want)) = check {
            let (run, _) = bounded(k, &["run", "--rm", &tag, "cat", path]);
            canary.assert_intact();
            canary.assert_not_leaked(&text(&run));
            common::assert_success(&run, (case, style, path));
            assert_eq!(
                String::from_utf8_lossy(&run.stdout),
                want,
                "{case} ({style}): {path} in the image"
            );
        }
    }
}

/// COPY of a file onto a symlink to a host file replaces the link inside the image.
#[test]
fn copy_file_onto_a_planted_symlink_stays_inside() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let c = CanaryDir::new();
    step_stays_inside(
        &k,
        &c,
        "copyfile",
        "COPY f.txt /app/cfg",
        &[("f.txt", "payload")],
        &[],
        Some(("/app/cfg", "payload")),
    );
}

/// COPY into a directory that is a symlink to a host directory writes into the tree.
#[test]
fn copy_into_a_symlinked_directory_stays_inside() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let c = CanaryDir::new();
    step_stays_inside(
        &k,
        &c,
        "copydir",
        "COPY f.txt /app/d/",
        &[("f.txt", "payload")],
        &[],
        Some(("/app/d/f.txt", "payload")),
    );
    step_stays_inside(
        &k,
        &c,
        "copytree",
        "COPY src/ /app/d/sub/",
        &[("src/a.txt", "payload-a")],
        &[],
        Some(("/app/d/sub/a.txt", "payload-a")),
    );
    // A copy that is not written straight into a layer (--chmod with a heredoc goes
    // through the snapshot) takes the same way in.
    step_stays_inside(
        &k,
        &c,
        "copymixed",
        "COPY --chmod=0600 f.txt <<EOF /app/d/\nheredoc\nEOF",
        &[("f.txt", "payload")],
        &[],
        Some(("/app/d/f.txt", "payload")),
    );
}

/// `COPY <<EOF /app/cfg` with /app/cfg a symlink to a host file: the heredoc must not be
/// written through the link onto the host (it was, as root).
#[test]
fn heredoc_onto_a_planted_symlink_stays_inside() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let c = CanaryDir::new();
    step_stays_inside(
        &k,
        &c,
        "heredoc",
        "COPY <<EOF /app/cfg\nowned\nEOF",
        &[],
        &[],
        Some(("/app/cfg", "owned\n")),
    );
    step_stays_inside(
        &k,
        &c,
        "heredocdir",
        "COPY <<EOF /app/d/x\nowned\nEOF",
        &[],
        &[],
        Some(("/app/d/x", "owned\n")),
    );
}

/// WORKDIR through a symlinked directory is created inside the tree.
#[test]
fn workdir_through_a_planted_symlink_stays_inside() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let c = CanaryDir::new();
    step_stays_inside(
        &k,
        &c,
        "workdir",
        "WORKDIR /app/d/w\nRUN echo here > x",
        &[],
        &[],
        Some(("/app/d/w/x", "here\n")),
    );
}

/// RUN --mount targets (bind, cache, tmpfs, secret) below a symlinked directory are
/// created and mounted inside the tree, and their stubs removed inside it.
#[test]
fn run_mount_targets_through_a_planted_symlink_stay_inside() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let c = CanaryDir::new();
    let secret = k.path("secret.txt");
    fs::write(&secret, "mount-secret").unwrap();
    let secret_arg = format!("id=s,src={}", secret.display());
    for (kind, mount, cmd, want) in [
        (
            "bind",
            "type=bind,source=.,target=/app/d/m",
            "ls /app/d/m",
            "Dockerfile\nf.txt\n",
        ),
        ("cache", "type=cache,target=/app/d/m", "ls /app/d/m", ""),
        ("tmpfs", "type=tmpfs,target=/app/d/m", "ls /app/d/m", ""),
        (
            "secret",
            "type=secret,id=s,target=/app/d/m",
            "cat /app/d/m",
            "mount-secret",
        ),
    ] {
        step_stays_inside(
            &k,
            &c,
            &format!("mount{kind}"),
            &format!("RUN --mount={mount} {cmd} > /seen"),
            &[("f.txt", "x")],
            &["--secret", &secret_arg],
            Some(("/seen", want)),
        );
    }
}

/// VOLUME below a symlinked directory: `keel run` mounts the volume inside the tree.
#[test]
fn volume_through_a_planted_symlink_stays_inside() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let c = CanaryDir::new();
    for (style, target) in link_targets(c.path()) {
        let base = hostile_base(&k, &c, style, &target);
        let tag = format!("vol-{style}");
        let out = build(
            &k,
            &tag,
            &tag,
            &format!("FROM {base}\nVOLUME /app/d/v\n"),
            &[],
            &[],
        );
        common::assert_success(&out, "VOLUME build");
        let (run, _) = bounded(
            &k,
            &["run", "--rm", &tag, "sh", "-c", "echo x > /app/d/v/y"],
        );
        c.assert_intact();
        c.assert_not_leaked(&text(&run));
    }
}

/// ADD of a local tar into a symlinked directory extracts inside the tree.
#[test]
fn add_archive_into_a_planted_symlink_stays_inside() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let c = CanaryDir::new();
    let tar_path = k.path("a.tar");
    {
        let mut b = tar::Builder::new(fs::File::create(&tar_path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(7);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "in-tar.txt", &b"payload"[..])
            .unwrap();
        b.finish().unwrap();
    }
    let bytes = fs::read(&tar_path).unwrap();
    for (style, target) in link_targets(c.path()) {
        let base = hostile_base(&k, &c, style, &target);
        let tag = format!("add-{style}");
        let ctx = context(
            &k,
            &tag,
            &[("Dockerfile", &format!("FROM {base}\nADD a.tar /app/d/\n"))],
        );
        fs::write(ctx.join("a.tar"), &bytes).unwrap();
        let (out, _) = bounded(&k, &["build", "-t", &tag, ctx.to_str().unwrap()]);
        c.assert_intact();
        c.assert_not_leaked(&text(&out));
        if out.status.success() {
            let (run, _) = bounded(&k, &["run", "--rm", &tag, "cat", "/app/d/in-tar.txt"]);
            assert_eq!(String::from_utf8_lossy(&run.stdout), "payload", "{style}");
        }
    }
}

/// A RUN step that swaps the parent of its mount target for a symlink to a host
/// directory: the mount-stub cleanup must not delete the host's empty directory (the
/// canary's `sub`) through that link.
#[test]
fn mount_stub_cleanup_never_follows_a_planted_symlink() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let c = CanaryDir::new();
    let secret = k.path("secret.txt");
    fs::write(&secret, "x").unwrap();
    let secret_arg = format!("id=s,src={}", secret.display());
    for (style, target) in link_targets(c.path()) {
        for mount in ["type=tmpfs,target=/d/sub", "type=secret,id=s,target=/d/sub"] {
            let df =
                format!("FROM bb\nRUN --mount={mount} sh -c 'mv /d /d.old && ln -s {target} /d'\n");
            let out = build(&k, "stub", "stub", &df, &[], &["--secret", &secret_arg]);
            c.assert_intact();
            c.assert_not_leaked(&text(&out));
            common::assert_success(&out, (style, mount));
        }
    }
}

/// An image whose `/etc/passwd` (or `/etc/group`) is a symlink to a host file, to
/// `/dev/zero`, or a fifo: `keel run -u NAME` and `COPY --chown=NAME` fail quickly with
/// a clear error, never read the host file, never hang and never exhaust memory.
#[test]
fn hostile_account_files_fail_quickly_and_leak_nothing() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let c = CanaryDir::new();
    let mut cases: Vec<(String, String)> = Vec::new();
    for (style, target) in link_targets(c.path()) {
        cases.push((
            format!("passwd-{style}"),
            format!("RUN ln -sf {target}/file /etc/passwd"),
        ));
        cases.push((
            format!("group-{style}"),
            format!("RUN ln -sf {target}/file /etc/group"),
        ));
    }
    cases.push(("zero".into(), "RUN ln -sf /dev/zero /etc/passwd".into()));
    cases.push((
        "fifo".into(),
        "RUN rm /etc/passwd && mkfifo /etc/passwd".into(),
    ));
    for (name, step) in &cases {
        let out = build(&k, name, name, &format!("FROM bb\n{step}\n"), &[], &[]);
        common::assert_success(&out, name);
        let user = if name.starts_with("group") {
            "0:somegroup"
        } else {
            "someuser"
        };
        let (run, took) = bounded(&k, &["run", "--rm", "-u", user, name, "true"]);
        let shown = text(&run);
        c.assert_not_leaked(&shown);
        assert!(
            !run.status.success(),
            "{name}: keel run -u {user} succeeded"
        );
        assert!(
            took < Duration::from_secs(30),
            "{name}: keel run took {took:?}"
        );
        assert!(
            shown.contains("/etc/passwd") || shown.contains("/etc/group"),
            "{name}: the error does not name the account file: {shown}"
        );
        let df = format!("FROM {name}\nCOPY --chown={user} f.txt /f.txt\n");
        let start = Instant::now();
        let out = build(
            &k,
            &format!("{name}-chown"),
            "chown",
            &df,
            &[("f.txt", "x")],
            &[],
        );
        let shown = text(&out);
        c.assert_not_leaked(&shown);
        assert!(
            !out.status.success(),
            "{name}: COPY --chown={user} succeeded"
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{name}: COPY --chown took {:?}",
            start.elapsed()
        );
        assert!(
            shown.contains("/etc/passwd") || shown.contains("/etc/group"),
            "{name}: the error does not name the account file: {shown}"
        );
        c.assert_intact();
    }
}

/// r012: a root keel gives the files it writes in a user's tree to that user. The user
/// plants a symlink to a host file where keel writes a stamp (`.keel/app.d`): keel
/// replaces the link with its own file and gives that to the user; the host file keeps
/// its owner and content.
#[test]
fn r012_giving_written_files_to_the_tree_owner_never_follows_a_planted_link() {
    require!(is_root(), "the point is keel running as root");
    use std::os::unix::fs::MetadataExt;
    let canary = CanaryDir::new();
    let k = Keel::new();
    let tree = k.path("proj");
    fs::create_dir_all(tree.join(".keel")).unwrap();
    fs::write(
        tree.join("keel.toml"),
        "[[image]]\nname = \"app\"\ncontext = \".\"\n",
    )
    .unwrap();
    fs::write(tree.join("Dockerfile"), "FROM scratch\n").unwrap();
    std::os::unix::fs::symlink(canary.file(), tree.join(".keel/app.d")).unwrap();
    for p in [
        tree.clone(),
        tree.join(".keel"),
        tree.join("keel.toml"),
        tree.join("Dockerfile"),
    ] {
        std::os::unix::fs::lchown(&p, Some(4000), Some(4000)).unwrap();
    }
    std::os::unix::fs::lchown(tree.join(".keel/app.d"), Some(4000), Some(4000)).unwrap();
    let out = k
        .cmd()
        .args([
            "context-files",
            "app",
            "--make-deps",
            ".keel/app.iid",
            "--update",
            ".keel/app.d",
        ])
        .current_dir(&tree)
        .output()
        .unwrap();
    common::assert_success(&out, "keel context-files --update");
    canary.assert_intact();
    let host = fs::symlink_metadata(canary.file()).unwrap();
    assert_eq!(
        (host.uid(), host.gid()),
        (0, 0),
        "the host file was given away"
    );
    let stamp = fs::symlink_metadata(tree.join(".keel/app.d")).unwrap();
    assert!(
        stamp.file_type().is_file(),
        "the planted link is still there"
    );
    assert_eq!((stamp.uid(), stamp.gid()), (4000, 4000));
}

/// A root keel writing where the user pointed it (`.keel/` stamps, `--iidfile`,
/// `--metadata-file`, `integrate -w`) in a tree another user owns: that user made `.keel`
/// a symlink to a host directory. keel refuses to follow the link (an error naming it),
/// and nothing appears in the host directory.
#[test]
fn root_keel_never_writes_through_a_directory_link_the_tree_owner_planted() {
    require!(is_root(), "the point is keel running as root");
    let canary = CanaryDir::new();
    let k = Keel::new();
    let tree = k.path("proj");
    fs::create_dir_all(&tree).unwrap();
    fs::write(
        tree.join("keel.toml"),
        "[[image]]\nname = \"app\"\ncontext = \".\"\n",
    )
    .unwrap();
    fs::write(tree.join("Dockerfile"), "FROM scratch\nLABEL a=b\n").unwrap();
    std::os::unix::fs::symlink(canary.path(), tree.join(".keel")).unwrap();
    for p in [
        tree.clone(),
        tree.join("keel.toml"),
        tree.join("Dockerfile"),
    ] {
        std::os::unix::fs::lchown(&p, Some(4000), Some(4000)).unwrap();
    }
    std::os::unix::fs::lchown(tree.join(".keel"), Some(4000), Some(4000)).unwrap();
    let runs: [&[&str]; 4] = [
        &[
            "context-files",
            "app",
            "--make-deps",
            ".keel/app.iid",
            "--update",
            ".keel/app.d",
        ],
        &["build", "--iidfile", ".keel/app.iid", "."],
        &["build", "--metadata-file", ".keel/sub/meta.json", "."],
        &["integrate", "make", "-w", ".keel"],
    ];
    for args in runs {
        let out = k.cmd().args(args).current_dir(&tree).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} wrote through the link: {err}"
        );
        assert!(
            err.contains(".keel is a symbolic link owned by uid 4000"),
            "{args:?}: the error does not name the planted link: {err}"
        );
        canary.assert_intact();
    }
}

/// Break: `ADD <url>` of a hostile server fills keel's disk. A body that streams past the
/// bound (here lowered with KEEL_ADD_MAX_SIZE) is cut off; a Content-Length over the default
/// bound is refused before the body is read. Either way the build fails naming the
/// Dockerfile line, the URL, the limit and how to raise it, and no partial download stays
/// under the root's temp or cache directories.
#[test]
fn add_url_of_an_endless_body_is_cut_off_at_the_bound() {
    require!(is_root(), "keel build needs root");
    require!(
        crate::common::have("python3"),
        "python3 is not installed (the test's HTTP server)"
    );
    let k = with_base();
    let canary = CanaryDir::new();
    let server = PyServer::start(ENDLESS_HTTP, &[]);
    for (path, limit, shown) in [
        ("/endless", Some("1m"), "1048576"),
        ("/announced", None, "4294967296"),
    ] {
        let url = format!("http://127.0.0.1:{}{path}", server.port);
        let df = format!("FROM bb\nRUN true\nADD {url} /big\n");
        let ctx = context(
            &k,
            &format!("ctx{}", path.replace('/', "-")),
            &[("Dockerfile", &df)],
        );
        let mut c = Command::new("timeout");
        c.args(["-s", "KILL", "120", env!("CARGO_BIN_EXE_keel")])
            .arg("--root")
            .arg(k.root())
            .args(["--progress", "plain", "build", "-t", "big"])
            .arg(&ctx)
            .env_remove("KEEL_ADD_MAX_SIZE")
            .stdin(Stdio::null());
        if let Some(l) = limit {
            c.env("KEEL_ADD_MAX_SIZE", l);
        }
        let out = c.output().unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "{path}: the build succeeded: {t}");
        assert_ne!(out.status.code(), Some(137), "{path}: keel was killed: {t}");
        for want in ["Dockerfile:3", url.as_str(), shown, "KEEL_ADD_MAX_SIZE"] {
            assert!(t.contains(want), "{path}: the error lacks {want:?}: {t}");
        }
        for dir in ["tmp", "cache/remote"] {
            let left = files_below(&k.root().join(dir));
            assert!(left.is_empty(), "{path}: left under {dir}: {left:?}");
        }
    }
    canary.assert_intact();
}

/// Break: `ADD <url>.git` of a hostile server that answers git with a body without end.
/// git reads a dumb-HTTP ref list whole, so before, git took memory until something
/// killed it (keel set no bound). keel now runs git within the download bound (here
/// lowered with KEEL_ADD_MAX_SIZE): the build fails naming the line, the URL and how to
/// raise the bound, nothing stays under the root's temp directory, and the canaries are
/// intact.
#[test]
fn add_git_url_of_an_endless_answer_is_stopped_at_keels_bound() {
    require!(is_root(), "keel build needs root");
    require!(
        crate::common::have("python3") && crate::common::have("git"),
        "python3 (the test's HTTP server) and git are needed"
    );
    let k = with_base();
    let canary = CanaryDir::new();
    let server = PyServer::start(ENDLESS_HTTP, &[]);
    let url = format!("http://127.0.0.1:{}/repo.git", server.port);
    let df = format!("FROM bb\nRUN true\nADD {url} /src\n");
    let ctx = context(&k, "ctx-git", &[("Dockerfile", &df)]);
    let ctx = ctx.display().to_string();
    let (out, _) = bounded_env(
        &k,
        &["build", "-t", "git", &ctx],
        &[("KEEL_ADD_MAX_SIZE", "64m")],
    );
    let t = text(&out);
    assert!(!out.status.success(), "the build succeeded: {t}");
    assert!(
        matches!(out.status.code(), Some(1..=125)),
        "keel was killed ({:?}): {t}",
        out.status
    );
    for want in [
        "Dockerfile:3",
        url.as_str(),
        "1140850688 bytes of memory",
        "KEEL_ADD_MAX_SIZE",
    ] {
        assert!(t.contains(want), "the error lacks {want:?}: {t}");
    }
    let left = files_below(&k.root().join("tmp"));
    assert!(left.is_empty(), "left under tmp: {left:?}");
    canary.assert_intact();
}
