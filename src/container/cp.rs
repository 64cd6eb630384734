//! `keel cp`: files between the host and a container's root filesystem, both ways.
//! The container side is only ever reached through the in-root handle
//! ([`crate::sys::rootfs::Rootfs`]): a symlink the container planted (`/etc -> /`)
//! resolves inside its tree, never to the host's. The host side is the caller's own.
use crate::sys::hostfs;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sys::rootfs::{Kind, Rootfs, RootfsError};

#[derive(Debug, thiserror::Error)]
pub enum CpError {
    #[error("invalid keel cp arguments: exactly one of SRC and DST must be CONTAINER:PATH (e.g. keel cp web:/etc/hosts ./hosts)")]
    Usage,
    #[error("{0} does not exist in the container")]
    MissingInContainer(String),
    #[error("the keel that runs container {0} is gone, so its root filesystem (mounted only in that keel's namespace) cannot be reached; `keel stop {0}` and copy again")]
    Unreachable(String),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error("{op} {}: {source}", path.display())]
    Host {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn host_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CpError {
    let path = path.to_path_buf();
    move |source| CpError::Host { op, path, source }
}

/// Which way a `keel cp SRC DST` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direction {
    /// Container `name`'s `path` → host path.
    Out {
        container: String,
        path: String,
        host: PathBuf,
    },
    /// Host path → container `name`'s `path`.
    In {
        host: PathBuf,
        container: String,
        path: String,
    },
}

/// `CONTAINER:PATH` (a host path with a `:` is written `./a:b`).
fn container_side(s: &str) -> Option<(String, String)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    let (c, p) = s.split_once(':')?;
    (!c.is_empty()).then(|| {
        (
            c.to_string(),
            if p.is_empty() { "/".into() } else { p.into() },
        )
    })
}

pub fn parse(src: &str, dst: &str) -> Result<Direction, CpError> {
    match (container_side(src), container_side(dst)) {
        (Some((container, path)), None) => Ok(Direction::Out {
            container,
            path,
            host: dst.into(),
        }),
        (None, Some((container, path))) => Ok(Direction::In {
            host: src.into(),
            container,
            path,
        }),
        _ => Err(CpError::Usage),
    }
}

/// The `PPid:` of `/proc/PID/status` text.
pub fn parent_pid(status: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
        .filter(|&p| p > 0)
}

/// `rootfs` as seen through the root of process `mounter`: the path that reaches a mount
/// living only in `mounter`'s mount namespace (`/proc/M/root/<rootfs>`).
pub fn through_root_of(mounter: i32, rootfs: &Path) -> PathBuf {
    let rel = rootfs.strip_prefix("/").unwrap_or(rootfs);
    Path::new("/proc")
        .join(mounter.to_string())
        .join("root")
        .join(rel)
}

/// Rootless, a running container's rootfs is mounted only in the mount namespace of the
/// keel that runs it (its supervisor, or a foreground `keel run`): the parent of the
/// container's first process `pid`. Returns that keel's pid and the rootfs through its
/// root, so `keel cp` sees exactly what root's sees (the rootfs, not the container's
/// volumes or /proc). A parent in our own mount namespace means that keel is gone.
pub fn running_rootfs(name: &str, pid: i32, rootfs: &Path) -> Result<(i32, PathBuf), CpError> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let ours = fs::read_link("/proc/self/ns/mnt").ok();
    parent_pid(&status)
        .filter(|m| fs::read_link(format!("/proc/{m}/ns/mnt")).ok() != ours)
        .map(|m| (m, through_root_of(m, rootfs)))
        .ok_or_else(|| CpError::Unreachable(name.to_string()))
}

fn base_name(p: &str) -> OsString {
    Path::new(p)
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "root".into())
}

/// Copies `path` out of the tree into `host` (docker's rule: into it when it is an
/// existing directory, else as it).
pub fn copy_out(tree: &Rootfs, path: &str, host: &Path) -> Result<(), CpError> {
    let Some(st) = tree.lstat(Path::new(path))? else {
        return Err(CpError::MissingInContainer(path.to_string()));
    };
    let dst = if host.is_dir() {
        host.join(base_name(path))
    } else {
        host.to_path_buf()
    };
    out_entry(tree, Path::new(path), st.kind, st.mode, &dst)
}

