//! `keel push`: each blob the registry lacks (checked with HEAD) is uploaded in one
//! monolithic PUT, then the manifest is put under the tag. Authentication, TLS and the
//! scheme are the client's (`client.rs`): the transfer asks for `pull,push` on the
//! repository.
use super::client::{scope, unexpected, Client, Connect};
use super::config::RegistriesConfig;
use super::name::{names_registry, Reference, Remote};
use super::RegistryError;
use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::store::{ImageRecord, Store};

/// Where an image goes: a qualified reference (`host[:port]/path:tag`).
pub fn target_of(r: &ImageRef) -> Result<Remote, RegistryError> {
    match r.repository.split_once('/') {
        Some((host, path)) if names_registry(host) => Ok(Remote {
            registry: host.to_string(),
            repository: path.to_string(),
            reference: Reference::Tag(r.tag_or_latest().to_string()),
        }),
        _ => Err(RegistryError::NoRegistry(r.to_string())),
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
pub fn push(
    store: &Store,
    image: &ImageRecord,
    target: &Remote,
    registries: &RegistriesConfig,
    skip_tls_verify: bool,
) -> Result<Pushed, RegistryError> {
    let host = Remote::endpoint_of(&target.registry);
    let how = Connect {
        skip_tls_verify,
        insecure: registries.is_insecure(host),
        credentials: None,
    };
    let client = Client::connect(host, &how, vec![scope(&target.repository, "pull,push")])?;
    let repo = client.repo_url(&target.repository);
    let mut out = Pushed::default();
    let mut blobs: Vec<(Digest, u64)> = image
        .manifest
        .layers()
        .iter()
        .map(|l| (l.digest().clone(), l.size()))
        .collect();
    blobs.push((image.id().clone(), image.manifest.config().size()));
    for (digest, size) in blobs {
        let url = format!("{repo}/blobs/{digest}");
        if client.call("HEAD", &url, &[])?.status() == 200 {
            out.present += 1;
            continue;
        }
        upload(store, &client, &repo, &digest, size)?;
        out.uploaded += 1;
    }
    let manifest = store.read_blob(image.manifest_digest())?;
    let url = format!("{repo}/manifests/{}", target.reference);
    let media = image.manifest_descriptor.media_type().to_string();
    let resp = client.send("PUT", &url, &[("Content-Type", &media)], &manifest[..])?;
    if resp.status() != 201 {
        return Err(unexpected("PUT", &url, resp));
    }
    out.manifest = image.manifest_digest().to_string();
    Ok(out)
}

/// One blob: POST an upload session, PUT the bytes with the digest.
fn upload(
    store: &Store,
    client: &Client,
    repo: &str,
    digest: &Digest,
    size: u64,
) -> Result<(), RegistryError> {
    let start = format!("{repo}/blobs/uploads/");
    let resp = client.call("POST", &start, &[])?;
    if resp.status() != 202 {
        return Err(unexpected("POST", &start, resp));
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
    let location = client.absolute(location);
    let put = format!(
        "{location}{}digest={digest}",
        if location.contains('?') { '&' } else { '?' }
    );
    let file = store.open_blob(digest)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let len = size.to_string();
    let resp = client.send(
        "PUT",
        &put,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", &len),
        ],
        ureq::SendBody::from_reader(&mut reader),
    )?;
    if resp.status() != 201 {
        return Err(unexpected("PUT", &put, resp));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_the_name() {
        let t = target_of(&ImageRef::parse("localhost:5000/team/app:v1").unwrap()).unwrap();
        assert_eq!(t.to_string(), "localhost:5000/team/app:v1");
        let t = target_of(&ImageRef::parse("registry.example.com/app").unwrap()).unwrap();
        assert_eq!(t.to_string(), "registry.example.com/app:latest");
        for bad in ["app:1", "team/app"] {
            assert!(matches!(
                target_of(&ImageRef::parse(bad).unwrap()),
                Err(RegistryError::NoRegistry(_))
            ));
        }
    }
}
