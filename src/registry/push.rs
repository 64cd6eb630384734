//! `keel push`: layers are gzip-compressed on the way (keel stores its own layers
//! uncompressed; the compressed digest is remembered so a second push does not
//! recompress), each blob the registry lacks (HEAD) is mounted from another repository
//! of the same registry known to hold it, or uploaded in one monolithic PUT; then the
//! manifest (rewritten for the compressed layers) is put under the tag. Authentication,
//! TLS and the scheme are the client's (`client.rs`).
use super::client::{scope, unexpected, Client, Connect};
use super::config::RegistriesConfig;
use super::name::{names_registry, Reference, Remote};
use super::RegistryError;
use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::store::{ImageRecord, Store};
use crate::sys::hostfs;

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

/// How layers travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// gzip, as docker and podman push (the default).
    #[default]
    Gzip,
    /// As stored (keel's own layers are uncompressed tars).
    None,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "none" | "uncompressed" => Ok(Compression::None),
            "zstd" => Err("--compression-format zstd: keel cannot read zstd layers yet, so it does not push them; use gzip".into()),
            o => Err(format!("--compression-format {o}: give gzip or none")),
        }
    }
}

/// What `push` did.
#[derive(Debug, Default)]
pub struct Pushed {
    pub uploaded: usize,
    pub present: usize,
    pub mounted: usize,
    /// Layers compressed for this push (a remembered compressed digest skips this when
    /// the registry has the blob).
    pub compressed: usize,
    pub bytes: u64,
    /// The digest of the manifest as pushed (it differs from the stored one when layers
    /// were compressed).
    pub manifest: String,
    /// Its size in bytes as pushed (what an index entry for it gives).
    pub manifest_size: u64,
}

/// One blob to send: where its bytes come from.
pub(super) struct Outgoing {
    digest: Digest,
    size: u64,
    /// A compressed copy in a temp file, or `None` for the stored blob.
    file: Option<tempfile::NamedTempFile>,
    /// The uncompressed layer this is the remembered gzip form of (compressed only if
    /// the registry lacks it).
    gzip_of: Option<Digest>,
}

/// Pushes `image` to `target`.
pub fn push(
    store: &Store,
    image: &ImageRecord,
    target: &Remote,
    registries: &RegistriesConfig,
    skip_tls_verify: bool,
    compression: Compression,
) -> Result<Pushed, RegistryError> {
    let host = Remote::endpoint_of(&target.registry);
    let memo = Memo::new(store);
    let mut sources: Vec<String> = Vec::new();
    for l in image.manifest.layers() {
        let gz = memo.gzip(l.digest()).map(|(d, _)| d);
        let known = memo
            .sources(host, l.digest())
            .into_iter()
            .chain(gz.iter().flat_map(|d| memo.sources(host, d)));
        for repo in known {
            if repo != target.repository && !sources.contains(&repo) {
                sources.push(repo);
            }
        }
    }
    sources.truncate(5);
    let mut scopes = vec![scope(&target.repository, "pull,push")];
    scopes.extend(sources.iter().map(|r| scope(r, "pull")));
    let how = Connect {
        skip_tls_verify,
        insecure: registries.is_insecure(host),
        credentials: None,
    };
    let client = Client::connect(host, &how, scopes)?;
    let repo = client.repo_url(&target.repository);
    let mut out = Pushed::default();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&store.read_blob(image.manifest_digest())?).map_err(|e| {
            RegistryError::BadManifest {
                reference: image.manifest_digest().to_string(),
                why: e.to_string(),
            }
        })?;
    let docker = image
        .manifest_descriptor
        .media_type()
        .to_string()
        .contains("docker");
    for (i, layer) in image.manifest.layers().iter().enumerate() {
        let gzip =
            compression == Compression::Gzip && crate::store::is_uncompressed(layer.media_type());
        let blob = match (gzip, memo.gzip(layer.digest())) {
            (false, _) => Outgoing {
                digest: layer.digest().clone(),
                size: layer.size(),
                file: None,
                gzip_of: None,
            },
            (true, Some((digest, size))) => Outgoing {
                digest,
                size,
                file: None,
                gzip_of: Some(layer.digest().clone()),
            },
            (true, None) => gzip_layer(store, &memo, layer.digest(), &mut out)?,
        };
        let sent = send_blob(store, &memo, &client, &repo, blob, &sources, &mut out)?;
        if gzip {
            let media = if docker {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            };
            let entry = &mut manifest["layers"][i];
            entry["mediaType"] = media.into();
            entry["digest"] = sent.0.to_string().into();
            entry["size"] = sent.1.into();
        }
        memo.add_source(host, &sent.0, &target.repository);
    }
    let config = Outgoing {
        digest: image.id().clone(),
        size: image.manifest.config().size(),
        file: None,
        gzip_of: None,
    };
    send_blob(store, &memo, &client, &repo, config, &[], &mut out)?;
    let bytes = if compression == Compression::None {
        store.read_blob(image.manifest_digest())?
    } else {
        serde_json::to_vec(&manifest).expect("a manifest serialises")
    };
    // A push by digest names the manifest as sent (compression rewrites it).
    let reference = match &target.reference {
        Reference::Digest(_) => crate::digest::of_bytes(&bytes).to_string(),
        r => r.to_string(),
    };
    let url = format!("{repo}/manifests/{reference}");
    let media = image.manifest_descriptor.media_type().to_string();
    let resp = client.send("PUT", &url, &[("Content-Type", &media)], &bytes[..])?;
    if resp.status() != 201 {
        return Err(unexpected("PUT", &url, resp));
    }
    out.manifest = crate::digest::of_bytes(&bytes).to_string();
    out.manifest_size = bytes.len() as u64;
    Ok(out)
}

