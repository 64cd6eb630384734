//! Integration tests: layer. Hostile tarballs crafted byte by byte, whiteouts in both
//! modes, reproducible packing and the storage drivers, all through the library.
use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use keel::layer::unpack::{unpack, UnpackOptions, UnpackStats, Whiteouts};
use keel::layer::LayerError;
use tar::{EntryType, Header};

// ---------- crafting tarballs by hand ----------

/// One raw entry: a GNU header with `name`/`link` written straight into the header
/// bytes (no validation, unlike `set_path`), followed by `data` padded to 512.
pub(crate) fn raw(name: &[u8], kind: EntryType, link: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_000_000);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    pad(&mut out);
    out
}

fn pad(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(512) {
        v.push(0);
    }
}

pub(crate) fn file(name: &str, data: &str) -> Vec<u8> {
    raw(name.as_bytes(), EntryType::Regular, b"", data.as_bytes())
}
pub(crate) fn dir(name: &str) -> Vec<u8> {
    raw(name.as_bytes(), EntryType::Directory, b"", b"")
}
pub(crate) fn symlink(name: &str, target: &str) -> Vec<u8> {
    raw(name.as_bytes(), EntryType::Symlink, target.as_bytes(), b"")
}
pub(crate) fn hardlink(name: &str, target: &str) -> Vec<u8> {
    raw(name.as_bytes(), EntryType::Link, target.as_bytes(), b"")
}

/// A GNU long-name entry (`././@LongLink`, type L) carrying `name`, then `next`.
fn gnu_long_name(name: &[u8], next: Vec<u8>) -> Vec<u8> {
    let mut data = name.to_vec();
    data.push(0);
    let mut out = raw(b"././@LongLink", EntryType::GNULongName, b"", &data);
    out.extend(next);
    out
}

/// A PAX extended header setting `path`, then `next`.
fn pax_path(path: &[u8], next: Vec<u8>) -> Vec<u8> {
    pax("path", path, next)
}

