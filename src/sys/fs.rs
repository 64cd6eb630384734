//! Filesystem operations std does not offer: special files, extended attributes and
//! setting timestamps on a symlink itself.
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::error::{check_at, SysError};

fn cpath(path: &Path) -> Result<CString, SysError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| SysError::at("path", path, std::io::Error::other(e)))
}

/// The kind of special file to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Char,
    Block,
    Fifo,
}

/// mknod(2) for a device node or FIFO.
pub fn mknod(
    path: &Path,
    kind: Special,
    mode: u32,
    major: u64,
    minor: u64,
) -> Result<(), SysError> {
    use nix::sys::stat::{makedev, Mode, SFlag};
    let flag = match kind {
        Special::Char => SFlag::S_IFCHR,
        Special::Block => SFlag::S_IFBLK,
        Special::Fifo => SFlag::S_IFIFO,
    };
    check_at(
        "mknod",
        path,
        nix::sys::stat::mknod(
            path,
            flag,
            Mode::from_bits_truncate(mode),
            makedev(major, minor),
        ),
    )
}

/// lsetxattr(2): sets an extended attribute on `path` itself (not a symlink's target).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), SysError> {
    let p = cpath(path)?;
    let n =
        CString::new(name).map_err(|e| SysError::at("setxattr", path, std::io::Error::other(e)))?;
    // SAFETY: both strings are NUL-terminated and live across the call; value is a valid slice.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(SysError::at(
            "setxattr",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// lgetxattr(2): an extended attribute of `path` itself, `None` when it is not set.
pub fn get_xattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>, SysError> {
    let p = cpath(path)?;
    let n =
        CString::new(name).map_err(|e| SysError::at("getxattr", path, std::io::Error::other(e)))?;
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings; buf is writable for buf.len() bytes.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
            _ => Err(SysError::at("getxattr", path, e)),
        };
    }
    buf.truncate(r as usize);
    Ok(Some(buf))
}

/// Sets the modification (and access) time of `path` without following a final symlink.
pub fn set_mtime_nofollow(path: &Path, secs: i64, nsecs: i64) -> Result<(), SysError> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(secs, nsecs);
    check_at(
        "utimensat",
        path,
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        ),
    )
}
