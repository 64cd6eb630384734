//! Filesystem syscalls the layer and storage code needs and std does not offer:
//! device nodes, no-follow times and xattrs, `O_NOFOLLOW` creation, overlay mounts.
//!
//! Each function wraps one kernel operation and returns `io::Error`; callers add the
//! entry or snapshot the error is about. Nothing here decides policy.
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::AT_FDCWD;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{makedev, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

/// The kind of special file `mknod` creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Char,
    Block,
    Fifo,
}

/// Creates a device node or fifo at `path` (which must not exist).
pub fn mknod(path: &Path, kind: NodeKind, perm: u32, major: u64, minor: u64) -> io::Result<()> {
    let sflag = match kind {
        NodeKind::Char => SFlag::S_IFCHR,
        NodeKind::Block => SFlag::S_IFBLK,
        NodeKind::Fifo => SFlag::S_IFIFO,
    };
    nix::sys::stat::mknod(
        path,
        sflag,
        Mode::from_bits_truncate(perm),
        makedev(major, minor),
    )?;
    Ok(())
}

/// True when the process runs with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The major number of a `st_rdev` value.
pub fn dev_major(dev: u64) -> u32 {
    nix::sys::stat::major(dev) as u32
}

/// The minor number of a `st_rdev` value.
pub fn dev_minor(dev: u64) -> u32 {
    nix::sys::stat::minor(dev) as u32
}

/// Changes the owner of `path` without following a final symlink.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// Sets access and modification time of `path` (a symlink itself, never its target).
pub fn set_times_nofollow(path: &Path, secs: i64, nanos: i64) -> io::Result<()> {
    let t = TimeSpec::new(secs, nanos);
    nix::sys::stat::utimensat(AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink)?;
    Ok(())
}

/// Creates a new regular file for writing; fails if anything (even a dangling symlink)
/// already exists at `path`, and never follows a symlink in the final component.
pub fn create_file_nofollow(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o777)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Writes `bytes` to `path` (replacing a regular file there, never following a symlink
/// in the final component) and gives it exactly `mode`, whatever the process's umask.
pub fn write_file_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode & 0o7777)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
    f.write_all(bytes)
}

/// Opens `rel` under the directory `root` for reading without following any symlink
/// and without leaving `root` (openat2 `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), so a
/// tree that changes under us cannot make us read a host file. Kernels before 5.6
/// lack openat2; there the final component alone is protected (`O_NOFOLLOW`).
pub fn open_beneath(root: &File, rel: &Path) -> io::Result<File> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    match nix::fcntl::openat2(root, rel, how) {
        Ok(fd) => Ok(File::from(fd)),
        Err(nix::errno::Errno::ENOSYS) => {
            let fd = nix::fcntl::openat(
                root,
                rel,
                OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )?;
            Ok(File::from(fd))
        }
        Err(e) => Err(e.into()),
    }
}

/// What `lstat` says of a directory entry, as [`list_lstat`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryStat {
    pub kind: super::rootfs::Kind,
    /// Permission bits (incl. setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl EntryStat {
    fn of(st: &nix::sys::stat::FileStat) -> EntryStat {
        EntryStat {
            kind: super::rootfs::Kind::of(st),
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            dev: st.st_dev,
            ino: st.st_ino,
            mtime_ns: st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128,
            ctime_ns: st.st_ctime as i128 * 1_000_000_000 + st.st_ctime_nsec as i128,
        }
    }
}

/// What `lstat` says of `path` (a symlink itself, never its target).
pub fn lstat(path: &Path) -> io::Result<EntryStat> {
    Ok(EntryStat::of(&nix::sys::stat::lstat(path)?))
}

/// Lists the directory `dir` (refused if it is a symlink) and `lstat`s each entry
/// but "." and ".." relative to the open directory: one `getdents` per buffer and one
/// `fstatat` per entry, with no path walk and no allocation per entry (a context walk of
/// 10,000 files is mostly these calls). `each` gets the name and the entry's lstat
/// result; the outer error is opening or reading the directory.
pub fn list_lstat<E>(
    dir: &Path,
    mut each: impl FnMut(&std::ffi::OsStr, io::Result<EntryStat>) -> Result<(), E>,
) -> io::Result<Result<(), E>> {
    use nix::fcntl::{AtFlags, OFlag};
    use std::os::unix::ffi::OsStrExt;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // Owned, so nothing rewinds the directory (an lseek) when the listing ends.
    let entries = nix::dir::Dir::open(dir, flags, Mode::empty())?.into_iter();
    let fd = entries.as_raw_fd();
    for e in entries {
        let e = e?;
        let name = e.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        // SAFETY: `fd` is the directory `entries` owns and closes only when this loop
        // (which consumes it) ends, after this borrow's last use.
        let dirfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let st = nix::sys::stat::fstatat(dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|st| EntryStat::of(&st))
            .map_err(io::Error::from);
        if let Err(e) = each(std::ffi::OsStr::from_bytes(name.to_bytes()), st) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// Sets an extended attribute on `path` itself (never a symlink's target).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    xattr::set(path, name, value)
}

/// Reads an extended attribute of `path` itself; `None` when it is not set.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    xattr::get(path, name)
}

