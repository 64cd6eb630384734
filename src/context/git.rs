//! git, run on a user's work tree (the build context's commit time, a project's remote).
//!
//! git refuses a repository another user owns ("detected dubious ownership"), and rightly:
//! a repository's config can name commands (`core.fsmonitor`, hooks) that git then runs.
//! So when keel runs as root in a tree a user owns (a root CI agent on a user's checkout,
//! `sudo make`), git runs as that user, without supplementary groups: anything the
//! repository makes it run runs with the owner's rights, never root's, and what it reports
//! is what the owner's own `git` would report — so the same tree gives the same image
//! whoever builds it. Never `safe.directory=*`.
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// `git -C dir`, as the owner of the work tree holding `dir` when keel is root and that
/// owner is not (see the module doc).
pub fn command(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir);
    if let Some((uid, gid)) = foreign_owner(dir) {
        // std clears the supplementary groups when root sets a uid without naming groups.
        c.uid(uid).gid(gid);
        // The owner's own git config (root's HOME is not theirs to read).
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        if let Some(home) = home_of(&passwd, uid) {
            c.env("HOME", home);
        }
    }
    c
}

/// The home directory of `uid` in passwd text.
fn home_of(passwd: &str, uid: u32) -> Option<&str> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 7 && f[2].parse() == Ok(uid) && f[5].starts_with('/')).then(|| f[5])
    })
}

/// Whether `dir` lies in a git work tree (a `.git` in it or an ancestor).
pub fn in_work_tree(dir: &Path) -> bool {
    work_tree_top(dir).is_some()
}

fn work_tree_top(dir: &Path) -> Option<std::path::PathBuf> {
    let abs = std::fs::canonicalize(dir).ok()?;
    abs.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

/// The owner of `dir`'s work tree when keel is root (really: not rootless in a user
/// namespace) and the tree belongs to someone else.
fn foreign_owner(dir: &Path) -> Option<(u32, u32)> {
    if !crate::sys::proc::is_root() || crate::sys::userns::rootless_cached() {
        return None;
    }
    let m = std::fs::metadata(work_tree_top(dir)?).ok()?;
    (m.uid() != 0).then(|| (m.uid(), m.gid()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_home_of_a_uid_is_its_passwd_lines_sixth_field() {
        let db = "root:x:0:0:root:/root:/bin/sh\nbad line\nann:x:1000:1000:Ann,,,:/home/ann:/bin/bash\nrel:x:7:7::home:/bin/sh\n";
        assert_eq!(super::home_of(db, 1000), Some("/home/ann"));
        assert_eq!(super::home_of(db, 0), Some("/root"));
        assert_eq!(super::home_of(db, 7), None, "not an absolute path");
        assert_eq!(super::home_of(db, 5), None);
    }
}
