//! keel and a real registry (issue 13): pull over TLS with Basic auth and with the Bearer
//! token flow, wrong credentials, login/logout, multi-platform indexes pushed by
//! skopeo, FROM pulling its base, `--pull=never`, and podman running what keel pushed.
use std::process::{Command, Stdio};

use crate::common::{self, Keel};
use crate::regserver::{self, Auth, Registry, PASSWORD, USER};

/// A keel command bound to `reg`: its CA through KEEL_CERTS_D, credentials from `auth`.
fn kc(k: &Keel, reg: &Registry, auth: Option<&std::path::Path>) -> Command {
    let mut c = k.cmd();
    c.env("KEEL_CERTS_D", reg.certs_d())
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_RUNTIME_DIR")
        .env("HOME", k.path("home"));
    match auth {
        Some(f) => c.env("REGISTRY_AUTH_FILE", f),
        None => c.env("REGISTRY_AUTH_FILE", k.path("no-auth.json")),
    };
    c
}

fn ok(mut c: Command, args: &[&str]) -> String {
    let out = c.args(args).stdin(Stdio::null()).output().unwrap();
    common::assert_success(&out, args);
    String::from_utf8(out.stdout).unwrap()
}

fn fails(mut c: Command, args: &[&str]) -> String {
    let out = c.args(args).stdin(Stdio::null()).output().unwrap();
    assert!(
        !out.status.success(),
        "keel {args:?} succeeded but should fail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Blobs in a root's store.
fn blob_count(k: &Keel) -> usize {
    std::fs::read_dir(k.root().join("images/blobs/sha256"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// A root with busybox pushed to `reg` as `bb:1`; returns the pushed manifest digest.
fn seed(reg: &Registry, auth: &std::path::Path) -> (Keel, String) {
    let a = Keel::new();
    a.ok(&["bootstrap", "busybox", "bb"]);
    let dest = format!("{}/test/bb:1", reg.host());
    let digest = ok(kc(&a, reg, Some(auth)), &["push", "bb", &dest]);
    (a, digest.trim().to_string())
}

/// A test registry holding busybox as `test/bb:1`, pushed from the returned keel root
/// (with its manifest digest), and the auth file to use: a password one over TLS, none
/// over plain HTTP. None when the registry's tools are missing (a failure under CI).
fn seeded(tls: bool, auth: Auth) -> Option<(Registry, std::path::PathBuf, Keel, String)> {
    if !regserver::available() {
        return None;
    }
    let reg = Registry::start(tls, auth);
    let auth = match tls {
        true => reg.auth_file(PASSWORD),
        false => "/nonexistent/auth.json".into(),
    };
    let (seeder, digest) = seed(&reg, &auth);
    Some((reg, auth, seeder, digest))
}

fn pull_round_trip(auth: Auth) {
    let Some((reg, good, _a, digest)) = seeded(true, auth) else {
        return;
    };
    let name = format!("{}/test/bb:1", reg.host());
    // Wrong password: a clear error naming the registry, and nothing in the store.
    let c = Keel::new();
    let bad = reg.auth_file("wrong-password");
    let err = fails(kc(&c, &reg, Some(&bad)), &["pull", &name]);
    assert!(
        err.contains(&reg.host()) && err.contains("refused the credentials"),
        "{err}"
    );
    assert_eq!(blob_count(&c), 0, "a refused pull wrote blobs");
    assert!(!c.ok(&["images"]).contains("test/bb"));
    // No CA: TLS is verified, so the pull fails rather than trusting the registry.
    let mut no_ca = c.cmd();
    no_ca
        .env("KEEL_CERTS_D", c.path("none"))
        .env("REGISTRY_AUTH_FILE", &good);
    let err = fails(no_ca, &["pull", &name]);
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("tls"),
        "{err}"
    );
    // Good credentials: pulled, runnable, the same manifest.
    let b = Keel::new();
    let out = kc(&b, &reg, Some(&good))
        .args(["pull", &name])
        .output()
        .unwrap();
    common::assert_success(&out, "pull");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&digest), "{err}");
    assert_eq!(b.ok(&["run", "--rm", &name, "echo", "pulled"]), "pulled\n");
    b.ok(&["fsck"]);
    // Again: every blob is there, nothing is downloaded.
    let out = kc(&b, &reg, Some(&good))
        .args(["pull", &name])
        .output()
        .unwrap();
    common::assert_success(&out, "second pull");
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 blobs (0 bytes) downloaded"));
}

/// Issue 13: pull over TLS (CA from certs.d) with Basic auth (htpasswd).
#[test]
fn pull_over_tls_with_basic_auth() {
    pull_round_trip(Auth::Basic);
}

/// Issue 13: pull with the Bearer token flow (challenge → token server → retry).
#[test]
fn pull_with_the_bearer_token_flow() {
    pull_round_trip(Auth::Token);
}

/// `keel login` checks and stores credentials where docker reads them; `logout` removes.
#[test]
fn login_and_logout() {
    if !regserver::available() {
        return;
    }
    let reg = Registry::start(true, Auth::Basic);
    let k = Keel::new();
    let file = k.path("auth.json");
    let login = |pw: &str| {
        let mut c = kc(&k, &reg, Some(&file));
        c.args(["login", "-u", USER, "--password-stdin", &reg.host()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{pw}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = login("nope");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"));
    assert!(!file.exists(), "a refused login stored credentials");
    let out = login(PASSWORD);
    common::assert_success(&out, "login");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&reg.host()), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o077,
        0
    );
    // A login killed with the new file complete under its temp name leaves that name,
    // tagged with the killed keel, beside the file (it was `.auth.json.keel-<pid>`, there
    // for good: gc never visits the user's directory). The next login sweeps it, keeps a
    // live keel's, and the file it writes is whole.
    let mut killed = kc(&k, &reg, Some(&file));
    killed.args(["login", "-u", USER, "-p", PASSWORD, &reg.host()]);
    let left = crate::temps::killed_writing(killed, "auth.json", &k.path(""));
    assert_eq!(left.parent(), file.parent(), "{}", left.display());
    let live = crate::temps::LiveWriter::start();
    let planted = live.plant_beside(&left);
    common::assert_success(&login(PASSWORD), "login after a killed login");
    assert!(
        !left.exists(),
        "the killed login's {} stayed",
        left.display()
    );
    assert!(planted.exists(), "a live keel's temp name was taken");
    drop(live);
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains(&reg.host()));
    k.ok(&["bootstrap", "busybox", "bb"]);
    ok(
        kc(&k, &reg, Some(&file)),
        &["push", "bb", &format!("{}/x/bb:1", reg.host())],
    );
    ok(kc(&k, &reg, Some(&file)), &["logout", &reg.host()]);
    assert!(!std::fs::read_to_string(&file)
        .unwrap()
        .contains(&reg.host()));
    let err = fails(
        kc(&k, &reg, Some(&file)),
        &["push", "bb", &format!("{}/x/bb:2", reg.host())],
    );
    assert!(err.contains("keel login"), "{err}");
}

/// Issue 13: FROM a registry image pulls it (default --pull=missing); --pull=never fails
/// clearly; podman pulls what keel pushed and runs it.
#[test]
fn build_pulls_its_base_and_podman_runs_what_keel_pushed() {
    let Some((reg, good, _a, _)) = seeded(true, Auth::Basic) else {
        return;
    };
    let b = Keel::new();
    let ctx = b.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}/test/bb:1\nRUN echo built > /built.txt\nCMD [\"cat\", \"/built.txt\"]\n",
            reg.host()
        ),
    )
    .unwrap();
    let ctx_s = ctx.display().to_string();
    let err = fails(
        kc(&b, &reg, Some(&good)),
        &["build", "--pull=never", "-t", "app", &ctx_s],
    );
    assert!(
        err.contains("--pull=never") && err.contains("test/bb:1"),
        "{err}"
    );
    assert_eq!(blob_count(&b), 0);
    let err = fails(
        kc(&b, &reg, Some(&good)),
        &[
            "run",
            "--pull=never",
            "--rm",
            &format!("{}/test/bb:1", reg.host()),
            "true",
        ],
    );
    assert!(err.contains("no such image"), "{err}");
    ok(kc(&b, &reg, Some(&good)), &["build", "-t", "app", &ctx_s]);
    assert_eq!(b.ok(&["run", "--rm", "app"]), "built\n");
    let dest = format!("{}/test/app:1", reg.host());
    ok(kc(&b, &reg, Some(&good)), &["push", "app", &dest]);
    if !common::have("podman") {
        crate::require!(false, "podman is not installed (apt-get install podman)");
    }
    let pd = b.path("podman");
    let podman_cmd = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(pd.join("root"))
            .arg("--runroot")
            .arg(pd.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .env("REGISTRY_AUTH_FILE", &good)
            .args(args);
        c
    };
    let certs = reg.certs_d().join(reg.host()).display().to_string();
    common::run_ok(&mut podman_cmd(&["pull", "--cert-dir", &certs, &dest]));
    let out = podman_cmd(&["run", "--rm", "--net", "none", &dest])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("error setting rlimit") {
        // Some sandboxes refuse runc's prlimit() on the container process (podman sets
        // RLIMIT_NOFILE for every container): check the image podman pulled by its files.
        eprintln!(
            "podman cannot start containers here ({}); checking its copy of the image instead",
            err.trim()
        );
        let id = common::run_ok(&mut podman_cmd(&["create", &dest]))
            .trim()
            .to_string();
        let tar = b.path("podman-export.tar");
        common::run_ok(&mut podman_cmd(&[
            "export",
            "-o",
            &tar.display().to_string(),
            &id,
        ]));
        let built = common::run_ok(
            Command::new("tar")
                .arg("-xOf")
                .arg(&tar)
                .arg("--wildcards")
                .arg("*built.txt"),
        );
        assert_eq!(built, "built\n");
    } else {
        common::assert_success(&out, "podman run");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "built\n");
    }
}

