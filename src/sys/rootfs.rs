//! `Rootfs`: the one way into an image tree. The tree's root directory is opened once and
//! every in-image path is resolved relative to that descriptor with `openat2(2)` and
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: symlinks are re-rooted at the tree's root,
//! `..` is clamped there, and `/proc/<pid>/...` magic links are refused. Kernels without
//! openat2 (before 5.6, ENOSYS) get a userspace resolver with the same semantics:
//! component by component with `openat(O_NOFOLLOW)`, links read and re-rooted, at most
//! [`MAX_SYMLINKS`] of them.
//!
//! Every operation is fd-relative: a path is resolved to its parent directory's descriptor
//! and a single final name, which is never followed (lchown, lstat, unlink semantics).
//! Nothing here builds a host path by joining strings, so a symlink an image plants can
//! never send a write, a read or a mount outside the tree.
//!
//! This module owns resolution and the syscalls; callers (unpack, COPY, mount setup,
//! account lookup) decide what to write.
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid};

pub use super::fs::NodeKind;

/// Most symlinks one resolution follows (Linux's MAXSYMLINKS); more is ELOOP.
pub const MAX_SYMLINKS: usize = 40;

/// Default cap for reading a file out of an image (`/etc/passwd` and friends).
pub const READ_CAP: u64 = 4 << 20;

/// Tries for openat2 when a concurrent rename makes it return EAGAIN.
const EAGAIN_RETRIES: usize = 16;

/// An operation on a path inside an image tree failed; names the operation and the
/// in-image path (never file content).
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{op} {path} in the image: {source}{}", hint(source))]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("reading {path} in the image: it is {kind}, not a regular file; make it a regular file in the image")]
    NotRegular { path: String, kind: &'static str },
    #[error("reading {path} in the image: it is larger than {limit} bytes; keel does not read image files that large")]
    TooLarge { path: String, limit: u64 },
    #[error("opening image tree {}: {source}", root.display())]
    Open {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ELOOP) => {
            " (a symlink loop, more than 40 links, or a /proc magic link in the image)"
        }
        Some(libc::ENOTDIR) => " (a path component is not a directory in the image)",
        _ => "",
    }
}

impl RootfsError {
    /// The OS error number, when the failure was a syscall.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RootfsError::Io { source, .. } | RootfsError::Open { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
    /// True when the path (or a component on the way) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(libc::ENOENT)
    }
}

/// How paths are resolved: the kernel's openat2, or the userspace walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    Openat2,
    Userspace,
}

/// Whether this kernel has openat2 (probed once).
fn kernel_resolver() -> Resolver {
    static R: OnceLock<Resolver> = OnceLock::new();
    *R.get_or_init(|| {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT);
        match nix::fcntl::openat2(nix::fcntl::AT_FDCWD, "/", how) {
            Err(Errno::ENOSYS) => Resolver::Userspace,
            _ => Resolver::Openat2,
        }
    })
}

/// What an in-image path names, without following a final symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

impl Kind {
    pub(super) fn of(st: &FileStat) -> Kind {
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

/// Metadata of one entry (lstat semantics).
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The modification time: seconds and nanoseconds.
    pub mtime: (i64, i64),
}

impl From<FileStat> for Stat {
    fn from(st: FileStat) -> Stat {
        Stat {
            kind: Kind::of(&st),
            size: st.st_size as u64,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: (st.st_mtime, st.st_mtime_nsec),
        }
    }
}

/// A handle on an image tree: the root directory, opened once.
#[derive(Debug)]
pub struct Rootfs {
    root: OwnedFd,
    host: PathBuf,
    resolver: Resolver,
}

/// A directory inside the tree, resolved in-root; operations take one final name.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// The in-image path it was resolved from, for messages.
    shown: String,
}

/// An in-image path the mount code may use: `/proc/self/fd/N` of an O_PATH descriptor of
/// the resolved entry, so a mount lands on exactly that inode (inside the tree).
#[derive(Debug)]
pub struct MountTarget {
    fd: OwnedFd,
}

impl MountTarget {
    /// The path to hand to mount(2); valid while `self` lives.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    /// Whether the target is a directory.
    pub fn is_dir(&self) -> bool {
        nix::sys::stat::fstat(&self.fd).is_ok_and(|st| Kind::of(&st) == Kind::Dir)
    }
}

/// The in-image path shown in messages: always absolute.
fn show(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.starts_with('/') {
        s.into_owned()
    } else {
        format!("/{s}")
    }
}

/// `p` relative to the tree root (a leading `/` means the root); "." for the root.
fn relative(p: &Path) -> PathBuf {
    let r: PathBuf = p
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    if r.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        r
    }
}

/// Splits `p` into its parent and final name; the name must be a plain component.
fn split(p: &Path) -> io::Result<(PathBuf, OsString)> {
    match p.components().next_back() {
        Some(Component::Normal(n)) => Ok((
            p.parent().map(relative).unwrap_or_else(|| ".".into()),
            n.to_os_string(),
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no entry (it is the root, or ends in . or ..)",
        )),
    }
}

impl Rootfs {
    /// Opens the tree at `host` with the best resolver this kernel has.
    pub fn open(host: &Path) -> Result<Rootfs, RootfsError> {
        Rootfs::open_with(host, kernel_resolver())
    }

