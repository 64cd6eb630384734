//! `keel build` features real Dockerfiles and CI pipelines use beyond the instructions
//! (issue 11): `--output` exporters, remote ADD, named build contexts and the build-wide
//! flags. Image-content parity with BuildKit is the differential suite's (`tests/diff/`).
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common::{is_root, Keel};
use crate::require;

fn with_base() -> Keel {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    k
}

fn context(k: &Keel, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = k.path(name);
    for (p, body) in files {
        let f = dir.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, body).unwrap();
    }
    dir
}

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
