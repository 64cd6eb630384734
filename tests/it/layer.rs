//! Layer unpacking against hostile tarballs (nothing may land outside the target), OCI
//! whiteouts in both modes, and pack → unpack round trips that are byte-reproducible.
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use keel::layer::diff::{compare_trees, Change, ChangeKind};
use keel::layer::pack::{pack, PackOptions};
use keel::layer::unpack::{unpack, UnpackOptions, Whiteouts};

use crate::common::is_root;
use crate::require;

/// One raw tar entry: name and link name are written byte for byte (no cleaning).
struct Raw<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    link: &'a [u8],
    body: &'a [u8],
}

fn raw_tar(entries: &[Raw]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        if e.name.len() > 100 {
            // A GNU long-name entry carries names that do not fit the header.
            let mut l = tar::Header::new_gnu();
            l.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
            l.set_entry_type(tar::EntryType::GNULongName);
            l.set_size(e.name.len() as u64 + 1);
            l.set_cksum();
            let mut n = e.name.to_vec();
            n.push(0);
            b.append(&l, &n[..]).unwrap();
            h.as_gnu_mut().unwrap().name[..10].copy_from_slice(b"truncated!");
        } else {
            h.as_old_mut().name[..e.name.len()].copy_from_slice(e.name);
        }
        h.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link);
        h.set_entry_type(e.kind);
        h.set_mode(0o644);
        h.set_size(e.body.len() as u64);
        h.set_cksum();
        b.append(&h, e.body).unwrap();
    }
    b.into_inner().unwrap()
}

fn file<'a>(name: &'a str, body: &'a [u8]) -> Raw<'a> {
    Raw {
        name: name.as_bytes(),
        kind: tar::EntryType::Regular,
        link: b"",
        body,
    }
}
fn link<'a>(name: &'a str, kind: tar::EntryType, to: &'a str) -> Raw<'a> {
    Raw {
        name: name.as_bytes(),
        kind,
        link: to.as_bytes(),
        body: b"",
    }
}

/// A sandbox: `target` to unpack into, and a sibling canary dir that must stay empty.
fn sandbox() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("a/b/target");
    fs::create_dir_all(&target).unwrap();
    let canary = d.path().join("a/b/canary");
    fs::create_dir_all(&canary).unwrap();
    (d, target, canary)
}

/// Every file under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .collect()
}

#[test]
fn hostile_tarballs_are_refused_without_writing_outside_the_target() {
    let huge = "x/".repeat(2100) + "f";
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "traversal",
            raw_tar(&[file("../canary/pwned", b"x")]),
            "'..'",
        ),
        (
            "nested traversal",
            raw_tar(&[file("ok/../../canary/pwned", b"x")]),
            "'..'",
        ),
        (
            "absolute path",
            raw_tar(&[file("/etc/keel-pwned", b"x")]),
            "absolute",
        ),
        (
            "symlink escape (relative)",
            raw_tar(&[
                link("evil", tar::EntryType::Symlink, "../../canary"),
                file("evil/pwned", b"x"),
            ]),
            "climbs out",
        ),
        (
            "symlink chain escape",
            raw_tar(&[
                link("a", tar::EntryType::Symlink, ".."),
                link("b", tar::EntryType::Symlink, "a/.."),
                file("b/canary/pwned", b"x"),
            ]),
            "climbs out",
        ),
        (
            "hardlink escape (relative)",
            raw_tar(&[link("hl", tar::EntryType::Link, "../canary/secret")]),
            "hardlink",
        ),
        (
            "hardlink escape (absolute)",
            raw_tar(&[link("hl", tar::EntryType::Link, "/etc/passwd")]),
            "hardlink",
        ),
        (
            "hardlink to a missing path",
            raw_tar(&[link("hl", tar::EntryType::Link, "nope")]),
            "does not exist",
        ),
        ("huge name", raw_tar(&[file(&huge, b"x")]), "bytes long"),
    ];
    for (label, bytes, want) in cases {
        let (_d, target, canary) = sandbox();
        fs::write(canary.join("secret"), "s").unwrap();
        let err = unpack(
            std::io::Cursor::new(bytes),
            &target,
            &UnpackOptions::default(),
        )
        .expect_err(label);
        assert!(err.to_string().contains(want), "{label}: {err}");
        assert_eq!(
            files_under(&canary),
            vec![canary.join("secret")],
            "{label} wrote into the canary"
        );
        assert!(!Path::new("/etc/keel-pwned").exists());
        assert_eq!(
            fs::read_to_string(canary.join("secret")).unwrap(),
            "s",
            "{label} changed a file outside"
        );
    }
}

#[test]
fn absolute_symlinks_are_followed_inside_the_target() {
    let (_d, target, canary) = sandbox();
    // `run -> /var/run` style links: writing through them lands inside the rootfs.
    let bytes = raw_tar(&[
        link("varrun", tar::EntryType::Symlink, "/srv"),
        file("varrun/x", b"inside"),
    ]);
    unpack(
        std::io::Cursor::new(bytes),
        &target,
        &UnpackOptions::default(),
    )
    .unwrap();
    assert_eq!(fs::read_to_string(target.join("srv/x")).unwrap(), "inside");
    assert!(files_under(&canary).is_empty());
}

