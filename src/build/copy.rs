//! COPY/ADD destination rules (pure): where each selected file lands, and the cache-key
//! entry of each (path, type, mode and owner as they will be in the image, and content
//! digest — never the source mtime, nor the source mode when `--chmod` overrides it).
use std::collections::BTreeMap;

use crate::context::{FileKind, Selection};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CopyError {
    #[error("{instruction} with more than one source needs a destination directory ending in /; write {dest}/")]
    DestNotDir {
        instruction: &'static str,
        dest: String,
    },
    #[error("invalid --chmod value {0:?}: use an octal mode such as 0755")]
    BadChmod(String),
}

/// Owner override from `--chown` (already resolved to numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// One entry to write into the rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOp {
    /// Context-relative source path.
    pub src: String,
    /// Absolute destination path in the image.
    pub dest: String,
    pub kind: FileKind,
    pub mode: u32,
    pub owner: Owner,
    pub link_target: Option<String>,
    /// The source's size (regular files) and mtime in seconds, as the context walk saw
    /// them: what the layer's tar header says (a layer is written without a second stat).
    pub size: u64,
    pub mtime: i64,
    /// A regular file that is a hard link of another file this source copies: the
    /// destination of that one (the first in layer order), which this becomes a hard link
    /// to. docker keeps a context's hard links within one source (tonistiigi/fsutil
    /// `copy/copy.go` `getLinkSource`); separate sources stay separate files.
    pub link_to: Option<String>,
}

pub fn parse_chmod(s: &str) -> Result<u32, CopyError> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| CopyError::BadChmod(s.to_string()))
}

/// Normalises an absolute container path (`/a/./b/../c/` → `/a/c`).
pub use crate::runtime::spec::clean as clean_abs;

/// Resolves the destination against WORKDIR and decides whether it names a directory.
/// `dest_is_dir_in_image` says whether the (single-file) destination already exists as a
/// directory in the parent image.
pub fn plan<S: std::borrow::Borrow<Selection>>(
    instruction: &'static str,
    selections: &[S],
    dest: &str,
    workdir: &str,
    chmod: Option<u32>,
    chown: Option<Owner>,
    dest_is_dir_in_image: bool,
) -> Result<Vec<CopyOp>, CopyError> {
    let abs = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), dest)
    };
    let ends_slash = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    let single_file = selections.len() == 1 && selections[0].borrow().top.kind != FileKind::Dir;
    if !single_file && selections.len() > 1 && !ends_slash && !dest_is_dir_in_image {
        return Err(CopyError::DestNotDir {
            instruction,
            dest: dest.to_string(),
        });
    }
    let root = clean_abs(&abs);
    let owner_of = |uid: u32, gid: u32| {
        chown.unwrap_or(Owner {
            uid: if chown.is_some() { uid } else { 0 },
            gid: if chown.is_some() { gid } else { 0 },
        })
    };
    let mut ops = Vec::with_capacity(
        selections
            .iter()
            .map(|s| s.borrow().entries.len() + 1)
            .sum(),
    );
    for s in selections {
        let s = s.borrow();
        let into = |rel: &str| clean_abs(&format!("{root}/{rel}"));
        for (f, rel) in s.files() {
            // Into the destination directory, unless one file goes to a file path.
            let into_dir =
                s.top.kind == FileKind::Dir || ends_slash || dest_is_dir_in_image || !single_file;
            let dest = if into_dir { into(rel) } else { root.clone() };
            let mode = match (chmod, f.kind) {
                (Some(m), FileKind::File | FileKind::Dir) => m,
                (_, FileKind::Symlink) => 0o777,
                (None, _) => f.mode,
            };
            ops.push(CopyOp {
                src: f.rel.clone(),
                dest,
                kind: f.kind,
                mode,
                owner: owner_of(f.uid, f.gid),
                link_target: f
                    .link_target
                    .as_ref()
                    .map(|t| t.to_string_lossy().into_owned()),
                size: f.size,
                mtime: f.stamp.mtime_ns.div_euclid(1_000_000_000) as i64,
                link_to: None,
            });
        }
        let first = ops.len() - s.files().len();
        link_hard_links(&mut ops[first..], s);
    }
    Ok(ops)
}

