//! Deploys (what Dokku does, without a daemon): an app's releases, which containers each
//! runs, and the swap from one release to the next.
//!
//! An app's state is `<root>/apps/<APP>/app.json` ([`AppState`]): its releases (each an
//! image `APP:vN` and the containers started for it), the current one, the scale, and
//! the port of its router ([`router`]: the app's one stable address, which relays each
//! new connection to a web container of the current release). A deploy starts the new
//! release's containers beside the old ones, waits until its web process answers
//! ([`health`]), points the router at it, and only then stops the previous release's
//! containers: clients never see a moment without an answering web process. The old
//! images stay tagged, so `keel rollback` starts one of them again the same way.
//!
//! The planning here is pure (scale parsing, container names, which release a rollback
//! brings back); the CLI starts and stops the containers.
pub mod health;
pub mod router;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sys::hostfs;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid app name {0:?}: use lowercase letters, digits and '-' (it names images and containers)")]
    Name(String),
    #[error("invalid --scale {0:?}: expected TYPE=N[,TYPE=N…], e.g. web=2,worker=1")]
    Scale(String),
    #[error("--scale names process type {kind}, which the app does not have (it has: {have})")]
    UnknownType { kind: String, have: String },
    #[error("no app {0}: deploy it first (`keel deploy {0} --path DIR`)")]
    NoApp(String),
    #[error("app {app} has no release to roll back to: {why}")]
    NoRollback { app: String, why: String },
    #[error("release v{version} of {app} did not answer on its web port within {secs}s: {last}; its containers were removed, the previous release keeps running (see `keel logs` of {container})")]
    NotHealthy {
        app: String,
        version: u32,
        secs: u64,
        last: String,
        container: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    State { path: PathBuf, why: String },
}

/// One container of a release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Process {
    /// Its container's name: `APP.vN.TYPE.I`.
    pub name: String,
    pub kind: String,
    /// The host port of a web process (0 for others).
    #[serde(default)]
    pub port: u16,
}

/// One release: an image and the containers started from it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Release {
    pub version: u32,
    /// The image (`APP:vN`; a rollback reuses an earlier release's).
    pub image: String,
    pub created: String,
    /// What made it: `git abc123`, `deploy DIR`, `rollback to v1`.
    pub description: String,
    pub processes: Vec<Process>,
    /// The command each process type's container runs. Empty for a buildpack image,
    /// whose launcher takes the type (`web`); a Dockerfile image's `web` with no
    /// Procfile line runs the image's own CMD/ENTRYPOINT (an empty command).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub commands: BTreeMap<String, Vec<String>>,
}

/// `<root>/apps/<APP>/app.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppState {
    pub name: String,
    /// The app directory of the last deploy (a later `keel deploy APP` builds it again).
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub scale: BTreeMap<String, u32>,
    #[serde(default)]
    pub releases: Vec<Release>,
    /// The version whose containers serve now.
    #[serde(default)]
    pub current: Option<u32>,
    /// The router's port on the host (0 until the first deploy).
    #[serde(default)]
    pub router_port: u16,
    #[serde(default)]
    pub router_pid: Option<i32>,
}

/// How an app directory is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    /// Heroku classic buildpacks (`keel buildpack build`).
    Buildpacks,
    /// keel's Dockerfile front end (`keel build`).
    Dockerfile,
}

/// A directory with a Dockerfile builds from it, unless buildpacks are asked for
/// (`--buildpack` or a `.buildpacks` file): Dokku's rule.
pub fn kind_of(has_dockerfile: bool, has_dot_buildpacks: bool, flag_buildpacks: bool) -> AppKind {
    if has_dockerfile && !has_dot_buildpacks && !flag_buildpacks {
        AppKind::Dockerfile
    } else {
        AppKind::Buildpacks
    }
}

/// The process types of a Dockerfile app and the command each runs: `web` is the
/// image's CMD/ENTRYPOINT (an empty command) unless the Procfile names it; every
/// Procfile line runs through `/bin/sh -c`, so `$PORT` expands in the container.
pub fn dockerfile_commands(
    procfile: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::from([("web".to_string(), Vec::new())]);
    for (kind, cmd) in procfile.into_iter().flatten() {
        out.insert(
            kind.clone(),
            vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
        );
    }
    out
}

/// The command a container of process type `kind` runs, given a release's `commands`:
/// the recorded one, else the type itself (a buildpack image's launcher argument).
pub fn command_for(commands: &BTreeMap<String, Vec<String>>, kind: &str) -> Vec<String> {
    commands
        .get(kind)
        .cloned()
        .unwrap_or_else(|| vec![kind.to_string()])
}

