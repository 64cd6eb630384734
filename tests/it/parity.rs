//! `keel build` features real Dockerfiles and CI pipelines use beyond the instructions
//! (issue 11): `--output` exporters, remote ADD, named build contexts and the build-wide
//! flags. Image-content parity with BuildKit is the differential suite's (`tests/diff/`).
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::common::{is_root, Keel};
use crate::require;

// The build tests' helpers: a store with the busybox base, and a context whose files
// have explicit modes (umask-proof).
use crate::build::{context, with_base};

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            e.path().strip_prefix(dir).unwrap().display().to_string()
        })
        .collect();
    v.sort();
    v
}

const MULTI_STAGE: &str = "FROM bb AS build\n\
RUN mkdir -p /out/sub && echo bin > /out/app && echo s > /out/sub/s && ln -s app /out/link && chmod 4755 /out/app\n\
FROM bb AS unused\nRUN echo never > /never\n\
FROM scratch\nCOPY --from=build /out/ /\n";

/// `keel build -o out/` leaves exactly the final stage's files, owned by the invoking
/// user: under sudo (SUDO_UID set, running as root) the context directory's owner.
#[test]
fn output_local_holds_the_final_stage_owned_by_the_caller() {
    require!(is_root(), "building needs root");
    let k = with_base();
    let ctx = context(&k, "ctx", &[("Dockerfile", MULTI_STAGE)]);
    std::os::unix::fs::chown(&ctx, Some(1000), Some(1000)).unwrap();
    let out = k.path("out");
    let o = k
        .cmd()
        .env("SUDO_UID", "1000")
        .args(["build", "-q", "-o"])
        .arg(format!("{}/", out.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    crate::common::assert_success(&o, "keel build -o");
    assert_eq!(tree(&out), ["app", "link", "sub", "sub/s"]);
    for p in tree(&out) {
        let m = fs::symlink_metadata(out.join(&p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1000), "{p} is not the caller's");
    }
    assert_eq!(
        fs::metadata(&out).unwrap().uid(),
        1000,
        "out/ was made for the caller"
    );

    // Exporting into a directory that holds other files leaves those files alone.
    let out3 = k.path("out3");
    fs::create_dir_all(&out3).unwrap();
    fs::write(out3.join("mine.txt"), "mine\n").unwrap();
    let o = k
        .cmd()
        .env("SUDO_UID", "1000")
        .args(["build", "-q", "-o"])
        .arg(&out3)
        .arg(&ctx)
        .output()
        .unwrap();
    crate::common::assert_success(&o, "keel build -o into a used directory");
    assert_eq!(fs::metadata(out3.join("mine.txt")).unwrap().uid(), 0);
    assert_eq!(fs::metadata(&out3).unwrap().uid(), 0);
    assert_eq!(fs::metadata(out3.join("app")).unwrap().uid(), 1000);
    assert_eq!(fs::read_to_string(out.join("app")).unwrap(), "bin\n");
    assert_eq!(fs::read_link(out.join("link")).unwrap(), Path::new("app"));
    assert!(k.ok(&["images"]).lines().count() <= 2, "-o tags nothing");

    // Without sudo, root's build leaves root's files.
    let out2 = k.path("out2");
    k.ok(&[
        "build",
        "-q",
        "--output",
        &format!("type=local,dest={}", out2.display()),
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(tree(&out2), ["app", "link", "sub", "sub/s"]);
    assert_eq!(fs::metadata(out2.join("app")).unwrap().uid(), 0);
}

/// `type=tar` writes the final stage's files as one tar; `type=oci` and `type=docker`
/// write the image as an archive other tools read (skopeo checks it).
#[test]
fn output_tar_oci_and_docker() {
    require!(is_root(), "building needs root");
    let k = with_base();
    let ctx = context(&k, "ctx", &[("Dockerfile", MULTI_STAGE)]);
    let c = ctx.to_str().unwrap();
    let tar = k.path("files.tar");
    k.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=tar,dest={}", tar.display()),
        c,
    ]);
    let mut names: Vec<String> = tar::Archive::new(fs::File::open(&tar).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .map(|p| p.trim_end_matches('/').to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["app", "link", "sub", "sub/s"]);

    // `-o -`: the tar on standard output, and nothing else there.
    let o = k
        .cmd()
        .args(["build", "-q", "-o", "-", c])
        .output()
        .unwrap();
    crate::common::assert_success(&o, "keel build -o -");
    let n = tar::Archive::new(&o.stdout[..]).entries().unwrap().count();
    assert_eq!(n, 4);

    for (typ, transport) in [("oci", "oci-archive"), ("docker", "docker-archive")] {
        let f = k.path(&format!("{typ}.tar"));
        k.ok(&[
            "build",
            "-q",
            "-o",
            &format!("type={typ},dest={}", f.display()),
            c,
        ]);
        require!(crate::common::have("skopeo"), "skopeo checks the archive");
        let o = std::process::Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("{transport}:{}", f.display()))
            .output()
            .unwrap();
        crate::common::assert_success(&o, format!("skopeo inspect {typ}"));
        assert!(String::from_utf8_lossy(&o.stdout).contains("diff_ids"));
    }
}

#[test]
fn output_flag_errors_name_the_fix() {
    let k = Keel::new();
    let ctx = context(&k, "ctx", &[("Dockerfile", "FROM scratch\n")]);
    let err = k.fails(&["build", "-o", "type=registry,dest=x", ctx.to_str().unwrap()]);
    assert!(err.contains("use local, tar, oci or docker"), "{err}");
    let err = k.fails(&["build", "-o", "type=tar", ctx.to_str().unwrap()]);
    assert!(err.contains("missing dest="), "{err}");
}

/// A tiny HTTP/1.1 server on 127.0.0.1 for remote ADD: serves fixed files with an ETag,
/// answers `If-None-Match` with 304, and logs every request as `PATH[ if-none-match]`.
struct Server {
    base: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    fn start(files: Vec<(&'static str, Vec<u8>)>) -> Server {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut inm = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("if-none-match") {
                            inm = Some(v.trim().to_string());
                        }
                    }
                }
                let found = files.iter().find(|(p, _)| *p == path);
                let tag = found.map(|(_, b)| format!("\"{}\"", b.len()));
                seen.lock().unwrap().push(match inm.is_some() {
                    true => format!("{path} if-none-match"),
                    false => path.clone(),
                });
                let head = |status: &str, len: usize| {
                    format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\nLast-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\nETag: {}\r\n\r\n", tag.clone().unwrap_or_default())
                };
                let _ = match found {
                    Some(_) if inm.is_some() && inm == tag => {
                        conn.write_all(head("304 Not Modified", 0).as_bytes())
                    }
                    Some((_, body)) => conn
                        .write_all(head("200 OK", body.len()).as_bytes())
                        .and_then(|_| conn.write_all(body)),
                    None => conn.write_all(head("404 Not Found", 0).as_bytes()),
                };
            }
        });
        Server { base, log }
    }
    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