/// A PAX extended header with one record `key=value`, then `next`.
pub(crate) fn pax(key: &str, value: &[u8], next: Vec<u8>) -> Vec<u8> {
    let path = value;
    let body_len = 3 + key.len() + path.len();
    // The record length counts its own digits.
    let mut len = body_len + 1;
    while len != body_len + len.to_string().len() {
        len = body_len + len.to_string().len();
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(path);
    rec.push(b'\n');
    let mut out = raw(b"PaxHeaders/x", EntryType::XHeader, b"", &rec);
    out.extend(next);
    out
}

pub(crate) fn tarball(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A temp dir holding `target/` (where layers go) and `canary/` (which must never
/// change), so any write outside the target is visible.
struct Scene {
    tmp: tempfile::TempDir,
    passwd_links: u64,
}

impl Scene {
    fn new() -> Scene {
        let tmp = tempfile::Builder::new()
            .prefix("keel-layer-")
            .tempdir()
            .unwrap();
        fs::create_dir(tmp.path().join("target")).unwrap();
        fs::create_dir(tmp.path().join("canary")).unwrap();
        fs::write(tmp.path().join("canary/secret"), "secret").unwrap();
        fs::set_permissions(
            tmp.path().join("canary/secret"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let passwd_links = fs::symlink_metadata("/etc/passwd").unwrap().nlink();
        keel::sys::fs::set_times_nofollow(&tmp.path().join("canary"), 42, 0).unwrap();
        Scene { tmp, passwd_links }
    }
    fn target(&self) -> PathBuf {
        self.tmp.path().join("target")
    }
    fn canary(&self) -> PathBuf {
        self.tmp.path().join("canary")
    }
    fn unpack(&self, tar: Vec<u8>) -> Result<UnpackStats, LayerError> {
        unpack(Cursor::new(tar), &self.target(), &UnpackOptions::default())
    }
    /// Asserts nothing outside `target/` changed.
    fn assert_contained(&self) {
        let mut names: Vec<_> = fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["canary", "target"],
            "something was written next to the target"
        );
        let canary: Vec<_> = fs::read_dir(self.canary())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(canary, ["secret"], "the canary directory changed");
        assert_eq!(
            fs::symlink_metadata(self.canary()).unwrap().mtime(),
            42,
            "the canary directory's mtime changed"
        );
        let m = fs::symlink_metadata(self.canary().join("secret")).unwrap();
        assert!(
            m.is_file() && m.nlink() == 1 && m.mode() & 0o7777 == 0o600,
            "the canary file's metadata changed: {m:?}"
        );
        assert_eq!(
            fs::read_to_string(self.canary().join("secret")).unwrap(),
            "secret"
        );
        // /etc/passwd must keep its single link, whatever a hostile hardlink tried.
        assert_eq!(
            fs::symlink_metadata("/etc/passwd").unwrap().nlink(),
            self.passwd_links
        );
    }
}

/// Asserts the error is a refusal naming `entry` and mentioning `why`.
fn refused(res: Result<UnpackStats, LayerError>, entry: &str, why: &str) {
    let err = res.expect_err("hostile layer was accepted").to_string();
    assert!(
        err.contains(entry),
        "error does not name the entry {entry:?}: {err}"
    );
    assert!(err.contains(why), "error does not say {why:?}: {err}");
}

// ---------- hostile tarballs ----------

#[test]
fn traversal_entries_are_refused() {
    for name in [
        "../x",
        "a/../../x",
        "./../canary/secret",
        "a/../../canary/secret",
    ] {
        let s = Scene::new();
        refused(s.unpack(tarball(&[file(name, "pwned")])), name, "'..'");
        s.assert_contained();
    }
}

#[test]
fn absolute_entries_are_refused() {
    let s = Scene::new();
    let name = format!("{}/pwned", s.canary().display());
    refused(
        s.unpack(tarball(&[file(&name, "pwned")])),
        &name,
        "absolute",
    );
    s.assert_contained();
}

#[test]
fn absolute_symlink_parents_are_rerooted_inside_the_target() {
    let s = Scene::new();
    let canary = s.canary().display().to_string();
    let tar = tarball(&[
        symlink("evil", "/"),
        file("evil/etc/pwned", "x"),
        symlink("can", &canary),
        file("can/pwned", "x"),
    ]);
    s.unpack(tar).unwrap();
    assert_eq!(
        fs::read_to_string(s.target().join("etc/pwned")).unwrap(),
        "x"
    );
    assert!(
        s.target()
            .join(canary.trim_start_matches('/'))
            .join("pwned")
            .is_file(),
        "the absolute link was re-rooted at the target"
    );
    s.assert_contained();
}

/// `..` in a symlink is clamped at the target's root (as openat2 RESOLVE_IN_ROOT does):
/// the entry lands inside the target, never next to it.
#[test]
fn relative_symlink_escapes_are_clamped_at_the_root() {
    for link in ["../../..", "..", "a/../../.."] {
        let s = Scene::new();
        s.unpack(tarball(&[
            symlink("evil", link),
            file("evil/canary/pwned", "x"),
        ]))
        .unwrap_or_else(|e| panic!("{link}: {e}"));
        assert_eq!(
            fs::read_to_string(s.target().join("canary/pwned")).unwrap(),
            "x",
            "{link}"
        );
        s.assert_contained();
    }
    // A chain: a symlink whose target is another in-root symlink that climbs.
    let s = Scene::new();
    let tar = tarball(&[
        dir("d/"),
        symlink("d/up", "../.."),
        symlink("hop", "d/up"),
        file("hop/canary/secret", "x"),
    ]);
    s.unpack(tar).unwrap();
    assert!(s.target().join("canary/secret").is_file());
    s.assert_contained();
}

#[test]
fn final_component_symlinks_are_replaced_not_followed() {
    let s = Scene::new();
    let secret = s.canary().join("secret").display().to_string();
    let canary = s.canary().display().to_string();
    let tar = tarball(&[
        symlink("f", &secret),
        file("f", "replaced"),
        symlink("d", &canary),
        dir("d/"),
        file("d/new", "x"),
        symlink("l", &secret),
        symlink("l", "elsewhere"),
    ]);
    s.unpack(tar).unwrap();
    assert_eq!(
        fs::read_to_string(s.target().join("f")).unwrap(),
        "replaced"
    );
    assert!(fs::symlink_metadata(s.target().join("d")).unwrap().is_dir());
    assert_eq!(
        fs::read_link(s.target().join("l")).unwrap(),
        Path::new("elsewhere")
    );
    s.assert_contained();
}

#[test]
fn hardlink_escapes_are_refused() {
    let cases: &[(&[Vec<u8>], &str, &str)] = &[
        (&[hardlink("link", "../../etc/passwd")], "link", "'..'"),
        (&[hardlink("link", "/etc/passwd")], "link", "absolute"),
        (&[hardlink("link", "../canary/secret")], "link", "'..'"),
        // `..` is clamped at the target's root (RESOLVE_IN_ROOT), so this names the
        // target's own (missing) canary/secret.
        (
            &[symlink("up", "../.."), hardlink("link", "up/canary/secret")],
            "link",
            "does not exist",
        ),
        (
            &[symlink("root", "/"), hardlink("link", "root/etc/passwd")],
            "link",
            "does not exist",
        ),
        (&[hardlink("link", "missing")], "link", "does not exist"),
        (&[dir("d/"), hardlink("link", "d")], "link", "directory"),
    ];
    for (entries, entry, why) in cases {
        let s = Scene::new();
        refused(s.unpack(tarball(entries)), entry, why);
        s.assert_contained();
    }
}

#[test]
fn hardlinks_inside_the_layer_share_an_inode() {
    let s = Scene::new();
    s.unpack(tarball(&[
        file("a", "data"),
        dir("d/"),
        hardlink("d/b", "a"),
        hardlink("c", "./d/b"),
    ]))
    .unwrap();
    let ino = |p: &str| fs::metadata(s.target().join(p)).unwrap().ino();
    assert_eq!(ino("a"), ino("d/b"));
    assert_eq!(ino("a"), ino("c"));
    s.assert_contained();
}

#[test]
fn huge_headers_are_refused() {
    let long = vec![b'a'; 5000];
    let s = Scene::new();
    refused(
        s.unpack(tarball(&[gnu_long_name(&long, file("short", "x"))])),
        "first header",
        "long name header of 5001 bytes",
    );
    s.assert_contained();

    let s = Scene::new();
    refused(
        s.unpack(tarball(&[pax_path(&long, file("short", "x"))])),
        "aaaa",
        "5000 bytes",
    );
    s.assert_contained();

    // A long name under the limit is fine, through either extension.
    let s = Scene::new();
    let ok = format!("{}/{}", "d".repeat(200), "f".repeat(200));
    s.unpack(tarball(&[gnu_long_name(ok.as_bytes(), file("x", "1"))]))
        .unwrap();
    assert!(s.target().join(&ok).is_file());

    // A header claiming far more data than the stream has (1 TiB).
    let s = Scene::new();
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..3].copy_from_slice(b"big");
    h.set_entry_type(EntryType::Regular);
    h.set_size(1 << 40);
    h.set_mode(0o644);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[7u8; 4096]);
    refused(s.unpack(tar), "big", "truncated");
    s.assert_contained();

    // A GNU long-name entry claiming an enormous name size.
    let s = Scene::new();
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(EntryType::GNULongName);
    h.set_size(1 << 40);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[b'a'; 4096]);
    refused(
        s.unpack(tar),
        "first header",
        "long name header of 1099511627776 bytes",
    );
    s.assert_contained();

    // The same as a gzip bomb: 64 MiB of name compresses to almost nothing, and is
    // refused from its header without being buffered.
    let s = Scene::new();
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(EntryType::GNULongName);
    h.set_size(64 << 20);
    h.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, h.as_bytes()).unwrap();
    let name = vec![b'a'; 1 << 20];
    for _ in 0..64 {
        std::io::Write::write_all(&mut gz, &name).unwrap();
    }
    refused(
        s.unpack(gz.finish().unwrap()),
        "first header",
        "long name header",
    );
    s.assert_contained();
}

