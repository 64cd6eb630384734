//! Files keel writes where the user pointed it: `--iidfile`, `--metadata-file`, the
//! `.keel/` stamps of the make glue, generated integration files.
//!
//! Those paths often lie in a tree another user owns (a root `make` in a developer's
//! checkout, a CI agent running keel as root in a job's workspace). That user can plant
//! symlinks anywhere in their tree — `.keel -> /etc/cron.d` — and a root process that
//! follows them writes wherever the user likes. So the directory walk here opens one
//! component at a time with `O_NOFOLLOW` and, when keel runs as root, refuses a symlink
//! that belongs to anyone but root (root's own links, such as `/var/run -> /run`, are
//! followed as usual). The file itself is written to a fresh temp name in the opened
//! directory (`O_EXCL|O_NOFOLLOW`) and renamed over the final name, which replaces a link
//! planted there instead of writing through it.
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// How [`write`] leaves the file.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserFile {
    /// Exact permission bits; `None` gives 0666 less the umask, as `File::create` does.
    pub mode: Option<u32>,
    /// fsync the file before it replaces the old one.
    pub durable: bool,
}

/// Symlinks followed in one walk before giving up (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Writes `contents` to `path`, atomically, creating missing directories (0777 less the
/// umask). See the module doc for what a root keel refuses on the way.
pub fn write(path: &Path, contents: &[u8], how: UserFile) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} names no file", path.display())))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = open_dir(parent, true)?;
    let tmp = temp_name(name);
    let create = Mode::from_bits_truncate(how.mode.unwrap_or(0o666));
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    let fd = nix::fcntl::openat(&dir, tmp.as_os_str(), flags | OFlag::O_CLOEXEC, create)?;
    let written = fill(fd, contents, how).and_then(|()| {
        nix::fcntl::renameat(&dir, tmp.as_os_str(), &dir, name).map_err(io::Error::from)
    });
    if written.is_err() {
        let _ = nix::unistd::unlinkat(
            &dir,
            tmp.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    written
}

fn fill(fd: OwnedFd, contents: &[u8], how: UserFile) -> io::Result<()> {
    if let Some(mode) = how.mode {
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode))?;
    }
    let mut file = std::fs::File::from(fd);
    file.write_all(contents)?;
    if how.durable {
        file.sync_all()?;
    }
    Ok(())
}

fn temp_name(name: &OsStr) -> OsString {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut s = OsString::from(format!(".keel-{}-{nanos:x}-", std::process::id()));
    s.push(name);
    s
}

/// Opens directory `path` (an `O_PATH` descriptor), one component at a time, creating
/// missing ones when `create`. As root, a symlink owned by another user is an error that
/// names it.
fn open_dir(path: &Path, create: bool) -> io::Result<OwnedFd> {
    let strict = super::fs::is_root();
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let start = if path.is_absolute() { "/" } else { "." };
    let mut dir = nix::fcntl::open(start, flags | OFlag::O_DIRECTORY, Mode::empty())?;
    let mut shown = PathBuf::from(if path.is_absolute() { "/" } else { "" });
    let mut todo: VecDeque<OsString> = names(path);
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name.as_bytes() == b"/" {
            dir = nix::fcntl::open("/", flags | OFlag::O_DIRECTORY, Mode::empty())?;
            shown = PathBuf::from("/");
            continue;
        }
        shown.push(&name);
        let next = open_or_create(&dir, &name, create, flags)?;
        let st = nix::sys::stat::fstat(&next)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => dir = next,
            libc::S_IFLNK => {
                if strict && st.st_uid != 0 {
                    return Err(foreign_link(&shown, st.st_uid));
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(Errno::ELOOP.into());
                }
                let target = nix::fcntl::readlinkat(&next, "")?;
                shown.pop();
                for n in names(Path::new(&target)).into_iter().rev() {
                    todo.push_front(n);
                }
            }
            _ => return Err(Errno::ENOTDIR.into()),
        }
    }
    Ok(dir)
}

/// The components of `p` as names to open: `/` for the root, `..` kept, `.` dropped.
fn names(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::RootDir => Some(OsString::from("/")),
            Component::CurDir => None,
            Component::ParentDir => Some(OsString::from("..")),
            Component::Normal(n) => Some(n.to_os_string()),
            Component::Prefix(_) => None,
        })
        .collect()
}

fn open_or_create(dir: &OwnedFd, name: &OsStr, create: bool, flags: OFlag) -> io::Result<OwnedFd> {
    match nix::fcntl::openat(dir, name, flags, Mode::empty()) {
        Err(Errno::ENOENT) if create => {
            match nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(0o777)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(nix::fcntl::openat(dir, name, flags, Mode::empty())?)
        }
        r => Ok(r?),
    }
}

fn foreign_link(link: &Path, uid: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} is a symbolic link owned by uid {uid}; keel runs as root and does not follow \
             links another user made (replace the link with a directory, or run keel as that user)",
            link.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_through_new_directories_and_replaces_a_final_link() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        let p = tmp.path().join("a/b/out.iid");
        write(&p, b"one", UserFile::default()).unwrap();
        std::os::unix::fs::symlink(&target, &p).unwrap_err(); // exists: a file now
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(&target, &p).unwrap();
        write(&p, b"two", UserFile::default()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(std::fs::symlink_metadata(&p).unwrap().is_file());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn follows_links_the_caller_may_follow_and_sets_an_exact_mode() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", tmp.path().join("via")).unwrap();
        let p = tmp.path().join("via/../via/x.sh");
        let how = UserFile {
            mode: Some(0o755),
            durable: true,
        };
        write(&p, b"#!/bin/sh\n", how).unwrap();
        let m = std::fs::metadata(tmp.path().join("real/x.sh")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o755);
    }

    #[test]
    fn a_root_keel_refuses_a_link_another_user_planted() {
        // The refusal is a root-only rule.
        if !crate::testing::can_run(crate::sys::fs::is_root(), "the rule is root's") {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let away = tmp.path().join("away");
        std::fs::create_dir(&away).unwrap();
        let link = tmp.path().join(".keel");
        std::os::unix::fs::symlink(&away, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(4000), Some(4000)).unwrap();
        let err = write(&link.join("app.iid"), b"x", UserFile::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains(".keel is a symbolic link owned by uid 4000"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&away).unwrap().count(), 0);
    }
}
