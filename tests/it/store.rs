//! Integration tests for the store and image interchange: what umoci, podman and skopeo
//! make of keel's archives, what keel makes of theirs, schema validity, hostile input,
//! durability under SIGKILL and concurrency, and fsck's eye for corruption.
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{have, is_root, run_ok, Keel};
use crate::require;

/// A small rootfs with varied modes, owners, symlinks and a hardlink, as a tar made by GNU tar.
fn varied_rootfs(k: &Keel) -> (PathBuf, PathBuf) {
    let src = k.path("src-rootfs");
    crate::common::busybox_rootfs(&src);
    std::fs::create_dir_all(src.join("srv/data/deep")).unwrap();
    std::fs::write(src.join("srv/data/hello.txt"), "hello keel\n").unwrap();
    std::fs::write(src.join("srv/data/empty"), "").unwrap();
    std::fs::write(src.join("srv/data/secret"), "s3cr3t").unwrap();
    std::fs::write(src.join("srv/data/deep/tool"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(
        src.join("srv/data/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(
        src.join("srv/data/deep/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::set_permissions(
        src.join("srv/data/deep"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::os::unix::fs::symlink("hello.txt", src.join("srv/data/rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("srv/data/abs-link")).unwrap();
    std::fs::hard_link(src.join("srv/data/hello.txt"), src.join("srv/data/hard")).unwrap();
    if is_root() {
        std::os::unix::fs::lchown(src.join("srv/data/hello.txt"), Some(1000), Some(1000)).unwrap();
        std::os::unix::fs::lchown(src.join("srv/data/deep"), Some(33), Some(44)).unwrap();
        std::os::unix::fs::lchown(src.join("srv/data/rel-link"), Some(7), Some(8)).unwrap();
    }
    let tar = k.path("rootfs.tar");
    run_ok(
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    (src, tar)
}

/// (mode, uid, gid, content or link target) for every path under `root`.
fn tree(root: &Path) -> BTreeMap<String, (u32, u32, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let body = if m.file_type().is_symlink() {
            std::fs::read_link(e.path())
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if m.is_file() {
            std::fs::read(e.path()).unwrap()
        } else {
            Vec::new()
        };
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        out.insert(rel, (m.mode(), m.uid(), m.gid(), body));
    }
    out
}

#[test]
fn saved_image_unpacks_with_umoci_to_the_source_tree() {
    require!(
        have("umoci"),
        "umoci is not installed (apt-get install umoci)"
    );
    require!(is_root(), "umoci keeps owners only as root");
    let k = Keel::new();
    let (src, tar) = varied_rootfs(&k);
    k.ok(&["import", tar.to_str().unwrap(), "varied:1"]);
    let archive = k.path("varied.tar");
    k.ok(&["save", "varied:1", "-o", archive.to_str().unwrap()]);
    let layout = k.path("layout");
    std::fs::create_dir(&layout).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-xf")
            .arg(&archive),
    );
    let bundle = k.path("bundle");
    run_ok(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:varied:1", layout.display()))
            .arg(&bundle),
    );
    let (want, got) = (tree(&src), tree(&bundle.join("rootfs")));
    let want_keys: Vec<_> = want.keys().collect();
    let got_keys: Vec<_> = got.keys().collect();
    assert_eq!(
        want_keys, got_keys,
        "umoci's tree has other paths than the source"
    );
    for (path, w) in &want {
        assert_eq!(
            &got[path], w,
            "{path}: (mode, uid, gid, content) differ after umoci unpack"
        );
    }
    // skopeo reads the same archive as an oci-archive.
    if have("skopeo") {
        let out = run_ok(
            Command::new("skopeo")
                .arg("inspect")
                .arg(format!("oci-archive:{}:varied:1", archive.display())),
        );
        assert!(out.contains("\"Layers\""), "{out}");
    }
}

fn podman_id(name: &str) -> String {
    run_ok(Command::new("podman").args(["image", "inspect", "--format", "{{.Id}}", name]))
        .trim()
        .to_string()
}

#[test]
fn podman_loads_keel_archives_and_keel_loads_podman_archives() {
    require!(
        have("podman"),
        "podman is not installed (apt-get install podman)"
    );
    require!(is_root(), "podman's default storage needs root here");
    let k = Keel::new();
    let (_, tar) = varied_rootfs(&k);
    k.ok(&["import", tar.to_str().unwrap(), "keel-interop-podman:v1"]);
    let id = k
        .ok(&["images", "-q", "--no-trunc"])
        .trim()
        .trim_start_matches("sha256:")
        .to_string();
    let archive = k.path("to-podman.tar");
    k.ok(&[
        "save",
        "keel-interop-podman:v1",
        "-o",
        archive.to_str().unwrap(),
    ]);
    run_ok(Command::new("podman").arg("load").arg("-i").arg(&archive));
    let name = "localhost/keel-interop-podman:v1";
    assert_eq!(
        podman_id(name),
        id,
        "podman sees another image id than keel wrote"
    );
    let want = k.ok(&["inspect", "keel-interop-podman:v1"]);
    let want: serde_json::Value = serde_json::from_str(&want).unwrap();
    let want_diff_ids = want[0]["Config"]["rootfs"]["diff_ids"].clone();
    for (format, file) in [
        ("oci-archive", "p-oci.tar"),
        ("docker-archive", "p-docker.tar"),
    ] {
        let out = k.path(file);
        run_ok(
            Command::new("podman")
                .args(["save", "--format", format, "-o"])
                .arg(&out)
                .arg(name),
        );
        let k2 = Keel::new();
        let loaded = k2.ok(&["load", "-i", out.to_str().unwrap()]);
        assert!(loaded.contains("Loaded image"), "{loaded}");
        let got: serde_json::Value = serde_json::from_str(&k2.ok(&["inspect", name])).unwrap();
        assert_eq!(
            got[0]["Id"].as_str().unwrap(),
            format!("sha256:{id}"),
            "{format}: config changed on the way through podman"
        );
        assert_eq!(
            got[0]["Config"]["rootfs"]["diff_ids"], want_diff_ids,
            "{format}: layers differ"
        );
        k2.ok(&["fsck"]);
    }
    let _ = Command::new("podman")
        .args(["rmi", "-f", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[test]
fn gzip_docker_archives_and_stdin_load() {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let plain = k.path("bb.tar");
    k.ok(&["save", "bb", "-o", plain.to_str().unwrap()]);
    let gz = k.path("bb.tar.gz");
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "gzip -c {} > {}",
        plain.display(),
        gz.display()
    )));
    let k2 = Keel::new();
    let out = k2
        .cmd()
        .args(["load"])
        .stdin(std::fs::File::open(&gz).unwrap())
        .output()
        .unwrap();
    crate::common::assert_success(&out, "keel load < bb.tar.gz");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Loaded image: bb:latest"));
    assert_eq!(k.ok(&["images", "-q"]), k2.ok(&["images", "-q"]));
}

/// Every JSON file in a store (and a saved archive) against the OCI schemas.
fn validate_store_json(root: &Path) -> usize {
    let layout = root.join("images");
    let validator = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/oci-validate.py");
    let py = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut by_kind: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
    by_kind
        .entry("index")
        .or_default()
        .push(layout.join("index.json"));
    by_kind
        .entry("layout")
        .or_default()
        .push(layout.join("oci-layout"));
    for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&p).unwrap()) else {
            continue;
        };
        let kind = match v["mediaType"].as_str() {
            Some("application/vnd.oci.image.manifest.v1+json") => "manifest",
            Some("application/vnd.oci.image.index.v1+json") => "index",
            _ if v.get("rootfs").is_some() => "config",
            _ => continue,
        };
        by_kind.entry(kind).or_default().push(p);
    }
    let mut n = 0;
    for (kind, files) in &by_kind {
        n += files.len();
        let out = Command::new(py)
            .arg(&validator)
            .arg("image")
            .arg(kind)
            .args(files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "schema validation of {kind} documents failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    n
}

#[test]
fn every_json_keel_writes_validates_against_the_oci_schemas() {
    let py = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let has_jsonschema = Command::new(py)
        .args(["-c", "import jsonschema"])
        .status()
        .is_ok_and(|s| s.success());
    require!(
        has_jsonschema,
        "python3-jsonschema is not installed (apt-get install python3-jsonschema)"
    );
    // The validator itself must agree with the upstream vectors, or its verdicts mean nothing.
    let selftest = Command::new(py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/oci-validate.py"))
        .arg("selftest")
        .output()
        .unwrap();
    assert!(
        selftest.status.success(),
        "{}",
        String::from_utf8_lossy(&selftest.stdout)
    );
    let k = Keel::new();
    let (_, tar) = varied_rootfs(&k);
    k.ok(&["bootstrap", "busybox", "bb"]);
    k.ok(&["import", tar.to_str().unwrap(), "varied"]);
    k.ok(&["tag", "bb", "registry.example.com:5000/team/bb:v1"]);
    let archive = k.path("both.tar");
    k.ok(&["save", "bb", "varied", "-o", archive.to_str().unwrap()]);
    let k2 = Keel::new();
    k2.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(validate_store_json(&k.root()) >= 6);
    assert!(validate_store_json(&k2.root()) >= 6);
    // The archive's own index.json and oci-layout, as written.
    let x = k.path("x");
    std::fs::create_dir(&x).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&x)
            .arg("-xf")
            .arg(&archive),
    );
    std::fs::rename(&x, k.path("x-root")).unwrap();
    std::fs::create_dir(k.path("x")).unwrap();
    std::fs::rename(k.path("x-root"), k.path("x/images")).unwrap();
    assert!(validate_store_json(&k.path("x")) >= 6);
}

/// A tar with one entry whose raw name (and link name) are written byte for byte.
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, body) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_cksum();
        b.append(&h, *body).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_rootfs_tarballs_are_refused_by_import() {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "base"]);
    let cases: &[(&str, Vec<u8>, &str)] = &[
        (
            "traversal",
            raw_tar(&[("../escaped", tar::EntryType::Regular, "", b"x")]),
            "../escaped",
        ),
        (
            "nested-traversal",
            raw_tar(&[("a/../../escaped", tar::EntryType::Regular, "", b"x")]),
            "a/../../escaped",
        ),
        (
            "absolute",
            raw_tar(&[("/etc/escaped", tar::EntryType::Regular, "", b"x")]),
            "/etc/escaped",
        ),
        (
            "hardlink-escape",
            raw_tar(&[("link", tar::EntryType::Link, "../../etc/passwd", b"")]),
            "link",
        ),
        (
            "hardlink-absolute",
            raw_tar(&[("link", tar::EntryType::Link, "/etc/passwd", b"")]),
            "link",
        ),
    ];
    for (label, bytes, entry) in cases {
        let f = k.path(&format!("{label}.tar"));
        std::fs::write(&f, bytes).unwrap();
        let err = k.fails(&["import", f.to_str().unwrap(), &format!("hostile-{label}")]);
        assert!(
            err.contains(entry),
            "{label}: error does not name the entry {entry:?}: {err}"
        );
        assert!(
            k.fails(&["inspect", &format!("hostile-{label}")])
                .contains("no such image"),
            "{label} was tagged"
        );
    }
    assert!(!k.dir.path().parent().unwrap().join("escaped").exists());
    k.ok(&["fsck"]);
}

/// A rootfs tar of about `mb` MiB of incompressible data.
fn big_rootfs_tar(k: &Keel, mb: usize) -> PathBuf {
    let dir = k.path("big");
    std::fs::create_dir_all(&dir).unwrap();
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for i in 0..mb {
        let mut buf = vec![0u8; 1 << 20];
        for chunk in buf.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes());
        }
        std::fs::write(dir.join(format!("f{i}")), &buf).unwrap();
    }
    let tar = k.path("big.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    tar
}

fn fsck_clean(k: &Keel) {
    let out = k.cmd().arg("fsck").output().unwrap();
    assert!(
        out.status.success(),
        "fsck not clean: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn no_fsync_skips_the_fsyncs_and_keeps_the_same_content() {
    crate::require!(crate::common::have("strace"), "needs strace");
    let k = Keel::new();
    let tar = big_rootfs_tar(&k, 12);
    let syncs = |extra: &[&str], name: &str| -> (usize, String) {
        let log = k.path(&format!("strace-{name}"));
        let out = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-e",
                "trace=fsync,fdatasync,sync_file_range",
                "-o",
            ])
            .arg(&log)
            .arg(env!("CARGO_BIN_EXE_keel"))
            .arg("--root")
            .arg(k.root())
            .args(extra)
            .args(["import"])
            .arg(&tar)
            .arg(name)
            .output()
            .unwrap();
        crate::common::assert_success(&out, ("import", extra));
        let calls = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains('('))
            .count();
        (
            calls,
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    let layers = |name: &str| {
        let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", name])).unwrap();
        v[0]["Manifest"]["layers"].clone()
    };
    let (durable, _) = syncs(&[], "durable");
    assert!(durable > 0, "a default import fsyncs its writes");
    let durable_layers = layers("durable");
    k.ok(&["rmi", "durable"]);
    k.ok(&["gc"]);
    let (fast, _) = syncs(&["--no-fsync"], "fast");
    assert_eq!(fast, 0, "--no-fsync still synced");
    assert_eq!(layers("fast"), durable_layers);
    fsck_clean(&k);
}

#[test]
fn sigkill_at_any_point_of_import_or_load_leaves_a_clean_store() {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "base"]);
    let base_id = k.ok(&["images", "-q", "--no-trunc"]);
    let tar = big_rootfs_tar(&k, 24);
    k.ok(&["import", tar.to_str().unwrap(), "big:saved"]);
    let archive = k.path("big-archive.tar");
    k.ok(&["save", "big:saved", "-o", archive.to_str().unwrap()]);
    k.ok(&["rmi", "big:saved"]);
    k.ok(&["gc"]);
    let mut killed_mid_way = 0;
    for i in 0..24u64 {
        let args: Vec<String> = if i % 2 == 0 {
            vec![
                "import".into(),
                tar.display().to_string(),
                format!("victim:{i}"),
            ]
        } else {
            vec!["load".into(), "-i".into(), archive.display().to_string()]
        };
        let mut child = k
            .cmd()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(i * 7));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if !finished && !status.success() {
            killed_mid_way += 1;
        }
        fsck_clean(&k);
        let out = k.cmd().args(["inspect", "base"]).output().unwrap();
        assert!(
            out.status.success(),
            "the base tag was lost after killing {args:?}"
        );
        assert!(k
            .ok(&["images", "-q", "--no-trunc"])
            .contains(base_id.trim()));
    }
    assert!(
        killed_mid_way > 0,
        "no run was interrupted; the test proved nothing"
    );
    let gc = k.ok(&["gc"]);
    assert!(gc.contains("removed"), "{gc}");
    assert_eq!(
        std::fs::read_dir(k.root().join("tmp")).unwrap().count(),
        0,
        "gc left temp files"
    );
    fsck_clean(&k);
}

