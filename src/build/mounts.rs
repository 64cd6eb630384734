//! `RUN --mount`: what each kind binds where, the secrets and SSH agents a build is given
//! (`keel build --secret`, `--ssh`), and the mount points a step had to create, which are
//! removed again before its layer is committed (they are the mounts', not the image's).
//!
//! Secrets never reach a layer or a cache key: their files live in a private temp
//! directory for the step and are bind-mounted read-only over an empty stub.
use crate::sys::hostfs;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::plan::MountSpec;
use crate::runtime::BindMount;
use crate::sys::rootfs::{Dir, Kind, Rootfs};

/// Where a build secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// Parses `--secret id=NAME[,src=PATH|,env=VAR][,type=file|env]` (docker's syntax). With
/// neither `src` nor `env`, the environment variable NAME is used when it is set, else
/// the file NAME.
pub fn parse_secret(
    spec: &str,
    env_has: impl Fn(&str) -> bool,
) -> Result<(String, SecretSource), String> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    let mut kind = None;
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            format!("--secret {spec:?}: {part:?} is not KEY=VALUE; use id=NAME,src=FILE or id=NAME,env=VAR")
        })?;
        match k {
            "id" => id = Some(v.to_string()),
            "src" | "source" => src = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            "type" if v == "file" || v == "env" => kind = Some(v.to_string()),
            _ => {
                return Err(format!(
                    "--secret {spec:?}: unknown option {k:?}; use id, src, env or type=file|env"
                ))
            }
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| format!("--secret {spec:?}: needs id=NAME"))?;
    let source = match (src, env, kind.as_deref()) {
        (Some(_), Some(_), _) => {
            return Err(format!("--secret {spec:?}: give src or env, not both"))
        }
        (Some(s), None, Some("env")) | (None, Some(s), _) => SecretSource::Env(s),
        (Some(s), None, _) => SecretSource::File(PathBuf::from(s)),
        (None, None, Some("file")) => SecretSource::File(PathBuf::from(&id)),
        (None, None, Some(_)) => SecretSource::Env(id.clone()),
        (None, None, None) if env_has(&id) => SecretSource::Env(id.clone()),
        (None, None, None) => SecretSource::File(PathBuf::from(&id)),
    };
    Ok((id, source))
}

/// Parses `--ssh ID[=SOCKET]`; without a socket, `$SSH_AUTH_SOCK` (given as `agent`).
pub fn parse_ssh(spec: &str, agent: Option<&str>) -> Result<(String, PathBuf), String> {
    let (id, sock) = match spec.split_once('=') {
        Some((id, sock)) => (id, Some(sock.to_string())),
        None => (spec, agent.map(str::to_string)),
    };
    if id.is_empty() {
        return Err(format!("--ssh {spec:?}: needs an id (`default`)"));
    }
    let sock = sock.filter(|s| !s.is_empty()).ok_or_else(|| {
        format!(
            "--ssh {spec:?}: no agent socket; start ssh-agent (SSH_AUTH_SOCK) or give ID=SOCKET"
        )
    })?;
    Ok((id.to_string(), PathBuf::from(sock)))
}

/// What the build was given for `--mount=type=secret|ssh`.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub secrets: BTreeMap<String, SecretSource>,
    pub ssh: BTreeMap<String, PathBuf>,
}

/// The secrets' and agents' part of a step's mounts, resolved: binds, env, and the private
/// directory holding the secret files (deleted when this is dropped).
pub struct CredentialMounts {
    pub binds: Vec<BindMount>,
    pub env: Vec<String>,
    secret_dir: Option<tempfile::TempDir>,
}

