//! Attacker-side tests: buildpack tarballs. A `--buildpack` URL names a tarball anyone
//! may serve. keel downloads it within a bound and unpacks it as it unpacks a layer, so
//! the tarball can neither fill the disk or memory nor make a host directory the
//! buildpack (which keel would then hash, copy into the build and run).
use std::path::Path;

use crate::canary::CanaryDir;
use crate::common::Keel;
use crate::hostile::{bounded_env, files_below, text, PyServer, ENDLESS_HTTP};
use crate::require;

/// A host directory that looks like a buildpack, its scripts holding the canary's secret.
fn host_buildpack(secret: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("keel-host-buildpack-")
        .tempdir()
        .unwrap();
    std::fs::create_dir(d.path().join("bin")).unwrap();
    for script in ["detect", "compile"] {
        std::fs::write(
            d.path().join("bin").join(script),
            format!("#!/bin/sh\n# keel-detect: {secret}\nexit 0\n"),
        )
        .unwrap();
    }
    d
}

/// Appends the symlink `name` → `target` to `b`.
fn append_symlink(b: &mut tar::Builder<Vec<u8>>, name: &str, target: &Path) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, name, target).unwrap();
}

/// A tar whose only entry is the symlink `bp` → `target`.
fn link_tarball(target: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    append_symlink(&mut b, "bp", target);
    b.into_inner().unwrap()
}

/// `keel buildpack build` of an empty app with the buildpack at `url`, downloads bounded
/// by `limit` (KEEL_ADD_MAX_SIZE) when given.
fn build_with(k: &Keel, url: &str, limit: Option<&str>) -> (std::process::Output, String) {
    let app = k.path("app");
    std::fs::create_dir_all(&app).unwrap();
    let app = app.display().to_string();
    let env: Vec<_> = limit
        .map(|l| ("KEEL_ADD_MAX_SIZE", l))
        .into_iter()
        .collect();
    let (out, _) = bounded_env(
        k,
        &["buildpack", "build", &app, "-t", "app", "--buildpack", url],
        &env,
    );
    let t = text(&out);
    (out, t)
}

/// Break: the buildpack URL's server sends a tarball without end, announced as 10 GiB
/// or with no length at all, to fill keel's memory or disk. keel downloads it as it
/// downloads `ADD <url>`: it refuses the announced one before reading it (over the
/// default 4 GiB bound) and stops the other at the bound (lowered here with
/// KEEL_ADD_MAX_SIZE), naming the URL, the bound and how to raise it, and leaves no
/// partial download in its root.
#[test]
fn an_endless_buildpack_tarball_is_refused_at_its_bound() {
    require!(
        crate::common::have("python3"),
        "python3 is not installed (the test's HTTP server)"
    );
    let canary = CanaryDir::new();
    let k = Keel::new();
    let server = PyServer::start(ENDLESS_HTTP, &[]);
    // A URL is a tarball's by its suffix (any other is cloned with git).
    for (path, limit, shown) in [
        ("/announced.tgz", None, "4294967296"),
        ("/endless.tgz", Some("1m"), "1048576"),
    ] {
        let url = format!("http://127.0.0.1:{}{path}", server.port);
        let (out, t) = build_with(&k, &url, limit);
        assert!(!out.status.success(), "{path}: the build succeeded: {t}");
        assert!(
            matches!(out.status.code(), Some(1..=125)),
            "{path}: keel was killed or aborted ({:?}): {t}",
            out.status
        );
        for want in [url.as_str(), shown, "KEEL_ADD_MAX_SIZE"] {
            assert!(t.contains(want), "{path}: the error lacks {want:?}: {t}");
        }
        for dir in ["buildpacks", "cache/remote", "tmp"] {
            let left = files_below(&k.root().join(dir));
            assert!(left.is_empty(), "{path}: left under {dir}: {left:?}");
        }
    }
    canary.assert_intact();
}

/// Break: the tarball's only entry is a symlink to a host directory that looks like a
/// buildpack. Before, keel stripped the "single top directory" by following the link,
/// so the host directory became the buildpack: hashed, copied into the build, run. Now
/// the link stays a link inside the fetched tree, the build fails as not a buildpack,
/// and nothing of the host directory is read into keel's root or its output.
#[test]
fn a_buildpack_tarball_cannot_make_a_host_directory_the_buildpack() {
    require!(
        crate::common::have("python3"),
        "python3 is not installed (the test's HTTP server)"
    );
    let canary = CanaryDir::new();
    let host = host_buildpack(&canary.secret);
    refused_as_not_a_buildpack(&canary, link_tarball(host.path()));
}

/// Serves `tarball` as a buildpack and shows keel refuses it as not a buildpack, with
/// nothing of the canary's secret (which the host buildpack holds) in its output or root.
fn refused_as_not_a_buildpack(canary: &CanaryDir, tarball: Vec<u8>) {
    let k = Keel::new();
    let served = k.path("served");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::write(served.join("bp.tar"), tarball).unwrap();
    let server = PyServer::start(ENDLESS_HTTP, &[served.to_str().unwrap()]);
    let url = format!("http://127.0.0.1:{}/files/bp.tar", server.port);
    let (out, t) = build_with(&k, &url, None);
    assert!(!out.status.success(), "the build succeeded: {t}");
    assert!(t.contains("is not a buildpack"), "{t}");
    canary.assert_not_leaked(&t);
    for f in files_below(&k.root()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&canary.secret),
            "the host buildpack's content is in keel's root: {}",
            f.display()
        );
    }
    canary.assert_intact();
}

/// A tar of a buildpack whose `bin/detect` is its own and whose `bin/compile` is a link
/// to `target`.
fn compile_link_tarball(target: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let detect = b"#!/bin/sh\nexit 0\n";
    h.set_mode(0o755);
    h.set_size(detect.len() as u64);
    b.append_data(&mut h, "bin/detect", &detect[..]).unwrap();
    append_symlink(&mut b, "bin/compile", target);
    b.into_inner().unwrap()
}

/// Break: the buildpack's `bin/compile` is a link to a host script. keel looked the
/// program up on the host (`is_file`, following the link out of the buildpack), so the
/// host's files decided whether the buildpack was taken. Now its links resolve inside the
/// buildpack, as they do in the build's container: the link leads nowhere, the build
/// fails as not a buildpack, and nothing of the host script is read or run.
#[test]
fn a_buildpack_program_linking_to_the_host_is_not_looked_up_there() {
    require!(
        crate::common::have("python3"),
        "python3 is not installed (the test's HTTP server)"
    );
    let canary = CanaryDir::new();
    let host = host_buildpack(&canary.secret);
    refused_as_not_a_buildpack(
        &canary,
        compile_link_tarball(&host.path().join("bin/compile")),
    );
}
