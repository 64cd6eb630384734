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

/// Marks the regular files of one selection that share an inode (`FileStamp` dev and
/// ino) as hard links to the one of them that comes first in layer order (parents
/// before children, as `layer::pack` sorts).
fn link_hard_links(ops: &mut [CopyOp], s: &Selection) {
    use std::collections::HashMap;
    let files = s.files();
    let mut first: HashMap<(u64, u64), usize> = HashMap::new();
    for (i, (f, _)) in files.iter().enumerate() {
        if f.kind != FileKind::File || f.stamp.ino == 0 {
            continue;
        }
        let key = (f.stamp.dev, f.stamp.ino);
        let earlier = |j: usize| {
            let (a, b) = (
                std::path::Path::new(&ops[i].dest),
                std::path::Path::new(&ops[j].dest),
            );
            a.components().cmp(b.components()).is_lt()
        };
        match first.get(&key) {
            Some(&j) if !earlier(j) => {}
            _ => {
                first.insert(key, i);
            }
        }
    }
    for (i, (f, _)) in files.iter().enumerate() {
        let key = (f.stamp.dev, f.stamp.ino);
        match first.get(&key) {
            Some(&j) if j != i && f.kind == FileKind::File && f.stamp.ino != 0 => {
                ops[i].link_to = Some(ops[j].dest.clone());
            }
            _ => {}
        }
    }
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