fn out_entry(tree: &Rootfs, p: &Path, kind: Kind, mode: u32, dst: &Path) -> Result<(), CpError> {
    match kind {
        Kind::File => {
            let mut from = tree.open_read(p)?;
            let mut to = hostfs::create(dst).map_err(host_err("creating", dst))?;
            io::copy(&mut from, &mut to).map_err(host_err("writing", dst))?;
            hostfs::set_permissions(dst, fs::Permissions::from_mode(mode))
                .map_err(host_err("chmod", dst))?;
        }
        Kind::Symlink => {
            let target = tree.readlink(p)?;
            hostfs::symlink(&target, dst).map_err(host_err("creating", dst))?;
        }
        Kind::Dir => {
            hostfs::create_dir_all(dst).map_err(host_err("creating", dst))?;
            for (name, _) in tree.dir(p)?.list()? {
                let child = p.join(&name);
                if let Some(st) = tree.lstat(&child)? {
                    out_entry(tree, &child, st.kind, st.mode, &dst.join(&name))?;
                }
            }
            hostfs::set_permissions(dst, fs::Permissions::from_mode(mode))
                .map_err(host_err("chmod", dst))?;
        }
        // Devices, fifos and sockets are not copied out (docker skips them too).
        Kind::Other => {}
    }
    Ok(())
}

/// Copies the host's `host` into the tree at `path` (into it when it is an existing
/// directory there); entries keep their modes and become root-owned, as docker's do.
pub fn copy_in(host: &Path, tree: &Rootfs, path: &str) -> Result<(), CpError> {
    let meta = fs::symlink_metadata(host).map_err(host_err("reading", host))?;
    let into_dir = tree
        .stat(Path::new(path))?
        .is_some_and(|s| s.kind == Kind::Dir);
    let dst = if into_dir {
        Path::new(path).join(host.file_name().unwrap_or_else(|| "root".as_ref()))
    } else {
        PathBuf::from(path)
    };
    in_entry(host, &meta, tree, &dst)
}

fn in_entry(host: &Path, meta: &fs::Metadata, tree: &Rootfs, dst: &Path) -> Result<(), CpError> {
    let mode = meta.mode() & 0o7777;
    let ft = meta.file_type();
    if ft.is_file() {
        let mut from = fs::File::open(host).map_err(host_err("reading", host))?;
        if let Some(parent) = dst.parent() {
            tree.mkdir_all(parent, 0o755, None)?;
        }
        let mut to = tree.create_file(dst, mode)?;
        io::copy(&mut from, &mut to).map_err(host_err("copying", host))?;
        tree.chmod(dst, mode)?;
    } else if ft.is_symlink() {
        let target = fs::read_link(host).map_err(host_err("reading", host))?;
        tree.remove_all(dst)?;
        tree.symlink(target.as_os_str(), dst)?;
    } else if ft.is_dir() {
        tree.mkdir_all(dst, mode, None)?;
        let entries = fs::read_dir(host).map_err(host_err("listing", host))?;
        for e in entries {
            let e = e.map_err(host_err("listing", host))?;
            let m = e.metadata().map_err(host_err("reading", &e.path()))?;
            in_entry(&e.path(), &m, tree, &dst.join(e.file_name()))?;
        }
        tree.chmod(dst, mode)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions() {
        assert_eq!(
            parse("web:/etc/hosts", "out").unwrap(),
            Direction::Out {
                container: "web".into(),
                path: "/etc/hosts".into(),
                host: "out".into()
            }
        );
        assert!(matches!(
            parse("./a:b", "web:/x").unwrap(),
            Direction::In { .. }
        ));
        assert!(parse("a", "b").is_err());
        assert!(parse("a:/x", "b:/y").is_err());
    }

    #[test]
    fn a_running_rootfs_is_reached_through_its_keels_root() {
        let status = "Name:\tkeel\nState:\tS (sleeping)\nTgid:\t11111\nPid:\t11111\nPPid:\t11109\n";
        assert_eq!(parent_pid(status), Some(11109));
        assert_eq!(parent_pid("PPid:\t0\n"), None);
        assert_eq!(parent_pid(""), None);
        assert_eq!(
            through_root_of(
                11109,
                Path::new("/home/u/.local/share/keel/storage/snapshots/c/rootfs")
            ),
            Path::new("/proc/11109/root/home/u/.local/share/keel/storage/snapshots/c/rootfs")
        );
    }

    #[test]
    fn a_planted_symlink_stays_inside_the_tree() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("rootfs");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/hostname"), "inside\n").unwrap();
        // /escape -> / inside the tree means the tree's root, never the host's.
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        let tree = Rootfs::open(&root).unwrap();
        let out = d.path().join("got");
        copy_out(&tree, "/escape/etc/hostname", &out).unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap(), "inside\n");
        let src = d.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), "x").unwrap();
        copy_in(&src, &tree, "/escape/tmp/new").unwrap();
        assert_eq!(fs::read_to_string(root.join("tmp/new/sub/f")).unwrap(), "x");
    }
}