#[test]
fn concurrent_tag_and_import_processes_lose_no_tag() {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "base"]);
    let small = k.path("small.tar");
    std::fs::write(
        &small,
        raw_tar(&[("hello", tar::EntryType::Regular, "", b"hi")]),
    )
    .unwrap();
    let mut children = Vec::new();
    for p in 0..8 {
        let mut c = Command::new("sh");
        if p % 2 == 0 {
            let script = (0..10)
                .map(|i| format!("\"$0\" --root \"$1\" tag base base:tag-{p}-{i} || exit 1"))
                .collect::<Vec<_>>()
                .join("\n");
            c.arg("-c")
                .arg(script)
                .arg(env!("CARGO_BIN_EXE_keel"))
                .arg(k.root());
        } else {
            let script = (0..5)
                .map(|i| {
                    format!("\"$0\" --root \"$1\" import \"$2\" imp-{p}-{i} >/dev/null || exit 1")
                })
                .collect::<Vec<_>>()
                .join("\n");
            c.arg("-c")
                .arg(script)
                .arg(env!("CARGO_BIN_EXE_keel"))
                .arg(k.root())
                .arg(&small);
        }
        children.push(c.spawn().unwrap());
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let listed: serde_json::Value =
        serde_json::from_str(&k.ok(&["images", "--format", "json"])).unwrap();
    let names: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["repository"].as_str().unwrap(),
                r["tag"].as_str().unwrap()
            )
        })
        .collect();
    for p in 0..8 {
        let n = if p % 2 == 0 { 10 } else { 5 };
        for i in 0..n {
            let want = if p % 2 == 0 {
                format!("base:tag-{p}-{i}")
            } else {
                format!("imp-{p}-{i}:latest")
            };
            assert!(names.contains(&want), "lost {want}");
        }
    }
    assert_eq!(names.len(), 1 + 4 * 10 + 4 * 5);
    fsck_clean(&k);
}

