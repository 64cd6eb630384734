//! Session 10: archives ADD extracts that hold symlinks leading out of the destination,
//! and context files with mtimes before 1970. BuildKit extracts a local archive with
//! moby/go-archive `chrootarchive.Untar` (buildkit `solver/llbsolver/file/unpack.go`):
//! `archive.Unpack` runs chrooted at the destination (`goInChroot` → `SwitchRoot`), so
//! every name and every link resolves with the destination as `/`.
use std::path::Path;

use crate::Case;

/// One tar entry: a name, a kind and its data or link target.
pub enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

/// Writes `name` in the context as a plain tar of `entries`, names and link targets
/// written raw (the tar crate refuses absolute and `..` names through its setters).
pub fn tar_of(d: &Path, name: &str, entries: &[Entry]) {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_600_000_000);
        let (path, data, link): (&str, &[u8], &str) = match e {
            Entry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (p, b"", "")
            }
            Entry::File(p, data) => {
                h.set_mode(0o644);
                (p, data, "")
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                (p, b"", target)
            }
        };
        h.set_size(data.len() as u64);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    std::fs::write(d.join(name), out).unwrap();
}

/// A symlink whose target leaves the destination is kept as it is, and an entry written
/// through it lands where the link leads *with the destination as the root*: `abs -> /sub`
/// then `abs/f` writes `DEST/sub/f`; `up -> ../../..` then `up/g` writes `DEST/g`
/// (chrooted `Unpack`: `createTarFile`'s breakout checks compare against `/`, so none
/// fires, and the kernel resolves the links inside the chroot).
#[test]
fn add_archive_symlink_out_of_dest_resolves_in_dest() {
    use Entry::*;
    Case::new(
        "add_archive_symlink_out_of_dest_resolves_in_dest",
        "FROM bb\nADD links.tar /x/y/\n",
    )
    .setup(|d| {
        tar_of(
            d,
            "links.tar",
            &[
                Dir("sub/"),
                Symlink("abs", "/sub"),
                File("abs/f", b"through abs\n"),
                Symlink("up", "../../.."),
                File("up/g", b"through up\n"),
                Symlink("dangling", "/etc/passwd"),
            ],
        )
    })
    .check();
}

/// A name that climbs above the destination with `..` stops at it, as `..` stops at `/`:
/// `../x` lands at `DEST/x` (chrooted `Unpack` joins the cleaned name to `/`, so its
/// breakout check, `filepath.Rel(dest, path)` starting with `../`, cannot fire). keel
/// used to refuse the archive.
#[test]
fn add_archive_dotdot_names_stop_at_dest() {
    use Entry::*;
    Case::new(
        "add_archive_dotdot_names_stop_at_dest",
        "FROM bb\nADD dots.tar /x/y/\n",
    )
    .setup(|d| {
        tar_of(
            d,
            "dots.tar",
            &[
                File("../x", b"dotdot\n"),
                Dir("a/"),
                File("a/../../../y", b"deeper\n"),
            ],
        )
    })
    .check();
}

/// Every entry's mtime in a layer tar, a PAX `mtime` record winning over the header.
fn layer_mtimes(blob: &[u8]) -> std::collections::BTreeMap<String, i64> {
    let mut out = std::collections::BTreeMap::new();
    let plain: Box<dyn std::io::Read + '_> = match blob.starts_with(&[0x1f, 0x8b]) {
        true => Box::new(flate2::read::GzDecoder::new(blob)),
        false => Box::new(blob),
    };
    let mut a = tar::Archive::new(plain);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut t = e.header().mtime().unwrap() as i64;
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts.flatten() {
                if x.key() == Ok("mtime") {
                    t = x
                        .value()
                        .unwrap()
                        .split('.')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                }
            }
        }
        out.insert(name, t);
    }
    out
}

/// The mtimes of the last layer of an image pushed to a `dir:` transport or stored in an
/// OCI layout, given its manifest and a digest → path function.
fn last_layer_mtimes(
    manifest: &std::path::Path,
    blob: &dyn Fn(&str) -> std::path::PathBuf,
) -> std::collections::BTreeMap<String, i64> {
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let layers = m["layers"].as_array().unwrap();
    let last = layers.last().unwrap()["digest"].as_str().unwrap();
    layer_mtimes(&std::fs::read(blob(last)).unwrap())
}

/// A context file older than 1970 keeps its mtime with `--timestamps keep` (buildah, like
/// BuildKit, keeps COPY's mtimes always): a negative time fits no ustar field, so the
/// layer carries it in a PAX `mtime` record (Go's archive/tar, which both write with),
/// and the container sees it. keel used to clamp it to 1970.
#[test]
fn copy_keeps_mtimes_before_1970() {
    if !crate::ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM bb\nCOPY old.txt /old.txt\n").unwrap();
    std::fs::write(ctx.join("old.txt"), "old\n").unwrap();
    let moon = -14_182_940; // 1969-07-20 20:17:40 UTC
    let t = std::time::UNIX_EPOCH - std::time::Duration::from_secs(14_182_940);
    std::fs::File::options()
        .write(true)
        .open(ctx.join("old.txt"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    let k = crate::common::Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let dir = ctx.to_str().unwrap();
    k.ok(&["build", "-q", "--timestamps", "keep", "-t", "old", dir]);
    let images = k.root().join("images");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(images.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        images
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "old:latest")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let got = last_layer_mtimes(&blob(&manifest), &blob);
    assert_eq!(got.get("old.txt"), Some(&moon), "keel's layer: {got:?}");
    let out = tmp.path().join("buildah");
    let want = crate::Case::new("copy_keeps_mtimes_before_1970", "").buildah_layers(&ctx, &out);
    assert_eq!(
        want.get("old.txt"),
        Some(&moon),
        "buildah's layer: {want:?}"
    );
    let seen = k.ok(&["run", "--rm", "old", "stat", "-c", "%Y", "/old.txt"]);
    assert_eq!(seen.trim(), moon.to_string());
}

impl crate::Case {
    /// Builds the context with buildah and returns its last layer's mtimes.
    fn buildah_layers(&self, ctx: &Path, out: &Path) -> std::collections::BTreeMap<String, i64> {
        let _ = self.buildah_image(ctx, out);
        let blob = |d: &str| out.join(d.trim_start_matches("sha256:"));
        last_layer_mtimes(&out.join("manifest.json"), &blob)
    }
}
