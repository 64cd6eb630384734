//! Attacker-side tests: store. Archives, layers, rootfs tarballs and names that come from
//! outside are hostile: each test below is one break found by playing the attacker, and
//! proves it stays closed (the load fails, nothing is tagged, fsck stays clean, the host
//! canary is untouched, a trusted image runs its own files).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use sha2::Digest as _;

use crate::canary::CanaryDir;
use crate::common::{busybox_rootfs, is_root, run_ok, Keel};
use crate::require;

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn hex_of(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap()
}

/// One tar entry for [`tar_of`].
enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append(b: &mut tar::Builder<impl Write>, e: &E) {
    use tar::EntryType as T;
    match e {
        E::File(p, c) => {
            let mut h = header(T::Regular, 0o644, c.len() as u64);
            b.append_data(&mut h, p, *c).unwrap();
        }
        E::Dir(p) => {
            let mut h = header(T::Directory, 0o755, 0);
            b.append_data(&mut h, p, std::io::empty()).unwrap();
        }
        E::Sym(p, t) => {
            let mut h = header(T::Symlink, 0o777, 0);
            b.append_link(&mut h, p, t).unwrap();
        }
        E::Hard(p, t) => {
            let mut h = header(T::Link, 0o644, 0);
            b.append_link(&mut h, p, t).unwrap();
        }
    }
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        append(&mut b, e);
    }
    b.into_inner().unwrap()
}

/// A busybox rootfs as one layer, plus `extra` entries.
fn busybox_layer(extra: &[E]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(dir.path());
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Deterministic);
    b.append_dir_all(".", dir.path()).unwrap();
    for e in extra {
        append(&mut b, e);
    }
    b.into_inner().unwrap()
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn config(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": arch(),
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// A docker-archive: `(config, layers, RepoTags)` per image, blobs named by digest.
/// One image of a docker-archive: config bytes, layer tars, RepoTags.
type ArchivedImage = (Vec<u8>, Vec<Vec<u8>>, serde_json::Value);

fn docker_archive(images: &[ArchivedImage]) -> Vec<u8> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut manifest = Vec::new();
    for (cfg, layers, tags) in images {
        let cname = format!("{}.json", hex_of(&sha(cfg)));
        files.push((cname.clone(), cfg.clone()));
        let mut names = Vec::new();
        for l in layers {
            let n = format!("{}/layer.tar", hex_of(&sha(l)));
            files.push((n.clone(), l.clone()));
            names.push(n);
        }
        manifest.push(json!({"Config": cname, "RepoTags": tags, "Layers": names}));
    }
    let mf = serde_json::to_vec(&manifest).unwrap();
    let mut entries: Vec<E> = vec![E::File("manifest.json", &mf)];
    entries.extend(files.iter().map(|(n, c)| E::File(n, c)));
    tar_of(&entries)
}

fn diff_id_of(k: &Keel, image: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", image])).unwrap();
    v[0]["Config"]["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .to_string()
}

fn write(k: &Keel, name: &str, bytes: &[u8]) -> String {
    let p = k.path(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

fn fsck_clean(k: &Keel) {
    let out = k.ok(&["fsck"]);
    assert!(out.contains("ok:"), "{out}");
}

fn images(k: &Keel) -> String {
    k.ok(&["images"])
}

/// The drivers this host can run: copy always, overlay when it works (required under CI).
/// Probed once, in a root of its own, so no test's layer cache is touched.
fn drivers(_k: &Keel) -> Vec<&'static str> {
    static DRIVERS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    DRIVERS
        .get_or_init(|| {
            let k = Keel::new();
            k.ok(&["bootstrap", "busybox", "bb"]);
            let probe = k
                .cmd()
                .args(["run", "--rm", "--storage-driver", "overlay", "bb", "true"])
                .output()
                .unwrap();
            if probe.status.success() {
                vec!["copy", "overlay"]
            } else if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "overlay storage is required under CI: {}",
                    String::from_utf8_lossy(&probe.stderr)
                );
            } else {
                vec!["copy"]
            }
        })
        .clone()
}