/// Issue 13: a multi-platform index (a buildah manifest list copied with `skopeo copy
/// --all`) pulls the host's platform; `--platform` picks another; an absent one is an
/// error listing what the index has.
#[test]
fn multi_platform_index_pushed_by_skopeo() {
    if !regserver::available() {
        return;
    }
    if !(common::have("buildah") && common::have("skopeo")) {
        crate::require!(
            false,
            "buildah and skopeo are needed (apt-get install buildah skopeo)"
        );
    }
    let reg = Registry::start(true, Auth::Basic);
    let good = reg.auth_file(PASSWORD);
    let k = Keel::new();
    let bd = k.path("buildah");
    let buildah = |args: &[&str]| {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(bd.join("root"))
            .arg("--runroot")
            .arg(bd.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        common::run_ok(&mut c).trim().to_string()
    };
    let host_arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let other = if host_arch == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    buildah(&["manifest", "create", "multi"]);
    for arch in [host_arch, other] {
        let ctr = buildah(&["from", "scratch"]);
        let f = k.path(&format!("{arch}.txt"));
        std::fs::write(&f, arch).unwrap();
        buildah(&["copy", &ctr, &f.display().to_string(), "/arch.txt"]);
        buildah(&["config", "--arch", arch, "--os", "linux", &ctr]);
        let img = format!("img-{arch}");
        buildah(&["commit", &ctr, &img]);
        buildah(&["manifest", "add", "multi", &img]);
    }
    let layout = k.path("layout");
    buildah(&[
        "manifest",
        "push",
        "--all",
        "multi",
        &format!("oci:{}", layout.display()),
    ]);
    let certs = reg.certs_d().join(reg.host()).display().to_string();
    let name = format!("{}/test/multi:1", reg.host());
    skopeo_alone(&[
        "copy",
        "--all",
        "--dest-cert-dir",
        &certs,
        "--dest-creds",
        &format!("{USER}:{PASSWORD}"),
        &format!("oci:{}", layout.display()),
        &format!("docker://{name}"),
    ]);
    let arch_of = |k: &Keel| {
        let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", &name])).unwrap();
        v.to_string()
    };
    let h = Keel::new();
    ok(kc(&h, &reg, Some(&good)), &["pull", &name]);
    let info = arch_of(&h);
    assert!(
        info.contains(&format!("\"architecture\":\"{host_arch}\"")),
        "{info}"
    );
    let o = Keel::new();
    ok(
        kc(&o, &reg, Some(&good)),
        &["pull", "--platform", &format!("linux/{other}"), &name],
    );
    let info = arch_of(&o);
    assert!(
        info.contains(&format!("\"architecture\":\"{other}\"")),
        "{info}"
    );
    // --all-platforms: both images (config, layer, manifest each) and the index stored;
    // the name points at the index (session 5), the pull prints it and each platform's
    // manifest, and `keel images` / `inspect` show it.
    let all = Keel::new();
    let out = ok(
        kc(&all, &reg, Some(&good)),
        &["pull", "--all-platforms", &name],
    );
    assert_eq!(blob_count(&all), 7);
    assert!(arch_of(&all).contains(&format!("\"architecture\":\"{host_arch}\"")));
    let raw = skopeo(&reg, &["inspect", "--raw", &format!("docker://{name}")]);
    let index = {
        use sha2::Digest as _;
        format!("sha256:{:x}", sha2::Sha256::digest(raw.as_bytes()))
    };
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], format!("index {index}"), "{out}");
    for arch in [host_arch, other] {
        assert!(
            lines[1..]
                .iter()
                .any(|l| l.starts_with(&format!("linux/{arch} sha256:"))),
            "{out}"
        );
    }
    let rows: serde_json::Value =
        serde_json::from_str(&all.ok(&["images", "--format", "json"])).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().all(|r| r["index"] == index.as_str()),
        "{rows:?}"
    );
    let v: serde_json::Value = serde_json::from_str(&all.ok(&["inspect", &name])).unwrap();
    assert_eq!(v[0]["IndexDigest"], index.as_str(), "{v}");
    let digest_of = |arch: &str| {
        let l = lines
            .iter()
            .find(|l| l.starts_with(&format!("linux/{arch} ")))
            .unwrap();
        l.split(' ').nth(1).unwrap().to_string()
    };
    assert_eq!(v[0]["Digest"], digest_of(host_arch).as_str(), "{v}");
    all.ok(&["gc"]);
    assert_eq!(blob_count(&all), 7, "gc took a blob the index names");
    all.ok(&["fsck"]);
    let err = fails(
        kc(&o, &reg, Some(&good)),
        &["pull", "--platform", "linux/s390x", &name],
    );
    assert!(
        err.contains(&format!("linux/{host_arch}")) && err.contains(&format!("linux/{other}")),
        "{err}"
    );
}

