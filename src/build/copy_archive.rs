//! ADD's local archives: deciding whether a source is one (a tar, plain or compressed in
//! any format docker's `archive.DecompressStream` reads: gzip, bzip2, xz, zstd — the
//! Dockerfile reference, ADD, "identity, gzip, bzip2 or xz"), and extracting it into the
//! image as docker's `archive.Untar` does: every entry name is cleaned and joined to the
//! destination, so `/etc/f` lands at `DEST/etc/f`, and `..` stops at the destination as
//! it stops at `/` (BuildKit runs `Untar` chrooted at the destination: moby/go-archive
//! `chrootarchive.Untar` → `goInChroot`). Symlinks are kept as they are and resolve
//! inside the destination, as in that chroot (the unpacker's tree is rooted there). The
//! extraction itself is the layer unpacker's (one way into a
//! tree); this module only hands it a plain tar with clean names.
//!
//! It must not decide where the archive goes (the copy plan does) nor write the layer.
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::layer::{self, LayerError};
use crate::sys::rootfs::{Rootfs, RootfsError};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("ADD {archive}: {source}")]
    Io { archive: PathBuf, source: io::Error },
    #[error("ADD {archive}: names starting with .wh. are whiteouts in an image layer, so {entry:?} would delete its namesake from the image; rename it in the archive")]
    Whiteout { archive: PathBuf, entry: String },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
}

/// How an archive is compressed, told by its first bytes (docker `DetectCompression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Plain,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

fn sniff(head: &[u8]) -> Format {
    const MAGIC: [(&[u8], Format); 4] = [
        (&[0x1f, 0x8b, 0x08], Format::Gzip),
        (b"BZh", Format::Bzip2),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Format::Xz),
        (&[0x28, 0xb5, 0x2f, 0xfd], Format::Zstd),
    ];
    MAGIC
        .iter()
        .find(|(m, _)| head.starts_with(m))
        .map_or(Format::Plain, |(_, f)| *f)
}

/// Whether `path` is a tar archive ADD extracts: its (decompressed) start is a valid
/// tar header. A compressed file that is not a tar (`notes.txt.gz`), or a file named
/// `.tar` that is not one, is copied as it is (BuildKit `isArchivePath`).
pub fn is_archive(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut magic = [0u8; 6];
    let n = crate::layer::read_up_to(&mut f, &mut magic).unwrap_or(0);
    if f.rewind().is_err() {
        return false;
    }
    let mut head = [0u8; 512];
    let read = match sniff(&magic[..n]) {
        // xz has no reader here: the first block is decoded into a writer that stops
        // once it has a header's worth.
        Format::Xz => xz_head(f, &mut head),
        format => decoder(f, format).and_then(|mut r| r.read_exact(&mut head)),
    };
    read.is_ok() && is_tar_header(&head)
}

/// Extracts the archive at `archive` into `dest` inside the image at `rootfs` (`dest`,
/// made inside the tree, is the archive's root, as with docker's chrooted extraction).
/// `tmp` holds the decompressed (xz) or renamed archive on the way, unlinked throughout.
pub fn extract(archive: &Path, tmp: &Path, rootfs: &Path, dest: &str) -> Result<(), ArchiveError> {
    let clean = scan(plain(archive, tmp)?, archive)?;
    let tree = Rootfs::open(rootfs)?;
    let into = tree.subtree(Path::new(dest))?;
    let opts = layer::unpack::UnpackOptions::default();
    let reader = match clean {
        true => plain(archive, tmp)?,
        false => Box::new(renamed(plain(archive, tmp)?, archive, tmp)?),
    };
    layer::unpack::unpack_tree(reader, &into, &opts)?;
    Ok(())
}

/// The archive decompressed, as a stream.
fn plain(archive: &Path, tmp: &Path) -> Result<Box<dyn Read>, ArchiveError> {
    let err = |source| ArchiveError::Io {
        archive: archive.to_path_buf(),
        source,
    };
    let mut f = File::open(archive).map_err(err)?;
    let mut magic = [0u8; 6];
    let n = crate::layer::read_up_to(&mut f, &mut magic).map_err(err)?;
    f.rewind().map_err(err)?;
    match sniff(&magic[..n]) {
        Format::Xz => {
            let mut out = tempfile::tempfile_in(tmp).map_err(err)?;
            lzma_rs::xz_decompress(&mut BufReader::new(f), &mut out)
                .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
            out.rewind().map_err(err)?;
            Ok(Box::new(BufReader::new(out)))
        }
        format => decoder(f, format).map_err(err),
    }
}

fn decoder(f: File, format: Format) -> io::Result<Box<dyn Read>> {
    let f = BufReader::with_capacity(1 << 16, f);
    Ok(match format {
        Format::Plain => Box::new(f),
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Format::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(f)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(f)?),
        Format::Xz => unreachable!("xz is decoded into a file first"),
    })
}

/// Reads the archive's entries once: refuses `.wh.` names (a layer could only carry
/// them as whiteouts, deleting their namesakes from the image); true when every name
/// is clean already.
fn scan(plain: Box<dyn Read>, archive: &Path) -> Result<bool, ArchiveError> {
    let mut tar = tar::Archive::new(layer::guard::HeaderGuard::new(plain));
    let mut clean = true;
    for e in tar.entries().map_err(LayerError::Io)? {
        let e = e.map_err(LayerError::Io)?;
        let raw = e.path_bytes();
        let name = clean_name(&raw);
        let base = name.rsplit('/').next().unwrap_or("");
        if base.starts_with(".wh.") {
            return Err(ArchiveError::Whiteout {
                archive: archive.to_path_buf(),
                entry: String::from_utf8_lossy(&raw).into_owned(),
            });
        }
        clean &= unpacker_agrees(&raw, &name);
        if e.header().entry_type() == tar::EntryType::Link {
            let target = e.link_name_bytes().unwrap_or_default();
            clean &= unpacker_agrees(&target, &clean_name(&target));
        }
    }
    Ok(clean)
}