/// App names become image names and container names: lowercase, digits, `-`.
pub fn check_name(name: &str) -> Result<(), DeployError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(DeployError::Name(name.to_string()))
    }
}

/// `web=2,worker=1` → {web: 2, worker: 1}.
pub fn parse_scale(s: &str) -> Result<BTreeMap<String, u32>, DeployError> {
    let bad = || DeployError::Scale(s.to_string());
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(bad)?;
            let k = k.trim();
            if !crate::buildpack::release::valid_process_type(k) {
                return Err(bad());
            }
            Ok((k.to_string(), v.trim().parse::<u32>().map_err(|_| bad())?))
        })
        .collect()
}

/// How many of each process type run: web 1 and the others 0 (Heroku's default), then
/// the app's remembered scale, then `--scale`. Every named type must exist.
pub fn formation(
    types: &[String],
    remembered: &BTreeMap<String, u32>,
    asked: &BTreeMap<String, u32>,
) -> Result<BTreeMap<String, u32>, DeployError> {
    if let Some(k) = asked.keys().find(|k| !types.contains(k)) {
        return Err(DeployError::UnknownType {
            kind: k.clone(),
            have: types.join(", "),
        });
    }
    Ok(types
        .iter()
        .map(|t| {
            let n = asked
                .get(t)
                .or(remembered.get(t))
                .copied()
                .unwrap_or(u32::from(t == "web"));
            (t.clone(), n)
        })
        .collect())
}

/// The containers of release `version`: `APP.vN.TYPE.I`, in type order.
pub fn container_names(
    app: &str,
    version: u32,
    scale: &BTreeMap<String, u32>,
) -> Vec<(String, String)> {
    scale
        .iter()
        .flat_map(|(t, n)| (1..=*n).map(move |i| (t.clone(), format!("{app}.v{version}.{t}.{i}"))))
        .collect()
}

impl AppState {
    pub fn next_version(&self) -> u32 {
        self.releases.iter().map(|r| r.version).max().unwrap_or(0) + 1
    }

    pub fn current_release(&self) -> Option<&Release> {
        let v = self.current?;
        self.releases.iter().find(|r| r.version == v)
    }

    /// The release a rollback brings back: `to`, else the one before the current.
    pub fn rollback_target(&self, to: Option<u32>) -> Result<&Release, DeployError> {
        let none = |why: String| DeployError::NoRollback {
            app: self.name.clone(),
            why,
        };
        let cur = self
            .current
            .ok_or_else(|| none("nothing is deployed".into()))?;
        let want = match to {
            Some(v) => v,
            None => {
                // The image the current release runs, so rolling back twice goes further.
                let cur_image = self.current_release().map(|r| r.image.clone());
                self.releases
                    .iter()
                    .filter(|r| r.version < cur && Some(&r.image) != cur_image.as_ref())
                    .map(|r| r.version)
                    .max()
                    .ok_or_else(|| none(format!("v{cur} is the first release")))?
            }
        };
        if want == cur {
            return Err(none(format!("v{want} is the current release")));
        }
        self.releases
            .iter()
            .find(|r| r.version == want)
            .ok_or_else(|| none(format!("there is no v{want}")))
    }
}

/// `<root>/apps/<APP>`.
pub fn app_dir(root: &Path, app: &str) -> PathBuf {
    root.join("apps").join(app)
}

/// The app's state; `None` when it was never deployed.
pub fn load(root: &Path, app: &str) -> Result<Option<AppState>, DeployError> {
    let path = app_dir(root, app).join("app.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| DeployError::State {
                path,
                why: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DeployError::Io { path, source }),
    }
}

/// Writes the app's state atomically (the router reads it for every connection).
pub fn save(root: &Path, state: &AppState) -> Result<(), DeployError> {
    let dir = app_dir(root, &state.name);
    let io = |source| DeployError::Io {
        path: dir.clone(),
        source,
    };
    hostfs::create_dir_all(&dir).map_err(io)?;
    let bytes = serde_json::to_vec_pretty(state).expect("app state serialises");
    hostfs::write_atomic(&dir.join("app.json"), &bytes).map_err(io)
}

/// Holds `<root>/apps/<APP>/lock` (flock) while the guard lives: a swap's switch of
/// releases and `keel apps up` restarting the current release's containers exclude
/// each other, so neither restarts a container the other just stopped.
pub fn lock(root: &Path, app: &str) -> Result<std::fs::File, DeployError> {
    let dir = app_dir(root, app);
    let path = dir.join("lock");
    let io = |source| DeployError::Io {
        path: path.clone(),
        source,
    };
    hostfs::create_dir_all(&dir).map_err(io)?;
    let f = hostfs::open_with(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true),
        &path,
    )
    .map_err(io)?;
    f.lock().map_err(io)?;
    Ok(f)
}