#[test]
fn device_nodes_need_permission() {
    for (kind, why) in [
        (EntryType::Char, "device node"),
        (EntryType::Block, "device node"),
        (EntryType::Fifo, "fifo"),
    ] {
        let s = Scene::new();
        refused(
            s.unpack(tarball(&[raw(b"dev/node", kind, b"", b"")])),
            "dev/node",
            why,
        );
        s.assert_contained();
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP device creation: needs root");
        return;
    }
    let s = Scene::new();
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..4].copy_from_slice(b"null");
    h.set_entry_type(EntryType::Char);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_mode(0o666);
    h.set_size(0);
    h.set_cksum();
    let tar = tarball(&[h.as_bytes().to_vec()]);
    let opts = UnpackOptions {
        allow_devices: true,
        ..UnpackOptions::default()
    };
    unpack(Cursor::new(tar), &s.target(), &opts).unwrap();
    let m = fs::symlink_metadata(s.target().join("null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), nix::sys::stat::makedev(1, 3));
}

// ---------- metadata ----------

#[test]
fn owners_modes_and_mtimes_are_applied() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root for owners");
        return;
    }
    let s = Scene::new();
    let mut entries = Vec::new();
    for (name, kind, mode, uid) in [
        ("d/", EntryType::Directory, 0o1777, 7),
        ("d/suid", EntryType::Regular, 0o4755, 1000),
        ("d/link", EntryType::Symlink, 0o777, 33),
    ] {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if kind == EntryType::Symlink {
            h.as_old_mut().linkname[..4].copy_from_slice(b"suid");
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid + 1);
        h.set_mtime(123_456_789);
        h.set_size(0);
        h.set_cksum();
        entries.push(h.as_bytes().to_vec());
    }
    s.unpack(tarball(&entries)).unwrap();
    let m = |p: &str| fs::symlink_metadata(s.target().join(p)).unwrap();
    assert_eq!(
        (
            m("d").mode() & 0o7777,
            m("d").uid(),
            m("d").gid(),
            m("d").mtime()
        ),
        (0o1777, 7, 8, 123_456_789)
    );
    assert_eq!(
        (
            m("d/suid").mode() & 0o7777,
            m("d/suid").uid(),
            m("d/suid").gid()
        ),
        (0o4755, 1000, 1001)
    );
    assert_eq!((m("d/link").uid(), m("d/link").mtime()), (33, 123_456_789));
}

// ---------- whiteouts ----------

fn lower_layer() -> Vec<u8> {
    tarball(&[
        dir("a/"),
        file("a/keep", "k"),
        file("a/gone", "g"),
        dir("a/gonedir/"),
        file("a/gonedir/f", "f"),
        dir("b/"),
        file("b/x", "x"),
        dir("b/y/"),
        file("b/y/z", "z"),
    ])
}

fn upper_layer() -> Vec<u8> {
    // The opaque marker comes after an entry of the same layer, which must survive.
    tarball(&[
        dir("a/"),
        file("a/.wh.gone", ""),
        file("a/.wh.gonedir", ""),
        dir("b/"),
        file("b/new", "n"),
        file("b/.wh..wh..opq", ""),
        dir("b/y/"),
        file("b/y/new2", "n2"),
    ])
}

pub(crate) fn tree(root: &Path) -> BTreeMap<String, String> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let ft = e.file_type();
            let v = if ft.is_dir() {
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("-> {}", fs::read_link(e.path()).unwrap().display())
            } else if ft.is_file() {
                fs::read_to_string(e.path()).unwrap()
            } else {
                "special".to_string()
            };
            (rel, v)
        })
        .collect()
}

