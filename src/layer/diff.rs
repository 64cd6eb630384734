//! Changesets: what a writable top changed against its parent, as a sorted list of
//! [`Change`]s. Two ways to compute one: comparing two whole trees (the copy driver)
//! and reading an overlayfs upper directory (the overlay driver).
//!
//! Nothing here writes; [`super::pack`] turns a changeset into a layer tarball.
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::unpack::overlay_opaque_xattr;
use super::LayerError;
use crate::sys::fs as sysfs;

/// What happened to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One entry of a changeset; `path` is relative to the root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
}

fn io_err(p: &Path, e: io::Error) -> LayerError {
    LayerError::bad(p.display().to_string(), format!("computing changes: {e}"))
}

fn sorted_names(dir: &Path) -> Result<BTreeSet<OsString>, LayerError> {
    let rd = fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    rd.map(|e| e.map(|e| e.file_name()).map_err(|e| io_err(dir, e)))
        .collect()
}

fn lstat(p: &Path) -> Result<Option<Metadata>, LayerError> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(p, e)),
    }
}

/// Compares `upper` (a full tree: the snapshot) with `lower` (the tree it started
/// from). Metadata decides first; files whose size matches but whose times differ are
/// compared by content, so a touched-but-identical file is no change.
pub fn diff_trees(lower: &Path, upper: &Path) -> Result<Vec<Change>, LayerError> {
    diff_trees_since(lower, upper, None)
}

/// Like [`diff_trees`] for an `upper` that was copied from `lower` (mtimes preserved)
/// before `stamp`, a (seconds, nanoseconds) ctime taken on the same filesystem right
/// after the copy: a file whose ctime is older than the stamp and whose size and mtime
/// match is unchanged without reading it. Any write or chmod since bumps the ctime,
/// which userspace cannot set back, so a stamp never hides a change.
pub fn diff_trees_since(
    lower: &Path,
    upper: &Path,
    stamp: Option<(i64, i64)>,
) -> Result<Vec<Change>, LayerError> {
    let mut out = Vec::new();
    diff_dir(
        &Ctx {
            lower,
            upper,
            stamp,
        },
        Path::new(""),
        &mut out,
    )?;
    out.sort();
    Ok(out)
}

struct Ctx<'a> {
    lower: &'a Path,
    upper: &'a Path,
    stamp: Option<(i64, i64)>,
}

fn diff_dir(cx: &Ctx, rel: &Path, out: &mut Vec<Change>) -> Result<(), LayerError> {
    let (lower, upper) = (cx.lower, cx.upper);
    let (ldir, udir) = (lower.join(rel), upper.join(rel));
    let lnames = sorted_names(&ldir)?;
    let unames = sorted_names(&udir)?;
    for name in &unames {
        let r = rel.join(name);
        let um = lstat(&udir.join(name))?
            .ok_or_else(|| io_err(&udir.join(name), io::ErrorKind::NotFound.into()))?;
        match lstat(&ldir.join(name))? {
            None => added_tree(upper, &r, &um, out)?,
            Some(lm) if lm.file_type() != um.file_type() => {
                out.push(Change {
                    path: r.clone(),
                    kind: ChangeKind::Modified,
                });
                if um.is_dir() {
                    for child in sorted_names(&upper.join(&r))? {
                        let cr = r.join(child);
                        let cm = lstat(&upper.join(&cr))?.expect("listed child exists");
                        added_tree(upper, &cr, &cm, out)?;
                    }
                }
            }
            Some(lm) => {
                if !same_entry(&lower.join(&r), &lm, &upper.join(&r), &um, cx.stamp)? {
                    out.push(Change {
                        path: r.clone(),
                        kind: ChangeKind::Modified,
                    });
                }
                if um.is_dir() {
                    diff_dir(cx, &r, out)?;
                }
            }
        }
    }
    for name in lnames.difference(&unames) {
        out.push(Change {
            path: rel.join(name),
            kind: ChangeKind::Deleted,
        });
    }
    Ok(())
}