#[test]
fn fsck_detects_a_single_flipped_byte_in_any_blob() {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "base"]);
    let blobs: Vec<PathBuf> = std::fs::read_dir(k.root().join("images/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(blobs.len(), 3);
    for blob in blobs {
        let mut bytes = std::fs::read(&blob).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        let original = std::fs::read(&blob).unwrap();
        std::fs::write(&blob, &bytes).unwrap();
        let out = k.cmd().arg("fsck").output().unwrap();
        let name = blob.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "fsck missed a flipped byte in {name}"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&name),
            "fsck did not name {name}"
        );
        std::fs::write(&blob, original).unwrap();
    }
    fsck_clean(&k);
}

#[test]
fn fsck_names_dangling_references_and_gc_frees_unreferenced_blobs() {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "base"]);
    k.ok(&["tag", "base", "other"]);
    k.ok(&["rmi", "base"]);
    assert!(
        k.ok(&["gc"]).contains("removed 0 blobs"),
        "gc freed blobs an image still uses"
    );
    std::fs::write(k.root().join("tmp/blob-stray"), "x").unwrap();
    k.ok(&["rmi", "other"]);
    let gc = k.ok(&["gc"]);
    assert!(gc.contains("removed 3 blobs and 1 temporary files"), "{gc}");
    k.ok(&["bootstrap", "busybox", "again"]);
    let info: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "again"])).unwrap();
    let layer = info[0]["Config"]["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    std::fs::remove_file(k.root().join("images/blobs/sha256").join(&layer)).unwrap();
    let out = k.cmd().arg("fsck").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dangling reference")
            && text.contains(&layer)
            && text.contains("again:latest"),
        "{text}"
    );
}

