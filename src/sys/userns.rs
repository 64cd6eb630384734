//! Rootless keel: entering a user namespace (with a mount namespace it owns) in which the
//! calling user is uid 0 and the user's subordinate ids (`/etc/subuid`, `/etc/subgid`)
//! are uids 1…N, so mounts, overlay, pivot_root, unpacking layers with many owners and
//! committing them with those owners work as they do for root (user_namespaces(7)).
//!
//! The process enters in place (no re-exec): a helper forked *before* `unshare` stays in
//! the host namespace and runs the setuid `newuidmap`/`newgidmap` on the parent's pid,
//! as podman's helper does; with no subordinate range, the process maps only itself
//! (which needs no helper). Reading `/etc/subuid` and planning the maps is pure
//! ([`subordinate_ranges`], [`plan_maps`]); policy (when to enter) lives in `cli`.
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

use super::error::check;
use super::SysError;

/// One line of a uid or gid map: `inside` … `inside+count` are `outside` … on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The ranges `/etc/subuid`-style `text` grants to the user called `name` with id `id`
/// (lines are `NAME:START:COUNT` or `ID:START:COUNT`; `#` comments and bad lines skipped).
pub fn subordinate_ranges(text: &str, name: &str, id: u32) -> Vec<(u32, u32)> {
    let id = id.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            if who != name && who != id {
                return None;
            }
            Some((start.parse().ok()?, count.parse().ok()?))
        })
        .filter(|&(_, count)| count > 0)
        .collect()
}

/// The map for `id` (inside 0) followed by the subordinate `ranges` (inside 1, …), as
/// podman lays it out. `newuidmap` takes at most 340 lines; more ranges are dropped.
pub fn plan_maps(id: u32, ranges: &[(u32, u32)]) -> Vec<IdRange> {
    let mut out = vec![IdRange {
        inside: 0,
        outside: id,
        count: 1,
    }];
    let mut next = 1u32;
    for &(start, count) in ranges.iter().take(339) {
        let Some(end) = next.checked_add(count) else {
            break;
        };
        out.push(IdRange {
            inside: next,
            outside: start,
            count,
        });
        next = end;
    }
    out
}

/// True when `uid_map` text (`/proc/self/uid_map`) maps uid 0 to a host uid other than 0:
/// the process is "root" only inside a user namespace an ordinary user made.
pub fn root_is_unprivileged(uid_map: &str) -> bool {
    uid_map.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 3 && f[0] == "0" && f[1] != "0"
    })
}

/// True when keel runs rootless: as an ordinary user, or as uid 0 of a user namespace
/// whose root is an ordinary user on the host (after [`enter`]).
pub fn rootless() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return true;
    }
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    root_is_unprivileged(&map)
}

/// [`rootless`], worked out once per process (keel never changes namespace after
/// start-up, except in forked children that exec at once).
pub fn rootless_cached() -> bool {
    static ROOTLESS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOTLESS.get_or_init(rootless)
}

/// The host uid that is uid 0 here (the calling user's uid when rootless).
pub fn host_uid() -> u32 {
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let uid = nix::unistd::geteuid().as_raw();
    map.lines()
        .filter_map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() == 3 && uid >= f[0] && uid - f[0] < f[2]).then(|| f[1] + (uid - f[0]))
        })
        .next()
        .unwrap_or(uid)
}

/// The calling user: real uid, real gid and login name (the uid as text when the
/// password database has no entry).
pub fn current_user() -> (u32, u32, String) {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid().as_raw();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    (uid.as_raw(), gid, name)
}

/// Runtime state that must not outlive a boot (OCI bundles): `/run/keel` for root,
/// `$XDG_RUNTIME_DIR/keel` for an ordinary user, or `/tmp/keel-<uid>` (0700, checked to
/// be the user's own) when `XDG_RUNTIME_DIR` is unset, as podman falls back.
pub fn runtime_dir() -> PathBuf {
    if !rootless() {
        return PathBuf::from("/run/keel");
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_dir())
        .map(|p| p.join("keel"))
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/keel-{}", host_uid())))
}

/// Creates [`runtime_dir`] with mode 0700 and refuses one somebody else made.
pub fn ensure_runtime_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = runtime_dir();
    let mut b = std::fs::DirBuilder::new();
    b.mode(0o700).recursive(true);
    super::hostfs::create_dir_with(&b, &dir)?;
    let m = std::fs::symlink_metadata(&dir)?;
    let me = super::proc::effective_ids().0;
    if !m.is_dir() || m.uid() != me || m.mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "runtime directory {} is not a private directory of this user; remove it or set XDG_RUNTIME_DIR",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Moves the calling (single-threaded) process into a new user namespace and a mount
/// namespace owned by it, with `uids`/`gids` as maps. Maps with more than the caller's
/// own id are written by `newuidmap`/`newgidmap` from a helper left in the host
/// namespace; a single self-map is written directly (after `setgroups` is denied, as
/// the kernel requires). Afterwards the process is uid 0 with every capability in the
/// new namespace, and its mounts are invisible to the host.
pub fn enter(uids: &[IdRange], gids: &[IdRange]) -> Result<(), SysError> {
    let helper = if uids.len() > 1 || gids.len() > 1 {
        Some(fork_map_helper(uids, gids)?)
    } else {
        None
    };
    let flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS;
    let unshared = check("unshare user namespace", nix::sched::unshare(flags));
    match helper {
        Some((pid, go)) => {
            // Closing `go` without a byte tells the helper to give up.
            if unshared.is_ok() {
                super::proc::write_all(&go, b"g")?;
            }
            drop(go);
            let ended = super::proc::wait(pid)?;
            unshared?;
            if ended.code() != 0 {
                return Err(SysError::new(
                    "newuidmap/newgidmap",
                    std::io::Error::other(format!(
                        "the id map helper failed (exit {}); its message is above",
                        ended.code()
                    )),
                ));
            }
        }
        None => {
            unshared?;
            write_self_maps(uids, gids)?;
        }
    }
    Ok(())
}