/// Resolves the `type=secret` and `type=ssh` mounts of a step. Secret files are written
/// under `scratch` (a directory only root can read) with the mount's mode and owner.
pub fn credentials(
    mounts: &[MountSpec],
    given: &Credentials,
    scratch: &Path,
) -> Result<CredentialMounts, String> {
    let mut out = CredentialMounts {
        binds: Vec::new(),
        env: Vec::new(),
        secret_dir: None,
    };
    let mut agents = 0;
    for m in mounts {
        match m {
            MountSpec::Secret { .. } => secret(m, given, scratch, &mut out)?,
            MountSpec::Ssh {
                id,
                target,
                required,
            } => {
                let Some(sock) = given.ssh.get(id) else {
                    if *required {
                        return Err(format!("RUN --mount=type=ssh,id={id} is required but the build has no such agent; pass --ssh {id}"));
                    }
                    continue;
                };
                let target = target
                    .clone()
                    .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{agents}"));
                agents += 1;
                out.env.push(format!("SSH_AUTH_SOCK={target}"));
                out.binds.push(BindMount {
                    src: sock.clone(),
                    dst: target,
                    ro: false,
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// One secret mount: as an environment variable and/or a file bound read-only.
fn secret(
    m: &MountSpec,
    given: &Credentials,
    scratch: &Path,
    out: &mut CredentialMounts,
) -> Result<(), String> {
    let MountSpec::Secret {
        id,
        target,
        env,
        required,
        mode,
        uid,
        gid,
    } = m
    else {
        unreachable!("called for secret mounts")
    };
    if id.is_empty() {
        return Err("RUN --mount=type=secret needs id=NAME (or a target to name it after)".into());
    }
    let Some(source) = given.secrets.get(id) else {
        if *required {
            return Err(format!("RUN --mount=type=secret,id={id} is required but the build has no such secret; pass --secret id={id},src=FILE (or env=VAR)"));
        }
        return Ok(());
    };
    let value = match source {
        SecretSource::File(p) => {
            std::fs::read(p).map_err(|e| format!("secret {id}: reading {}: {e}", p.display()))?
        }
        SecretSource::Env(v) => std::env::var_os(v)
            .ok_or_else(|| format!("secret {id}: environment variable {v} is not set"))?
            .into_encoded_bytes(),
    };
    if let Some(var) = env {
        let text = String::from_utf8(value.clone())
            .map_err(|_| format!("secret {id}: env={var} needs a UTF-8 value"))?;
        out.env.push(format!("{var}={text}"));
    }
    let target = match (target, env) {
        (Some(t), _) => t.clone(),
        (None, Some(_)) => return Ok(()),
        (None, None) => format!("/run/secrets/{id}"),
    };
    if out.secret_dir.is_none() {
        let dir = crate::sys::hostfs::scratch_dir_in(scratch, "secrets")
            .map_err(|e| format!("creating a secrets directory in {}: {e}", scratch.display()))?;
        out.secret_dir = Some(dir);
    }
    let dir = out.secret_dir.as_ref().expect("created above").path();
    let file = dir.join(out.binds.len().to_string());
    hostfs::write(&file, &value)
        .and_then(|()| hostfs::set_permissions(&file, std::fs::Permissions::from_mode(*mode)))
        .map_err(|e| format!("secret {id}: writing {}: {e}", file.display()))?;
    hostfs::chown(&file, Some(*uid), Some(*gid)).map_err(|e| format!("secret {id}: {e}"))?;
    out.binds.push(BindMount {
        src: file,
        dst: target,
        ro: true,
    });
    Ok(())
}

/// The paths a mount at `target` will create in `rootfs` (the first missing component and
/// everything below it), as in-image paths with the existing part resolved inside the
/// tree, so they can be removed after the step. Empty when the target exists.
pub fn stubs_for(rootfs: &Path, target: &str) -> Vec<PathBuf> {
    let Ok(tree) = Rootfs::open(rootfs) else {
        return Vec::new();
    };
    let parts: Vec<&OsStr> = Path::new(target)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut keep = parts.len();
    while keep > 0 {
        let prefix: PathBuf = parts[..keep].iter().collect();
        match tree.stat(&prefix) {
            Ok(Some(_)) => break,
            Ok(None) => keep -= 1,
            Err(_) => return Vec::new(),
        }
    }
    if keep == parts.len() {
        return Vec::new();
    }
    // Where the existing part lands inside the tree (symlinks like /var/run followed).
    let base: PathBuf = parts[..keep].iter().collect();
    let Ok(mut cur) = tree.in_tree_path(&base) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in &parts[keep..] {
        cur.push(name);
        out.push(Path::new("/").join(&cur));
    }
    out
}

/// Removes mount points a step created, deepest first, as long as they are still empty.
/// Each is found again from the tree's root without following any symlink: a step that
/// swapped a directory on the way for a link (to anywhere) keeps its stubs, and nothing
/// outside them is touched.
pub fn remove_stubs(rootfs: &Path, stubs: &[PathBuf]) {
    let Ok(tree) = Rootfs::open(rootfs) else {
        return;
    };
    for p in stubs.iter().rev() {
        let Some((dir, name)) = parent_nofollow(&tree, p) else {
            continue;
        };
        match dir.stat(&name) {
            Ok(Some(m)) if m.kind == Kind::Dir => {
                let _ = dir.unlink(&name, true);
            }
            Ok(Some(m)) if m.kind == Kind::File && m.size == 0 => {
                let _ = dir.unlink(&name, false);
            }
            _ => {}
        }
    }
}

/// The parent directory of in-image path `p`, walked from the root one real directory
/// at a time (a symlink anywhere on the way ends the walk), and `p`'s final name.
fn parent_nofollow(tree: &Rootfs, p: &Path) -> Option<(Dir, std::ffi::OsString)> {
    let mut dir = tree.root_dir();
    let mut names: Vec<&OsStr> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let name = names.pop()?.to_os_string();
    for n in names {
        dir = dir.subdir(n).ok()?;
    }
    Some((dir, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_specs_follow_docker() {
        let none = |_: &str| false;
        let has = |v: &str| v == "TOKEN";
        type Case<'a> = (&'a str, &'a dyn Fn(&str) -> bool, (&'a str, SecretSource));
        let cases: &[Case] = &[
            ("id=a,src=/k", &none, ("a", SecretSource::File("/k".into()))),
            (
                "id=a,source=/k",
                &none,
                ("a", SecretSource::File("/k".into())),
            ),
            (
                "id=a,env=VAR",
                &none,
                ("a", SecretSource::Env("VAR".into())),
            ),
            (
                "id=a,type=env,src=VAR",
                &none,
                ("a", SecretSource::Env("VAR".into())),
            ),
            (
                "id=TOKEN",
                &has,
                ("TOKEN", SecretSource::Env("TOKEN".into())),
            ),
            (
                "id=TOKEN",
                &none,
                ("TOKEN", SecretSource::File("TOKEN".into())),
            ),
        ];
        for (spec, env, (id, src)) in cases {
            assert_eq!(
                parse_secret(spec, env).unwrap(),
                (id.to_string(), src.clone()),
                "{spec}"
            );
        }
        for bad in ["src=/k", "id=a,src=/k,env=V", "id=a,colour=red", "id"] {
            let e = parse_secret(bad, none).unwrap_err();
            assert!(e.contains("--secret"), "{bad}: {e}");
        }
    }

    #[test]
    fn ssh_specs_use_the_agent_by_default() {
        assert_eq!(
            parse_ssh("default", Some("/tmp/agent.1")).unwrap(),
            ("default".into(), PathBuf::from("/tmp/agent.1"))
        );
        assert_eq!(
            parse_ssh("work=/run/a.sock", None).unwrap(),
            ("work".into(), PathBuf::from("/run/a.sock"))
        );
        assert!(parse_ssh("default", None)
            .unwrap_err()
            .contains("SSH_AUTH_SOCK"));
    }

    #[test]
    fn stubs_are_the_missing_tail_of_a_target() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("run")).unwrap();
        assert_eq!(
            stubs_for(r, "/run/secrets/token"),
            [
                PathBuf::from("/run/secrets"),
                PathBuf::from("/run/secrets/token")
            ]
        );
        assert!(stubs_for(r, "/run").is_empty());
        // Through a symlinked directory: the stubs are where the link leads, in the tree.
        std::os::unix::fs::symlink("/run", r.join("var-run")).unwrap();
        assert_eq!(stubs_for(r, "/var-run/x"), [PathBuf::from("/run/x")]);
        std::fs::create_dir(r.join("run/secrets")).unwrap();
        std::fs::write(r.join("run/secrets/token"), "").unwrap();
        remove_stubs(r, &stubs_for(r, "/nothing"));
        remove_stubs(
            r,
            &[
                PathBuf::from("/run/secrets"),
                PathBuf::from("/run/secrets/token"),
            ],
        );
        assert!(!r.join("run/secrets").exists());
        assert!(r.join("run").exists());
        // A stub whose parent became a symlink is left alone, wherever the link goes.
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir(host.path().join("sub")).unwrap();
        std::fs::create_dir(r.join("d")).unwrap();
        let stubs = stubs_for(r, "/d/sub");
        std::fs::remove_dir(r.join("d")).unwrap();
        std::os::unix::fs::symlink(host.path(), r.join("d")).unwrap();
        remove_stubs(r, &stubs);
        assert!(
            host.path().join("sub").is_dir(),
            "followed a planted symlink"
        );
    }
}
