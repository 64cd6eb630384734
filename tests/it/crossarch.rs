//! Cross-architecture builds and runs (issue 16): `--platform` through qemu registered in
//! binfmt_misc, multi-platform images (an OCI index per name) built, listed, run, saved,
//! loaded by podman and skopeo, pushed, and reproducible. Needs qemu-user-static and
//! binfmt-support (scripts/setup-debian installs and registers them) and apt's index of
//! arm64 packages (for Debian's arm64 busybox-static); under CI=true a missing piece
//! fails the test rather than skipping it.
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{self, Keel};
use crate::regserver::{self, Auth, Registry, PASSWORD, USER};

/// Where the foreign busybox-static packages are kept between runs (outside the clone).
const BUSYBOX_CACHE: &str = "/var/cache/keel-test/busybox-static";

/// The platform that is not the host's (the one run under emulation).
pub(crate) fn foreign() -> (&'static str, &'static str) {
    if cfg!(target_arch = "aarch64") {
        ("amd64", "x86_64")
    } else {
        ("arm64", "aarch64")
    }
}

fn host() -> (&'static str, &'static str) {
    if cfg!(target_arch = "aarch64") {
        ("arm64", "aarch64")
    } else {
        ("amd64", "x86_64")
    }
}

/// Whether this host runs the foreign platform through qemu with the F flag, and apt
/// knows the foreign busybox-static; a clear reason when not.
pub(crate) fn emulation() -> Result<(), String> {
    let qemu = format!("/proc/sys/fs/binfmt_misc/qemu-{}", foreign().1);
    let text = std::fs::read_to_string(&qemu).map_err(|e| {
        format!("{qemu}: {e}; install qemu-user-static binfmt-support and mount binfmt_misc (scripts/setup-debian)")
    })?;
    if !text
        .lines()
        .any(|l| l.starts_with("flags:") && l.contains('F'))
    {
        return Err(format!("{qemu} lacks the F flag (scripts/setup-debian)"));
    }
    let pkg = format!("busybox-static:{}", foreign().0);
    let ok = Command::new("apt-cache")
        .args(["show", "--no-all-versions", &pkg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err(format!(
            "apt has no {pkg}: `dpkg --add-architecture {} && apt-get update` (scripts/setup-debian)",
            foreign().0
        ));
    }
    Ok(())
}

macro_rules! require_emulation {
    () => {
        if let Err(why) = emulation() {
            crate::require!(false, why);
        }
    };
}

/// `bb`: busybox for both platforms (one index), Debian's busybox-static for the other.
fn bootstrap_multi(k: &Keel) {
    let platforms = format!("linux/{},linux/{}", host().0, foreign().0);
    k.ok(&[
        "bootstrap",
        "busybox",
        "bb",
        "--platform",
        &platforms,
        "--cache-dir",
        BUSYBOX_CACHE,
    ]);
}

/// The cross-compilation idiom: a builder stage on $BUILDPLATFORM makes an artifact per
/// TARGETARCH; each target stage copies its own and reports its `uname -m`.
const CROSS_DOCKERFILE: &str = "\
FROM --platform=$BUILDPLATFORM bb AS builder
ARG TARGETARCH
ARG BUILDPLATFORM
RUN echo \"artifact for $TARGETARCH built on $BUILDPLATFORM ($(uname -m))\" > /artifact-$TARGETARCH
FROM bb
ARG TARGETARCH
ARG TARGETPLATFORM
COPY --from=builder /artifact-$TARGETARCH /artifact
RUN echo \"target $TARGETPLATFORM: uname $(uname -m)\" | tee /uname
";

fn write_context(dir: &Path, dockerfile: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
}

/// Builds CROSS_DOCKERFILE for both platforms as `app`; returns (index digest, stderr).
fn build_cross(k: &Keel) -> (String, String) {
    bootstrap_multi(k);
    let ctx = k.path("ctx");
    write_context(&ctx, CROSS_DOCKERFILE);
    let platforms = format!("linux/{},linux/{}", host().0, foreign().0);
    let out = k
        .cmd()
        .args(["build", "--platform", &platforms, "-t", "app"])
        .arg(&ctx)
        .output()
        .unwrap();
    common::assert_success(&out, "keel build --platform");
    let digest = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (digest, String::from_utf8(out.stderr).unwrap())
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// (digest, size, architecture) of an index's entries, sorted.
fn entries(index: &serde_json::Value) -> Vec<(String, u64, String)> {
    let mut v: Vec<(String, u64, String)> = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests in {index}"))
        .iter()
        .map(|m| {
            (
                m["digest"].as_str().unwrap().to_string(),
                m["size"].as_u64().unwrap(),
                m["platform"]["architecture"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Must show: a native builder stage cross-producing an artifact per TARGETARCH, built
/// for both platforms; each target's RUN sees its own `uname -m`; the name is an index
/// of two manifests that skopeo (`inspect --raw` of the saved archive) and podman (its
/// manifest list of the archive, `podman manifest inspect`) read the same.
#[test]
fn cross_build_native_builder_per_targetarch_index_agrees_with_skopeo_and_podman() {
    crate::require!(common::is_root(), "needs root");
    require_emulation!();
    crate::require!(
        common::have("skopeo") && common::have("podman"),
        "skopeo and podman are needed (apt-get install skopeo podman)"
    );
    let k = Keel::new();
    let (digest, log) = build_cross(&k);
    for (arch, uname) in [host(), foreign()] {
        let line = format!("target linux/{arch}: uname {uname}");
        assert!(log.contains(&line), "no {line:?} in the build log:\n{log}");
        let artifact = k.ok(&[
            "run",
            "--rm",
            "--platform",
            &format!("linux/{arch}"),
            "app",
            "cat",
            "/artifact",
        ]);
        // The builder ran natively once per target, for that target.
        let want = format!(
            "artifact for {arch} built on linux/{} ({})",
            host().0,
            host().1
        );
        assert_eq!(artifact.trim(), want);
    }
    let inspect = json(&k.ok(&["inspect", "app"]));
    let index = &inspect[0]["Index"];
    assert_eq!(inspect[0]["IndexDigest"].as_str(), Some(digest.as_str()));
    let ours = entries(index);
    assert_eq!(ours.len(), 2, "{index}");
    let images = k.ok(&["images"]);
    for (arch, _) in [host(), foreign()] {
        assert!(images.contains(&format!("linux/{arch}")), "{images}");
    }
    let tar = k.path("app.tar");
    k.ok(&["save", "-o", &tar.display().to_string(), "app"]);
    let archive = format!("oci-archive:{}", tar.display());
    let raw = common::run_ok(Command::new("skopeo").args(["inspect", "--raw", &archive]));
    assert_eq!(entries(&json(&raw)), ours, "skopeo: {raw}");
    let pod = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(k.path("podman/root"))
            .arg("--runroot")
            .arg(k.path("podman/run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        common::run_ok(&mut c)
    };
    // podman load takes the host's image; its manifest list of the archive is the index.
    let loaded = pod(&["load", "-i", &tar.display().to_string()]);
    assert!(loaded.contains("app"), "{loaded}");
    pod(&["manifest", "create", "applist"]);
    pod(&["manifest", "add", "--all", "applist", &archive]);
    let listed = pod(&["manifest", "inspect", "applist"]);
    assert_eq!(entries(&json(&listed)), ours, "podman: {listed}");
}

/// Must show: `keel run --platform` of the other platform runs its manifest under qemu;
/// without --platform the host's runs.
#[test]
fn run_platform_of_a_multi_platform_image_runs_it_under_emulation() {
    crate::require!(common::is_root(), "needs root");
    require_emulation!();
    let k = Keel::new();
    build_cross(&k);
    let (arch, uname) = foreign();
    let out = k.ok(&[
        "run",
        "--rm",
        "--platform",
        &format!("linux/{arch}"),
        "app",
        "uname",
        "-m",
    ]);
    assert_eq!(out.trim(), uname);
    assert_eq!(
        k.ok(&["run", "--rm", "app", "uname", "-m"]).trim(),
        host().1
    );
    let err = k.fails(&["run", "--rm", "--platform", "linux/riscv64", "app", "true"]);
    assert!(
        err.contains("no image for platform linux/riscv64")
            && err.contains(&format!("linux/{arch}")),
        "{err}"
    );
}

/// Must show: a platform whose emulator is missing fails before any step runs, naming
/// the packages; binfmt_misc is stood in for by an empty directory (KEEL_BINFMT_DIR).
#[test]
fn missing_emulator_fails_clearly_before_any_step_runs() {
    crate::require!(common::is_root(), "needs root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let empty = k.path("no-binfmt");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("register"), "").unwrap();
    let (arch, qemu) = foreign();
    let marker = k.path("ran");
    let ctx = k.path("ctx");
    // A host stage first: it must not run either.
    write_context(
        &ctx,
        &format!(
            "FROM bb AS first\nRUN echo ran > /ran\nFROM --platform=linux/{arch} bb\nCOPY --from=first /ran /ran\nRUN true\n"
        ),
    );
    let fails = |args: &[&str]| {
        let out = k
            .cmd()
            .env("KEEL_BINFMT_DIR", &empty)
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    };
    let ctx_s = ctx.display().to_string();
    let platforms = format!("linux/{},linux/{arch}", host().0);
    for args in [
        vec!["build", "--platform", &platforms, "-t", "x", &ctx_s],
        vec!["build", "-t", "x", &ctx_s],
        vec!["run", "--rm", "--platform", "linux/s390x", "bb", "true"],
    ] {
        let err = fails(&args);
        assert!(
            err.contains("qemu-user-static binfmt-support")
                && err.contains("needs the emulator qemu-"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("#1 ") && !err.contains("running"),
            "a step ran: {err}"
        );
    }
    let err = fails(&["build", "--platform", &platforms, "-t", "x", &ctx_s]);
    assert!(err.contains(&format!("qemu-{qemu}")), "{err}");
    assert!(!marker.exists());
    assert!(k.fails(&["inspect", "x"]).contains("no such image"));
}

/// `keel info` lists the host's platforms and the emulated ones.
#[test]
fn info_lists_native_and_emulated_platforms() {
    require_emulation!();
    let k = Keel::new();
    let info = k.ok(&["info"]);
    assert!(
        info.contains(&format!("platform:      linux/{} (native)", host().0)),
        "{info}"
    );
    assert!(
        info.contains(&format!("platform:      linux/{} (emulated: ", foreign().0)),
        "{info}"
    );
    let empty = k.path("none");
    std::fs::create_dir_all(&empty).unwrap();
    let out = k
        .cmd()
        .env("KEEL_BINFMT_DIR", &empty)
        .arg("info")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("emulated"), "{text}");
}

/// Reproducible per platform: the same Dockerfile and context give the same index
/// digest (and so the same manifests) in two roots.
#[test]
fn same_dockerfile_gives_the_same_index_digest_in_two_roots() {
    crate::require!(common::is_root(), "needs root");
    require_emulation!();
    let (a, b) = (Keel::new(), Keel::new());
    let (da, _) = build_cross(&a);
    let (db, _) = build_cross(&b);
    assert!(da.starts_with("sha256:"), "{da}");
    assert_eq!(da, db);
}

/// `keel push` of a multi-platform name pushes each platform's image, then the index;
/// skopeo reads the index back with both platforms, and keel pulls the foreign one.
#[test]
fn push_of_a_multi_platform_name_pushes_every_manifest_then_the_index() {
    crate::require!(common::is_root(), "needs root");
    require_emulation!();
    if !regserver::available() {
        return;
    }
    let reg = Registry::start(true, Auth::Basic);
    let auth = reg.auth_file(PASSWORD);
    let k = Keel::new();
    build_cross(&k);
    let name = format!("{}/test/app:1", reg.host());
    let kc = |k: &Keel| {
        let mut c = k.cmd();
        c.env("KEEL_CERTS_D", reg.certs_d())
            .env("REGISTRY_AUTH_FILE", &auth)
            .env("HOME", k.path("home"))
            .stdin(Stdio::null());
        c
    };
    let out = kc(&k).args(["push", "app", &name]).output().unwrap();
    common::assert_success(&out, "keel push");
    let pushed = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let certs = reg.certs_d().join(reg.host()).display().to_string();
    let raw = common::run_ok(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--cert-dir",
        &certs,
        "--creds",
        &format!("{USER}:{PASSWORD}"),
        &format!("docker://{name}"),
    ]));
    let index = json(&raw);
    assert_eq!(
        index["mediaType"].as_str(),
        Some("application/vnd.oci.image.index.v1+json")
    );
    // `entries` sorts by digest: the architectures in name order to compare.
    let mut archs: Vec<String> = entries(&index).into_iter().map(|e| e.2).collect();
    archs.sort();
    let mut want = vec![host().0.to_string(), foreign().0.to_string()];
    want.sort();
    assert_eq!(archs, want, "{raw}");
    assert_eq!(
        pushed,
        format!("sha256:{}", sha256_hex(raw.trim_end().as_bytes())),
        "keel prints the pushed index's digest"
    );
    let p = Keel::new();
    let (arch, uname) = foreign();
    let out = kc(&p)
        .args(["pull", "--platform", &format!("linux/{arch}"), &name])
        .output()
        .unwrap();
    common::assert_success(&out, "keel pull --platform");
    let ran = p.ok(&["run", "--rm", &name, "cat", "/uname"]);
    assert_eq!(ran.trim(), format!("target linux/{arch}: uname {uname}"));
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `keel bootstrap debian --platform` of the foreign platform: debootstrap's first stage
/// natively, its second stage (dpkg configuring every package) under qemu, the image
/// marked for that platform and running there. The emulated second stage takes minutes,
/// so the resulting image is kept outside the clone (/var/cache/keel-test), keyed by
/// keel's bootstrap and platform code, the suite and debootstrap's version: the real
/// bootstrap runs again whenever one of those changes (and on a cold CI machine), and its
/// package downloads are cached like r012's.
#[test]
fn bootstrap_debian_foreign_platform_runs_its_second_stage_under_emulation() {
    crate::require!(common::is_root(), "debootstrap needs root");
    require_emulation!();
    crate::require!(
        Path::new("/usr/sbin/debootstrap").exists(),
        "debootstrap is not installed (apt-get install debootstrap)"
    );
    let (arch, uname) = foreign();
    let key = {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(include_str!("../../src/bootstrap.rs"));
        h.update(include_str!("../../src/platform.rs"));
        h.update(format!("bookworm minbase {arch}\n"));
        h.update(common::run_ok(Command::new("dpkg-query").args([
            "-W",
            "-f=${Version}",
            "debootstrap",
        ])));
        hex::encode(h.finalize())
    };
    let dir = Path::new("/var/cache/keel-test");
    std::fs::create_dir_all(dir).unwrap();
    let saved = dir.join(format!("debian-{arch}-{}.tar", &key[..16]));
    let k = Keel::new();
    if saved.exists() {
        k.ok(&["load", "-i", &saved.display().to_string()]);
    } else {
        let out = k
            .cmd()
            .args([
                "bootstrap",
                "debian",
                "deb",
                "--platform",
                &format!("linux/{arch}"),
            ])
            .args(["--cache-dir", "/var/cache/keel-test/debootstrap"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        common::assert_success(&out, "keel bootstrap debian --platform");
        let tmp = saved.with_extension("tmp");
        k.ok(&["save", "deb", "-o", &tmp.display().to_string()]);
        std::fs::rename(&tmp, &saved).unwrap();
    }
    let v = json(&k.ok(&["inspect", "deb"]));
    assert_eq!(v[0]["Config"]["architecture"].as_str(), Some(arch));
    assert_eq!(
        v[0]["Platform"].as_str(),
        Some(format!("linux/{arch}").as_str())
    );
    let out = k.ok(&[
        "run",
        "--rm",
        "deb",
        "sh",
        "-c",
        "uname -m; dpkg --print-architecture; dpkg-query -W -f='${db:Status-Abbrev}\\n' bash",
    ]);
    assert_eq!(out, format!("{uname}\n{arch}\nii \n"));
}
