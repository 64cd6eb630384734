//! `keel push`: layers are gzip- (or zstd-) compressed on the way (keel stores its own
//! layers uncompressed; the compressed digest per layer and format is remembered so a
//! second push does not recompress), each blob the registry lacks (HEAD) is mounted from another repository
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
use oci_spec::image::Descriptor;

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
    /// zstd (`application/vnd.oci.image.layer.v1.tar+zstd`): smaller and faster to
    /// decompress; pulled by containerd 1.5+, podman, skopeo and keel.
    Zstd,
    /// As stored (keel's own layers are uncompressed tars).
    None,
}

impl Compression {
    /// Its name in the memo and in messages.
    pub(super) fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }

    /// The layer media type of this compression in an OCI or a Docker manifest.
    pub(super) fn layer_media_type(self, docker: bool) -> &'static str {
        match (self, docker) {
            (Compression::Gzip, true) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (Compression::Gzip, false) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (Compression::Zstd, _) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (Compression::None, true) => "application/vnd.docker.image.rootfs.diff.tar",
            (Compression::None, false) => "application/vnd.oci.image.layer.v1.tar",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "none" | "uncompressed" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            o => Err(format!("--compression-format {o}: give gzip, zstd or none")),
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
    /// The manifest as pushed: what an index pushed next lists for this image.
    pub descriptor: Option<Descriptor>,
}

/// One blob to send: where its bytes come from.
pub(super) struct Outgoing {
    digest: Digest,
    size: u64,
    /// A compressed copy in a temp file, or `None` for the stored blob.
    file: Option<tempfile::NamedTempFile>,
    /// The uncompressed layer this is the remembered compressed form of (compressed
    /// only if the registry lacks it).
    compressed_of: Option<(Digest, Compression)>,
}

/// A connection to the repository a push goes to, and what it knows.
struct Session<'a> {
    store: &'a Store,
    memo: Memo,
    client: Client,
    repo: String,
    /// Other repositories of the registry known to hold some of the blobs (mountable).
    sources: Vec<String>,
}

/// Pushes `image` to `target`: one manifest with its config and layers (an index push
/// calls this per platform and lists the returned `Pushed::descriptor`).
pub fn push(
    store: &Store,
    image: &ImageRecord,
    target: &Remote,
    registries: &RegistriesConfig,
    skip_tls_verify: bool,
    compression: Compression,
) -> Result<Pushed, RegistryError> {
    let docker = image
        .manifest_descriptor
        .media_type()
        .to_string()
        .contains("docker");
    if docker && compression == Compression::Zstd {
        return Err(RegistryError::BadManifest {
            reference: image.manifest_digest().to_string(),
            why: "it has a Docker schema 2 manifest, which has no zstd layer type; push it with --compression-format gzip".into(),
        });
    }
    let session = Session::open(store, image, target, registries, skip_tls_verify)?;
    verify_layers(store, &session.memo, image)?;
    let mut out = Pushed::default();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&store.read_blob(image.manifest_digest())?).map_err(|e| {
            RegistryError::BadManifest {
                reference: image.manifest_digest().to_string(),
                why: e.to_string(),
            }
        })?;
    for (i, layer) in image.manifest.layers().iter().enumerate() {
        let format = match compression {
            Compression::None => Compression::None,
            c if crate::store::is_uncompressed(layer.media_type()) => c,
            // Already compressed (a pulled layer): sent as it is.
            _ => Compression::None,
        };
        let (digest, size) = session.send_layer(layer, format, &mut out)?;
        if format != Compression::None {
            let entry = &mut manifest["layers"][i];
            entry["mediaType"] = format.layer_media_type(docker).into();
            entry["digest"] = digest.to_string().into();
            entry["size"] = size.into();
        }
        session.note(&digest, &target.repository);
    }
    let config = Outgoing::stored(image.id().clone(), image.manifest.config().size());
    session.send(config, false, &mut out)?;
    let bytes = if compression == Compression::None {
        store.read_blob(image.manifest_digest())?
    } else {
        serde_json::to_vec(&manifest).expect("a manifest serialises")
    };
    let media = image.manifest_descriptor.media_type().clone();
    // A push by digest names the manifest as sent (compression rewrites it).
    let reference = match &target.reference {
        Reference::Digest(_) => crate::digest::of_bytes(&bytes).to_string(),
        r => r.to_string(),
    };
    session.put_manifest(&reference, media.as_ref(), &bytes)?;
    let digest = crate::digest::of_bytes(&bytes);
    out.manifest = digest.to_string();
    out.descriptor = Some(Descriptor::new(media, bytes.len() as u64, digest));
    Ok(out)
}

