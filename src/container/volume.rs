//! Named and anonymous volumes under `<root>/volumes/<name>/_data`, shared between
//! containers; `keel volume ls|rm|prune`.
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
        if !super::valid_name(name) {
            return Err(ContainerError::BadName(name.to_string()));
        }
        let data = self.dir.join(name).join("_data");
        fs::create_dir_all(&data).map_err(io_err("creating volume", &data))?;
        Ok(data)
    }

    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
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
        if self.in_use(containers).iter().any(|v| v == name) {
            return Err(ContainerError::NameInUse(
                name.to_string(),
                "a container (remove it first)".into(),
            ));
        }
        let dir = self.dir.join(name);
        if !dir.exists() {
            return Err(ContainerError::NotFound(format!("volume {name}")));
        }
        fs::remove_dir_all(&dir).map_err(io_err("removing volume", &dir))
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