/// Issue 13: push compresses layers with gzip (smaller than the stored tar), skips what
/// the registry has, mounts a shared blob from another repository instead of uploading
/// it again, and does not recompress a layer it compressed before; skopeo reads it.
#[test]
fn push_compresses_skips_and_mounts() {
    if !regserver::available() {
        return;
    }
    let reg = Registry::start(true, Auth::Token);
    let good = reg.auth_file(PASSWORD);
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let stored: u64 = {
        let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "bb"])).unwrap();
        let m = &v[0]["Manifest"]["layers"];
        m.as_array()
            .map(|a| a.iter().map(|l| l["size"].as_u64().unwrap()).sum())
            .unwrap_or(0)
    };
    let push = |dest: &str| {
        let out = kc(&k, &reg, Some(&good))
            .args(["push", "bb", dest])
            .output()
            .unwrap();
        common::assert_success(&out, dest);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = push(&format!("{}/one/bb:1", reg.host()));
    assert!(
        first.contains("2 blobs uploaded") && first.contains("1 layers compressed"),
        "{first}"
    );
    let again = push(&format!("{}/one/bb:1", reg.host()));
    assert!(
        again.contains("0 blobs uploaded")
            && again.contains("2 already there")
            && again.contains("0 layers compressed"),
        "{again}"
    );
    let other = push(&format!("{}/two/bb:1", reg.host()));
    assert!(
        other.contains("1 mounted") && other.contains("0 layers compressed"),
        "{other}"
    );
    // The registry holds a gzip layer smaller than the stored tar; skopeo reads it.
    let certs = reg.certs_d().join(reg.host()).display().to_string();
    let raw = skopeo_alone(&[
        "inspect",
        "--raw",
        "--cert-dir",
        &certs,
        "--creds",
        &format!("{USER}:{PASSWORD}"),
        &format!("docker://{}/two/bb:1", reg.host()),
    ]);
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let layer = &m["layers"][0];
    assert_eq!(
        layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
        "{raw}"
    );
    assert!(
        layer["size"].as_u64().unwrap() < stored / 2,
        "{raw} vs {stored}"
    );
    // And keel pulls it back into a fresh root, checking diff_ids against the gzip layer.
    let b = Keel::new();
    ok(
        kc(&b, &reg, Some(&good)),
        &["pull", &format!("{}/two/bb:1", reg.host())],
    );
    assert_eq!(
        b.ok(&[
            "run",
            "--rm",
            &format!("{}/two/bb:1", reg.host()),
            "echo",
            "ok"
        ]),
        "ok\n"
    );
}

