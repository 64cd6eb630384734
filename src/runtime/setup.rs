//! Child-side container setup shared by the `namespaces` and `chroot` backends: applying
//! `MountOp`s below a rootfs, switching credentials, finding the command and exec'ing it.
//! Runs in a forked child: errors are reported to the parent through a pipe as a
//! [`Report`], never printed.
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::spec::{ContainerSpec, MountOp};
use crate::sys::{self, SysError};

/// What a child tells its parent before exec (nothing at all means exec succeeded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The command could not be exec'd; exit with `code` (127 not found, 126 not executable).
    Exec { code: i32, message: String },
    /// Container setup failed before the command was looked up.
    Setup(String),
}

impl Report {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Report::Exec { code, message } => format!("X{code} {message}").into_bytes(),
            Report::Setup(m) => format!("S{m}").into_bytes(),
        }
    }

    /// Decodes what the child wrote; `None` for an empty pipe (exec succeeded).
    pub fn decode(bytes: &[u8]) -> Option<Report> {
        let text = String::from_utf8_lossy(bytes);
        let (kind, rest) = text.split_at_checked(1)?;
        match kind {
            "X" => {
                let (code, message) = rest.split_once(' ')?;
                Some(Report::Exec {
                    code: code.parse().ok()?,
                    message: message.to_string(),
                })
            }
            _ => Some(Report::Setup(rest.to_string())),
        }
    }
}

/// Sends `report` on `fd` and ends the child with `code`.
pub fn fail(fd: &OwnedFd, report: Report, code: i32) -> ! {
    let _ = sys::proc::write_all(fd, &report.encode());
    sys::proc::exit(code)
}

/// Everything the exec'ing child needs, converted before forking.
pub struct Prepared {
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    pub caps: caps::CapsHashSet,
    /// Seccomp programs to install right before exec (compiled here, not in the child).
    pub seccomp: Vec<seccompiler::BpfProgram>,
}

impl Prepared {
    pub fn new(spec: &ContainerSpec) -> Result<Prepared, String> {
        let c = |s: &String| {
            CString::new(s.as_bytes()).map_err(|_| format!("{s:?} contains a NUL byte"))
        };
        Ok(Prepared {
            args: spec.args.iter().map(c).collect::<Result<_, _>>()?,
            env: spec.env.iter().map(c).collect::<Result<_, _>>()?,
            caps: sys::caps::parse(&spec.capabilities).map_err(|e| e.to_string())?,
            seccomp: match super::seccomp::for_spec(spec, super::seccomp::Host::this()) {
                Ok(Some(policy)) => super::seccomp::compile(&policy).map_err(|e| e.to_string())?,
                Ok(None) => Vec::new(),
                Err(e) => return Err(e.to_string()),
            },
        })
    }
}

/// `root` + container path `p`, refusing results that leave `root` through `..` or a
/// symlink in the image. Missing components are created (dirs; the last as `file` says).
/// FIXME(#3): check-then-mount is racy against a process already running in the rootfs;
/// use openat2(RESOLVE_IN_ROOT) + /proc/self/fd mounting.
pub fn secure_target(root: &Path, p: &str, file: bool) -> Result<PathBuf, String> {
    let real_root = root
        .canonicalize()
        .map_err(|e| format!("resolving rootfs {}: {e}", root.display()))?;
    let clean = super::spec::clean(p);
    let comps: Vec<&str> = clean.split('/').filter(|c| !c.is_empty()).collect();
    let mut cur = real_root.clone();
    for (i, c) in comps.iter().enumerate() {
        let next = cur.join(c);
        if std::fs::symlink_metadata(&next).is_err() {
            let made = if file && i + 1 == comps.len() {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&next)
                    .map(drop)
            } else {
                std::fs::create_dir(&next)
            };
            made.map_err(|e| format!("creating mount point {}: {e}", next.display()))?;
            // Docker's modes (0755 directories, 0644 files), whatever keel's umask: a
            // working directory made under umask 077 would shut out a non-root user.
            let mode = if file && i + 1 == comps.len() {
                0o644
            } else {
                0o755
            };
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&next, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("creating mount point {}: {e}", next.display()))?;
        }
        cur = next
            .canonicalize()
            .map_err(|e| format!("resolving mount point {}: {e}", next.display()))?;
        if !cur.starts_with(&real_root) {
            return Err(format!(
                "mount point {p} resolves to {} outside the rootfs; fix the symlink in the image",
                cur.display()
            ));
        }
    }
    Ok(cur)
}

/// Applies `ops` below `root` (everything except `RootReadOnly`, which the caller does
/// after pivot_root). `skip_fs` names filesystem types to leave out (chroot skips mqueue).
pub fn apply_mounts(root: &Path, ops: &[MountOp], skip_fs: &[&str]) -> Result<(), String> {
    let e = |e: SysError| e.to_string();
    for op in ops {
        match op {
            MountOp::Fs {
                fstype,
                source,
                target,
                options,
            } => {
                if skip_fs.contains(&fstype.as_str()) {
                    continue;
                }
                let t = secure_target(root, target, false)?;
                sys::mount::mount_fs(fstype, source, &t, options).map_err(e)?;
            }
            MountOp::Bind {
                source,
                target,
                readonly,
            } => {
                let meta = std::fs::metadata(source)
                    .map_err(|err| format!("bind source {}: {err}", source.display()))?;
                let t = secure_target(root, target, !meta.is_dir())?;
                sys::mount::bind(source, &t, *readonly).map_err(e)?;
            }
            MountOp::Symlink { target, link } => {
                let l = root.join(link.trim_start_matches('/'));
                if std::fs::symlink_metadata(&l).is_err() {
                    std::os::unix::fs::symlink(target, &l)
                        .map_err(|err| format!("symlink {}: {err}", l.display()))?;
                }
            }
            MountOp::Mask { path } => {
                let p = root.join(path.trim_start_matches('/'));
                match std::fs::symlink_metadata(&p) {
                    Err(_) => {}
                    Ok(m) if m.is_dir() => {
                        let ro = ["ro".to_string(), "size=0".to_string()];
                        sys::mount::mount_fs("tmpfs", "tmpfs", &p, &ro).map_err(e)?;
                    }
                    Ok(_) => sys::mount::bind(Path::new("/dev/null"), &p, false).map_err(e)?,
                }
            }
            MountOp::ReadOnly { path } => {
                let p = root.join(path.trim_start_matches('/'));
                if p.exists() {
                    sys::mount::bind(&p, &p, true).map_err(e)?;
                }
            }
            MountOp::RootReadOnly => {}
        }
    }
    Ok(())
}

