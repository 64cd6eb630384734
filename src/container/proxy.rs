//! The userland port proxy run by a container's supervisor (the foreground `keel run` or
//! a detached container's supervisor): host listeners accept connections and relay each
//! to a socket created *inside* the container's network namespace. No firewall rules, no
//! bridge, no private-range addresses: the container's loopback is reached directly.
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use super::ports::Published;

type DialRequest = (u16, mpsc::Sender<io::Result<TcpStream>>);

/// Running proxies; dropping the handle stops accepting new connections.
pub struct Proxy {
    stop: Arc<AtomicBool>,
    addrs: Vec<SocketAddr>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake each accept loop so it sees the flag.
        for a in &self.addrs {
            let ip = if a.ip().is_unspecified() {
                "127.0.0.1".parse().expect("an address")
            } else {
                a.ip()
            };
            let _ = TcpStream::connect(SocketAddr::new(ip, a.port()));
        }
    }
}

/// Starts relaying every published listener to its port in network namespace `netns`
/// (an open `/proc/PID/ns/net`, which keeps the namespace whoever held it).
pub fn start(
    published: Vec<Published>,
    netns: std::os::fd::OwnedFd,
) -> Result<Proxy, crate::sys::SysError> {
    let (dial_tx, dial_rx) = mpsc::channel::<DialRequest>();
    // One thread lives in the container's network namespace and creates the sockets;
    // a socket keeps the namespace it was made in, so the relays can run anywhere.
    let (ready_tx, ready_rx) = mpsc::channel();
    thread::Builder::new()
        .name("keel-dialer".into())
        .spawn(move || {
            let entered = crate::sys::ns::setns(&netns);
            let ok = entered.is_ok();
            let _ = ready_tx.send(entered);
            if !ok {
                return;
            }
            for (port, reply) in dial_rx {
                let _ = reply.send(TcpStream::connect(("127.0.0.1", port)));
            }
        })
        .map_err(|e| crate::sys::SysError::new("spawn proxy thread", e))?;
    ready_rx
        .recv()
        .map_err(|e| crate::sys::SysError::new("start proxy", io::Error::other(e)))??;
    let stop = Arc::new(AtomicBool::new(false));
    let mut addrs = Vec::new();
    for p in published {
        addrs.push(
            p.listener
                .local_addr()
                .map_err(|e| crate::sys::SysError::new("proxy listener", e))?,
        );
        let (stop, dial, port) = (stop.clone(), dial_tx.clone(), p.mapping.container_port);
        thread::Builder::new()
            .name(format!("keel-proxy-{}", p.mapping.host_port))
            .spawn(move || accept_loop(p.listener, port, dial, stop))
            .map_err(|e| crate::sys::SysError::new("spawn proxy thread", e))?;
    }
    Ok(Proxy { stop, addrs })
}

fn accept_loop(
    listener: TcpListener,
    port: u16,
    dial: mpsc::Sender<DialRequest>,
    stop: Arc<AtomicBool>,
) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        let dial = dial.clone();
        thread::spawn(move || {
            let (tx, rx) = mpsc::channel();
            if dial.send((port, tx)).is_err() {
                return;
            }
            // A refused connection (nothing listening yet) just closes the client's.
            if let Ok(Ok(upstream)) = rx.recv() {
                relay(client, upstream);
            }
        });
    }
}

/// Copies both directions until each side ends, passing half-closes along.
fn relay(client: TcpStream, upstream: TcpStream) {
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = thread::spawn(move || pump(client, upstream));
    pump(u2, c2);
    let _ = up.join();
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
