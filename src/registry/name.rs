//! Where an image reference points, as docker resolves it (distribution/reference
//! `ParseNormalizedNamed`): a first component with a `.` or `:`, or `localhost`, is a
//! registry; anything else is a name on a search registry (docker.io by default), where
//! a one-component Docker Hub name lives under `library/`. Pure; no I/O.
use std::fmt;

use super::config::RegistriesConfig;
use crate::digest::Digest;
use crate::reference::ImageRef;

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's API endpoint (`docker.io` itself serves no registry API).
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A manifest in a repository: by tag, or pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// A fully resolved remote image: registry, repository on it, tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// `host[:port]` as written in references (`docker.io`, `localhost:5000`).
    pub registry: String,
    pub repository: String,
    pub reference: Reference,
}

impl Remote {
    /// The host keel connects to for `registry` (Docker Hub's API lives elsewhere).
    pub fn endpoint_of(registry: &str) -> &str {
        if registry == DOCKER_HUB || registry == "index.docker.io" {
            DOCKER_HUB_API
        } else {
            registry
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match &self.reference {
            Reference::Tag(t) => write!(f, ":{t}"),
            Reference::Digest(d) => write!(f, "@{d}"),
        }
    }
}

/// Whether the first path component of a repository names a registry.
pub fn names_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// The remote images a reference may mean, in the order to try them: one for a
/// qualified name, one per search registry for a short one. A digest wins over a tag.
pub fn candidates(r: &ImageRef, cfg: &RegistriesConfig) -> Vec<Remote> {
    let reference = match (&r.digest, &r.tag) {
        (Some(d), _) => Reference::Digest(d.clone()),
        (None, t) => Reference::Tag(t.clone().unwrap_or_else(|| "latest".into())),
    };
    let make = |registry: &str, path: &str| {
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        Remote {
            registry: registry.to_string(),
            repository,
            reference: reference.clone(),
        }
    };
    match r.repository.split_once('/') {
        Some((first, rest)) if names_registry(first) => vec![make(first, rest)],
        _ => cfg
            .unqualified_search_registries
            .iter()
            .map(|reg| make(reg, &r.repository))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(s: &str) -> String {
        let cfg = RegistriesConfig::default();
        candidates(&ImageRef::parse(s).unwrap(), &cfg)[0].to_string()
    }

    #[test]
    fn references_resolve_as_docker_resolves_them() {
        let d = "sha256:".to_string() + &"a".repeat(64);
        for (input, want) in [
            ("alpine", "docker.io/library/alpine:latest".to_string()),
            ("alpine:3.20", "docker.io/library/alpine:3.20".into()),
            ("team/app", "docker.io/team/app:latest".into()),
            ("docker.io/alpine", "docker.io/library/alpine:latest".into()),
            (
                "index.docker.io/alpine",
                "docker.io/library/alpine:latest".into(),
            ),
            ("localhost/app", "localhost/app:latest".into()),
            (
                "localhost:5000/team/app:v1",
                "localhost:5000/team/app:v1".into(),
            ),
            ("ghcr.io/o/r:1", "ghcr.io/o/r:1".into()),
            (
                &format!("alpine:3@{d}"),
                format!("docker.io/library/alpine@{d}"),
            ),
            (&format!("reg.io:443/x@{d}"), format!("reg.io:443/x@{d}")),
        ] {
            assert_eq!(first(input), want, "{input}");
        }
    }

    #[test]
    fn short_names_go_through_the_search_list() {
        let cfg = RegistriesConfig::parse(
            "unqualified-search-registries = [\"localhost:5000\", \"docker.io\"]",
            "t",
        )
        .unwrap();
        let all: Vec<String> = candidates(&ImageRef::parse("app:1").unwrap(), &cfg)
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(all, ["localhost:5000/app:1", "docker.io/library/app:1"]);
        assert_eq!(Remote::endpoint_of("docker.io"), "registry-1.docker.io");
        assert_eq!(Remote::endpoint_of("quay.io"), "quay.io");
    }
}