/// Compresses a stored uncompressed layer into a temp file and remembers the result
/// (gzip with fixed settings is deterministic, so the digest stays the remembered one).
fn gzip_layer(
    store: &Store,
    memo: &Memo,
    digest: &Digest,
    out: &mut Pushed,
) -> Result<Outgoing, RegistryError> {
    let io = |e: std::io::Error| {
        RegistryError::Store(crate::store::StoreError::Io {
            op: "compressing a layer into",
            path: store.tmp_dir(),
            source: e,
        })
    };
    let prefix = format!("{}-gzip-", crate::store::lease::Owner::current().tag());
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .tempfile_in(store.tmp_dir())
        .map_err(io)?;
    let hashing = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, tmp.reopen().map_err(io)?),
        hasher: sha2::Sha256::default(),
        len: 0,
    };
    let mut gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::new(6));
    std::io::copy(&mut store.open_blob(digest)?, &mut gz).map_err(io)?;
    let mut hashing = gz.finish().map_err(io)?;
    use std::io::Write;
    hashing.inner.flush().map_err(io)?;
    let (d, size) = (crate::digest::from_hasher(hashing.hasher), hashing.len);
    drop(hashing.inner);
    memo.set_gzip(digest, &d, size);
    out.compressed += 1;
    Ok(Outgoing {
        digest: d,
        size,
        file: Some(tmp),
        gzip_of: None,
    })
}

