//! What a tree unpacked from one layer holds, counted from the layer's stream as it is
//! unpacked: the summary the layer cache's marker records (entries, bytes of regular
//! files, a hash of every directory's path, mode and owner — `storage::verify`), without
//! walking the tree again afterwards (issue 14: that walk was a second stat of every
//! file of a 10,000-file COPY).
//!
//! Only a simple stream is counted — every entry a directory, regular file or symlink,
//! named once, below a directory the stream itself made — since only then is the tree
//! exactly the stream's entries; anything else (whiteouts, hardlinks, devices, implied
//! parents, a name given twice) gives no summary, and the caller walks the tree as
//! before. Must not touch any tree.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tar::EntryType;

/// A tree's summary, as `storage::verify::summarize` computes it by walking the tree,
/// and what only the stream can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub entries: u64,
    pub bytes: u64,
    /// Hex sha256 of every directory's [`dir_line`], in walk order.
    pub dirs: String,
    /// Hex sha256 of the entries' names (each ended by a NUL, which no name holds) in
    /// the stream's order; None from a walk. The next version of the layer, patched into
    /// this tree, has nothing to sweep when its stream names the same entries in the
    /// same order (`unpack::UnpackOptions::old_names`).
    pub names: Option<String>,
}

/// Feeds one directory's record into the directory hash (the one definition, shared
/// with the walk in `storage::verify`).
pub fn dir_line(h: &mut Sha256, rel: &Path, mode: u32, uid: u32, gid: u32) {
    h.update(rel.as_os_str().as_encoded_bytes());
    h.update(format!("\0{:o} {}:{}\n", mode & 0o7777, uid, gid));
}

/// The count kept while a layer is unpacked.
#[derive(Debug, Default)]
pub struct Tally {
    entries: u64,
    bytes: u64,
    /// Directories: path, mode, owner.
    dirs: Vec<(PathBuf, u32, u32, u32)>,
    made: HashSet<PathBuf>,
    names: Sha256,
    broken: bool,
}

impl Tally {
    /// Counts an entry unpacked at `rel` (`first`: not named before in the stream),
    /// with the mode and owner the unpacker gave it.
    #[allow(clippy::too_many_arguments)]
    pub fn note(
        &mut self,
        rel: &Path,
        first: bool,
        kind: EntryType,
        size: u64,
        mode: u32,
        uid: u32,
        gid: u32,
    ) {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let placed = parent.as_os_str().is_empty() || self.made.contains(parent);
        if !first || !placed {
            self.broken = true;
            return;
        }
        self.entries += 1;
        self.names.update(rel.as_os_str().as_encoded_bytes());
        self.names.update([0]);
        match kind {
            EntryType::Directory => {
                self.made.insert(rel.to_path_buf());
                self.dirs.push((rel.to_path_buf(), mode, uid, gid));
            }
            EntryType::Regular | EntryType::Continuous => self.bytes += size,
            EntryType::Symlink => {}
            _ => self.broken = true,
        }
    }

    /// Something the count cannot follow happened to the tree.
    pub fn broken(&mut self) {
        self.broken = true;
    }

    /// The summary, unless the stream was not a simple one.
    pub fn finish(mut self) -> Option<Summary> {
        if self.broken {
            return None;
        }
        // A walk visits each directory's children sorted by name, depth first: the
        // order of paths compared component by component.
        self.dirs
            .sort_by(|a, b| a.0.components().cmp(b.0.components()));
        let mut h = Sha256::new();
        for (rel, mode, uid, gid) in &self.dirs {
            dir_line(&mut h, rel, *mode, *uid, *gid);
        }
        Some(Summary {
            entries: self.entries,
            bytes: self.bytes,
            dirs: hex::encode(h.finalize()),
            names: Some(hex::encode(self.names.finalize())),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::layer::unpack::{unpack, UnpackOptions};
    use std::io::Cursor;

    /// A tar like a COPY layer's: directories before their contents, sorted; `/` ends a
    /// directory, `->` makes a symlink, `=>` a hardlink.
    fn tar_of(entries: &[(&str, &str, u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, body, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(*mode);
            h.set_mtime(5);
            h.set_uid(7);
            h.set_gid(8);
            h.set_size(0);
            if path.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            } else if let Some(t) = body.strip_prefix("->") {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, path, t).unwrap();
            } else if let Some(t) = body.strip_prefix("=>") {
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, path, t).unwrap();
            } else {
                h.set_size(body.len() as u64);
                b.append_data(&mut h, path, body.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn walked(tree: &std::path::Path) -> super::Summary {
        let (entries, bytes, dirs) = crate::storage::verify::summarize(tree).unwrap();
        super::Summary {
            entries,
            bytes,
            dirs,
            names: None,
        }
    }

    /// A counted summary as a walk gives it (no names).
    fn as_walked(s: Option<super::Summary>) -> Option<super::Summary> {
        s.map(|s| super::Summary { names: None, ..s })
    }

    /// The count equals the walk, unpacked fresh and patched over an older version; a
    /// stream the count cannot follow gives none.
    #[test]
    fn the_count_is_what_a_walk_of_the_tree_finds() {
        let old = tar_of(&[
            ("a/", "", 0o755),
            ("a/x", "xx", 0o644),
            ("gone", "g", 0o600),
        ]);
        let new = tar_of(&[
            ("a/", "", 0o2750),
            ("a/b/", "", 0o700),
            ("a/b/c", "ccc", 0o644),
            ("a/l", "->b/c", 0o777),
            ("a/x", "xyz", 0o644),
            ("z", "", 0o644),
        ]);
        let opts = UnpackOptions::default();
        let fresh = tempfile::tempdir().unwrap();
        let stats = unpack(Cursor::new(new.clone()), fresh.path(), &opts).unwrap();
        if !opts.preserve_owners {
            assert_eq!(stats.summary, None, "owners are this process's");
            return;
        }
        assert_eq!(as_walked(stats.summary), Some(walked(fresh.path())));
        let patched = tempfile::tempdir().unwrap();
        unpack(Cursor::new(old), patched.path(), &opts).unwrap();
        let reuse = UnpackOptions {
            reuse: true,
            ..opts.clone()
        };
        let stats = unpack(Cursor::new(new), patched.path(), &reuse).unwrap();
        assert_eq!(as_walked(stats.summary), Some(walked(patched.path())));
        for odd in [
            tar_of(&[
                ("a/", "", 0o755),
                ("a/x", "1", 0o644),
                ("a/h", "=>a/x", 0o644),
            ]),
            tar_of(&[("a/x", "1", 0o644)]),
            tar_of(&[("a", "1", 0o644), ("a", "2", 0o644)]),
            tar_of(&[("d/", "", 0o755), ("d/.wh.x", "", 0o644)]),
        ] {
            let t = tempfile::tempdir().unwrap();
            let stats = unpack(Cursor::new(odd), t.path(), &opts).unwrap();
            assert_eq!(stats.summary, None);
        }
    }
}