    /// Opens the tree at `host` with a chosen resolver (tests compare the two).
    pub fn open_with(host: &Path, resolver: Resolver) -> Result<Rootfs, RootfsError> {
        let root = nix::fcntl::open(
            host,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RootfsError::Open {
            root: host.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Rootfs {
            root,
            host: host.to_path_buf(),
            resolver,
        })
    }

    /// The host directory the tree was opened from (for messages and logs only).
    pub fn host(&self) -> &Path {
        &self.host
    }

    fn err(op: &'static str, p: &Path, e: impl Into<io::Error>) -> RootfsError {
        RootfsError::Io {
            op,
            path: show(p),
            source: e.into(),
        }
    }

    /// Resolves `p` in-root to an fd opened with `flags` (plus O_CLOEXEC). `follow` says
    /// whether a final symlink is followed; intermediate ones always are, inside the tree.
    pub fn resolve_raw(&self, p: &Path, flags: OFlag, follow: bool) -> io::Result<OwnedFd> {
        let rel = relative(p);
        let mut flags = flags | OFlag::O_CLOEXEC;
        if !follow {
            flags |= OFlag::O_NOFOLLOW;
        }
        match self.resolver {
            Resolver::Openat2 => {
                let how = OpenHow::new()
                    .flags(flags)
                    .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
                let mut tries = 0;
                loop {
                    match nix::fcntl::openat2(&self.root, rel.as_path(), how) {
                        Err(Errno::EAGAIN) if tries < EAGAIN_RETRIES => tries += 1,
                        r => return r.map_err(io::Error::from),
                    }
                }
            }
            Resolver::Userspace => self.walk(&rel, flags, follow),
        }
    }

    /// The userspace resolver: the same answers as openat2 `RESOLVE_IN_ROOT |
    /// RESOLVE_NO_MAGICLINKS` (see the module doc), one component at a time.
    fn walk(&self, rel: &Path, flags: OFlag, follow: bool) -> io::Result<OwnedFd> {
        let mut stack: Vec<OwnedFd> = vec![self.root.try_clone()?];
        let mut todo: Vec<OsString> = components_rev(rel.as_os_str().as_bytes());
        let mut links = 0;
        while let Some(c) = todo.pop() {
            let here = stack.last().expect("the root is never popped");
            if c == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                if todo.is_empty() {
                    return reopen(stack.last().expect("root"), flags);
                }
                continue;
            }
            let last = todo.is_empty();
            let fd = nix::fcntl::openat(
                here,
                c.as_os_str(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let st = nix::sys::stat::fstat(&fd)?;
            match Kind::of(&st) {
                Kind::Symlink if !last || follow => {
                    if is_magic_link(here)? {
                        return Err(Errno::ELOOP.into());
                    }
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::ELOOP.into());
                    }
                    let target = nix::fcntl::readlinkat(&fd, "")?;
                    if target.is_empty() {
                        return Err(Errno::ENOENT.into());
                    }
                    if target.as_bytes().starts_with(b"/") {
                        stack.truncate(1);
                    }
                    todo.extend(components_rev(target.as_bytes()));
                    if todo.is_empty() {
                        // A link to "/" (or "/."): the root itself.
                        return reopen(&stack[0], flags);
                    }
                }
                Kind::Dir if !last => stack.push(fd),
                _ if !last => return Err(Errno::ENOTDIR.into()),
                _ => {
                    return Ok(nix::fcntl::openat(
                        here,
                        c.as_os_str(),
                        flags | OFlag::O_NOFOLLOW,
                        Mode::empty(),
                    )?)
                }
            }
        }
        reopen(stack.last().expect("root"), flags)
    }

    /// An O_PATH fd for `p` (final symlink followed in-root).
    pub fn resolve(&self, p: &Path) -> Result<OwnedFd, RootfsError> {
        self.resolve_raw(p, OFlag::O_PATH, true)
            .map_err(|e| Self::err("resolving", p, e))
    }

    /// The directory `p` (symlinks followed in-root).
    pub fn dir(&self, p: &Path) -> Result<Dir, RootfsError> {
        let fd = self
            .resolve_raw(p, OFlag::O_PATH | OFlag::O_DIRECTORY, true)
            .map_err(|e| Self::err("opening directory", p, e))?;
        Ok(Dir { fd, shown: show(p) })
    }

    /// The parent directory of `p` (resolved in-root) and `p`'s final name, not followed.
    pub fn parent(&self, p: &Path) -> Result<(Dir, OsString), RootfsError> {
        let (parent, name) = split(p).map_err(|e| Self::err("resolving", p, e))?;
        Ok((self.dir(&parent)?, name))
    }

