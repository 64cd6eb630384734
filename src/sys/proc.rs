//! Process operations: fork, exec, wait, kill, pipes, credentials, prctl, and signal
//! masks/forwarding. Functions meant for a forked child avoid locks the parent may hold.
use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::error::{check, check_at};
use super::SysError;

/// Which side of a fork we are on.
pub enum Fork {
    Child,
    Parent(i32),
}

/// fork(2). The child of a multi-threaded process must only exec or `_exit` after doing
/// simple work (glibc keeps malloc usable in the child).
pub fn fork() -> Result<Fork, SysError> {
    // SAFETY: callers (runtime backends) only run setup code and exec/_exit in the child.
    match check("fork", unsafe { nix::unistd::fork() })? {
        nix::unistd::ForkResult::Child => Ok(Fork::Child),
        nix::unistd::ForkResult::Parent { child } => Ok(Fork::Parent(child.as_raw())),
    }
}

/// How a waited-for process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

impl Ended {
    /// The shell convention: the exit code, or 128+N after signal N.
    pub fn code(self) -> i32 {
        match self {
            Ended::Exited(c) => c,
            Ended::Signaled(s) => 128 + s,
        }
    }
}

fn ended(st: WaitStatus) -> Option<(i32, Ended)> {
    match st {
        WaitStatus::Exited(p, c) => Some((p.as_raw(), Ended::Exited(c))),
        WaitStatus::Signaled(p, s, _) => Some((p.as_raw(), Ended::Signaled(s as i32))),
        _ => None,
    }
}

/// Waits until `pid` ends (retrying on EINTR).
pub fn wait(pid: i32) -> Result<Ended, SysError> {
    loop {
        match nix::sys::wait::waitpid(Pid::from_raw(pid), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => {
                if let Some((_, e)) = ended(check("waitpid", r)?) {
                    return Ok(e);
                }
            }
        }
    }
}

/// Reaps one ended child without blocking: `Ok(None)` when none has ended (or none exist).
pub fn reap_any() -> Result<Option<(i32, Ended)>, SysError> {
    match nix::sys::wait::waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        Err(nix::errno::Errno::ECHILD) => Ok(None),
        r => Ok(ended(check("waitpid", r)?)),
    }
}

