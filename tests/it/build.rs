//! `keel build` end to end on a busybox base: every instruction reaching the image, multi-
//! stage builds and targets, build args, heredocs, .dockerignore, whiteouts, --chown and
//! --chmod, ADD of a local tar, the cache matrix, reproducibility and failures.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::{is_root, run_ok, Keel};
use crate::require;

pub(crate) fn with_base() -> Keel {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    k
}

/// Writes `files` (path → content) under a fresh context directory.
pub(crate) fn context(k: &Keel, name: &str, files: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = k.path(name);
    for (p, body) in files {
        let f = dir.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(&f, body).unwrap();
        // Explicit modes: COPY keeps the context's modes, and the suite also runs under
        // umask 077, which would otherwise make every context file 0600.
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        for d in f.ancestors().skip(1).take_while(|d| d.starts_with(&dir)) {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    dir
}

fn build(k: &Keel, ctx: &Path, extra: &[&str]) -> Output {
    k.cmd()
        .arg("build")
        .args(extra)
        .arg(ctx)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Builds and returns (image id, progress output); panics on failure.
fn build_ok(k: &Keel, ctx: &Path, extra: &[&str]) -> (String, String) {
    let out = build(k, ctx, extra);
    crate::common::assert_success(&out, ("keel build", extra));
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_out(k: &Keel, args: &[&str]) -> String {
    let out = k
        .cmd()
        .arg("run")
        .arg("--rm")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    crate::common::assert_success(&out, ("keel run", args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config(k: &Keel, image: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", image])).unwrap();
    v[0]["Config"].clone()
}

/// The progress lines of the step whose header contains `text`.
fn step_lines(progress: &str, text: &str) -> String {
    let header = progress
        .lines()
        .find(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no step {text:?} in:\n{progress}"));
    let n = header.split_whitespace().next().unwrap().to_string();
    progress
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(n.as_str()))
        .collect::<Vec<_>>()
        .join("\n")
}

const EVERY: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=bb
FROM ${BASE} AS base
MAINTAINER keel tests
LABEL com.example.name="every instruction" com.example.n=1
ENV PLAIN value
ENV QUOTED="two words" REF=$PLAIN-ref
ARG BUILD_NOTE=default-note
WORKDIR /srv
WORKDIR app
COPY --chown=1000:1000 --chmod=0640 conf.txt ./conf/
ADD bundle.tar /opt/
RUN <<EOF
echo "note=$BUILD_NOTE quoted=$QUOTED" > /srv/app/run.txt
id -u >> /srv/app/run.txt
EOF
COPY <<EOF /srv/app/heredoc.txt
made by a COPY heredoc
EOF
SHELL ["/bin/sh", "-c"]
RUN echo "$REF" > ref.txt
USER 1000:1000
EXPOSE 8080 9090/udp
VOLUME /data
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=30s --timeout=5s --retries=2 CMD cat /srv/app/ref.txt
ONBUILD RUN echo triggered > /tmp/onbuild.txt
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /srv/app/run.txt"]
"#;

#[test]
fn every_instruction_reaches_the_image() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    // A local tar for ADD to extract.
    let tar_dir = k.path("tarsrc");
    fs::create_dir_all(tar_dir.join("pkg")).unwrap();
    fs::write(tar_dir.join("pkg/data.txt"), "from the tarball").unwrap();
    let ctx = context(
        &k,
        "ctx",
        &[("Dockerfile", EVERY), ("conf.txt", "setting=1\n")],
    );
    let st = Command::new("tar")
        .arg("-C")
        .arg(&tar_dir)
        .arg("-czf")
        .arg(ctx.join("bundle.tar"))
        .arg("pkg")
        .status()
        .unwrap();
    assert!(st.success());
    build_ok(
        &k,
        &ctx,
        &["-t", "every", "--build-arg", "BUILD_NOTE=from-cli"],
    );
    let c = config(&k, "every");
    let cfg = &c["config"];
    assert_eq!(cfg["Labels"]["com.example.name"], "every instruction");
    assert_eq!(c["author"], "keel tests");
    let env: Vec<&str> = cfg["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for want in ["PLAIN=value", "QUOTED=two words", "REF=value-ref"] {
        assert!(env.contains(&want), "{want} not in {env:?}");
    }
    assert!(
        !env.iter().any(|e| e.starts_with("BUILD_NOTE")),
        "build args must not persist in the image env"
    );
    assert_eq!(cfg["WorkingDir"], "/srv/app");
    assert_eq!(cfg["User"], "1000:1000");
    assert!(
        cfg["ExposedPorts"].get("8080/tcp").is_some()
            && cfg["ExposedPorts"].get("9090/udp").is_some()
    );
    assert!(cfg["Volumes"].get("/data").is_some());
    assert_eq!(cfg["StopSignal"], "SIGUSR1");
    assert_eq!(
        cfg["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "cat /srv/app/ref.txt"])
    );
    assert_eq!(cfg["Healthcheck"]["Interval"], 30_000_000_000u64);
    assert_eq!(cfg["Healthcheck"]["Retries"], 2);
    assert_eq!(
        cfg["OnBuild"],
        serde_json::json!(["RUN echo triggered > /tmp/onbuild.txt"])
    );
    assert_eq!(cfg["Shell"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(cfg["Cmd"], serde_json::json!(["cat /srv/app/run.txt"]));
    let layers = c["rootfs"]["diff_ids"].as_array().unwrap().len();
    assert_eq!(
        layers,
        1 + 7,
        "one layer per filesystem step (base + WORKDIR, WORKDIR, COPY, ADD, RUN, COPY, RUN): WORKDIR creates its directory as BuildKit does"
    );
    let history = c["history"].as_array().unwrap();
    assert_eq!(
        history.iter().filter(|h| h["empty_layer"] != true).count(),
        layers
    );
    // The image's own command, then the files, as the container sees them.
    assert_eq!(
        run_out(&k, &["every"]),
        "note=from-cli quoted=two words\n0\n"
    );
    let files = run_out(&k, &["--entrypoint", "", "-u", "0", "every", "sh", "-c", "ls -ln /srv/app/conf/conf.txt | awk '{print $1, $3, $4}'; cat /opt/pkg/data.txt; echo; cat heredoc.txt ref.txt; id -u"]);
    assert_eq!(
        files,
        "-rw-r----- 1000 1000\nfrom the tarball\nmade by a COPY heredoc\nvalue-ref\n0\n"
    );
    // ONBUILD runs when the image is used as a base.
    let child = context(
        &k,
        "child",
        &[("Dockerfile", "FROM every\nRUN cat /tmp/onbuild.txt\n")],
    );
    build_ok(&k, &child, &["-t", "child"]);
    assert_eq!(
        run_out(
            &k,
            &["--entrypoint", "", "child", "cat", "/tmp/onbuild.txt"]
        ),
        "triggered\n"
    );
    assert!(
        config(&k, "child")["config"]["OnBuild"].is_null(),
        "triggers do not carry over to grandchildren"
    );
}

/// A stage based on another stage of the same Dockerfile runs that stage's ONBUILD
/// triggers, once per stage based on it, as if the parent had been built into an image
/// first (BuildKit since v0.17.1: moby/buildkit#5486, fixed by #5490; the classic
/// builder ran them once in all, moby/moby#35652). A stage based on that child does not
/// run them again: triggers are cleared once executed (moby/buildkit#1308).
/// buildah cannot be the peer here: with OCI images it drops ONBUILD with a warning.
#[test]
fn onbuild_triggers_run_in_each_stage_based_on_the_stage() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let dockerfile = "FROM bb AS base\nONBUILD RUN echo triggered >> /t\n\nFROM base AS child\n\nFROM base AS sibling\nRUN echo sibling >> /t\n\nFROM child\nCOPY --from=sibling /t /t-sibling\nRUN cat /t /t-sibling > /out\n";
    let ctx = context(&k, "ctx", &[("Dockerfile", dockerfile)]);
    build_ok(&k, &ctx, &["-t", "onbuild-stages"]);
    assert_eq!(
        run_out(&k, &["--entrypoint", "", "onbuild-stages", "cat", "/out"]),
        "triggered\ntriggered\nsibling\n",
        "child and sibling ran the trigger once each; the grandchild did not"
    );
    assert!(config(&k, "onbuild-stages")["config"]["OnBuild"].is_null());
}

#[test]
fn multi_stage_builds_only_what_the_target_needs() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let ctx = context(&k, "ctx", &[("Dockerfile", "FROM bb AS deps\nRUN echo dep > /dep.txt\n\nFROM bb AS broken\nRUN exit 1\n\nFROM deps AS build\nRUN cat /dep.txt > /built.txt && echo compiled >> /built.txt\n\nFROM bb\nCOPY --from=build /built.txt /out/\nCOPY --from=0 /dep.txt /out/first-stage.txt\n")]);
    let (_, progress) = build_ok(&k, &ctx, &["-t", "multi"]);
    assert!(
        !progress.contains("exit 1"),
        "an unneeded stage ran:\n{progress}"
    );
    assert_eq!(
        run_out(
            &k,
            &["multi", "cat", "/out/built.txt", "/out/first-stage.txt"]
        ),
        "dep\ncompiled\ndep\n"
    );
    build_ok(&k, &ctx, &["-t", "only-deps", "--target", "deps"]);
    assert_eq!(run_out(&k, &["only-deps", "cat", "/dep.txt"]), "dep\n");
    let err = String::from_utf8_lossy(&build(&k, &ctx, &["--target", "nope"]).stderr).into_owned();
    assert!(
        err.contains("target stage \"nope\" could not be found"),
        "{err}"
    );
    // A base image keel does not have says how to get it.
    let missing = context(
        &k,
        "missing",
        &[("Dockerfile", "FROM alpine:3\nRUN true\n")],
    );
    let err = String::from_utf8_lossy(&build(&k, &missing, &[]).stderr).into_owned();
    assert!(
        err.contains("Dockerfile:1")
            && err.contains("alpine:3")
            && err.contains("keel bootstrap busybox"),
        "{err}"
    );
}

#[test]
fn deletions_become_whiteouts_and_dockerignore_is_honoured() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let ctx = context(
        &k,
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM bb\nCOPY . /ctx/\nRUN rm /etc/hostname && rm -r /ctx/sub\n",
            ),
            (
                ".dockerignore",
                "# comments are fine\n*.log\nsecret/\n!secret/public.txt\n",
            ),
            ("keep.txt", "k"),
            ("debug.log", "noise"),
            ("secret/key", "s3cr3t"),
            ("secret/public.txt", "p"),
            ("sub/x", "x"),
        ],
    );
    build_ok(&k, &ctx, &["-t", "wh"]);
    let listing = run_out(&k, &["wh", "sh", "-c", "find /ctx | sort"]);
    assert!(
        listing.contains("/ctx/keep.txt") && listing.contains("/ctx/secret/public.txt"),
        "{listing}"
    );
    assert!(
        !listing.contains("debug.log")
            && !listing.contains("/ctx/secret/key")
            && !listing.contains("/ctx/sub"),
        "{listing}"
    );
    // The image's /etc/hostname is gone (the whiteout below); a container sees the one
    // keel mounts for it, as under docker.
    // The last layer carries the deletions as OCI whiteouts.
    let archive = k.path("wh.tar");
    k.ok(&["save", "wh", "-o", archive.to_str().unwrap()]);
    let x = k.path("x");
    fs::create_dir(&x).unwrap();
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&x)
        .arg("-xf")
        .arg(&archive)
        .status()
        .unwrap()
        .success());
    let c = config(&k, "wh");
    let last = c["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let names = String::from_utf8(
        Command::new("tar")
            .arg("-tf")
            .arg(x.join("blobs/sha256").join(last))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(names.lines().any(|l| l == "etc/.wh.hostname"), "{names}");
    assert!(names.lines().any(|l| l == "ctx/.wh.sub"), "{names}");
}

#[test]
fn the_cache_reruns_exactly_what_changed_and_says_why() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let ctx = context(&k, "ctx", &[
        ("Dockerfile", "FROM bb\nARG VERSION=1\nCOPY a.txt /a.txt\nRUN echo version=$VERSION > /v.txt\nCOPY src/ /src/\nRUN cat /src/* > /all.txt\n"),
        (".dockerignore", "**/*.tmp\n"),
        ("a.txt", "a"),
        ("src/one", "1"),
        ("src/two", "2"),
    ]);
    let (first, p) = build_ok(&k, &ctx, &["-t", "c"]);
    assert!(!p.contains("CACHED"), "{p}");
    // A no-op rebuild: everything CACHED, same image.
    let (again, p) = build_ok(&k, &ctx, &["-t", "c"]);
    assert_eq!(again, first);
    assert_eq!(p.matches("CACHED").count(), 4, "{p}");
    // mtime-only changes and ignored files change nothing.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(ctx.join("src/one"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    fs::write(ctx.join("src/scratch.tmp"), "ignored").unwrap();
    let (same, p) = build_ok(&k, &ctx, &["-t", "c"]);
    assert_eq!(same, first, "{p}");
    assert_eq!(p.matches("CACHED").count(), 4, "{p}");
    // Changing one file reruns from the first COPY that selects it, and says which file.
    fs::write(ctx.join("src/two"), "TWO").unwrap();
    let (changed, p) = build_ok(&k, &ctx, &["-t", "c"]);
    assert_ne!(changed, first);
    assert!(step_lines(&p, "COPY a.txt").contains("CACHED"), "{p}");
    assert!(step_lines(&p, "RUN echo version").contains("CACHED"), "{p}");
    assert!(step_lines(&p, "COPY src/").contains("two changed"), "{p}");
    assert!(
        step_lines(&p, "RUN cat /src").contains("parent step changed"),
        "{p}"
    );
    assert_eq!(run_out(&k, &["c", "cat", "/all.txt"]), "1TWO");
    // Same size, same mtime, new content: still not a stale hit.
    let meta = fs::metadata(ctx.join("src/two")).unwrap();
    fs::write(ctx.join("src/two"), "Two").unwrap();
    fs::File::options()
        .write(true)
        .open(ctx.join("src/two"))
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    let (_, p) = build_ok(&k, &ctx, &["-t", "c"]);
    assert!(step_lines(&p, "COPY src/").contains("two changed"), "{p}");
    assert_eq!(run_out(&k, &["c", "cat", "/all.txt"]), "1Two");
    // A build arg reruns the RUN that sees it.
    let (_, p) = build_ok(&k, &ctx, &["-t", "c", "--build-arg", "VERSION=2"]);
    assert!(step_lines(&p, "COPY a.txt").contains("CACHED"), "{p}");
    assert!(
        step_lines(&p, "RUN echo version").contains("build arg VERSION changed"),
        "{p}"
    );
    assert_eq!(run_out(&k, &["c", "cat", "/v.txt"]), "version=2\n");
    // The cache survives gc while it is recent, and --cache drops it.
    k.ok(&["gc"]);
    let (_, p) = build_ok(&k, &ctx, &["-t", "c", "--build-arg", "VERSION=2"]);
    assert_eq!(p.matches("CACHED").count(), 4, "{p}");
    k.ok(&["rmi", "c"]);
    k.ok(&["gc", "--cache"]);
    let (_, p) = build_ok(&k, &ctx, &["-t", "c"]);
    assert!(!p.contains("CACHED"), "{p}");
    let (_, p) = build_ok(&k, &ctx, &["-t", "c", "--no-cache"]);
    assert!(!p.contains("CACHED"), "{p}");
    k.ok(&["fsck"]);
}

#[test]
fn settled_files_take_the_stamp_shortcut_and_never_give_stale_hits() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let ctx = context(
        &k,
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM bb\nCOPY src/ /src/\nRUN cat /src/* > /all.txt\n",
            ),
            ("src/one", "1"),
            ("src/two", "2"),
        ],
    );
    // Past the racy window, the first build remembers the COPY key by the files' stamps.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let (first, _) = build_ok(&k, &ctx, &["-t", "s"]);
    let stamps = k.root().join("cache/stamps");
    assert_eq!(fs::read_dir(&stamps).unwrap().count(), 1);
    // The index of file digests is not needed on the shortcut: a no-op rebuild without it
    // still hits every step.
    fs::remove_dir_all(k.root().join("cache/stat")).unwrap();
    let (again, p) = build_ok(&k, &ctx, &["-t", "s"]);
    assert_eq!(again, first);
    assert_eq!(p.matches("CACHED").count(), 2, "{p}");
    assert!(
        !k.root().join("cache/stat").exists(),
        "the no-op rebuild hashed files"
    );
    // New content with the old size and mtime: the ctime moved, so no stale hit.
    let meta = fs::metadata(ctx.join("src/two")).unwrap();
    fs::write(ctx.join("src/two"), "3").unwrap();
    fs::File::options()
        .write(true)
        .open(ctx.join("src/two"))
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    let (changed, p) = build_ok(&k, &ctx, &["-t", "s"]);
    assert_ne!(changed, first);
    assert!(step_lines(&p, "COPY src/").contains("two changed"), "{p}");
    assert_eq!(run_out(&k, &["s", "cat", "/all.txt"]), "13");
}

#[test]
fn copied_files_with_long_paths_keep_their_names() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let deep = format!("src/{}/{}", "d".repeat(90), "file-with-a-long-name.txt");
    let ctx = context(
        &k,
        "ctx",
        &[
            ("Dockerfile", "FROM bb\nCOPY src/ /opt/app/\n"),
            (deep.as_str(), "deep content"),
        ],
    );
    build_ok(&k, &ctx, &["-t", "long"]);
    let inside = format!("/opt/app/{}", deep.trim_start_matches("src/"));
    assert!(inside.len() > 100);
    assert_eq!(run_out(&k, &["long", "cat", &inside]), "deep content");
}

#[test]
fn run_mounts_give_secrets_agents_and_other_stages_without_leaving_traces() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let dockerfile = "FROM bb AS tools\n\
        RUN mkdir -p /opt/tool && echo tool-v1 > /opt/tool/version\n\
        FROM bb\n\
        RUN --mount=type=secret,id=token,env=TOKEN,required sh -c 'echo $TOKEN | tr a-z A-Z > /seen-env'\n\
        RUN --mount=type=secret,id=token tr a-z A-Z < /run/secrets/token > /seen-file && stat -c %a /run/secrets/token > /secret-mode\n\
        RUN --mount=type=secret,id=absent,target=/run/absent sh -c 'test -e /run/absent && echo yes || echo no' > /absent\n\
        RUN --mount=type=bind,from=tools,source=/opt/tool,target=/mnt/tool cat /mnt/tool/version > /tool-version\n\
        RUN --mount=type=bind,source=data,target=/data cat /data/x > /data-copy\n\
        RUN --mount=type=ssh test -S $SSH_AUTH_SOCK && echo agent > /agent\n";
    let ctx = context(&k, "ctx", &[("Dockerfile", dockerfile), ("data/x", "one")]);
    let secret = k.path("token.txt");
    fs::write(&secret, "s3cr3t-value").unwrap();
    let sock = k.path("agent.sock");
    let _agent = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let secret_arg = format!("id=token,src={}", secret.display());
    let ssh_arg = format!("default={}", sock.display());
    let flags = ["-t", "m", "--secret", &secret_arg, "--ssh", &ssh_arg];
    let (first, _) = build_ok(&k, &ctx, &flags);
    let cat = |p: &str| run_out(&k, &["m", "cat", p]);
    // (The steps store the secret upper-cased, so the blobs can be searched for it.)
    assert_eq!(cat("/seen-file"), "S3CR3T-VALUE");
    assert_eq!(cat("/secret-mode"), "400\n");
    assert_eq!(cat("/seen-env"), "S3CR3T-VALUE\n");
    assert_eq!(
        cat("/absent"),
        "no\n",
        "a secret the build was not given is not mounted"
    );
    assert_eq!(cat("/tool-version"), "tool-v1\n");
    assert_eq!(cat("/data-copy"), "one");
    assert_eq!(cat("/agent"), "agent\n");
    // Mount points are the mounts', not the image's; the secret is in no blob.
    let left = run_out(
        &k,
        &[
            "m",
            "sh",
            "-c",
            "ls -d /run/secrets /run/buildkit /mnt/tool /data /run/absent 2>/dev/null; true",
        ],
    );
    assert_eq!(left, "", "mount points left in the image");
    for e in fs::read_dir(k.root().join("images/blobs/sha256")).unwrap() {
        let bytes = fs::read(e.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(12).any(|w| w == b"s3cr3t-value"),
            "the secret reached a blob"
        );
    }
    // A new secret value is not a new input; a changed bound file is.
    fs::write(&secret, "other-value!").unwrap();
    let (again, p) = build_ok(&k, &ctx, &flags);
    assert_eq!(again, first, "{p}");
    fs::write(ctx.join("data/x"), "two").unwrap();
    let (_, p) = build_ok(&k, &ctx, &flags);
    assert!(
        step_lines(&p, "source=data").contains("data:x changed"),
        "{p}"
    );
    assert_eq!(cat("/data-copy"), "two");
    // A required secret that is missing fails the step and says how to pass it.
    let out = build(&k, &ctx, &["-t", "m2", "--no-cache", "--ssh", &ssh_arg]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--secret id=token"), "{err}");
}

#[test]
fn linked_copies_keep_their_layer_when_only_earlier_steps_change() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let ctx = context(&k, "ctx", &[
        ("Dockerfile", "FROM bb\nARG V=1\nRUN echo $V > /v\nCOPY --link --chown=nobody app/ /opt/app/\nRUN cat /opt/app/a /v > /seen\n"),
        ("app/a", "linked\n"),
    ]);
    // The copy keeps the source's mode: make it 0644 whatever the test's umask.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(ctx.join("app/a"), fs::Permissions::from_mode(0o644)).unwrap();
    let layers = |image: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", image])).unwrap();
        v[0]["Manifest"]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    build_ok(&k, &ctx, &["-t", "l1"]);
    assert_eq!(run_out(&k, &["l1", "cat", "/seen"]), "linked\n1\n");
    assert_eq!(
        run_out(&k, &["l1", "stat", "-c", "%u:%g %a", "/opt/app/a"]),
        "65534:65534 644\n",
        "--chown names resolve in the parent"
    );
    // The RUN above it changes; the linked layer is linked again, not copied anew.
    let (_, p) = build_ok(&k, &ctx, &["-t", "l2", "--build-arg", "V=2"]);
    assert!(
        step_lines(&p, "COPY --link").contains("linking the layer built before"),
        "{p}"
    );
    assert_eq!(run_out(&k, &["l2", "cat", "/seen"]), "linked\n2\n");
    let (a, b) = (layers("l1"), layers("l2"));
    assert_eq!(a.len(), b.len());
    let n = a.len();
    assert_ne!(a[n - 3], b[n - 3], "the RUN layer changed");
    assert_eq!(a[n - 2], b[n - 2], "the linked layer is the same blob");
    // The linked layer holds only its files and their parent directories.
    let blob = k
        .root()
        .join("images/blobs/sha256")
        .join(a[n - 2].trim_start_matches("sha256:"));
    let names = run_ok(Command::new("tar").arg("-tf").arg(&blob));
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["opt/", "opt/app/", "opt/app/a"],
        "{names}"
    );
}

#[test]
fn on_a_terminal_each_step_is_a_spinner_that_keeps_its_output_tail() {
    require!(is_root(), "RUN steps need root");
    require!(
        crate::common::have("script"),
        "needs script(1) for a pseudo-terminal"
    );
    let k = with_base();
    let ctx = context(&k, "ctx", &[(
        "Dockerfile",
        "FROM bb\nRUN for i in 1 2 3 4 5 6 7 8 9; do echo out-$i; sleep 0.05; done; sleep 0.3\nENV A=1\n",
    )]);
    let typescript = k.path("typescript");
    let cmd = format!(
        "{} --root {} build -t tty {}",
        env!("CARGO_BIN_EXE_keel"),
        k.root().display(),
        ctx.display()
    );
    run_ok(
        Command::new("script")
            .args(["-qec", &cmd])
            .arg(&typescript)
            .env("COLUMNS", "120"),
    );
    let raw = fs::read_to_string(&typescript).unwrap();
    // Drawn and redrawn in place: cursor movements, the output's tail under the header.
    assert!(raw.contains("\u{1b}["), "no terminal drawing: {raw}");
    assert!(raw.contains("out-9"), "{raw}");
    // When the step ends its spinner collapses into one summary line.
    let text = raw.replace('\r', "\n");
    let summary = text
        .lines()
        .find(|l| l.contains("#2 [stage-0 1/2] RUN") && l.contains("DONE"))
        .unwrap_or_else(|| panic!("no summary line: {text}"));
    assert!(
        !summary.contains("out-9"),
        "the summary line carries no output: {summary}"
    );
    // The tail keeps the last lines only: the first output line is gone by the end.
    let last_frame = text
        .rsplit("#2 [stage-0 1/2] RUN")
        .nth(1)
        .unwrap_or_default();
    assert!(last_frame.contains("out-9"), "{last_frame}");
    assert!(!last_frame.contains("out-1"), "{last_frame}");
}

#[test]
fn platform_args_are_the_hosts_and_other_platforms_are_refused_clearly() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let ctx = context(&k, "ctx", &[(
        "Dockerfile",
        "FROM --platform=$BUILDPLATFORM bb AS tools\nARG TARGETARCH\nARG TARGETPLATFORM\nRUN echo $TARGETARCH $TARGETPLATFORM $BUILDOS > /p\n",
    )]);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    build_ok(
        &k,
        &ctx,
        &["-t", "plat", "--platform", &format!("linux/{arch}")],
    );
    // BUILDOS was not declared in the stage, so the RUN does not see it.
    assert_eq!(
        run_out(&k, &["plat", "cat", "/p"]),
        format!("{arch} linux/{arch}\n")
    );
    fs::write(
        ctx.join("Dockerfile"),
        "FROM --platform=linux/s390x bb\nRUN true\n",
    )
    .unwrap();
    let out = build(&k, &ctx, &["-t", "plat2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // Issue 16: another platform is built under emulation when the base has it; this
    // base is the host's only (or, without qemu, the emulator is missing): refused by name.
    assert!(
        err.contains("Dockerfile:1")
            && (err.contains("no image for platform linux/s390x")
                || err.contains("needs the emulator qemu-s390x")),
        "{err}"
    );
}

#[test]
fn builds_are_reproducible_across_roots_and_checkouts() {
    require!(is_root(), "RUN steps need root");
    let files: &[(&str, &str)] = &[
        (
            "Dockerfile",
            "FROM bb\nCOPY . /app/\nRUN echo built > /app/out.txt && touch /app/stamp\n",
        ),
        ("a.txt", "a"),
        ("dir/b.txt", "b"),
    ];
    let (k1, k2) = (with_base(), with_base());
    let c1 = context(&k1, "ctx", files);
    let c2 = context(&k2, "other-checkout", files);
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    fs::File::options()
        .write(true)
        .open(c2.join("a.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let (id1, _) = build_ok(&k1, &c1, &["-t", "r"]);
    let (id2, _) = build_ok(&k2, &c2, &["-t", "r"]);
    assert_eq!(
        id1, id2,
        "two roots and two checkouts gave different images"
    );
    let i1: serde_json::Value = serde_json::from_str(&k1.ok(&["inspect", "r"])).unwrap();
    let i2: serde_json::Value = serde_json::from_str(&k2.ok(&["inspect", "r"])).unwrap();
    assert_eq!(i1[0]["Digest"], i2[0]["Digest"]);
    let out = k1
        .cmd()
        .args(["build", "--check-reproducible"])
        .arg(&c1)
        .output()
        .unwrap();
    crate::common::assert_success(&out, "--check-reproducible");
    assert!(String::from_utf8_lossy(&out.stdout).contains("reproducible"));
    // A build that writes the time is not, and the check names the file.
    let bad = context(
        &k1,
        "bad",
        &[(
            "Dockerfile",
            "FROM bb\nRUN cat /proc/sys/kernel/random/uuid > /now.txt\n",
        )],
    );
    let out = k1
        .cmd()
        .args(["build", "--check-reproducible"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("now.txt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_failing_step_names_itself_tags_nothing_and_caches_nothing() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let ctx = context(
        &k,
        "ctx",
        &[(
            "Dockerfile",
            "FROM bb\nRUN echo before\nRUN echo 'about to fail' && exit 7\nRUN echo never\n",
        )],
    );
    let out = build(&k, &ctx, &["-t", "broken"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:3") && err.contains("exit 7") && err.contains("status 7"),
        "{err}"
    );
    assert!(
        err.contains("about to fail"),
        "the command's output is shown: {err}"
    );
    assert!(
        err.contains("logs/builds/"),
        "the log path is printed: {err}"
    );
    assert!(!err.contains("echo never"), "{err}");
    assert!(k.fails(&["inspect", "broken"]).contains("no such image"));
    let out = build(&k, &ctx, &["-t", "broken"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        step_lines(&err, "RUN echo before").contains("CACHED"),
        "{err}"
    );
    assert!(
        !step_lines(&err, "exit 7").contains("CACHED"),
        "a failed step was cached: {err}"
    );
    // Syntax errors point at the line and suggest the fix.
    let typo = context(&k, "typo", &[("Dockerfile", "FROM bb\nCOPPY a b\n")]);
    let err = String::from_utf8_lossy(&build(&k, &typo, &[]).stderr).into_owned();
    assert!(
        err.contains("Dockerfile:2") && err.contains("did you mean COPY?"),
        "{err}"
    );
    let left = fs::read_dir(k.root().join("storage/snapshots"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "snapshots left behind");
}

#[test]
fn stop_signal_from_the_image_is_honoured() {
    require!(is_root(), "keel run needs root");
    let k = with_base();
    let ctx = context(&k, "ctx", &[("Dockerfile", "FROM bb\nSTOPSIGNAL SIGUSR1\nCMD [\"sh\", \"-c\", \"trap 'echo got-usr1; exit 0' USR1; trap 'echo got-term; exit 9' TERM; echo ready; while true; do sleep 0.1; done\"]\n")]);
    build_ok(&k, &ctx, &["-t", "stopper"]);
    k.ok(&["run", "-d", "--name", "s", "stopper"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !k.ok(&["logs", "s"]).contains("ready") {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    k.ok(&["stop", "s"]);
    assert_eq!(k.ok(&["wait", "s"]).trim(), "0");
    assert!(k.ok(&["logs", "s"]).contains("got-usr1"));
    k.ok(&["rm", "s"]);
}

#[test]
fn sigterm_stops_a_build_and_cleans_up() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let ctx = context(
        &k,
        "ctx",
        &[(
            "Dockerfile",
            "FROM bb\nRUN echo started; sleep 60\nRUN echo never\n",
        )],
    );
    let mut child = k
        .cmd()
        .arg("build")
        .arg("-t")
        .arg("slow")
        .arg(&ctx)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    use std::io::BufRead;
    while !seen.lines().any(|l| l.trim_end().ends_with(" started")) {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "build ended early: {seen}"
        );
        seen.push_str(&line);
    }
    let t = std::time::Instant::now();
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "{rest}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(30),
        "the build did not stop promptly"
    );
    assert!(
        !rest.contains("echo never") || rest.contains("interrupted"),
        "{rest}"
    );
    assert!(k.fails(&["inspect", "slow"]).contains("no such image"));
    let left = fs::read_dir(k.root().join("storage/snapshots"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "snapshots left behind");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(k.root().to_str().unwrap()),
        "mounts left behind"
    );
}

// ---- issue 9: one front end, typed plan, typed config, versioned cache keys ----

#[test]
fn r009_copy_parents_keeps_parent_directories_after_the_pivot() {
    require!(is_root(), "builds need root");
    let k = with_base();
    let dockerfile = "FROM bb\n\
        COPY --parents ./x/a.txt ./y/b.txt /dst/\n\
        COPY --parents ./x/./sub/c.txt /pivot/\n\
        COPY --parents ./x/sub /tree/\n";
    let ctx = context(
        &k,
        "ctx",
        &[
            ("Dockerfile", dockerfile),
            ("x/a.txt", "a"),
            ("y/b.txt", "b"),
            ("x/sub/c.txt", "c"),
        ],
    );
    build_ok(&k, &ctx, &["-t", "parents"]);
    let listing = run_out(
        &k,
        &[
            "parents",
            "sh",
            "-c",
            "find /dst /pivot /tree -type f | sort",
        ],
    );
    assert_eq!(
        listing,
        "/dst/x/a.txt\n/dst/y/b.txt\n/pivot/sub/c.txt\n/tree/x/sub/c.txt\n"
    );
}

#[test]
fn r009_bind_mounts_never_write_to_the_host_context() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let ro = "FROM bb\nRUN --mount=type=bind,source=.,target=/src,rw=false sh -c 'echo hacked > /src/data.txt'\n";
    let ctx = context(&k, "ro", &[("Dockerfile", ro), ("data.txt", "original")]);
    let out = build(&k, &ctx, &["-t", "ro"]);
    assert!(
        !out.status.success(),
        "a rw=false bind was writable: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(ctx.join("data.txt")).unwrap(),
        "original"
    );
    let rw = "FROM bb\nRUN --mount=type=bind,source=.,target=/src,rw sh -c 'echo changed > /src/data.txt && touch /src/new && cat /src/data.txt > /seen'\n\
              RUN --mount=type=bind,source=data.txt,target=/one.txt,readwrite sh -c 'echo x >> /one.txt && cat /one.txt > /seen-one'\n";
    let ctx = context(&k, "rw", &[("Dockerfile", rw), ("data.txt", "original")]);
    build_ok(&k, &ctx, &["-t", "rw"]);
    assert_eq!(run_out(&k, &["rw", "cat", "/seen"]), "changed\n");
    assert_eq!(run_out(&k, &["rw", "cat", "/seen-one"]), "originalx\n");
    assert_eq!(
        fs::read_to_string(ctx.join("data.txt")).unwrap(),
        "original"
    );
    assert!(
        !ctx.join("new").exists(),
        "a write reached the host context"
    );
}

#[test]
fn r009_mount_options_expand_and_tmpfs_size_is_enforced() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let dockerfile = "FROM bb\nARG T=/cachedir\nARG SIZE=1m\n\
        RUN --mount=type=cache,target=$T,id=c-$T sh -c 'echo kept > $T/f; ls /cachedir > /listing'\n\
        RUN --mount=type=tmpfs,target=/t,size=$SIZE sh -c 'if dd if=/dev/zero of=/t/big bs=1024 count=2048 2>/dev/null; then echo fit; else echo full; fi > /result'\n\
        RUN --mount=type=tmpfs,target=/u sh -c 'dd if=/dev/zero of=/u/big bs=1024 count=2048 2>/dev/null && echo fit > /unbounded'\n\
        RUN --mount=type=cache,target=/o,id=owned,uid=1000,gid=1001,mode=0700,sharing=locked \
            --mount=type=cache,target=/o2,id=owned,sharing=locked stat -c '%u %g %a' /o > /owner\n";
    let ctx = context(&k, "ctx", &[("Dockerfile", dockerfile)]);
    build_ok(&k, &ctx, &["-t", "m"]);
    assert_eq!(run_out(&k, &["m", "cat", "/listing"]), "f\n");
    let left = run_out(
        &k,
        &[
            "m",
            "sh",
            "-c",
            "test -e /cachedir/f && echo leaked || echo clean",
        ],
    );
    assert_eq!(left, "clean\n", "the cache's files reached the image");
    assert_eq!(run_out(&k, &["m", "cat", "/result"]), "full\n");
    assert_eq!(run_out(&k, &["m", "cat", "/unbounded"]), "fit\n");
    assert_eq!(run_out(&k, &["m", "cat", "/owner"]), "1000 1001 700\n");
}

#[test]
fn r009_every_mount_from_builds_its_stage() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let dockerfile = "FROM bb AS one\nRUN echo 1 > /one\n\
        FROM bb AS two\nRUN echo 2 > /two\n\
        FROM bb AS both\n\
        RUN --mount=type=bind,from=one,source=/one,target=/m1 --mount=type=bind,from=two,source=/two,target=/m2 sh -c 'cat /m1 /m2 > /both'\n\
        FROM bb AS three\nRUN echo 3 > /three\n\
        FROM both\n\
        RUN --mount=type=cache,from=three,target=/seeded,id=seeded cat /seeded/three > /seeded-copy\n";
    let ctx = context(&k, "ctx", &[("Dockerfile", dockerfile)]);
    build_ok(&k, &ctx, &["-t", "both", "--target", "both"]);
    assert_eq!(run_out(&k, &["both", "cat", "/both"]), "1\n2\n");
    // A cache mount's from= is a dependency too, and seeds a new cache.
    build_ok(&k, &ctx, &["-t", "seeded"]);
    assert_eq!(run_out(&k, &["seeded", "cat", "/seeded-copy"]), "3\n");
}

/// Stores a copy of `image` whose config has `edit` applied, tagged `name`.
fn tag_with_config(k: &Keel, image: &str, name: &str, edit: impl Fn(&mut serde_json::Value)) {
    use sha2::Digest as _;
    let layout = k.root().join("images");
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let put = |bytes: &[u8]| {
        let hex = format!("{:x}", sha2::Sha256::digest(bytes));
        fs::write(blob(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"] == format!("{image}:latest")
        })
        .unwrap()
        .clone();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(entry["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(
        &fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    edit(&mut config);
    let (d, size) = put(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = d.into();
    manifest["config"]["size"] = size.into();
    let (d, size) = put(&serde_json::to_vec(&manifest).unwrap());
    let mut e = entry;
    e["digest"] = d.into();
    e["size"] = size.into();
    e["annotations"]["org.opencontainers.image.ref.name"] = format!("{name}:latest").into();
    index["manifests"].as_array_mut().unwrap().push(e);
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn r009_a_base_config_with_wrong_types_fails_the_build_naming_the_image() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    tag_with_config(&k, "bb", "broken", |c| {
        c["config"]["Shell"] = "/bin/sh -c".into();
    });
    let ctx = context(
        &k,
        "ctx",
        &[("Dockerfile", "FROM broken\nRUN echo ran > /x\n")],
    );
    let out = build(&k, &ctx, &["-t", "child"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "built on a malformed config: {err}");
    assert!(
        err.contains("Dockerfile:1") && err.contains("\"broken\"") && err.contains("config"),
        "{err}"
    );
    assert!(
        err.contains("Shell") || err.contains("invalid type"),
        "{err}"
    );
}

#[test]
fn r009_cache_entries_of_an_older_key_format_never_hit() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let ctx = context(&k, "ctx", &[("Dockerfile", "FROM bb\nRUN echo hi > /x\n")]);
    build_ok(&k, &ctx, &["-t", "v"]);
    let (_, p) = build_ok(&k, &ctx, &["-t", "v"]);
    assert!(step_lines(&p, "RUN echo hi").contains("CACHED"), "{p}");
    // Rewrite every entry the way keel wrote them before keys were versioned: the bare
    // state, with no format version.
    let steps = k.root().join("cache/steps");
    let mut n = 0;
    for e in fs::read_dir(&steps).unwrap() {
        let path = e.unwrap().path();
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        v.as_object_mut()
            .unwrap()
            .retain(|k, _| k != "keel_cache_version");
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        n += 1;
    }
    assert!(n > 0, "no cache entries in {}", steps.display());
    let (_, p) = build_ok(&k, &ctx, &["-t", "v"]);
    let step = step_lines(&p, "RUN echo hi");
    assert!(!step.contains("CACHED"), "an old-format entry hit: {p}");
    assert!(step.contains("running"), "{p}");
}

#[test]
fn r009_front_end_errors_reach_the_user_with_line_caret_and_hint() {
    let k = Keel::new();
    let cases = [
        (
            "FROM bb\nRUNN echo\n",
            "Dockerfile:2:1: unknown instruction: RUNN\n 2 | RUNN echo\n   | ^\nhint: did you mean RUN?",
        ),
        (
            "FROM bb\nRUN --mount=type=cache,target=/c,sharing=bogus true\n",
            "Dockerfile:2:1: RUN: unsupported sharing value \"bogus\"\n 2 | RUN --mount=type=cache,target=/c,sharing=bogus true\n   | ^\nhint: use shared, private or locked",
        ),
        (
            "FROM bb\nCOPY --chmod=rwx a /b\n",
            "Dockerfile:2:1: COPY: invalid --chmod value \"rwx\"; use an octal mode such as 0644\n 2 | COPY --chmod=rwx a /b\n   | ^\nhint: write --chmod=0644",
        ),
    ];
    for (i, (dockerfile, want)) in cases.iter().enumerate() {
        let ctx = context(&k, &format!("ctx{i}"), &[("Dockerfile", dockerfile)]);
        for extra in [&[][..], &["--dry-run"][..]] {
            let out = build(&k, &ctx, extra);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success());
            let shown = err.replace(&format!("{}/", ctx.display()), "");
            assert!(shown.contains(want), "want:\n{want}\ngot:\n{err}");
        }
    }
}

#[test]
fn r009_dry_run_prints_the_plan_without_a_store() {
    let k = Keel::new();
    let dockerfile = "ARG BASE=bb\nFROM $BASE AS tools\nRUN --mount=type=cache,target=/c make\n\
        FROM scratch AS unused\nFROM tools\nCOPY --from=tools /a /b\n";
    let ctx = context(&k, "ctx", &[("Dockerfile", dockerfile)]);
    let out = build(&k, &ctx, &["--dry-run", "--build-arg", "BASE=alpine"]);
    crate::common::assert_success(&out, "keel build --dry-run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("stage tools (line 2): FROM alpine (image)"),
        "{text}"
    );
    assert!(text.contains("mount: cache \"/c\" at /c"), "{text}");
    assert!(text.contains("key: parent + copy"), "{text}");
    assert!(!text.contains("unused"), "{text}");
    assert!(
        !k.root().join("images").exists(),
        "a dry run opened the store"
    );
}

/// Runs keel (against `k`'s root) with umask `mask`, as a daemon or cron job would.
fn keel_with_umask(k: &Keel, mask: u32, args: &[&str]) -> String {
    use std::os::unix::process::CommandExt;
    let mut c = k.cmd();
    c.args(args).stdin(Stdio::null());
    // SAFETY: umask(2) is async-signal-safe and touches only the child.
    unsafe {
        c.pre_exec(move || {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
            Ok(())
        });
    }
    run_ok(&mut c)
}

/// Every (path, mode, owner) below the unpacked-layer cache of `k`'s root.
fn layer_cache_modes(k: &Keel) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let base = k.root().join("storage/layers");
    let mut out = Vec::new();
    let mut todo = vec![base.clone()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(&base).unwrap().display().to_string();
            if !rel.ends_with("unpacked.json") {
                out.push(format!("{rel} {:o} {}:{}", m.mode(), m.uid(), m.gid()));
            }
            if m.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// r012: the caller's umask reaches neither RUN steps, containers, nor keel's own
/// unpack and commit: a build + run under umask 077 gives the image (same digest) and
/// the unpacked-layer cache a 022 one gives, and a non-root user can read what RUN wrote.
/// Once with the default layer cache (as root on Linux 6.12+ the COPY layer is a chunked
/// image, whose files must be 0644 whatever the umask) and once with the tree cache
/// forced (the COPY layer a tree, whose directories keep the layer's modes).
#[test]
fn r012_umask_077_builds_the_same_image_as_022() {
    require!(is_root(), "RUN steps need root");
    r012_umask_077_with(None);
    r012_umask_077_with(Some("tree"));
}

fn r012_umask_077_with(format: Option<&str>) {
    let with = |k: Keel| match format {
        Some(f) => k.with_env("KEEL_LAYER_FORMAT", f),
        None => k,
    };
    let (k22, k77) = (with(Keel::new()), with(Keel::new()));
    let ctx = context(&k22, "ctx", &[
        ("Dockerfile", "FROM bb\nCOPY f /deep/new/dir/f\nRUN mkdir -p /made/sub && echo run > /made/sub/file && touch /run-file\n"),
        ("f", "copied\n"),
    ]);
    let ctx = ctx.to_str().unwrap();
    let mut ids = Vec::new();
    for (k, mask) in [(&k22, 0o022), (&k77, 0o077)] {
        keel_with_umask(k, mask, &["bootstrap", "busybox", "bb"]);
        ids.push(keel_with_umask(k, mask, &["build", "-t", "u", ctx]));
        let seen = keel_with_umask(k, mask, &[
            "run", "--rm", "-u", "nobody", "u", "sh", "-c",
            "cat /deep/new/dir/f /made/sub/file; stat -c %a /run-file /made/sub /deep/new; touch /tmp/t; stat -c %a /tmp/t; umask",
        ]);
        assert_eq!(
            seen, "copied\nrun\n644\n755\n755\n644\n0022\n",
            "umask {mask:o}, format {format:?}"
        );
    }
    assert_eq!(ids[0], ids[1], "umask 077 changed the image ({format:?})");
    let modes = layer_cache_modes(&k77);
    assert_eq!(layer_cache_modes(&k22), modes, "{format:?}");
    let chunked: Vec<_> = modes.iter().filter(|m| m.contains("/device ")).collect();
    if format == Some("tree") {
        assert!(chunked.is_empty(), "{modes:?}");
    }
    for m in modes
        .iter()
        .filter(|m| m.contains("/device ") || m.contains("/layer.erofs "))
    {
        assert!(m.ends_with(" 100644 0:0"), "{m} ({format:?})");
    }
    // A tree's directory left 0700 (by an older keel's umask, or by hand) is caught: the
    // COPY layer's own tree when it is one (the tree cache), else the RUN layer's.
    k77.ok(&["fsck"]);
    let planted = if chunked.is_empty() { "deep" } else { "made" };
    let dir = fs::read_dir(k77.root().join("storage/layers"))
        .unwrap()
        .map(|e| e.unwrap().path().join("diff").join(planted))
        .find(|p| p.is_dir() && !p.is_symlink())
        .unwrap_or_else(|| panic!("no cached tree holds /{planted}: {modes:?}"));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let out = k77.cmd().arg("fsck").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "fsck missed a 0700 directory ({format:?}): {said}"
    );
    assert!(
        said.contains("a directory's mode or owner changed"),
        "{said}"
    );
}

/// r012: a COPY layer carries every parent directory of what it copies, existing ones
/// with the parent image's mode and owner (as BuildKit's layers do), so no extractor has
/// to invent `/etc` with its own umask.
#[test]
fn r012_copy_layers_carry_their_parent_directories() {
    require!(is_root(), "the base image is bootstrapped as root");
    let k = with_base();
    let ctx = context(
        &k,
        "ctx",
        &[
            ("Dockerfile", "FROM bb\nCOPY f /etc/f\nCOPY f /new/dir/f\n"),
            ("f", "x\n"),
        ],
    );
    build_ok(&k, &ctx, &["-t", "p"]);
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "p"])).unwrap();
    let layers = v[0]["Manifest"]["layers"].as_array().unwrap().clone();
    let listing = |l: &serde_json::Value| {
        let blob = k
            .root()
            .join("images/blobs/sha256")
            .join(l["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        run_ok(Command::new("tar").arg("-tvf").arg(&blob))
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{} {} {}", f[0], f[1], f[5])
            })
            .collect::<Vec<_>>()
    };
    let n = layers.len();
    assert_eq!(
        listing(&layers[n - 2]),
        ["drwxr-xr-x 0/0 etc/", "-rw-r--r-- 0/0 etc/f"]
    );
    assert_eq!(
        listing(&layers[n - 1]),
        [
            "drwxr-xr-x 0/0 new/",
            "drwxr-xr-x 0/0 new/dir/",
            "-rw-r--r-- 0/0 new/dir/f"
        ]
    );
}

/// r012: a RUN step in a base without /etc/resolv.conf can read one (and /etc/hosts, as
/// BuildKit mounts them), and the committed layer holds neither.
#[test]
fn r012_run_steps_resolve_but_never_commit_etc_files() {
    require!(is_root(), "RUN steps need root");
    let k = with_base();
    let ctx = context(&k, "ctx", &[(
        "Dockerfile",
        "FROM bb\nRUN test ! -e /etc/nsswitch.conf && grep -q nameserver /etc/resolv.conf && grep -q localhost /etc/hosts && ping -c1 -W2 localhost >/dev/null && echo ok > /seen\n",
    )]);
    build_ok(&k, &ctx, &["-t", "r"]);
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "r"])).unwrap();
    let layers = v[0]["Manifest"]["layers"].as_array().unwrap();
    let last = layers.last().unwrap()["digest"].as_str().unwrap();
    let blob = k
        .root()
        .join("images/blobs/sha256")
        .join(last.trim_start_matches("sha256:"));
    let names = run_ok(Command::new("tar").arg("-tf").arg(&blob));
    assert_eq!(names, "seen\n", "the RUN layer holds more than its file");
    // And the image itself has none of them (bb never had them).
    let names = run_out(&k, &["r", "sh", "-c", "cat /seen"]);
    assert_eq!(names, "ok\n");
}

/// A COPY written straight into its layer only looks at the tree below it, through a
/// read-only view: no upper or work directory (overlayfs sets up no work directory, and
/// there is nothing to delete — on a disk that discards freed blocks, nothing to wait
/// for), and nothing can be written into it. Killed while the view is mounted, keel
/// leaves what `gc` reclaims, and the next build succeeds.
#[test]
fn a_plain_copy_step_reads_the_tree_below_through_a_read_only_view() {
    require!(is_root(), "overlay snapshots need root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let ctx = context(
        &k,
        "ctx",
        &[
            ("Dockerfile", "FROM bb\nCOPY a.txt /a.txt\n"),
            ("a.txt", "a\n"),
        ],
    );
    let killed = k
        .cmd()
        .args(["build", "--storage-driver", "overlay", "-t", "v"])
        .arg(&ctx)
        .env("KEEL_FAULT_POINT", "storage.snapshot-mounted")
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the fault point was not reached");
    let snaps = k.root().join("storage/snapshots");
    let dir = fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("build-")
        })
        .expect("the COPY step's snapshot");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.contains(&"rootfs".to_string()) && !names.iter().any(|n| n == "upper" || n == "work"),
        "not a bare view: {names:?}"
    );
    assert!(
        dir.join("rootfs/bin/sh").exists(),
        "the view shows the base"
    );
    let err = fs::write(dir.join("rootfs/written"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "not read-only (EROFS): {err}");
    k.ok(&["gc"]);
    assert!(!dir.exists(), "gc left the view");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&k.root().display().to_string()),
        "a mount under the root is left:\n{mounts}"
    );
    k.ok(&["build", "-q", "-t", "v", ctx.to_str().unwrap()]);
    assert_eq!(k.ok(&["run", "--rm", "v", "cat", "/a.txt"]), "a\n");
    // A copy that selects nothing to write (an empty directory's contents) writes
    // nothing into its view either.
    fs::create_dir_all(ctx.join("empty")).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM bb\nCOPY empty/ /e/\n").unwrap();
    k.ok(&["build", "-q", "-t", "e", ctx.to_str().unwrap()]);
}