fn expected_merged() -> BTreeMap<String, String> {
    [
        ("a", "dir"),
        ("a/keep", "k"),
        ("b", "dir"),
        ("b/new", "n"),
        ("b/y", "dir"),
        ("b/y/new2", "n2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn whiteouts_apply_to_lower_layers() {
    let s = Scene::new();
    s.unpack(lower_layer()).unwrap();
    let stats = s.unpack(upper_layer()).unwrap();
    assert_eq!(stats.whiteouts, 3);
    // Whiteouts under directories nobody has delete nothing and create nothing; one
    // reached through an escaping symlink is clamped at the root: it deletes nothing.
    s.unpack(tarball(&[
        file("nowhere/deep/.wh.x", ""),
        file("nowhere/.wh..wh..opq", ""),
    ]))
    .unwrap();
    s.unpack(tarball(&[
        symlink("up", "../.."),
        file("up/canary/.wh.secret", ""),
    ]))
    .unwrap();
    fs::remove_file(s.target().join("up")).unwrap();
    assert_eq!(tree(&s.target()), expected_merged());
    s.assert_contained();
}

#[test]
fn whiteouts_become_overlay_markers() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: overlay whiteouts need CAP_MKNOD and trusted xattrs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["l1", "l2", "up", "work", "merged"]
        .iter()
        .map(|d| tmp.path().join(d))
        .collect();
    for d in &dirs {
        fs::create_dir(d).unwrap();
    }
    let opts = UnpackOptions {
        whiteouts: Whiteouts::Overlay,
        ..UnpackOptions::default()
    };
    unpack(Cursor::new(lower_layer()), &dirs[0], &opts).unwrap();
    unpack(Cursor::new(upper_layer()), &dirs[1], &opts).unwrap();
    let wh = fs::symlink_metadata(dirs[1].join("a/gone")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "a/gone is a 0:0 char device"
    );
    assert_eq!(
        xattr::get(dirs[1].join("b"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert!(!dirs[1].join("b/.wh..wh..opq").exists());
    // The kernel agrees: the merged view equals the applied stack.
    keel::sys::fs::mount_overlay(
        &[dirs[1].clone(), dirs[0].clone()],
        &dirs[2],
        &dirs[3],
        &dirs[4],
        false,
    )
    .unwrap();
    let merged = tree(&dirs[4]);
    keel::sys::fs::unmount(&dirs[4]).unwrap();
    assert_eq!(merged, expected_merged());
}

#[test]
fn gzip_layers_are_read() {
    use std::io::Write;
    let s = Scene::new();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&lower_layer()).unwrap();
    s.unpack(gz.finish().unwrap()).unwrap();
    assert_eq!(fs::read_to_string(s.target().join("b/y/z")).unwrap(), "z");
}

// ---------- diff and pack ----------

use keel::layer::diff::{diff_trees, Change, ChangeKind};
use keel::layer::pack::{pack, PackOptions};

/// A tree exercising every entry kind packing keeps; `mtime` varies between calls.
fn sample_tree(root: &Path, mtime: i64) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::write(root.join("usr/bin/tool"), "#!/bin/sh\necho hi\n").unwrap();
    fs::write(root.join("usr/bin/suid"), "s").unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-alias")).unwrap();
    std::os::unix::fs::symlink("bin/tool", root.join("usr/tool")).unwrap();
    fs::write(root.join("long-".repeat(40)), "long name").unwrap();
    fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(root.join("usr/bin/suid"), Some(1000), Some(50)).unwrap();
        xattr::set(
            root.join("usr/bin/tool"),
            "security.capability",
            &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        )
        .unwrap();
    }
    fs::set_permissions(
        root.join("usr/bin/suid"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    for e in walkdir::WalkDir::new(root).contents_first(true) {
        let e = e.unwrap();
        keel::sys::fs::set_times_nofollow(e.path(), mtime, 0).unwrap();
    }
}

fn all_added(root: &Path) -> Vec<Change> {
    let empty = tempfile::tempdir().unwrap();
    let changes = diff_trees(empty.path(), root).unwrap();
    assert!(changes.iter().all(|c| c.kind == ChangeKind::Added));
    changes
}

fn pack_vec(changes: &[Change], root: &Path, opts: &PackOptions) -> Vec<u8> {
    let mut out = Vec::new();
    pack(changes, root, &mut out, opts).unwrap();
    out
}

#[test]
fn packing_is_reproducible_across_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    sample_tree(&a, 1_000);
    sample_tree(&b, 2_000_000_000);
    // Host noise: a user xattr only one checkout has.
    xattr::set(
        a.join("usr/bin/tool"),
        "user.xdg.origin.url",
        b"https://example.com",
    )
    .unwrap();
    let opts = PackOptions {
        epoch: Some(1_700_000_000),
        ..PackOptions::default()
    };
    let (ta, tb) = (
        pack_vec(&all_added(&a), &a, &opts),
        pack_vec(&all_added(&b), &b, &opts),
    );
    assert!(
        ta == tb,
        "the same tree with different mtimes packed to different bytes"
    );
    let users = PackOptions {
        user_xattrs: true,
        ..opts.clone()
    };
    assert!(pack_vec(&all_added(&a), &a, &users) != pack_vec(&all_added(&b), &b, &users));
    // Keeping timestamps makes them differ, and entries come sorted, parents first.
    let keep = PackOptions {
        epoch: None,
        ..opts
    };
    assert!(pack_vec(&all_added(&a), &a, &keep) != pack_vec(&all_added(&b), &b, &keep));
    let mut ar = tar::Archive::new(Cursor::new(ta));
    let names: Vec<PathBuf> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().into_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(
        names.iter().position(|n| n == Path::new("usr")).unwrap()
            < names
                .iter()
                .position(|n| n == Path::new("usr/bin"))
                .unwrap()
    );
    let mut ar = tar::Archive::new(Cursor::new(pack_vec(&all_added(&a), &a, &opts)));
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(h.mtime().unwrap(), 1_700_000_000);
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
    }
}

/// Paths with type, mode, owner, content or link target, and xattr of a tree.
pub(crate) fn full_tree(root: &Path) -> BTreeMap<String, String> {
    tree(root)
        .into_iter()
        .map(|(k, v)| {
            let m = fs::symlink_metadata(root.join(&k)).unwrap();
            let cap = xattr::get(root.join(&k), "security.capability")
                .ok()
                .flatten();
            let mode = if m.file_type().is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            };
            (
                k,
                format!(
                    "{v} mode={mode:o} owner={}:{} cap={cap:?}",
                    m.uid(),
                    m.gid()
                ),
            )
        })
        .collect()
}