/// Forks the helper that waits for the go byte, then runs `newuidmap PID …` and
/// `newgidmap PID …` for its parent and exits 0 when both succeed.
fn fork_map_helper(
    uids: &[IdRange],
    gids: &[IdRange],
) -> Result<(i32, std::os::fd::OwnedFd), SysError> {
    let parent = std::process::id().to_string();
    let (go_r, go_w) = super::proc::pipe()?;
    match super::proc::fork()? {
        super::proc::Fork::Child => {
            drop(go_w);
            if !matches!(super::proc::read_to_end(&go_r).as_deref(), Ok(b"g")) {
                super::proc::exit(1);
            }
            for (tool, map) in [("newuidmap", uids), ("newgidmap", gids)] {
                let mut cmd = std::process::Command::new(tool);
                cmd.arg(&parent);
                for r in map {
                    cmd.args([r.inside, r.outside, r.count].map(|n| n.to_string()));
                }
                if !cmd.status().is_ok_and(|s| s.success()) {
                    super::proc::exit(1);
                }
            }
            super::proc::exit(0)
        }
        super::proc::Fork::Parent(pid) => Ok((pid, go_w)),
    }
}

/// Writes `/proc/self/{setgroups,uid_map,gid_map}` for a single-id mapping.
fn write_self_maps(uids: &[IdRange], gids: &[IdRange]) -> Result<(), SysError> {
    let line = |m: &[IdRange]| {
        m.iter()
            .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
            .collect::<String>()
    };
    for (file, text) in [
        ("/proc/self/setgroups", "deny".to_string()),
        ("/proc/self/uid_map", line(uids)),
        ("/proc/self/gid_map", line(gids)),
    ] {
        std::fs::write(file, text).map_err(|e| SysError::at("write id map", Path::new(file), e))?;
    }
    Ok(())
}

/// Moves the calling (single-threaded) process into the user namespace of process `pid`
/// (nothing when it is already there). Its owner gets every capability in it, so rootless
/// `keel cp` can then read and write a running container's files of any of its users.
pub fn join_user_ns_of(pid: i32) -> Result<(), SysError> {
    if super::ns::same_as_ours(pid, "user") {
        return Ok(());
    }
    super::ns::setns(&super::ns::open_ns(pid, "user")?)
}

/// Makes the child `cmd` spawns join the user namespace of process `pid` before it execs
/// (nothing when this process is already in it). Rootless, `keel exec` runs on the host
/// as the namespace's owner; an OCI runtime it starts (`runc exec`) must be uid 0 of the
/// container's user namespace to join its other namespaces, as `nsenter -U` would make it.
/// The namespace is opened here, so a container that ends meanwhile fails the open, not
/// the child.
pub fn join_user_ns_of_in_child(cmd: &mut std::process::Command, pid: i32) -> Result<(), SysError> {
    use std::os::fd::AsFd;
    use std::os::unix::process::CommandExt;
    if super::ns::same_as_ours(pid, "user") {
        return Ok(());
    }
    let fd = super::ns::open_ns(pid, "user")?;
    // SAFETY: the hook runs in the forked child before exec and makes one syscall
    // (setns), which is async-signal-safe; it only borrows `fd`, which the closure owns.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(fd.as_fd(), CloneFlags::CLONE_NEWUSER).map_err(std::io::Error::from)
        });
    }
    Ok(())
}

/// `net.ipv4.ip_unprivileged_port_start`: the lowest port an ordinary user may bind
/// (1024 when the file cannot be read, the kernel's default).
pub fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_id() {
        let text =
            "# comment\nkdev:100000:65536\nbob:165536:65536\n4323:231072:10\nbob:x:1\nbob:5:0\n";
        assert_eq!(
            subordinate_ranges(text, "bob", 4323),
            [(165536, 65536), (231072, 10)]
        );
        assert_eq!(subordinate_ranges(text, "nobody", 1), []);
    }

    #[test]
    fn maps_put_the_user_at_zero_and_ranges_after() {
        let m = plan_maps(1000, &[(100000, 65536), (200000, 10)]);
        assert_eq!(
            m,
            [
                IdRange {
                    inside: 0,
                    outside: 1000,
                    count: 1
                },
                IdRange {
                    inside: 1,
                    outside: 100000,
                    count: 65536
                },
                IdRange {
                    inside: 65537,
                    outside: 200000,
                    count: 10
                },
            ]
        );
        assert_eq!(plan_maps(7, &[]).len(), 1);
    }

    #[test]
    fn unprivileged_root_is_told_from_real_root() {
        assert!(!root_is_unprivileged("         0          0 4294967295\n"));
        assert!(root_is_unprivileged("0 4323 1\n1 165536 65536\n"));
        assert!(!root_is_unprivileged("1000 1000 1\n"));
    }
}
