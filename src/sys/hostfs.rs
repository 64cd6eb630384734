//! `hostfs`: filesystem writes on host paths keel itself owns. That is keel's state under
//! its root (the store, storage snapshots and unpacked layers, container records, the build
//! cache, leases, locks, temp dirs), outputs the user named on the command line (`--iidfile`,
//! `save -o`, generated integration files) and project files keel generates.
//!
//! Never a path inside an image tree: a path joined into an image root can be redirected
//! by a symlink the image plants. Image trees go through [`super::rootfs::Rootfs`], which
//! resolves every path inside the tree's root.
//!
//! These are the std operations with std's signatures and `io::Error`s, so callers keep
//! their error context (`map_err(io_err("writing", path))`). They exist so that
//! `clippy.toml`'s `disallowed-methods` can keep every filesystem write in `src/sys/`:
//! a new write outside it is a lint error that points here or to `rootfs`.
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;

/// Writes `contents` to `path`, creating or truncating it (`std::fs::write`).
pub fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
    fs::write(path, contents)
}

/// Replaces `path` with `contents` through a temp file in the same directory and a
/// rename, creating the directory first: a reader sees the old or the new file, never a
/// part. No fsync (the store's `Store::write_atomic` is the durable variant).
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent directory", path.display())))?;
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(contents)?;
    persist(tmp, path)?;
    Ok(())
}

/// Replaces `path` with `contents` like [`write_atomic`] (a reader sees the old file or
/// the new one), for files replaced often whose content is read safely when empty:
/// leases, the stat index, a step's last inputs. The temp file `tmp` (same directory,
/// created afresh) and `path` are exchanged (`renameat2(RENAME_EXCHANGE)`), then `tmp`,
/// holding the old content, is removed. A rename over an existing file makes ext4 start
/// writing the new file's data at once (`auto_da_alloc`): 150–350 µs per small file on
/// the project VM, ~30 µs exchanged. The price is durability: after a crash the new file
/// may be empty (nothing here is fsynced either way). When `path` does not exist yet, or
/// the filesystem cannot exchange (EINVAL), `tmp` is renamed onto it.
pub fn write_replacing(path: &Path, tmp: &Path, contents: &[u8]) -> io::Result<()> {
    let open = || OpenOptions::new().write(true).create_new(true).open(tmp);
    let mut f = match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(tmp)?;
            open()?
        }
        other => other?,
    };
    f.write_all(contents)?;
    drop(f);
    let flags = nix::fcntl::RenameFlags::RENAME_EXCHANGE;
    let at = nix::fcntl::AT_FDCWD;
    match nix::fcntl::renameat2(at, tmp, at, path, flags) {
        Ok(()) => {
            crate::fault::point("hostfs.exchanged");
            fs::remove_file(tmp)
        }
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL) => fs::rename(tmp, path),
        Err(e) => {
            let _ = fs::remove_file(tmp);
            Err(e.into())
        }
    }
}

/// [`write_replacing`] through `.<name>.<pid>.tmp` beside `path`, creating the
/// directory when it is missing.
pub fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return write_atomic(path, contents);
    };
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    match write_replacing(path, &tmp, contents) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            write_replacing(path, &tmp, contents)
        }
        done => done,
    }
}

/// Renames the finished temp file `tmp` onto `path` (`NamedTempFile::persist`), the one
/// way keel moves a temp file into place; on failure the temp file is removed.
pub fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> io::Result<File> {
    tmp.persist(path).map_err(|e| e.error)
}

/// Creates the file at `path` for writing, truncating it (`File::create`).
pub fn create(path: impl AsRef<Path>) -> io::Result<File> {
    File::create(path)
}

/// Creates a new file for writing; fails when `path` exists (`File::create_new`).
pub fn create_new(path: impl AsRef<Path>) -> io::Result<File> {
    File::create_new(path)
}

/// Opens `path` with the caller's options (`OpenOptions::open`): appends, exclusive
/// creation, modes and flags stay the caller's choice.
pub fn open_with(opts: &OpenOptions, path: impl AsRef<Path>) -> io::Result<File> {
    opts.open(path)
}

/// Creates one directory (`std::fs::create_dir`).
pub fn create_dir(path: impl AsRef<Path>) -> io::Result<()> {
    fs::create_dir(path)
}

/// Creates a directory and its missing parents (`std::fs::create_dir_all`).
pub fn create_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    fs::create_dir_all(path)
}

/// Creates a directory with the builder's mode and recursion (`DirBuilder::create`).
pub fn create_dir_with(builder: &DirBuilder, path: impl AsRef<Path>) -> io::Result<()> {
    builder.create(path)
}

/// Removes a file or symlink (`std::fs::remove_file`).
pub fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    fs::remove_file(path)
}

/// Removes an empty directory (`std::fs::remove_dir`).
pub fn remove_dir(path: impl AsRef<Path>) -> io::Result<()> {
    fs::remove_dir(path)
}

/// Removes a directory and everything below it, never following symlinks inside it
/// (`std::fs::remove_dir_all`).
pub fn remove_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    fs::remove_dir_all(path)
}

/// Renames `from` to `to`, replacing `to` (`std::fs::rename`).
pub fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    fs::rename(from, to)
}

/// Copies a file's contents and permissions (`std::fs::copy`).
pub fn copy(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<u64> {
    fs::copy(from, to)
}

/// Creates a hard link `link` to `original` (`std::fs::hard_link`).
pub fn hard_link(original: impl AsRef<Path>, link: impl AsRef<Path>) -> io::Result<()> {
    fs::hard_link(original, link)
}

/// Creates a symlink `link` pointing at `target` (`std::os::unix::fs::symlink`).
pub fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

/// Sets the permissions of `path`, following symlinks (`std::fs::set_permissions`).
pub fn set_permissions(path: impl AsRef<Path>, perm: Permissions) -> io::Result<()> {
    fs::set_permissions(path, perm)
}

/// Sets the permissions of an open file (`File::set_permissions`).
pub fn set_file_permissions(file: &File, perm: Permissions) -> io::Result<()> {
    file.set_permissions(perm)
}

/// Changes the owner of `path`, following symlinks (`std::os::unix::fs::chown`).
pub fn chown(path: impl AsRef<Path>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    std::os::unix::fs::chown(path, uid, gid)
}

/// Changes the owner of `path` itself, never a symlink's target (`lchown`).
pub fn lchown(path: impl AsRef<Path>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    std::os::unix::fs::lchown(path, uid, gid)
}

/// Changes the owner of an open file (`fchown`).
pub fn fchown(fd: impl AsFd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    std::os::unix::fs::fchown(fd, uid, gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_creates_the_directory_and_replaces_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a/b/entry.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file is left beside the entry");
    }

    #[test]
    fn write_atomic_refuses_a_path_without_a_parent() {
        assert!(write_atomic(Path::new("/"), b"x").is_err());
    }
}
