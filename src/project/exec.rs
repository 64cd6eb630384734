//! Planning `keel exec-in ENV -- CMD…`: an `[env.NAME]` entry, the project directory and
//! the owner of the tree become the equivalent `keel run` argument list.
//!
//! Pure: no I/O. The CLI handler stats the tree, looks the owner's names up, then
//! `exec`s `keel run` with [`ExecPlan::run_args`] and [`ExecPlan::run_env`].
//!
//! User mapping (the point of exec-in): by default the command runs as the uid:gid that
//! owns the project directory, so the files it writes are owned like the rest of the tree
//! and never by root. Images rarely have a passwd entry for that uid, and tools such as
//! ssh, git, maven or `whoami` fail without one, so the plan also carries a synthesised
//! passwd line and group line. They are handed to `keel run` in the variables
//! [`PASSWD_VAR`] and [`GROUP_VAR`] of keel's own environment (not the container's): the
//! runtime adds each line to the container's /etc/passwd or /etc/group when no entry for
//! that uid/gid exists there (on a private copy; the image is not changed). A runtime
//! that ignores them still runs the command with the right uid:gid, and `HOME` is set
//! explicitly, so most tools work either way.
use std::path::Path;

use super::{EnvImage, Project, Result};

/// keel's environment variable carrying a passwd(5) line for `keel run` to add.
pub const PASSWD_VAR: &str = "KEEL_RUN_ADD_PASSWD";
/// keel's environment variable carrying a group(5) line for `keel run` to add.
pub const GROUP_VAR: &str = "KEEL_RUN_ADD_GROUP";

/// Who owns the mounted tree (the CLI fills it from `stat` and the host's passwd/group).
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// Name for the synthesised passwd entry (host name of the uid, or "keel").
    pub user: String,
    /// Name for the synthesised group entry (host name of the gid, or "keel").
    pub group: String,
}

/// What `keel exec-in` does, as data.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecPlan {
    /// A project image to build (`keel build NAME`, in the project directory) first,
    /// for environments declared with `build = "NAME"`.
    pub build_first: Option<String>,
    /// Arguments for the keel binary, starting with "run".
    pub run_args: Vec<String>,
    /// Variables to set in keel's own environment for the `keel run` process.
    pub run_env: Vec<(String, String)>,
}

/// Plans `keel exec-in ENV -- CMD…`.
///
/// `project_dir` is the absolute project directory (mounted at the env's mount point);
/// `cwd` is the caller's directory: inside the project, the working directory follows it
/// (so `keel exec-in dev -- make` in `sub/` runs in `/src/sub`).
pub fn plan_exec(
    project: &Project,
    env: &str,
    project_dir: &Path,
    cwd: &Path,
    owner: &Owner,
    cmd: &[String],
) -> Result<ExecPlan> {
    let e = project.env(env)?;
    let map_user = e.user && owner.uid != 0;
    let home = if map_user { e.home.as_str() } else { "/root" };
    let mut a: Vec<String> = vec!["run".into(), "--rm".into()];
    a.push("-v".into());
    a.push(format!("{}:{}", project_dir.display(), e.mount));
    let workdir = match &e.workdir {
        Some(w) if w.starts_with('/') => w.clone(),
        Some(w) => join_abs(&e.mount, w),
        None => match cwd.strip_prefix(project_dir) {
            Ok(rel) if !rel.as_os_str().is_empty() => join_abs(&e.mount, &rel.to_string_lossy()),
            _ => e.mount.clone(),
        },
    };
    a.push("-w".into());
    a.push(workdir);
    for (vol, path) in &e.cache {
        let path = match path.strip_prefix("~/") {
            Some(rest) => join_abs(home, rest),
            None => path.clone(),
        };
        a.push("-v".into());
        a.push(format!("{vol}:{path}"));
    }
    if !e.env.contains_key("HOME") {
        a.push("-e".into());
        a.push(format!("HOME={home}"));
    }
    for (k, v) in &e.env {
        a.push("-e".into());
        a.push(format!("{k}={v}"));
    }
    let mut run_env = Vec::new();
    if map_user {
        a.push("-u".into());
        a.push(format!("{}:{}", owner.uid, owner.gid));
        run_env.push((
            PASSWD_VAR.to_string(),
            format!(
                "{}:x:{}:{}:keel exec-in user:{}:/bin/sh",
                owner.user, owner.uid, owner.gid, home
            ),
        ));
        run_env.push((
            GROUP_VAR.to_string(),
            format!("{}:x:{}:", owner.group, owner.gid),
        ));
    }
    a.push(e.image_ref().to_string());
    a.extend(cmd.iter().cloned());
    Ok(ExecPlan {
        build_first: match &e.image {
            EnvImage::Project(n) => Some(n.clone()),
            EnvImage::Ref(_) => None,
        },
        run_args: a,
        run_env,
    })
}

