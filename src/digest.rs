//! Content digests: hashing bytes and streams into OCI `sha256:` digests.
//!
//! keel only writes sha256; the type is oci-spec's `Digest` so descriptors carry it as-is.
use std::io::{self, Read};

pub use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

/// The sha256 digest of a byte slice.
pub fn of_bytes(bytes: &[u8]) -> Digest {
    from_hasher(Sha256::new_with_prefix(bytes))
}

/// Reads `r` to the end and returns its digest and length.
pub fn of_reader(mut r: impl Read) -> io::Result<(Digest, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok((from_hasher(h), n)),
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Parses `sha256:<64 lowercase hex>`; anything else is `None`.
pub fn parse(s: &str) -> Option<Digest> {
    let hex = s.strip_prefix("sha256:")?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    s.parse().ok()
}

/// The digest a finished hasher gives.
pub fn from_hasher(h: Sha256) -> Digest {
    let hex = hex::encode(h.finalize());
    format!("sha256:{hex}")
        .parse()
        .expect("a sha256 hex string is a valid digest")
}

/// A writer that only hashes what it is given: a stream or a document serialised
/// straight into its digest, without keeping the bytes.
#[derive(Default)]
pub struct HashSink(Sha256);

impl HashSink {
    /// The digest of everything written.
    pub fn finish(self) -> Digest {
        from_hasher(self.0)
    }
}

impl io::Write for HashSink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The hex part of a digest (what blob file names use).
pub fn hex_of(d: &Digest) -> &str {
    d.digest()
}

/// The 32 bytes of a sha256 digest (None for another algorithm).
pub fn raw_sha256(d: &Digest) -> Option<[u8; 32]> {
    if d.algorithm().as_ref() != "sha256" {
        return None;
    }
    raw_of_hex(hex_of(d))
}

/// The 32 bytes of a digest's text form `sha256:<hex>`, without building a [`Digest`]
/// (10,000s of context files' digests per COPY key).
pub fn raw_sha256_text(s: &str) -> Option<[u8; 32]> {
    raw_of_hex(s.strip_prefix("sha256:")?)
}

fn raw_of_hex(hex: &str) -> Option<[u8; 32]> {
    let mut raw = [0u8; 32];
    hex::decode_to_slice(hex, &mut raw).ok()?;
    Some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_of_a_digest_and_of_its_text_agree() {
        let d = of_bytes(b"x");
        let raw = raw_sha256(&d).unwrap();
        assert_eq!(raw_sha256_text(d.as_ref()), Some(raw));
        assert_eq!(hex::encode(raw), hex_of(&d));
        assert_eq!(raw_sha256_text(hex_of(&d)), None, "no algorithm");
        assert_eq!(raw_sha256_text("sha256:abc"), None, "short");
    }

    #[test]
    fn empty_input_has_the_well_known_digest() {
        assert_eq!(
            of_bytes(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn docker_v22_vectors_hash_to_their_recorded_digests() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/conformance/oci-image-spec-schema/test-vectors/docker-v2.2");
        let index = std::fs::read_to_string(dir.join("index.tsv")).unwrap();
        let mut checked = 0;
        for line in index.lines().skip(1) {
            let cols: Vec<&str> = line.split('\t').collect();
            let (file, want) = (cols[0], cols[2]);
            let bytes = std::fs::read(dir.join(file)).unwrap();
            let want = if want.starts_with("sha256:") {
                want.to_string()
            } else {
                format!("sha256:{want}")
            };
            assert_eq!(of_bytes(&bytes).to_string(), want, "{file}");
            checked += 1;
        }
        assert!(checked >= 4);
    }

    #[test]
    fn parse_rejects_uppercase_and_short_digests() {
        assert!(
            parse("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855")
                .is_none()
        );
        assert!(parse("sha256:abc").is_none());
        assert!(
            parse("md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855").is_none()
        );
        assert!(
            parse("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
                .is_some()
        );
    }
}
