//! Mount-table operations: mount, bind, remount, unmount, pivot_root, chroot, and reading
//! `/proc/self/mountinfo`. Option words are the OCI / mount(8) ones (`ro`, `nosuid`, …).
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::error::check_at;
use super::SysError;

/// Splits option words into mount flags and the filesystem data string
/// (words that are not flags, e.g. `mode=755`, are passed to the filesystem).
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Mounts a filesystem of type `fstype` on `target` with option words.
pub fn mount_fs(
    fstype: &str,
    source: &str,
    target: &Path,
    options: &[String],
) -> Result<(), SysError> {
    let (flags, data) = parse_options(options);
    let data = (!data.is_empty()).then_some(data.as_str());
    check_at(
        "mount",
        target,
        nix::mount::mount(Some(source), target, Some(fstype), flags, data),
    )
}

/// Mounts the erofs image file `image` read-only on `target`, file-backed: the kernel
/// (6.12 and later, `CONFIG_EROFS_FS_BACKED_BY_FILE`) reads the file itself, with no loop
/// device to set up or leak (issue 14's erofs layers).
pub fn mount_erofs(image: &Path, target: &Path) -> Result<(), SysError> {
    check_at(
        "mount erofs image",
        target,
        nix::mount::mount(
            Some(image),
            target,
            Some("erofs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        ),
    )
}

/// [`mount_erofs`], then the mount detached at once: the returned handle on its root is
/// all that keeps it (reach it through `/proc/self/fd/N`), so it is gone when the handle
/// is closed or this process dies — nothing is left mounted for anyone to clean up.
pub fn mount_erofs_detached(image: &Path, target: &Path) -> Result<std::os::fd::OwnedFd, SysError> {
    mount_erofs(image, target)?;
    let root = pin(target);
    let detached = umount_detach(target);
    let root = root?;
    detached?;
    Ok(root)
}

/// `fsconfig(2)` commands and `fsmount`/`move_mount` flags (linux/mount.h; the libc
/// crate has the call numbers but not these).
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// A syscall's fd result (or -1 and errno) as an owned fd.
fn fd_of(r: libc::c_long, op: &'static str, path: &Path) -> Result<std::os::fd::OwnedFd, SysError> {
    use std::os::fd::FromRawFd;
    if r < 0 {
        return Err(SysError::at(op, path, std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(r as i32) })
}

/// A syscall's 0 (or -1 and errno) as a result about `path`.
fn zero_or_err(r: libc::c_long, op: &'static str, path: &Path) -> Result<(), SysError> {
    match r {
        0 => Ok(()),
        _ => Err(SysError::at(op, path, std::io::Error::last_os_error())),
    }
}

/// `path` as a C string for the raw mount-API calls (a path holding a NUL is refused).
fn c_path(op: &'static str, path: &Path) -> Result<std::ffi::CString, SysError> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| SysError::at(op, path, std::io::Error::other(e)))
}

/// One `fsconfig(FSCONFIG_SET_STRING)` of `key` to the path `value` on `fs`.
fn fsconfig_path(fs: &std::os::fd::OwnedFd, key: &str, value: &Path) -> Result<(), SysError> {
    use std::os::fd::AsRawFd;
    let key_c = std::ffi::CString::new(key).expect("keys have no NUL");
    let value_c = c_path("fsconfig", value)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; `fs` is an open fs context.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key_c.as_ptr(),
            value_c.as_ptr(),
            0,
        )
    };
    zero_or_err(r, "fsconfig", value)
}

/// Mounts the chunked erofs image `image` read-only with the file `device` as its one
/// extra device (both file-backed, kernel 6.12 and later) and returns the mount detached:
/// the handle on its root is all that keeps it. Through the new mount API (`fsopen`,
/// `fsconfig`, `fsmount`) because the device path is one `fsconfig` string: mount(2)'s
/// option string would split a store path holding a comma.
pub fn erofs_with_device(image: &Path, device: &Path) -> Result<std::os::fd::OwnedFd, SysError> {
    use std::os::fd::AsRawFd;
    let fstype = c"erofs";
    // SAFETY: a NUL-terminated name and flags; the result is checked by `fd_of`.
    let r = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    let fs = fd_of(r, "fsopen erofs for", image)?;
    fsconfig_path(&fs, "source", image)?;
    fsconfig_path(&fs, "device", device)?;
    let none: *const libc::c_char = std::ptr::null();
    // SAFETY: `fs` is an open fs context; CMD_CREATE takes no key or value.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            none,
            none,
            0,
        )
    };
    zero_or_err(r, "mount erofs image", image)?;
    // SAFETY: `fs` holds a created superblock; flags as documented in fsmount(2).
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_RDONLY,
        )
    };
    fd_of(r, "fsmount erofs image", image)
}

/// [`erofs_with_device`], attached at `target` (`move_mount`).
pub fn mount_erofs_with_device(image: &Path, device: &Path, target: &Path) -> Result<(), SysError> {
    use std::os::fd::AsRawFd;
    let mnt = erofs_with_device(image, device)?;
    let to = c_path("move_mount", target)?;
    // SAFETY: `mnt` is a detached mount; the strings are NUL-terminated and outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    zero_or_err(r, "move_mount", target)
}

