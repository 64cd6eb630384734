//! Image references as users type them: `name`, `name:tag`, `host:port/path/name:tag`,
//! `name@sha256:…`. A bare name means `:latest`. Pure; no I/O.
use std::fmt;

use crate::digest::{self, Digest};

/// Longest repository name (docker's `NameTotalLengthMax`).
pub const MAX_REPOSITORY: usize = 255;
/// Longest whole reference: repository, `:` tag (128) and `@sha256:` digest fit easily.
pub const MAX_REFERENCE: usize = 512;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid image reference {0:?}: {1}")]
    Invalid(String, &'static str),
}

/// Each `/`-separated component is lowercase letters, digits and `._-`, starting with a
/// letter or digit; the first of several may instead be a registry host (it has a `.` or
/// a `:` port, or is `localhost`).
fn valid_repository(repository: &str) -> bool {
    repository.split('/').enumerate().all(|(i, component)| {
        let is_host = i == 0
            && repository.contains('/')
            && (component.contains('.') || component.contains(':') || component == "localhost");
        if is_host {
            component
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
        } else {
            !component.is_empty()
                && component
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && component.as_bytes()[0].is_ascii_alphanumeric()
        }
    })
}

/// Up to 128 letters, digits and `._-`, starting with a letter, digit or `_`.
fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Repository, including any registry host and path: `registry:5000/team/app`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        let bad = |why| ReferenceError::Invalid(s.to_string(), why);
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.len() > MAX_REFERENCE {
            return Err(bad("it is longer than 512 bytes"));
        }
        if s.bytes().any(|b| b.is_ascii_control()) {
            return Err(bad("it contains a control character"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    digest::parse(d)
                        .ok_or_else(|| bad("the part after @ must be sha256:<64 hex digits>"))?,
                ),
            ),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repository, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if repository.is_empty() {
            return Err(bad("the repository name is empty"));
        }
        if repository.len() > MAX_REPOSITORY {
            return Err(bad("the repository name is longer than 255 bytes"));
        }
        if !valid_repository(repository) {
            return Err(bad(
                "repository names use lowercase letters, digits and . _ - separated by /",
            ));
        }
        if tag.is_some_and(|t| !valid_tag(t)) {
            return Err(bad(
                "tags are up to 128 letters, digits, . _ - and start with a letter, digit or _",
            ));
        }
        Ok(ImageRef {
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The tag, `latest` when none was given (and no digest pins the image).
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// `repository:tag`, the form stored as `org.opencontainers.image.ref.name`.
    pub fn tagged_name(&self) -> String {
        format!("{}:{}", self.repository, self.tag_or_latest())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn accepts_the_usual_forms() {
        let cases: &[(&str, &str, Option<&str>, bool)] = &[
            ("busybox", "busybox", None, false),
            ("busybox:1.36", "busybox", Some("1.36"), false),
            (
                "localhost:5000/team/app:v2",
                "localhost:5000/team/app",
                Some("v2"),
                false,
            ),
            (
                "registry.example.com:443/app",
                "registry.example.com:443/app",
                None,
                false,
            ),
            (
                "quay.io/a/b/c:x_y-z.1",
                "quay.io/a/b/c",
                Some("x_y-z.1"),
                false,
            ),
        ];
        for (input, repo, tag, _) in cases {
            let r = ImageRef::parse(input).unwrap();
            assert_eq!(r.repository, *repo, "{input}");
            assert_eq!(r.tag.as_deref(), *tag, "{input}");
        }
        let r = ImageRef::parse(&format!("app@{D}")).unwrap();
        assert_eq!(r.digest.unwrap().to_string(), D);
        assert_eq!(ImageRef::parse("app").unwrap().tagged_name(), "app:latest");
    }

    #[test]
    fn rejects_malformed_names_with_a_reason() {
        for bad in [
            "",
            "UPPER",
            "a:",
            "a:-x",
            "a@sha256:zz",
            "/a",
            "a//b",
            "a:b:c",
            "a\nb",
            &"a".repeat(256),
            &format!("a:{}", "t".repeat(129)),
        ] {
            let e = ImageRef::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("invalid image reference"),
                "{bad}: {e}"
            );
        }
    }
}