/// Removes an extended attribute of `path` itself; a missing one is not an error.
pub fn remove_xattr(path: &Path, name: &str) -> io::Result<()> {
    match xattr::remove(path, name) {
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
        r => r,
    }
}

/// Lists extended attribute names of `path` itself, sorted for reproducible output.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = xattr::list(path)?
        .filter_map(|n| n.into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// The kernel's limit on the mount data string (one page).
const MOUNT_DATA_MAX: usize = 4000;

/// Mounts overlayfs at `target`. `lowers` are listed top-most first. When the option
/// string would overflow the one-page mount data limit, lower directories are passed
/// as short `/proc/self/fd/N` paths of directory descriptors held open for the call
/// (overlayfs resolves each lowerdir path, following the magic link).
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    volatile: bool,
) -> io::Result<()> {
    let tail = format!(
        ",upperdir={},workdir={},index=off,{},metacopy=off{}",
        escape_overlay_path(upper),
        escape_overlay_path(work),
        overlay_metadata_option(),
        if volatile { ",volatile" } else { "" },
    );
    mount_overlay_with(lowers, target, &tail)
}

/// Mounts a read-only overlay of `lowers` (top-most first, at least two) at `target`:
/// no upper or work directory, so nothing for the kernel to set up or clean.
pub fn mount_overlay_read_only(lowers: &[PathBuf], target: &Path) -> io::Result<()> {
    mount_overlay_with(lowers, target, &format!(",{}", overlay_metadata_option()))
}

/// In a user namespace overlayfs keeps its metadata (whiteouts, opaque directories) in
/// `user.overlay.*` (`userxattr`, which implies redirect_dir=nofollow and refuses an
/// explicit redirect_dir).
fn overlay_metadata_option() -> &'static str {
    if super::userns::rootless_cached() {
        "userxattr"
    } else {
        "redirect_dir=off"
    }
}

/// [`mount_overlay`] with the options after `lowerdir=` given.
fn mount_overlay_with(lowers: &[PathBuf], target: &Path, tail: &str) -> io::Result<()> {
    let plain: Vec<String> = lowers.iter().map(|p| escape_overlay_path(p)).collect();
    let mut held = Vec::new();
    let lower_opt =
        if plain.iter().map(|s| s.len() + 1).sum::<usize>() + tail.len() + 9 < MOUNT_DATA_MAX {
            plain.join(":")
        } else {
            let mut short = Vec::with_capacity(lowers.len());
            for l in lowers {
                let f = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
                    .open(l)?;
                short.push(format!("/proc/self/fd/{}", f.as_raw_fd()));
                held.push(f);
            }
            short.join(":")
        };
    let data = format!("lowerdir={lower_opt}{tail}");
    if data.len() >= MOUNT_DATA_MAX {
        return Err(io::Error::other(format!("overlay mount options are {} bytes, more than one page even with short lower paths ({} layers)", data.len(), lowers.len())));
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )?;
    drop(held);
    Ok(())
}

