//! keel and image registries (the OCI distribution protocol): where a reference points
//! (`name.rs`, `config.rs`: docker's resolution rules, search list, mirrors, insecure
//! entries), how keel reaches and authenticates to a registry (`auth.rs`: credential
//! files, helpers, challenges; `client.rs`: TLS, scheme, Basic and Bearer), and the two
//! transfers: `pull.rs` (every byte through the store's verified writer) and `push.rs`.
//! This module never unpacks layers and never writes the store except through `Store`.
pub mod auth;
pub mod cache;
pub mod client;
pub mod config;
pub mod diffid;
pub mod index_push;
pub mod mounts;
pub mod name;
pub mod pull;
pub mod push;

pub use client::{Client, Connect};
pub use config::RegistriesConfig;
pub use name::{Reference, Remote};
pub use pull::{pull, PullEvent, PullOptions, Pulled};
pub use push::{push, target_of, Compression, Pushed};

use crate::store::StoreError;

/// When a command fetches an image from a registry (`--pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Only when the store has no image of that name (the default, as docker).
    #[default]
    Missing,
    /// Every time, so a moved tag is followed.
    Always,
    /// Never: a missing image is an error (offline builds).
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "missing" | "false" => Ok(PullPolicy::Missing),
            "always" | "true" | "newer" => Ok(PullPolicy::Always),
            "never" => Ok(PullPolicy::Never),
            other => Err(format!(
                "--pull={other}: give missing (the default), always or never"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0} names no registry; push needs a name like localhost:5000/team/app:tag")]
    NoRegistry(String),
    #[error("{method} {url}: {why}")]
    Http {
        method: &'static str,
        url: String,
        why: String,
    },
    #[error("{method} {url}: the registry answered {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("registry {registry} refused the credentials{}: {why}; check them with `keel login {registry}`", user.as_ref().map(|u| format!(" of user {u}")).unwrap_or_default())]
    Unauthorized {
        registry: String,
        user: Option<String>,
        why: String,
    },
    #[error("registry {registry} needs a login ({why}); run `keel login {registry}`")]
    NeedsLogin { registry: String, why: String },
    #[error("{reference}: not found in {tried}")]
    NotFound { reference: String, tried: String },
    #[error("{reference}: no image for platform {wanted} in its index; it has {have}; pick one with --platform")]
    NoPlatform {
        reference: String,
        wanted: String,
        have: String,
    },
    #[error("{reference}: {why}")]
    BadManifest { reference: String, why: String },
    #[error("{what} {digest} from {url}: {why}")]
    Blob {
        what: &'static str,
        digest: String,
        url: String,
        why: String,
    },
    #[error("{file}: {why}")]
    Config { file: String, why: String },
    #[error("credentials: {0}")]
    Credentials(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