/// Runs `cat /pwned` in `image` and returns what it printed (the run may fail).
fn cat_pwned(k: &Keel, driver: &str, image: &str) -> String {
    let out = k
        .cmd()
        .args([
            "run",
            "--rm",
            "--storage-driver",
            driver,
            image,
            "cat",
            "/pwned",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Break (issue 10 item 2): a loaded archive claimed another image's diff_id for its own
/// layer, so the unpacked-layer cache (keyed by diff_id) held the attacker's files and the
/// trusted image ran them, even after `rmi` + `gc`, with `fsck` saying ok. The load must be
/// refused because the layer does not hash to the diff_id it claims.
#[test]
fn an_archive_claiming_another_images_diff_id_is_refused() {
    require!(is_root(), "running containers needs root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let trusted = diff_id_of(&k, "bb");
    let evil = busybox_layer(&[E::File("pwned", b"attacker")]);
    for layer in [evil.clone(), gzip(&evil)] {
        let archive = docker_archive(&[(
            config(std::slice::from_ref(&trusted)),
            vec![layer],
            json!(["evil:latest"]),
        )]);
        let path = write(&k, "evil.tar", &archive);
        let err = k.fails(&["load", "-i", &path]);
        assert!(err.contains("diff_id"), "{err}");
        assert!(err.contains(&trusted), "{err}");
        assert!(!images(&k).contains("evil"), "{}", images(&k));
    }
    // Whatever reached the store, the trusted image runs its own files, on every driver.
    for d in drivers(&k) {
        assert_eq!(cat_pwned(&k, d, "evil"), "");
        assert_eq!(cat_pwned(&k, d, "bb"), "", "driver {d}");
    }
    k.ok(&["gc"]);
    fsck_clean(&k);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes an image straight into the store's OCI layout (as a tampered store, or a future
/// pull that forgot to verify, would leave it) and names it `name`.
fn plant_image(k: &Keel, name: &str, cfg: &[u8], layers: &[Vec<u8>]) {
    plant_image_as(
        k,
        name,
        cfg,
        layers,
        "application/vnd.oci.image.layer.v1.tar",
    )
}

fn plant_image_as(k: &Keel, name: &str, cfg: &[u8], layers: &[Vec<u8>], media: &str) {
    let layout = k.root().join("images");
    let blob = |b: &[u8]| {
        let d = sha(b);
        std::fs::write(layout.join("blobs/sha256").join(hex_of(&d)), b).unwrap();
        (d, b.len())
    };
    let (cd, cs) = blob(cfg);
    let ls: Vec<_> = layers
        .iter()
        .map(|l| {
            let (d, s) = blob(l);
            json!({"mediaType": media, "digest": d, "size": s})
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": ls,
    }))
    .unwrap();
    let (md, ms) = blob(&manifest);
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md,
        "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": format!("{name}:latest")},
    }));
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Break (issue 10 item 2): unpacking trusted the diff_id an image claims, so a layer that
/// reached the store unverified filled the cache slot of another image's layer. Unpacking
/// now hashes the uncompressed stream as it goes: a mismatch is an error naming the diff_id,
/// the half-unpacked directory is discarded, and fsck names the lying image.
#[test]
fn a_layer_that_does_not_match_its_diff_id_is_never_unpacked_into_the_cache() {
    require!(is_root(), "running containers needs root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let trusted = diff_id_of(&k, "bb");
    let evil = busybox_layer(&[E::File("pwned", b"attacker")]);
    plant_image(&k, "evil", &config(std::slice::from_ref(&trusted)), &[evil]);
    for d in drivers(&k) {
        let err = k.fails(&["run", "--rm", "--storage-driver", d, "evil", "true"]);
        assert!(
            err.contains("diff_id") && err.contains(&trusted),
            "{d}: {err}"
        );
        let storage = k.root().join("storage");
        // Nothing is cached under the claimed diff_id (bb has not run on this driver yet).
        let sub = if d == "overlay" { "layers" } else { "chains" };
        let left: Vec<_> = std::fs::read_dir(storage.join(sub))
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{d}: {sub} kept {left:?}");
        let tmp: Vec<_> = std::fs::read_dir(storage.join("tmp"))
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            tmp.iter()
                .all(|n| !n.to_string_lossy().starts_with("unpack-")),
            "{d}: {tmp:?}"
        );
        assert_eq!(cat_pwned(&k, d, "bb"), "", "driver {d}");
    }
    let out = k.cmd().args(["fsck"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("image evil:latest") && text.contains("diff_id"),
        "{text}"
    );
    // A gzip layer that lies: unpacking refuses it, and `fsck --full` (which decompresses)
    // names it.
    k.ok(&["rmi", "evil"]);
    let evil = gzip(&busybox_layer(&[E::File("pwned", b"attacker")]));
    let cfg = config(std::slice::from_ref(&trusted));
    plant_image_as(
        &k,
        "evilgz",
        &cfg,
        &[evil],
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    // (bb's own layer stays cached under that diff_id, and would be used: start afresh.)
    std::fs::remove_dir_all(k.root().join("storage/chains")).unwrap();
    let err = k.fails(&["run", "--rm", "--storage-driver", "copy", "evilgz", "true"]);
    assert!(err.contains("diff_id") && err.contains(&trusted), "{err}");
    fsck_clean(&k);
    fsck_says(&k, &["fsck", "--full"], "image evilgz:latest layer 0");
}

/// Finds the unpacked tree of `diff_id` (the directory holding its files).
fn unpacked_tree(k: &Keel, sub: &str, hex: &str) -> PathBuf {
    let dir = k.root().join("storage").join(sub).join(hex);
    for cand in [dir.join("diff"), dir.clone()] {
        if cand.join("bin/busybox").is_file() {
            return cand;
        }
    }
    panic!("no unpacked tree under {}", dir.display());
}

fn fsck_says(k: &Keel, args: &[&str], what: &str) {
    let out = k.cmd().args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{args:?} passed: {text}");
    assert!(text.contains(what), "{args:?}: {text}");
}

/// Break (issue 10 item 2): `fsck` never looked at the unpacked-layer cache, so a changed
/// unpacked layer (or one with no record of what it came from) passed as ok. The cheap check
/// finds a missing or wrong marker and added or removed files; `--full` re-unpacks and
/// compares content.
#[test]
fn fsck_checks_the_unpacked_layer_cache() {
    require!(is_root(), "running containers needs root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let hex = hex_of(&diff_id_of(&k, "bb")).to_string();
    for (d, sub, key) in [
        ("overlay", "layers", hex.clone()),
        ("copy", "chains", hex.clone()),
    ] {
        if !drivers(&k).contains(&d) {
            continue;
        }
        k.ok(&["run", "--rm", "--storage-driver", d, "bb", "true"]);
        fsck_clean(&k);
        k.ok(&["fsck", "--full"]);
        let tree = unpacked_tree(&k, sub, &key);
        // Same size, other content: only a full check can see it.
        let passwd = tree.join("etc/passwd");
        let mut text = std::fs::read(&passwd).unwrap();
        text[0] = b'X';
        std::fs::write(&passwd, &text).unwrap();
        fsck_clean(&k);
        fsck_says(&k, &["fsck", "--full"], "etc/passwd");
        // An added file is seen by the cheap check.
        std::fs::write(tree.join("pwned"), "attacker").unwrap();
        fsck_says(&k, &["fsck"], &key);
        // No record of what the directory was unpacked from.
        let marker = k
            .root()
            .join("storage")
            .join(sub)
            .join(&key)
            .join("unpacked.json");
        std::fs::remove_file(&marker).unwrap();
        fsck_says(&k, &["fsck"], "unpacked.json");
        // gc drops what no image may use any more; a fresh run unpacks again.
        std::fs::remove_dir_all(k.root().join("storage").join(sub).join(&key)).unwrap();
        k.ok(&["run", "--rm", "--storage-driver", d, "bb", "true"]);
        fsck_clean(&k);
        k.ok(&["rmi", "bb"]);
        k.ok(&["gc"]);
        assert!(
            !k.root().join("storage").join(sub).join(&key).exists(),
            "{d}"
        );
        k.ok(&["bootstrap", "busybox", "bb"]);
    }
}

/// Peak RSS in KiB of `keel args` (run under /usr/bin/time); asserts it failed.
fn peak_rss_of_failing(k: &Keel, args: &[&str]) -> (u64, String) {
    let report = k.path("rss");
    let out = Command::new("/usr/bin/time")
        .arg("-o")
        .arg(&report)
        .arg("-f")
        .arg("%M")
        .arg(env!("CARGO_BIN_EXE_keel"))
        .arg("--root")
        .arg(k.root())
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "keel {args:?} succeeded");
    let text = std::fs::read_to_string(&report).unwrap();
    let kib = text
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no RSS in {text}"));
    (kib, err)
}

/// `header` followed by `len` zero bytes, gzipped by the system gzip (fast on zeros).
fn gz_bomb(k: &Keel, name: &str, header: &[u8], len: u64) -> String {
    let head = write(k, &format!("{name}.head"), header);
    let out = k.path(name);
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "(cat {head}; head -c {len} /dev/zero) | gzip -1 > {}",
        out.display()
    )));
    out.to_str().unwrap().to_string()
}