/// Bind-mounts `source` on `target` (recursively), then remounts read-only when asked:
/// the kernel ignores MS_RDONLY on the initial bind, so it takes a second call.
pub fn bind(source: &Path, target: &Path, readonly: bool) -> Result<(), SysError> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    check_at(
        "bind mount",
        target,
        nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>),
    )?;
    if readonly {
        remount_readonly(target)?;
    }
    Ok(())
}

/// Remounts an existing (bind) mount read-only, keeping nosuid/nodev/noexec.
pub fn remount_readonly(target: &Path) -> Result<(), SysError> {
    let keep = statvfs_flags(target);
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep;
    check_at(
        "remount read-only",
        target,
        nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>),
    )
}

/// The lock-relevant flags of the mount holding `path` (a read-only remount must repeat them).
fn statvfs_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let mut out = MsFlags::empty();
    if let Ok(st) = statvfs(path) {
        let f = st.flags();
        for (fs, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(fs) {
                out |= ms;
            }
        }
    }
    out
}

/// Makes every mount below `path` private, so nothing we mount propagates to the host.
pub fn make_rprivate(path: &Path) -> Result<(), SysError> {
    let flags = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    check_at(
        "make mounts private",
        path,
        nix::mount::mount(None::<&str>, path, None::<&str>, flags, None::<&str>),
    )
}

/// Lazily unmounts `target` (MNT_DETACH).
pub fn umount_detach(target: &Path) -> Result<(), SysError> {
    check_at(
        "umount",
        target,
        nix::mount::umount2(target, MntFlags::MNT_DETACH),
    )
}

/// An `O_PATH` handle on the mount at `target`. Held across a lazy unmount it keeps the
/// detached mount, and so its superblock, alive until it is closed: the unmount returns
/// once the mount has left the mount table, and the expensive part of taking an overlay
/// down — the kernel evicting every dentry and inode it cached (tens of milliseconds after
/// a walk of 10,000 files) — runs when the last such handle is closed, in whichever thread
/// closes it. A process that dies closes it too, so nothing can leak.
pub fn pin(target: &Path) -> Result<std::os::fd::OwnedFd, SysError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(target)
        .map(std::os::fd::OwnedFd::from)
        .map_err(|e| SysError::at("open mount", target, e))
}

/// Makes `new_root` the root of this mount namespace and detaches the old root, using the
/// `pivot_root(".", ".")` idiom (pivot_root(2) notes) so no put_old directory is needed.
pub fn pivot_root(new_root: &Path) -> Result<(), SysError> {
    check_at("chdir", new_root, nix::unistd::chdir(new_root))?;
    check_at("pivot_root", new_root, nix::unistd::pivot_root(".", "."))?;
    // The old root is now stacked on "."; make it private first so the detach does not
    // propagate to the host, then drop it.
    let flags = MsFlags::MS_REC | MsFlags::MS_SLAVE;
    check_at(
        "make old root a slave",
        Path::new("."),
        nix::mount::mount(None::<&str>, ".", None::<&str>, flags, None::<&str>),
    )?;
    check_at(
        "umount old root",
        new_root,
        nix::mount::umount2(".", MntFlags::MNT_DETACH),
    )?;
    check_at("chdir", Path::new("/"), nix::unistd::chdir("/"))
}

/// chroot(2) into `path` and chdir to the new `/`.
pub fn chroot(path: &Path) -> Result<(), SysError> {
    check_at("chroot", path, nix::unistd::chroot(path))?;
    check_at("chdir", Path::new("/"), nix::unistd::chdir("/"))
}

/// Remounts `/` read-only (after pivot_root; `--read-only`).
pub fn remount_root_readonly() -> Result<(), SysError> {
    remount_readonly(Path::new("/"))
}

/// Creates a device node (`mknod(2)`), for hosts where binding host devices is not possible.
pub fn mknod_char(path: &Path, mode: u32, major: u64, minor: u64) -> Result<(), SysError> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    check_at(
        "mknod",
        path,
        mknod(
            path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(mode),
            makedev(major, minor),
        ),
    )
}

/// The mount points listed in `/proc/self/mountinfo`, in table order (field 5, unescaped).
pub fn mount_points() -> Result<Vec<PathBuf>, SysError> {
    Ok(parse_mountinfo(&mount_table()?))
}

/// This process's mount table, `/proc/self/mountinfo`, in one read where it fits: a
/// procfs file's size reads as 0, and `fs::read_to_string` starts with 32-byte reads,
/// each a pass of the kernel over the table up to its position (nine reads for this
/// machine's 22 mounts).
pub fn mount_table() -> Result<String, SysError> {
    use std::io::Read;
    let path = Path::new("/proc/self/mountinfo");
    let mut text = String::with_capacity(64 << 10);
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| SysError::at("read", path, e))?;
    Ok(text)
}

/// Pure part of [`mount_points`]: field 5 of each line with octal escapes (`\040`) undone.
pub fn parse_mountinfo(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(unescape(f)))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let o: Vec<String> = ["nosuid", "ro", "mode=755", "size=64k"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (f, d) = parse_options(&o);
        assert_eq!(f, MsFlags::MS_NOSUID | MsFlags::MS_RDONLY);
        assert_eq!(d, "mode=755,size=64k");
    }

    #[test]
    fn mountinfo_unescapes_paths() {
        let t = "22 27 0:21 / /proc rw,relatime - proc proc rw\n40 31 0:37 / /a\\040b rw - tmpfs x rw\n";
        assert_eq!(
            parse_mountinfo(t),
            vec![PathBuf::from("/proc"), PathBuf::from("/a b")]
        );
    }
}
