//! Pseudo-terminals for `keel run -t`: open a pair, make the slave the controlling terminal
//! of the container's process, put the user's terminal in raw mode while it is relayed.
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::error::{check, SysError};

/// A new pseudo-terminal: (master, slave), both close-on-exec: whoever hands the slave
/// to a process as its stdio dup2()s it there, and neither end may stay open as an extra
/// descriptor in the container.
pub fn open_pty() -> Result<(OwnedFd, OwnedFd), SysError> {
    let p = check("openpty", nix::pty::openpty(None, None))?;
    for fd in [&p.master, &p.slave] {
        let flags = nix::fcntl::FdFlag::FD_CLOEXEC;
        check(
            "fcntl FD_CLOEXEC",
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(flags)),
        )?;
    }
    Ok((p.master, p.slave))
}

/// In a child whose fd 0 is a terminal: start a session and make that terminal its
/// controlling terminal (so job control and ^C work inside).
pub fn take_controlling_terminal() -> Result<(), SysError> {
    check("setsid", nix::unistd::setsid())?;
    nix::ioctl_write_int_bad!(tiocsctty, libc::TIOCSCTTY);
    // SAFETY: TIOCSCTTY on fd 0 with argument 0 reads and writes no memory.
    check("ioctl TIOCSCTTY", unsafe { tiocsctty(0, 0) }).map(drop)
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}

fn window_size(fd: BorrowedFd<'_>) -> Option<libc::winsize> {
    nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, libc::winsize);
    use std::os::fd::AsRawFd;
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: ws is a valid, writable winsize for the kernel to fill.
    let ok = unsafe { get_winsize(fd.as_raw_fd(), &mut ws) }.is_ok();
    ok.then_some(ws)
}

/// Copies the window size of terminal `from` to terminal `to` (best effort).
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);
    use std::os::fd::AsRawFd;
    if let Some(ws) = window_size(from) {
        // SAFETY: ws is a valid winsize the kernel only reads.
        let _ = unsafe { set_winsize(to.as_raw_fd(), &ws) };
    }
}

/// The number of columns of terminal `fd`, if it is one.
pub fn columns(fd: BorrowedFd<'_>) -> Option<u16> {
    window_size(fd).map(|ws| ws.ws_col).filter(|c| *c > 0)
}

/// Raw mode on a terminal for as long as the guard lives.
pub struct RawMode {
    fd: OwnedFd,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    pub fn enter(fd: BorrowedFd<'_>) -> Result<RawMode, SysError> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let saved = check("tcgetattr", tcgetattr(fd))?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        check("tcsetattr", tcsetattr(fd, SetArg::TCSANOW, &raw))?;
        let fd = fd
            .try_clone_to_owned()
            .map_err(|e| SysError::new("dup", e))?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            self.fd.as_fd(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}
