//! The diff_id of a layer computed while its compressed bytes stream in: every chunk the
//! network hands the blob writer is also fed to a decompressor (gzip or zstd, told by
//! the stream's first bytes as `layer::decompressed` tells them) whose output is only
//! hashed. So a pull checks both digests in one pass and never reads a blob back
//! (image-spec config.md "rootfs.diff_ids"). Owns no file and no store state.
use std::io::{self, Write};


use crate::digest::{Digest, HashSink};

/// Bytes needed to tell the compression apart (the zstd magic is 4 bytes).
const MAGIC: usize = 4;

enum State {
    /// Fewer than `MAGIC` bytes seen: the compression is not known yet.
    Sniffing(Vec<u8>),
    Plain(HashSink),
    Gzip(Box<flate2::write::MultiGzDecoder<HashSink>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, HashSink>>),
}

/// Feeds on a compressed (or plain) layer stream; [`DiffIdHasher::finish`] gives the
/// sha256 of its uncompressed content.
pub struct DiffIdHasher {
    state: State,
}

impl Default for DiffIdHasher {
    fn default() -> Self {
        DiffIdHasher {
            state: State::Sniffing(Vec::with_capacity(MAGIC)),
        }
    }
}

impl DiffIdHasher {
    /// The next bytes of the compressed stream. A corrupt stream is an `InvalidData`
    /// error naming the format.
    pub fn update(&mut self, mut data: &[u8]) -> io::Result<()> {
        if let State::Sniffing(head) = &mut self.state {
            let take = (MAGIC - head.len()).min(data.len());
            head.extend_from_slice(&data[..take]);
            data = &data[take..];
            if head.len() < MAGIC {
                return Ok(());
            }
            let head = std::mem::take(head);
            self.start(&head)?;
        }
        self.feed(data)
    }

    /// Picks the decompressor for the stream starting with `head`, and feeds it `head`.
    fn start(&mut self, head: &[u8]) -> io::Result<()> {
        self.state = match crate::layer::Compression::sniff(head) {
            crate::layer::Compression::None => State::Plain(HashSink::default()),
            crate::layer::Compression::Gzip => State::Gzip(Box::new(
                flate2::write::MultiGzDecoder::new(HashSink::default()),
            )),
            crate::layer::Compression::Zstd => State::Zstd(Box::new(
                zstd::stream::write::Decoder::new(HashSink::default())?,
            )),
        };
        self.feed(head)
    }

    fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        let r = match &mut self.state {
            State::Sniffing(_) => unreachable!("sniffed before feeding"),
            State::Plain(h) => h.write_all(data),
            State::Gzip(d) => d.write_all(data),
            State::Zstd(d) => d.write_all(data),
        };
        r.map_err(|e| {
            let format = match self.state {
                State::Gzip(_) => "gzip",
                State::Zstd(_) => "zstd",
                _ => "tar",
            };
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the layer is not valid {format}: {e}"),
            )
        })
    }

    /// The sha256 of everything decompressed so far (the whole stream, at its end).
    pub fn finish(mut self) -> io::Result<Digest> {
        if let State::Sniffing(head) = &mut self.state {
            let head = std::mem::take(head);
            self.start(&head)?;
        }
        let sink = match self.state {
            State::Sniffing(_) => unreachable!("started above"),
            State::Plain(h) => h,
            State::Gzip(d) => d.finish()?,
            State::Zstd(mut d) => {
                d.flush()?;
                d.into_inner()
            }
        };
        Ok(sink.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    /// Every format, fed in chunks of every awkward size, gives the plain digest.
    #[test]
    fn diff_ids_hash_the_uncompressed_stream_whatever_the_chunking() {
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let want = digest::of_bytes(&plain);
        let cases = [
            ("plain", plain.clone()),
            ("gzip", gzip(&plain)),
            ("zstd", zstd::encode_all(&plain[..], 3).unwrap()),
            ("empty", Vec::new()),
        ];
        for (name, stream) in &cases {
            for chunk in [1, 3, 4, 5, 4096, 1 << 20] {
                let mut h = DiffIdHasher::default();
                for c in stream.chunks(chunk) {
                    h.update(c).unwrap();
                }
                let got = h.finish().unwrap();
                let want = if *name == "empty" {
                    digest::of_bytes(b"")
                } else {
                    want.clone()
                };
                assert_eq!(got, want, "{name} in chunks of {chunk}");
            }
        }
    }

    #[test]
    fn corrupt_streams_are_invalid_data() {
        let mut bad = gzip(b"hello world, hello world, hello world");
        let n = bad.len();
        bad[12..n - 8].iter_mut().for_each(|b| *b ^= 0x55);
        let mut h = DiffIdHasher::default();
        let r = h.update(&bad).and_then(|_| h.finish().map(|_| ()));
        let e = r.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }
}
