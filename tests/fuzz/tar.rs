//! Layer tars: `layer::unpack::unpack` of arbitrary bytes (plain or gzip) into a temp
//! directory, through the header guard and the tar reader. Two targets: byte-level
//! mutation of seed tars (`tar`), and well-formed tars built from random entries aimed at
//! escaping (`unpack`): `..` names, absolute names and link targets, symlinked parents,
//! hardlinks to outside files, whiteouts of the parent.
//!
//! Invariant: whatever the input, nothing outside the target directory changes (a
//! sibling canary directory stays as it was, no file appears beside the target or at the
//! absolute paths the inputs name), and unpack returns instead of panicking or hanging.
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use arbitrary::Unstructured;
use keel::layer::unpack::{unpack, UnpackOptions, Whiteouts};
use tar::{EntryType, Header};

use crate::harness;

/// An absolute path the seed tars aim at; it must never appear.
const HOST_ESCAPE: &str = "/tmp/keel-fuzz-escape";
const DICT: &[&[u8]] = &[
    b"../",
    b"/",
    b"./",
    b".wh.",
    b".wh..wh..opq",
    b"ustar\x00",
    b"ustar  \x00",
    b"0000644\x00",
    b"PaxHeader",
    b"30 path=",
    b"size=",
    b"SCHILY.xattr.",
    b"././@LongLink",
    b"\x1f\x8b",
];

/// A scratch directory with the unpack target and a canary beside it.
struct Scene {
    dir: tempfile::TempDir,
    canary_mode: u32,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::Builder::new()
            .prefix("keel-fuzz-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        let canary = dir.path().join("outside/canary");
        fs::write(&canary, "canary").unwrap();
        let canary_mode = fs::metadata(&canary).unwrap().mode();
        Scene { dir, canary_mode }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// Nothing beside the target changed.
    fn assert_confined(&self, input: &[u8]) {
        let mut names: Vec<String> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["outside", "root"], "unpack wrote beside its target");
        let outside: Vec<_> = fs::read_dir(self.outside()).unwrap().collect();
        assert_eq!(outside.len(), 1, "unpack wrote into the canary directory");
        let canary = self.outside().join("canary");
        let m = fs::symlink_metadata(&canary).unwrap();
        assert!(
            m.is_file() && m.nlink() == 1,
            "canary replaced or hardlinked"
        );
        assert_eq!(m.mode(), self.canary_mode, "canary mode changed");
        assert_eq!(fs::read(&canary).unwrap(), b"canary", "canary rewritten");
        assert!(
            fs::symlink_metadata(HOST_ESCAPE).is_err(),
            "unpack created {HOST_ESCAPE} ({} input bytes)",
            input.len()
        );
    }
}

fn unpack_into(scene: &Scene, input: Vec<u8>) {
    // What `keel` itself uses: owners kept when root, xattrs applied, no devices.
    let opts = UnpackOptions {
        whiteouts: Whiteouts::Apply,
        ..UnpackOptions::default()
    };
    let _ = unpack(std::io::Cursor::new(input), &scene.root(), &opts);
}

fn bytes_property(input: &[u8]) {
    let scene = Scene::new();
    unpack_into(&scene, input.to_vec());
    scene.assert_confined(input);
}

/// Names of entries and link targets: short components that reach for the outside.
fn name(u: &mut Unstructured, outside: &Path) -> arbitrary::Result<Vec<u8>> {
    let outside = outside.to_string_lossy().into_owned();
    let parts = [
        "a",
        "b",
        "link",
        "..",
        ".",
        "",
        ".wh.a",
        ".wh.link",
        ".wh..wh..opq",
        "/",
        "outside",
        "canary",
        "root",
    ];
    let mut out = Vec::new();
    if u.ratio(1, 6)? {
        out.extend_from_slice(outside.as_bytes());
        out.push(b'/');
    } else if u.ratio(1, 10)? {
        out.extend_from_slice(b"../outside/");
    }
    for i in 0..u.int_in_range(1..=4)? {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(u.choose(&parts)?.as_bytes());
    }
    out.truncate(99);
    Ok(out)
}