/// Records `rel` and, for a directory, everything below it as added.
fn added_tree(
    root: &Path,
    rel: &Path,
    m: &Metadata,
    out: &mut Vec<Change>,
) -> Result<(), LayerError> {
    out.push(Change {
        path: rel.to_path_buf(),
        kind: ChangeKind::Added,
    });
    if m.is_dir() {
        for child in sorted_names(&root.join(rel))? {
            let cr = rel.join(child);
            let cm = lstat(&root.join(&cr))?.expect("listed child exists");
            added_tree(root, &cr, &cm, out)?;
        }
    }
    Ok(())
}

/// True when two entries of the same type would pack to the same layer entry
/// (ignoring mtime, which packing clamps anyway).
fn same_entry(
    lp: &Path,
    lm: &Metadata,
    up: &Path,
    um: &Metadata,
    stamp: Option<(i64, i64)>,
) -> Result<bool, LayerError> {
    if lm.mode() != um.mode() || lm.uid() != um.uid() || lm.gid() != um.gid() {
        return Ok(false);
    }
    if get_cap(lp)? != get_cap(up)? {
        return Ok(false);
    }
    let ft = um.file_type();
    if ft.is_symlink() {
        return Ok(fs::read_link(lp).map_err(|e| io_err(lp, e))?
            == fs::read_link(up).map_err(|e| io_err(up, e))?);
    }
    if ft.is_block_device() || ft.is_char_device() {
        return Ok(lm.rdev() == um.rdev());
    }
    if ft.is_file() {
        if lm.size() != um.size() {
            return Ok(false);
        }
        let same_mtime = lm.mtime() == um.mtime() && lm.mtime_nsec() == um.mtime_nsec();
        if same_mtime && lm.ino() == um.ino() && lm.dev() == um.dev() {
            return Ok(true);
        }
        if same_mtime && stamp.is_some_and(|s| (um.ctime(), um.ctime_nsec()) < s) {
            return Ok(true);
        }
        return same_content(lp, up);
    }
    Ok(true)
}

fn get_cap(p: &Path) -> Result<Option<Vec<u8>>, LayerError> {
    match sysfs::get_xattr(p, "security.capability") {
        Ok(v) => Ok(v),
        // Filesystems without xattr support have no capabilities to compare.
        Err(e) if e.kind() == io::ErrorKind::Unsupported => Ok(None),
        Err(e) => Err(io_err(p, e)),
    }
}

