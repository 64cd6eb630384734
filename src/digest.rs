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

/// 64 hex digits (either case) as 32 bytes, through a table: a COPY key decodes one per
/// context file, and the `hex` crate's digit-by-digit match took ~3 ms of a 10,000-file
/// one-file rebuild (`raw_of_hex_is_the_hex_crates_decoding`).
fn raw_of_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut raw = [0u8; 32];
    // Any byte that is not a hex digit maps to 0x10 or more, caught once at the end.
    let mut bad = 0u8;
    for (out, pair) in raw.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = (HEX_VALUE[pair[0] as usize], HEX_VALUE[pair[1] as usize]);
        bad |= hi | lo;
        *out = (hi << 4) | (lo & 0x0f);
    }
    (bad < 0x10).then_some(raw)
}

/// Each byte's value as a hex digit, or 0x10 for a byte that is not one.
static HEX_VALUE: [u8; 256] = {
    let mut table = [0x10u8; 256];
    let mut c = 0;
    while c < 10 {
        table[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        table[b'a' as usize + c] = 10 + c as u8;
        table[b'A' as usize + c] = 10 + c as u8;
        c += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The table decodes what `hex::decode_to_slice` decodes and refuses what it
    /// refuses: every byte value in every position of a digest, both cases, and the
    /// wrong lengths.
    #[test]
    fn raw_of_hex_is_the_hex_crates_decoding() {
        let hex_crate = |s: &[u8]| {
            let mut raw = [0u8; 32];
            hex::decode_to_slice(s, &mut raw).ok().map(|_| raw)
        };
        let base: Vec<u8> = b"0123456789abcdefABCDEF"
            .iter()
            .cycle()
            .take(64)
            .copied()
            .collect();
        for at in [0, 1, 31, 62, 63] {
            for b in 0..=255u8 {
                let mut s = base.clone();
                s[at] = b;
                let want = hex_crate(&s);
                let got = std::str::from_utf8(&s).ok().and_then(raw_of_hex);
                if std::str::from_utf8(&s).is_ok() {
                    assert_eq!(got, want, "byte {b:#x} at {at}");
                } else {
                    assert_eq!(want, None, "byte {b:#x} at {at}");
                }
            }
        }
        for len in [0, 2, 63, 65, 66, 128] {
            let s: String = "a".repeat(len);
            assert_eq!(raw_of_hex(&s), None, "length {len}");
        }
        let text = "sha256:".to_string() + &"0f".repeat(32);
        assert_eq!(raw_sha256_text(&text), Some([0x0f; 32]));
    }

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