fn build_out(k: &Keel, ctx: &Path, out: &Path) -> std::process::Output {
    k.cmd()
        .args(["build", "-o"])
        .arg(out)
        .arg(ctx)
        .output()
        .unwrap()
}

/// `ADD --checksum` of a URL: verified; a wrong checksum fails naming both digests; a
/// second build with the same checksum is a cache hit without any request.
#[test]
fn remote_add_checksum_is_verified_and_cached_without_a_request() {
    require!(is_root(), "building needs root");
    let body = b"remote tool\n".to_vec();
    let sum = sha256_hex(&body);
    let srv = Server::start(vec![("/files/tool.txt", body.clone())]);
    let k = with_base();
    let df = format!(
        "FROM bb\nADD --checksum=sha256:{sum} {}/files/tool.txt /opt/\nRUN cat /opt/tool.txt > /copy\n",
        srv.base
    );
    let ctx = context(&k, "ctx", &[("Dockerfile", &df)]);
    let out = k.path("out");
    let o = build_out(&k, &ctx, &out);
    crate::common::assert_success(&o, "first build");
    assert_eq!(fs::read(out.join("opt/tool.txt")).unwrap(), body);
    assert_eq!(fs::read(out.join("copy")).unwrap(), body);
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(out.join("opt/tool.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o7777,
        0o600,
        "a downloaded file is 0600, as docker makes it"
    );
    assert_eq!(srv.requests(), ["/files/tool.txt"]);

    let o = build_out(&k, &ctx, &k.path("out2"));
    crate::common::assert_success(&o, "second build");
    let progress = String::from_utf8_lossy(&o.stderr);
    assert_eq!(progress.matches("CACHED").count(), 2, "{progress}");
    assert_eq!(
        srv.requests(),
        ["/files/tool.txt"],
        "no request the second time"
    );

    let wrong = "0".repeat(64);
    let df = format!(
        "FROM bb\nADD --checksum=sha256:{wrong} {}/files/tool.txt /opt/\n",
        srv.base
    );
    let ctx2 = context(&k, "ctx2", &[("Dockerfile", &df)]);
    let err = k.fails(&["build", ctx2.to_str().unwrap()]);
    assert!(
        err.contains(&format!("expected sha256:{wrong}"))
            && err.contains(&format!("got sha256:{sum}")),
        "{err}"
    );
}

/// Without a checksum the download's digest is the key, and a cached URL is revalidated
/// (ETag): a 304 reuses the content and the step's cache.
#[test]
fn remote_add_without_checksum_revalidates() {
    require!(is_root(), "building needs root");
    let srv = Server::start(vec![("/a.tar", b"not really a tar\n".to_vec())]);
    let k = with_base();
    let df = format!("FROM bb\nADD {}/a.tar /dl/\n", srv.base);
    let ctx = context(&k, "ctx", &[("Dockerfile", &df)]);
    let out = k.path("out");
    crate::common::assert_success(&build_out(&k, &ctx, &out), "first build");
    assert_eq!(
        fs::read(out.join("dl/a.tar")).unwrap(),
        b"not really a tar\n"
    );
    let o = build_out(&k, &ctx, &k.path("out2"));
    crate::common::assert_success(&o, "second build");
    assert!(String::from_utf8_lossy(&o.stderr).contains("CACHED"));
    assert_eq!(srv.requests(), ["/a.tar", "/a.tar if-none-match"]);
    let err = k.fails(&[
        "build",
        context(
            &k,
            "c3",
            &[(
                "Dockerfile",
                &format!("FROM bb\nADD {}/missing /x\n", srv.base),
            )],
        )
        .to_str()
        .unwrap(),
    ]);
    assert!(err.contains("answered 404"), "{err}");
}

/// `keel gc` drops remote-ADD downloads nobody used for a week (fresh ones stay), and
/// `keel gc --cache` drops every RUN cache mount too (as `docker builder prune --all`).
#[test]
fn gc_collects_old_remote_downloads_and_cache_mounts() {
    require!(is_root(), "building needs root");
    let srv = Server::start(vec![("/f.txt", b"payload\n".to_vec())]);
    let k = with_base();
    let df = format!(
        "FROM bb\nADD {}/f.txt /f.txt\nRUN --mount=type=cache,target=/c echo hi > /c/x\n",
        srv.base
    );
    let ctx = context(&k, "ctx", &[("Dockerfile", &df)]);
    k.ok(&["build", ctx.to_str().unwrap()]);
    let files = |dir: &str| -> Vec<std::path::PathBuf> {
        walkdir::WalkDir::new(k.root().join(dir))
            .min_depth(1)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect()
    };
    assert_eq!(
        files("cache/remote").len(),
        2,
        "one download and its URL record"
    );
    k.ok(&["gc"]);
    assert_eq!(
        files("cache/remote").len(),
        2,
        "a fresh download was collected"
    );
    for f in files("cache/remote") {
        crate::common::run_ok(
            std::process::Command::new("touch")
                .args(["-m", "-d", "8 days ago"])
                .arg(&f),
        );
    }
    let out = k.ok(&["gc"]);
    assert!(out.contains("removed 2 remote ADD downloads"), "{out}");
    assert!(files("cache/remote").is_empty());
    assert!(
        !files("cache/mounts").is_empty(),
        "the cache mount went without --cache"
    );
    let out = k.ok(&["gc", "--cache"]);
    assert!(out.contains("1 RUN cache mounts"), "{out}");
    assert!(files("cache/mounts").is_empty());
}

/// `ADD <repo>.git#ref` checks the ref out with git: the tree lands at the destination,
/// without `.git` unless `--keep-git-dir`.
#[test]
fn remote_add_git_repository() {
    require!(is_root(), "building needs root");
    require!(
        crate::common::have("git"),
        "git is needed for ADD of a repository"
    );
    let k = with_base();
    let repo = k.path("repo.git");
    let work = k.path("work");
    let git = |dir: &Path, args: &[&str]| {
        crate::common::run_ok(
            std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "-c",
                    "init.defaultBranch=main",
                ])
                .args(args),
        )
    };
    fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "--bare"]);
    fs::create_dir_all(work.join("src")).unwrap();
    fs::write(work.join("src/main.c"), "int main(){}\n").unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    git(&work, &["tag", "v1"]);
    fs::write(work.join("later.txt"), "later\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "two"]);
    git(&work, &["push", "-q", repo.to_str().unwrap(), "main", "v1"]);
    let url = format!("file://{}", repo.display());
    let df = format!("FROM scratch\nADD {url}#v1 /v1/\nADD --keep-git-dir {url}#main /main/\n");
    let ctx = context(&k, "ctx", &[("Dockerfile", &df)]);
    let out = k.path("out");
    crate::common::assert_success(&build_out(&k, &ctx, &out), "git build");
    assert_eq!(
        fs::read_to_string(out.join("v1/src/main.c")).unwrap(),
        "int main(){}\n"
    );
    assert!(!out.join("v1/later.txt").exists() && !out.join("v1/.git").exists());
    assert!(out.join("main/later.txt").exists() && out.join("main/.git").is_dir());
}