#[test]
fn pack_then_unpack_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    sample_tree(&src, 5);
    fs::create_dir(&dst).unwrap();
    let tar = pack_vec(&all_added(&src), &src, &PackOptions::default());
    unpack(Cursor::new(tar), &dst, &UnpackOptions::default()).unwrap();
    assert_eq!(full_tree(&dst), full_tree(&src));
    let ino = |p: &Path| {
        fs::metadata(p.join("usr/bin/tool")).unwrap().ino()
            == fs::metadata(p.join("usr/bin/tool-alias")).unwrap().ino()
    };
    assert!(ino(&dst), "the hardlink survived the round trip");
}

#[test]
fn changesets_pack_into_layers_that_replay_the_change() {
    let tmp = tempfile::tempdir().unwrap();
    let (lower, upper, replay) = (
        tmp.path().join("lower"),
        tmp.path().join("upper"),
        tmp.path().join("replay"),
    );
    for d in [&lower, &upper, &replay] {
        sample_tree(d, 5);
    }
    fs::remove_file(upper.join("usr/tool")).unwrap();
    fs::remove_dir_all(upper.join("tmp")).unwrap();
    fs::write(upper.join("usr/bin/suid"), "changed").unwrap();
    fs::create_dir(upper.join("etc")).unwrap();
    fs::write(upper.join("etc/new"), "new").unwrap();
    let changes = diff_trees(&lower, &upper).unwrap();
    let kinds: Vec<(String, ChangeKind)> = changes
        .iter()
        .map(|c| (c.path.display().to_string(), c.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("etc".to_string(), ChangeKind::Added),
            ("etc/new".to_string(), ChangeKind::Added),
            ("tmp".to_string(), ChangeKind::Deleted),
            ("usr/bin/suid".to_string(), ChangeKind::Modified),
            ("usr/tool".to_string(), ChangeKind::Deleted),
        ]
    );
    let tar = pack_vec(&changes, &upper, &PackOptions::default());
    let stats = unpack(Cursor::new(tar), &replay, &UnpackOptions::default()).unwrap();
    assert_eq!(stats.whiteouts, 2);
    assert_eq!(full_tree(&replay), full_tree(&upper));
}

// ---------- storage drivers ----------

use keel::storage::{self, LayerBlob};

/// Three layers: a base, one deleting a file (gzip blob), one making `b/` opaque.
pub(crate) fn three_layers(at: &Path) -> Vec<LayerBlob> {
    use std::io::Write;
    let tars = [
        tarball(&[
            dir("a/"),
            file("a/keep", "k"),
            file("a/gone", "g"),
            dir("b/"),
            file("b/x", "x"),
            dir("c/"),
            file("c/file", "c1"),
            symlink("link", "a/keep"),
        ]),
        tarball(&[dir("a/"), file("a/.wh.gone", ""), file("c/file", "c2")]),
        tarball(&[dir("b/"), file("b/.wh..wh..opq", ""), file("b/new", "n")]),
    ];
    tars.iter()
        .enumerate()
        .map(|(i, t)| {
            let diff_id = keel::digest::of_bytes(t);
            let blob = at.join(format!("layer{i}"));
            if i == 1 {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(t).unwrap();
                fs::write(&blob, gz.finish().unwrap()).unwrap();
            } else {
                fs::write(&blob, t).unwrap();
            }
            LayerBlob { diff_id, blob }
        })
        .collect()
}