/// Finds the command like execvp does, inside the (already entered) rootfs.
/// Errors carry Docker's exit codes: 127 not found, 126 found but not executable.
pub fn find_command(argv0: &str, path_env: &str) -> Result<CString, (i32, String)> {
    let not_exec = |p: &Path| (126, format!("exec {}: permission denied", p.display()));
    let cs = |p: &Path| {
        CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| (127, format!("{argv0:?} contains a NUL byte")))
    };
    if argv0.contains('/') {
        let p = Path::new(argv0);
        return match std::fs::metadata(p) {
            Err(_) => Err((127, format!("exec {argv0}: no such file or directory"))),
            Ok(m) if m.is_file() && sys::proc::is_executable(p) => cs(p),
            Ok(_) => Err(not_exec(p)),
        };
    }
    let mut denied = None;
    for dir in path_env.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(argv0);
        if let Ok(m) = std::fs::metadata(&p) {
            if m.is_file() && sys::proc::is_executable(&p) {
                return cs(&p);
            }
            denied.get_or_insert(p);
        }
    }
    match denied {
        Some(p) => Err(not_exec(&p)),
        None => Err((
            127,
            format!("exec: {argv0:?}: executable file not found in $PATH"),
        )),
    }
}

/// The stdio fds a container gets; `None` inherits the caller's.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Final steps in the child that becomes the container process: capabilities, user,
/// no_new_privs, working directory, stdio, command lookup, seccomp, exec. Never returns.
pub fn exec_child(spec: &ContainerSpec, prep: &Prepared, stdio: &Stdio, report: &OwnedFd) -> ! {
    let setup = |m: String| -> ! { fail(report, Report::Setup(m), 255) };
    for (fd, n) in [(&stdio.stdin, 0), (&stdio.stdout, 1), (&stdio.stderr, 2)] {
        if let Some(fd) = fd {
            if let Err(e) = sys::proc::dup_to(fd, n) {
                setup(e.to_string());
            }
        }
    }
    if spec.tty && stdio.stdin.is_some() {
        // `-t`: the pseudo-terminal on fd 0 becomes the process's controlling terminal.
        if let Err(e) = sys::tty::take_controlling_terminal() {
            setup(e.to_string());
        }
    }
    if let Err(e) = sys::caps::restrict_to(&prep.caps) {
        setup(e.to_string());
    }
    let u = &spec.user;
    if let Err(e) = sys::proc::set_user(u.uid, u.gid, &u.additional_gids) {
        setup(e.to_string());
    }
    if let Err(e) = sys::proc::chdir(Path::new(&spec.cwd)) {
        setup(format!(
            "{e}; the working directory must exist in the image"
        ));
    }
    if spec.no_new_privileges {
        if let Err(e) = sys::proc::set_no_new_privs() {
            setup(e.to_string());
        }
    }
    let path_env = spec.env_value("PATH").unwrap_or(super::spec::DEFAULT_PATH);
    let cmd = match find_command(&spec.args[0], path_env) {
        Ok(c) => c,
        Err((code, message)) => fail(report, Report::Exec { code, message }, code),
    };
    if let Err(e) = sys::proc::reset_signals() {
        setup(e.to_string());
    }
    // Last, so keel's own setup above is not subject to the container's filter.
    if let Err(e) = sys::seccomp::apply(&prep.seccomp) {
        setup(e.to_string());
    }
    let err = sys::proc::execve(&cmd, &prep.args, &prep.env);
    let code = match err.errno() {
        Some(libc::ENOENT) => 127,
        _ => 126,
    };
    fail(
        report,
        Report::Exec {
            code,
            message: err.to_string(),
        },
        code,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Exec {
                code: 127,
                message: "exec: \"x\": not found".into(),
            },
            Report::Setup("mount /proc: EPERM".into()),
        ] {
            assert_eq!(Report::decode(&r.encode()), Some(r));
        }
        assert_eq!(Report::decode(b""), None);
    }

    #[test]
    fn secure_target_refuses_escapes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir(d.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), root.join("evil")).unwrap();
        assert!(secure_target(&root, "/evil/x", false).is_err());
        assert!(
            !d.path().join("outside/x").exists(),
            "created a directory outside the rootfs"
        );
        assert!(secure_target(&root, "/etc/../../x", false)
            .unwrap()
            .starts_with(root.canonicalize().unwrap()));
        let ok = secure_target(&root, "/a/b/file", true).unwrap();
        assert!(ok.is_file() && ok.starts_with(root.canonicalize().unwrap()));
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.join("a/b")), 0o755, "umask must not decide");
        assert_eq!(mode(&ok), 0o644);
    }
}