/// Whether the unpacker takes `raw` as it is and makes `name` of it (the archive then
/// needs no renaming).
fn unpacker_agrees(raw: &[u8], name: &str) -> bool {
    let name = name.trim_start_matches("./");
    layer::clean_entry_path(raw).is_ok_and(|p| p.as_os_str() == name)
}

/// docker `Untar`'s names as it sees them chrooted at the destination:
/// `filepath.Join("/", filepath.Clean(name))`, so a leading `/` is dropped and `..` stops
/// at the destination (`../x` is `x`). The destination itself is `./`.
fn clean_name(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut parts: Vec<&str> = Vec::new();
    for c in text.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    match parts.is_empty() {
        true => "./".into(),
        false => parts.join("/"),
    }
}

/// The archive again as a plain tar in an unlinked file of `tmp`, every name (and hard
/// link target) cleaned; headers, content and xattrs as they were.
fn renamed(plain: Box<dyn Read>, archive: &Path, tmp: &Path) -> Result<File, ArchiveError> {
    let err = |source| ArchiveError::Io {
        archive: archive.to_path_buf(),
        source,
    };
    let out = tempfile::tempfile_in(tmp).map_err(err)?;
    let mut b = tar::Builder::new(io::BufWriter::new(out));
    let mut tar = tar::Archive::new(layer::guard::HeaderGuard::new(plain));
    for e in tar.entries().map_err(LayerError::Io)? {
        let mut e = e.map_err(LayerError::Io)?;
        let name = clean_name(&e.path_bytes());
        let xattrs: Vec<(String, Vec<u8>)> = match e.pax_extensions().map_err(err)? {
            None => Vec::new(),
            Some(exts) => exts
                .flatten()
                .filter(|x| x.key().is_ok_and(|k| k.starts_with("SCHILY.xattr.")))
                .map(|x| {
                    (
                        x.key().unwrap_or_default().to_string(),
                        x.value_bytes().to_vec(),
                    )
                })
                .collect(),
        };
        if !xattrs.is_empty() {
            b.append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(err)?;
        }
        let mut h = e.header().clone();
        match h.entry_type() {
            tar::EntryType::Link => {
                let target = clean_name(&e.link_name_bytes().unwrap_or_default());
                b.append_link(&mut h, &name, &target).map_err(err)?;
            }
            tar::EntryType::Symlink => {
                let target = e.link_name().map_err(err)?.unwrap_or_default().into_owned();
                b.append_link(&mut h, &name, &target).map_err(err)?;
            }
            _ => b.append_data(&mut h, &name, &mut e).map_err(err)?,
        }
    }
    let mut out = b
        .into_inner()
        .map_err(err)?
        .into_inner()
        .map_err(|e| err(e.into_error()))?;
    out.flush().map_err(err)?;
    out.rewind().map_err(err)?;
    Ok(out)
}

/// The first block of an xz stream, decoded into `head` (an error past it stops the
/// decoder, which is what is wanted).
fn xz_head(f: File, head: &mut [u8; 512]) -> io::Result<()> {
    struct Head<'a>(&'a mut [u8; 512], usize);
    impl Write for Head<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.1 == self.0.len() {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let n = buf.len().min(self.0.len() - self.1);
            self.0[self.1..self.1 + n].copy_from_slice(&buf[..n]);
            self.1 += n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut w = Head(head, 0);
    let _ = lzma_rs::xz_decompress(&mut BufReader::new(f), &mut w);
    match w.1 == 512 {
        true => Ok(()),
        false => Err(io::ErrorKind::UnexpectedEof.into()),
    }
}

/// A ustar/GNU magic, or an old-style header whose checksum adds up.
fn is_tar_header(head: &[u8; 512]) -> bool {
    if &head[257..262] == b"ustar" {
        return true;
    }
    let field = String::from_utf8_lossy(&head[148..156]);
    let Ok(want) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    // The checksum counts its own field as spaces.
    let sum: u32 = head
        .iter()
        .enumerate()
        .map(|(i, b)| match (148..156).contains(&i) {
            true => 32,
            false => u32::from(*b),
        })
        .sum();
    head[0] != 0 && sum == want
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_as_docker_untar_joins_them() {
        let cases = [
            ("/etc/f", "etc/f"),
            ("./g", "g"),
            ("a/./b/", "a/b"),
            ("a/../b", "b"),
            ("/", "./"),
            ("./", "./"),
            ("../x", "x"),
            ("a/../../x", "x"),
            ("../../..", "./"),
        ];
        for (raw, want) in cases {
            assert_eq!(clean_name(raw.as_bytes()), want, "{raw}");
        }
    }

    #[test]
    fn formats_are_told_by_their_magic() {
        let cases: [(&[u8], Format); 6] = [
            (&[0x1f, 0x8b, 0x08, 0], Format::Gzip),
            (b"BZh91AY", Format::Bzip2),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Format::Xz),
            (&[0x28, 0xb5, 0x2f, 0xfd], Format::Zstd),
            (b"just text", Format::Plain),
            (b"", Format::Plain),
        ];
        for (head, want) in cases {
            assert_eq!(sniff(head), want, "{head:?}");
        }
    }
}