impl<'a> Session<'a> {
    /// Connects with push scope on the target and pull scope on up to 5 repositories
    /// known to hold some of the image's blobs (for cross-repository mounts).
    fn open(
        store: &'a Store,
        image: &ImageRecord,
        target: &Remote,
        registries: &RegistriesConfig,
        skip_tls_verify: bool,
    ) -> Result<Session<'a>, RegistryError> {
        let host = Remote::endpoint_of(&target.registry);
        let memo = Memo::new(store);
        let mut sources: Vec<String> = Vec::new();
        for l in image.manifest.layers() {
            let forms = [Compression::Gzip, Compression::Zstd]
                .map(|f| memo.compressed(l.digest(), f).map(|(d, _)| d));
            let known = std::iter::once(l.digest().clone())
                .chain(forms.into_iter().flatten())
                .flat_map(|d| memo.sources(host, &d));
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
        Ok(Session {
            store,
            memo,
            client,
            repo,
            sources,
        })
    }

    /// A layer in `format` (`None`: as stored): the remembered compressed digest when
    /// there is one, else compressed now. Returns the digest and size sent.
    fn send_layer(
        &self,
        layer: &Descriptor,
        format: Compression,
        out: &mut Pushed,
    ) -> Result<(Digest, u64), RegistryError> {
        let blob = layer_blob(self.store, &self.memo, layer, format, out)?;
        self.send(blob, true, out)
    }

    fn send(
        &self,
        blob: Outgoing,
        mount: bool,
        out: &mut Pushed,
    ) -> Result<(Digest, u64), RegistryError> {
        let sources: &[String] = if mount { &self.sources } else { &[] };
        send_blob(
            self.store,
            &self.memo,
            &self.client,
            &self.repo,
            blob,
            sources,
            out,
        )
    }

    fn note(&self, d: &Digest, repository: &str) {
        self.memo.add_source(self.client.host(), d, repository);
    }

    fn put_manifest(
        &self,
        reference: &str,
        media: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let url = format!("{}/manifests/{reference}", self.repo);
        let resp = self
            .client
            .send("PUT", &url, &[("Content-Type", media)], bytes)?;
        if resp.status() != 201 {
            return Err(unexpected("PUT", &url, resp));
        }
        Ok(())
    }
}

/// Checks every layer of `image` against its config's diff_id before anything is sent,
/// so a layer whose diff_id lies is never pushed. A pull checks only a layer's compressed
/// digest (pull.rs), so a stored compressed layer is decompressed and hashed here, once:
/// the verified pair is remembered (`Memo::verified`; a blob's content never changes). A
/// layer keel built is stored uncompressed, its digest is its diff_id: nothing to read.
/// `keel save` calls it too (archive.rs), so the two share the remembered checks.
pub(crate) fn verify_layers(
    store: &Store,
    memo: &Memo,
    image: &ImageRecord,
) -> Result<(), RegistryError> {
    let diff_ids = image.config.rootfs().diff_ids();
    let layers = image.manifest.layers();
    let label = image.manifest_digest().to_string();
    if diff_ids.len() != layers.len() {
        return Err(RegistryError::BadManifest {
            reference: label,
            why: format!(
                "its config lists {} diff_ids for {} layers",
                diff_ids.len(),
                layers.len()
            ),
        });
    }
    for (layer, d) in layers.iter().zip(diff_ids) {
        let want = crate::digest::parse(d).ok_or_else(|| RegistryError::BadManifest {
            reference: label.clone(),
            why: format!("its config has an invalid diff_id {d:?}"),
        })?;
        if memo.verified(layer.digest()).as_ref() == Some(&want) {
            continue;
        }
        store.verify_diff_id(layer, &want)?;
        if !crate::store::is_uncompressed(layer.media_type()) {
            memo.set_verified(layer.digest(), &want);
        }
    }
    Ok(())
}

/// What a stored layer travels as in `format` (`None`: as stored): its remembered
/// compressed form (compressed only if the registry turns out to lack it), or a fresh
/// compression.
pub(super) fn layer_blob(
    store: &Store,
    memo: &Memo,
    layer: &Descriptor,
    format: Compression,
    out: &mut Pushed,
) -> Result<Outgoing, RegistryError> {
    Ok(match (format, memo.compressed(layer.digest(), format)) {
        (Compression::None, _) => Outgoing::stored(layer.digest().clone(), layer.size()),
        (_, Some((digest, size))) => Outgoing {
            digest,
            size,
            file: None,
            compressed_of: Some((layer.digest().clone(), format)),
        },
        (_, None) => compress_layer(store, memo, layer.digest(), format, out)?,
    })
}

