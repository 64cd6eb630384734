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

/// Replaces `path` with `contents` through a temp file in the same directory
/// (`.<name>.<owner tag>-XXXXXX.tmp`) and a rename, creating the directory first: a reader
/// sees the old or the new file, never a part. No fsync (the store's
/// `Store::write_atomic` is the durable variant).
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent directory", path.display())))?;
    fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut tmp = temp_file_in(dir, &name)?;
    tmp.write_all(contents)?;
    persist(tmp, path)?;
    Ok(())
}

/// A new temp file in `dir` named for its writer, `.<name>.<owner tag>-XXXXXX.tmp` (see
/// [`temp_writer`]), for content written before its final name is known or streamed:
/// [`persist`] moves it into place, dropping it removes it, and one a killed keel left is
/// reclaimed once that keel is gone. `dir` must be one `reclaim` sweeps.
pub fn temp_file_in(dir: &Path, name: &str) -> io::Result<tempfile::NamedTempFile> {
    let prefix = temp_prefix(name);
    tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
}

/// Copies `from` to `to` (`std::fs::copy`: the content and the permission bits) through
/// a temp name beside `to` carrying this keel's owner tag ([`temp_file_in`]) and a
/// rename: a copy killed half-way never leaves a short file under the final name, and its
/// temp name is reclaimed once the keel is gone.
pub fn copy_atomic(from: &Path, to: &Path) -> io::Result<u64> {
    let (Some(dir), Some(name)) = (to.parent(), to.file_name()) else {
        return Err(io::Error::other(format!(
            "{} has no parent directory",
            to.display()
        )));
    };
    let mut src = File::open(from)?;
    let mut tmp = temp_file_in(dir, &name.to_string_lossy())?;
    let n = io::copy(&mut src, &mut tmp)?;
    tmp.as_file()
        .set_permissions(src.metadata()?.permissions())?;
    persist(tmp, to)?;
    Ok(n)
}

/// A new temp directory in `dir` named for its writer like [`temp_file_in`]'s files
/// (`.<name>.<owner tag>-XXXXXX.tmp`), for work filled in place and then renamed or
/// dropped (a download unpacked in a cache directory).
pub fn temp_dir_in(dir: &Path, name: &str) -> io::Result<tempfile::TempDir> {
    let prefix = temp_prefix(name);
    tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempdir_in(dir)
}

/// A new scratch directory in the store's `tmp/` (or another directory `keel gc` sweeps
/// the same way), named `<owner tag>-<what>-XXXXXX`: gc removes one a killed keel left at
/// once, even while other keels run, and never a live keel's. Dropping it removes it.
pub fn scratch_dir_in(dir: &Path, what: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{}-{what}-", owner_tag()))
        .tempdir_in(dir)
}

/// A new scratch file named like [`scratch_dir_in`]'s directories.
pub fn scratch_file_in(dir: &Path, what: &str) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!("{}-{what}-", owner_tag()))
        .tempfile_in(dir)
}

/// `.<name>.<owner tag>-`: the start of this process's temp names (see [`temp_writer`]).
fn temp_prefix(name: &str) -> String {
    format!(".{name}.{}-", owner_tag())
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
            crate::fault::point_at("hostfs.exchanged", &path.to_string_lossy());
            fs::remove_file(tmp)
        }
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL) => fs::rename(tmp, path),
        Err(e) => {
            let _ = fs::remove_file(tmp);
            Err(e.into())
        }
    }
}

/// [`write_replacing`] through `.<name>.<owner tag>.tmp` beside `path`, creating the
/// directory when it is missing. A writer killed before the temp name is removed leaves
/// it behind; its name says whose it was ([`temp_writer`]), so `keel gc` can tell.
pub fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return write_atomic(path, contents);
    };
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), owner_tag()));
    match write_replacing(path, &tmp, contents) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            write_replacing(path, &tmp, contents)
        }
        done => done,
    }
}

/// This process's owner tag (`p<pid>s<start time>`, `store::lease::Owner::tag`): a
/// later process that reuses the pid has another start time, so a temp name carrying the
/// tag names its writer for good.
fn owner_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| crate::store::lease::Owner::current().tag())
}

/// Who wrote a temp file that keel leaves beside the file it replaces, as its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempWriter {
    /// The name carries the writer's owner tag: [`replace`]'s `.<name>.<tag>.tmp`,
    /// [`write_atomic`]'s `.<name>.<tag>-XXXXXX.tmp`, a lease's `.<tag>-<id>.tmp`.
    Owner(crate::store::lease::Owner),
    /// Only a pid, which a later process may reuse: older keels' `.<name>.<pid>.tmp` and
    /// push memo `.<digest>.<pid>`, a shipped buildpack's `<dir>.tmp-<pid>`.
    Pid(i32),
    /// No writer at all: `tempfile`'s default `.tmpXXXXXX` (older keels' [`write_atomic`],
    /// container records and remote ADD downloads), `.tmp-XXXXXX`, `.fetch-XXXXXX`,
    /// `.download-XXXXXX`.
    Unknown,
}

