//! A throwaway copy of part of the build context, for what must see the context as a
//! directory (`RUN --mount=type=bind` from the context): BuildKit mounts the context it
//! received, which never holds the files `.dockerignore` keeps out, so keel copies what
//! `Context::select` allows instead of mounting the host directory. A copy, not hard
//! links: a writable bind (`rw`) must not reach the host's files either.
use std::fs;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{io_err, Context, ContextError, ContextFile, FileKind};

impl Context {
    /// Copies what the source `src` selects (after `.dockerignore`, symlinks kept as
    /// symlinks) into the existing empty directory `scratch`; returns the path to mount:
    /// `scratch/root` for a directory, `scratch/<name>` for a single file.
    pub fn export(&self, src: &str, scratch: &Path) -> Result<PathBuf, ContextError> {
        let selections = self.select(src)?;
        let [sel] = selections.as_slice() else {
            return Err(ContextError::BadPattern {
                pattern: src.to_string(),
                why: "a mount source names one file or directory, not a glob".into(),
            });
        };
        if sel.top.kind != FileKind::Dir {
            let dest = scratch.join(&sel.name);
            self.copy_entry(&sel.top, &dest)?;
            return Ok(dest);
        }
        let root = scratch.join("root");
        self.copy_entry(&sel.top, &root)?;
        let mut dirs = vec![(sel.top.clone(), root.clone())];
        for (f, rel) in sel.files() {
            let dest = root.join(rel);
            if let Some(parent) = dest.parent() {
                // A file re-included (`!dir/keep`) below an ignored directory: the
                // directory itself is not part of the selection, so make it plainly.
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            self.copy_entry(f, &dest)?;
            if f.kind == FileKind::Dir {
                dirs.push((f.clone(), dest));
            }
        }
        // Directory modes last, deepest first: a read-only directory must first be filled.
        for (f, dest) in dirs.iter().rev() {
            fs::set_permissions(dest, fs::Permissions::from_mode(f.mode)).map_err(io_err(dest))?;
        }
        Ok(root)
    }

    /// Recreates one entry at `dest`, with its owner (as root) and, for files, its mode.
    fn copy_entry(&self, f: &ContextFile, dest: &Path) -> Result<(), ContextError> {
        match f.kind {
            FileKind::Dir => match fs::create_dir(dest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dest.is_dir() => {}
                Err(e) => return Err(io_err(dest)(e)),
            },
            FileKind::File => {
                fs::copy(self.path_of(&f.rel), dest).map_err(io_err(dest))?;
            }
            FileKind::Symlink => {
                let target = f.link_target.as_deref().unwrap_or(Path::new(""));
                symlink(target, dest).map_err(io_err(dest))?;
            }
        }
        // Ownership only matters (and only works) for root; a rootless build keeps its own.
        if running_as_root() {
            lchown(dest, Some(f.uid), Some(f.gid)).map_err(io_err(dest))?;
        }
        if f.kind == FileKind::File {
            fs::set_permissions(dest, fs::Permissions::from_mode(f.mode)).map_err(io_err(dest))?;
        }
        Ok(())
    }
}

/// Whether this process runs as root, judged by who owns what it creates: `context/` may
/// not call libc, and the answer only decides whether to copy owners.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_copies_only_what_dockerignore_allows() {
        let d = tempfile::tempdir().unwrap();
        let ctx = d.path().join("ctx");
        for (p, body) in [
            ("keep.txt", "k"),
            ("secret.txt", "s"),
            ("secret/key", "s"),
            ("secret/public.txt", "p"),
            ("sub/a", "a"),
        ] {
            let path = ctx.join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, body).unwrap();
        }
        symlink("secret.txt", ctx.join("link")).unwrap();
        fs::write(
            ctx.join(".dockerignore"),
            "secret.txt\nsecret\n!secret/public.txt\n",
        )
        .unwrap();
        let c = Context::new(&ctx, crate::context::dockerignore(&ctx).unwrap()).unwrap();
        let scratch = d.path().join("scratch");
        fs::create_dir(&scratch).unwrap();
        let root = c.export(".", &scratch).unwrap();
        let mut got: Vec<String> = walkdir::WalkDir::new(&root)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                e.path()
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ".dockerignore",
                "keep.txt",
                "link",
                "secret",
                "secret/public.txt",
                "sub",
                "sub/a"
            ]
        );
        assert_eq!(
            fs::read_link(root.join("link")).unwrap(),
            Path::new("secret.txt")
        );
        let file = scratch.join("one");
        fs::create_dir(&file).unwrap();
        assert_eq!(c.export("sub/a", &file).unwrap(), file.join("a"));
        assert!(matches!(
            c.export("secret.txt", &file),
            Err(ContextError::NotFound(_))
        ));
    }
}