    /// The parent directory of `p`, created (with `mode`) where missing, and its name.
    pub fn parent_create(
        &self,
        p: &Path,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(Dir, OsString), RootfsError> {
        let (parent, name) = split(p).map_err(|e| Self::err("resolving", p, e))?;
        Ok((self.mkdir_all(&parent, mode, owner)?, name))
    }

    /// `mkdir -p` inside the tree: every missing component is created in its resolved
    /// parent with `mode` (and `owner`); symlinks on the way are followed in-root, and a
    /// dangling one gets its (re-rooted) target created, as BuildKit's copy does. A
    /// non-directory on the way is an error.
    pub fn mkdir_all(
        &self,
        p: &Path,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<Dir, RootfsError> {
        self.mkdir_all_depth(p, mode, owner, 0)
    }

    fn mkdir_all_depth(
        &self,
        p: &Path,
        mode: u32,
        owner: Option<(u32, u32)>,
        links: usize,
    ) -> Result<Dir, RootfsError> {
        match self.dir(p) {
            Ok(d) => return Ok(d),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        if matches!(
            p.components().next_back(),
            Some(Component::ParentDir | Component::CurDir)
        ) {
            // `a/..` needs `a` to exist (as the kernel walks it): make it, then look again.
            let up = p.parent().map(relative).unwrap_or_else(|| ".".into());
            self.mkdir_all_depth(&up, mode, owner, links)?;
            return self.dir(p);
        }
        let (parent, name) = split(p).map_err(|e| Self::err("creating directory", p, e))?;
        let pd = self.mkdir_all_depth(&parent, mode, owner, links)?;
        match pd.mkdir(&name, mode) {
            Ok(()) => {
                if let Some((u, g)) = owner {
                    pd.lchown(&name, u, g)?;
                }
                // The image gets `mode` itself, not `mode` masked by keel's umask.
                pd.chmod(&name, mode)?;
            }
            Err(e) if e.errno() == Some(libc::EEXIST) => {
                if pd.stat(&name)?.map(|s| s.kind) == Some(Kind::Symlink) {
                    // A dangling link: create what it points at, inside the tree.
                    if links >= MAX_SYMLINKS {
                        return Err(Self::err("creating directory", p, Errno::ELOOP));
                    }
                    let target = nix::fcntl::readlinkat(&pd.fd, name.as_os_str())
                        .map_err(|e| Self::err("reading symlink", p, e))?;
                    let next = Path::new(pd.shown()).join(target);
                    self.mkdir_all_depth(&next, mode, owner, links + 1)?;
                    return self.dir(p);
                }
            }
            Err(e) => return Err(e),
        }
        pd.subdir(&name)
    }

    /// lstat of `p`: `None` when it does not exist (its parent must resolve).
    pub fn lstat(&self, p: &Path) -> Result<Option<Stat>, RootfsError> {
        if relative(p) == Path::new(".") {
            let st = nix::sys::stat::fstat(&self.root).map_err(|e| Self::err("stat", p, e))?;
            return Ok(Some(st.into()));
        }
        let (d, name) = match self.parent(p) {
            Ok(x) => x,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        d.stat(&name)
    }

    /// stat of `p` with the final symlink followed in-root; `None` when missing.
    pub fn stat(&self, p: &Path) -> Result<Option<Stat>, RootfsError> {
        match self.resolve_raw(p, OFlag::O_PATH, true) {
            Ok(fd) => Ok(Some(
                nix::sys::stat::fstat(&fd)
                    .map_err(|e| Self::err("stat", p, e))?
                    .into(),
            )),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(Self::err("resolving", p, e)),
        }
    }

    /// Reads the regular file `p` (symlinks followed in-root), at most `cap` bytes: a
    /// device, fifo or directory is refused without being opened for reading.
    pub fn read(&self, p: &Path, cap: u64) -> Result<Vec<u8>, RootfsError> {
        let fd = self
            .resolve_raw(p, OFlag::O_PATH, true)
            .map_err(|e| Self::err("opening", p, e))?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| Self::err("stat", p, e))?;
        let kind = match Kind::of(&st) {
            Kind::File => None,
            Kind::Dir => Some("a directory"),
            _ => Some(
                match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                    SFlag::S_IFIFO => "a fifo",
                    SFlag::S_IFCHR => "a character device",
                    SFlag::S_IFBLK => "a block device",
                    SFlag::S_IFSOCK => "a socket",
                    _ => "a special file",
                },
            ),
        };
        if let Some(kind) = kind {
            return Err(RootfsError::NotRegular {
                path: show(p),
                kind,
            });
        }
        if st.st_size as u64 > cap {
            return Err(RootfsError::TooLarge {
                path: show(p),
                limit: cap,
            });
        }
        let f = reopen(&fd, OFlag::O_RDONLY).map_err(|e| Self::err("opening", p, e))?;
        let mut out = Vec::new();
        File::from(f)
            .take(cap + 1)
            .read_to_end(&mut out)
            .map_err(|e| Self::err("reading", p, e))?;
        if out.len() as u64 > cap {
            return Err(RootfsError::TooLarge {
                path: show(p),
                limit: cap,
            });
        }
        Ok(out)
    }

    /// Opens the regular file `p` (the final name never followed) for streaming reads
    /// (`keel cp` out of a container); anything else is refused unopened.
    pub fn open_read(&self, p: &Path) -> Result<File, RootfsError> {
        let fd = self
            .resolve_raw(p, OFlag::O_PATH, false)
            .map_err(|e| Self::err("opening", p, e))?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| Self::err("stat", p, e))?;
        if Kind::of(&st) != Kind::File {
            return Err(RootfsError::NotRegular {
                path: show(p),
                kind: "a directory, link or special file",
            });
        }
        let f = reopen(&fd, OFlag::O_RDONLY).map_err(|e| Self::err("opening", p, e))?;
        Ok(File::from(f))
    }

    /// The target of the symlink `p` (stored text, not resolved).
    pub fn readlink(&self, p: &Path) -> Result<OsString, RootfsError> {
        let (d, name) = self.parent(p)?;
        nix::fcntl::readlinkat(&d.fd, name.as_os_str())
            .map_err(|e| Self::err("reading the link", p, e))
    }

    /// Like [`Rootfs::read`], but a missing file (or parent) is `None`.
    pub fn read_opt(&self, p: &Path, cap: u64) -> Result<Option<Vec<u8>>, RootfsError> {
        match self.read(p, cap) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates `p` as a new regular file (parent resolved in-root, final name never
    /// followed); whatever is at `p` is replaced first (a directory with its contents).
    pub fn create_file(&self, p: &Path, mode: u32) -> Result<File, RootfsError> {
        let (d, name) = self.parent(p)?;
        d.remove_all(&name)?;
        d.create_file(&name, mode)
    }

    /// Writes `content` to a new regular file at `p` (replacing what is there), creating
    /// missing parents (0755, root-owned).
    pub fn write_file(&self, p: &Path, content: &[u8], mode: u32) -> Result<(), RootfsError> {
        use std::io::Write;
        let (d, name) = self.parent_create(p, 0o755, None)?;
        d.remove_all(&name)?;
        let mut f = d.create_file(&name, mode)?;
        f.write_all(content)
            .map_err(|e| Self::err("writing", p, e))?;
        d.chmod(&name, mode)
    }

    /// chmod of `p` itself (a final symlink is left alone: links have no mode).
    pub fn chmod(&self, p: &Path, mode: u32) -> Result<(), RootfsError> {
        let (d, name) = self.parent(p)?;
        d.chmod(&name, mode)
    }

    /// lchown of `p`.
    pub fn lchown(&self, p: &Path, uid: u32, gid: u32) -> Result<(), RootfsError> {
        let (d, name) = self.parent(p)?;
        d.lchown(&name, uid, gid)
    }

    /// Creates the symlink `p` → `target` (the target is stored, never resolved here).
    pub fn symlink(&self, target: &OsStr, p: &Path) -> Result<(), RootfsError> {
        let (d, name) = self.parent(p)?;
        d.symlink(target, &name)
    }

    /// Hardlinks the entry at `existing` (a final symlink is linked, not followed) to `p`.
    pub fn hardlink(&self, existing: &Path, p: &Path) -> Result<(), RootfsError> {
        let (sd, sname) = self.parent(existing)?;
        let (d, name) = self.parent(p)?;
        d.hardlink_from(&sd, &sname, &name)
    }

    /// Removes `p` (a directory with its contents); a missing path is not an error.
    pub fn remove_all(&self, p: &Path) -> Result<(), RootfsError> {
        match self.parent(p) {
            Ok((d, name)) => d.remove_all(&name),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Renames `from` to `to`, both inside the tree (final names not followed).
    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), RootfsError> {
        let (fd, fname) = self.parent(from)?;
        let (td, tname) = self.parent(to)?;
        nix::fcntl::renameat(&fd.fd, fname.as_os_str(), &td.fd, tname.as_os_str())
            .map_err(|e| Self::err("renaming", from, e))
    }

    /// Sets atime and mtime of `p` itself (never a symlink's target).
    pub fn set_times(&self, p: &Path, secs: i64, nanos: i64) -> Result<(), RootfsError> {
        if relative(p) == Path::new(".") {
            return self.root_dir().set_own_times(secs, nanos);
        }
        let (d, name) = self.parent(p)?;
        d.set_times(&name, secs, nanos)
    }

    /// Sets an extended attribute on `p` itself.
    pub fn set_xattr(&self, p: &Path, key: &str, value: &[u8]) -> Result<(), RootfsError> {
        let (d, name) = self.parent(p)?;
        d.set_xattr(&name, key, value)
    }

    /// Creates a device node or fifo at `p` (which must not exist).
    pub fn mknod(
        &self,
        p: &Path,
        kind: NodeKind,
        mode: u32,
        major: u64,
        minor: u64,
    ) -> Result<(), RootfsError> {
        let (d, name) = self.parent(p)?;
        d.mknod(&name, kind, mode, major, minor)
    }

    /// The directory `p` (created inside the tree where missing) as a tree of its own:
    /// ADD extracts an archive with its destination as the root.
    pub fn subtree(&self, p: &Path) -> Result<Rootfs, RootfsError> {
        let d = self.mkdir_all(p, 0o755, None)?;
        Ok(Rootfs {
            root: d.fd,
            host: self.host.join(relative(p)),
            resolver: self.resolver,
        })
    }

    /// Where `p` lands, as a path relative to the tree's root ("" for the root itself):
    /// the kernel's name for the resolved descriptor, with the root's name stripped.
    pub fn in_tree_path(&self, p: &Path) -> Result<PathBuf, RootfsError> {
        let fd = self.resolve(p)?;
        let name = |fd: &OwnedFd| std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let root = name(&self.root).map_err(|e| Self::err("resolving", Path::new("/"), e))?;
        let here = name(&fd).map_err(|e| Self::err("resolving", p, e))?;
        here.strip_prefix(&root)
            .map(Path::to_path_buf)
            .map_err(|_| Self::err("resolving", p, io::Error::from(Errno::EXDEV)))
    }

    /// The tree's root as a [`Dir`].
    pub fn root_dir(&self) -> Dir {
        Dir {
            fd: self.root.try_clone().expect("duplicating the root fd"),
            shown: "/".into(),
        }
    }

    /// A mount target for an existing `p` (symlinks followed in-root); `None` when it
    /// does not exist.
    pub fn existing_target(&self, p: &Path) -> Result<Option<MountTarget>, RootfsError> {
        match self.resolve_raw(p, OFlag::O_PATH, true) {
            Ok(fd) => Ok(Some(MountTarget { fd })),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(Self::err("resolving mount point", p, e)),
        }
    }

    /// A mount target for `p`, resolved in-root with every symlink followed inside the
    /// tree; missing components are created (directories, and the last one a file when
    /// `file`). The mount goes on `/proc/self/fd/N`, so it lands on that very inode.
    pub fn mount_target(&self, p: &Path, file: bool) -> Result<MountTarget, RootfsError> {
        match self.resolve_raw(p, OFlag::O_PATH, true) {
            Ok(fd) => return Ok(MountTarget { fd }),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(Self::err("resolving mount point", p, e)),
        }
        if !file {
            return Ok(MountTarget {
                fd: self.mkdir_all(p, 0o755, None)?.fd,
            });
        }
        let (d, name) = self.parent_create(p, 0o755, None)?;
        match d.create_file(&name, 0o644) {
            Ok(_) => {}
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        Ok(MountTarget {
            fd: d.open_path(&name, false)?,
        })
    }
}

/// Components of a raw path, reversed (for a pop-front work list); "." and empty ones
/// dropped, ".." kept.
fn components_rev(p: &[u8]) -> Vec<OsString> {
    p.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .rev()
        .map(|c| OsStr::from_bytes(c).to_os_string())
        .collect()
}

/// Opens the entry an O_PATH fd names with `flags`: "." for a directory, else through
/// its /proc/self/fd magic link (the same inode, no lookup by name).
fn reopen(fd: &OwnedFd, flags: OFlag) -> io::Result<OwnedFd> {
    if flags.contains(OFlag::O_PATH) {
        return fd.try_clone();
    }
    let st = nix::sys::stat::fstat(fd)?;
    if Kind::of(&st) == Kind::Dir {
        return Ok(nix::fcntl::openat(
            fd,
            ".",
            (flags - OFlag::O_NOFOLLOW) | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?);
    }
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(nix::fcntl::open(
        proc.as_str(),
        (flags - OFlag::O_NOFOLLOW) | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// True when symlinks in `dir` are procfs magic links: procfs below its own root
/// (`/proc/<pid>/{root,cwd,exe,fd/*,...}`); the few links in the procfs root (`self`,
/// `mounts`, ...) are ordinary ones.
fn is_magic_link(dir: &OwnedFd) -> io::Result<bool> {
    let fs = nix::sys::statfs::fstatfs(dir)?;
    if fs.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Ok(false);
    }
    // procfs's root directory has inode 1 (PROC_ROOT_INO).
    Ok(nix::sys::stat::fstat(dir)?.st_ino != 1)
}

impl Dir {
    fn err(&self, op: &'static str, name: &OsStr, e: impl Into<io::Error>) -> RootfsError {
        RootfsError::Io {
            op,
            path: format!(
                "{}/{}",
                self.shown.trim_end_matches('/'),
                name.to_string_lossy()
            ),
            source: e.into(),
        }
    }

    /// The in-image path this directory was resolved from.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The child directory `name` (a symlink there is refused: ELOOP/ENOTDIR).
    pub fn subdir(&self, name: &OsStr) -> Result<Dir, RootfsError> {
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err("opening directory", name, e))?;
        Ok(Dir {
            fd,
            shown: format!(
                "{}/{}",
                self.shown.trim_end_matches('/'),
                name.to_string_lossy()
            ),
        })
    }

    /// An O_PATH fd of `name` itself (a symlink is not followed unless `follow`).
    pub fn open_path(&self, name: &OsStr, follow: bool) -> Result<OwnedFd, RootfsError> {
        let mut f = OFlag::O_PATH | OFlag::O_CLOEXEC;
        if !follow {
            f |= OFlag::O_NOFOLLOW;
        }
        nix::fcntl::openat(&self.fd, name, f, Mode::empty())
            .map_err(|e| self.err("opening", name, e))
    }

    /// lstat of `name`; `None` when it does not exist.
    pub fn stat(&self, name: &OsStr) -> Result<Option<Stat>, RootfsError> {
        match nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st.into())),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.err("stat", name, e)),
        }
    }

    /// Creates a new regular file `name` (O_EXCL, O_NOFOLLOW) for writing.
    pub fn create_file(&self, name: &OsStr, mode: u32) -> Result<File, RootfsError> {
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode & 0o777),
        )
        .map_err(|e| self.err("creating file", name, e))?;
        Ok(File::from(fd))
    }

    /// Creates the directory `name`.
    pub fn mkdir(&self, name: &OsStr, mode: u32) -> Result<(), RootfsError> {
        nix::sys::stat::mkdirat(&self.fd, name, Mode::from_bits_truncate(mode & 0o7777))
            .map_err(|e| self.err("creating directory", name, e))
    }

    /// Creates the symlink `name` → `target`.
    pub fn symlink(&self, target: &OsStr, name: &OsStr) -> Result<(), RootfsError> {
        nix::unistd::symlinkat(target, &self.fd, name)
            .map_err(|e| self.err("creating symlink", name, e))
    }

    /// Links `src_dir/src_name` (not followed) as `name` here.
    pub fn hardlink_from(
        &self,
        src_dir: &Dir,
        src_name: &OsStr,
        name: &OsStr,
    ) -> Result<(), RootfsError> {
        nix::unistd::linkat(&src_dir.fd, src_name, &self.fd, name, AtFlags::empty())
            .map_err(|e| self.err("creating hardlink", name, e))
    }

    /// Creates a device node or fifo `name`.
    pub fn mknod(
        &self,
        name: &OsStr,
        kind: NodeKind,
        mode: u32,
        major: u64,
        minor: u64,
    ) -> Result<(), RootfsError> {
        let sflag = match kind {
            NodeKind::Char => SFlag::S_IFCHR,
            NodeKind::Block => SFlag::S_IFBLK,
            NodeKind::Fifo => SFlag::S_IFIFO,
        };
        nix::sys::stat::mknodat(
            &self.fd,
            name,
            sflag,
            Mode::from_bits_truncate(mode & 0o7777),
            nix::sys::stat::makedev(major, minor),
        )
        .map_err(|e| self.err("creating device node", name, e))
    }

    /// lchown of `name`.
    pub fn lchown(&self, name: &OsStr, uid: u32, gid: u32) -> Result<(), RootfsError> {
        nix::unistd::fchownat(
            &self.fd,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.err("changing owner of", name, e))
    }

    /// chmod of `name` itself: the entry is pinned with an O_PATH fd first, so a symlink
    /// put there is never followed (and a symlink's own mode is left alone).
    pub fn chmod(&self, name: &OsStr, mode: u32) -> Result<(), RootfsError> {
        // A directory: open it (never through a link) and fchmod, without /proc.
        if let Ok(d) = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            return nix::sys::stat::fchmod(&d, Mode::from_bits_truncate(mode & 0o7777))
                .map_err(|e| self.err("changing mode of", name, e));
        }
        let fd = self.open_path(name, false)?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| self.err("stat", name, e))?;
        if Kind::of(&st) == Kind::Symlink {
            return Ok(());
        }
        chmod_fd(&fd, mode).map_err(|e| self.err("changing mode of", name, e))
    }

    /// Sets atime and mtime of `name` itself.
    pub fn set_times(&self, name: &OsStr, secs: i64, nanos: i64) -> Result<(), RootfsError> {
        let t = nix::sys::time::TimeSpec::new(secs, nanos);
        nix::sys::stat::utimensat(
            &self.fd,
            name,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| self.err("setting times of", name, e))
    }

    /// Sets atime and mtime of this directory itself.
    pub fn set_own_times(&self, secs: i64, nanos: i64) -> Result<(), RootfsError> {
        let t = nix::sys::time::TimeSpec::new(secs, nanos);
        let fd = reopen(&self.fd, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| self.err("opening", OsStr::new("."), e))?;
        nix::sys::stat::futimens(&fd, &t, &t)
            .map_err(|e| self.err("setting times of", OsStr::new("."), e))
    }

    /// chmod of this directory itself.
    pub fn chmod_self(&self, mode: u32) -> Result<(), RootfsError> {
        chmod_fd(&self.fd, mode).map_err(|e| self.err("changing mode of", OsStr::new("."), e))
    }

    /// lchown of this directory itself.
    pub fn lchown_self(&self, uid: u32, gid: u32) -> Result<(), RootfsError> {
        nix::unistd::fchownat(
            &self.fd,
            "",
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_EMPTY_PATH,
        )
        .map_err(|e| self.err("changing owner of", OsStr::new("."), e))
    }

    /// Sets an extended attribute on `name` itself (or on this directory for ".").
    pub fn set_xattr(&self, name: &OsStr, key: &str, value: &[u8]) -> Result<(), RootfsError> {
        // The parent is pinned by its fd's magic link; the final name is looked up with
        // lsetxattr, which never follows it.
        let name = if name.is_empty() {
            OsStr::new(".")
        } else {
            name
        };
        let p = Path::new(&format!("/proc/self/fd/{}", self.fd.as_raw_fd())).join(name);
        xattr::set(&p, key, value).map_err(|e| self.err("setting xattr on", name, e))
    }

    /// The extended attribute names of `name` itself (none for a symlink).
    pub fn xattr_names(&self, name: &OsStr) -> Result<Vec<String>, RootfsError> {
        let p = Path::new(&format!("/proc/self/fd/{}", self.fd.as_raw_fd())).join(name);
        match xattr::list(&p) {
            Ok(names) => Ok(names.filter_map(|n| n.into_string().ok()).collect()),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(Vec::new()),
            Err(e) => Err(self.err("listing xattrs of", name, e)),
        }
    }

    /// Removes the extended attribute `key` of `name` itself.
    pub fn remove_xattr(&self, name: &OsStr, key: &str) -> Result<(), RootfsError> {
        let p = Path::new(&format!("/proc/self/fd/{}", self.fd.as_raw_fd())).join(name);
        xattr::remove(&p, key).map_err(|e| self.err("removing an xattr of", name, e))
    }

    /// Removes `name` (a directory with everything in it, never following a symlink);
    /// a missing name is not an error.
    pub fn remove_all(&self, name: &OsStr) -> Result<(), RootfsError> {
        match self.stat(name)? {
            None => Ok(()),
            Some(s) if s.kind == Kind::Dir => {
                let sub = self.subdir(name)?;
                for (child, _) in sub.list()? {
                    sub.remove_all(&child)?;
                }
                self.unlink(name, true)
            }
            Some(_) => self.unlink(name, false),
        }
    }

    /// unlink (or rmdir when `dir`) of `name`.
    pub fn unlink(&self, name: &OsStr, dir: bool) -> Result<(), RootfsError> {
        let flag = if dir {
            nix::unistd::UnlinkatFlags::RemoveDir
        } else {
            nix::unistd::UnlinkatFlags::NoRemoveDir
        };
        nix::unistd::unlinkat(&self.fd, name, flag).map_err(|e| self.err("removing", name, e))
    }

    /// The entries of this directory (without "." and ".."), with their kinds.
    pub fn list(&self) -> Result<Vec<(OsString, Kind)>, RootfsError> {
        let dot = OsStr::new(".");
        let fd = reopen(&self.fd, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| self.err("listing", dot, e))?;
        let mut d = nix::dir::Dir::from_fd(fd).map_err(|e| self.err("listing", dot, e))?;
        let mut out = Vec::new();
        for e in d.iter() {
            let e = e.map_err(|e| self.err("listing", dot, e))?;
            let n = OsStr::from_bytes(e.file_name().to_bytes());
            if n == "." || n == ".." {
                continue;
            }
            let kind = match e.file_type() {
                Some(nix::dir::Type::Directory) => Kind::Dir,
                Some(nix::dir::Type::File) => Kind::File,
                Some(nix::dir::Type::Symlink) => Kind::Symlink,
                Some(_) => Kind::Other,
                None => self.stat(n)?.map(|s| s.kind).unwrap_or(Kind::Other),
            };
            out.push((n.to_os_string(), kind));
        }
        Ok(out)
    }

    /// Whether `other` is the same directory (device and inode).
    pub fn same_dir(&self, other: &Dir) -> bool {
        match (
            nix::sys::stat::fstat(&self.fd),
            nix::sys::stat::fstat(&other.fd),
        ) {
            (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
            _ => false,
        }
    }

    /// The raw descriptor (O_PATH), e.g. for a mount target.
    pub fn into_mount_target(self) -> MountTarget {
        MountTarget { fd: self.fd }
    }
}