/// The writer of temp file `name` (see [`TempWriter`]); `None` when `name` is not one of
/// keel's temp names. Pure: the caller decides what a dead writer's file is.
pub fn temp_writer(name: &str) -> Option<TempWriter> {
    let random = |rest: &str| rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric());
    for prefix in [".tmp", ".tmp-", ".fetch-", ".download-"] {
        if name.strip_prefix(prefix).is_some_and(random) {
            return Some(TempWriter::Unknown);
        }
    }
    let pid = |s: &str| s.parse::<i32>().ok().filter(|p| *p > 0);
    let shipped = name.rsplit_once(".tmp-").filter(|(dir, _)| !dir.is_empty());
    if let Some(p) = shipped.and_then(|(_, p)| pid(p)) {
        return Some(TempWriter::Pid(p));
    }
    let body = name.strip_prefix('.')?;
    let (body, suffixed) = match body.strip_suffix(".tmp") {
        Some(b) => (b, true),
        None => (body, false),
    };
    let (head, tail) = match body.rsplit_once('.') {
        Some((h, t)) => (Some(h), t),
        None => (None, body),
    };
    if suffixed {
        if let Some(o) = crate::store::lease::Owner::from_tag(tail) {
            return Some(TempWriter::Owner(o));
        }
    }
    // A bare pid needs the name before it (`.<name>.<pid>`), with or without `.tmp`.
    head.filter(|h| !h.is_empty())
        .and_then(|_| pid(tail))
        .map(TempWriter::Pid)
}

/// Renames the finished temp file `tmp` onto `path` (`NamedTempFile::persist`), the one
/// way keel moves a temp file into place; on failure the temp file is removed.
pub fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> io::Result<File> {
    crate::fault::point_at("hostfs.temp-written", &path.to_string_lossy());
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

    /// Every scratch entry in the store's `tmp/` names its keel the way gc's sweep reads
    /// it (`Owner::from_tag`), so a killed keel's is removed while others run.
    #[test]
    fn scratch_names_carry_this_keels_owner_tag() {
        use crate::store::lease::Owner;
        let tmp = tempfile::tempdir().unwrap();
        let dir = scratch_dir_in(tmp.path(), "debootstrap").unwrap();
        let file = scratch_file_in(tmp.path(), "zstd").unwrap();
        for p in [dir.path(), file.path()] {
            let name = p.file_name().unwrap().to_string_lossy();
            assert_eq!(Owner::from_tag(&name), Some(Owner::current()), "{name}");
        }
    }

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
    fn replace_leaves_no_temp_name_and_its_names_carry_the_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("d/index");
        replace(&p, b"one").unwrap();
        replace(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(tmp.path().join("d")).unwrap().count(), 1);
        let me = crate::store::lease::Owner::current();
        let named = format!(".index.{}.tmp", owner_tag());
        assert_eq!(temp_writer(&named), Some(TempWriter::Owner(me)));
    }

    #[test]
    fn temp_names_say_their_writer() {
        use crate::store::lease::Owner;
        let o = Owner {
            pid: 12,
            start: 345,
        };
        let cases: &[(&str, Option<TempWriter>)] = &[
            // replace, write_atomic, a lease rewrite
            (".index.p12s345.tmp", Some(TempWriter::Owner(o))),
            (".a1b2.json.p12s345-Xy9AbC.tmp", Some(TempWriter::Owner(o))),
            (".p12s345-0a1b2c3d.tmp", Some(TempWriter::Owner(o))),
            // older keels and writers with only a pid
            (".index.12.tmp", Some(TempWriter::Pid(12))),
            (".a1b2c3.12", Some(TempWriter::Pid(12))),
            ("node-0123456789abcdef.tmp-12", Some(TempWriter::Pid(12))),
            (".a.tmp-b.p12s345-Xy9AbC.tmp", Some(TempWriter::Owner(o))),
            // no writer
            (".tmpAbC123", Some(TempWriter::Unknown)),
            (".tmp-AbC123", Some(TempWriter::Unknown)),
            (".fetch-AbC123", Some(TempWriter::Unknown)),
            (".download-AbC123", Some(TempWriter::Unknown)),
            // not temp names
            ("index", None),
            ("a1b2.json", None),
            (".lock", None),
            (".new-abc", None),
            (".rm-abc", None),
            (".request-abc.json", None),
            ("app.json", None),
            ("x.seeded", None),
            (".tmpAbC1234", None),
            (".tmp", None),
            (".12", None),
            (".12.tmp", None),
            (".index.0.tmp", None),
            (".index.p12.tmp", None),
            (".tmp-12", None),
            (".index.p12s345", None),
        ];
        for (name, want) in cases {
            assert_eq!(temp_writer(name), *want, "{name}");
        }
    }

    /// Session 9 item 4: a streamed download, a copied `.deb` and a scratch directory
    /// are named for their writer too, and a copy leaves only the whole file.
    #[test]
    fn temp_files_dirs_and_copies_carry_the_writer() {
        use std::os::unix::fs::PermissionsExt;
        let me = Some(TempWriter::Owner(crate::store::lease::Owner::current()));
        let tmp = tempfile::tempdir().unwrap();
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        let f = temp_file_in(tmp.path(), "download").unwrap();
        assert!(name(f.path()).starts_with(".download."), "{:?}", f.path());
        assert_eq!(temp_writer(&name(f.path())), me);
        let d = temp_dir_in(tmp.path(), "download").unwrap();
        assert_eq!(temp_writer(&name(d.path())), me);
        drop((f, d));
        let src = tmp.path().join("a_1.0_amd64.deb");
        fs::write(&src, b"package").unwrap();
        fs::set_permissions(&src, Permissions::from_mode(0o640)).unwrap();
        let dest = tmp.path().join("cache/a_1.0_amd64.deb");
        fs::create_dir(tmp.path().join("cache")).unwrap();
        assert_eq!(copy_atomic(&src, &dest).unwrap(), 7);
        assert_eq!(fs::read(&dest).unwrap(), b"package");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let left: Vec<_> = fs::read_dir(tmp.path().join("cache")).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp name is left beside the copy");
    }

    #[test]
    fn write_atomic_refuses_a_path_without_a_parent() {
        assert!(write_atomic(Path::new("/"), b"x").is_err());
    }
}
