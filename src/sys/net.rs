//! Network-namespace helpers: bring the loopback interface up.
use std::os::fd::AsRawFd;

use super::SysError;

/// Sets `lo` up in the caller's network namespace (a new one starts with it down).
pub fn loopback_up() -> Result<(), SysError> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = super::error::check(
        "socket",
        socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        ),
    )?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: valid socket fd and a properly initialized ifreq for SIOCGIFFLAGS.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(SysError::new(
            "get lo flags",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: as above, for SIOCSIFFLAGS.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(SysError::new("set lo up", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Wakes a thread blocked in `accept` on `listener` (shutdown(2) makes accept fail).
pub fn wake_listener(listener: &std::net::TcpListener) {
    let _ = nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
}

/// Connects to `addr` from inside the network namespace of process `pid`. The connect runs
/// on a short-lived helper thread that enters the namespace (setns affects only the calling
/// thread); the socket stays in that namespace after the thread ends.
pub fn connect_in_netns(
    pid: i32,
    addr: std::net::SocketAddr,
) -> Result<std::net::TcpStream, SysError> {
    let ns = super::ns::open_ns(pid, "net")?;
    std::thread::spawn(move || {
        super::ns::setns(&ns)?;
        std::net::TcpStream::connect(addr)
            .map_err(|e| SysError::new("connect in container network", e))
    })
    .join()
    .map_err(|_| {
        SysError::new(
            "connect in container network",
            std::io::Error::other("helper thread panicked"),
        )
    })?
}
