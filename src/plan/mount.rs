//! `RUN --mount`: one variant per mount type with that type's options, typed. Built from
//! the front end's `RunMount`; the text as written is kept so the step can expand variables
//! in every option (BuildKit expands them with the stage's args and env) and re-check it.
//! Pure: no I/O.
use std::fmt;

use serde::Serialize;

pub use crate::dockerfile::instruction::Sharing;
use crate::dockerfile::instruction::{self, MountType, RunMount};

/// What a mount gives the step, options typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountSpec {
    /// Files of the context (or of `from`): read-only by default; with `readwrite` the
    /// step gets a throwaway copy, so its writes never reach the source.
    Bind {
        target: String,
        source: String,
        from: Option<String>,
        readwrite: bool,
    },
    /// A directory kept between builds under the cache, by `id`.
    Cache {
        target: String,
        id: String,
        from: Option<String>,
        source: Option<String>,
        sharing: Sharing,
        mode: u32,
        uid: u32,
        gid: u32,
        readonly: bool,
    },
    /// A fresh tmpfs, at most `size` bytes when given.
    Tmpfs { target: String, size: Option<u64> },
    /// A build secret as a file (`target`) and/or an environment variable (`env`).
    Secret {
        id: String,
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// An SSH agent socket.
    Ssh {
        id: String,
        target: Option<String>,
        required: bool,
    },
}

/// One `--mount` of a RUN step: as written, and as understood before expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    #[serde(skip)]
    pub written: String,
    pub spec: MountSpec,
}

impl Mount {
    pub fn new(m: &RunMount) -> Mount {
        Mount {
            written: m.written.clone(),
            spec: MountSpec::from(m),
        }
    }

    /// The mount with every option's variables expanded, checked again.
    pub fn expand(
        &self,
        expand: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<MountSpec, String> {
        if !self.written.contains('$') {
            return Ok(self.spec.clone());
        }
        instruction::parse_mount_expanded(&self.written, expand)
            .map(|m| MountSpec::from(&m))
            .map_err(|e| format!("--mount={}: {e}", self.written))
    }
}

impl From<&RunMount> for MountSpec {
    fn from(m: &RunMount) -> MountSpec {
        let target = m.target.clone().unwrap_or_default();
        match m.kind {
            MountType::Bind => MountSpec::Bind {
                target,
                source: m.source.clone().unwrap_or_else(|| ".".into()),
                from: m.from.clone(),
                readwrite: !m.readonly,
            },
            MountType::Cache => MountSpec::Cache {
                id: m.id.clone().unwrap_or_else(|| target.clone()),
                target,
                from: m.from.clone(),
                source: m.source.clone(),
                sharing: m.sharing,
                mode: m.mode.unwrap_or(0o755),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
                readonly: m.readonly,
            },
            MountType::Tmpfs => MountSpec::Tmpfs {
                target,
                size: m.size,
            },
            MountType::Secret => MountSpec::Secret {
                id: m.id.clone().unwrap_or_default(),
                target: m.target.clone(),
                env: m.env.clone(),
                required: m.required,
                mode: m.mode.unwrap_or(0o400),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
            },
            MountType::Ssh => MountSpec::Ssh {
                id: m.id.clone().unwrap_or_else(|| "default".into()),
                target: m.target.clone(),
                required: m.required,
            },
        }
    }
}

impl MountSpec {
    /// The stage or image the mount reads from, if any (a stage dependency).
    pub fn source_stage(&self) -> Option<&str> {
        match self {
            MountSpec::Bind { from, .. } | MountSpec::Cache { from, .. } => from.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for MountSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountSpec::Bind {
                target,
                source,
                from,
                readwrite,
            } => {
                let from = from.as_deref().unwrap_or("context");
                let rw = if *readwrite {
                    "read-write throwaway copy"
                } else {
                    "read-only"
                };
                write!(f, "bind {from}:{source} at {target} ({rw})")
            }
            MountSpec::Cache {
                target,
                id,
                sharing,
                mode,
                uid,
                gid,
                ..
            } => write!(
                f,
                "cache {id:?} at {target} (sharing {}, mode {mode:o}, owner {uid}:{gid})",
                match sharing {
                    Sharing::Shared => "shared",
                    Sharing::Private => "private",
                    Sharing::Locked => "locked",
                }
            ),
            MountSpec::Tmpfs { target, size } => match size {
                Some(s) => write!(f, "tmpfs at {target} (at most {s} bytes)"),
                None => write!(f, "tmpfs at {target}"),
            },
            MountSpec::Secret {
                id, target, env, ..
            } => {
                write!(f, "secret {id:?}")?;
                if let Some(t) = target {
                    write!(f, " at {t}")?;
                }
                if let Some(e) = env {
                    write!(f, " as ${e}")?;
                }
                Ok(())
            }
            MountSpec::Ssh { id, target, .. } => {
                write!(f, "ssh agent {id:?}")?;
                if let Some(t) = target {
                    write!(f, " at {t}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(s: &str) -> Mount {
        Mount::new(&instruction::parse_mount(s).unwrap())
    }

    #[test]
    fn mount_specs_are_typed_per_kind() {
        let cases = [
            (
                "type=bind,source=.,target=/src,rw=false",
                "bind context:. at /src (read-only)",
            ),
            (
                "target=/src,rw",
                "bind context:. at /src (read-write throwaway copy)",
            ),
            (
                "type=cache,target=/c,sharing=locked,mode=0700,uid=1,gid=2",
                "cache \"/c\" at /c (sharing locked, mode 700, owner 1:2)",
            ),
            (
                "type=tmpfs,target=/t,size=1m",
                "tmpfs at /t (at most 1048576 bytes)",
            ),
            ("type=secret,id=tok", "secret \"tok\" at /run/secrets/tok"),
            ("type=ssh", "ssh agent \"default\""),
        ];
        for (written, shown) in cases {
            assert_eq!(mount(written).spec.to_string(), shown, "{written}");
        }
    }

    #[test]
    fn options_expand_when_the_step_runs() {
        let m = mount("type=cache,target=$T,uid=$U,sharing=$S");
        let vars = |s: &str| {
            Ok(s.replace("$T", "/cachedir")
                .replace("$U", "7")
                .replace("$S", "private"))
        };
        let MountSpec::Cache {
            target,
            uid,
            sharing,
            ..
        } = m.expand(&vars).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (target.as_str(), uid, sharing),
            ("/cachedir", 7, Sharing::Private)
        );
        let bad = |s: &str| {
            Ok(s.replace("$S", "bogus")
                .replace("$T", "/t")
                .replace("$U", "1"))
        };
        let e = m.expand(&bad).unwrap_err();
        assert!(e.contains("unsupported sharing value \"bogus\""), "{e}");
        assert_eq!(
            mount("type=bind,from=a,target=/x").spec.source_stage(),
            Some("a")
        );
    }
}
