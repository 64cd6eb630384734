//! Removing a directory tree in a forked child after this process has gone on: on a
//! filesystem mounted with `discard` and no journal (this project's CI machine), every
//! directory block freed by `rmdir` is discarded inside that call, and a `run --rm`
//! container's snapshot frees eight of them (issue 14). The tree is renamed out of the
//! store's names first (the caller's work); the child then removes it with an algorithm
//! that allocates nothing and keeps O(1) state, since the child of a multi-threaded
//! process should run only system calls, and a tree a container wrote can be as deep as
//! it liked.
use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::SysError;

/// What one `getdents64` buffer holds at most.
const LISTING: usize = 4096;

/// Removes directory `name` in directory `parent` and everything below it, on one
/// filesystem, without following symlinks and without allocating. Depth-first with no
/// stack of its own: it descends into a directory it cannot remove yet, and once that is
/// empty climbs back through `..` and lists its parent again. Returns false, leaving the
/// rest, at the first entry it cannot remove (a mount point, an immutable file, another
/// filesystem below): `keel gc` finishes the job or reports why.
pub fn remove_tree_at(parent: RawFd, name: &CStr) -> bool {
    let Some(top) = open_dir(parent, name) else {
        return false;
    };
    let Some(dev) = device(top) else {
        close(top);
        return false;
    };
    let (mut cur, mut depth) = (top, 0usize);
    loop {
        match empty_dir(cur, dev) {
            Emptied::Done => {}
            Emptied::Into(child) => {
                close(cur);
                (cur, depth) = (child, depth + 1);
                continue;
            }
            Emptied::Stuck => {
                close(cur);
                return false;
            }
        }
        if depth == 0 {
            close(cur);
            // SAFETY: `parent` is a directory fd the caller owns; `name` is NUL-terminated.
            return unsafe { libc::unlinkat(parent, name.as_ptr(), libc::AT_REMOVEDIR) } == 0;
        }
        // The emptied directory goes when its parent is listed again.
        let up = open_dir(cur, c"..");
        close(cur);
        match up {
            Some(fd) => (cur, depth) = (fd, depth - 1),
            None => return false,
        }
    }
}

/// How far [`empty_dir`] got.
enum Emptied {
    /// Every entry is gone.
    Done,
    /// A non-empty subdirectory, opened: empty it first.
    Into(RawFd),
    /// An entry that cannot be removed.
    Stuck,
}

/// Removes the entries of `dir` (on device `dev`) it can: files and empty directories.
fn empty_dir(dir: RawFd, dev: u64) -> Emptied {
    let mut buf = [0u8; LISTING];
    // SAFETY: lseek on a directory fd rewinds its listing; nothing else is touched.
    if unsafe { libc::lseek(dir, 0, libc::SEEK_SET) } != 0 {
        return Emptied::Stuck;
    }
    loop {
        // SAFETY: the kernel writes at most `buf.len()` bytes of dirents into `buf`.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Emptied::Stuck;
        }
        if n == 0 {
            return Emptied::Done;
        }
        let mut at = 0usize;
        while at < n as usize {
            // SAFETY: `at` is the start of a `linux_dirent64` the kernel wrote (it steps
            // by each record's own length and stops at the `n` bytes written); the name
            // is NUL-terminated inside the record. Unaligned reads: the buffer is bytes.
            let (reclen, kind, entry) = unsafe {
                let d = buf.as_ptr().add(at) as *const libc::dirent64;
                let reclen = std::ptr::read_unaligned(std::ptr::addr_of!((*d).d_reclen));
                let kind = std::ptr::read_unaligned(std::ptr::addr_of!((*d).d_type));
                (reclen as usize, kind, CStr::from_ptr((*d).d_name.as_ptr()))
            };
            at += reclen.max(1);
            if matches!(entry.to_bytes(), b"." | b"..") {
                continue;
            }
            match remove_entry(dir, entry, kind, dev) {
                Ok(()) => {}
                Err(Some(child)) => return Emptied::Into(child),
                Err(None) => return Emptied::Stuck,
            }
        }
    }
}