/// Escapes the characters overlayfs's option parser treats specially (`,` separates
/// options, `:` separates lower dirs, `\\` escapes).
fn escape_overlay_path(p: &Path) -> String {
    let mut out = String::new();
    for ch in p.display().to_string().chars() {
        if matches!(ch, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Detaches the mount at `target` (lazily, so a busy mount still leaves the table).
pub fn unmount(target: &Path) -> io::Result<()> {
    nix::mount::umount2(target, MntFlags::MNT_DETACH)?;
    Ok(())
}

/// The errno a filesystem returns for an `O_DIRECT` write it cannot take (misaligned, or
/// no direct I/O at all).
pub const EINVAL: i32 = libc::EINVAL;

/// Opens an existing file for writes that bypass the page cache (`O_DIRECT`): each write
/// must be aligned, and fails with `EINVAL` where the filesystem cannot take it. Fails
/// where the filesystem has no direct I/O (tmpfs).
pub fn open_direct_for_write(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path)
}

/// Starts writing back `len` bytes of `file` from `offset` without waiting for them (or
/// for a disk cache flush): a later fsync then has less left to wait for.
pub fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: sync_file_range only reads its integer arguments; the fd is open for `file`'s lifetime.
    let r = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// When keel runs as root and has just written `path` in a tree another user owns (a
/// project's `.keel/` stamps, an iid file): gives `path`, and the root-owned directories
/// between it and the nearest ancestor that user owns, to that user, so a root `make`
/// does not lock the owner out of their own tree. Does nothing when not root or when no
/// ancestor belongs to another user.
///
/// The walk down from that ancestor opens each component with `O_NOFOLLOW` and changes
/// the opened file (`fchown`), so a component swapped for a symlink meanwhile is refused,
/// never followed; a regular file with other hard links is left alone.
pub fn give_to_tree_owner(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // Rootless, everything keel writes already belongs to the user.
    if !is_root() || super::userns::rootless_cached() {
        return Ok(());
    }
    let abs = std::path::absolute(path)?;
    let mut names = vec![abs
        .file_name()
        .ok_or_else(|| io::Error::other("no file name"))?
        .to_os_string()];
    let mut anc = abs.parent();
    let (top, uid, gid) = loop {
        let Some(a) = anc else { return Ok(()) };
        let m = std::fs::metadata(a)?;
        if m.uid() != 0 {
            break (a.to_path_buf(), m.uid(), m.gid());
        }
        match a.file_name() {
            Some(n) => names.push(n.to_os_string()),
            None => return Ok(()),
        }
        anc = a.parent();
    };
    let flags = nix::fcntl::OFlag::O_NOFOLLOW
        | nix::fcntl::OFlag::O_CLOEXEC
        | nix::fcntl::OFlag::O_RDONLY
        | nix::fcntl::OFlag::O_NONBLOCK;
    let mut dir = nix::fcntl::open(&top, flags | nix::fcntl::OFlag::O_DIRECTORY, Mode::empty())?;
    if nix::sys::stat::fstat(&dir)?.st_uid != uid {
        return Ok(()); // changed under us: leave everything as it is
    }
    for name in names.iter().rev() {
        let fd = nix::fcntl::openat(&dir, name.as_os_str(), flags, Mode::empty())?;
        let st = nix::sys::stat::fstat(&fd)?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let single = st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_nlink == 1;
        if st.st_uid == 0 && (is_dir || single) {
            nix::unistd::fchown(
                &fd,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )?;
        }
        if !is_dir {
            break;
        }
        dir = fd;
    }
    Ok(())
}

/// A file's bytes mapped read-only (`mmap`, private, populated up front), read in place
/// instead of copied out by `pread`. Only for files that are never changed in place
/// while mapped — the store's blobs, written under a temp name and renamed in whole, and
/// removed only by unlinking (which leaves a mapping intact): a file truncated under the
/// mapping would fault on the bytes it lost.
pub struct MappedFile {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone (unmapped on drop); no
// interior mutability is exposed, so moving or sharing it between threads is sound.
unsafe impl Send for MappedFile {}
// SAFETY: as above: `&MappedFile` only ever reads.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps all of `file` (empty files map to an empty slice without a mapping).
    pub fn map(file: &File) -> io::Result<MappedFile> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
        let Some(size) = std::num::NonZeroUsize::new(len) else {
            return Ok(MappedFile {
                ptr: std::ptr::NonNull::dangling(),
                len: 0,
            });
        };
        // SAFETY: a fresh private read-only mapping of an open file at offset 0 for its
        // current length: it aliases no Rust memory, and `file` may close afterwards (the
        // mapping keeps its own reference).
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_POPULATE,
                file,
                0,
            )
        }?;
        Ok(MappedFile { ptr, len })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes (or dangling with
        // `len` 0), unmapped only on drop, which this borrow of `self` precedes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping made in `map`, of `len` bytes, unmapped once; no borrow
            // of its bytes outlives `self`.
            let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mapped file reads as its bytes, an empty one as nothing, and the mapping
    /// outlives the handle it was made from (and the file's name).
    #[test]
    fn a_mapped_file_reads_as_its_bytes() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let body: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        File::create(&path).unwrap().write_all(&body).unwrap();
        let map = MappedFile::map(&File::open(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(map.bytes(), &body[..]);
        let empty = dir.path().join("empty");
        File::create(&empty).unwrap();
        let map = MappedFile::map(&File::open(&empty).unwrap()).unwrap();
        assert!(map.bytes().is_empty());
    }

    /// Each entry's lstat as `list_lstat` gives it is what std's `symlink_metadata` says
    /// (file, directory, symlink, fifo, a non-UTF-8 name), "." and ".." are not listed,
    /// and a callback's error stops the listing and is returned as it was.
    #[test]
    fn listed_entries_are_lstat_as_std_sees_them() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("file"), b"abc").unwrap();
        std::fs::create_dir(d.join("dir")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();
        mknod(&d.join("fifo"), NodeKind::Fifo, 0o600, 0, 0).unwrap();
        std::fs::write(d.join(std::ffi::OsStr::from_bytes(b"bad\xff")), b"").unwrap();
        let mut seen = Vec::new();
        list_lstat(d, |name, st| -> Result<(), ()> {
            seen.push((name.to_os_string(), st.unwrap()));
            Ok(())
        })
        .unwrap()
        .unwrap();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<_> = seen.iter().map(|(n, _)| n.as_bytes().to_vec()).collect();
        let want: Vec<&[u8]> = vec![b"bad\xff", b"dir", b"fifo", b"file", b"link"];
        assert_eq!(names, want);
        for (name, st) in &seen {
            let m = std::fs::symlink_metadata(d.join(name)).unwrap();
            let ft = m.file_type();
            let kind = match () {
                _ if ft.is_file() => crate::sys::rootfs::Kind::File,
                _ if ft.is_dir() => crate::sys::rootfs::Kind::Dir,
                _ if ft.is_symlink() => crate::sys::rootfs::Kind::Symlink,
                _ => crate::sys::rootfs::Kind::Other,
            };
            let from_std = EntryStat {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: m.size(),
                dev: m.dev(),
                ino: m.ino(),
                mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            };
            assert_eq!(*st, from_std, "{name:?}");
            assert_eq!(lstat(&d.join(name)).unwrap(), from_std, "{name:?}");
        }
        use crate::sys::rootfs::Kind;
        let kind = |n: &str| seen.iter().find(|(x, _)| x == n).unwrap().1.kind;
        assert_eq!(kind("dir"), Kind::Dir);
        assert_eq!(kind("file"), Kind::File);
        assert_eq!(kind("link"), Kind::Symlink);
        assert_eq!(kind("fifo"), Kind::Other);
        let mut calls = 0;
        let stopped = list_lstat(d, |_, _| {
            calls += 1;
            Err("stop")
        })
        .unwrap();
        assert_eq!((stopped, calls), (Err("stop"), 1));
    }

    /// A directory swapped for a symlink between the walk's lstat and its open (a tree
    /// changing under keel) is refused, not followed: nothing behind the link is listed.
    #[test]
    fn a_symlink_is_never_listed_through() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("canary"), b"secret").unwrap();
        let link = tmp.path().join("swapped");
        std::os::unix::fs::symlink(&host, &link).unwrap();
        let mut seen = Vec::new();
        let r = list_lstat(&link, |name, _| -> Result<(), ()> {
            seen.push(name.to_os_string());
            Ok(())
        });
        let e = r.expect_err("a symlink is not opened as a directory");
        // O_DIRECTORY | O_NOFOLLOW on a symlink: ENOTDIR (ELOOP on some kernels).
        assert!(
            matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)),
            "{e}"
        );
        assert!(seen.is_empty(), "listed through the link: {seen:?}");
    }

    #[test]
    fn overlay_paths_are_escaped() {
        assert_eq!(
            escape_overlay_path(Path::new("/a,b:c\\d")),
            "/a\\,b\\:c\\\\d"
        );
        assert_eq!(escape_overlay_path(Path::new("/plain")), "/plain");
    }

    #[test]
    fn overlay_mounts_paths_with_separators() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root for mount");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("odd,name:here");
        let dirs: Vec<PathBuf> = ["lower", "upper", "work", "merged"]
            .iter()
            .map(|d| base.join(d))
            .collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(dirs[0].join("f"), b"x").unwrap();
        mount_overlay(&dirs[..1], &dirs[1], &dirs[2], &dirs[3], false).unwrap();
        let ok = dirs[3].join("f").exists();
        unmount(&dirs[3]).unwrap();
        assert!(ok);
    }

    #[test]
    fn overlay_mounts_with_more_lower_dirs_than_a_page_holds() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root for mount");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let long = "l".repeat(120);
        let mut lowers = Vec::new();
        for i in 0..60 {
            let d = tmp.path().join(format!("{long}{i:03}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join(format!("f{i}")), b"x").unwrap();
            lowers.push(d);
        }
        let (up, work, merged) = (
            tmp.path().join("u"),
            tmp.path().join("w"),
            tmp.path().join("m"),
        );
        for d in [&up, &work, &merged] {
            std::fs::create_dir(d).unwrap();
        }
        mount_overlay(&lowers, &up, &work, &merged, false).unwrap();
        let ok = merged.join("f0").exists() && merged.join("f59").exists();
        unmount(&merged).unwrap();
        assert!(ok, "every lower layer is visible in the merged view");
        assert!(!crate::sys::mount::mount_points().unwrap().contains(&merged));
    }
}
