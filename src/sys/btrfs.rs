//! btrfs subvolume ioctls and `FICLONE` (reflink) file copies: the kernel half of the
//! `btrfs` storage driver and of copy-on-write file copies on any filesystem that can
//! share extents (btrfs, xfs with `reflink=1`).
//!
//! One small function per kernel operation; the driver (`storage::btrfs`) decides what
//! is a subvolume and when. Ioctl numbers and argument layouts are those of the kernel's
//! `include/uapi/linux/btrfs.h`; no `btrfs` command is run.
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

const BTRFS_IOCTL_MAGIC: u8 = 0x94;
/// `BTRFS_PATH_NAME_MAX + 1`.
const VOL_NAME_LEN: usize = 4088;
/// `BTRFS_SUBVOL_NAME_MAX + 1`.
const SUBVOL_NAME_LEN: usize = 4040;
/// `BTRFS_SUBVOL_RDONLY`: the snapshot is made read-only.
const SUBVOL_RDONLY: u64 = 1 << 1;
/// The inode number of every subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
const SUBVOL_ROOT_INO: u64 = 256;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; VOL_NAME_LEN],
}

/// `struct btrfs_ioctl_vol_args_v2` (the qgroup union left zero: no qgroup inherit).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_LEN],
}

// Both structs are 4096 bytes in the kernel's ABI; the ioctl numbers encode that size.
const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<VolArgsV2>() == 4096);

nix::ioctl_write_ptr!(ioc_snap_create_v2, BTRFS_IOCTL_MAGIC, 23, VolArgsV2);
nix::ioctl_write_ptr!(ioc_subvol_create, BTRFS_IOCTL_MAGIC, 14, VolArgs);
nix::ioctl_write_ptr!(ioc_snap_destroy, BTRFS_IOCTL_MAGIC, 15, VolArgs);

/// The NUL-terminated name field of an ioctl argument; refuses names that do not fit or
/// are not a single path component.
fn name_field<const N: usize>(name: &OsStr) -> io::Result<[u8; N]> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= N || b.contains(&0) || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a valid subvolume name"),
        ));
    }
    let mut out = [0u8; N];
    out[..b.len()].copy_from_slice(b);
    Ok(out)
}

/// The directory `path` lives in (opened) and its last component.
fn parent_and_name(path: &Path) -> io::Result<(File, &OsStr)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "path has no parent or name");
    let name = path.file_name().ok_or_else(bad)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        Some(_) => Path::new("."),
        None => return Err(bad()),
    };
    Ok((File::open(parent)?, name))
}

/// True when `path` is on a btrfs filesystem (statfs magic, as docker and podman check).
pub fn is_btrfs(path: &Path) -> io::Result<bool> {
    let st = nix::sys::statfs::statfs(path)?;
    Ok(st.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
}

/// True when `path` (not followed if a symlink) is the root directory of a subvolume.
pub fn is_subvolume(path: &Path) -> io::Result<bool> {
    let m = std::fs::symlink_metadata(path)?;
    Ok(m.is_dir() && m.ino() == SUBVOL_ROOT_INO && is_btrfs(path)?)
}

/// Creates an empty subvolume at `path` (which must not exist).
pub fn create_subvolume(path: &Path) -> io::Result<()> {
    let (dir, name) = parent_and_name(path)?;
    let args = VolArgs {
        fd: 0,
        name: name_field(name)?,
    };
    // SAFETY: args is a valid, initialised btrfs_ioctl_vol_args the kernel only reads.
    unsafe { ioc_subvol_create(dir.as_raw_fd(), &args) }?;
    Ok(())
}

/// Makes `dest` (which must not exist) a snapshot of the subvolume `source`: O(1), and
/// every file shares its extents with the source until either side writes.
pub fn snapshot(source: &Path, dest: &Path, readonly: bool) -> io::Result<()> {
    let src = File::open(source)?;
    let (dir, name) = parent_and_name(dest)?;
    let args = VolArgsV2 {
        fd: src.as_raw_fd() as i64,
        transid: 0,
        flags: if readonly { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: name_field(name)?,
    };
    // SAFETY: args is a valid, initialised btrfs_ioctl_vol_args_v2 the kernel only reads;
    // src stays open for the call.
    unsafe { ioc_snap_create_v2(dir.as_raw_fd(), &args) }?;
    Ok(())
}

/// Deletes the subvolume `path` and everything in it at once (the kernel frees its
/// extents in the background). Fails with ENOTEMPTY if another subvolume is nested in it.
pub fn destroy_subvolume(path: &Path) -> io::Result<()> {
    let (dir, name) = parent_and_name(path)?;
    let args = VolArgs {
        fd: 0,
        name: name_field(name)?,
    };
    // SAFETY: args is a valid, initialised btrfs_ioctl_vol_args the kernel only reads.
    unsafe { ioc_snap_destroy(dir.as_raw_fd(), &args) }?;
    Ok(())
}

/// Makes `to` share all of `from`'s data extents (`FICLONE`, ioctl_ficlone(2)): a
/// metadata-only copy. Fails with EOPNOTSUPP, EXDEV or EINVAL where that cannot be done.
pub fn clone_file(from: &File, to: &File) -> io::Result<()> {
    nix::ioctl_write_int!(ficlone, BTRFS_IOCTL_MAGIC, 9);
    // SAFETY: FICLONE takes the source fd by value and touches no memory of ours; both
    // files stay open for the call.
    unsafe {
        ficlone(
            to.as_raw_fd(),
            from.as_raw_fd() as nix::sys::ioctl::ioctl_param_type,
        )
    }?;
    Ok(())
}

/// Set once the first fallback is logged, so a tree of thousands of files on a
/// filesystem without reflinks logs one debug line, not one per file.
static FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

/// Copies the data of `from` into the empty file `to`: a reflink where the filesystem
/// shares extents, a plain copy otherwise (silently; `-v` shows why, once per process).
/// `src` names `from` for that log line. Returns the bytes in the copy.
pub fn clone_or_copy(from: &mut File, to: &mut File, src: &Path) -> io::Result<u64> {
    match clone_file(from, to) {
        Ok(()) => {
            tracing::trace!(src = %src.display(), "reflinked");
            return Ok(from.metadata()?.len());
        }
        Err(e) => {
            if !FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::debug!(src = %src.display(), "no reflink ({e}); copying file data");
            } else {
                tracing::trace!(src = %src.display(), "no reflink ({e}); copying");
            }
        }
    }
    // std copies with copy_file_range(2), falling back to read/write.
    io::copy(from, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_one_component_that_fits() {
        assert!(name_field::<16>(OsStr::new("abc")).is_ok());
        let f = name_field::<16>(OsStr::new("abc")).unwrap();
        assert_eq!(&f[..4], b"abc\0");
        for bad in ["", "a/b", "a\0b", "0123456789abcdef"] {
            assert!(name_field::<16>(OsStr::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parent_and_name_splits_the_last_component() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("sub");
        let (_, name) = parent_and_name(&sub).unwrap();
        assert_eq!(name, "sub");
        assert!(parent_and_name(Path::new("/")).is_err());
    }
}