#[test]
fn a_header_claiming_a_huge_size_fails_cleanly() {
    let (_d, target, _) = sandbox();
    let mut bytes = raw_tar(&[file("big", b"data")]);
    // Rewrite the size field to ~8 GiB (octal) and fix the checksum: the data is not there.
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&bytes[..512]);
    h.set_size(8 << 30);
    h.set_cksum();
    bytes[..512].copy_from_slice(h.as_bytes());
    assert!(unpack(
        std::io::Cursor::new(bytes),
        &target,
        &UnpackOptions::default()
    )
    .is_err());
}

#[test]
fn device_nodes_need_permission() {
    let (_d, target, _) = sandbox();
    let bytes = raw_tar(&[Raw {
        name: b"dev/null",
        kind: tar::EntryType::Char,
        link: b"",
        body: b"",
    }]);
    let opts = UnpackOptions {
        allow_devices: false,
        ..UnpackOptions::default()
    };
    let err = unpack(std::io::Cursor::new(bytes), &target, &opts).unwrap_err();
    assert!(err.to_string().contains("device nodes"), "{err}");
}

#[test]
fn whiteouts_apply_when_stacking_and_become_overlay_whiteouts_per_layer() {
    require!(
        is_root(),
        "overlay whiteouts are device nodes and trusted xattrs"
    );
    let (_d, target, _) = sandbox();
    let lower = raw_tar(&[
        file("keep", b"k"),
        file("gone", b"g"),
        file("dir/old1", b"1"),
        file("dir/old2", b"2"),
    ]);
    unpack(
        std::io::Cursor::new(lower),
        &target,
        &UnpackOptions::default(),
    )
    .unwrap();
    let upper = raw_tar(&[
        file(".wh.gone", b""),
        Raw {
            name: b"dir/",
            kind: tar::EntryType::Directory,
            link: b"",
            body: b"",
        },
        file("dir/.wh..wh..opq", b""),
        file("dir/new", b"n"),
    ]);
    unpack(
        std::io::Cursor::new(upper.clone()),
        &target,
        &UnpackOptions::default(),
    )
    .unwrap();
    assert!(target.join("keep").exists());
    assert!(!target.join("gone").exists());
    assert!(!target.join("dir/old1").exists() && !target.join("dir/old2").exists());
    assert_eq!(fs::read_to_string(target.join("dir/new")).unwrap(), "n");
    assert!(!target.join(".wh.gone").exists());
    // Overlay mode: the same layer alone, whiteouts kept in overlayfs' own form.
    let (_d2, solo, _) = sandbox();
    let opts = UnpackOptions {
        whiteouts: Whiteouts::Overlay,
        ..UnpackOptions::default()
    };
    unpack(std::io::Cursor::new(upper), &solo, &opts).unwrap();
    let m = fs::symlink_metadata(solo.join("gone")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(m.file_type().is_char_device() && m.rdev() == 0);
    assert_eq!(
        keel::sys::fs::get_xattr(&solo.join("dir"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
}

fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/app")).unwrap();
    fs::write(root.join("etc/app/conf"), "a=1\n").unwrap();
    fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("etc/app/conf", root.join("link")).unwrap();
    fs::hard_link(root.join("run.sh"), root.join("hard.sh")).unwrap();
    if is_root() {
        std::os::unix::fs::lchown(root.join("etc/app/conf"), Some(1000), Some(1001)).unwrap();
    }
}

fn all_added(root: &Path) -> Vec<Change> {
    files_under(root)
        .into_iter()
        .map(|p| Change {
            path: p.strip_prefix(root).unwrap().to_path_buf(),
            kind: ChangeKind::Added,
        })
        .collect()
}

#[test]
fn packing_is_reproducible_and_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    sample_tree(&a);
    sample_tree(&b);
    // Different mtimes on the second copy must not change the layer.
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    fs::File::options()
        .write(true)
        .open(b.join("etc/app/conf"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let opts = PackOptions { epoch: Some(0) };
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    pack(&all_added(&a), &a, &mut ta, &opts).unwrap();
    pack(&all_added(&b), &b, &mut tb, &opts).unwrap();
    assert_eq!(
        keel::digest::of_bytes(&ta),
        keel::digest::of_bytes(&tb),
        "same tree, different mtimes, different layers"
    );
    let out = d.path().join("out");
    unpack(std::io::Cursor::new(ta), &out, &UnpackOptions::default()).unwrap();
    assert!(
        compare_trees(&a, &out)
            .unwrap()
            .iter()
            .all(|c| c.kind == ChangeKind::Modified),
        "paths differ after a round trip"
    );
    for p in ["etc/app/conf", "run.sh", "link"] {
        let (x, y) = (
            fs::symlink_metadata(a.join(p)).unwrap(),
            fs::symlink_metadata(out.join(p)).unwrap(),
        );
        assert_eq!(
            (x.mode(), x.uid(), x.gid()),
            (y.mode(), y.uid(), y.gid()),
            "{p}"
        );
    }
    assert_eq!(
        fs::read_link(out.join("link")).unwrap(),
        Path::new("etc/app/conf")
    );
    assert_eq!(
        fs::metadata(out.join("hard.sh")).unwrap().ino(),
        fs::metadata(out.join("run.sh")).unwrap().ino(),
        "hardlink lost"
    );
    assert_eq!(
        fs::metadata(out.join("run.sh")).unwrap().mtime(),
        0,
        "mtime not clamped to the epoch"
    );
}

#[test]
fn tree_comparison_finds_added_modified_and_deleted_paths() {
    let d = tempfile::tempdir().unwrap();
    let (lower, upper) = (d.path().join("l"), d.path().join("u"));
    sample_tree(&lower);
    std::process::Command::new("cp")
        .arg("-a")
        .arg(&lower)
        .arg(&upper)
        .status()
        .unwrap();
    fs::write(upper.join("etc/app/conf"), "a=2\n").unwrap();
    fs::remove_dir_all(upper.join("etc/app")).unwrap();
    fs::write(upper.join("new"), "n").unwrap();
    fs::set_permissions(upper.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let changes = compare_trees(&lower, &upper).unwrap();
    let by: Vec<(String, ChangeKind)> = changes
        .iter()
        .map(|c| (c.path.display().to_string(), c.kind))
        .collect();
    assert!(by.contains(&("new".into(), ChangeKind::Added)), "{by:?}");
    assert!(
        by.contains(&("etc/app".into(), ChangeKind::Deleted)),
        "{by:?}"
    );
    assert!(
        !by.iter().any(|(p, _)| p == "etc/app/conf"),
        "only the topmost deleted path needs a whiteout: {by:?}"
    );
    assert!(
        by.contains(&("run.sh".into(), ChangeKind::Modified)),
        "{by:?}"
    );
}

fn mountinfo() -> String {
    fs::read_to_string("/proc/self/mountinfo").unwrap()
}

#[test]
fn both_storage_drivers_stack_layers_report_changes_and_clean_up() {
    require!(is_root(), "snapshots mount and chown as root");
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let mut layers = Vec::new();
    for (i, t) in [
        raw_tar(&[
            file("a", b"1"),
            file("b", b"2"),
            file("d/x", b"x"),
            file("d/y", b"y"),
        ]),
        raw_tar(&[
            file(".wh.b", b""),
            file("c", b"3"),
            Raw {
                name: b"d/",
                kind: tar::EntryType::Directory,
                link: b"",
                body: b"",
            },
            file("d/.wh..wh..opq", b""),
            file("d/z", b"z"),
        ]),
    ]
    .into_iter()
    .enumerate()
    {
        let p = d.path().join(format!("layer{i}.tar"));
        fs::write(&p, &t).unwrap();
        layers.push(keel::storage::LayerBlob {
            diff_id: keel::digest::of_bytes(&t),
            blob: p,
        });
    }
    for driver in ["overlay", "copy"] {
        let s = keel::storage::open(Some(driver), &root).unwrap();
        let snap = s.prepare(&format!("t-{driver}"), &layers).unwrap();
        let r = &snap.rootfs;
        assert_eq!(fs::read_to_string(r.join("a")).unwrap(), "1", "{driver}");
        assert!(!r.join("b").exists(), "{driver}: whiteout not honoured");
        assert!(
            !r.join("d/x").exists() && r.join("d/z").exists(),
            "{driver}: opaque dir not honoured"
        );
        fs::write(r.join("new"), "n").unwrap();
        fs::remove_file(r.join("a")).unwrap();
        let changes = s.changes(&snap).unwrap();
        let by: Vec<(String, ChangeKind)> = changes
            .iter()
            .map(|c| (c.path.display().to_string(), c.kind))
            .collect();
        assert!(
            by.contains(&("new".into(), ChangeKind::Added))
                || by.contains(&("new".into(), ChangeKind::Modified)),
            "{driver}: {by:?}"
        );
        assert!(
            by.contains(&("a".into(), ChangeKind::Deleted)),
            "{driver}: {by:?}"
        );
        assert_eq!(by.len(), 2, "{driver}: unexpected changes {by:?}");
        // A second snapshot reuses the unpacked layers.
        let again = s.prepare(&format!("t2-{driver}"), &layers).unwrap();
        assert!(
            again.rootfs.join("a").exists(),
            "{driver}: snapshots share state"
        );
        s.remove(&snap).unwrap();
        s.remove(&again).unwrap();
        assert!(!snap.dir.exists() && !again.dir.exists());
        assert!(
            !mountinfo().contains(root.to_str().unwrap()),
            "{driver}: a mount is left"
        );
    }
    let cached: Vec<_> = fs::read_dir(root.join("storage/layers")).unwrap().collect();
    assert_eq!(cached.len(), 2, "each layer is unpacked once for overlay");
    assert!(keel::storage::open(Some("zfs"), &root)
        .err()
        .unwrap()
        .to_string()
        .contains("unknown storage driver"));
}
