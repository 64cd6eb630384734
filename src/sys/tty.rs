//! Pseudo-terminals for `keel run -t` and `keel exec -t`: open a pair in the container's
//! own devpts, pass a master between processes over a unix
//! socket (SCM_RIGHTS), make the slave the controlling terminal of the container's process,
//! put the user's terminal in raw mode while it is relayed.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::error::{check, SysError};

/// A terminal size in character cells (0 × 0 when keel's own stdin is no terminal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// The window size of terminal `fd`, if it is one.
pub fn size_of(fd: BorrowedFd<'_>) -> Option<WindowSize> {
    window_size(fd).map(|ws| WindowSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// A new pseudo-terminal in the devpts instance mounted at `/dev/pts` of the calling
/// process's root (a container's own, `newinstance`), as docker/runc allocate it: the slave
/// then has a name inside the container (`tty` prints `/dev/pts/0`), which a host pty
/// would not. The slave is opened from the master with TIOCGPTPEER (no path lookup in the
/// container's tree); both ends are close-on-exec and the slave is not yet a controlling
/// terminal (O_NOCTTY). `size` is set on it before anything runs there.
pub fn open_pty_in_root(size: WindowSize) -> Result<(OwnedFd, OwnedFd), SysError> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = check(
        "open /dev/pts/ptmx",
        nix::fcntl::open("/dev/pts/ptmx", flags, nix::sys::stat::Mode::empty()),
    )?;
    nix::ioctl_write_ptr_bad!(tiocsptlck, libc::TIOCSPTLCK, libc::c_int);
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK only reads the int behind the valid pointer.
    check("ioctl TIOCSPTLCK", unsafe {
        tiocsptlck(master.as_raw_fd(), &unlock)
    })?;
    nix::ioctl_write_int_bad!(tiocgptpeer, libc::TIOCGPTPEER);
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd (or -1).
    let raw = check("ioctl TIOCGPTPEER", unsafe {
        tiocgptpeer(master.as_raw_fd(), flags.bits())
    })?;
    // SAFETY: the ioctl just returned this fd and nothing else owns it.
    let slave = unsafe { OwnedFd::from_raw_fd(raw) };
    if size != WindowSize::default() {
        set_size(slave.as_fd(), size);
    }
    Ok((master, slave))
}

/// Sets the window size of terminal `fd` (best effort).
pub fn set_size(fd: BorrowedFd<'_>, size: WindowSize) {
    nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: ws is a valid winsize the kernel only reads.
    let _ = unsafe { set_winsize(fd.as_raw_fd(), &ws) };
}

/// A connected pair of unix stream sockets, both close-on-exec: the container's side
/// sends its terminal's master back to keel over it.
pub fn console_pair() -> Result<(OwnedFd, OwnedFd), SysError> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    check(
        "socketpair",
        socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        ),
    )
}

/// Sends `fd` over the unix socket `sock` (SCM_RIGHTS) with one byte of data.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Result<(), SysError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"t")];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    check(
        "sendmsg SCM_RIGHTS",
        sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None),
    )
    .map(drop)
}

/// Receives one fd sent with [`send_fd`] (or by an OCI runtime on its console socket);
/// `None` when the peer sent none. With `wait` false it does not block: `None` when
/// nothing is queued (the container failed before it made its terminal).
pub fn recv_fd(sock: BorrowedFd<'_>, wait: bool) -> Result<Option<OwnedFd>, SysError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut flags = MsgFlags::MSG_CMSG_CLOEXEC;
    if !wait {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    let msg = match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags) {
        Err(nix::errno::Errno::EAGAIN) => return Ok(None),
        r => check("recvmsg SCM_RIGHTS", r)?,
    };
    let mut got = None;
    for c in msg
        .cmsgs()
        .map_err(|e| SysError::new("recvmsg SCM_RIGHTS", e))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: the kernel installed this fd in our table for us alone.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                got.get_or_insert(fd);
            }
        }
    }
    Ok(got)
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

/// Copies the window size of terminal `from` to terminal `to` (best effort), as
/// [`copy_size_raw`] does.
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    copy_size_raw(from.as_raw_fd(), to.as_raw_fd());
}

/// From a signal handler: copies the window size of terminal fd `from` to `to`; nothing
/// when `to` is negative or either is not a terminal. Only ioctl(2): async-signal-safe.
///
/// After each copy `from` is read again, and the copy repeats while it changed: copies
/// can run at once (a process-directed SIGWINCH goes to any thread not blocking it, and
/// the first copy after the console arrives runs on the main thread), and one that read
/// the size before a resize must not be the last to write (`stty rows 50 cols 120` is two
/// resizes; the container was left at the first's size). Whichever copy writes last then
/// reads the size it wrote; the repeat is bounded for a terminal resized without pause.
pub(super) fn copy_size_raw(from: i32, to: i32) {
    if to < 0 {
        return;
    }
    nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, libc::winsize);
    nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);
    let read = || {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: ws is a valid winsize for the kernel to fill.
        unsafe { get_winsize(from, &mut ws) }.ok().map(|_| ws)
    };
    let same = |a: &libc::winsize, b: &libc::winsize| {
        (a.ws_row, a.ws_col, a.ws_xpixel, a.ws_ypixel)
            == (b.ws_row, b.ws_col, b.ws_xpixel, b.ws_ypixel)
    };
    let Some(mut ws) = read() else { return };
    for _ in 0..16 {
        // SAFETY: ws is a valid winsize the kernel only reads; a stale fd number fails
        // with EBADF/ENOTTY and changes nothing.
        if unsafe { set_winsize(to, &ws) }.is_err() {
            return;
        }
        match read() {
            Some(now) if !same(&now, &ws) => ws = now,
            _ => return,
        }
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
