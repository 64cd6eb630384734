//! A reader that watches a tar stream's headers go by and stops hostile extension
//! headers before the tar parser buffers them: a GNU long name or link (`L`/`K`) longer
//! than a path may be, or a PAX header (`x`/`g`) over [`MAX_PAX`], is an error as soon
//! as its header is read — so a gzip bomb disguised as a file name cannot exhaust
//! memory. GNU sparse entries, which keel does not support, are refused here too.
//!
//! It tracks header positions exactly as the tar format lays them out (512-byte header,
//! data padded to 512, a PAX `size` record overriding the next entry's size) and never
//! changes the bytes it passes on.
use std::io::{self, Read};

use tar::{EntryType, Header, PaxExtensions};

use super::MAX_ENTRY_PATH;

/// Largest PAX extended header keel reads (xattrs included).
pub const MAX_PAX: u64 = 1 << 20;

pub struct HeaderGuard<R> {
    inner: R,
    pos: u64,
    next_header: u64,
    hdr: Vec<u8>,
    pax: Option<Vec<u8>>,
    pax_end: u64,
    pax_size: Option<u64>,
    /// Where skipped bytes are read to ([`io::Seek`]), allocated at the first skip.
    skipped: Vec<u8>,
}

impl<R: Read> HeaderGuard<R> {
    pub fn new(inner: R) -> Self {
        HeaderGuard {
            inner,
            pos: 0,
            next_header: 0,
            hdr: Vec::with_capacity(512),
            pax: None,
            pax_end: 0,
            pax_size: None,
            skipped: Vec::new(),
        }
    }

    fn observe(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.pos >= self.next_header {
                let take = ((self.next_header + 512 - self.pos) as usize).min(data.len());
                self.hdr.extend_from_slice(&data[..take]);
                self.pos += take as u64;
                data = &data[take..];
                if self.hdr.len() == 512 {
                    self.header_done()?;
                }
            } else {
                let take = (self.next_header - self.pos).min(data.len() as u64) as usize;
                if let Some(p) = &mut self.pax {
                    let k = self.pax_end.saturating_sub(self.pos).min(take as u64) as usize;
                    p.extend_from_slice(&data[..k]);
                }
                self.pos += take as u64;
                data = &data[take..];
                if self.pos >= self.pax_end {
                    if let Some(p) = self.pax.take() {
                        self.pax_size = pax_size(&p);
                    }
                }
            }
        }
        Ok(())
    }

    fn header_done(&mut self) -> io::Result<()> {
        let raw = std::mem::take(&mut self.hdr);
        let start = self.next_header + 512;
        if raw.iter().all(|b| *b == 0) {
            self.next_header = start;
            return Ok(());
        }
        let h = Header::from_byte_slice(&raw);
        let kind = h.entry_type();
        let mut size = h.entry_size()?;
        if !super::is_header_only(kind) {
            if let Some(s) = self.pax_size.take() {
                size = s;
            }
        }
        let bad = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        match kind {
            EntryType::GNULongName | EntryType::GNULongLink if size > MAX_ENTRY_PATH as u64 + 1 => {
                return bad(format!("GNU long name header of {size} bytes is longer than the {MAX_ENTRY_PATH} bytes a path may have"));
            }
            EntryType::XHeader | EntryType::XGlobalHeader if size > MAX_PAX => {
                return bad(format!(
                    "PAX header of {size} bytes is larger than the {MAX_PAX} keel accepts"
                ));
            }
            EntryType::GNUSparse => {
                return bad(
                    "GNU sparse files are not supported; repack the layer without --sparse".into(),
                )
            }
            _ => {}
        }
        // A size near u64::MAX (base-256 or a PAX `size` record) would wrap the position
        // and put the guard out of step with the tar reader: no real layer is that big.
        let Some(next) = size
            .checked_next_multiple_of(512)
            .and_then(|padded| start.checked_add(padded))
        else {
            return bad(format!("entry size {size} is larger than any layer can be"));
        };
        if kind == EntryType::XHeader {
            self.pax = Some(Vec::new());
            self.pax_end = start + size;
        }
        self.next_header = next;
        Ok(())
    }
}

