//! A detached container's log with a time for every line: the supervisor relays the
//! container's output into `container.log` (the bytes as written) and records when each
//! line began in `container.log.times` (one RFC 3339 time per line, line for line), so
//! `keel logs --timestamps/--since/--tail` work as docker's do. The selection itself is
//! pure and table-tested; the relay is the only I/O here.
use crate::sys::hostfs;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogsError {
    #[error("invalid --since {0:?}: give an RFC 3339 time (2026-01-02T15:04:05Z), a unix time in seconds, or a duration such as 10m or 1h30m")]
    BadSince(String),
    #[error("invalid --tail {0:?}: give a number of lines or all")]
    BadTail(String),
}

/// Which lines `keel logs` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Only lines written at or after this time.
    pub since: Option<SystemTime>,
    /// Prefix each line with its time.
    pub timestamps: bool,
}

/// `--tail N|all`.
pub fn parse_tail(s: &str) -> Result<Option<usize>, LogsError> {
    match s {
        "all" | "-1" => Ok(None),
        n => n
            .parse()
            .map(Some)
            .map_err(|_| LogsError::BadTail(s.to_string())),
    }
}

/// `--since`: an RFC 3339 time, unix seconds, or a duration back from `now`.
pub fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime, LogsError> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    }
    let d = humantime::parse_duration(s).map_err(|_| LogsError::BadSince(s.to_string()))?;
    Ok(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH))
}

/// The times file's path next to a log.
pub fn times_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".times");
    PathBuf::from(p)
}

/// The selected lines of `log` (bytes as written) given each line's start time (`times`,
/// one entry per line; a log written before times were kept has none, and then only
/// `--tail` applies).
pub fn select(log: &[u8], times: &str, sel: &Selection) -> Vec<u8> {
    let stamps: Vec<&str> = times.lines().collect();
    let mut lines: Vec<(Option<&str>, &[u8])> = log
        .split_inclusive(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| (stamps.get(i).copied(), l))
        .collect();
    if let Some(since) = sel.since {
        lines.retain(|(t, _)| {
            t.and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .is_none_or(|t| t >= since)
        });
    }
    if let Some(n) = sel.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut out = Vec::new();
    for (t, l) in lines {
        if sel.timestamps {
            out.extend_from_slice(t.unwrap_or("-").as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(l);
    }
    out
}

/// Copies everything read from `from` (the container's stdout and stderr) into `log`,
/// and the start time of each line into the times file; ends at EOF (the container and
/// everything it started have closed their output).
pub fn relay(from: OwnedFd, log: &Path) -> std::io::Result<std::thread::JoinHandle<()>> {
    let open = |p: &Path| hostfs::open_with(File::options().create(true).append(true), p);
    let mut out = open(log)?;
    let mut times = open(&times_path(log))?;
    let mut from = File::from(from);
    Ok(std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut at_start = true;
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            let now = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
            let mut stamps = String::new();
            for b in &buf[..n] {
                if at_start {
                    stamps.push_str(&now);
                    stamps.push('\n');
                }
                at_start = *b == b'\n';
            }
            // The stamps first: a reader never sees a line without its time.
            let _ = times.write_all(stamps.as_bytes());
            if out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2026-01-01T00:00:01.000000000Z";
    const T2: &str = "2026-01-01T00:00:02.000000000Z";
    const T3: &str = "2026-01-01T00:00:03.000000000Z";

    #[test]
    fn selections() {
        let log = b"a\nb\nc";
        let times = format!("{T1}\n{T2}\n{T3}\n");
        let at = |s: &str| humantime::parse_rfc3339(s).unwrap();
        for (sel, want) in [
            (Selection::default(), "a\nb\nc".to_string()),
            (
                Selection {
                    tail: Some(2),
                    ..Default::default()
                },
                "b\nc".into(),
            ),
            (
                Selection {
                    tail: Some(0),
                    ..Default::default()
                },
                String::new(),
            ),
            (
                Selection {
                    since: Some(at("2026-01-01T00:00:02Z")),
                    ..Default::default()
                },
                "b\nc".into(),
            ),
            (
                Selection {
                    tail: Some(1),
                    timestamps: true,
                    ..Default::default()
                },
                format!("{T3} c"),
            ),
        ] {
            assert_eq!(
                String::from_utf8(select(log, &times, &sel)).unwrap(),
                want,
                "{sel:?}"
            );
        }
        // An old log without times: everything passes --since, stamps are '-'.
        let sel = Selection {
            since: Some(at(T2)),
            timestamps: true,
            tail: None,
        };
        assert_eq!(select(b"x\n", "", &sel), b"- x\n");
    }

    #[test]
    fn parsing() {
        let now = humantime::parse_rfc3339("2026-01-01T01:00:00Z").unwrap();
        assert_eq!(
            parse_since("10m", now).unwrap(),
            humantime::parse_rfc3339("2026-01-01T00:50:00Z").unwrap()
        );
        assert_eq!(
            parse_since("2026-01-01T00:00:00Z", now).unwrap(),
            humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap()
        );
        assert_eq!(parse_since("0", now).unwrap(), SystemTime::UNIX_EPOCH);
        assert!(parse_since("yesterday", now).is_err());
        assert_eq!(parse_tail("all").unwrap(), None);
        assert_eq!(parse_tail("3").unwrap(), Some(3));
        assert!(parse_tail("x").is_err());
    }
}