/// Issue 13: two roots as two CI agents sharing a cache through the registry. A builds
/// with `--cache-to`; B, a fresh root, builds with `--cache-from`: every step is CACHED,
/// the image is the same (same id, same manifest), and B downloads only the layers its
/// image needs that it lacks (here: the steps' layers, not the base it already has).
/// The cache's layers are gzip-compressed in the registry, and B stores them as the
/// uncompressed layers the entries name.
#[test]
fn build_cache_shared_through_the_registry() {
    let Some((reg, good, _s, _)) = seeded(true, Auth::Basic) else {
        return;
    };
    let base = format!("{}/test/bb:1", reg.host());
    let cache = format!("registry:{}/test/cache:main,mode=max", reg.host());
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("f.txt"), "from the context\n").unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {base}\nRUN dd if=/dev/urandom of=/big bs=1024 count=256 2>/dev/null\nRUN echo two > /two\nCOPY f.txt /f.txt\n"),
    )
    .unwrap();
    let ctx_s = ctx.path().display().to_string();
    let build = |k: &Keel, extra: &[&str]| {
        let mut args = vec!["build", "-t", "app"];
        args.extend_from_slice(extra);
        args.push(&ctx_s);
        let out = kc(k, &reg, Some(&good)).args(&args).output().unwrap();
        common::assert_success(&out, &args);
        (
            String::from_utf8(out.stdout).unwrap().trim().to_string(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let a = Keel::new();
    let (id_a, log_a) = build(&a, &["--cache-to", &cache]);
    assert!(!log_a.contains("CACHED"), "{log_a}");
    assert!(log_a.contains("cache-to"), "{log_a}");
    let manifest = |k: &Keel| {
        let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "app"])).unwrap();
        let sizes: u64 = v[0]["Manifest"]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum();
        (v[0]["Digest"].as_str().unwrap().to_string(), sizes)
    };
    let (digest_a, full) = manifest(&a);
    // Cache layers travel compressed, like image layers (format 2).
    let cache_ref = format!("{}/test/cache:main", reg.host());
    let types = layer_types(&reg, &cache_ref);
    assert!(
        !types.is_empty() && types.iter().all(|t| t.ends_with("+gzip")),
        "{types:?}"
    );
    let b = Keel::new();
    ok(kc(&b, &reg, Some(&good)), &["pull", &base]);
    let from = format!("registry:{}/test/cache:main", reg.host());
    let (id_b, log_b) = build(&b, &["--cache-from", &from]);
    assert_eq!(log_b.matches("CACHED").count(), 3, "{log_b}");
    assert_eq!(id_a, id_b, "{log_b}");
    assert_eq!(manifest(&b).0, digest_a);
    let line = log_b
        .lines()
        .find(|l| l.starts_with("cache-from:") && l.contains("downloaded"))
        .unwrap_or_else(|| panic!("{log_b}"));
    let bytes: u64 = line
        .split('(')
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        bytes > 256 * 1024 && bytes < full,
        "downloaded {bytes} of a {full}-byte image: {log_b}"
    );
    assert_eq!(
        b.ok(&["run", "--rm", "app", "cat", "/two", "/f.txt"]),
        "two\nfrom the context\n"
    );
    b.ok(&["fsck"]);
}

/// Issue 13: registries.toml — a short name goes through the search list, a registry's
/// mirror serves its pulls; and a digest-pinned FROM the store has never touches the
/// network (the registry is gone when it builds).
#[test]
fn search_list_mirrors_and_digest_pins() {
    let Some((reg, good, _s, digest)) = seeded(true, Auth::Basic) else {
        return;
    };
    let k = Keel::new();
    k.ok(&["images"]);
    std::fs::write(
        k.root().join("registries.toml"),
        format!(
            "unqualified-search-registries = [\"{}\"]\n[[registry]]\nlocation = \"mirrored.invalid:5000\"\nmirrors = [\"{}\"]\n",
            reg.host(),
            reg.host()
        ),
    )
    .unwrap();
    ok(kc(&k, &reg, Some(&good)), &["pull", "test/bb:1"]);
    assert_eq!(
        k.ok(&["run", "--rm", "test/bb:1", "echo", "short"]),
        "short\n"
    );
    ok(
        kc(&k, &reg, Some(&good)),
        &["pull", "mirrored.invalid:5000/test/bb:1"],
    );
    let pinned = format!("{}/test/bb@{digest}", reg.host());
    ok(kc(&k, &reg, Some(&good)), &["pull", &pinned]);
    drop(reg);
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {pinned}\nRUN echo pinned > /p\n"),
    )
    .unwrap();
    k.ok(&[
        "build",
        "--pull=always",
        "-t",
        "pinned",
        &ctx.display().to_string(),
    ]);
    assert_eq!(k.ok(&["run", "--rm", "pinned", "cat", "/p"]), "pinned\n");
}

/// Issue 13: a pull killed after some blobs are stored resumes: the next pull downloads
/// only what is missing, and the store stays consistent throughout.
#[test]
fn a_killed_pull_resumes_from_the_blobs_it_stored() {
    let Some((reg, none, _s, _)) = seeded(false, Auth::None) else {
        return;
    };
    let name = format!("{}/test/bb:1", reg.host());
    let k = Keel::new();
    // Killed right after the second blob (the layer; the config is the first) is stored.
    let out = kc(&k, &reg, Some(&none))
        .args(["pull", &name])
        .env("KEEL_FAULT_POINT", "pull.blob-stored#2")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the pull was not killed");
    k.ok(&["fsck"]);
    assert!(!k.ok(&["images"]).contains("test/bb"));
    let out = kc(&k, &reg, Some(&none))
        .args(["pull", &name])
        .output()
        .unwrap();
    common::assert_success(&out, "resumed pull");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0 blobs (0 bytes) downloaded, 2 already present"),
        "{err}"
    );
    assert_eq!(
        k.ok(&["run", "--rm", &name, "echo", "resumed"]),
        "resumed\n"
    );
    k.ok(&["fsck"]);
}