/// Marks the regular files of one selection that share an inode as hard links to the
/// first of their names in layer order ([`hard_link_groups`]; parents before children,
/// as `layer::pack` sorts): its destination is what the others link to.
fn link_hard_links(ops: &mut [CopyOp], s: &Selection) {
    let groups = hard_link_groups(s);
    if groups.is_empty() {
        return;
    }
    let files = s.files();
    let inode = |f: &crate::context::ContextFile| {
        (f.kind == FileKind::File && f.stamp.ino != 0).then_some((f.stamp.dev, f.stamp.ino))
    };
    let firsts: std::collections::HashMap<&str, String> = files
        .iter()
        .zip(ops.iter())
        .filter(|((f, _), _)| inode(f).and_then(|i| groups.get(&i)) == Some(&f.rel.as_str()))
        .map(|((f, _), op)| (f.rel.as_str(), op.dest.clone()))
        .collect();
    for ((f, _), op) in files.iter().zip(ops.iter_mut()) {
        match inode(f).and_then(|i| groups.get(&i)) {
            Some(first) if *first != f.rel => op.link_to = firsts.get(first).cloned(),
            _ => {}
        }
    }
}

/// The inodes more than one of a selection's regular files share, each with the first
/// of its names: the others become hard links to it (in the key, and as the copy's
/// `CopyOp::link_to`). The files are sorted by inode (stably, so equal names keep the
/// walk's order) and runs of one inode read off:
/// a 10,000-file selection usually has no links at all, and a hash map counting every
/// inode cost ~3 ms of the one-file rebuild's key (`hard_link_groups_as_counted_in_a_map`).
pub fn hard_link_groups(sel: &Selection) -> std::collections::HashMap<(u64, u64), &str> {
    let mut inodes: Vec<((u64, u64), &str)> = sel
        .entries
        .iter()
        .filter(|f| f.kind == FileKind::File && f.stamp.ino != 0)
        .map(|f| ((f.stamp.dev, f.stamp.ino), f.rel.as_str()))
        .collect();
    inodes.sort_by_key(|(inode, _)| *inode);
    fn components(rel: &str) -> std::path::Components<'_> {
        std::path::Path::new(rel).components()
    }
    inodes
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|run| run.len() > 1)
        .map(|run| {
            // The first of the smallest in component order, as a walk through the run
            // replacing only on a strictly smaller name finds it.
            let first = run
                .iter()
                .map(|(_, rel)| *rel)
                .reduce(|a, b| match components(b).lt(components(a)) {
                    true => b,
                    false => a,
                })
                .expect("runs are never empty");
            (run[0].0, first)
        })
        .collect()
}

/// The directory a directory source's contents land in (`COPY src/ /app/` → `/app`), or
/// None for a file source. The copy must make it even when the source is empty: BuildKit
/// creates the destination of a directory's contents before copying any of them
/// (tonistiigi/fsutil `copy/copy.go` `prepareTargetDir`: `MkdirAll(dest, 0755, chown)`),
/// so an empty directory still yields `/app`, 0755, owned by `--chown`'s owner or root.
pub fn contents_dest(sel: &Selection, dest: &str, workdir: &str) -> Option<String> {
    if sel.top.kind != FileKind::Dir {
        return None;
    }
    let abs = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), dest)
    };
    Some(clean_abs(&abs))
}

