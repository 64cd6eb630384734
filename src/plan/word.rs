//! Values whose type is known when the Dockerfile is planned but whose text may hold
//! variables: `--chmod=$MODE`, `--platform=$BUILDPLATFORM`. A `Word<T>` keeps the text as
//! written and, when it has nothing to expand, the parsed value; the rest is parsed after
//! expansion, when the step runs. Pure: no I/O.
use std::fmt;

use serde::Serialize;

/// A type a word is parsed into. `parse` errors say what was expected.
pub trait FromWord: Sized {
    fn from_word(s: &str) -> Result<Self, String>;
}

/// A value as written, parsed now when it holds no variables or quotes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Word<T> {
    pub written: String,
    #[serde(skip)]
    pub known: Option<T>,
}

/// True when a word must go through the expander before it means anything.
pub fn needs_expansion(s: &str) -> bool {
    s.contains(['$', '"', '\'', '\\', '`'])
}

impl<T: FromWord + Clone> Word<T> {
    /// Parses `written` now unless it needs expansion first.
    pub fn new(written: &str) -> Result<Word<T>, String> {
        let known = if needs_expansion(written) {
            None
        } else {
            Some(T::from_word(written)?)
        };
        Ok(Word {
            written: written.to_string(),
            known,
        })
    }

    /// The value, expanding the text first when it was not known at plan time.
    pub fn resolve(&self, expand: &dyn Fn(&str) -> Result<String, String>) -> Result<T, String> {
        match &self.known {
            Some(v) => Ok(v.clone()),
            None => T::from_word(&expand(&self.written)?),
        }
    }
}

impl<T> fmt::Display for Word<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// `--chmod`: an octal mode up to 07777.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Chmod(pub u32);

impl FromWord for Chmod {
    fn from_word(s: &str) -> Result<Chmod, String> {
        u32::from_str_radix(s, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(Chmod)
            .ok_or_else(|| format!("invalid --chmod value {s:?}; use an octal mode such as 0644"))
    }
}

/// `--chown=USER[:GROUP]`: names or ids, resolved in the image when they are names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chown {
    pub user: String,
    pub group: Option<String>,
}

impl Chown {
    /// Both ids when both parts are numbers (a lone uid is also the gid, as docker).
    pub fn numeric(&self) -> Option<(u32, u32)> {
        let uid = self.user.parse().ok()?;
        let gid = match &self.group {
            Some(g) => g.parse().ok()?,
            None => uid,
        };
        Some((uid, gid))
    }
    /// The `user[:group]` text the runtime's account lookup takes.
    pub fn spec(&self) -> String {
        match &self.group {
            Some(g) => format!("{}:{g}", self.user),
            None => self.user.clone(),
        }
    }
}

impl FromWord for Chown {
    fn from_word(s: &str) -> Result<Chown, String> {
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g.to_string())),
            None => (s, None),
        };
        if user.is_empty() || group.as_deref() == Some("") {
            return Err(format!(
                "invalid --chown value {s:?}; use USER, USER:GROUP, UID or UID:GID"
            ));
        }
        Ok(Chown {
            user: user.to_string(),
            group,
        })
    }
}

/// `--platform=os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform keel runs on.
    pub fn host() -> Platform {
        Platform {
            os: "linux".into(),
            arch: crate::image::host_arch().to_string(),
            variant: None,
        }
    }
}

/// `--platform` on the command line (`keel pull`, `keel run`): the same rules as in a
/// Dockerfile.
impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Platform, String> {
        Platform::from_word(s)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromWord for Platform {
    fn from_word(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_ascii_lowercase(),
                arch: arch.to_ascii_lowercase(),
                variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
            }),
            _ => Err(format!(
                "invalid platform {s:?}; use OS/ARCH[/VARIANT], e.g. linux/amd64"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_parse_now_or_after_expansion() {
        let w: Word<Chmod> = Word::new("0755").unwrap();
        assert_eq!(w.known, Some(Chmod(0o755)));
        let w: Word<Chmod> = Word::new("$MODE").unwrap();
        assert_eq!(w.known, None);
        let exp = |s: &str| Ok(s.replace("$MODE", "640"));
        assert_eq!(w.resolve(&exp).unwrap(), Chmod(0o640));
        assert!(Word::<Chmod>::new("rwx").is_err());
        assert!(Word::<Chmod>::new("17777").is_err());
    }

    #[test]
    fn chown_table() {
        let cases = [
            ("1000", Some((1000, 1000)), "1000"),
            ("1:2", Some((1, 2)), "1:2"),
            ("app", None, "app"),
            ("app:staff", None, "app:staff"),
            ("1:staff", None, "1:staff"),
        ];
        for (s, numeric, spec) in cases {
            let c = Chown::from_word(s).unwrap();
            assert_eq!((c.numeric(), c.spec().as_str()), (numeric, spec), "{s}");
        }
        assert!(Chown::from_word(":1").is_err());
        assert!(Chown::from_word("a:").is_err());
    }

    #[test]
    fn platform_table() {
        let p = Platform::from_word("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(
            Platform::from_word("Linux/AMD64").unwrap().to_string(),
            "linux/amd64"
        );
        assert!(Platform::from_word("linux").is_err());
    }
}
