//! Turning an overlay snapshot's upper directory, in place, into the tree that unpacking
//! the layer packed from it would give: a RUN step's result then becomes the next step's
//! lower layer without its tar being extracted again (issue 14).
//!
//! The upper directory holds more than the layer: copied-up entries that did not change,
//! whiteouts for names no lower layer has, opaque directories (the layer lists each
//! deleted name instead), sockets, overlayfs's own xattrs and nanosecond times. Each is
//! made what the unpacker (`unpack.rs`, `Whiteouts::Overlay`) would have made of the
//! layer's tar, so `keel fsck --full` finds the two the same and a container sees the
//! same files, modes, owners, xattrs and mtimes either way.
//!
//! Works on a quiescent tree keel owns (the snapshot is unmounted and nothing runs in
//! it): paths are walked from the top through real directories only.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::diff::{is_overlay_whiteout, Change, ChangeKind};
use super::pack::{keep_xattr, layer_items, Item, PackOptions};
use super::LayerError;
use crate::sys::fs as sysfs;
use crate::sys::hostfs;

/// What [`settle_upper`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Entries removed because the layer does not carry them.
    pub removed: u64,
    /// Whiteouts made for deletions overlayfs recorded as an opaque directory.
    pub whiteouts: u64,
}

fn fail(p: &Path, what: &str) -> impl FnOnce(io::Error) -> LayerError {
    let shown = p.display().to_string();
    let what = what.to_string();
    move |e| LayerError::bad(shown, format!("{what}: {e}"))
}

/// Makes `upper` (an unmounted overlay upper dir whose changes against its lower layers
/// are `changes`) equal to the unpack of `pack(changes, …, opts)`.
pub fn settle_upper(
    upper: &Path,
    changes: &[Change],
    opts: &PackOptions,
) -> Result<Settled, LayerError> {
    let items = layer_items(changes)?;
    // The mtime each entry has in the tar, read before anything below is touched.
    let mut keep: BTreeMap<PathBuf, i64> = BTreeMap::new();
    for (rel, item) in &items {
        if let Item::Entry = item {
            let p = upper.join(rel);
            let m = fs::symlink_metadata(&p).map_err(fail(&p, "reading"))?;
            let mtime = opts.epoch.map_or(m.mtime(), |e| e as i64);
            keep.insert(rel.clone(), mtime);
        }
    }
    let deleted: BTreeSet<PathBuf> = changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Deleted)
        .map(|c| c.path.clone())
        .collect();
    let mut out = Settled::default();
    for victim in &deleted {
        let p = upper.join(victim);
        match fs::symlink_metadata(&p) {
            Ok(m) if is_overlay_whiteout(&m) && m.mode() & 0o7777 == 0 => continue,
            Ok(m) if m.is_dir() => hostfs::remove_dir_all(&p).map_err(fail(&p, "removing"))?,
            Ok(_) => hostfs::remove_file(&p).map_err(fail(&p, "removing"))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(&p, "reading")(e)),
        }
        sysfs::mknod(&p, sysfs::NodeKind::Char, 0, 0, 0).map_err(fail(&p, "making a whiteout"))?;
        out.whiteouts += 1;
    }
    strip_xattrs(upper, opts)?;
    settle_dir(upper, Path::new(""), &keep, &deleted, opts, &mut out)?;
    Ok(out)
}

/// Settles the children of directory `rel`, deepest first, then their times.
fn settle_dir(
    upper: &Path,
    rel: &Path,
    keep: &BTreeMap<PathBuf, i64>,
    deleted: &BTreeSet<PathBuf>,
    opts: &PackOptions,
    out: &mut Settled,
) -> Result<(), LayerError> {
    let dir = upper.join(rel);
    let rd = fs::read_dir(&dir).map_err(fail(&dir, "listing"))?;
    let mut names: Vec<_> = Vec::new();
    for e in rd {
        names.push(e.map_err(fail(&dir, "listing"))?.file_name());
    }
    for name in names {
        let r = rel.join(&name);
        let p = upper.join(&r);
        if deleted.contains(&r) {
            continue; // a whiteout, as the unpacker makes it
        }
        let m = fs::symlink_metadata(&p).map_err(fail(&p, "reading"))?;
        let mtime = match keep.get(&r) {
            Some(t) if !m.file_type().is_socket() => *t,
            // Not in the layer: a copied-up entry that did not change, a whiteout of a
            // name no lower layer has, a socket. The layers below show it as it was.
            _ => {
                if m.is_dir() {
                    hostfs::remove_dir_all(&p).map_err(fail(&p, "removing"))?;
                } else {
                    hostfs::remove_file(&p).map_err(fail(&p, "removing"))?;
                }
                out.removed += 1;
                continue;
            }
        };
        if m.is_dir() {
            settle_dir(upper, &r, keep, deleted, opts, out)?;
        }
        strip_xattrs(&p, opts)?;
        sysfs::set_times_nofollow(&p, mtime, 0).map_err(fail(&p, "setting times"))?;
    }
    Ok(())
}

/// Removes the xattrs a layer does not carry (overlayfs's own — opaque, origin, impure —
/// and host labels); symlinks carry none in a layer either.
fn strip_xattrs(p: &Path, opts: &PackOptions) -> Result<(), LayerError> {
    let names = match sysfs::list_xattrs(p) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::Unsupported => return Ok(()),
        Err(e) => return Err(fail(p, "listing xattrs")(e)),
    };
    for n in names.iter().filter(|n| !keep_xattr(n, opts)) {
        sysfs::remove_xattr(p, n).map_err(fail(p, "removing an xattr"))?;
    }
    Ok(())
}