fn ext_header(kind: tar::EntryType, name: &[u8], size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// Break (issue 10 item 9): `keel load` and `keel import` read tar extension headers and
/// JSON without a bound: a few MB of gzip holding a 256 MiB GNU long name or PAX header, or
/// a huge manifest.json, made keel buffer it all. Each is refused from its header, and
/// keel's peak memory stays small.
#[test]
fn decompression_bombs_in_archives_and_rootfs_tarballs_are_refused_early() {
    require!(
        Path::new("/usr/bin/time").is_file(),
        "/usr/bin/time measures peak memory (apt-get install time)"
    );
    let k = Keel::new();
    k.ok(&["images"]);
    const BIG: u64 = 256 << 20;
    const LIMIT_KIB: u64 = 96 << 10;
    let cases = [
        (
            "longname",
            ext_header(tar::EntryType::GNULongName, b"././@LongLink", BIG),
            "long name",
        ),
        (
            "pax",
            ext_header(tar::EntryType::XHeader, b"PaxHeaders/x", BIG),
            "PAX header",
        ),
    ];
    for (name, head, what) in &cases {
        let bomb = gz_bomb(&k, name, head, BIG);
        assert!(std::fs::metadata(&bomb).unwrap().len() < 8 << 20);
        for args in [
            vec!["load", "-i", bomb.as_str()],
            vec!["import", bomb.as_str(), "bomb"],
        ] {
            let (kib, err) = peak_rss_of_failing(&k, &args);
            assert!(kib < LIMIT_KIB, "{args:?} peaked at {kib} KiB: {err}");
            assert!(err.contains(what), "{args:?}: {err}");
        }
    }
    // JSON read from an archive is bounded too: a 64 MiB manifest.json (gzip) is refused.
    let mut h = header(tar::EntryType::Regular, 0o644, BIG / 4);
    h.set_path("manifest.json").unwrap();
    h.set_cksum();
    let bomb = gz_bomb(&k, "json", h.as_bytes(), BIG / 4);
    let (kib, err) = peak_rss_of_failing(&k, &["load", "-i", &bomb]);
    assert!(kib < LIMIT_KIB, "peaked at {kib} KiB: {err}");
    assert!(
        err.contains("manifest.json") && err.contains("MiB"),
        "{err}"
    );
    assert_eq!(images(&k).lines().count(), 1);
    fsck_clean(&k);
}

/// `..`-climbing name that leads from `<root>/<sub>` to the canary directory.
fn climb_to(k: &Keel, sub_depth: usize, canary: &CanaryDir) -> String {
    let root_depth = k.root().components().count() + sub_depth;
    let up = "../".repeat(root_depth);
    format!("{up}{}", canary.path().strip_prefix("/").unwrap().display())
}

/// Break (issue 10 item 10): `keel volume rm ../../X` deleted a directory outside the root:
/// the name became a path unchecked. Volume names follow docker's
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
#[test]
fn volume_rm_with_a_path_for_a_name_touches_nothing_outside_the_root() {
    let k = Keel::new();
    let canary = CanaryDir::new();
    std::fs::create_dir_all(k.root().join("volumes")).unwrap();
    let name = climb_to(&k, 1, &canary);
    assert!(k.root().join("volumes").join(&name).is_dir());
    for args in [vec!["volume", "rm", name.as_str()], vec!["volume", "prune"]] {
        let _ = k.cmd().args(&args).output().unwrap();
        canary.assert_intact();
    }
    let err = k.fails(&["volume", "rm", &name]);
    assert!(err.contains("invalid") && err.contains("name"), "{err}");
    canary.assert_intact();
}

/// Break class (issue 10 item 10): container names become directory names. A name that is
/// a path is refused at `run`, and `rm` of such a name touches nothing outside the root.
#[test]
fn container_names_that_are_paths_are_refused() {
    require!(is_root(), "running containers needs root");
    let k = Keel::new();
    let canary = CanaryDir::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let name = climb_to(&k, 1, &canary);
    let err = k.fails(&["run", "--name", &name, "bb", "true"]);
    assert!(err.contains("name"), "{err}");
    k.fails(&["rm", "-f", &name]);
    canary.assert_intact();
    assert_eq!(k.ok(&["ps", "-a", "-q"]).trim(), "");
}

/// Break class (issue 10 item 10): cache-mount ids and secret ids come from the Dockerfile
/// and the command line; neither may name a host path outside the root.
#[test]
fn cache_mount_and_secret_ids_that_are_paths_stay_inside_the_root() {
    require!(is_root(), "building needs root");
    let k = Keel::new();
    let canary = CanaryDir::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let id = climb_to(&k, 3, &canary);
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM bb\nRUN --mount=type=cache,id={id},target=/c touch /c/pwned && ls /c\n"),
    )
    .unwrap();
    let _ = k
        .cmd()
        .args(["build", "-t", "c1", ctx.to_str().unwrap()])
        .output()
        .unwrap();
    canary.assert_intact();
    let secret = write(&k, "secret", b"s3cret");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM bb\nRUN --mount=type=secret,id={id} cat /run/secrets/{id}\n"),
    )
    .unwrap();
    let _ = k
        .cmd()
        .args([
            "build",
            "--secret",
            &format!("id={id},src={secret}"),
            "-t",
            "c2",
            ctx.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    canary.assert_intact();
}

/// One malformed archive for [`load_refuses_archives_that_would_leave_the_store_broken`].
struct Bad {
    what: &'static str,
    archive: Vec<u8>,
    says: String,
}

fn oci_archive(index: serde_json::Value, blobs: &[&[u8]], extra: &[E]) -> Vec<u8> {
    let idx = serde_json::to_vec(&index).unwrap();
    let names: Vec<(String, &[u8])> = blobs
        .iter()
        .map(|b| (format!("blobs/sha256/{}", hex_of(&sha(b))), *b))
        .collect();
    let mut b = tar::Builder::new(Vec::new());
    append(
        &mut b,
        &E::File("oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}"),
    );
    append(&mut b, &E::File("index.json", &idx));
    for (n, c) in &names {
        append(&mut b, &E::File(n, c));
    }
    for e in extra {
        append(&mut b, e);
    }
    b.into_inner().unwrap()
}

fn manifest_json(cfg: (&str, usize), layers: &[(&str, usize)]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, s)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.0, "size": cfg.1},
        "layers": layers,
    }))
    .unwrap()
}