/// Issue 13 (pull speed, session 5): a pull checks a layer's compressed digest only
/// (as skopeo does); its diff_id is checked where the uncompressed stream is read anyway.
/// So an image whose config lies about a layer's diff_id is stored by `keel pull`, and
/// every command that would trust the lie refuses it, naming the layer and the diff_id:
/// run and build (the unpack checks it, and keeps no tree of it: a second run fails the
/// same way), push (before anything is sent), `keel save` (before it writes a byte; it
/// wrote the lie into the archive until session 6), `keel load` of an archive carrying
/// it, and `keel fsck --full`.
#[test]
fn a_layer_whose_diff_id_lies_is_never_stored() {
    let Some((reg, none, _s, _)) = seeded(false, Auth::None) else {
        return;
    };
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let mut m: serde_json::Value =
        serde_json::from_slice(&reg.get("test/bb/manifests/1", oci)).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let config = m["config"]["digest"].as_str().unwrap().to_string();
    let mut c: serde_json::Value =
        serde_json::from_slice(&reg.get(&format!("test/bb/blobs/{config}"), "*/*")).unwrap();
    let lie = format!("sha256:{}", "ab".repeat(32));
    c["rootfs"]["diff_ids"][0] = lie.clone().into();
    let bad_config = reg.put_blob("test/bb", &serde_json::to_vec(&c).unwrap());
    m["config"]["digest"] = bad_config.clone().into();
    m["config"]["size"] = serde_json::to_vec(&c).unwrap().len().into();
    reg.put_manifest("test/bb", "lies", oci, &serde_json::to_vec(&m).unwrap());
    let k = Keel::new();
    let name = format!("{}/test/bb:lies", reg.host());
    ok(kc(&k, &reg, Some(&none)), &["pull", &name]);
    let hex = &layer["sha256:".len()..];
    let names_both = |what: &str, err: &str| {
        assert!(
            err.contains(&lie) && err.contains(hex),
            "{what} did not name the layer and its diff_id: {err}"
        );
    };
    for _ in 0..2 {
        names_both("run", &k.fails(&["run", "--rm", &name, "true"]));
    }
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {name}\nRUN true\n")).unwrap();
    let build = [
        "build",
        "--pull=never",
        "-t",
        "on-lies",
        ctx.to_str().unwrap(),
    ];
    names_both("build", &k.fails(&build));
    let relay = format!("{}/test/relay:1", reg.host());
    names_both(
        "push",
        &fails(kc(&k, &reg, Some(&none)), &["push", &name, &relay]),
    );
    // `keel save` refuses it before writing a byte: no file, no temp file, empty stdout.
    let out_dir = k.path("saved");
    std::fs::create_dir_all(&out_dir).unwrap();
    let tar = out_dir.join("lies.tar");
    for _ in 0..2 {
        names_both(
            "save -o",
            &k.fails(&["save", "-o", tar.to_str().unwrap(), &name]),
        );
        let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
        assert!(left.is_empty(), "a refused save left {left:?}");
    }
    let to_stdout = k.cmd().args(["save", &name]).output().unwrap();
    assert!(!to_stdout.status.success(), "save to stdout passed the lie");
    assert!(
        to_stdout.stdout.is_empty(),
        "a refused save wrote {} bytes",
        to_stdout.stdout.len()
    );
    names_both("save", &String::from_utf8_lossy(&to_stdout.stderr));
    // An archive carrying the lie (written here from the registry's blobs, as another
    // tool would): `keel load` checks every diff_id.
    let tar = k.path("lies.tar");
    let blobs = [&layer, &bad_config].map(|d| reg.get(&format!("test/bb/blobs/{d}"), "*/*"));
    oci_archive(
        &tar,
        &serde_json::to_vec(&m).unwrap(),
        &[&blobs[0], &blobs[1]],
    );
    let other = Keel::new();
    names_both("load", &other.fails(&["load", "-i", tar.to_str().unwrap()]));
    let fsck = k.cmd().args(["fsck", "--full"]).output().unwrap();
    assert!(!fsck.status.success(), "fsck --full passed the lie");
    names_both("fsck --full", &String::from_utf8_lossy(&fsck.stdout));
    // The honest image, pulled into the same root, still runs.
    let honest = format!("{}/test/bb:1", reg.host());
    ok(kc(&k, &reg, Some(&none)), &["pull", &honest]);
    assert_eq!(k.ok(&["run", "--rm", &honest, "echo", "ok"]), "ok\n");
    // It saves, and the check of its compressed layer is remembered (as push's is), so
    // the next save or push does not decompress it again.
    let honest_tar = k.path("honest.tar");
    k.ok(&["save", "-o", honest_tar.to_str().unwrap(), &honest]);
    let memo = k.root().join("cache/registry/verified").join(hex);
    assert!(
        memo.is_file(),
        "save did not remember the checked layer at {}",
        memo.display()
    );
    names_both("save after the honest one", &k.fails(&["save", &name]));
}

/// Writes an OCI-layout tarball holding `manifest` and `blobs`, with `manifest` in its
/// index (named `lies:1`).
fn oci_archive(path: &std::path::Path, manifest: &[u8], blobs: &[&[u8]]) {
    use sha2::Digest as _;
    let hex = |b: &[u8]| format!("{:x}", sha2::Sha256::digest(b));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", hex(manifest)),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "lies:1"},
        }],
    });
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, bytes).unwrap();
    };
    add("oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}");
    add("index.json", &serde_json::to_vec(&index).unwrap());
    for b in blobs.iter().copied().chain([manifest]) {
        add(&format!("blobs/sha256/{}", hex(b)), b);
    }
    tar.into_inner().unwrap();
}

/// skopeo with the test registry's CA and user (and a blob-info cache of its own).
fn skopeo(reg: &Registry, args: &[&str]) -> String {
    let certs = reg.certs_d().join(reg.host()).display().to_string();
    let creds = format!("{USER}:{PASSWORD}");
    let mut full = vec![args[0]];
    if args[0] == "copy" {
        full.extend(["--src-cert-dir", &certs, "--src-creds", &creds]);
        full.extend(["--dest-cert-dir", &certs, "--dest-creds", &creds]);
    } else {
        full.extend(["--cert-dir", &certs, "--creds", &creds]);
    }
    full.extend(&args[1..]);
    skopeo_alone(&full)
}

/// Mounts an empty tmpfs over root's blob-info cache directory, then runs `$0 "$@"`.
const PRIVATE_BIC: &str = "mkdir -p /var/lib/containers/cache \
    && mount -t tmpfs -o mode=0700 keel-test-bic /var/lib/containers/cache && exec \"$0\" \"$@\"";

/// Runs skopeo with `args` and an empty blob-info cache of its own; returns its stdout.
///
/// Why: containers/image remembers, machine-wide and across runs, which blob digests it
/// saw in which repository of which registry host:port (as root in
/// /var/lib/containers/cache/blob-info-cache-v1.boltdb; `SystemContext.BlobInfoCacheDir`
/// has no skopeo flag, env var or config knob in 5.23), and which compressed digests share
/// an uncompressed one. Every test registry serves the same reproducible busybox layer on
/// a random loopback port, so once a port comes round again the cache "knows" the gzip
/// layer is in `test/bb` there, and `copy --dest-compress-format zstd` mounts that gzip
/// blob instead of compressing (skopeo 1.9.3 has no `--dest-force-compress-format`): the
/// zstd test failed whenever its port had been used by an earlier run. Root gets a mount
/// namespace of its own with a tmpfs over the cache directory (gone when skopeo exits);
/// anyone else gets the cache under a private XDG_DATA_HOME, where c/image puts theirs.
fn skopeo_alone(args: &[&str]) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut c = match common::is_root() {
        true => {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private"]);
            c.args(["sh", "-c", PRIVATE_BIC, "skopeo"]);
            c
        }
        false => {
            let mut c = Command::new("skopeo");
            c.env("XDG_DATA_HOME", data.path());
            c
        }
    };
    common::run_ok(c.args(args))
}

