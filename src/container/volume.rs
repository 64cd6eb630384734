//! Named and anonymous volumes under `<root>/volumes/<name>/_data`, shared between
//! containers; `keel volume ls|rm|prune`. A volume name becomes a directory name, so
//! every entry point checks it against docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]*` first: a
//! name such as `../../etc` must never reach a path.
use crate::sys::hostfs;
use std::fs;
use std::path::{Path, PathBuf};

use super::{io_err, ContainerError, Containers};

pub struct Volumes {
    dir: PathBuf,
}

impl Volumes {
    pub fn new(root: &Path) -> Volumes {
        Volumes {
            dir: root.join("volumes"),
        }
    }

    /// The data directory of volume `name`, created on first use.
    pub fn ensure(&self, name: &str) -> Result<PathBuf, ContainerError> {
        let data = self.dir_of(name)?.join("_data");
        if !data.is_dir() {
            hostfs::create_dir_all(&data).map_err(io_err("creating volume", &data))?;
            // docker's 0755, whatever keel's umask: a 0700 volume would lock out every
            // non-root container user.
            use std::os::unix::fs::PermissionsExt;
            hostfs::set_permissions(&data, fs::Permissions::from_mode(0o755))
                .map_err(io_err("creating volume", &data))?;
        }
        Ok(data)
    }

    /// `<root>/volumes/<name>`, for a valid name only.
    fn dir_of(&self, name: &str) -> Result<PathBuf, ContainerError> {
        if !super::valid_name(name) {
            return Err(ContainerError::BadVolumeName(name.to_string()));
        }
        Ok(self.dir.join(name))
    }

    /// Volume names (directories under `volumes/` with valid names; anything else there
    /// was not made by keel and is left alone).
    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| super::valid_name(n))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Names of volumes some container (running or not) still refers to.
    pub fn in_use(&self, containers: &Containers) -> Vec<String> {
        containers
            .list()
            .unwrap_or_default()
            .into_iter()
            .flat_map(|c| c.volumes)
            .collect()
    }

    pub fn remove(&self, name: &str, containers: &Containers) -> Result<(), ContainerError> {
        let dir = self.dir_of(name)?;
        if self.in_use(containers).iter().any(|v| v == name) {
            return Err(ContainerError::NameInUse(
                name.to_string(),
                "a container (remove it first)".into(),
            ));
        }
        if !dir.exists() {
            return Err(ContainerError::NotFound(format!("volume {name}")));
        }
        hostfs::remove_dir_all(&dir).map_err(io_err("removing volume", &dir))
    }

    /// Removes every volume no container refers to; returns their names.
    pub fn prune(&self, containers: &Containers) -> Result<Vec<String>, ContainerError> {
        let used = self.in_use(containers);
        let mut removed = Vec::new();
        for v in self.list() {
            if !used.contains(&v) {
                self.remove(&v, containers)?;
                removed.push(v);
            }
        }
        Ok(removed)
    }
}