fn header(name: &[u8], kind: EntryType, size: u64, link: &[u8], mode: u32) -> Header {
    let mut h = Header::new_ustar();
    {
        // Raw bytes: `set_path` refuses `..`, which is exactly what must be tried.
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1);
    h.set_cksum();
    h
}

/// PAX records for the next entry: a path or link that overrides the header's, a size
/// that may disagree with the data, an xattr.
fn pax_records(u: &mut Unstructured, outside: &Path) -> arbitrary::Result<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..u.int_in_range(1..=3)? {
        let (key, value): (&str, Vec<u8>) = match u.int_in_range(0..=4)? {
            0 => ("path", name(u, outside)?),
            1 => ("linkpath", name(u, outside)?),
            2 => {
                let size: u64 = *u.choose(&[0, 1, 511, 512, 513, 1 << 40, u64::MAX])?;
                ("size", size.to_string().into_bytes())
            }
            3 => ("SCHILY.xattr.user.fuzz", b"v".to_vec()),
            _ => ("mtime", b"-1.5".to_vec()),
        };
        // A record is "LEN KEY=VALUE\n" where LEN counts the whole record, itself included.
        let body = format!(" {key}={}\n", String::from_utf8_lossy(&value));
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        out.extend_from_slice(format!("{len}{body}").as_bytes());
    }
    Ok(out)
}

/// A well-formed tar of random entries aimed at the scene's outside directory.
fn hostile_tar(u: &mut Unstructured, outside: &Path) -> arbitrary::Result<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..u.int_in_range(1..=10)? {
        let path = name(u, outside)?;
        let link = name(u, outside)?;
        let (kind, body): (EntryType, &[u8]) = match u.int_in_range(0..=5)? {
            0 => (EntryType::Directory, b""),
            1 => (EntryType::Symlink, b""),
            2 => (EntryType::Link, b""),
            3 => (EntryType::Fifo, b""),
            _ => (EntryType::Regular, b"pwned"),
        };
        let mode = *u.choose(&[0o644, 0o755, 0o000, 0o4777, 0o1777])?;
        if u.ratio(1, 4)? {
            let records = pax_records(u, outside)?;
            let h = header(
                b"PaxHeader",
                EntryType::XHeader,
                records.len() as u64,
                b"",
                0o644,
            );
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&records);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        let h = header(&path, kind, body.len() as u64, &link, mode);
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    Ok(out)
}

#[test]
fn tar_corpus() {
    let seeds = harness::seeds("tar", &[]);
    harness::run_corpus("tar", &seeds, &bytes_property);
}

#[test]
fn tar_fuzz() {
    let seeds = harness::seeds("tar", &[]);
    harness::fuzz("tar", &seeds, DICT, 16 << 10, &bytes_property);
}

#[test]
fn unpack_fuzz() {
    let mut cases = 0u64;
    arbtest::arbtest(|u| {
        let scene = Scene::new();
        let tar = hostile_tar(u, &scene.outside())?;
        harness::check("unpack", &tar, &|input| {
            unpack_into(&scene, input.to_vec());
            scene.assert_confined(input);
        });
        cases += 1;
        Ok(())
    })
    .budget(harness::budget())
    .run();
    eprintln!("fuzz target unpack: {cases} cases");
}

/// Reading a whole seed back keeps the harness honest: the corpus holds real tars.
#[test]
fn tar_seeds_are_tars() {
    let mut readable = 0;
    for seed in harness::seeds("tar", &[]) {
        let mut raw = Vec::new();
        if seed.starts_with(&[0x1f, 0x8b]) {
            flate2::read::GzDecoder::new(&seed[..])
                .read_to_end(&mut raw)
                .unwrap();
        } else {
            raw = seed;
        }
        if tar::Archive::new(&raw[..])
            .entries()
            .unwrap()
            .all(|e| e.is_ok())
        {
            readable += 1;
        }
    }
    assert!(readable >= 3, "only {readable} seed tars read cleanly");
}