/// The layer media types of a manifest in the registry (read by skopeo).
fn layer_types(reg: &Registry, name: &str) -> Vec<String> {
    let raw = skopeo(reg, &["inspect", "--raw", &format!("docker://{name}")]);
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

/// Issue 13 (zstd), against a second implementation both ways: an image skopeo
/// recompressed to zstd is pulled and run by keel; an image keel pushes with
/// `--compression-format zstd` is copied by skopeo, whose zstd layers decompress to the
/// config's diff_ids, and pulled by podman (which checks diff_ids itself). A second push
/// reuses the remembered zstd digest: nothing is compressed again.
#[test]
fn zstd_layers_with_skopeo_and_podman() {
    if !regserver::available() {
        return;
    }
    crate::require!(common::have("skopeo"), "skopeo is not installed");
    let reg = Registry::start(true, Auth::Basic);
    let good = reg.auth_file(PASSWORD);
    let (a, _) = seed(&reg, &good);
    let (gz, zs) = (
        format!("{}/test/bb:1", reg.host()),
        format!("{}/test/bbz:1", reg.host()),
    );
    // What an earlier run on this port leaves in the machine's shared blob-info cache:
    // plain skopeo reading the gzip image records where its layer is. The zstd copy below
    // (skopeo_alone) must not see it; with the shared cache it mounted the gzip layer.
    let seen = a.path("seen-by-shared-cache");
    let certs = reg.certs_d().join(reg.host()).display().to_string();
    common::run_ok(Command::new("skopeo").args([
        "copy",
        "--src-cert-dir",
        &certs,
        "--src-creds",
        &format!("{USER}:{PASSWORD}"),
        &format!("docker://{gz}"),
        &format!("dir:{}", seen.display()),
    ]));
    skopeo(
        &reg,
        &[
            "copy",
            "--dest-compress-format",
            "zstd",
            &format!("docker://{gz}"),
            &format!("docker://{zs}"),
        ],
    );
    let zstd_type = "application/vnd.oci.image.layer.v1.tar+zstd";
    assert_eq!(layer_types(&reg, &zs), [zstd_type]);
    let b = Keel::new();
    ok(kc(&b, &reg, Some(&good)), &["pull", &zs]);
    assert_eq!(b.ok(&["run", "--rm", &zs, "echo", "zstd"]), "zstd\n");
    b.ok(&["fsck"]);
    // keel pushes zstd; the second push (another repository) compresses nothing.
    let kz = format!("{}/test/kz:1", reg.host());
    let push = |dest: &str| {
        let args = ["push", "--compression-format", "zstd", "bb", dest];
        let out = kc(&a, &reg, Some(&good)).args(args).output().unwrap();
        common::assert_success(&out, args);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = push(&kz);
    assert!(first.contains("1 layers compressed"), "{first}");
    assert_eq!(layer_types(&reg, &kz), [zstd_type]);
    let again = push(&format!("{}/test/kz2:1", reg.host()));
    assert!(
        again.contains("0 layers compressed") && again.contains("1 mounted"),
        "{again}"
    );
    let dir = a.path("skopeo-dir");
    skopeo(
        &reg,
        &[
            "copy",
            &format!("docker://{kz}"),
            &format!("dir:{}", dir.display()),
        ],
    );
    check_diff_ids(&dir);
    podman_pulls(&a, &reg, &good, &kz);
}

/// A `dir:` copy's layers decompress (zstd) to its config's diff_ids.
fn check_diff_ids(dir: &std::path::Path) {
    use sha2::Digest as _;
    let blob = |d: &str| std::fs::read(dir.join(d.trim_start_matches("sha256:"))).unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&blob(m["config"]["digest"].as_str().unwrap())).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        config["rootfs"]["diff_ids"].as_array().unwrap().len()
    );
    for (l, want) in layers
        .iter()
        .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
    {
        let plain = zstd::decode_all(&blob(l["digest"].as_str().unwrap())[..]).unwrap();
        let got = format!("sha256:{:x}", sha2::Sha256::digest(&plain));
        assert_eq!(got, want.as_str().unwrap());
    }
}

/// podman pulls `name` (verifying diff_ids) and its copy holds busybox.
fn podman_pulls(k: &Keel, reg: &Registry, auth: &std::path::Path, name: &str) {
    crate::require!(common::have("podman"), "podman is not installed");
    let pd = k.path("podman");
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root").arg(pd.join("root"));
        c.arg("--runroot").arg(pd.join("run"));
        c.args(["--storage-driver", "vfs", "--events-backend", "file"]);
        c.env("REGISTRY_AUTH_FILE", auth).args(args);
        common::run_ok(&mut c)
    };
    let certs = reg.certs_d().join(reg.host()).display().to_string();
    podman(&["pull", "-q", "--cert-dir", &certs, name]);
    let id = podman(&["create", name, "true"]).trim().to_string();
    let tar = k.path("podman-export.tar");
    podman(&["export", "-o", &tar.display().to_string(), &id]);
    let listing = common::run_ok(Command::new("tar").arg("-tf").arg(&tar));
    assert!(
        listing.lines().any(|l| l.ends_with("bin/busybox")),
        "{listing}"
    );
    podman(&["rm", &id]);
}

/// The bytes a build's `cache-from: N layers (B bytes) downloaded` line reports.
fn cache_bytes(log: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.starts_with("cache-from:") && l.contains("downloaded"))
        .unwrap_or_else(|| panic!("no cache-from line: {log}"));
    line.split('(')
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Issue 13 (lazy multi-stage cache): a builder stage writes a 2 MiB file, the final
/// stage copies a small one from it. Root B, fresh, with `--cache-from` (mode=max, so the
/// builder's layer is in the cache too) runs every step CACHED, makes A's image, and
/// never downloads the builder's layer: `COPY --from` is looked up by the builder's key
/// before the builder would be materialised.
#[test]
fn multi_stage_cache_hits_fetch_no_builder_layers() {
    let Some((reg, good, _s, _)) = seeded(true, Auth::Basic) else {
        return;
    };
    let base = format!("{}/test/bb:1", reg.host());
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {base} AS builder\nRUN dd if=/dev/urandom of=/big bs=1024 count=2048 2>/dev/null && echo small > /small\nFROM {base}\nCOPY --from=builder /small /small\n"
        ),
    )
    .unwrap();
    let ctx_s = ctx.path().display().to_string();
    let build = |k: &Keel, cache: &[&str]| {
        let mut args = vec!["build", "-t", "app"];
        args.extend_from_slice(cache);
        args.push(&ctx_s);
        let out = kc(k, &reg, Some(&good)).args(&args).output().unwrap();
        common::assert_success(&out, &args);
        let log = String::from_utf8(out.stderr).unwrap();
        let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "app"])).unwrap();
        let digest = v[0]["Digest"].as_str().unwrap().to_string();
        (digest, log)
    };
    let cache = format!("registry:{}/test/ms:1", reg.host());
    let a = Keel::new();
    let (digest_a, _) = build(&a, &["--cache-to", &format!("{cache},mode=max")]);
    let b = Keel::new();
    ok(kc(&b, &reg, Some(&good)), &["pull", &base]);
    let (digest_b, log) = build(&b, &["--cache-from", &cache]);
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");
    assert_eq!(digest_a, digest_b, "{log}");
    let bytes = cache_bytes(&log);
    assert!(bytes < 512 * 1024, "downloaded {bytes} bytes: {log}");
    assert_eq!(b.ok(&["run", "--rm", "app", "cat", "/small"]), "small\n");
    b.ok(&["fsck"]);
}