fn metadata(k: &Keel, ctx: &Path, extra: &[&str]) -> serde_json::Value {
    let f = k.path("meta.json");
    let mut args = vec!["build", "-q", "--metadata-file", f.to_str().unwrap()];
    args.extend(extra);
    args.push(ctx.to_str().unwrap());
    let id = k.ok(&args);
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&f).unwrap()).unwrap();
    assert_eq!(m["containerimage.config.digest"], id.trim());
    m
}

fn cache_results(m: &serde_json::Value) -> Vec<String> {
    m["keel.steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["stage"].as_str().unwrap(),
                s["cache"].as_str().unwrap()
            )
        })
        .collect()
}

/// `--metadata-file` records the image's digests and every step's cache result;
/// `--no-cache-filter STAGE` reruns only that stage's steps.
#[test]
fn metadata_file_and_no_cache_filter() {
    require!(is_root(), "building needs root");
    let k = with_base();
    let df = "FROM bb AS build\nRUN echo b > /b\nFROM bb\nRUN echo f > /f\nCOPY --from=build /b /b\nENV X=1\n";
    let ctx = context(&k, "ctx", &[("Dockerfile", df)]);
    let m = metadata(&k, &ctx, &["-t", "meta:1"]);
    assert_eq!(m["image.name"], "meta:1");
    assert!(m["containerimage.digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(
        cache_results(&m),
        [
            "build ran",
            "stage-1 ran",
            "stage-1 ran",
            "stage-1 metadata"
        ]
    );
    let m = metadata(&k, &ctx, &[]);
    assert_eq!(
        cache_results(&m),
        [
            "build cached",
            "stage-1 cached",
            "stage-1 cached",
            "stage-1 metadata"
        ]
    );
    let m = metadata(&k, &ctx, &["--no-cache-filter", "build"]);
    assert_eq!(
        cache_results(&m),
        [
            "build ran",
            "stage-1 cached",
            "stage-1 cached",
            "stage-1 metadata"
        ]
    );
    let m = metadata(&k, &ctx, &["--no-cache-filter", "1"]);
    assert_eq!(
        cache_results(&m),
        [
            "build cached",
            "stage-1 ran",
            "stage-1 ran",
            "stage-1 metadata"
        ]
    );
}

/// `--network none` reaches RUN steps that do not choose, `--add-host` lines are in
/// their /etc/hosts (which does not reach the image), `--shm-size` sizes /dev/shm.
#[test]
fn build_wide_network_hosts_and_shm() {
    require!(is_root(), "building needs root");
    let k = with_base();
    let df = "FROM bb\nRUN ls /sys/class/net > /ifaces\nRUN cat /etc/hosts > /hosts\nRUN df -k /dev/shm | tail -1 > /shm\n";
    let ctx = context(&k, "ctx", &[("Dockerfile", df)]);
    let out = k.path("out");
    k.ok(&[
        "build",
        "-q",
        "--network",
        "none",
        "--add-host",
        "db:10.0.0.5",
        "--shm-size",
        "2m",
        "-o",
        out.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(fs::read_to_string(out.join("ifaces")).unwrap(), "lo\n");
    let hosts = fs::read_to_string(out.join("hosts")).unwrap();
    assert!(hosts.contains("10.0.0.5\tdb"), "{hosts}");
    let image_hosts = fs::read_to_string(out.join("etc/hosts")).unwrap();
    assert!(
        !image_hosts.contains("db"),
        "the hosts file is a mount, not image content"
    );
    let shm = fs::read_to_string(out.join("shm")).unwrap();
    assert!(shm.split_whitespace().nth(1) == Some("2048"), "{shm}");
    let err = k.fails(&["build", "--add-host", "nocolon", ctx.to_str().unwrap()]);
    assert!(err.contains("expected NAME:IP"), "{err}");
}

/// A named directory context applies its own `.dockerignore` (BuildKit's dockerui
/// namedcontext.go, case "local"), not the main context's: keel copied every file of it.
#[test]
fn named_directory_context_applies_its_own_dockerignore() {
    require!(is_root(), "building needs root");
    let k = with_base();
    let lib = context(
        &k,
        "lib-ignored",
        &[
            ("keep.txt", "keep\n"),
            ("secret.key", "key\n"),
            ("sub/a.log", "log\n"),
            ("sub/b.txt", "b\n"),
            (".dockerignore", "*.key\nsub/*.log\n"),
        ],
    );
    let df = "FROM scratch\nCOPY --from=lib / /x/\n";
    // The main context's .dockerignore names keep.txt: it must not reach the named one.
    let ctx = context(
        &k,
        "ctx-ignored",
        &[("Dockerfile", df), (".dockerignore", "keep.txt\n")],
    );
    let out = k.path("out-ignored");
    k.ok(&[
        "build",
        "-q",
        "--build-context",
        &format!("lib={}", lib.display()),
        "-o",
        out.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read_to_string(out.join("x/keep.txt")).unwrap(),
        "keep\n"
    );
    assert!(out.join("x/sub/b.txt").is_file());
    assert!(!out.join("x/secret.key").exists(), "*.key was not excluded");
    assert!(
        !out.join("x/sub/a.log").exists(),
        "sub/*.log was not excluded"
    );
}

/// `--build-context`: a directory, a store image (`docker-image://`) and an OCI layout
/// (`oci-layout://`) stand for their names in FROM and COPY --from.
#[test]
fn named_build_contexts() {
    require!(is_root(), "building needs root");
    let k = with_base();
    let lib = context(
        &k,
        "lib",
        &[("inc/lib.h", "int f();\n"), ("README", "lib\n")],
    );
    let saved = k.path("bb.tar");
    k.ok(&["save", "bb", "-o", saved.to_str().unwrap()]);
    let layout = k.path("layout");
    fs::create_dir_all(&layout).unwrap();
    tar::Archive::new(fs::File::open(&saved).unwrap())
        .unpack(&layout)
        .unwrap();
    let df = "FROM base AS b\nRUN echo from-base > /b\n\
FROM layout\nCOPY --from=lib /inc/ /usr/include/\nCOPY --from=b /b /b\nCOPY --from=lib README /\n";
    let ctx = context(&k, "ctx", &[("Dockerfile", df)]);
    let out = k.path("out");
    k.ok(&[
        "build",
        "-q",
        "--build-context",
        &format!("lib={}", lib.display()),
        "--build-context",
        "base=docker-image://bb",
        "--build-context",
        &format!("layout=oci-layout://{}:latest", layout.display()),
        "-o",
        out.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read_to_string(out.join("usr/include/lib.h")).unwrap(),
        "int f();\n"
    );
    assert_eq!(fs::read_to_string(out.join("README")).unwrap(), "lib\n");
    assert_eq!(fs::read_to_string(out.join("b")).unwrap(), "from-base\n");
    assert!(
        out.join("bin/busybox").is_file(),
        "the layout's image is the base"
    );
    let err = k.fails(&[
        "build",
        "--build-context",
        "x=https://h/y",
        ctx.to_str().unwrap(),
    ]);
    assert!(err.contains("docker-image://"), "{err}");
}

/// Two builds running at once, each with a `sharing=locked` cache mount of the same id,
/// take turns: the cache's log shows one step's start and end before the other's start.
#[test]
fn locked_cache_mounts_serialise_concurrent_builds() {
    require!(is_root(), "building needs root");
    let k = with_base();
    let step = |who: &str| {
        format!(
            "FROM bb\nRUN --mount=type=cache,target=/c,id=turns,sharing=locked \
             echo start {who} >> /c/log && sleep 1 && echo end {who} >> /c/log\n"
        )
    };
    let a = context(&k, "a", &[("Dockerfile", &step("a"))]);
    let b = context(&k, "b", &[("Dockerfile", &step("b"))]);
    let spawn = |ctx: &Path| {
        k.cmd()
            .args(["build", "-q"])
            .arg(ctx)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (pa, pb) = (spawn(&a), spawn(&b));
    for p in [pa, pb] {
        let o = p.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let read = context(
        &k,
        "read",
        &[(
            "Dockerfile",
            "FROM bb\nRUN --mount=type=cache,target=/c,id=turns cat /c/log > /log\n",
        )],
    );
    let out = k.path("out");
    k.ok(&[
        "build",
        "-q",
        "--no-cache",
        "-o",
        out.to_str().unwrap(),
        read.to_str().unwrap(),
    ]);
    let log = fs::read_to_string(out.join("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 4, "{log}");
    let who = |l: &str| l.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        lines[0].starts_with("start")
            && lines[1].starts_with("end")
            && who(lines[0]) == who(lines[1]),
        "the second build entered the locked cache while the first held it:\n{log}"
    );
}

/// `-f -` reads the Dockerfile from standard input; the context is still the directory.
#[test]
fn dockerfile_from_stdin() {
    require!(is_root(), "building needs root");
    let k = with_base();
    let ctx = context(&k, "ctx", &[("data.txt", "from the context\n")]);
    let mut child = k
        .cmd()
        .args(["build", "-q", "-f", "-", "-o"])
        .arg(k.path("out"))
        .arg(&ctx)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM scratch\nCOPY data.txt /\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    crate::common::assert_success(&o, "keel build -f -");
    assert_eq!(
        fs::read_to_string(k.path("out/data.txt")).unwrap(),
        "from the context\n"
    );
}

/// `--ulimit` sets RUN steps' resource limits, with each backend that runs them.
#[test]
fn ulimit_reaches_run_steps() {
    require!(is_root(), "building needs root");
    let k = with_base();
    let df = "FROM bb\nRUN echo $(ulimit -Sn) $(ulimit -Hn) > /n\n";
    let ctx = context(&k, "ctx", &[("Dockerfile", df)]);
    let mut backends = vec!["namespaces", "chroot"];
    if Path::new("/usr/sbin/runc").exists() || crate::common::have("runc") {
        backends.push("oci");
    }
    for b in backends {
        let out = k.path(&format!("out-{b}"));
        k.ok(&[
            "build",
            "-q",
            "--isolation",
            b,
            "--ulimit",
            "nofile=123:456",
            "-o",
            out.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ]);
        assert_eq!(
            fs::read_to_string(out.join("n")).unwrap(),
            "123 456\n",
            "{b}"
        );
    }
    let err = k.fails(&["build", "--ulimit", "files=1", ctx.to_str().unwrap()]);
    assert!(err.contains("unknown limit"), "{err}");
}
