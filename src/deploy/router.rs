//! An app's router: the one stable address of a deployed app. It listens on the app's
//! port and relays every new connection to a web container of the release that is
//! current at that moment, read from the app's state on each connection (round robin
//! over its web processes; an unreachable one is skipped). A deploy switches releases by
//! rewriting the state file: connections already open stay on the old release until it
//! is stopped, new ones go to the new release — no request meets a closed port.
//!
//! It runs as `keel __router APP`, a process of its own session, started by the first
//! deploy and again by any deploy that finds it gone.
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// The host ports of the current release's web processes.
fn backends(root: &Path, app: &str) -> Vec<u16> {
    let Ok(Some(state)) = super::load(root, app) else {
        return Vec::new();
    };
    state
        .current_release()
        .map(|r| {
            r.processes
                .iter()
                .filter(|p| p.kind == "web" && p.port != 0)
                .map(|p| p.port)
                .collect()
        })
        .unwrap_or_default()
}

/// Connects to one of the backends, starting at the `turn`th.
fn dial(ports: &[u16], turn: usize) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotConnected, "the app has no web process");
    for i in 0..ports.len() {
        let port = ports[(turn + i) % ports.len()];
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Copies one direction until EOF, then half-closes the other side.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn relay(client: TcpStream, root: &Path, app: &str, turn: usize) {
    let ports = backends(root, app);
    let Ok(upstream) = dial(&ports, turn) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let back = thread::spawn(move || pipe(u2, c2));
    pipe(client, upstream);
    let _ = back.join();
}

/// Binds the app's port (`0`: any free port) and returns the listener and its port.
pub fn bind(port: u16) -> io::Result<(TcpListener, u16)> {
    let l = TcpListener::bind(("0.0.0.0", port))?;
    let port = l.local_addr()?.port();
    Ok((l, port))
}

/// Serves `listener` for app `app` of the keel root `root`, forever.
pub fn serve(listener: TcpListener, root: PathBuf, app: String) -> io::Result<()> {
    let turn = AtomicUsize::new(0);
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        let (root, app) = (root.clone(), app.clone());
        let t = turn.fetch_add(1, Ordering::Relaxed);
        thread::spawn(move || relay(client, &root, &app, t));
    }
    Ok(())
}