/// Sends signal number `sig` to `pid`.
pub fn kill(pid: i32, sig: i32) -> Result<(), SysError> {
    let s = check("kill", Signal::try_from(sig))?;
    check("kill", nix::sys::signal::kill(Pid::from_raw(pid), s))
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, clock ticks since
/// boot): with the pid, it names one process for good, since a reused pid starts later.
/// `None` when the process does not exist (or is a zombie, already dead).
pub fn start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/PID/stat` line (proc(5)); fields are counted after the command
/// name, which may itself hold spaces and parentheses. A zombie counts as gone.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split(' ');
    if matches!(fields.next(), Some("Z") | Some("X")) {
        return None;
    }
    // `rest` starts at field 3 (state), so field 22 is 18 fields after it.
    fields.nth(22 - 4)?.parse().ok()
}

/// Sends `sig` to `pid` only if it is still the process that started at `start` (see
/// [`start_time`]). A pidfd is opened first and the start time checked after, so a pid
/// reused in between is never signalled: the pidfd then names the old, dead process.
/// `Ok(false)` when the process is not (or no longer) that one.
pub fn kill_if_started(pid: i32, start: u64, sig: i32) -> Result<bool, SysError> {
    if pid <= 0 {
        return Ok(false);
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Ok(false);
    }
    // SAFETY: the fd was just returned by the kernel and is owned by nothing else.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    if start_time(pid) != Some(start) {
        return Ok(false);
    }
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal with a valid pidfd, no siginfo and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    match r {
        0 => Ok(true),
        _ => match std::io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
            e => Err(SysError::new("pidfd_send_signal", e)),
        },
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd), SysError> {
    check("pipe", nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC))
}

/// Writes all of `buf` to `fd` (retrying on EINTR and short writes).
pub fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> Result<(), SysError> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => buf = &buf[check("write", r)?..],
        }
    }
    Ok(())
}

/// Reads `fd` until end of file.
pub fn read_to_end(fd: &OwnedFd) -> Result<Vec<u8>, SysError> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => match check("read", r)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            },
        }
    }
}

/// Replaces the process image; returns only on failure.
pub fn execve(path: &CStr, args: &[CString], env: &[CString]) -> SysError {
    let e = nix::unistd::execve(path, args, env).unwrap_err();
    SysError::at(
        "exec",
        Path::new(&*path.to_string_lossy()),
        std::io::Error::from(e),
    )
}

/// Ends the process immediately, without running exit handlers or flushing stdio.
pub fn exit(code: i32) -> ! {
    // SAFETY: _exit is always safe; it never returns.
    unsafe { libc::_exit(code) }
}

/// Sets supplementary groups, then gid, then uid (real, effective and saved).
pub fn set_user(uid: u32, gid: u32, groups: &[u32]) -> Result<(), SysError> {
    let groups: Vec<nix::unistd::Gid> = groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    let g = nix::unistd::Gid::from_raw(gid);
    match nix::unistd::setgroups(&groups) {
        // Rootless with a single-id map (no /etc/subgid range) the kernel forbids
        // setgroups (user_namespaces(7)); only the primary group exists there anyway.
        Err(nix::errno::Errno::EPERM)
            if groups.iter().all(|x| *x == g)
                && std::fs::read_to_string("/proc/self/setgroups")
                    .is_ok_and(|s| s.trim() == "deny") => {}
        r => check("setgroups", r)?,
    }
    check("setresgid", nix::unistd::setresgid(g, g, g))?;
    let u = nix::unistd::Uid::from_raw(uid);
    check("setresuid", nix::unistd::setresuid(u, u, u))
}

/// prctl(PR_SET_NO_NEW_PRIVS): exec can never grant more privileges.
pub fn set_no_new_privs() -> Result<(), SysError> {
    check("prctl no_new_privs", nix::sys::prctl::set_no_new_privs())
}

/// Makes `/proc/self/cmdline` read `name` (and `comm` its first 15 bytes) by overwriting
/// the process's own argument area in place, as setproctitle(3) does: `name` and a NUL
/// at its start, zeros after, and a non-NUL last byte, which tells the kernel to report
/// only the string up to the first NUL. (prctl(PR_SET_MM) would need CAP_SYS_RESOURCE.)
/// A container's init uses it so PID 1 does not show keel's path, root and flags.
pub fn set_cmdline(name: &str) -> Result<(), SysError> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| SysError::at("read", Path::new("/proc/self/stat"), e))?;
    // Fields after the command name (which may hold spaces) start at field 3; arg_start
    // and arg_end are fields 48 and 49 (proc(5)).
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let field = |n: usize| {
        rest.split(' ')
            .nth(n - 3)
            .and_then(|f| f.parse::<usize>().ok())
    };
    let (Some(start), Some(end)) = (field(48), field(49)) else {
        return Err(SysError::new(
            "set process title",
            std::io::Error::other("/proc/self/stat has no argument area"),
        ));
    };
    let len = end.saturating_sub(start);
    if len >= 2 {
        let keep = name.len().min(len - 2);
        // SAFETY: [start, end) is this process's argument area on its own stack, mapped
        // writable for the life of the process; nothing in keel holds references into it
        // (std copies arguments out when asked).
        let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
        area.fill(0);
        area[..keep].copy_from_slice(&name.as_bytes()[..keep]);
        area[len - 1] = b' ';
    }
    let comm = std::ffi::CString::new(name.as_bytes()).unwrap_or_default();
    check("prctl PR_SET_NAME", nix::sys::prctl::set_name(&comm))
}

/// prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants become this process's children,
/// so a container a detached OCI runtime started can be waited for here.
pub fn become_subreaper() -> Result<(), SysError> {
    check(
        "prctl PR_SET_CHILD_SUBREAPER",
        nix::sys::prctl::set_child_subreaper(true),
    )
}

/// prctl(PR_SET_PDEATHSIG): the kernel sends `SIGKILL` when the parent dies.
pub fn kill_with_parent() -> Result<(), SysError> {
    check(
        "prctl pdeathsig",
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL),
    )
}

/// chdir(2).
pub fn chdir(path: &Path) -> Result<(), SysError> {
    check_at("chdir", path, nix::unistd::chdir(path))
}

/// access(path, X_OK) on a regular file: `Ok(true)` executable, `Ok(false)` present but not.
pub fn is_executable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// The signals `keel run` passes on to the container (SIGINT, SIGTERM, SIGHUP, SIGQUIT,
/// SIGUSR1, SIGUSR2, SIGWINCH).
pub const FORWARDED: &[i32] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Blocks all signals in the calling thread (an init process waits for them with [`sigwait`]).
pub fn block_all_signals() -> Result<(), SysError> {
    check("sigprocmask", SigSet::all().thread_block())
}

/// Unblocks all signals and resets every handler to the default (before exec in a child).
pub fn reset_signals() -> Result<(), SysError> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler};
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL is always sound.
            let _ = unsafe { sigaction(sig, &dfl) };
        }
    }
    check("sigprocmask", SigSet::all().thread_unblock())
}

/// Waits for any signal (all must be blocked); returns its number.
pub fn sigwait() -> Result<i32, SysError> {
    loop {
        match SigSet::all().wait() {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return check("sigwait", r).map(|s| s as i32),
        }
    }
}

const SLOTS: usize = 64;
static TARGETS: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

/// The last terminating signal (INT, TERM, HUP) received while the handlers were installed.
static TERMINATION: AtomicI32 = AtomicI32::new(0);

/// `keel run -t`: the master of the container's terminal, which follows the size of keel's
/// stdin on SIGWINCH (-1: none).
static RESIZE_MASTER: AtomicI32 = AtomicI32::new(-1);

extern "C" fn forward(sig: libc::c_int) {
    if matches!(sig, libc::SIGINT | libc::SIGTERM | libc::SIGHUP) {
        TERMINATION.store(sig, Ordering::Relaxed);
    }
    if sig == libc::SIGWINCH {
        super::tty::copy_size_raw(0, RESIZE_MASTER.load(Ordering::Relaxed));
    }
    for t in &TARGETS {
        let pid = t.load(Ordering::Relaxed);
        if pid > 0 {
            // SAFETY: kill is async-signal-safe.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// While alive, the [`FORWARDED`] signals this process receives are sent on to `pid`.
/// Dropping the guard stops forwarding to it (the handlers stay installed; with no
/// targets they do nothing, so the process keeps running rather than dying of e.g. SIGINT).
pub struct Forwarding {
    slot: usize,
}

/// The terminating signal this process received since its handlers were installed, if
/// any: long operations (a build) check it between steps and stop cleanly.
pub fn termination_requested() -> Option<i32> {
    Some(TERMINATION.load(Ordering::Relaxed)).filter(|s| *s != 0)
}

/// Installs the forwarding handlers with no target yet, so INT/TERM/HUP are recorded
/// (see [`termination_requested`]) instead of killing the process mid-operation.
pub fn catch_termination() -> Result<(), SysError> {
    drop(forward_signals(0)?);
    Ok(())
}

/// Starts forwarding [`FORWARDED`] signals to `pid` (at most 64 at once).
pub fn forward_signals(pid: i32) -> Result<Forwarding, SysError> {
    let slot = TARGETS
        .iter()
        .position(|t| {
            t.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })
        .ok_or_else(|| {
            SysError::new(
                "forward signals",
                std::io::Error::other("too many containers in this process"),
            )
        })?;
    for sig in FORWARDED {
        let s = check("sigaction", Signal::try_from(*sig))?;
        check("sigaction", install_forward(s))?;
    }
    Ok(Forwarding { slot })
}

/// Installs [`forward`] as the handler of `sig`.
fn install_forward(sig: Signal) -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler};
    let act = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only reads atomics and calls ioctl(2) and kill(2), all
    // async-signal-safe.
    unsafe { sigaction(sig, &act) }.map(drop)
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        TARGETS[self.slot].store(0, Ordering::SeqCst);
    }
}

/// While alive, a SIGWINCH to this process copies the window size of its stdin to the
/// terminal `master` (the kernel then signals the terminal's foreground process group, as
/// a resized terminal does).
pub struct FollowWindowSize(());

/// Starts [`FollowWindowSize`] for `master` (one at a time per process): the handler is
/// in place when this returns, so a size the caller copies next is followed from then on.
///
/// It installs the handler itself: `keel exec -t` under oci forwards signals only once
/// `runc exec` is done, after the size was copied, and a resize in that gap was lost
/// (SIGWINCH is ignored by default; r-flaky-2 in tests/it/run.rs).
pub fn follow_window_size(master: std::os::fd::BorrowedFd<'_>) -> FollowWindowSize {
    use std::os::fd::AsRawFd;
    RESIZE_MASTER.store(master.as_raw_fd(), Ordering::SeqCst);
    // sigaction fails only for an invalid signal, which SIGWINCH is not.
    let _ = install_forward(Signal::SIGWINCH);
    FollowWindowSize(())
}

impl Drop for FollowWindowSize {
    fn drop(&mut self) {
        RESIZE_MASTER.store(-1, Ordering::SeqCst);
    }
}

/// Makes `fd` this process's stdin (0), stdout (1) or stderr (2).
pub fn dup_to(fd: &OwnedFd, target: i32) -> Result<(), SysError> {
    let r = match target {
        0 => nix::unistd::dup2_stdin(fd),
        1 => nix::unistd::dup2_stdout(fd),
        _ => nix::unistd::dup2_stderr(fd),
    };
    check("dup2", r)
}

/// Closes a raw fd number (a forked child closing its copy of an inherited pipe end).
pub fn close_raw(fd: i32) {
    let _ = nix::unistd::close(fd);
}

/// Closes every fd of this process except 0, 1, 2 and `keep`. A forked child of a
/// multi-threaded parent inherits other threads' pipes; a long-lived child (an init)
/// holding them would keep another container's start handshake from seeing EOF.
pub fn close_fds_except(keep: &[i32]) {
    let mut kept: Vec<i32> = keep.iter().copied().chain(0..=2).collect();
    kept.sort_unstable();
    kept.dedup();
    close_all_but(&kept);
}

/// A child process closing handles this process gave it ([`close_in_child`]).
#[derive(Debug)]
pub struct Closer(i32);

impl Closer {
    /// Waits until the child has closed every handle — and so the kernel has done what
    /// closing them costs — and reaps it.
    pub fn wait(self) {
        let _ = wait(self.0);
    }
}

/// Closes `fds` in a forked child, so this process can go on — and end — before the
/// closes do: the last close of a handle on a detached overlay runs the kernel's eviction
/// of everything the overlay cached in the closing task (tens of milliseconds after a RUN
/// step walked 10,000 files), and a process's exit waits for its threads, not for its
/// children (systemd's `asynchronous_close` does the same for the same reason). The child
/// first closes every other fd it inherited (stdout and stderr included, so nobody
/// reading this process's output waits for it; no lock file stays held), then waits for
/// this process to have closed its own copies of `fds` — so the child's closes are the
/// last, and the costly ones — then closes them and exits. It allocates nothing and runs
/// only system calls after the fork. On failure, `fds` are handed back.
pub fn close_in_child(fds: Vec<OwnedFd>) -> Result<Closer, (SysError, Vec<OwnedFd>)> {
    use std::os::fd::AsRawFd;
    let (go_r, go_w) = match pipe() {
        Ok(p) => p,
        Err(e) => return Err((e, fds)),
    };
    let mut keep: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    keep.push(go_r.as_raw_fd());
    keep.sort_unstable();
    match fork() {
        Err(e) => Err((e, fds)),
        Ok(Fork::Child) => {
            close_all_but(&keep);
            // Dies of INT, TERM and HUP (the kernel then closes `fds` all the same)
            // instead of running this process's handlers.
            let _ = reset_signals();
            let mut byte = [0u8; 1];
            // EOF once the parent closed its end (after its copies of `fds`).
            while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(&go_r, &mut byte) {}
            for fd in &fds {
                close_raw(fd.as_raw_fd());
            }
            exit(0)
        }
        Ok(Fork::Parent(pid)) => {
            drop(fds);
            drop(go_w);
            Ok(Closer(pid))
        }
    }
}

/// Closes every fd but the sorted, distinct `keep` (in a forked child: no allocation).
pub(super) fn close_all_but(keep: &[i32]) {
    let mut first: u32 = 0;
    for &fd in keep.iter().filter(|fd| **fd >= 0) {
        let fd = fd as u32;
        if fd > first {
            close_range(first, fd - 1);
        }
        first = fd + 1;
    }
    close_range(first, u32::MAX);
}

/// close_range(2), or one close per number where the kernel lacks it (before 5.9; the
/// range then ends at the soft fd limit).
fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes descriptors; the caller (a forked child) owns none
    // that Rust code will use again.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if r == 0 {
        return;
    }
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft.min(1 << 16) as u32)
        .unwrap_or(1024);
    for fd in first..=last.min(limit) {
        close_raw(fd as i32);
    }
}

/// True when the effective uid is 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The resource docker's name for it stands for (`nofile`, `nproc`, `as`, …).
fn resource(name: &str) -> Result<nix::sys::resource::Resource, SysError> {
    use nix::sys::resource::Resource as R;
    Ok(match name {
        "core" => R::RLIMIT_CORE,
        "cpu" => R::RLIMIT_CPU,
        "data" => R::RLIMIT_DATA,
        "fsize" => R::RLIMIT_FSIZE,
        "locks" => R::RLIMIT_LOCKS,
        "memlock" => R::RLIMIT_MEMLOCK,
        "msgqueue" => R::RLIMIT_MSGQUEUE,
        "nice" => R::RLIMIT_NICE,
        "nofile" => R::RLIMIT_NOFILE,
        "nproc" => R::RLIMIT_NPROC,
        "rss" => R::RLIMIT_RSS,
        "rtprio" => R::RLIMIT_RTPRIO,
        "rttime" => R::RLIMIT_RTTIME,
        "sigpending" => R::RLIMIT_SIGPENDING,
        "stack" => R::RLIMIT_STACK,
        "as" => R::RLIMIT_AS,
        _ => {
            return Err(SysError::at(
                "setrlimit",
                Path::new(name),
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            ))
        }
    })
}

/// Sets one resource limit of the calling process by docker's name for it (`nofile`,
/// `nproc`, `core`, …); `u64::MAX` is unlimited.
pub fn set_rlimit(name: &str, soft: u64, hard: u64) -> Result<(), SysError> {
    nix::sys::resource::setrlimit(resource(name)?, soft, hard)
        .map_err(|e| SysError::at("setrlimit", Path::new(name), std::io::Error::from(e)))
}

/// Makes the process `cmd` spawns start with these limits (docker's names; soft and hard
/// alike): a helper keel runs on input from outside (`git fetch` of a Dockerfile's URL)
/// must not take the machine's memory or disk with it. Lowers limits only: one already
/// tighter stays.
pub fn limit_child(
    cmd: &mut std::process::Command,
    limits: &[(&str, u64)],
) -> Result<(), SysError> {
    use std::os::unix::process::CommandExt;
    let mut set = Vec::with_capacity(limits.len());
    for (name, value) in limits {
        let r = resource(name)?;
        let (soft, hard) = nix::sys::resource::getrlimit(r)
            .map_err(|e| SysError::at("getrlimit", Path::new(name), std::io::Error::from(e)))?;
        set.push((r, soft.min(*value), hard.min(*value)));
    }
    // SAFETY: the closure runs in the forked child before exec. It makes setrlimit calls
    // alone (async-signal-safe) and allocates nothing: the limits were worked out above
    // and an errno converts into an io::Error without allocating.
    unsafe {
        cmd.pre_exec(move || {
            for (r, soft, hard) in &set {
                nix::sys::resource::setrlimit(*r, *soft, *hard).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    Ok(())
}

/// Clock ticks per second (`/proc/PID/stat` times are in these); 100 if unknown.
pub fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |v| v as u64)
}

/// The page size in bytes (`/proc/PID/statm` counts pages); 4096 if unknown.
pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |v| v as u64)
}

/// Sets the process's file mode creation mask.
pub fn set_umask(mask: u32) {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
}

/// The effective uid and gid.
pub fn effective_ids() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `fd` until EOF, failing after 10 s (a pipe end still held elsewhere).
    fn wait_for_eof(fd: &OwnedFd) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut byte = [0u8; 1];
        loop {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            let ready = poll(&mut fds, PollTimeout::from(10_000u16)).unwrap();
            assert_eq!(
                ready, 1,
                "no EOF within 10 s: the write end is still open somewhere"
            );
            if nix::unistd::read(fd, &mut byte).unwrap() == 0 {
                return;
            }
        }
    }

    #[test]
    fn a_closing_child_closes_what_it_is_given_and_holds_nothing_else() {
        // `other`'s write end is closed here right after the fork: EOF then proves the
        // child did not keep its inherited copy (as it must not keep stdout, or a lock).
        let (other_r, other_w) = pipe().unwrap();
        let (given_r, given_w) = pipe().unwrap();
        let (later_r, later_w) = pipe().unwrap();
        let child = close_in_child(vec![given_w, later_w])
            .map_err(|(e, _)| e)
            .unwrap();
        drop(other_w);
        wait_for_eof(&other_r);
        wait_for_eof(&given_r);
        wait_for_eof(&later_r);
        child.wait();
    }

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let rest = (4..=52)
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        for comm in ["keel", "a b", "x) (y", ")"] {
            let line = format!("42 ({comm}) S {rest}");
            assert_eq!(parse_start_time(&line), Some(22), "{comm}");
        }
        assert_eq!(parse_start_time(&format!("42 (k) Z {rest}")), None);
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn start_times_name_one_process() {
        let me = std::process::id() as i32;
        let start = start_time(me).unwrap();
        assert!(start > 0);
        assert_eq!(start_time(me), Some(start));
        assert_eq!(start_time(0), None);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let s = start_time(pid).unwrap();
        assert!(
            !kill_if_started(pid, s + 1, libc::SIGKILL).unwrap(),
            "wrong start time"
        );
        assert!(child.try_wait().unwrap().is_none());
        assert!(kill_if_started(pid, s, libc::SIGKILL).unwrap());
        child.wait().unwrap();
        assert!(!kill_if_started(pid, s, libc::SIGKILL).unwrap());
    }
}