#[test]
fn names_resolve_in_the_usual_forms_and_bad_input_says_how_to_fix_it() {
    let k = Keel::new();
    let id = k
        .ok(&["bootstrap", "busybox", "localhost:5000/team/bb:1.0"])
        .trim()
        .to_string();
    let digest: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "localhost:5000/team/bb:1.0"])).unwrap();
    let digest = digest[0]["Digest"].as_str().unwrap().to_string();
    for form in [
        &id[7..19],
        &id,
        &format!("localhost:5000/team/bb@{digest}"),
        &digest,
    ] {
        let got: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", form])).unwrap();
        assert_eq!(got[0]["Id"].as_str().unwrap(), id, "{form}");
    }
    k.ok(&["tag", "localhost:5000/team/bb:1.0", "plain"]);
    assert!(k.ok(&["images"]).contains("plain"));
    assert!(k
        .fails(&["inspect", "plain:2"])
        .contains("no such image: plain:2"));
    assert!(k
        .fails(&["tag", "plain", "Bad Name"])
        .contains("invalid image reference"));
    let err = k.fails(&["import", "/nonexistent.tar", "x"]);
    assert!(err.contains("/nonexistent.tar"), "{err}");
    let err = k.fails(&[
        "bootstrap",
        "busybox",
        "x",
        "--busybox",
        "/nonexistent/busybox",
    ]);
    assert!(err.contains("apt-get install busybox-static"), "{err}");
}

