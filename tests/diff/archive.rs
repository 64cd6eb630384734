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