fn index_of(entries: &[(&[u8], usize, &str)]) -> serde_json::Value {
    let list: Vec<_> = entries
        .iter()
        .map(|(m, size, name)| {
            json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha(m),
                "size": size,
                "annotations": {"org.opencontainers.image.ref.name": name},
            })
        })
        .collect();
    json!({"schemaVersion": 2, "manifests": list})
}

fn bad_archives() -> Vec<Bad> {
    let layer = tar_of(&[E::File("hello", b"hi")]);
    let (ld, ll) = (sha(&layer), layer.len());
    let cfg = config(std::slice::from_ref(&ld));
    let (cd, cl) = (sha(&cfg), cfg.len());
    let good = manifest_json((&cd, cl), &[(&ld, ll)]);
    let gl = good.len();
    let two_ids = config(&[ld.clone(), ld.clone()]);
    let m_two = manifest_json((&sha(&two_ids), two_ids.len()), &[(&ld, ll)]);
    let m_size = manifest_json((&cd, cl), &[(&ld, ll + 1)]);
    let lying = config(&[sha(b"something else")]);
    let m_lying = manifest_json((&sha(&lying), lying.len()), &[(&ld, ll)]);
    let other = tar_of(&[E::File("other", b"x")]);
    let m_missing_layer = manifest_json((&cd, cl), &[(&sha(&other), other.len())]);
    let many: Vec<String> = vec![ld.clone(); 1000];
    let many_cfg = config(&many);
    let many_layers: Vec<(&str, usize)> = vec![(ld.as_str(), ll); 1000];
    let m_many = manifest_json((&sha(&many_cfg), many_cfg.len()), &many_layers);
    let oci = |entries: &[(&[u8], usize, &str)], blobs: &[&[u8]]| {
        oci_archive(index_of(entries), blobs, &[])
    };
    // A config stored under a name its content does not hash to.
    let mut swapped = tar::Builder::new(Vec::new());
    let idx = serde_json::to_vec(&index_of(&[(&good, gl, "x:1")])).unwrap();
    let cname = format!("blobs/sha256/{}", hex_of(&cd));
    let lname = format!("blobs/sha256/{}", hex_of(&ld));
    let gname = format!("blobs/sha256/{}", hex_of(&sha(&good)));
    for e in [
        E::File("oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}"),
        E::File("index.json", &idx),
        E::File(&gname, &good),
        E::File(&lname, &layer),
        E::File(&cname, &lying),
    ] {
        append(&mut swapped, &e);
    }
    let swapped = swapped.into_inner().unwrap();
    let docker = |manifest: serde_json::Value, extra: &[E]| {
        let mf = serde_json::to_vec(&manifest).unwrap();
        let cn = format!("{}.json", hex_of(&cd));
        let mut entries = vec![
            E::File("manifest.json", &mf),
            E::File(&cn, &cfg),
            E::File("l/layer.tar", &layer),
        ];
        for e in extra {
            entries.push(match e {
                E::Sym(p, t) => E::Sym(p, t),
                E::File(p, c) => E::File(p, c),
                E::Dir(p) => E::Dir(p),
                E::Hard(p, t) => E::Hard(p, t),
            });
        }
        tar_of(&entries)
    };
    let cn = format!("{}.json", hex_of(&cd));
    vec![
        Bad {
            what: "missing layer blob",
            archive: oci(&[(&good, gl, "x:1")], &[&good, &cfg]),
            says: ld.clone(),
        },
        Bad {
            what: "wrong layer size",
            archive: oci(&[(&m_size, m_size.len(), "x:1")], &[&m_size, &cfg, &layer]),
            says: "size".into(),
        },
        Bad {
            what: "wrong manifest size",
            archive: oci(&[(&good, gl + 7, "x:1")], &[&good, &cfg, &layer]),
            says: "size".into(),
        },
        Bad {
            what: "diff_id count differs from layer count",
            archive: oci(&[(&m_two, m_two.len(), "x:1")], &[&m_two, &two_ids, &layer]),
            says: "diff_id".into(),
        },
        Bad {
            what: "diff_id that the layer does not hash to",
            archive: oci(
                &[(&m_lying, m_lying.len(), "x:1")],
                &[&m_lying, &lying, &layer],
            ),
            says: "diff_id".into(),
        },
        Bad {
            what: "config stored under another digest",
            archive: swapped,
            says: cd.clone(),
        },
        Bad {
            what: "manifest naming a missing config",
            archive: oci(&[(&good, gl, "x:1")], &[&good, &layer]),
            says: cd.clone(),
        },
        Bad {
            what: "second image broken: the first must not be tagged either",
            archive: oci(
                &[
                    (&good, gl, "x:1"),
                    (&m_missing_layer, m_missing_layer.len(), "y:1"),
                ],
                &[&good, &cfg, &layer, &m_missing_layer],
            ),
            says: sha(&other),
        },
        Bad {
            what: "too many layers",
            archive: oci(
                &[(&m_many, m_many.len(), "x:1")],
                &[&m_many, &many_cfg, &layer],
            ),
            says: "layers".into(),
        },
        Bad {
            what: "duplicate RepoTags",
            archive: docker(
                json!([
                    {"Config": cn, "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]},
                    {"Config": cn, "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]},
                ]),
                &[],
            ),
            says: "x:1".into(),
        },
        Bad {
            what: "invalid RepoTags in the second image",
            archive: docker(
                json!([
                    {"Config": cn, "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]},
                    {"Config": cn, "RepoTags": ["Bad Name"], "Layers": ["l/layer.tar"]},
                ]),
                &[],
            ),
            says: "Bad Name".into(),
        },
        Bad {
            what: "path traversal in Layers",
            archive: docker(
                json!([{"Config": cn, "RepoTags": ["x:1"], "Layers": ["../../etc/passwd"]}]),
                &[],
            ),
            says: "../../etc/passwd".into(),
        },
        Bad {
            what: "layer entry that is a symlink out of the archive",
            archive: docker(
                json!([{"Config": cn, "RepoTags": ["x:1"], "Layers": ["s/layer.tar"]}]),
                &[E::Sym("s/layer.tar", "../../../../etc/passwd")],
            ),
            says: "s/layer.tar".into(),
        },
        Bad {
            what: "config entry that is an absolute symlink",
            archive: docker(
                json!([{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]),
                &[E::Sym("c.json", "/etc/passwd")],
            ),
            says: "c.json".into(),
        },
    ]
}

/// Break (issue 10 item 12): `keel load` tagged images as it went, so an archive with a
/// missing blob, wrong sizes, a diff_id list that does not match the layers, a config under
/// the wrong digest, duplicate tags, or `..` and symlinks in manifest.json paths left names
/// behind that `keel fsck` then reported as broken. Everything is now verified before the
/// first name is written: a refused archive leaves no new name and fsck clean.
#[test]
fn load_refuses_archives_that_would_leave_the_store_broken() {
    let k = Keel::new();
    k.ok(&["images"]);
    let before = images(&k);
    for bad in bad_archives() {
        let p = write(&k, "bad.tar", &bad.archive);
        let out = k.cmd().args(["load", "-i", &p]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: the load succeeded", bad.what);
        assert!(err.contains(&bad.says), "{}: {err}", bad.what);
        assert_eq!(images(&k), before, "{}", bad.what);
        let out = k.cmd().arg("fsck").output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            bad.what,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Untagged images (no RepoTags) are fine, as with docker: loaded by id.
    let layer = tar_of(&[E::File("hello", b"hi")]);
    let cfg = config(&[sha(&layer)]);
    let ok = docker_archive(&[(cfg, vec![layer], serde_json::Value::Null)]);
    let out = k.ok(&["load", "-i", &write(&k, "ok.tar", &ok)]);
    assert!(out.contains("Loaded image ID"), "{out}");
    fsck_clean(&k);
}

/// Break (issue 10 item 15): `--root /etc images` turned any directory into a store
/// (creating images/, tmp/, locks/ in it). A non-empty directory that is not a keel root
/// is refused with a message naming it and the fix.
#[test]
fn a_non_empty_directory_that_is_not_a_keel_root_is_refused() {
    let canary = CanaryDir::new();
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--root")
        .arg(canary.path())
        .arg("images")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&canary.path().display().to_string()), "{err}");
    assert!(err.contains("not a keel root"), "{err}");
    canary.assert_intact();
    // An empty directory and an existing root are fine.
    let k = Keel::new();
    std::fs::create_dir_all(k.root()).unwrap();
    k.ok(&["images"]);
    k.ok(&["images"]);
}

/// Break (issue 10 item 15): `keel tag bb bb@sha256:…` succeeded silently (the digest was
/// dropped and `bb:latest` re-tagged). As docker says: refusing to create a tag with a
/// digest reference.
#[test]
fn tagging_with_a_digest_reference_is_refused() {
    let k = Keel::new();
    let layer = tar_of(&[E::File("hello", b"hi")]);
    let cfg = config(&[sha(&layer)]);
    k.ok(&[
        "load",
        "-i",
        &write(
            &k,
            "a.tar",
            &docker_archive(&[(cfg, vec![layer], json!(["a:1"]))]),
        ),
    ]);
    let d = format!("sha256:{}", "0".repeat(64));
    for target in [format!("b@{d}"), format!("b:2@{d}")] {
        let err = k.fails(&["tag", "a:1", &target]);
        assert!(
            err.contains("refusing to create a tag with a digest reference"),
            "{err}"
        );
    }
    let err = k.fails(&["tag", "a:1", "b@sha256:000"]);
    assert!(err.contains("sha256"), "{err}");
    assert_eq!(images(&k).lines().count(), 2, "{}", images(&k));
}

/// The merged tree of a rootfs: path → (kind, mode, uid, gid, nlink, content or target,
/// xattrs), skipping what the runtime itself puts into every container.
fn tree(root: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let m = e.path().symlink_metadata().unwrap();
        let body = if m.is_file() {
            sha(&std::fs::read(e.path()).unwrap())
        } else if m.file_type().is_symlink() {
            std::fs::read_link(e.path()).unwrap().display().to_string()
        } else {
            String::new()
        };
        let mut xattrs: Vec<String> = xattr::list(e.path())
            .map(|l| l.map(|n| n.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        xattrs.sort();
        let nlink = if m.is_file() { m.nlink() } else { 0 };
        out.insert(
            rel,
            format!(
                "{:o} {}:{} n{nlink} {body} {xattrs:?}",
                m.mode(),
                m.uid(),
                m.gid()
            ),
        );
    }
    out
}

/// Runs `image` with `driver` (kept, not --rm) and returns the merged tree of its rootfs.
fn rootfs_tree(k: &Keel, driver: &str, image: &str) -> std::collections::BTreeMap<String, String> {
    let name = format!("eq-{driver}-{}", image.replace(':', "-"));
    k.ok(&[
        "run",
        "--name",
        &name,
        "--storage-driver",
        driver,
        image,
        "true",
    ]);
    let snaps = k.root().join("storage/snapshots");
    let mut found = None;
    for e in std::fs::read_dir(&snaps).unwrap().flatten() {
        // An earlier `run --rm`'s snapshot may still be going (`.rm-*`, no metadata).
        let Ok(meta) = std::fs::read_to_string(e.path().join("snapshot.json")) else {
            continue;
        };
        if meta.contains(&format!("\"driver\": \"{driver}\"")) {
            found = Some(e.path().join("rootfs"));
        }
    }
    let t = tree(&found.expect("the container's snapshot"));
    k.ok(&["rm", "-f", &name]);
    t
}

/// Break (issue 10 item 15): the overlay and copy drivers built different trees from the
/// same layers: an opaque whiteout at a layer's root, the same layer twice in a manifest,
/// and a hardlink whose target path runs through a symlink. The same stack on both drivers
/// now gives the same tree (mode, owner, content, link targets, xattrs).
#[test]
fn overlay_and_copy_drivers_build_the_same_tree() {
    require!(is_root(), "running containers needs root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    require!(
        drivers(&k).len() == 2,
        "overlay storage is not available here"
    );
    let base = busybox_layer(&[
        E::Dir("d"),
        E::File("d/a", b"a"),
        E::File("keep", b"k"),
        E::Dir("dir"),
        E::File("dir/file", b"data"),
        E::Sym("sym", "dir"),
        E::Sym("abs", "/dir"),
    ]);
    let opaque_root = busybox_layer(&[E::File(".wh..wh..opq", b""), E::File("new", b"n")]);
    let links = tar_of(&[
        E::Dir("dir2"),
        E::File("dir2/target", b"t"),
        E::Sym("s2", "dir2"),
        E::Hard("h", "s2/target"),
        E::Dir("d"),
        E::File("d/.wh.a", b""),
    ]);
    // A hardlink through a lower layer's symlink: overlayfs (and docker) cannot make it.
    let cross = tar_of(&[E::Hard("h2", "sym/file")]);
    let stacks: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("opaque:1", vec![base.clone(), opaque_root]),
        ("dup:1", vec![base.clone(), links.clone(), links.clone()]),
        ("dup:2", vec![links.clone(), base.clone(), links]),
        ("cross:1", vec![base, cross]),
    ];
    let imgs: Vec<_> = stacks
        .iter()
        .map(|(name, layers)| {
            let ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
            (config(&ids), layers.clone(), json!([name]))
        })
        .collect();
    k.ok(&["load", "-i", &write(&k, "eq.tar", &docker_archive(&imgs))]);
    for (name, _) in &stacks {
        if *name == "cross:1" {
            for d in ["overlay", "copy"] {
                let err = k.fails(&["run", "--rm", "--storage-driver", d, name, "true"]);
                assert!(
                    err.contains("\"h2\"") && err.contains("sym/file"),
                    "{d}: {err}"
                );
            }
            continue;
        }
        let o = rootfs_tree(&k, "overlay", name);
        let c = rootfs_tree(&k, "copy", name);
        let diff: Vec<_> = o
            .iter()
            .filter(|(p, v)| c.get(*p) != Some(v))
            .map(|(p, v)| format!("overlay {p}: {v} / copy: {:?}", c.get(p)))
            .chain(
                c.iter()
                    .filter(|(p, _)| !o.contains_key(*p))
                    .map(|(p, v)| format!("copy only {p}: {v}")),
            )
            .collect();
        assert!(diff.is_empty(), "{name}:\n{}", diff.join("\n"));
        if *name == "opaque:1" {
            assert!(!o.contains_key("keep") && o.contains_key("new"), "{o:?}");
        } else {
            assert!(o.contains_key("h") && !o.contains_key("d/a"), "{o:?}");
        }
    }
}

/// Break (issue 10 item 15): `ADD local.tar` applied OCI whiteouts, so a `.wh.NAME` file
/// in a user's archive deleted NAME from the image (`.wh..wh..opq` emptied the directory).
/// docker extracts them as plain files, but an image layer can only store such a name as a
/// whiteout, so keel refuses the archive, naming the entry, and deletes nothing.
#[test]
fn add_of_a_local_tar_with_whiteout_names_deletes_nothing() {
    require!(is_root(), "building needs root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    for (tar, entry) in [
        (
            tar_of(&[E::File("ok", b"1"), E::File(".wh.passwd", b"")]),
            ".wh.passwd",
        ),
        (
            tar_of(&[E::Dir("sub"), E::File("sub/.wh..wh..opq", b"")]),
            "sub/.wh..wh..opq",
        ),
    ] {
        std::fs::write(ctx.join("a.tar"), gzip(&tar)).unwrap();
        std::fs::write(ctx.join("Dockerfile"), "FROM bb\nADD a.tar /etc/\n").unwrap();
        let err = k.fails(&["build", "-t", "added", ctx.to_str().unwrap()]);
        assert!(err.contains(entry) && err.contains("whiteout"), "{err}");
    }
    assert!(!images(&k).contains("added"));
    // An archive without such names is extracted as before.
    std::fs::write(ctx.join("a.tar"), tar_of(&[E::File("wh.txt", b"1")])).unwrap();
    k.ok(&["build", "-t", "added", ctx.to_str().unwrap()]);
    let out = k.ok(&["run", "--rm", "added", "ls", "/etc"]);
    for want in ["passwd", "group", "wh.txt"] {
        assert!(out.split_whitespace().any(|w| w == want), "{want}: {out}");
    }
}

/// Break (issue 10 item 15): a newline in a keel.toml value reached the generated keel.mk
/// and added make targets of the attacker's choosing. Control characters in values are
/// refused, naming the key and line.
#[test]
fn a_newline_in_a_keel_toml_value_cannot_inject_make_targets() {
    let k = Keel::new();
    let dir = k.path("proj");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM bb\n").unwrap();
    let cases = [
        (
            "[[image]]\nname = \"app\"\ntags = [\"app:1\\npwned:\\n\\ttouch /tmp/x\"]\n",
            "tags",
            3,
        ),
        (
            "[[image]]\nname = \"app\"\n\n[image.args]\nV = \"1\\nall: ; echo pwned\"\n",
            "args.V",
            5,
        ),
        (
            "[[image]]\nname = \"app\"\ntarget = \"\"\"x\nall:\"\"\"\n",
            "target",
            3,
        ),
        (
            "[[image]]\nname = \"app\"\n[env.dev]\nimage = \"bb\"\nhome = \"/h\\r\"\n",
            "home",
            5,
        ),
    ];
    for (text, key, line) in cases {
        std::fs::write(dir.join("keel.toml"), text).unwrap();
        let out = k
            .cmd()
            .current_dir(&dir)
            .args(["integrate", "make"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{text}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            err.contains(&format!("keel.toml:{line}")) && err.contains(key),
            "{text}: {err}"
        );
        assert!(err.contains("control character"), "{err}");
        assert!(!dir.join("keel.mk").exists());
    }
    // Plain values still work, with `$` and `#` escaped for make.
    std::fs::write(
        dir.join("keel.toml"),
        "[[image]]\nname = \"app\"\n[image.args]\nV = \"a$b#c\"\n",
    )
    .unwrap();
    let out = k
        .cmd()
        .current_dir(&dir)
        .args(["integrate", "make"])
        .output()
        .unwrap();
    crate::common::assert_success(&out, "integrate make");
    let mk = std::fs::read_to_string(dir.join("keel.mk"))
        .unwrap_or_else(|_| String::from_utf8_lossy(&out.stdout).into_owned());
    assert!(mk.contains("V=a$$b#c"), "{mk}");
}

/// Item 14: the root (container environments, bundles, secrets' temp files) is private,
/// and the store's own files are not readable by others.
#[test]
fn the_store_root_is_private_and_its_files_are_not_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let k = crate::common::Keel::new();
    std::fs::create_dir_all(k.root()).unwrap();
    std::fs::set_permissions(k.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let mode = std::fs::metadata(k.root()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o067, 0, "root is {mode:o}");
    for e in walkdir::WalkDir::new(k.root().join("images")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let m = e.metadata().unwrap().permissions().mode();
            assert_eq!(m & 0o044, 0, "{} is {:o}", e.path().display(), m & 0o777);
        }
    }
}