#[test]
fn push_to_a_real_registry_then_read_it_back_with_skopeo() {
    require!(
        have("docker-registry") && have("skopeo"),
        "docker-registry and skopeo are not installed (apt-get install docker-registry skopeo)"
    );
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    // A registry of our own on loopback, stopped when the test ends.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = k.path("registry.yml");
    std::fs::write(&conf, format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n", k.path("registry-data").display())).unwrap();
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _registry = Stop(
        Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the registry did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let name = format!("localhost:{port}/team/bb:v1");
    k.ok(&["tag", "bb", &name]);
    // As stored (uncompressed): the registry's manifest is the store's, digest for digest.
    let digest = k
        .ok(&["push", "--compression-format", "none", &name])
        .trim()
        .to_string();
    let info: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", &name])).unwrap();
    assert_eq!(info[0]["Digest"].as_str().unwrap(), digest);
    let seen = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{name}")),
    );
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(
        seen["Digest"].as_str().unwrap(),
        digest,
        "the registry holds another manifest"
    );
    // A second push uploads nothing.
    let out = k
        .cmd()
        .args(["push", "--compression-format", "none", &name])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("0 blobs uploaded, 2 already there"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Back through skopeo into another keel root: the same image.
    let archive = k.path("back.tar");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{name}"))
            .arg(format!("oci-archive:{}:{name}", archive.display())),
    );
    let k2 = Keel::new();
    k2.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(
        k2.ok(&["images", "-q", "--no-trunc"]),
        k.ok(&["images", "-q", "--no-trunc"])
            .lines()
            .next()
            .unwrap()
            .to_string()
            + "\n"
    );
    assert!(k.fails(&["push", "bb"]).contains("names no registry"));
}

/// A no-op rebuild re-finds every blob it would write (the config and manifest are the
/// ones already stored): it flushes nothing to disk and leaves no temp file behind.
#[test]
fn a_no_op_rebuild_flushes_nothing() {
    crate::require!(crate::common::have("strace"), "needs strace");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f"), "x").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM bb\nCOPY f /f\nLABEL a=b\n").unwrap();
    k.ok(&["build", "-t", "n", ctx.to_str().unwrap()]);
    let log = k.path("strace-noop");
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,sync_file_range",
            "-o",
        ])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_keel"))
        .arg("--root")
        .arg(k.root())
        .args(["--progress", "plain", "build", "-t", "n"])
        .arg(&ctx)
        .output()
        .unwrap();
    crate::common::assert_success(&out, "no-op rebuild");
    let calls: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains('('))
        .map(str::to_string)
        .collect();
    assert!(calls.is_empty(), "a no-op rebuild flushed: {calls:?}");
}