/// Issue 13 (`--cache-to ...,mounts=true`): root A's RUN writes into a cache mount and
/// exports it; root B, fresh, builds a changed step that reads the mount and sees A's
/// file (the mount was seeded from the cache before the step ran). A mount larger than
/// `mounts-max` is skipped with a warning naming it.
#[test]
fn cache_mounts_travel_through_the_registry_cache() {
    let Some((reg, good, _s, _)) = seeded(true, Auth::Basic) else {
        return;
    };
    let base = format!("{}/test/bb:1", reg.host());
    let dockerfile = |run: &str| {
        let ctx = tempfile::tempdir().unwrap();
        let text = format!("FROM {base}\nRUN --mount=type=cache,target=/cache {run}\n");
        std::fs::write(ctx.path().join("Dockerfile"), text).unwrap();
        ctx
    };
    let build = |k: &Keel, ctx: &std::path::Path, cache: &[&str]| {
        let mut args = vec!["build", "-t", "app"];
        args.extend_from_slice(cache);
        let ctx_s = ctx.display().to_string();
        args.push(&ctx_s);
        let out = kc(k, &reg, Some(&good)).args(&args).output().unwrap();
        common::assert_success(&out, &args);
        String::from_utf8(out.stderr).unwrap()
    };
    let cache = format!("registry:{}/test/mounts:1", reg.host());
    let a = Keel::new();
    let writer = dockerfile("mkdir -p /cache/m2 && echo warm > /cache/m2/seed && echo a > /a");
    let log = build(
        &a,
        writer.path(),
        &["--cache-to", &format!("{cache},mounts=true")],
    );
    assert!(log.contains("1 cache mounts"), "{log}");
    let small = format!("{cache}-small,mounts=true,mounts-max=1");
    let log = build(&a, writer.path(), &["--cache-to", &small]);
    assert!(log.contains("cache mount /cache not exported"), "{log}");
    let b = Keel::new();
    ok(kc(&b, &reg, Some(&good)), &["pull", &base]);
    let reader = dockerfile("cat /cache/m2/seed > /seen");
    build(&b, reader.path(), &["--cache-from", &cache]);
    assert_eq!(b.ok(&["run", "--rm", "app", "cat", "/seen"]), "warm\n");
    b.ok(&["fsck"]);
}