/// Metadata calls on a file keel has just created and still holds open (no lookup by
/// name at all): the fast path for unpacking regular files.
pub mod open_file {
    use std::fs::File;
    use std::io;

    use nix::sys::stat::Mode;
    use nix::unistd::{Gid, Uid};

    /// fchown(2).
    pub fn chown(f: &File, uid: u32, gid: u32) -> io::Result<()> {
        nix::unistd::fchown(f, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
        Ok(())
    }
    /// fchmod(2).
    pub fn chmod(f: &File, mode: u32) -> io::Result<()> {
        nix::sys::stat::fchmod(f, Mode::from_bits_truncate(mode & 0o7777))?;
        Ok(())
    }
    /// futimens(2): atime and mtime.
    pub fn set_times(f: &File, secs: i64, nanos: i64) -> io::Result<()> {
        let t = nix::sys::time::TimeSpec::new(secs, nanos);
        nix::sys::stat::futimens(f, &t, &t)?;
        Ok(())
    }
    /// fsetxattr(2).
    pub fn set_xattr(f: &File, key: &str, value: &[u8]) -> io::Result<()> {
        xattr::FileExt::set_xattr(f, key, value)
    }
}

/// chmod through an O_PATH fd's magic link (fchmod refuses O_PATH descriptors).
fn chmod_fd(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        p.as_str(),
        Mode::from_bits_truncate(mode & 0o7777),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A hostile tree: absolute and relative links, `..` chains, loops, links through
    /// files and to /proc magic links.
    fn hostile() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("root");
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(d.path().join("host")).unwrap();
        std::fs::write(d.path().join("host/secret"), "host").unwrap();
        std::fs::write(r.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        std::fs::write(r.join("file"), "in-tree").unwrap();
        symlink("/usr/lib", r.join("abs")).unwrap();
        symlink("usr/lib", r.join("rel")).unwrap();
        symlink("../../../../../..", r.join("usr/up")).unwrap();
        symlink("../../../host/secret", r.join("etc/dotdot")).unwrap();
        symlink(d.path().join("host/secret"), r.join("etc/hostabs")).unwrap();
        symlink(d.path().join("host"), r.join("hostdir")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        symlink("a", r.join("b")).unwrap();
        symlink("b", r.join("a")).unwrap();
        symlink("/", r.join("slash")).unwrap();
        symlink("/proc/self/root", r.join("magic")).unwrap();
        symlink("/proc/self/root/etc/passwd", r.join("magicfile")).unwrap();
        symlink("/etc/passwd", r.join("passwd")).unwrap();
        // 41 links in a chain: one too many.
        for i in 0..41 {
            symlink(format!("c{}", i + 1), r.join(format!("c{i}"))).unwrap();
        }
        std::fs::write(r.join("c41"), "end").unwrap();
        (d, r)
    }

    /// What a path resolves to: the in-tree path of the inode (found by inode number),
    /// or the errno.
    fn outcome(fs: &Rootfs, r: &Path, p: &str, follow: bool) -> Result<String, i32> {
        let fd = fs
            .resolve_raw(Path::new(p), OFlag::O_PATH, follow)
            .map_err(|e| e.raw_os_error().unwrap())?;
        let st = nix::sys::stat::fstat(&fd).unwrap();
        for e in walkdir::WalkDir::new(r).follow_links(false) {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            use std::os::unix::fs::MetadataExt;
            if m.ino() == st.st_ino && m.dev() == st.st_dev {
                return Ok(show(e.path().strip_prefix(r).unwrap()));
            }
        }
        Ok("<outside>".into())
    }

    /// The table of the deleted `layer::unpack::resolve_in_root` (absolute and relative
    /// links, `..` above the root, loops, a file on the way) is part of this one.
    /// The resolvers this kernel can run (openat2 may be missing).
    fn resolvers() -> Vec<Resolver> {
        match kernel_resolver() {
            Resolver::Openat2 => vec![Resolver::Openat2, Resolver::Userspace],
            Resolver::Userspace => vec![Resolver::Userspace],
        }
    }

    #[test]
    fn both_resolvers_agree_on_a_hostile_tree() {
        let (_d, r) = hostile();
        let table: &[(&str, bool, Result<&str, i32>)] = &[
            ("abs", true, Ok("/usr/lib")),
            ("rel/", true, Ok("/usr/lib")),
            ("/abs/../..", true, Ok("/")),
            ("usr/up", true, Ok("/")),
            ("usr/up/etc/passwd", true, Ok("/etc/passwd")),
            ("../../../etc/passwd", true, Ok("/etc/passwd")),
            ("etc/dotdot", true, Err(libc::ENOENT)),
            ("etc/hostabs", true, Err(libc::ENOENT)),
            ("hostdir/secret", true, Err(libc::ENOENT)),
            ("hostdir", false, Ok("/hostdir")),
            ("loop", true, Err(libc::ELOOP)),
            ("a", true, Err(libc::ELOOP)),
            ("loop", false, Ok("/loop")),
            ("slash", true, Ok("/")),
            ("slash/etc/passwd", true, Ok("/etc/passwd")),
            ("magic", true, Err(libc::ENOENT)),
            ("magicfile", true, Err(libc::ENOENT)),
            ("passwd", true, Ok("/etc/passwd")),
            ("file/x", true, Err(libc::ENOTDIR)),
            ("c1", true, Ok("/c41")),
            ("c0", true, Err(libc::ELOOP)),
            ("missing/x", true, Err(libc::ENOENT)),
        ];
        for resolver in resolvers() {
            let fs = Rootfs::open_with(&r, resolver).unwrap();
            for (p, follow, want) in table {
                let got = outcome(&fs, &r, p, *follow);
                assert_eq!(
                    got,
                    want.map(str::to_string),
                    "{resolver:?}: {p} (follow={follow})"
                );
            }
        }
    }

    /// With procfs inside the tree (as at container setup, where /proc is mounted in the
    /// rootfs), `/proc/self/...` magic links are refused by both resolvers.
    #[test]
    fn magic_links_are_refused_when_proc_is_in_the_tree() {
        // The tree *is* /proc's parent here: open "/" as the root so /proc is real procfs.
        for resolver in [Resolver::Openat2, Resolver::Userspace] {
            let fs = Rootfs::open_with(Path::new("/"), resolver).unwrap();
            for p in ["/proc/self/root", "/proc/self/root/etc", "/proc/self/cwd"] {
                let e = fs
                    .resolve_raw(Path::new(p), OFlag::O_PATH, true)
                    .unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{resolver:?} {p}");
            }
            // Ordinary procfs links (in its root) still resolve.
            fs.resolve_raw(Path::new("/proc/self/status"), OFlag::O_PATH, true)
                .unwrap_or_else(|e| panic!("{resolver:?}: /proc/self/status: {e}"));
        }
    }

    #[test]
    fn writes_stay_inside_the_tree() {
        for resolver in resolvers() {
            writes_stay_inside_the_tree_with(resolver);
        }
    }

    fn writes_stay_inside_the_tree_with(resolver: Resolver) {
        let (d, r) = hostile();
        let fs = Rootfs::open_with(&r, resolver).unwrap();
        // Through an absolute link to a host directory: lands in the tree, re-rooted.
        fs.write_file(Path::new("/hostdir/new"), b"x", 0o644)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!d.path().join("host/new").exists());
        // The link's target path was created inside the tree instead.
        let inside = r.join(d.path().strip_prefix("/").unwrap()).join("host/new");
        assert!(inside.is_file(), "{}", inside.display());
        // Replacing a symlink that points at a host file replaces the link itself.
        fs.write_file(Path::new("/etc/hostabs"), b"y", 0o600)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("host/secret")).unwrap(),
            "host"
        );
        assert_eq!(std::fs::read_to_string(r.join("etc/hostabs")).unwrap(), "y");
        // mkdir -p through `..` chains is clamped at the root.
        fs.mkdir_all(Path::new("/../../../made/deep"), 0o755, None)
            .unwrap();
        assert!(r.join("made/deep").is_dir());
        // chown, chmod, times, remove never follow a final link.
        fs.lchown(Path::new("/hostdir"), 1, 1).unwrap();
        fs.chmod(Path::new("/hostdir"), 0o700).unwrap();
        fs.set_times(Path::new("/hostdir"), 5, 0).unwrap();
        fs.remove_all(Path::new("/hostdir")).unwrap();
        assert!(d.path().join("host/secret").exists());
        assert!(std::fs::symlink_metadata(r.join("hostdir")).is_err());
    }

    #[test]
    fn reads_refuse_special_files_and_cap_the_size() {
        for resolver in resolvers() {
            reads_refuse_special_files_and_cap_the_size_with(resolver);
        }
    }

    fn reads_refuse_special_files_and_cap_the_size_with(resolver: Resolver) {
        let (d, r) = hostile();
        nix::unistd::mkfifo(&r.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        symlink("/dev/zero", r.join("zero")).unwrap();
        std::fs::create_dir(r.join("dev")).unwrap();
        let fs = Rootfs::open_with(&r, resolver).unwrap();
        assert!(matches!(
            fs.read(Path::new("/fifo"), READ_CAP),
            Err(RootfsError::NotRegular { kind: "a fifo", .. })
        ));
        // /dev/zero re-rooted: missing in the tree, never the host's device.
        assert!(fs
            .read(Path::new("/zero"), READ_CAP)
            .unwrap_err()
            .is_not_found());
        assert!(matches!(
            fs.read(Path::new("/etc"), READ_CAP),
            Err(RootfsError::NotRegular { .. })
        ));
        assert!(matches!(
            fs.read(Path::new("/file"), 3),
            Err(RootfsError::TooLarge { limit: 3, .. })
        ));
        assert_eq!(fs.read(Path::new("/file"), READ_CAP).unwrap(), b"in-tree");
        assert_eq!(
            fs.read(Path::new("/passwd"), READ_CAP).unwrap(),
            std::fs::read(r.join("etc/passwd")).unwrap()
        );
        let e = fs.read(Path::new("/etc/hostabs"), READ_CAP).unwrap_err();
        assert!(!e.to_string().contains("host\n") && e.is_not_found());
        drop(d);
    }

    #[test]
    fn mount_targets_resolve_inside_the_tree() {
        for resolver in resolvers() {
            mount_targets_resolve_inside_the_tree_with(resolver);
        }
    }

    fn mount_targets_resolve_inside_the_tree_with(resolver: Resolver) {
        let (d, r) = hostile();
        let fs = Rootfs::open_with(&r, resolver).unwrap();
        let t = fs.mount_target(Path::new("/hostdir/mnt"), false).unwrap();
        let real = std::fs::read_link(t.path()).unwrap();
        assert!(real.starts_with(&r), "{}", real.display());
        assert!(!d.path().join("host/mnt").exists());
        let f = fs
            .mount_target(Path::new("/run/secrets/token"), true)
            .unwrap();
        assert!(std::fs::read_link(f.path()).unwrap().starts_with(&r));
        assert!(r.join("run/secrets/token").is_file());
    }

    /// rename, hardlink, symlink, mknod and xattrs through a symlinked parent stay in the
    /// tree, and a hardlink of a link to a host file links the link, not the host file.
    #[test]
    fn other_operations_stay_inside_the_tree() {
        for resolver in resolvers() {
            let (d, r) = hostile();
            let fs = Rootfs::open_with(&r, resolver).unwrap();
            let host_links = std::fs::metadata(d.path().join("host/secret")).unwrap();
            fs.hardlink(Path::new("/etc/hostabs"), Path::new("/etc/again"))
                .unwrap();
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                std::fs::metadata(d.path().join("host/secret"))
                    .unwrap()
                    .nlink(),
                host_links.nlink()
            );
            assert!(std::fs::symlink_metadata(r.join("etc/again"))
                .unwrap()
                .file_type()
                .is_symlink());
            fs.rename(Path::new("/abs/../../file"), Path::new("/rel/moved"))
                .unwrap();
            assert!(r.join("usr/lib/moved").is_file());
            fs.symlink(OsStr::new("/x"), Path::new("/abs/ln")).unwrap();
            assert!(std::fs::symlink_metadata(r.join("usr/lib/ln")).is_ok());
            fs.mknod(Path::new("/rel/fifo"), NodeKind::Fifo, 0o600, 0, 0)
                .unwrap();
            assert!(r.join("usr/lib/fifo").exists());
            // user xattrs may be unsupported on the test filesystem: best effort.
            let _ = fs.set_xattr(Path::new("/rel/moved"), "user.keel", b"1");
            fs.remove_all(Path::new("/abs/fifo")).unwrap();
            assert!(!r.join("usr/lib/fifo").exists());
        }
    }
}