/// Every deployed app, sorted by name.
pub fn list(root: &Path) -> Result<Vec<AppState>, DeployError> {
    let dir = root.join("apps");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        if let Some(s) = load(root, &n)? {
            out.push(s);
        }
    }
    Ok(out)
}

/// The container names of app `app`'s current release (for `keel ps/logs --app`).
pub fn current_containers(root: &Path, app: &str) -> Result<Vec<String>, DeployError> {
    let state = load(root, app)?.ok_or_else(|| DeployError::NoApp(app.to_string()))?;
    Ok(state
        .current_release()
        .map(|r| r.processes.iter().map(|p| p.name.clone()).collect())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn scale_and_formation() {
        let s = parse_scale("web=2,worker=1").unwrap();
        assert_eq!(s["web"], 2);
        assert_eq!(s["worker"], 1);
        for bad in ["web", "web=x", "w b=1", "web=-1"] {
            assert!(parse_scale(bad).is_err(), "{bad}");
        }
        let t = types(&["web", "worker"]);
        let f = formation(&t, &BTreeMap::new(), &BTreeMap::new()).unwrap();
        assert_eq!((f["web"], f["worker"]), (1, 0));
        let remembered = parse_scale("worker=3").unwrap();
        let f = formation(&t, &remembered, &parse_scale("web=2").unwrap()).unwrap();
        assert_eq!((f["web"], f["worker"]), (2, 3));
        let e = formation(&t, &BTreeMap::new(), &parse_scale("clock=1").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("clock") && e.contains("web, worker"), "{e}");
        assert_eq!(
            container_names("shop", 3, &parse_scale("web=2,worker=1").unwrap()),
            [
                ("web".to_string(), "shop.v3.web.1".to_string()),
                ("web".into(), "shop.v3.web.2".into()),
                ("worker".into(), "shop.v3.worker.1".into())
            ]
        );
        assert!(check_name("shop-2").is_ok());
        for bad in ["", "Shop", "a_b", "-x", "a.b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    fn release(v: u32, image: &str) -> Release {
        Release {
            version: v,
            image: image.into(),
            created: String::new(),
            description: String::new(),
            processes: Vec::new(),
            commands: BTreeMap::new(),
        }
    }

    #[test]
    fn dockerfile_apps() {
        assert_eq!(kind_of(true, false, false), AppKind::Dockerfile);
        for (d, b, f) in [
            (true, true, false),
            (true, false, true),
            (false, false, false),
        ] {
            assert_eq!(kind_of(d, b, f), AppKind::Buildpacks, "{d} {b} {f}");
        }
        let none = dockerfile_commands(None);
        assert_eq!(none.len(), 1);
        assert!(none["web"].is_empty(), "web runs the image's CMD");
        let procfile = BTreeMap::from([
            ("web".to_string(), "httpd -f -p $PORT".to_string()),
            ("worker".to_string(), "./work".to_string()),
        ]);
        let cmds = dockerfile_commands(Some(&procfile));
        assert_eq!(cmds["web"], ["/bin/sh", "-c", "httpd -f -p $PORT"]);
        assert_eq!(cmds["worker"], ["/bin/sh", "-c", "./work"]);
        assert_eq!(command_for(&BTreeMap::new(), "web"), ["web"]);
        assert!(command_for(&none, "web").is_empty());
    }

    #[test]
    fn rollback_targets() {
        let mut s = AppState {
            name: "a".into(),
            releases: vec![release(1, "a:v1"), release(2, "a:v2")],
            current: Some(2),
            ..Default::default()
        };
        assert_eq!(s.next_version(), 3);
        assert_eq!(s.rollback_target(None).unwrap().version, 1);
        // v3 is the rollback to v1: the next rollback goes to v2, not v1 again.
        s.releases.push(release(3, "a:v1"));
        s.current = Some(3);
        assert_eq!(s.rollback_target(None).unwrap().version, 2);
        assert_eq!(s.rollback_target(Some(1)).unwrap().version, 1);
        assert!(s.rollback_target(Some(3)).is_err());
        assert!(s.rollback_target(Some(9)).is_err());
        s.current = Some(1);
        let e = s.rollback_target(None).unwrap_err().to_string();
        assert!(e.contains("v1 is the first release"), "{e}");
    }
}
