//! Rootless policy for the command line: where an ordinary user's store and runtime state
//! live, and entering the user namespace (`sys::userns`) before a command that mounts,
//! unpacks or runs anything. docs/rootless.md is the user-facing side of this file.
use std::path::PathBuf;

use anyhow::Context;

use crate::errln;
use crate::sys::userns;

/// The store: `/var/lib/keel` for root, `$XDG_DATA_HOME/keel` (default
/// `~/.local/share/keel`) for an ordinary user, also once inside its user namespace.
pub fn default_root() -> PathBuf {
    if !userns::rootless() {
        return PathBuf::from("/var/lib/keel");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let data = data.unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
            .join(".local/share")
    });
    data.join("keel")
}

/// Rootless, a store that does not exist yet is made private (0700): on a shared host
/// another user must not read this user's images, containers or build cache.
pub fn make_private_root(root: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !userns::rootless() || root.exists() {
        return Ok(());
    }
    if let Some(parent) = root.parent() {
        crate::sys::hostfs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut b = std::fs::DirBuilder::new();
    b.mode(0o700);
    match crate::sys::hostfs::create_dir_with(&b, root) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(e).with_context(|| format!("creating the keel root {}", root.display()))
        }
        _ => Ok(()),
    }
}

/// Enters the rootless user namespace when keel runs as an ordinary user and the command
/// needs one (`needs` false: commands that only read, or `keel exec`, which joins the
/// container's own namespace instead). A user without a subordinate range gets a
/// single-id map and a warning naming the files to edit.
pub fn enter_if_needed(needs: bool) -> anyhow::Result<()> {
    if !needs || crate::sys::proc::is_root() {
        return Ok(());
    }
    let (uid, gid, name) = userns::current_user();
    let read = |f: &str| std::fs::read_to_string(f).unwrap_or_default();
    let subuid = userns::subordinate_ranges(&read("/etc/subuid"), &name, uid);
    let subgid = userns::subordinate_ranges(&read("/etc/subgid"), &name, uid);
    if subuid.is_empty() || subgid.is_empty() {
        errln!(
            "keel: warning: no subordinate id range for user {name} in /etc/subuid and /etc/subgid; only uid/gid 0 is mapped, so images with files owned by other users cannot be unpacked; add `{name}:100000:65536` to both files (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name})"
        );
    }
    let (uids, gids) = if subuid.is_empty() || subgid.is_empty() {
        (userns::plan_maps(uid, &[]), userns::plan_maps(gid, &[]))
    } else {
        (
            userns::plan_maps(uid, &subuid),
            userns::plan_maps(gid, &subgid),
        )
    };
    userns::enter(&uids, &gids).with_context(|| {
        format!("entering a user namespace as {name} (rootless keel; see docs/rootless.md)")
    })?;
    userns::ensure_runtime_dir()
        .with_context(|| format!("creating {}", userns::runtime_dir().display()))?;
    Ok(())
}