impl Outgoing {
    /// A blob sent as the store has it.
    pub(super) fn stored(digest: Digest, size: u64) -> Outgoing {
        Outgoing {
            digest,
            size,
            file: None,
            gzip_of: None,
        }
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    len: u64,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.write(b)?;
        self.hasher.update(&b[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// HEAD, then a cross-repository mount from a repository known to hold the blob, then
/// an upload. Returns the digest and size sent.
pub(super) fn send_blob(
    store: &Store,
    memo: &Memo,
    client: &Client,
    repo: &str,
    mut blob: Outgoing,
    sources: &[String],
    out: &mut Pushed,
) -> Result<(Digest, u64), RegistryError> {
    let present = |d: &Digest| -> Result<bool, RegistryError> {
        Ok(client
            .call("HEAD", &format!("{repo}/blobs/{d}"), &[])?
            .status()
            == 200)
    };
    if present(&blob.digest)? {
        out.present += 1;
        return Ok((blob.digest, blob.size));
    }
    for from in sources {
        let url = format!("{repo}/blobs/uploads/?mount={}&from={from}", blob.digest);
        if client.call("POST", &url, &[])?.status() == 201 {
            out.mounted += 1;
            return Ok((blob.digest, blob.size));
        }
    }
    if let Some(plain) = blob.gzip_of.take() {
        // Remembered, but on neither this repository nor a mountable one: compress now.
        blob = gzip_layer(store, memo, &plain, out)?;
        if present(&blob.digest)? {
            out.present += 1;
            return Ok((blob.digest, blob.size));
        }
    }
    let file = match &blob.file {
        Some(t) => t.reopen().map_err(|e| {
            RegistryError::Store(crate::store::StoreError::Io {
                op: "reopening",
                path: t.path().to_path_buf(),
                source: e,
            })
        })?,
        None => store.open_blob(&blob.digest)?,
    };
    upload(client, repo, &blob.digest, blob.size, file)?;
    out.uploaded += 1;
    out.bytes += blob.size;
    Ok((blob.digest, blob.size))
}

/// One blob: POST an upload session, PUT the bytes with the digest.
fn upload(
    client: &Client,
    repo: &str,
    digest: &Digest,
    size: u64,
    file: std::fs::File,
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

/// What keel remembers between transfers, under `<root>/cache/registry/`: the gzip
/// digest of each uncompressed layer it compressed (`gzip/<hex>`: "digest size"), and
/// the repositories each blob is known to be in (`sources/<hex>`: "host repository"
/// lines), for cross-repository mounts. Only hints: a wrong or missing one costs a
/// recompression or an upload, never correctness (the registry checks digests).
pub struct Memo {
    dir: std::path::PathBuf,
}

impl Memo {
    pub fn new(store: &Store) -> Memo {
        Memo {
            dir: store.root().join("cache/registry"),
        }
    }
    fn gzip(&self, d: &Digest) -> Option<(Digest, u64)> {
        let text = std::fs::read_to_string(self.dir.join("gzip").join(d.digest())).ok()?;
        let (dg, size) = text.trim().split_once(' ')?;
        Some((crate::digest::parse(dg)?, size.parse().ok()?))
    }
    fn set_gzip(&self, d: &Digest, gz: &Digest, size: u64) {
        let dir = self.dir.join("gzip");
        let _ = hostfs::create_dir_all(&dir);
        let tmp = dir.join(format!(".{}.{}", d.digest(), std::process::id()));
        if hostfs::write(&tmp, format!("{gz} {size}\n")).is_ok() {
            let _ = hostfs::rename(&tmp, dir.join(d.digest()));
        }
    }
    /// Repositories on `host` known to hold `d`.
    pub fn sources(&self, host: &str, d: &Digest) -> Vec<String> {
        let text =
            std::fs::read_to_string(self.dir.join("sources").join(d.digest())).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(h, _)| *h == host)
            .map(|(_, r)| r.to_string())
            .collect()
    }
    /// Some repository known to hold `d`: `(host, repository)`.
    pub fn any_source(&self, d: &Digest) -> Option<(String, String)> {
        let text = std::fs::read_to_string(self.dir.join("sources").join(d.digest())).ok()?;
        let line = text.lines().next_back()?;
        let (h, r) = line.split_once(' ')?;
        Some((h.to_string(), r.to_string()))
    }
    /// Notes that `repository` on `host` holds `d`.
    pub fn add_source(&self, host: &str, d: &Digest, repository: &str) {
        if self.sources(host, d).iter().any(|r| r == repository) {
            return;
        }
        let dir = self.dir.join("sources");
        let _ = hostfs::create_dir_all(&dir);
        use std::io::Write;
        if let Ok(mut f) = hostfs::open_with(
            std::fs::OpenOptions::new().create(true).append(true),
            dir.join(d.digest()),
        ) {
            let _ = writeln!(f, "{host} {repository}");
        }
    }
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