pub(crate) fn merged_three() -> BTreeMap<String, String> {
    [
        ("a", "dir"),
        ("a/keep", "k"),
        ("b", "dir"),
        ("b/new", "n"),
        ("c", "dir"),
        ("c/file", "c2"),
        ("link", "-> a/keep"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn mounted(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.display().to_string();
    info.lines().any(|l| l.contains(&p))
}

fn snapshot_lifecycle(kind: &str) {
    snapshot_lifecycle_in(kind, &std::env::temp_dir());
}

/// The snapshot lifecycle of driver `kind`, with its root in a temp dir below `base`
/// (the btrfs tests pass a loop-mounted btrfs).
pub(crate) fn snapshot_lifecycle_in(kind: &str, base: &Path) {
    let tmp = tempfile::Builder::new()
        .prefix("keel-storage-")
        .tempdir_in(base)
        .unwrap();
    let root = tmp.path().join("root");
    let layers = three_layers(tmp.path());
    let drv = storage::open(Some(kind), &root).unwrap();
    assert_eq!(drv.name(), kind);

    let snap = drv.prepare("s1", &layers).unwrap();
    assert_eq!(snap.unpacked, 3);
    assert_eq!(
        tree(&snap.rootfs),
        merged_three(),
        "{kind}: the merged tree honours whiteouts"
    );
    assert_eq!(drv.get("s1").unwrap().rootfs, snap.rootfs);
    assert!(matches!(
        drv.prepare("s1", &layers),
        Err(storage::StorageError::Exists(_))
    ));

    // Change the writable top: add, modify, delete, and re-create a directory.
    let r = &snap.rootfs;
    fs::write(r.join("new.txt"), "hello").unwrap();
    fs::remove_file(r.join("a/keep")).unwrap();
    fs::write(r.join("c/file"), "c3").unwrap();
    fs::remove_dir_all(r.join("b")).unwrap();
    fs::create_dir(r.join("b")).unwrap();
    fs::write(r.join("b/again"), "again").unwrap();
    let changes = drv.changes(&snap).unwrap();
    let has = |p: &str, k: ChangeKind| {
        changes
            .iter()
            .any(|c| c.path == Path::new(p) && c.kind == k)
    };
    assert!(has("new.txt", ChangeKind::Added), "{kind}: {changes:?}");
    assert!(has("a/keep", ChangeKind::Deleted), "{kind}: {changes:?}");
    assert!(has("c/file", ChangeKind::Modified), "{kind}: {changes:?}");
    assert!(
        has("b/new", ChangeKind::Deleted) && has("b/again", ChangeKind::Added),
        "{kind}: {changes:?}"
    );
    assert!(
        !changes
            .iter()
            .any(|c| c.path == Path::new("link") || c.path == Path::new("b/x")),
        "{kind}: unchanged or lower-hidden paths are not changes: {changes:?}"
    );

    // The changeset, packed as a layer on top of the three, reproduces the rootfs.
    let replay = tmp.path().join("replay");
    fs::create_dir(&replay).unwrap();
    for l in &layers {
        keel::layer::unpack::unpack_file(&l.blob, &replay, &UnpackOptions::default()).unwrap();
    }
    let mut layer4 = Vec::new();
    pack(&changes, r, &mut layer4, &PackOptions::default()).unwrap();
    unpack(Cursor::new(layer4), &replay, &UnpackOptions::default()).unwrap();
    assert_eq!(
        full_tree(&replay),
        full_tree(r),
        "{kind}: committed changeset replays the snapshot"
    );

    // A second snapshot of the same layers comes from the cache.
    let cache = if kind == "overlay" {
        root.join("storage/layers")
            .join(keel::digest::hex_of(&layers[0].diff_id))
    } else {
        let chains = storage::copy::chain_ids(&layers);
        let sub = if kind == "btrfs" {
            "subvolumes"
        } else {
            "chains"
        };
        root.join("storage")
            .join(sub)
            .join(keel::digest::hex_of(&chains[2]))
    };
    let before = fs::metadata(&cache).unwrap().ino();
    let snap2 = drv.prepare("s2", &layers).unwrap();
    assert_eq!(snap2.unpacked, 0, "{kind}: nothing re-extracted");
    assert_eq!(fs::metadata(&cache).unwrap().ino(), before);
    assert_eq!(
        tree(&snap2.rootfs),
        merged_three(),
        "{kind}: the first snapshot's writes do not leak"
    );
    assert_eq!(
        drv.changes(&snap2).unwrap(),
        vec![],
        "{kind}: a fresh snapshot has no changes"
    );

    for s in [&snap, &snap2] {
        drv.remove(s).unwrap();
        assert!(!s.dir.exists(), "{kind}: snapshot dir removed");
        assert!(!mounted(&s.rootfs), "{kind}: nothing left mounted");
    }
    assert!(matches!(
        drv.get("s1"),
        Err(storage::StorageError::NotFound(_))
    ));
    let leftovers: Vec<_> = fs::read_dir(root.join("storage/tmp")).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "{kind}: temp dirs left: {leftovers:?}"
    );
}

#[test]
fn copy_driver_snapshot_lifecycle() {
    crate::require!(
        crate::common::is_root(),
        "the copy driver test checks owners and overlay-style whiteouts as root"
    );
    snapshot_lifecycle("copy");
}

#[test]
fn overlay_driver_snapshot_lifecycle() {
    crate::require!(crate::common::is_root(), "overlay mounts need root");
    let probe = tempfile::tempdir().unwrap();
    let overlay_here = storage::detect(probe.path())
        .iter()
        .any(|d| d.name == "overlay" && d.available);
    crate::require!(overlay_here, "overlayfs is not available on this host");
    snapshot_lifecycle("overlay");
}

#[test]
fn drivers_are_detected_and_chosen() {
    let tmp = tempfile::tempdir().unwrap();
    let found = storage::detect(tmp.path());
    let names: Vec<_> = found.iter().map(|d| d.name).collect();
    assert_eq!(names, ["overlay", "copy", "btrfs"]);
    assert!(found[1].available, "copy works everywhere");
    let auto = storage::open(None, tmp.path()).unwrap();
    assert_eq!(
        auto.name(),
        if found[0].available {
            "overlay"
        } else {
            "copy"
        }
    );
    let err = storage::open(Some("zfs"), tmp.path())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown storage driver \"zfs\""), "{err}");
    assert!(matches!(
        auto.prepare("../evil", &[]),
        Err(storage::StorageError::BadId(_))
    ));
    let leftovers: Vec<_> = fs::read_dir(tmp.path().join("storage/tmp"))
        .unwrap()
        .collect();
    assert!(
        leftovers.is_empty(),
        "probing leaves nothing behind: {leftovers:?}"
    );
}