/// Issue 13 (session 5): seeding a cache mount from `--cache-from` is decided once per
/// mount, across builds: a fresh root's mount is seeded and records which cache and
/// layer it came from; a later build (another process) whose mount a step has emptied
/// since does not seed it again (keel used to, as offers were only remembered in the
/// process); `keel gc --cache` drops mount and record, so the next build seeds again.
#[test]
fn a_cache_mount_is_seeded_once_and_remembers_its_cache() {
    let Some((reg, none, _s, _)) = seeded(false, Auth::None) else {
        return;
    };
    let base = format!("{}/test/bb:1", reg.host());
    let build = |k: &Keel, run: &str, cache: &[&str]| {
        let ctx = k.path("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        let text = format!("FROM {base}\nRUN --mount=type=cache,target=/cache {run}\n");
        std::fs::write(ctx.join("Dockerfile"), text).unwrap();
        let mut args = vec!["build", "-t", "app"];
        args.extend_from_slice(cache);
        let ctx_s = ctx.display().to_string();
        args.push(&ctx_s);
        ok(kc(k, &reg, Some(&none)), &args);
    };
    let cache = format!("registry:{}/test/seeds:1", reg.host());
    let a = Keel::new();
    let write = "mkdir -p /cache/m2 && echo warm > /cache/m2/seed";
    build(&a, write, &["--cache-to", &format!("{cache},mounts=true")]);
    let b = Keel::new();
    let from = ["--cache-from", cache.as_str()];
    let read = |n: u32| format!("cat /cache/m2/seed > /seen || echo cold > /seen; echo {n}");
    build(&b, &read(1), &from);
    assert_eq!(b.ok(&["run", "--rm", "app", "cat", "/seen"]), "warm\n");
    let records: Vec<_> = std::fs::read_dir(b.root().join("cache/mounts"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seeded"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&records[0]).unwrap()).unwrap();
    assert_eq!(record["id"], "/cache", "{record}");
    assert_eq!(
        record["cache"],
        format!("{}/test/seeds", reg.host()).as_str(),
        "{record}"
    );
    // A step empties the mount; the next builds find it empty but seeded before.
    build(&b, "rm -rf /cache/m2 /cache/* && echo emptied", &from);
    build(&b, &read(2), &from);
    assert_eq!(b.ok(&["run", "--rm", "app", "cat", "/seen"]), "cold\n");
    // Dropped with its record, the mount is a cold one again.
    b.ok(&["gc", "--cache"]);
    build(&b, &read(3), &from);
    assert_eq!(b.ok(&["run", "--rm", "app", "cat", "/seen"]), "warm\n");
    b.ok(&["fsck"]);
}

/// Session 6 follow-up: a cache mount is seeded from `--cache-from` only while no step
/// uses it. Build W (no cache) holds the cold, empty mount `shared` and waits; build S
/// (same root, `--cache-from` offering `shared`) runs meanwhile, then W writes. keel
/// used to seed first and lock later: S renamed the seed over the empty directory W had
/// mounted, and W's write went into the unlinked directory, lost.
#[test]
fn a_cache_mount_in_use_is_not_seeded_under_its_writer() {
    let Some((reg, none, _s, _)) = seeded(false, Auth::None) else {
        return;
    };
    let base = format!("{}/test/bb:1", reg.host());
    let mounts =
        "--mount=type=cache,id=shared,target=/cache \\\n  --mount=type=cache,id=sync,target=/sync";
    let ctx = |k: &Keel, name: &str, run: &str| {
        let ctx = k.path(name);
        std::fs::create_dir_all(&ctx).unwrap();
        let text = format!("FROM {base}\nRUN {mounts} \\\n  {run}\n");
        std::fs::write(ctx.join("Dockerfile"), text).unwrap();
        ctx.display().to_string()
    };
    let cache = format!("registry:{}/test/inuse:1", reg.host());
    let a = Keel::new();
    let export = ctx(&a, "a", "echo seed > /cache/seed");
    ok(
        kc(&a, &reg, Some(&none)),
        &[
            "build",
            "--cache-to",
            &format!("{cache},mounts=true"),
            &export,
        ],
    );
    let k = Keel::new();
    ok(kc(&k, &reg, Some(&none)), &["pull", &base]);
    let w = ctx(
        &k,
        "w",
        "touch /sync/w-in; i=0; while [ ! -e /sync/s-ran ] && [ $i -lt 600 ]; \
         do sleep 0.1; i=$((i+1)); done; echo mine > /cache/mine || echo lost",
    );
    let s = ctx(&k, "s", "ls /cache > /sync/s-saw; touch /sync/s-ran");
    let writer = kc(&k, &reg, Some(&none))
        .args(["build", "-t", "w", &w])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mount = |k: &Keel, id: &str| {
        use sha2::Digest as _;
        let hex = format!("{:x}", sha2::Sha256::digest(id.as_bytes()));
        k.root().join("cache/mounts").join(hex)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !mount(&k, "sync").join("w-in").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "build W never started its step"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ok(
        kc(&k, &reg, Some(&none)),
        &["build", "-t", "s", "--cache-from", &cache, &s],
    );
    let out = writer.wait_with_output().unwrap();
    common::assert_success(&out, "build W");
    let shared = mount(&k, "shared");
    assert_eq!(
        std::fs::read_to_string(shared.join("mine")).ok().as_deref(),
        Some("mine\n"),
        "W's write into the mount was lost; the mount holds {:?}",
        std::fs::read_dir(&shared).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    assert!(
        !shared.with_extension("seeded").exists(),
        "the mount W was using was seeded"
    );
    // Cold and unused, the same mount in a fresh root is seeded as before.
    let fresh = Keel::new();
    ok(kc(&fresh, &reg, Some(&none)), &["pull", &base]);
    let s = ctx(&fresh, "s", "ls /cache > /sync/s-saw; touch /sync/s-ran");
    ok(
        kc(&fresh, &reg, Some(&none)),
        &["build", "--cache-from", &cache, &s],
    );
    let saw = std::fs::read_to_string(mount(&fresh, "sync").join("s-saw")).unwrap();
    assert_eq!(saw, "seed\n", "a cold mount was not seeded");
    assert!(mount(&fresh, "shared").with_extension("seeded").exists());
    k.ok(&["fsck"]);
}

/// Issue 13 (session 5): pulling an image the store has reads no layer blob: each was
/// checked by digest when stored, and its diff_id is checked where it is unpacked. keel
/// used to decompress every present layer again (0.7–1 s for bench/pull.sh's image).
#[test]
fn pulling_a_present_image_reads_no_layer() {
    if !regserver::available() {
        return;
    }
    crate::require!(
        common::have("strace"),
        "needs strace (apt-get install strace)"
    );
    let reg = Registry::start(false, Auth::None);
    let none = std::path::Path::new("/nonexistent/auth.json");
    let (_s, _) = seed(&reg, none);
    let name = format!("{}/test/bb:1", reg.host());
    let k = Keel::new();
    ok(kc(&k, &reg, Some(none)), &["pull", &name]);
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", &name])).unwrap();
    let layer = v[0]["Manifest"]["layers"][0]["digest"].as_str().unwrap();
    let hex = &layer["sha256:".len()..];
    let log = k.path("strace.log");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=open,openat", "-o"])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_keel"))
        .arg("--root")
        .arg(k.root())
        .args(["pull", &name])
        .env("REGISTRY_AUTH_FILE", none)
        .env("HOME", k.path("home"))
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    common::assert_success(&out, "second pull");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0 blobs (0 bytes) downloaded"), "{err}");
    let opened = std::fs::read_to_string(&log).unwrap();
    let blob = format!("blobs/sha256/{hex}");
    let reads: Vec<&str> = opened.lines().filter(|l| l.contains(&blob)).collect();
    assert!(
        reads.is_empty(),
        "the present layer was read again: {reads:?}"
    );
}

/// Session 9, item 4: a push killed while its memo of the layer's zstd digest is in its
/// temp file leaves a name carrying its owner tag (it was `.<digest>.<pid>`, kept a day
/// whenever the pid had been taken again): gc takes it at once and keeps a live keel's
/// beside it, and the next push remembers the digest.
#[test]
fn a_killed_pushs_memo_temp_name_goes_at_once() {
    let Some((reg, good, a, _)) = seeded(true, Auth::Basic) else {
        return;
    };
    let dest = format!("{}/test/memo:1", reg.host());
    let args = ["push", "--compression-format", "zstd", "bb", &dest];
    let mut push = kc(&a, &reg, Some(&good));
    push.args(args);
    let memo = a.root().join("cache/registry");
    let left = crate::temps::killed_writing(push, "cache/registry/zstd", &memo);
    let live = crate::temps::LiveWriter::start();
    let kept = live.plant_beside(&left);
    crate::temps::gc_takes_only_the_dead(&a, &[left], &[kept]);
    ok(kc(&a, &reg, Some(&good)), &args);
    let remembered = std::fs::read_dir(memo.join("zstd")).unwrap().flatten();
    assert!(
        remembered
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .any(|n| !n.starts_with('.')),
        "the push after gc remembered no zstd digest"
    );
}
