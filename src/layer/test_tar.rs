//! Test tars (tests only): entries listed as data, written as a tar, for the tests of
//! the unpacker and of the erofs writer, which compare the two on the same streams.
use std::io;

use tar::EntryType;

/// One entry of a test tar.
pub enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, Vec<u8>),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Dev(&'a str, EntryType, u32, u32),
    /// A PAX xattr record on a file or (with a trailing `/`) a directory.
    Xattr(&'a str, &'a str, &'a [u8]),
    /// A one-byte file whose mtime (seconds, before 1970 when negative) is a PAX record,
    /// as Go's archive/tar and keel's packer write one the header cannot hold.
    PaxMtime(&'a str, i64),
}

pub fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (i, e) in entries.iter().enumerate() {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_000 + i as u64);
        h.set_uid(i as u64 % 3);
        h.set_gid(i as u64 % 5);
        h.set_size(0);
        match e {
            E::Dir(p, mode) => {
                h.set_entry_type(EntryType::Directory);
                h.set_mode(*mode);
                b.append_data(&mut h, p, io::empty()).unwrap();
            }
            E::File(p, mode, body) => {
                h.set_mode(*mode);
                h.set_size(body.len() as u64);
                b.append_data(&mut h, p, body.as_slice()).unwrap();
            }
            E::Sym(p, t) | E::Hard(p, t) => {
                let hard = matches!(e, E::Hard(..));
                h.set_entry_type(if hard {
                    EntryType::Link
                } else {
                    EntryType::Symlink
                });
                h.set_mode(0o777);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::Dev(p, kind, major, minor) => {
                h.set_entry_type(*kind);
                h.set_mode(0o640);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                b.append_data(&mut h, p, io::empty()).unwrap();
            }
            E::Xattr(p, key, value) => {
                let key = format!("SCHILY.xattr.{key}");
                b.append_pax_extensions([(key.as_str(), *value)]).unwrap();
                if p.ends_with('/') {
                    h.set_entry_type(EntryType::Directory);
                    h.set_mode(0o751);
                    b.append_data(&mut h, p, io::empty()).unwrap();
                } else {
                    h.set_mode(0o644);
                    h.set_size(1);
                    b.append_data(&mut h, p, &b"x"[..]).unwrap();
                }
            }
            E::PaxMtime(p, secs) => {
                let secs = secs.to_string();
                b.append_pax_extensions([("mtime", secs.as_bytes())])
                    .unwrap();
                h.set_mtime(0);
                h.set_mode(0o644);
                h.set_size(1);
                b.append_data(&mut h, p, &b"x"[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}