/// Compresses a stored uncompressed layer into a temp file and remembers the result
/// (gzip and zstd with fixed settings are deterministic, so the digest stays the
/// remembered one).
pub(super) fn compress_layer(
    store: &Store,
    memo: &Memo,
    digest: &Digest,
    format: Compression,
    out: &mut Pushed,
) -> Result<Outgoing, RegistryError> {
    let io = |e: std::io::Error| {
        RegistryError::Store(crate::store::StoreError::Io {
            op: "compressing a layer into",
            path: store.tmp_dir(),
            source: e,
        })
    };
    let tmp = crate::sys::hostfs::scratch_file_in(&store.tmp_dir(), format.name()).map_err(io)?;
    let hashing = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, tmp.reopen().map_err(io)?),
        hasher: sha2::Sha256::default(),
        len: 0,
    };
    let mut src = store.open_blob(digest)?;
    let mut hashing = match format {
        Compression::Zstd => {
            let mut z = zstd::stream::write::Encoder::new(hashing, ZSTD_LEVEL).map_err(io)?;
            std::io::copy(&mut src, &mut z).map_err(io)?;
            z.finish().map_err(io)?
        }
        _ => {
            let mut gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::new(6));
            std::io::copy(&mut src, &mut gz).map_err(io)?;
            gz.finish().map_err(io)?
        }
    };
    use std::io::Write;
    hashing.inner.flush().map_err(io)?;
    let (d, size) = (crate::digest::from_hasher(hashing.hasher), hashing.len);
    drop(hashing.inner);
    memo.set_compressed(digest, format, &d, size);
    out.compressed += 1;
    Ok(Outgoing {
        digest: d,
        size,
        file: Some(tmp),
        compressed_of: None,
    })
}

/// zstd's default level (as `zstd` and containers/image use).
const ZSTD_LEVEL: i32 = 3;

impl Outgoing {
    /// A blob sent as the store has it.
    pub(super) fn stored(digest: Digest, size: u64) -> Outgoing {
        Outgoing {
            digest,
            size,
            file: None,
            compressed_of: None,
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
    if let Some((plain, format)) = blob.compressed_of.take() {
        // Remembered, but on neither this repository nor a mountable one: compress now.
        blob = compress_layer(store, memo, &plain, format, out)?;
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
    crate::fault::point("push.blob-uploading");
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

/// What keel remembers between transfers, under `<root>/cache/registry/`: the gzip and
/// zstd digests of each uncompressed layer it compressed (`gzip/<hex>`, `zstd/<hex>`:
/// "digest size"), the repositories each blob is known to be in (`sources/<hex>`: "host
/// repository" lines), for cross-repository mounts, and the diff_id each pulled
/// compressed layer was checked against (`verified/<hex>`). The first two are only
/// hints: a wrong or missing one costs a recompression or an upload, never correctness
/// (the registry checks digests); `verified/` is written only after a check passed.
pub struct Memo {
    dir: std::path::PathBuf,
}

impl Memo {
    pub fn new(store: &Store) -> Memo {
        Memo {
            dir: store.root().join("cache/registry"),
        }
    }
    /// The remembered `format` form of uncompressed layer `d`: its digest and size.
    pub(super) fn compressed(&self, d: &Digest, format: Compression) -> Option<(Digest, u64)> {
        let path = self.dir.join(format.name()).join(d.digest());
        let text = std::fs::read_to_string(path).ok()?;
        let (dg, size) = text.trim().split_once(' ')?;
        Some((crate::digest::parse(dg)?, size.parse().ok()?))
    }
    pub(super) fn set_compressed(&self, d: &Digest, format: Compression, gz: &Digest, size: u64) {
        // Through a temp name carrying this keel's owner tag: a killed push's leftover is
        // reclaimed as soon as it is gone (`reclaim`), not a day later.
        let path = self.dir.join(format.name()).join(d.digest());
        let _ = hostfs::write_atomic(&path, format!("{gz} {size}\n").as_bytes());
    }
    /// The diff_id stored compressed layer `d` was checked to decompress to. Unlike the
    /// rest of the memo this is a proof, not a hint: it is written only after
    /// `Store::verify_diff_id` passed, and a blob's content never changes under its name
    /// (fsck checks that).
    pub(super) fn verified(&self, d: &Digest) -> Option<Digest> {
        let text = std::fs::read_to_string(self.dir.join("verified").join(d.digest())).ok()?;
        crate::digest::parse(text.trim())
    }
    pub(super) fn set_verified(&self, d: &Digest, diff_id: &Digest) {
        let path = self.dir.join("verified").join(d.digest());
        let _ = hostfs::write_atomic(&path, format!("{diff_id}\n").as_bytes());
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