fn same_content(a: &Path, b: &Path) -> Result<bool, LayerError> {
    let mut fa = fs::File::open(a).map_err(|e| io_err(a, e))?;
    let mut fb = fs::File::open(b).map_err(|e| io_err(b, e))?;
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let na = super::read_up_to(&mut fa, &mut ba).map_err(|e| io_err(a, e))?;
        let nb = super::read_up_to(&mut fb, &mut bb).map_err(|e| io_err(b, e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

/// True for an overlayfs whiteout: a character device with device number 0:0.
pub fn is_overlay_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(p: &Path) -> bool {
    matches!(sysfs::get_xattr(p, overlay_opaque_xattr()), Ok(Some(v)) if v == b"y")
}

/// Reads an overlayfs upper directory: whiteouts (0:0 char devices) become deletions,
/// an opaque directory deletes every name the lower layers (`lowers`, top-most first)
/// had in it. Everything else is added, or modified when a lower layer has the path.
pub fn diff_overlay(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>, LayerError> {
    let mut out = Vec::new();
    overlay_dir(upper, lowers, Path::new(""), false, &mut out)?;
    out.sort();
    Ok(out)
}

fn overlay_dir(
    upper: &Path,
    lowers: &[PathBuf],
    rel: &Path,
    below_opaque: bool,
    out: &mut Vec<Change>,
) -> Result<(), LayerError> {
    let dir = upper.join(rel);
    let names = sorted_names(&dir)?;
    for name in &names {
        let r = rel.join(name);
        let p = upper.join(&r);
        let m = lstat(&p)?.expect("listed child exists");
        let lower = if below_opaque {
            None
        } else {
            lower_lookup(lowers, &r)?
        };
        if is_overlay_whiteout(&m) {
            if lower.is_some() {
                out.push(Change {
                    path: r,
                    kind: ChangeKind::Deleted,
                });
            }
            continue;
        }
        if m.is_dir() {
            let opaque = is_opaque(&p);
            match &lower {
                None => out.push(Change {
                    path: r.clone(),
                    kind: ChangeKind::Added,
                }),
                Some(lm)
                    if !lm.is_dir()
                        || opaque
                        || lm.mode() != m.mode()
                        || lm.uid() != m.uid()
                        || lm.gid() != m.gid() =>
                {
                    out.push(Change {
                        path: r.clone(),
                        kind: ChangeKind::Modified,
                    })
                }
                Some(_) => {}
            }
            if opaque && !below_opaque {
                let present: BTreeSet<OsString> = sorted_names(&p)?;
                for gone in lower_names(lowers, &r)?.difference(&present) {
                    out.push(Change {
                        path: r.join(gone),
                        kind: ChangeKind::Deleted,
                    });
                }
            }
            overlay_dir(
                upper,
                lowers,
                &r,
                below_opaque || opaque || lower.as_ref().map(|l| !l.is_dir()).unwrap_or(true),
                out,
            )?;
        } else {
            let kind = if lower.is_some() {
                ChangeKind::Modified
            } else {
                ChangeKind::Added
            };
            out.push(Change { path: r, kind });
        }
    }
    Ok(())
}

/// The metadata `rel` has in the merged lower layers, or `None` when it is absent or
/// whited out there.
fn lower_lookup(lowers: &[PathBuf], rel: &Path) -> Result<Option<Metadata>, LayerError> {
    for l in lowers {
        if let Some(m) = lstat(&l.join(rel))? {
            return Ok(if is_overlay_whiteout(&m) {
                None
            } else {
                Some(m)
            });
        }
        // An opaque parent in this layer hides the layers below it.
        if rel.parent().map(|p| is_opaque(&l.join(p))).unwrap_or(false) {
            return Ok(None);
        }
    }
    Ok(None)
}

/// Names the merged lower layers show in directory `rel`.
fn lower_names(lowers: &[PathBuf], rel: &Path) -> Result<BTreeSet<OsString>, LayerError> {
    let mut seen: BTreeMap<OsString, bool> = BTreeMap::new();
    for l in lowers {
        let d = l.join(rel);
        match lstat(&d)? {
            Some(m) if m.is_dir() => {}
            _ => break,
        }
        for name in sorted_names(&d)? {
            let m = lstat(&d.join(&name))?.expect("listed child exists");
            seen.entry(name).or_insert(!is_overlay_whiteout(&m));
        }
        if is_opaque(&d) {
            break;
        }
    }
    Ok(seen
        .into_iter()
        .filter(|(_, visible)| *visible)
        .map(|(n, _)| n)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_diff_finds_added_modified_and_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let (lo, up) = (tmp.path().join("lo"), tmp.path().join("up"));
        for root in [&lo, &up] {
            fs::create_dir_all(root.join("etc/sub")).unwrap();
            fs::write(root.join("etc/same"), "same").unwrap();
            fs::write(root.join("etc/touched"), "same").unwrap();
            fs::write(root.join("etc/edited"), "aaaa").unwrap();
            fs::write(root.join("etc/sub/gone"), "x").unwrap();
        }
        fs::write(up.join("etc/edited"), "bbbb").unwrap();
        fs::write(up.join("etc/touched"), "same").unwrap();
        fs::remove_file(up.join("etc/sub/gone")).unwrap();
        fs::create_dir(up.join("new")).unwrap();
        fs::write(up.join("new/file"), "n").unwrap();
        let got = diff_trees(&lo, &up).unwrap();
        let want = vec![
            Change {
                path: "etc/edited".into(),
                kind: ChangeKind::Modified,
            },
            Change {
                path: "etc/sub/gone".into(),
                kind: ChangeKind::Deleted,
            },
            Change {
                path: "new".into(),
                kind: ChangeKind::Added,
            },
            Change {
                path: "new/file".into(),
                kind: ChangeKind::Added,
            },
        ];
        assert_eq!(got, want);
    }
}
