//! Pushing images to a registry with the OCI distribution protocol: each blob the
//! registry lacks is uploaded (one monolithic PUT), then the manifest is put under the tag.
//! Registries on localhost (and any given as insecure) are spoken to over plain HTTP,
//! others over HTTPS. Anonymous access only (no login yet).
use std::io::Read;

use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::store::{ImageRecord, Store, StoreError};

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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where an image goes: `registry host[:port]` and the repository path under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub base: String,
    pub repository: String,
    pub tag: String,
}

impl Target {
    /// The registry part of a reference (`host.tld/…`, `host:port/…`, `localhost/…`).
    pub fn of(r: &ImageRef, insecure: bool) -> Result<Target, RegistryError> {
        let (host, path) = r
            .repository
            .split_once('/')
            .ok_or_else(|| RegistryError::NoRegistry(r.to_string()))?;
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(RegistryError::NoRegistry(r.to_string()));
        }
        let local = host == "localhost"
            || host.starts_with("localhost:")
            || host.starts_with("127.")
            || host.starts_with("[::1]");
        let scheme = if insecure || local { "http" } else { "https" };
        Ok(Target {
            base: format!("{scheme}://{host}"),
            repository: path.to_string(),
            tag: r.tag_or_latest().to_string(),
        })
    }
}

fn http_err(method: &'static str, url: &str) -> impl FnOnce(ureq::Error) -> RegistryError {
    let url = url.to_string();
    move |e| match e {
        ureq::Error::StatusCode(status) => RegistryError::Status {
            method,
            url,
            status,
            body: String::new(),
        },
        other => RegistryError::Http {
            method,
            url,
            why: other.to_string(),
        },
    }
}

/// What `push` did.
#[derive(Debug, Default)]
pub struct Pushed {
    pub uploaded: usize,
    pub present: usize,
    pub manifest: String,
}

/// Pushes `image` to `target`.
pub fn push(store: &Store, image: &ImageRecord, target: &Target) -> Result<Pushed, RegistryError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut out = Pushed::default();
    let mut blobs: Vec<(Digest, u64)> = image
        .manifest
        .layers()
        .iter()
        .map(|l| (l.digest().clone(), l.size()))
        .collect();
    blobs.push((image.id().clone(), image.manifest.config().size()));
    let repo = format!("{}/v2/{}", target.base, target.repository);
    for (digest, size) in blobs {
        let url = format!("{repo}/blobs/{digest}");
        let head = agent.head(&url).call().map_err(http_err("HEAD", &url))?;
        if head.status() == 200 {
            out.present += 1;
            continue;
        }
        let start = format!("{repo}/blobs/uploads/");
        let resp = agent
            .post(&start)
            .send_empty()
            .map_err(http_err("POST", &start))?;
        if resp.status() != 202 {
            return Err(RegistryError::Status {
                method: "POST",
                url: start,
                status: resp.status().as_u16(),
                body: body_of(resp),
            });
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Http {
                method: "POST",
                url: start.clone(),
                why: "no Location header in the answer".into(),
            })?;
        let location = if location.starts_with('/') {
            format!("{}{location}", target.base)
        } else {
            location.to_string()
        };
        let put = format!(
            "{location}{}digest={digest}",
            if location.contains('?') { '&' } else { '?' }
        );
        let file = store.open_blob(&digest)?;
        let resp = agent
            .put(&put)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", &size.to_string())
            .send(ureq::SendBody::from_reader(
                &mut std::io::BufReader::with_capacity(1 << 20, file),
            ))
            .map_err(http_err("PUT", &put))?;
        if resp.status() != 201 {
            return Err(RegistryError::Status {
                method: "PUT",
                url: put,
                status: resp.status().as_u16(),
                body: body_of(resp),
            });
        }
        out.uploaded += 1;
    }
    let manifest = store.read_blob(image.manifest_digest())?;
    let url = format!("{repo}/manifests/{}", target.tag);
    let media = image.manifest_descriptor.media_type().to_string();
    let resp = agent
        .put(&url)
        .header("Content-Type", &media)
        .send(&manifest[..])
        .map_err(http_err("PUT", &url))?;
    if resp.status() != 201 {
        return Err(RegistryError::Status {
            method: "PUT",
            url,
            status: resp.status().as_u16(),
            body: body_of(resp),
        });
    }
    out.manifest = image.manifest_digest().to_string();
    Ok(out)
}

fn body_of(resp: ureq::http::Response<ureq::Body>) -> String {
    let mut s = String::new();
    let _ = resp
        .into_body()
        .into_reader()
        .take(2000)
        .read_to_string(&mut s);
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_the_name() {
        let t = Target::of(
            &ImageRef::parse("localhost:5000/team/app:v1").unwrap(),
            false,
        )
        .unwrap();
        assert_eq!(
            t,
            Target {
                base: "http://localhost:5000".into(),
                repository: "team/app".into(),
                tag: "v1".into()
            }
        );
        let t = Target::of(&ImageRef::parse("registry.example.com/app").unwrap(), false).unwrap();
        assert_eq!(
            (t.base.as_str(), t.tag.as_str()),
            ("https://registry.example.com", "latest")
        );
        assert_eq!(
            Target::of(&ImageRef::parse("registry.example.com/app").unwrap(), true)
                .unwrap()
                .base,
            "http://registry.example.com"
        );
        assert!(matches!(
            Target::of(&ImageRef::parse("app:1").unwrap(), false),
            Err(RegistryError::NoRegistry(_))
        ));
        assert!(matches!(
            Target::of(&ImageRef::parse("team/app").unwrap(), false),
            Err(RegistryError::NoRegistry(_))
        ));
    }
}
