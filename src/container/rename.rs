//! `keel rename`: a container's name changes under the same lock `create` takes, so
//! two renames (or a rename and a `run --name`) can never leave two containers with one
//! name. The id, and so everything stored under it, stays.
use super::{valid_name, ContainerError, Containers};

impl Containers {
    /// Renames the container `key` (name, id or id prefix) to `new`.
    pub fn rename(&self, key: &str, new: &str) -> Result<(), ContainerError> {
        if !valid_name(new) {
            return Err(ContainerError::BadName(new.to_string()));
        }
        let _names = self.names_lock()?;
        let mut c = self.find(key)?;
        if let Some(other) = self.list()?.into_iter().find(|o| o.name == new) {
            if other.id != c.id {
                return Err(ContainerError::NameInUse(
                    new.to_string(),
                    other.id[..12].to_string(),
                ));
            }
        }
        c.name = new.to_string();
        self.set_config(&c)
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    #[test]
    fn rename_keeps_names_unique() {
        let d = tempfile::tempdir().unwrap();
        let c = Containers::new(d.path());
        let mk = |name: &str| {
            let mut cfg = super::super::query::tests_config();
            cfg.id = new_id();
            cfg.name = name.into();
            c.create(&cfg).unwrap();
            cfg.id
        };
        let a = mk("web");
        mk("db");
        assert!(matches!(
            c.rename("web", "db"),
            Err(ContainerError::NameInUse(..))
        ));
        assert!(matches!(
            c.rename("web", "-x"),
            Err(ContainerError::BadName(_))
        ));
        c.rename("web", "front").unwrap();
        assert_eq!(c.find("front").unwrap().id, a);
        assert!(c.find("web").is_err());
    }
}