/// Removes `entry` of `dir`. A directory that is not empty is opened and handed back
/// (`Err(Some)`), unless it is on another device; `Err(None)` when it cannot go.
fn remove_entry(dir: RawFd, entry: &CStr, kind: u8, dev: u64) -> Result<(), Option<RawFd>> {
    let flags = if kind == libc::DT_DIR {
        libc::AT_REMOVEDIR
    } else {
        0
    };
    // SAFETY: `dir` is an open directory fd, `entry` a NUL-terminated name in it.
    if unsafe { libc::unlinkat(dir, entry.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    match nix::errno::Errno::last_raw() {
        libc::ENOENT => Ok(()),
        // An unknown type (DT_UNKNOWN) that is a directory.
        libc::EISDIR if flags == 0 => remove_entry(dir, entry, libc::DT_DIR, dev),
        libc::ENOTEMPTY | libc::EEXIST => {
            let child = open_dir(dir, entry).ok_or(None)?;
            match device(child) == Some(dev) {
                true => Err(Some(child)),
                false => {
                    close(child);
                    Err(None)
                }
            }
        }
        _ => Err(None),
    }
}

/// Opens directory `name` in `dir`, never through a symlink.
fn open_dir(dir: RawFd, name: &CStr) -> Option<RawFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `dir` is an open directory fd, `name` NUL-terminated.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    (fd >= 0).then_some(fd)
}

/// The device `fd` is on.
fn device(fd: RawFd) -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` when it returns 0; it is read only then.
    (unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0).then(|| unsafe { st.assume_init() }.st_dev)
}

fn close(fd: RawFd) {
    // SAFETY: each fd here is opened by this module and closed once.
    unsafe { libc::close(fd) };
}

/// Removes directory `name` of `parent` ([`remove_tree_at`]) in a forked child and
/// returns at once; the child is not waited for (it ends on its own, and is reaped by
/// init once this process has exited: call this at a command's end). `hold` (a lock on
/// the tree, say) stays open in the child until it is done. The child first closes every
/// other descriptor it inherited, so nobody reading this process's output waits for it.
pub fn remove_in_child(parent: OwnedFd, name: &CStr, hold: OwnedFd) -> Result<(), SysError> {
    let mut keep = [parent.as_raw_fd(), hold.as_raw_fd()];
    keep.sort_unstable();
    match super::proc::fork()? {
        super::proc::Fork::Child => {
            super::proc::close_all_but(&keep);
            let _ = super::proc::reset_signals();
            let removed = remove_tree_at(parent.as_raw_fd(), name);
            super::proc::exit(if removed { 0 } else { 1 })
        }
        super::proc::Fork::Parent(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn dir_fd(p: &Path) -> OwnedFd {
        let f = std::fs::File::open(p).unwrap();
        OwnedFd::from(f)
    }

    #[test]
    fn a_deep_tree_goes_and_nothing_outside_it_is_followed() {
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("canary"), "keep").unwrap();
        let top = base.path().join("tree");
        // 300 levels (the recursion a container could ask for), files and links at each.
        let mut d = top.clone();
        for i in 0..300 {
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("f{i}")), "x").unwrap();
            std::os::unix::fs::symlink(&outside, d.join("to-outside")).unwrap();
            std::fs::create_dir(d.join("empty")).unwrap();
            d = d.join("sub");
        }
        // Wide too: more names than one listing buffer holds.
        for i in 0..400 {
            std::fs::write(top.join(format!("wide-{i:04}-{}", "n".repeat(40))), "").unwrap();
        }
        let parent = dir_fd(base.path());
        assert!(remove_tree_at(parent.as_raw_fd(), c"tree"));
        assert!(!top.exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("canary")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn an_entry_that_cannot_go_stops_it_without_a_loop() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let top = base.path().join("tree");
        std::fs::create_dir_all(top.join("a/b")).unwrap();
        std::fs::write(top.join("a/b/f"), "x").unwrap();
        // What cannot go: for root, another filesystem mounted below (never entered);
        // for anyone else, a directory it may not list.
        let blocked = top.join("a/blocked");
        std::fs::create_dir(&blocked).unwrap();
        let root = crate::sys::proc::is_root();
        if root {
            nix::mount::mount(
                Some("tmpfs"),
                &blocked,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
        }
        std::fs::write(blocked.join("inside"), "x").unwrap();
        if !root {
            std::fs::set_permissions(&blocked, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
        let parent = dir_fd(base.path());
        let removed = remove_tree_at(parent.as_raw_fd(), c"tree");
        match root {
            true => nix::mount::umount(&blocked).unwrap(),
            false => {
                std::fs::set_permissions(&blocked, std::fs::Permissions::from_mode(0o755)).unwrap()
            }
        }
        assert!(!removed);
        assert!(root || blocked.join("inside").exists());
        assert!(top.exists());
    }

    #[test]
    fn the_child_removes_the_tree_after_the_caller_returned() {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(base.path().join("tree/a/b")).unwrap();
        std::fs::write(base.path().join("tree/a/b/f"), "x").unwrap();
        let parent = dir_fd(base.path());
        let hold = dir_fd(&base.path().join("tree"));
        remove_in_child(parent, c"tree", hold).unwrap();
        let gone = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            !base.path().join("tree").exists()
        });
        assert!(gone, "the child did not remove the tree");
    }
}
