//! Layer tarballs: validating entry paths, sniffing compression, and (in submodules)
//! unpacking stacks of layers safely and packing changesets reproducibly.
//!
//! Nothing here knows about the store; callers hand in readers and target directories.
pub mod adopt;
pub mod derive;
pub mod diff;
pub mod erofs;
pub mod guard;
pub mod index;
pub mod pack;
pub mod tally;
pub mod tee;
#[cfg(test)]
mod test_tar;
pub mod unpack;

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// Longest entry name keel accepts (Linux PATH_MAX); longer names are hostile or broken.
pub const MAX_ENTRY_PATH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer entry {entry:?}: {why}")]
    BadEntry { entry: String, why: String },
    #[error("reading layer: {0}")]
    Io(#[from] io::Error),
}

impl LayerError {
    pub fn bad(entry: impl Into<String>, why: impl Into<String>) -> Self {
        LayerError::BadEntry {
            entry: entry.into(),
            why: why.into(),
        }
    }
}

/// The entries of a layer stream as the unpacker and the erofs writer read them.
pub type LayerEntry<'a> = tar::Entry<'a, guard::HeaderGuard<Box<dyn Read>>>;

/// Hands every entry of a layer stream (plain or compressed, read under the header
/// guard) to `each` with its raw path. A broken header has no name of its own, so its
/// error names the entry before it; an I/O error while handling an entry names that
/// entry.
pub fn each_entry(
    reader: impl Read + 'static,
    mut each: impl FnMut(&[u8], &mut LayerEntry<'_>) -> Result<(), LayerError>,
) -> Result<(), LayerError> {
    let mut archive = tar::Archive::new(guard::HeaderGuard::new(decompressed(reader)?));
    // The last entry's raw path, spelled out only for an error (not once per entry).
    let mut last: Option<Vec<u8>> = None;
    // Entries' unread data is passed by the guard's forward seek (no zeroed buffer each).
    for entry in archive.entries_with_seek()? {
        let mut entry = entry.map_err(|e| {
            let shown = match &last {
                None => String::from("<first header>"),
                Some(raw) => format!("<header after {}>", String::from_utf8_lossy(raw)),
            };
            LayerError::bad(shown, format!("malformed tar stream: {e}"))
        })?;
        let raw = last.insert(entry.path_bytes().into_owned());
        each(raw, &mut entry).map_err(|e| match e {
            LayerError::Io(io) => LayerError::bad(String::from_utf8_lossy(raw), io.to_string()),
            other => other,
        })?;
    }
    Ok(())
}

/// Whether a tar entry of `kind` only carries headers for the entry after it (PAX
/// records, GNU long names and link targets) rather than being a file of the layer.
pub fn is_header_only(kind: tar::EntryType) -> bool {
    use tar::EntryType;
    matches!(
        kind,
        EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink
    )
}

/// Turns a tar entry name into a clean relative path: strips `./` prefixes, refuses
/// absolute paths, `..` components and over-long names. The empty result means the root.
pub fn clean_entry_path(raw: &[u8]) -> Result<PathBuf, LayerError> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    if raw.len() > MAX_ENTRY_PATH {
        return Err(LayerError::bad(
            format!("{}…", String::from_utf8_lossy(&raw[..64])),
            format!(
                "name is {} bytes long, more than the {MAX_ENTRY_PATH} a path may have",
                raw.len()
            ),
        ));
    }
    if raw.contains(&0) {
        return Err(LayerError::bad(shown(), "name contains a NUL byte"));
    }
    use std::os::unix::ffi::OsStrExt;
    let p = Path::new(std::ffi::OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir => {
                return Err(LayerError::bad(
                    shown(),
                    "absolute paths are not allowed in a layer",
                ))
            }
            Component::ParentDir => {
                return Err(LayerError::bad(
                    shown(),
                    "'..' would climb out of the layer root",
                ))
            }
            Component::Prefix(_) => {
                return Err(LayerError::bad(shown(), "unsupported path prefix"))
            }
        }
    }
    Ok(out)
}

/// Compression of a layer blob, recognised by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn sniff(head: &[u8]) -> Compression {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// The OCI layer media type for a layer with this compression.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Reads until `buf` is full or the reader ends: the count read (short only at the end).
pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Wraps a (possibly gzip-compressed) tar stream so callers always read plain tar.
pub fn decompressed(r: impl Read + 'static) -> Result<Box<dyn Read>, LayerError> {
    let mut br = BufReader::with_capacity(1 << 16, r);
    let head = br.fill_buf()?;
    match Compression::sniff(head) {
        Compression::None => Ok(Box::new(br)),
        Compression::Gzip => Ok(Box::new(flate2::read::MultiGzDecoder::new(br))),
        Compression::Zstd => Ok(Box::new(zstd::stream::read::Decoder::with_buffer(br)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_cleaned_or_refused() {
        let ok: &[(&str, &str)] = &[
            ("./etc/passwd", "etc/passwd"),
            ("bin/", "bin"),
            ("./", ""),
            ("a/./b", "a/b"),
        ];
        for (raw, want) in ok {
            assert_eq!(
                clean_entry_path(raw.as_bytes()).unwrap(),
                Path::new(want),
                "{raw}"
            );
        }
        for raw in ["/etc/passwd", "../x", "a/../../x", "a/.."] {
            assert!(clean_entry_path(raw.as_bytes()).is_err(), "{raw}");
        }
        assert!(clean_entry_path(&vec![b'a'; MAX_ENTRY_PATH + 1]).is_err());
    }

    #[test]
    fn compression_is_sniffed_from_magic_bytes() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::sniff(b"etc/\0\0"), Compression::None);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
    }
}