fn pax_size(data: &[u8]) -> Option<u64> {
    PaxExtensions::new(data)
        .filter_map(Result::ok)
        .filter(|e| e.key() == Ok("size"))
        .last()
        .and_then(|e| e.value().ok()?.parse().ok())
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

/// Forward skips only, which is all the tar reader asks for (`entries_with_seek`) to pass
/// the data of an entry nobody read: the bytes are read and watched like any others, into
/// one buffer kept for it. Without this the tar reader skips through a 32 KiB buffer it
/// zeroes on its stack for every entry, twice when the entry's data was read but not its
/// padding: ~4 ms of CPU of a 10,000-file patch (issue 14, docs/performance.md).
impl<R: Read> io::Seek for HeaderGuard<R> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let mut left = match to {
            io::SeekFrom::Current(n) if n >= 0 => n as u64,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a layer stream is read forward only",
                ))
            }
        };
        let mut buf = std::mem::take(&mut self.skipped);
        buf.resize(32 << 10, 0);
        while left > 0 {
            let want = (left as usize).min(buf.len());
            let got = self.read(&mut buf[..want])?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "unexpected EOF during skip",
                ));
            }
            left -= got as u64;
        }
        self.skipped = buf;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: EntryType, size: u64) -> Vec<u8> {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    /// Feeds `bytes` through the guard in `chunk`-sized reads.
    fn feed(bytes: &[u8], chunk: usize) -> io::Result<()> {
        struct Chunky<'a>(&'a [u8], usize);
        impl Read for Chunky<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.1.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        io::copy(&mut HeaderGuard::new(Chunky(bytes, chunk)), &mut io::sink()).map(drop)
    }

    #[test]
    fn extension_headers_are_bounded_at_any_read_size() {
        // A PAX header whose size record makes the next file span 1000 bytes, then a
        // huge long name that must be caught: position tracking has to be exact.
        let rec = b"13 size=1000\n";
        let mut ok = header(EntryType::XHeader, rec.len() as u64);
        ok.extend_from_slice(rec);
        ok.resize(1024, 0);
        ok.extend(header(EntryType::Regular, 0));
        ok.extend(vec![b'L'; 1024]); // 1000 bytes of data, padded
        let mut bad = ok.clone();
        bad.extend(header(EntryType::GNULongName, 1 << 40));
        ok.extend(header(EntryType::GNULongName, 100));
        ok.extend(vec![b'n'; 512]);
        for chunk in [1, 7, 512, 513, 65536] {
            feed(&ok, chunk).unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
            let err = feed(&bad, chunk).unwrap_err().to_string();
            assert!(
                err.contains("long name header of 1099511627776 bytes"),
                "chunk {chunk}: {err}"
            );
        }
        assert!(feed(&header(EntryType::XHeader, MAX_PAX + 1), 512).is_err());
        assert!(feed(&header(EntryType::GNUSparse, 0), 512).is_err());
    }

    /// The tar reader's seeks over data nobody read still pass every byte by the guard:
    /// a hostile header after skipped entries is caught, every entry's name is seen, and
    /// only forward seeks are taken.
    #[test]
    fn skipped_entries_are_still_watched() {
        let mut b = tar::Builder::new(Vec::new());
        for (name, size) in [("a", 700usize), ("b", 0), ("c", 40_000)] {
            let mut h = Header::new_gnu();
            h.set_size(size as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, &vec![b'x'; size][..]).unwrap();
        }
        let mut tar = b.into_inner().unwrap();
        let names = |bytes: &[u8]| -> io::Result<Vec<String>> {
            let mut a = tar::Archive::new(HeaderGuard::new(io::Cursor::new(bytes.to_vec())));
            let mut out = Vec::new();
            for e in a.entries_with_seek()? {
                out.push(e?.path()?.display().to_string());
            }
            Ok(out)
        };
        assert_eq!(names(&tar).unwrap(), ["a", "b", "c"]);
        let end = tar.len() - 1024; // before the two zero blocks
        tar.truncate(end);
        tar.extend(header(EntryType::GNULongName, 1 << 40));
        let err = names(&tar).unwrap_err().to_string();
        assert!(
            err.contains("long name header of 1099511627776 bytes"),
            "{err}"
        );
        let mut g = HeaderGuard::new(io::Cursor::new(vec![0u8; 2048]));
        assert_eq!(
            io::Seek::seek(&mut g, io::SeekFrom::Current(1000)).unwrap(),
            1000
        );
        assert!(io::Seek::seek(&mut g, io::SeekFrom::Current(-1)).is_err());
        assert!(io::Seek::seek(&mut g, io::SeekFrom::Start(0)).is_err());
        assert!(io::Seek::seek(&mut g, io::SeekFrom::Current(2000)).is_err());
    }
}
