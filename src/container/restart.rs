//! `run --restart` and what `keel start`/`restart` need: the policy (docker's `no`,
//! `on-failure[:N]`, `always`, `unless-stopped`), the decision the supervisor takes
//! when the container ends, and the books kept for it: the run request (so a stopped
//! container can be started again as it was made) and the mark `keel stop`/`kill`/`rm`
//! leave so the supervisor does not bring back a container the user ended.
use crate::sys::hostfs;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::run::RunRequest;
use super::{io_err, read_json, write_json, ContainerError, Containers};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestartError {
    #[error("invalid --restart {0:?}: use no, on-failure, on-failure:N (N restarts at most), always or unless-stopped")]
    Bad(String),
    #[error("--restart {0} cannot be combined with --rm: a removed container cannot be restarted; drop one of them")]
    WithRm(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RestartPolicy {
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max` times (unbounded when `None`).
    OnFailure {
        max: Option<u32>,
    },
    Always,
    UnlessStopped,
}

impl RestartPolicy {
    pub fn parse(s: &str) -> Result<RestartPolicy, RestartError> {
        let bad = || RestartError::Bad(s.to_string());
        Ok(match s.split_once(':') {
            None => match s {
                "" | "no" => RestartPolicy::No,
                "on-failure" => RestartPolicy::OnFailure { max: None },
                "always" => RestartPolicy::Always,
                "unless-stopped" => RestartPolicy::UnlessStopped,
                _ => return Err(bad()),
            },
            Some(("on-failure", n)) => RestartPolicy::OnFailure {
                max: Some(n.parse().map_err(|_| bad())?),
            },
            Some(_) => return Err(bad()),
        })
    }

    /// Whether to start the container again after it exited with `code`, having been
    /// restarted `restarts` times; never after the user stopped it.
    pub fn restarts(&self, code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { max } => code != 0 && max.is_none_or(|m| restarts < m),
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }
}

/// docker's back-off between restarts: 100 ms, doubling, at most a minute.
pub fn backoff(restarts: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << restarts.min(10))).min(Duration::from_secs(60))
}

/// What a container was made with, kept for `keel start`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kept {
    pub request: RunRequest,
    /// The `PORT` the container was given (`-p 0`, `-P` with no EXPOSE).
    pub private_port: Option<u16>,
    /// Its anonymous volumes' names.
    pub anonymous: Vec<String>,
}

const KEPT: &str = "request.json";
const STOP_MARK: &str = "stopped-by-user";

impl Containers {
    pub fn keep_request(&self, id: &str, kept: &Kept) -> Result<(), ContainerError> {
        write_json(&self.dir_of(id).join(KEPT), kept)
    }
    /// The request `id` was made with; `None` for a container made before keel kept it.
    pub fn kept_request(&self, id: &str) -> Result<Option<Kept>, ContainerError> {
        let p = self.dir_of(id).join(KEPT);
        if !p.exists() {
            return Ok(None);
        }
        read_json(&p).map(Some)
    }
    /// Marks `id` as ended by the user (`keel stop`, `kill`, `rm -f`): no restart.
    pub fn mark_stopped_by_user(&self, id: &str) -> Result<(), ContainerError> {
        let p = self.dir_of(id).join(STOP_MARK);
        hostfs::write(&p, b"").map_err(io_err("writing", &p))
    }
    /// Whether the user ended `id` (a removed container counts: nothing to restart).
    pub fn stopped_by_user(&self, id: &str) -> bool {
        let dir = self.dir_of(id);
        !dir.is_dir() || dir.join(STOP_MARK).exists()
    }
    /// `keel start`/`restart`: the policy applies again.
    pub fn clear_stopped_by_user(&self, id: &str) -> Result<(), ContainerError> {
        let p = self.dir_of(id).join(STOP_MARK);
        match hostfs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", &p)(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        use RestartPolicy::*;
        for (s, want) in [
            ("no", No),
            ("on-failure", OnFailure { max: None }),
            ("on-failure:3", OnFailure { max: Some(3) }),
            ("always", Always),
            ("unless-stopped", UnlessStopped),
        ] {
            assert_eq!(RestartPolicy::parse(s).unwrap(), want, "{s}");
        }
        for bad in ["sometimes", "on-failure:x", "always:2"] {
            assert!(RestartPolicy::parse(bad).is_err(), "{bad}");
        }
        let two = OnFailure { max: Some(2) };
        for (p, code, n, stopped, want) in [
            (No, 1, 0, false, false),
            (two, 0, 0, false, false),
            (two, 1, 0, false, true),
            (two, 1, 1, false, true),
            (two, 1, 2, false, false),
            (Always, 0, 99, false, true),
            (Always, 0, 0, true, false),
            (OnFailure { max: None }, 3, 1000, false, true),
        ] {
            assert_eq!(
                p.restarts(code, n, stopped),
                want,
                "{p:?} {code} {n} {stopped}"
            );
        }
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }
}