#[test]
fn layers_cannot_forge_overlay_xattrs() {
    crate::require!(crate::common::is_root(), "trusted xattrs need root");
    let tmp = tempfile::tempdir().unwrap();
    let tar = tarball(&[
        pax("SCHILY.xattr.trusted.overlay.opaque", b"y", dir("b/")),
        pax("SCHILY.xattr.user.keel", b"kept", file("f", "x")),
    ]);
    let opts = UnpackOptions {
        whiteouts: Whiteouts::Overlay,
        ..UnpackOptions::default()
    };
    unpack(Cursor::new(tar), tmp.path(), &opts).unwrap();
    assert_eq!(
        xattr::get(tmp.path().join("b"), "trusted.overlay.opaque").unwrap(),
        None
    );
    assert_eq!(
        xattr::get(tmp.path().join("f"), "user.keel")
            .unwrap()
            .as_deref(),
        Some(&b"kept"[..])
    );
}

#[test]
fn a_failed_unpack_caches_nothing() {
    crate::require!(crate::common::is_root(), "the drivers keep owners as root");
    for kind in ["copy", "overlay"] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let Ok(drv) = storage::open(Some(kind), &root) else {
            eprintln!("SKIP {kind}: not available here");
            continue;
        };
        let mut layers = three_layers(tmp.path());
        // Layer 3 is cut off in the middle of its content.
        let full = fs::read(&layers[2].blob).unwrap();
        let cut = tmp.path().join("cut");
        fs::write(&cut, &full[..3 * 512 + 1]).unwrap();
        layers[2].blob = cut;
        let err = drv.prepare("s", &layers).unwrap_err().to_string();
        assert!(
            err.contains(&layers[2].diff_id.to_string()),
            "{kind}: error names the layer: {err}"
        );
        assert!(
            err.contains("b/new"),
            "{kind}: error names the entry: {err}"
        );
        assert!(
            !root.join("storage/snapshots/s").exists(),
            "{kind}: no snapshot dir"
        );
        let tmps: Vec<_> = fs::read_dir(root.join("storage/tmp")).unwrap().collect();
        assert!(tmps.is_empty(), "{kind}: temp dirs left: {tmps:?}");
        let cached = if kind == "overlay" {
            root.join("storage/layers")
        } else {
            root.join("storage/chains")
        };
        let names: Vec<String> = fs::read_dir(&cached)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "{kind}: only the two good layers are cached: {names:?}"
        );
    }
}

#[test]
fn packed_layers_extract_with_gnu_tar() {
    crate::require!(crate::common::have("tar"), "GNU tar is not installed");
    crate::require!(crate::common::is_root(), "extracting owners needs root");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    sample_tree(&src, 5);
    fs::create_dir(&dst).unwrap();
    let layer = tmp.path().join("layer.tar");
    pack(
        &all_added(&src),
        &src,
        fs::File::create(&layer).unwrap(),
        &PackOptions::default(),
    )
    .unwrap();
    crate::common::run_ok(
        std::process::Command::new("tar")
            .arg("--xattrs")
            .arg("--xattrs-include=*")
            .arg("-xpf")
            .arg(&layer)
            .arg("-C")
            .arg(&dst),
    );
    assert_eq!(full_tree(&dst), full_tree(&src));
    let listing = crate::common::run_ok(std::process::Command::new("tar").arg("-tvf").arg(&layer));
    assert!(listing.contains("usr/bin/suid"), "{listing}");
}

#[test]
fn packing_never_reads_through_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc", tmp.path().join("evil")).unwrap();
    let changes = [Change {
        path: "evil/passwd".into(),
        kind: ChangeKind::Added,
    }];
    let err = pack(
        &changes,
        tmp.path(),
        std::io::sink(),
        &PackOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("evil/passwd"), "{err}");
}

#[test]
fn deferred_directory_times_do_not_follow_later_symlinks() {
    let s = Scene::new();
    let outside = s.tmp.path().display().to_string();
    // `x/canary/` gets its mtime at the end, after `x` became a symlink to the scene.
    let tar = tarball(&[dir("x/"), dir("x/canary/"), symlink("x", &outside)]);
    s.unpack(tar).unwrap();
    s.assert_contained();
}

