//! Changesets: what a writable top changed relative to the tree below it. Two sources:
//! comparing two directory trees (the copy driver) and reading an overlayfs upper
//! directory, whose whiteouts and opaque directories mark deletions.
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// How a path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
    /// A directory whose lower contents are all hidden (it was replaced wholesale).
    Opaque,
}

/// One changed path, relative to the root of the tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
}

fn walk(root: &Path) -> io::Result<BTreeMap<PathBuf, fs::Metadata>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let e = e.map_err(io::Error::from)?;
        let rel = e
            .path()
            .strip_prefix(root)
            .expect("walk stays under root")
            .to_path_buf();
        out.insert(rel, e.path().symlink_metadata()?);
    }
    Ok(out)
}

/// Whether two entries look identical: type, mode, owner, size, mtime and link target.
fn same(lower: &Path, a: &fs::Metadata, upper: &Path, b: &fs::Metadata) -> bool {
    if a.file_type() != b.file_type()
        || a.mode() != b.mode()
        || a.uid() != b.uid()
        || a.gid() != b.gid()
    {
        return false;
    }
    if a.is_dir() {
        return true; // a directory's own change is its metadata; contents are entries
    }
    if a.len() != b.len() || a.mtime() != b.mtime() || a.mtime_nsec() != b.mtime_nsec() {
        return false;
    }
    if a.file_type().is_symlink() {
        return fs::read_link(lower).ok() == fs::read_link(upper).ok();
    }
    if a.file_type().is_char_device() || a.file_type().is_block_device() {
        return a.rdev() == b.rdev();
    }
    true
}

/// The changes turning tree `lower` into tree `upper`.
pub fn compare_trees(lower: &Path, upper: &Path) -> io::Result<Vec<Change>> {
    let (l, u) = (walk(lower)?, walk(upper)?);
    let mut out = Vec::new();
    for (p, um) in &u {
        match l.get(p) {
            None => out.push(Change {
                path: p.clone(),
                kind: ChangeKind::Added,
            }),
            Some(lm) if !same(&lower.join(p), lm, &upper.join(p), um) => out.push(Change {
                path: p.clone(),
                kind: ChangeKind::Modified,
            }),
            _ => {}
        }
    }
    for p in l.keys() {
        if !u.contains_key(p) {
            // Only the topmost deleted path needs a whiteout.
            if p.parent()
                .is_some_and(|parent| !parent.as_os_str().is_empty() && !u.contains_key(parent))
            {
                continue;
            }
            out.push(Change {
                path: p.clone(),
                kind: ChangeKind::Deleted,
            });
        }
    }
    out.sort();
    Ok(out)
}

/// The changes recorded in an overlayfs upper directory.
pub fn overlay_upper(upper: &Path) -> io::Result<Vec<Change>> {
    let mut out = Vec::new();
    for (p, m) in walk(upper)? {
        let full = upper.join(&p);
        if m.file_type().is_char_device() && m.rdev() == 0 {
            out.push(Change {
                path: p,
                kind: ChangeKind::Deleted,
            });
            continue;
        }
        if m.is_dir()
            && crate::sys::fs::get_xattr(&full, "trusted.overlay.opaque")
                .ok()
                .flatten()
                .as_deref()
                == Some(b"y")
        {
            out.push(Change {
                path: p,
                kind: ChangeKind::Opaque,
            });
            continue;
        }
        out.push(Change {
            path: p,
            kind: ChangeKind::Modified,
        });
    }
    out.sort();
    Ok(out)
}
