//! Container records under `<root>/containers/<id>/`: what a container is (config.json),
//! where it is in its life (state.json), its log, and the `image` file that keeps its
//! image alive through `rmi`/`gc`. Running is the runtime's business; this module only
//! keeps the books, atomically and under a lock so names stay unique.
pub mod cp;
pub mod exec;
pub mod flags;
pub mod launch;
pub mod logs;
pub mod ports;
pub mod proxy;
pub mod query;
pub mod rename;
pub mod restart;
pub mod run;
pub mod stats;
pub mod usage;
pub mod volume;

use crate::sys::hostfs;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("the container name {0:?} is already in use by {1}; remove it (`keel rm -f {0}`) or pick another --name")]
    NameInUse(String, String),
    #[error("invalid container name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    BadName(String),
    #[error("invalid volume name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit (at most 128)")]
    BadVolumeName(String),
    #[error("no such container: {0}; `keel ps -a` lists them")]
    NotFound(String),
    #[error("container {0} was made by an older keel that did not keep its run flags, so it cannot be started again; run a new one with `keel run`")]
    NotKept(String),
    #[error("{0:?} matches several containers; give more of the id")]
    Ambiguous(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl ContainerError {
    /// Whether this is a record (or a file of it) that is no longer there.
    pub fn is_gone(&self) -> bool {
        matches!(self, ContainerError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ContainerError {
    let path = path.to_path_buf();
    move |source| ContainerError::Io { op, path, source }
}

/// A published port: host address and port → container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: String,
}

/// What a container is; written once at creation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: String,
    pub name: String,
    /// The image as the user named it, and the manifest it resolved to.
    pub image: String,
    pub image_digest: Digest,
    pub command: Vec<String>,
    pub created: String,
    pub isolation: String,
    pub storage_driver: String,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub auto_remove: bool,
    /// The OCI runtime binary (`--runtime`) of an `oci` container, for `keel exec`.
    #[serde(default)]
    pub runtime: Option<PathBuf>,
    /// What `keel exec` starts from, as `docker exec` does: the env set at `run` time
    /// (`-e`, `--env-file`, `PORT`; the image's Env is added from the image), and the
    /// `-w`, `-u` and `--hostname` given to `run`.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

/// Where a container is in its life; rewritten atomically on every change.
///
/// A pid alone does not name a process for long: once it ends, the kernel hands the
/// number to someone else. So each pid is kept with its start time (`/proc/PID/stat`
/// field 22), and keel only believes in, or signals, a process whose start time matches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub status: Status,
    /// The container's main process (PID 1 inside), as the host sees it.
    pub pid: Option<i32>,
    /// Start time of `pid` (clock ticks since boot).
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// The supervising keel process (detached containers).
    pub supervisor_pid: Option<i32>,
    /// Start time of `supervisor_pid`.
    #[serde(default)]
    pub supervisor_start: Option<u64>,
    pub exit_code: Option<i32>,
    pub started: Option<String>,
    pub finished: Option<String>,
    /// How often the supervisor restarted the container (`--restart`).
    #[serde(default)]
    pub restart_count: u32,
}

/// `(pid, start)` when the process `pid` is alive and still the one that started at
/// `start`; `None` when either is unknown or the pid now belongs to another process.
fn proven(pid: Option<i32>, start: Option<u64>) -> Option<(i32, u64)> {
    let (pid, start) = (pid?, start?);
    (crate::sys::proc::start_time(pid) == Some(start)).then_some((pid, start))
}

impl ContainerState {
    /// A state with nothing started yet.
    pub fn created() -> ContainerState {
        ContainerState {
            status: Status::Created,
            pid: None,
            pid_start: None,
            supervisor_pid: None,
            supervisor_start: None,
            exit_code: None,
            started: None,
            finished: None,
            restart_count: 0,
        }
    }

    /// The container's main process, if it provably is still the one keel started.
    pub fn live_pid(&self) -> Option<(i32, u64)> {
        proven(self.pid, self.pid_start)
    }

    /// Whether the recorded supervisor provably still runs.
    pub fn supervisor_alive(&self) -> bool {
        proven(self.supervisor_pid, self.supervisor_start).is_some()
    }

    /// Sends `sig` to the main process if it provably is keel's; `Ok(false)` otherwise
    /// (a stale pid is never signalled).
    pub fn signal(&self, sig: i32) -> Result<bool, crate::sys::SysError> {
        match (self.pid, self.pid_start) {
            (Some(pid), Some(start)) => crate::sys::proc::kill_if_started(pid, start, sig),
            _ => Ok(false),
        }
    }
}

/// The container store under `<root>/containers`.
#[derive(Debug, Clone)]
pub struct Containers {
    dir: PathBuf,
}

/// A fresh random container id (64 hex digits, like docker's).
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    let filled = fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !filled {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes[..16].copy_from_slice(&t.to_le_bytes());
        bytes[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    hex::encode(bytes)
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && name.len() <= 128
}

impl Containers {
    pub fn new(root: &Path) -> Containers {
        Containers {
            dir: root.join("containers"),
        }
    }
    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir_of(id).join("container.log")
    }

    /// Creates the record of a new container, refusing a name already taken.
    pub fn create(&self, config: &ContainerConfig) -> Result<(), ContainerError> {
        if !valid_name(&config.name) {
            return Err(ContainerError::BadName(config.name.clone()));
        }
        hostfs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        let _names = self.names_lock()?;
        if let Some(other) = self.list()?.into_iter().find(|c| c.name == config.name) {
            return Err(ContainerError::NameInUse(
                config.name.clone(),
                other.id[..12].to_string(),
            ));
        }
        let dir = self.dir_of(&config.id);
        let staging = self.dir.join(format!(".new-{}", config.id));
        // The spare a removal kept (see `remove`), or a new directory.
        if hostfs::rename(self.dir.join(SPARE), &staging).is_err() {
            hostfs::create_dir_all(&staging).map_err(io_err("creating", &staging))?;
        }
        // 0700: config.json keeps the run's env (`-e` values, for `keel exec`), which may
        // hold secrets; the generated /etc files are bind-mounted, so no container user
        // needs to reach them by path.
        {
            use std::os::unix::fs::PermissionsExt;
            hostfs::set_permissions(&staging, fs::Permissions::from_mode(0o700))
                .map_err(io_err("creating", &staging))?;
        }
        write_json(&staging.join("config.json"), config)?;
        write_json(&staging.join("state.json"), &ContainerState::created())?;
        hostfs::write(staging.join("image"), config.image_digest.to_string())
            .map_err(io_err("writing", &staging))?;
        hostfs::rename(&staging, &dir).map_err(io_err("creating", &dir))?;
        Ok(())
    }

    /// The lock names are given under (`create`, `rename`), so two of them never both
    /// see a name free; held until the file returned is dropped.
    fn names_lock(&self) -> Result<fs::File, ContainerError> {
        let lock_path = self.dir.join(".lock");
        let lock = hostfs::open_with(
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true),
            &lock_path,
        )
        .map_err(io_err("opening", &lock_path))?;
        lock.lock().map_err(io_err("locking", &lock_path))?;
        Ok(lock)
    }

    pub fn list(&self) -> Result<Vec<ContainerConfig>, ContainerError> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Ok(out);
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if let Ok(c) = read_json::<ContainerConfig>(&e.path().join("config.json")) {
                out.push(c);
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    /// Every container with its (refreshed) state, newest first. A record `keel rm`
    /// deletes while it is listed is simply not listed: its directory can vanish between
    /// reading its config and its state (`remove` renames it away first).
    pub fn list_with_state(
        &self,
    ) -> Result<Vec<(ContainerConfig, ContainerState)>, ContainerError> {
        let mut out = Vec::new();
        for c in self.list()? {
            match self.refresh(&c) {
                Ok(st) => out.push((c, st)),
                Err(e) if e.is_gone() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Finds a container by name, full id or unique id prefix.
    pub fn find(&self, key: &str) -> Result<ContainerConfig, ContainerError> {
        let all = self.list()?;
        if let Some(c) = all.iter().find(|c| c.name == key || c.id == key) {
            return Ok(c.clone());
        }
        let hits: Vec<_> = all
            .iter()
            .filter(|c| key.len() >= 3 && c.id.starts_with(key))
            .collect();
        match hits.len() {
            1 => Ok(hits[0].clone()),
            0 => Err(ContainerError::NotFound(key.to_string())),
            _ => Err(ContainerError::Ambiguous(key.to_string())),
        }
    }

    /// The recorded state. An empty `state.json` is one whose rewrite a crash cut short
    /// (see [`Containers::set_state`]): nothing of that boot runs any more, so it reads as
    /// exited with no code.
    pub fn state(&self, id: &str) -> Result<ContainerState, ContainerError> {
        let path = self.dir_of(id).join("state.json");
        match fs::metadata(&path) {
            Ok(m) if m.len() == 0 => Ok(ContainerState {
                status: Status::Exited,
                ..ContainerState::created()
            }),
            _ => read_json(&path),
        }
    }
    /// Rewrites `state.json` by exchanging it with a new file (`hostfs::replace`), not by
    /// a rename over it: on ext4 a rename over a file writes the new file's data at once
    /// (`auto_da_alloc`), and removing it later then frees a block, which on this VM's
    /// disk (mounted with `discard`) waits for the disk (docs/performance.md, Session 11).
    /// A reader still sees the old or the new state; after a crash the file may be empty,
    /// which [`Containers::state`] reads as exited.
    pub fn set_state(&self, id: &str, state: &ContainerState) -> Result<(), ContainerError> {
        let path = self.dir_of(id).join("state.json");
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| ContainerError::Io {
            op: "writing",
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        hostfs::replace(&path, &bytes).map_err(io_err("writing", &path))
    }

    /// The state of `c`, corrected: a record that says running but whose supervisor and
    /// main process are provably gone (the machine rebooted, the supervisor was killed, or
    /// the pids now belong to other processes) is rewritten as exited (137).
    pub fn refresh(&self, c: &ContainerConfig) -> Result<ContainerState, ContainerError> {
        let mut st = self.state(&c.id)?;
        // While the supervisor lives its record is the truth: it writes the exit status
        // as soon as it has reaped the container.
        if st.status == Status::Running && !st.supervisor_alive() && st.live_pid().is_none() {
            st.status = Status::Exited;
            st.exit_code = st.exit_code.or(Some(137));
            st.pid = None;
            st.pid_start = None;
            self.set_state(&c.id, &st)?;
        }
        Ok(st)
    }
    /// Rewrites the config (e.g. with the ports actually bound).
    pub fn set_config(&self, config: &ContainerConfig) -> Result<(), ContainerError> {
        write_json(&self.dir_of(&config.id).join("config.json"), config)
    }

    /// Deletes the record (the caller has stopped the container and removed its rootfs).
    /// A record another keel removed meanwhile (a concurrent `rm`, or a reclaimer of a
    /// killed keel's containers) is not an error: the outcome is the same.
    pub fn remove(&self, id: &str) -> Result<(), ContainerError> {
        self.remove_keeping(id, false)
    }

    /// [`Containers::remove`] for the end of a foreground `run --rm`, the one removal on
    /// the path of a container's start-to-exit time: the emptied directory is kept as the
    /// spare for the next record (`create`) when there is none. Removing a directory
    /// frees its block, and on ext4 mounted with `discard` that waits for the disk
    /// (0.06–4 ms on the project VM); a rename does not. `keel gc` removes the spare.
    pub fn remove_keeping_spare(&self, id: &str) -> Result<(), ContainerError> {
        self.remove_keeping(id, true)
    }

    fn remove_keeping(&self, id: &str, spare: bool) -> Result<(), ContainerError> {
        let dir = self.dir_of(id);
        // Rename first so a half-deleted record is never listed; the rename is also what
        // decides which of two removers deletes it.
        let doomed = self.dir.join(format!(".rm-{id}"));
        match hostfs::rename(&dir, &doomed) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            r => r.map_err(io_err("removing", &dir))?,
        }
        let kept = spare
            && !self.dir.join(SPARE).exists()
            && empty_dir(&doomed).is_ok()
            && hostfs::rename(&doomed, self.dir.join(SPARE)).is_ok();
        if kept {
            return Ok(());
        }
        hostfs::remove_dir_all(&doomed).map_err(io_err("removing", &doomed))
    }
}

/// The empty directory a foreground `run --rm` leaves for the next record (mode 0700, as
/// every record's): `containers/.spare`. Dot names are not records (`list`); `keel gc`
/// removes it while it is empty (`reclaim`).
pub(crate) const SPARE: &str = ".spare";

/// Deletes everything in `dir`, keeping `dir`.
fn empty_dir(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            hostfs::remove_dir_all(e.path())?;
        } else {
            hostfs::remove_file(e.path())?;
        }
    }
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ContainerError> {
    let bytes = fs::read(path).map_err(io_err("reading", path))?;
    serde_json::from_slice(&bytes).map_err(|e| ContainerError::Io {
        op: "parsing",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })
}

/// Replaces record file `path` with `v` through a temp name carrying this keel's owner
/// tag, so what a killed keel left mid-write is reclaimed once it is gone (`reclaim`).
fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), ContainerError> {
    // One write, not one syscall per token.
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| ContainerError::Io {
        op: "writing",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    crate::sys::hostfs::write_atomic(path, &bytes).map_err(io_err("writing", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: &str, name: &str) -> ContainerConfig {
        ContainerConfig {
            id: id.into(),
            name: name.into(),
            image: "bb".into(),
            image_digest: crate::digest::of_bytes(b"m"),
            command: vec!["sh".into()],
            created: "2026-01-01T00:00:00Z".into(),
            isolation: "namespaces".into(),
            storage_driver: "overlay".into(),
            ports: vec![],
            volumes: vec![],
            stop_signal: None,
            auto_remove: false,
            runtime: None,
            env: vec![],
            workdir: None,
            user: None,
            hostname: None,
        }
    }

    #[test]
    fn names_are_unique_and_lookup_takes_names_ids_and_prefixes() {
        let d = tempfile::tempdir().unwrap();
        let c = Containers::new(d.path());
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        c.create(&config(&a, "web")).unwrap();
        assert!(matches!(
            c.create(&config(&b, "web")),
            Err(ContainerError::NameInUse(..))
        ));
        assert!(matches!(
            c.create(&config(&b, "-bad")),
            Err(ContainerError::BadName(_))
        ));
        c.create(&config(&b, "db")).unwrap();
        assert_eq!(c.find("web").unwrap().id, a);
        assert_eq!(c.find(&b[..12]).unwrap().name, "db");
        assert!(matches!(c.find("nope"), Err(ContainerError::NotFound(_))));
        assert_eq!(c.state(&a).unwrap().status, Status::Created);
        // A running record whose pids are not provably keel's reads as exited.
        let mut st = c.state(&a).unwrap();
        st.status = Status::Running;
        st.pid = Some(std::process::id() as i32);
        st.supervisor_pid = Some(std::process::id() as i32);
        c.set_state(&a, &st).unwrap();
        let cfg = c.find("web").unwrap();
        assert_eq!(c.refresh(&cfg).unwrap().status, Status::Exited);
        assert!(!c.state(&a).unwrap().signal(0).unwrap());
        c.remove(&a).unwrap();
        assert_eq!(c.list().unwrap().len(), 1);
    }
}
