//! Namespace operations: unshare, setns, hostname.
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::sched::CloneFlags;

use super::error::{check, check_at};
use super::SysError;
use crate::runtime::spec::Namespace;

/// The clone/unshare flags for a namespace list.
fn flags(ns: &[Namespace]) -> CloneFlags {
    ns.iter().fold(CloneFlags::empty(), |f, n| {
        f | match n {
            Namespace::Mount => CloneFlags::CLONE_NEWNS,
            Namespace::Pid => CloneFlags::CLONE_NEWPID,
            Namespace::Uts => CloneFlags::CLONE_NEWUTS,
            Namespace::Ipc => CloneFlags::CLONE_NEWIPC,
            Namespace::Network => CloneFlags::CLONE_NEWNET,
        }
    })
}

/// Moves the calling process into new namespaces (a new PID namespace applies to children).
pub fn unshare(ns: &[Namespace]) -> Result<(), SysError> {
    check("unshare", nix::sched::unshare(flags(ns)))
}

/// Opens `/proc/PID/ns/KIND` (e.g. `net`) for a later [`setns`].
pub fn open_ns(pid: i32, kind: &str) -> Result<OwnedFd, SysError> {
    let path = format!("/proc/{pid}/ns/{kind}");
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|e| SysError::at("open namespace", Path::new(&path), e))
}

/// True when process `pid` is in this process's namespace of `kind` (`user`, `mnt`, …);
/// false when either cannot be read.
pub fn same_as_ours(pid: i32, kind: &str) -> bool {
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{kind}"));
    let ours = std::fs::read_link(format!("/proc/self/ns/{kind}"));
    matches!((theirs, ours), (Ok(a), Ok(b)) if a == b)
}

/// Moves the calling thread into the namespace `fd` refers to.
pub fn setns(fd: &OwnedFd) -> Result<(), SysError> {
    check("setns", nix::sched::setns(fd.as_fd(), CloneFlags::empty()))
}

/// Sets the UTS hostname (in the caller's UTS namespace).
pub fn sethostname(name: &str) -> Result<(), SysError> {
    check_at(
        "sethostname",
        Path::new(name),
        nix::unistd::sethostname(name),
    )
}

/// True when `/proc/self/ns/KIND` exists (the kernel supports that namespace type).
pub fn supported(kind: &str) -> bool {
    Path::new("/proc/self/ns").join(kind).exists()
}
