//! Process bookkeeping for supervisors: detaching into a new session, checking whether a
//! recorded pid is still alive, and naming signals.
use std::str::FromStr;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::error::{check, SysError};

/// Starts a new session (detaches from the controlling terminal and its signals).
pub fn new_session() -> Result<(), SysError> {
    check("setsid", nix::unistd::setsid()).map(drop)
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    if nix::sys::signal::kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    // A zombie still answers kill(0); its state letter in /proc says it is dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => false,
    }
}

/// A signal number from a name (`TERM`, `SIGTERM`, `sigusr1`) or a number.
pub fn signal_number(name: &str) -> Option<i32> {
    let n = name.trim();
    if let Ok(num) = n.parse::<i32>() {
        return Signal::try_from(num).ok().map(|s| s as i32);
    }
    let upper = n.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&full).ok().map(|s| s as i32)
}

/// The first process at or below `pid` (breadth first) whose network namespace differs
/// from this process's: where a container's sockets live, whether the backend put the
/// container process right at `pid` (namespaces) or below a runtime (runc's children).
/// Waits up to `timeout` for a runtime that is still setting the container up; `None` at
/// once when `pid` has ended (a zombie has no namespaces to look at).
pub fn netns_holder(pid: i32, timeout: std::time::Duration) -> Option<i32> {
    let ours = std::fs::read_link("/proc/self/ns/net").ok()?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut todo = std::collections::VecDeque::from([pid]);
        while let Some(p) = todo.pop_front() {
            match std::fs::read_link(format!("/proc/{p}/ns/net")) {
                Ok(ns) if ns != ours => return Some(p),
                Ok(_) => {}
                Err(_) => continue,
            }
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                if let Ok(kids) = std::fs::read_to_string(t.path().join("children")) {
                    todo.extend(
                        kids.split_whitespace()
                            .filter_map(|k| k.parse::<i32>().ok()),
                    );
                }
            }
        }
        if std::time::Instant::now() >= deadline || !alive(pid) {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(signal_number("TERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("SIGUSR1"), Some(libc::SIGUSR1));
        assert_eq!(signal_number("quit"), Some(libc::SIGQUIT));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("NOPE"), None);
        assert!(alive(std::process::id() as i32));
    }
}
