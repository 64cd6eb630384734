//! Child-side container setup shared by the `namespaces` and `chroot` backends: applying
//! `MountOp`s below a rootfs, switching credentials, finding the command and exec'ing it.
//! Runs in a forked child: errors are reported to the parent through a pipe as a
//! [`Report`], never printed.
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::Path;

use super::spec::{ContainerSpec, MountOp};
use crate::sys::rootfs::{Rootfs, RootfsError};
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

/// Creates directory `p` (and its parents) inside the tree at `root`, resolved in-root:
/// a working directory through a planted symlink is made inside the image.
pub fn ensure_dir(root: &Path, p: &str) -> Result<(), String> {
    let tree = Rootfs::open(root).map_err(|e| e.to_string())?;
    tree.mkdir_all(Path::new(p), 0o755, None)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Applies `ops` below `root` (everything except `RootReadOnly`, which the caller does
/// after pivot_root). `skip_fs` names filesystem types to leave out (chroot skips mqueue).
/// Every target is resolved inside the tree (`sys::rootfs`) and mounted on its
/// `/proc/self/fd/N`, so a symlink in the image cannot move a mount out of the tree.
pub fn apply_mounts(root: &Path, ops: &[MountOp], skip_fs: &[&str]) -> Result<(), String> {
    let tree = Rootfs::open(root).map_err(|e| e.to_string())?;
    for op in ops {
        match op {
            MountOp::Fs { fstype, .. } if skip_fs.contains(&fstype.as_str()) => {}
            MountOp::Fs {
                fstype,
                source,
                target,
                options,
            } => mount_fs(&tree, fstype, source, target, options)?,
            MountOp::Bind {
                source,
                target,
                readonly,
            } => bind(&tree, source, target, *readonly)?,
            MountOp::Symlink { target, link } => {
                if tree.lstat(Path::new(link)).map_err(in_root)?.is_none() {
                    tree.symlink(std::ffi::OsStr::new(target), Path::new(link))
                        .map_err(in_root)?;
                }
            }
            MountOp::Mask { path } => mask(&tree, path)?,
            MountOp::ReadOnly { path } => {
                if let Some(t) = tree.existing_target(Path::new(path)).map_err(in_root)? {
                    sys::mount::bind(&t.path(), &t.path(), false).map_err(sys_err)?;
                    remount_readonly(&tree, path)?;
                }
            }
            MountOp::RootReadOnly => {}
        }
    }
    Ok(())
}

fn sys_err(e: SysError) -> String {
    e.to_string()
}

fn in_root(e: RootfsError) -> String {
    format!("mount point: {e}")
}

/// Mounts a new `fstype` at `target`; rootless, where the kernel refuses one that needs
/// a namespace or id keel does not have, the host's is bound or the option dropped.
fn mount_fs(
    tree: &Rootfs,
    fstype: &str,
    source: &str,
    target: &str,
    options: &[String],
) -> Result<(), String> {
    let t = tree
        .mount_target(Path::new(target), false)
        .map_err(in_root)?;
    let refused =
        |err: &SysError, errno| err.errno() == Some(errno) && sys::userns::rootless_cached();
    match sys::mount::mount_fs(fstype, source, &t.path(), options) {
        // Rootless with the host's network (`--network host`, RUN steps): a new sysfs
        // needs a network namespace of keel's own, so the host's /sys is bound
        // read-only instead, as podman does.
        Err(err) if fstype == "sysfs" && refused(&err, libc::EPERM) => {
            sys::mount::bind(Path::new("/sys"), &t.path(), false).map_err(sys_err)?;
            remount_readonly(tree, target)
        }
        // Rootless `--isolation chroot` (no PID namespace of its own): a new proc needs
        // one, so the host's is bound, as it is shared anyway.
        Err(err) if fstype == "proc" && refused(&err, libc::EPERM) => {
            sys::mount::bind(Path::new("/proc"), &t.path(), false).map_err(sys_err)
        }
        // Rootless without subordinate ids gid 5 (tty) is not mapped, and devpts refuses
        // an unmapped gid: its ptys get the user's group.
        Err(err) if fstype == "devpts" && refused(&err, libc::EINVAL) => {
            let opts: Vec<String> = options
                .iter()
                .filter(|o| !o.starts_with("gid="))
                .cloned()
                .collect();
            sys::mount::mount_fs(fstype, source, &t.path(), &opts).map_err(sys_err)
        }
        other => other.map_err(sys_err),
    }
}

/// Binds host path `source` at `target` (a file or a directory, as the source is).
fn bind(tree: &Rootfs, source: &Path, target: &str, readonly: bool) -> Result<(), String> {
    let meta = std::fs::metadata(source)
        .map_err(|err| format!("bind source {}: {err}", source.display()))?;
    let t = tree
        .mount_target(Path::new(target), !meta.is_dir())
        .map_err(in_root)?;
    sys::mount::bind(source, &t.path(), false).map_err(sys_err)?;
    if readonly {
        remount_readonly(tree, target)?;
    }
    Ok(())
}

/// Hides `path` when the image has it: an empty read-only tmpfs over a directory,
/// /dev/null over anything else.
fn mask(tree: &Rootfs, path: &str) -> Result<(), String> {
    let Some(t) = tree.existing_target(Path::new(path)).map_err(in_root)? else {
        return Ok(());
    };
    if t.is_dir() {
        let ro = ["ro".to_string(), "size=0".to_string()];
        sys::mount::mount_fs("tmpfs", "tmpfs", &t.path(), &ro).map_err(sys_err)
    } else {
        sys::mount::bind(Path::new("/dev/null"), &t.path(), false).map_err(sys_err)
    }
}

/// Remounts the mount just made at `target` read-only. The target is resolved afresh:
/// the descriptor used for the bind names the directory *under* the new mount.
fn remount_readonly(tree: &Rootfs, target: &str) -> Result<(), String> {
    let t = tree
        .existing_target(Path::new(target))
        .map_err(|e| format!("mount point: {e}"))?
        .ok_or_else(|| format!("mount point {target} vanished after mounting"))?;
    sys::mount::remount_readonly(&t.path()).map_err(|e| e.to_string())
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

/// The umask of every container process, RUN step and `keel exec`: docker's and runc's.
pub const CONTAINER_UMASK: u32 = 0o022;

/// The stdio fds a container gets; `None` inherits the caller's.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// `keel run -t`: the container gets a pseudo-terminal of its own devpts (of this
    /// size) as stdin, stdout and stderr, and [`super::Container::take_console`] hands keel
    /// its master. The fds above are then unused.
    pub terminal: Option<sys::tty::WindowSize>,
    /// The container's end of the socket the master goes back on: set by the backend
    /// itself, callers leave it `None`.
    pub console: Option<OwnedFd>,
}

/// With `stdio.console`: opens the terminal in the container's devpts (the mounts are
/// made and the root entered by now), sends its master to keel and makes the slave fds
/// 0, 1 and 2. Neither the master nor the socket stays open in the container (both are
/// close-on-exec and dropped here).
fn attach_terminal(stdio: &Stdio) -> Result<bool, SysError> {
    let Some(sock) = &stdio.console else {
        return Ok(false);
    };
    use std::os::fd::AsFd;
    let (master, slave) = sys::tty::open_pty_in_root(stdio.terminal.unwrap_or_default())?;
    sys::tty::send_fd(sock.as_fd(), master.as_fd())?;
    drop(master);
    for n in 0..3 {
        sys::proc::dup_to(&slave, n)?;
    }
    Ok(true)
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
    let own_terminal = match attach_terminal(stdio) {
        Ok(t) => t,
        Err(e) => setup(format!("keel run -t: {e}")),
    };
    if spec.tty && (stdio.stdin.is_some() || own_terminal) {
        // `-t`: the pseudo-terminal on fd 0 becomes the process's controlling terminal.
        if let Err(e) = sys::tty::take_controlling_terminal() {
            setup(e.to_string());
        }
    }
    // Before the user and capabilities change: raising a hard limit needs privilege.
    for l in &spec.ulimits {
        if let Err(e) = sys::proc::set_rlimit(&l.name, l.soft, l.hard) {
            setup(format!("--ulimit {}: {e}", l.name));
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
    // The container's umask is docker's (runc's) 022, never keel's own: under a caller's
    // umask 077 RUN steps would otherwise make 0600 files and 0700 directories.
    sys::proc::set_umask(CONTAINER_UMASK);
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

    /// The cases of the deleted `secure_target`: a planted absolute link to a host
    /// directory and a `..` chain both land inside the tree.
    #[test]
    fn ensure_dir_stays_inside_the_tree() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir(d.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), root.join("evil")).unwrap();
        ensure_dir(&root, "/evil/x").unwrap();
        assert!(
            !d.path().join("outside/x").exists(),
            "created a directory outside the rootfs"
        );
        ensure_dir(&root, "/etc/../../y").unwrap();
        assert!(root.join("y").is_dir() && !d.path().join("y").exists());
    }
}