#[test]
fn commit_packs_a_snapshots_changes() {
    crate::require!(crate::common::is_root(), "the drivers keep owners as root");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let layers = three_layers(tmp.path());
    let drv = storage::open(None, &root).unwrap();
    let snap = drv.prepare("c1", &layers).unwrap();
    fs::write(snap.rootfs.join("a/added"), "+").unwrap();
    let mut out = Vec::new();
    let (changes, stats) =
        storage::commit(drv.as_ref(), &snap, &mut out, &PackOptions::default()).unwrap();
    assert_eq!(
        changes,
        vec![Change {
            path: "a/added".into(),
            kind: ChangeKind::Added
        }]
    );
    assert_eq!(
        (stats.entries, stats.bytes),
        (2, 1),
        "the parent directory and the file"
    );
    let names: Vec<String> = tar::Archive::new(Cursor::new(out))
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["a", "a/added"]);
    drv.remove(&snap).unwrap();
}

#[test]
fn unused_cache_entries_are_pruned() {
    crate::require!(crate::common::is_root(), "the drivers keep owners as root");
    for kind in ["copy", "overlay"] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let Ok(drv) = storage::open(Some(kind), &root) else {
            eprintln!("SKIP {kind}: not available here");
            continue;
        };
        let layers = three_layers(tmp.path());
        let snap = drv.prepare("p", &layers).unwrap();
        let stale = root.join("storage/tmp/unpack-stale");
        fs::create_dir_all(stale.join("x")).unwrap();
        keel::sys::fs::set_times_nofollow(&stale, 1_000, 0).unwrap();
        let fresh = root.join("storage/tmp/unpack-running");
        fs::create_dir_all(&fresh).unwrap();
        // The snapshot keeps everything it uses.
        let stats = storage::prune_cache(&root, &[]).unwrap();
        assert_eq!(
            (stats.layers, stats.chains, stats.temp),
            (0, 0, 1),
            "{kind}"
        );
        assert!(
            !stale.exists() && fresh.exists(),
            "{kind}: only the stale temp dir goes"
        );
        drv.remove(&snap).unwrap();
        assert_eq!(storage::list_snapshots(&root).unwrap().len(), 0);
        // Without it, only what the kept stack (the first two layers) needs stays.
        let keep = vec![layers[..2]
            .iter()
            .map(|l| l.diff_id.clone())
            .collect::<Vec<_>>()];
        let stats = storage::prune_cache(&root, &keep).unwrap();
        if kind == "overlay" {
            assert_eq!(stats.layers, 1, "{kind}");
            assert!(root
                .join("storage/layers")
                .join(keel::digest::hex_of(&layers[0].diff_id))
                .is_dir());
        } else {
            assert_eq!(stats.chains, 1, "{kind}");
        }
        // And the cache still serves the kept stack without extracting.
        let again = drv.prepare("q", &layers[..2]).unwrap();
        assert_eq!(again.unpacked, 0, "{kind}");
        drv.remove(&again).unwrap();
    }
}

#[test]
fn snapshots_are_found_by_id_with_their_driver() {
    crate::require!(crate::common::is_root(), "the drivers keep owners as root");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let layers = three_layers(tmp.path());
    let copy = storage::open(Some("copy"), &root).unwrap();
    // A prepare killed before writing its metadata leaves a dir the next prepare reuses.
    fs::create_dir_all(root.join("storage/snapshots/k/rootfs/junk")).unwrap();
    let snap = copy.prepare("k", &layers[..1]).unwrap();
    assert!(!snap.rootfs.join("junk").exists());
    let (drv, found) = storage::load(&root, "k").unwrap();
    assert_eq!(
        (drv.name(), found.rootfs.clone()),
        ("copy", snap.rootfs.clone())
    );
    if let Ok(overlay) = storage::open(Some("overlay"), &root) {
        let err = overlay.get("k").unwrap_err().to_string();
        assert!(
            err.contains("made by the copy driver; use --storage-driver copy"),
            "{err}"
        );
    }
    drv.remove(&found).unwrap();
    assert!(matches!(
        storage::load(&root, "k"),
        Err(storage::StorageError::NotFound(_))
    ));
}

/// Unpack speed on a 10k-file layer (100 directories of 100 files of 1 KiB): run with
/// `cargo test --test it unpack_10k -- --ignored --nocapture` to compare changes to the
/// hot path; prints the best of three.
#[test]
#[ignore]
fn unpack_10k_files_bench() {
    let mut entries = Vec::new();
    let body = "x".repeat(1024);
    for d in 0..100 {
        entries.push(dir(&format!("d{d}/")));
        for f in 0..100 {
            entries.push(file(&format!("d{d}/f{f}"), &body));
        }
    }
    let tar = tarball(&entries);
    // CPU time of this thread (schedstat's first field, ns): steadier than wall time on
    // a shared machine.
    let cpu = || -> u64 {
        fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let (mut best, mut best_cpu) = (std::time::Duration::MAX, u64::MAX);
    for _ in 0..5 {
        let t = tempfile::tempdir().unwrap();
        let (start, c0) = (std::time::Instant::now(), cpu());
        let stats = unpack(
            Cursor::new(tar.clone()),
            t.path(),
            &UnpackOptions::default(),
        )
        .unwrap();
        best = best.min(start.elapsed());
        best_cpu = best_cpu.min(cpu() - c0);
        assert_eq!(stats.files, 10_000);
    }
    eprintln!(
        "unpack of 10k files: best of 5 = {best:?} wall, {:?} cpu",
        std::time::Duration::from_nanos(best_cpu)
    );
}