/// Clears the immutable attribute of `path` when dropped (so a failed test's root can
/// still be deleted).
struct Immutable(PathBuf);

impl Immutable {
    /// Sets it; `None` when the filesystem has no such attribute (chattr failed).
    fn set(path: PathBuf) -> Option<Immutable> {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Immutable(path))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// Session 8 item 2: one leftover that reclamation cannot remove (a dead keel's
/// snapshot holding an immutable file) made `keel gc` fail there, before it reclaimed
/// the rest (the next snapshot, the dead keel's temp directory) — and the start-up
/// clean-up of every later command stopped at the same place. It is a warning naming
/// the path and the fix now, and everything else is reclaimed.
#[test]
fn a_leftover_gc_cannot_remove_is_a_warning_and_the_rest_is_reclaimed() {
    require!(is_root(), "chattr +i needs root");
    require!(
        have("chattr"),
        "chattr is not installed (apt-get install e2fsprogs)"
    );
    let k = Keel::new();
    k.ok(&["images"]);
    // Owned by pid 999999999, above any pid_max: dead.
    let dead = "p999999999s1";
    let snaps = k.root().join("storage/snapshots");
    for id in ["a-stuck", "b-free"] {
        std::fs::create_dir_all(snaps.join(id).join("rootfs/etc")).unwrap();
        std::fs::write(snaps.join(id).join("owner"), dead).unwrap();
        std::fs::write(snaps.join(id).join("rootfs/etc/f"), "x").unwrap();
    }
    let temp = k.root().join(format!("storage/tmp/{dead}-unpack-x"));
    std::fs::create_dir_all(&temp).unwrap();
    // And the store's own temp files, which gc's blob sweep takes.
    let blob_temps = ["a-stuck", "b-free"].map(|n| k.root().join(format!("tmp/{dead}-blob-{n}")));
    for t in &blob_temps {
        std::fs::write(t, "partial").unwrap();
    }
    let stuck = snaps.join("a-stuck/rootfs/etc/f");
    let Some(guard) = Immutable::set(stuck.clone()) else {
        require!(false, "chattr +i does not work on the test filesystem");
        return;
    };
    let guard2 = Immutable::set(blob_temps[0].clone()).expect("chattr +i worked above");
    let out = k.cmd().arg("gc").output().unwrap();
    crate::common::assert_success(&out, "gc with one leftover it cannot remove");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: could not reclaim snapshot")
            && err.contains(&*snaps.join("a-stuck").to_string_lossy())
            && err.contains("keel gc"),
        "the warning names the snapshot and the fix: {err}"
    );
    assert!(
        err.contains("warning: removing") && err.contains(&*blob_temps[0].to_string_lossy()),
        "the warning names the store's temp file: {err}"
    );
    assert!(
        !snaps.join("b-free").exists(),
        "the other snapshot was left"
    );
    assert!(!temp.exists(), "the dead keel's temp directory was left");
    assert!(!blob_temps[1].exists(), "the other temp file was left");
    drop((guard, guard2));
    let gc = k.ok(&["gc"]);
    assert!(
        !snaps.join("a-stuck").exists() && !blob_temps[0].exists(),
        "{gc}"
    );
}

/// Session 8 item 4: `keel tag a b` resolved `a`, then `keel rmi a` and `keel gc` ran
/// before it wrote the name: gc swept a's blobs (nothing named or leased them) and the
/// tag wrote `b` pointing at them anyway — `keel fsck` found a dangling reference. The
/// tag now checks the blobs under the gc lock's shared side and refuses, saying why.
#[test]
fn tag_racing_rmi_and_gc_never_writes_a_dangling_name() {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "a"]);
    let tag = k
        .cmd()
        .args(["tag", "a", "b"])
        .env("KEEL_FAULT_DELAY", "store.tag-resolved=3000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The tag resolves `a` within moments, then waits at the delay point.
    std::thread::sleep(std::time::Duration::from_millis(700));
    k.ok(&["rmi", "a"]);
    let gc = k.ok(&["gc"]);
    assert!(gc.contains("removed 3 blobs"), "{gc}");
    let out = tag.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no longer in the store"),
        "the tag must refuse a target gc took: {err}"
    );
    fsck_clean(&k);
    k.fails(&["inspect", "b"]);
    // Without the race the same tag works.
    k.ok(&["bootstrap", "busybox", "a"]);
    k.ok(&["tag", "a", "b"]);
    fsck_clean(&k);
}