fn join_abs(base: &str, rel: &str) -> String {
    let rel = rel.trim_start_matches("./").trim_end_matches('/');
    if rel.is_empty() || rel == "." {
        return base.to_string();
    }
    format!("{}/{}", base.trim_end_matches('/'), rel)
}

/// The name for `id` in a passwd(5)/group(5) text (first field of the line whose third
/// field is `id`), for naming the synthesised entries after the host's.
pub fn name_for_id(db: &str, id: u32) -> Option<String> {
    db.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[2].parse() == Ok(id)).then(|| f[0].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[[image]]
name = "builder"

[env.dev]
image = "debian:bookworm"
cache = { m2 = "~/.m2", apt = "/var/cache/apt" }
env = { CI = "1" }

[env.root]
build = "builder"
mount = "/work"
workdir = "sub"
user = false

[env.home]
image = "x"
home = "/tmp/h"
env = { HOME = "/custom" }
"#;

    fn owner(uid: u32) -> Owner {
        Owner {
            uid,
            gid: uid + 1,
            user: "alice".into(),
            group: "staff".into(),
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn plans() {
        let p = Project::parse(TOML, "keel.toml", Path::new("/p")).unwrap();
        let cmd = vec!["make".to_string(), "test".to_string()];
        let cases: &[(&str, &str, u32, &str, Option<&str>, bool)] = &[
            (
                "dev",
                "/p",
                1000,
                "run --rm -v /p:/src -w /src -v apt:/var/cache/apt -v m2:/home/keel/.m2 -e HOME=/home/keel -e CI=1 -u 1000:1001 debian:bookworm make test",
                None,
                true,
            ),
            (
                "dev",
                "/p/a/b",
                1000,
                "run --rm -v /p:/src -w /src/a/b -v apt:/var/cache/apt -v m2:/home/keel/.m2 -e HOME=/home/keel -e CI=1 -u 1000:1001 debian:bookworm make test",
                None,
                true,
            ),
            (
                "dev",
                "/elsewhere",
                0,
                "run --rm -v /p:/src -w /src -v apt:/var/cache/apt -v m2:/root/.m2 -e HOME=/root -e CI=1 debian:bookworm make test",
                None,
                false,
            ),
            (
                "root",
                "/p/x",
                1000,
                "run --rm -v /p:/work -w /work/sub -e HOME=/root builder make test",
                Some("builder"),
                false,
            ),
            (
                "home",
                "/p",
                5,
                "run --rm -v /p:/src -w /src -e HOME=/custom -u 5:6 x make test",
                None,
                true,
            ),
        ];
        for (env, cwd, uid, want, build, mapped) in cases {
            let plan =
                plan_exec(&p, env, Path::new("/p"), Path::new(cwd), &owner(*uid), &cmd).unwrap();
            assert_eq!(plan.run_args.join(" "), *want, "{env} {cwd}");
            assert_eq!(plan.build_first.as_deref(), *build);
            assert_eq!(!plan.run_env.is_empty(), *mapped);
        }
        let plan = plan_exec(
            &p,
            "dev",
            Path::new("/p"),
            Path::new("/p"),
            &owner(1000),
            &cmd,
        )
        .unwrap();
        assert_eq!(
            plan.run_env,
            [
                (
                    PASSWD_VAR.to_string(),
                    "alice:x:1000:1001:keel exec-in user:/home/keel:/bin/sh".to_string()
                ),
                (GROUP_VAR.to_string(), "staff:x:1001:".to_string())
            ]
        );
        let e = plan_exec(
            &p,
            "nope",
            Path::new("/p"),
            Path::new("/p"),
            &owner(1),
            &cmd,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "keel.toml: no environment named `nope`; add [env.nope] or use one of: dev, home, root"
        );
    }

    #[test]
    fn names_for_ids() {
        let db = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbad\n";
        assert_eq!(name_for_id(db, 1000).as_deref(), Some("alice"));
        assert_eq!(name_for_id(db, 0).as_deref(), Some("root"));
        assert_eq!(name_for_id(db, 7), None);
    }
}