/// The cache-key entries of a copy: destination → "kind mode uid:gid content".
pub fn key_entries(
    ops: &[CopyOp],
    mut content: impl FnMut(&CopyOp) -> String,
) -> BTreeMap<String, String> {
    ops.iter()
        .map(|op| {
            let what = match op.kind {
                FileKind::File => content(op),
                FileKind::Dir => String::new(),
                FileKind::Symlink => format!("-> {}", op.link_target.clone().unwrap_or_default()),
            };
            (
                op.dest.clone(),
                format!(
                    "{:?} {:o} {}:{} {what}",
                    op.kind, op.mode, op.owner.uid, op.owner.gid
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ContextFile;

    fn file(rel: &str, mode: u32) -> ContextFile {
        ContextFile {
            rel: rel.into(),
            kind: FileKind::File,
            mode,
            uid: 1000,
            gid: 1000,
            size: 1,
            link_target: None,
            stamp: Default::default(),
        }
    }
    fn single(rel: &str) -> Selection {
        Selection {
            top: file(rel, 0o644),
            entries: vec![],
            name: rel.rsplit('/').next().unwrap().into(),
        }
    }
    fn dir(rel: &str, files: &[&str]) -> Selection {
        let top = ContextFile {
            rel: rel.into(),
            kind: FileKind::Dir,
            mode: 0o755,
            uid: 1000,
            gid: 1000,
            size: 0,
            link_target: None,
            stamp: Default::default(),
        };
        Selection {
            top,
            entries: files
                .iter()
                .map(|f| file(&format!("{rel}/{f}"), 0o600))
                .collect(),
            name: rel.into(),
        }
    }
    fn sel(rel: &str, kind: FileKind) -> Selection {
        Selection {
            top: ContextFile {
                kind,
                ..file(rel, 0o644)
            },
            entries: vec![],
            name: rel.rsplit('/').next().unwrap().into(),
        }
    }

    /// The definition `hard_link_groups` replaced: every inode counted in a map, its
    /// first name replaced by each later one that is smaller in component order.
    fn hard_link_groups_as_counted_in_a_map(
        sel: &Selection,
    ) -> std::collections::HashMap<(u64, u64), &str> {
        use std::collections::HashMap;
        let mut seen: HashMap<(u64, u64), (&str, usize)> = HashMap::new();
        for f in &sel.entries {
            if f.kind != FileKind::File || f.stamp.ino == 0 {
                continue;
            }
            let e = seen
                .entry((f.stamp.dev, f.stamp.ino))
                .or_insert((f.rel.as_str(), 0));
            let earlier = std::path::Path::new(&f.rel)
                .components()
                .lt(std::path::Path::new(e.0).components());
            if earlier {
                e.0 = f.rel.as_str();
            }
            e.1 += 1;
        }
        seen.into_iter()
            .filter(|(_, (_, n))| *n > 1)
            .map(|(k, (first, _))| (k, first))
            .collect()
    }

    /// Groups of two and three names, names equal in component order (`a/./b`, `a/b`),
    /// the same inode number on two devices, a directory and a symlink sharing an inode
    /// number with files, inode 0, and no links at all: the sorted runs give what the map
    /// gave, for the entries in several orders.
    #[test]
    fn hard_link_groups_are_those_counted_in_a_map() {
        let entry = |rel: &str, kind: FileKind, dev: u64, ino: u64| crate::context::ContextFile {
            stamp: crate::context::FileStamp {
                dev,
                ino,
                ..Default::default()
            },
            ..sel(rel, kind).top
        };
        let entries = vec![
            entry("z/one", FileKind::File, 1, 7),
            entry("a/one", FileKind::File, 1, 7),
            entry("m/one", FileKind::File, 1, 7),
            entry("b/two", FileKind::File, 1, 9),
            entry("b/./two", FileKind::File, 1, 9),
            entry("a/b/two", FileKind::File, 1, 9),
            entry("other-dev", FileKind::File, 2, 7),
            entry("dir", FileKind::Dir, 1, 9),
            entry("link", FileKind::Symlink, 1, 7),
            entry("zero-a", FileKind::File, 1, 0),
            entry("zero-b", FileKind::File, 1, 0),
            entry("alone", FileKind::File, 1, 11),
            entry("a-b", FileKind::File, 3, 5),
            entry("a/b", FileKind::File, 3, 5),
        ];
        let mut orders = vec![entries.clone()];
        orders.push(entries.iter().rev().cloned().collect());
        let mut rotated = entries.clone();
        rotated.rotate_left(5);
        orders.push(rotated);
        for entries in orders {
            let s = Selection {
                entries,
                ..sel("src", FileKind::Dir)
            };
            assert_eq!(
                hard_link_groups(&s),
                hard_link_groups_as_counted_in_a_map(&s)
            );
            assert_eq!(hard_link_groups(&s).len(), 3);
        }
        let none = Selection {
            entries: vec![
                entry("a", FileKind::File, 1, 1),
                entry("b", FileKind::File, 1, 2),
            ],
            ..sel("src", FileKind::Dir)
        };
        assert!(hard_link_groups(&none).is_empty());
    }

    /// A copy's files sharing an inode link to the first of their names in layer order
    /// (`0c` before `sub/c`, whatever the walk's order); a file alone and a file of
    /// inode 0 stay as they are.
    #[test]
    fn hard_linked_files_link_to_the_first_name_in_layer_order() {
        let mut s = dir("h", &["sub/c", "a", "0c", "zero", "b"]);
        let inodes = [(1, 7), (1, 8), (1, 7), (1, 0), (1, 8)];
        for (f, (dev, ino)) in s.entries.iter_mut().zip(inodes) {
            f.stamp.dev = dev;
            f.stamp.ino = ino;
        }
        let ops = plan("COPY", &[s], "/d/", "/", None, None, false).unwrap();
        let links: Vec<(&str, Option<&str>)> = ops
            .iter()
            .map(|o| (o.dest.as_str(), o.link_to.as_deref()))
            .collect();
        assert_eq!(
            links,
            [
                ("/d/sub/c", Some("/d/0c")),
                ("/d/a", None),
                ("/d/0c", None),
                ("/d/zero", None),
                ("/d/b", Some("/d/a")),
            ]
        );
    }

    fn dests(ops: &[CopyOp]) -> Vec<&str> {
        ops.iter().map(|o| o.dest.as_str()).collect()
    }

    #[test]
    fn destinations_follow_the_dockerfile_rules() {
        // A single file to a path without a slash is that path.
        assert_eq!(
            dests(
                &plan(
                    "COPY",
                    &[single("a.txt")],
                    "/x/b.txt",
                    "/",
                    None,
                    None,
                    false
                )
                .unwrap()
            ),
            ["/x/b.txt"]
        );
        // ... unless the path is an existing directory, or ends with a slash.
        assert_eq!(
            dests(&plan("COPY", &[single("a.txt")], "/x", "/", None, None, true).unwrap()),
            ["/x/a.txt"]
        );
        assert_eq!(
            dests(&plan("COPY", &[single("a.txt")], "/x/", "/", None, None, false).unwrap()),
            ["/x/a.txt"]
        );
        // Relative destinations are under WORKDIR.
        assert_eq!(
            dests(
                &plan(
                    "COPY",
                    &[single("a.txt")],
                    "sub/",
                    "/app",
                    None,
                    None,
                    false
                )
                .unwrap()
            ),
            ["/app/sub/a.txt"]
        );
        assert_eq!(
            dests(&plan("COPY", &[single("a.txt")], ".", "/app", None, None, false).unwrap()),
            ["/app/a.txt"]
        );
        // A directory copies its contents, not itself.
        assert_eq!(
            dests(
                &plan(
                    "COPY",
                    &[dir("src", &["m.rs", "l.rs"])],
                    "/app",
                    "/",
                    None,
                    None,
                    false
                )
                .unwrap()
            ),
            ["/app/m.rs", "/app/l.rs"]
        );
        // Several sources need a directory destination.
        let e = plan(
            "COPY",
            &[single("a"), single("b")],
            "/x",
            "/",
            None,
            None,
            false,
        )
        .unwrap_err();
        assert_eq!(
            e,
            CopyError::DestNotDir {
                instruction: "COPY",
                dest: "/x".into()
            }
        );
    }

    #[test]
    fn owners_default_to_root_and_chmod_overrides_the_source_mode_in_the_key() {
        let ops = plan("COPY", &[single("a.txt")], "/a", "/", None, None, false).unwrap();
        assert_eq!(
            (ops[0].owner, ops[0].mode),
            (Owner { uid: 0, gid: 0 }, 0o644)
        );
        let ops = plan(
            "COPY",
            &[single("a.txt")],
            "/a",
            "/",
            Some(0o755),
            Some(Owner { uid: 5, gid: 6 }),
            false,
        )
        .unwrap();
        assert_eq!(
            (ops[0].owner, ops[0].mode),
            (Owner { uid: 5, gid: 6 }, 0o755)
        );
        // With --chmod, the source's own mode does not reach the key.
        let mut other = single("a.txt");
        other.top.mode = 0o600;
        let a = key_entries(
            &plan(
                "COPY",
                &[single("a.txt")],
                "/a",
                "/",
                Some(0o755),
                None,
                false,
            )
            .unwrap(),
            |_| "sha256:1".into(),
        );
        let b = key_entries(
            &plan("COPY", &[other], "/a", "/", Some(0o755), None, false).unwrap(),
            |_| "sha256:1".into(),
        );
        assert_eq!(a, b);
        assert_eq!(parse_chmod("0755").unwrap(), 0o755);
        assert!(parse_chmod("999").is_err());
    }
}
