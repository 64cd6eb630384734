//! Whether a web process answers: an HTTP `GET /` on its host port whose status is 2xx
//! or 3xx, or (for apps that do not speak HTTP) a TCP connection the app itself keeps
//! open. The status line is parsed purely ([`status_of`]).
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How a deploy decides that web answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Check {
    /// `GET /` answers with a 2xx or 3xx status.
    Http,
    /// A connection is accepted and not closed at once.
    Tcp,
}

/// The status code of an HTTP response's first line (`HTTP/1.1 200 OK` → 200).
pub fn status_of(response: &[u8]) -> Option<u16> {
    let line = response.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// One probe of `addr`: `Ok(())` when it answers, else what it did instead.
pub fn probe(addr: SocketAddr, check: Check) -> Result<(), String> {
    let timeout = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    match check {
        Check::Tcp => {
            // keel's port proxy accepts for a container whose app is not listening yet
            // and then closes: a connection that stays open is the app's.
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(0) => Err("the connection was closed at once".into()),
                _ => Ok(()),
            }
        }
        Check::Http => {
            let req = format!("GET / HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: keel-deploy\r\n\r\n");
            s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            let _ = s.take(4096).read_to_end(&mut buf);
            match status_of(&buf) {
                Some(code) if (200..400).contains(&code) => Ok(()),
                Some(code) => Err(format!("GET / answered {code}")),
                None if buf.is_empty() => Err("the connection was closed with no answer".into()),
                None => Err("the answer is not HTTP".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        for (resp, want) in [
            (&b"HTTP/1.1 200 OK\r\n\r\nhi"[..], Some(200)),
            (b"HTTP/1.0 302 Found\r\n", Some(302)),
            (b"HTTP/1.1 503 Service Unavailable\r\n", Some(503)),
            (b"SSH-2.0-OpenSSH\r\n", None),
            (b"", None),
        ] {
            assert_eq!(status_of(resp), want, "{:?}", String::from_utf8_lossy(resp));
        }
    }
}
