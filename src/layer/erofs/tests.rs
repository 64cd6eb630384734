//! The erofs writer against the unpacker: the same tar written as an image and unpacked
//! with `Whiteouts::Overlay` must give the same tree (the image checked by `fsck.erofs`
//! and mounted by the kernel), and a stream the unpacker refuses must be refused on the
//! same entry.
use super::*;
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::Command;

use crate::layer::unpack::unpack;

use crate::layer::test_tar::{tar_of, E};

/// Every entry below `dir` (and `dir` itself as `.`), sorted: path, type and mode,
/// owner, size, mtime (directories' only with `dir_times`: implied ones get the time of
/// the unpack), content or link target or device number, xattrs with values, and for a
/// hardlinked file the first path of its inode.
fn listing(dir: &Path, dir_times: bool) -> Vec<String> {
    let mut inodes: HashMap<u64, String> = HashMap::new();
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
        let ft = m.file_type();
        let what = if ft.is_symlink() {
            format!("-> {}", std::fs::read_link(e.path()).unwrap().display())
        } else if m.is_file() {
            let same = inodes.entry(m.ino()).or_insert_with(|| rel.clone());
            let body = std::fs::read(e.path()).unwrap();
            let digest = <sha2::Sha256 as sha2::Digest>::digest(&body);
            format!("{:x} inode of {same}", digest)
        } else if ft.is_char_device() || ft.is_block_device() {
            format!("dev {:x}", m.rdev())
        } else {
            String::new()
        };
        let mut xattrs: Vec<String> = xattr::list(e.path())
            .map(|l| {
                l.map(|k| {
                    let v = xattr::get(e.path(), &k).ok().flatten().unwrap_or_default();
                    format!("{}={}", k.to_string_lossy(), String::from_utf8_lossy(&v))
                })
                .collect()
            })
            .unwrap_or_default();
        xattrs.sort();
        let whiteout = ft.is_char_device() && m.rdev() == 0;
        let mtime = match (m.is_dir(), whiteout) {
            (true, false) if !dir_times || rel.is_empty() => "-".to_string(),
            (false, true) => "-".to_string(),
            _ => m.mtime().to_string(),
        };
        let size = if m.is_dir() { 0 } else { m.len() };
        out.push(format!(
            "{rel:?} {:o} {}:{} {size} {mtime} {what} {xattrs:?}",
            m.mode(),
            m.uid(),
            m.gid(),
        ));
    }
    out
}

fn overlay_opts() -> UnpackOptions {
    UnpackOptions {
        whiteouts: Whiteouts::Overlay,
        allow_devices: true,
        preserve_owners: true,
        ..UnpackOptions::default()
    }
}

/// Unpacks `tar`: the listing, or the entry the error names.
fn unpacked(tar: &[u8], dir_times: bool) -> Result<Vec<String>, String> {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    match unpack(io::Cursor::new(tar.to_vec()), t.path(), &overlay_opts()) {
        Ok(_) => Ok(listing(t.path(), dir_times)),
        Err(e) => Err(entry_of(e)),
    }
}

fn entry_of(e: LayerError) -> String {
    match e {
        LayerError::BadEntry { entry, .. } => entry,
        other => format!("{other}"),
    }
}

/// Writes `tar` as an image (flat, or chunked with `tar` saved as its blob), checks a
/// flat one with `fsck.erofs` (erofs-utils 1.5 knows no 512-byte blocks), mounts it: the
/// listing, or the entry the error names.
fn imaged(tar: &[u8], dir_times: bool, chunked: bool) -> Result<Vec<String>, String> {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("layer.erofs");
    let blob = t.path().join("blob");
    std::fs::write(&blob, tar).unwrap();
    let mut f = std::fs::File::create(&path).unwrap();
    let opts = image_options(chunked);
    if let Err(e) = write_image(io::Cursor::new(tar.to_vec()), &mut f, &opts) {
        return Err(entry_of(e));
    }
    drop(f);
    if !chunked {
        let fsck = Command::new("fsck.erofs").arg(&path).output().unwrap();
        assert!(
            fsck.status.success(),
            "fsck.erofs refused the image: {}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
    }
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    match chunked {
        true => crate::sys::mount::mount_erofs_with_device(&path, &blob, &mnt).unwrap(),
        false => crate::sys::mount::mount_erofs(&path, &mnt).unwrap(),
    }
    let l = listing(&mnt, dir_times);
    crate::sys::mount::umount_detach(&mnt).unwrap();
    Ok(l)
}

/// Whether the kernel-side checks can run here: root and fsck.erofs (CI has both).
fn can_mount() -> bool {
    let fsck = Command::new("fsck.erofs").arg("--help").output().is_ok();
    let why = "root and fsck.erofs (apt-get install erofs-utils)";
    crate::testing::can_run(crate::sys::proc::is_root() && fsck, why)
}

/// The unpack's tree, and the image's, flat and chunked, are the same.
fn assert_same(tar: &[u8], dir_times: bool, what: &str) {
    let want = unpacked(tar, dir_times);
    for chunked in [false, true] {
        let have = imaged(tar, dir_times, chunked);
        if want != have {
            let (w, h) = (format!("{want:#?}"), format!("{have:#?}"));
            panic!("{what} (chunked {chunked}): the image differs from the unpack\nunpack: {w}\nimage: {h}");
        }
    }
}

/// One table row per entry kind, each alone below a parent the tar makes.
#[test]
fn each_entry_kind_is_the_unpacks() {
    if !can_mount() {
        return;
    }
    let big: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let rows: Vec<(&str, Vec<E>)> = vec![
        (
            "directory",
            vec![E::Dir("d/", 0o750), E::Dir("d/e/", 0o555)],
        ),
        (
            "empty file",
            vec![E::Dir("d/", 0o755), E::File("d/f", 0o600, vec![])],
        ),
        (
            "small file",
            vec![E::Dir("d/", 0o755), E::File("d/f", 0o4755, b"hi".to_vec())],
        ),
        (
            "block-sized file",
            vec![E::Dir("d/", 0o755), E::File("d/f", 0o644, vec![9; 8192])],
        ),
        (
            "large file",
            vec![E::Dir("d/", 0o755), E::File("d/f", 0o640, big.clone())],
        ),
        (
            "symlink",
            vec![E::Dir("d/", 0o755), E::Sym("d/l", "../x/y")],
        ),
        (
            "hardlink",
            vec![
                E::Dir("d/", 0o755),
                E::File("d/f", 0o644, b"a".to_vec()),
                E::Hard("d/g", "d/f"),
            ],
        ),
        (
            "char device",
            vec![E::Dir("d/", 0o755), E::Dev("d/c", EntryType::Char, 1, 3)],
        ),
        (
            "block device",
            vec![
                E::Dir("d/", 0o755),
                E::Dev("d/b", EntryType::Block, 8, 0x1234),
            ],
        ),
        (
            "fifo",
            vec![E::Dir("d/", 0o755), E::Dev("d/p", EntryType::Fifo, 0, 0)],
        ),
        (
            "whiteout",
            vec![E::Dir("d/", 0o755), E::File("d/.wh.gone", 0o644, vec![])],
        ),
        (
            "opaque directory",
            vec![
                E::Dir("d/", 0o755),
                E::File("d/.wh..wh..opq", 0o644, vec![]),
            ],
        ),
        (
            "xattr on a file",
            vec![E::Dir("d/", 0o755), E::Xattr("d/x", "user.k", b"v")],
        ),
        ("xattr on a directory", vec![E::Xattr("d/", "user.k", b"v")]),
        (
            "forged overlay xattr",
            vec![E::Xattr("d/", "trusted.overlay.opaque", b"y")],
        ),
        (
            "root entry",
            vec![E::Dir("./", 0o750), E::File("f", 0o644, b"x".to_vec())],
        ),
    ];
    for (what, entries) in rows {
        assert_same(&tar_of(&entries), true, what);
    }
}

/// A file whose mtime is before 1970 (a PAX `mtime` record, as keel's packer and Go's
/// archive/tar write it): the image keeps it as the unpack does. The erofs writer read
/// only the header's (0), so a RUN step over a chunked COPY layer saw 1970.
#[test]
fn a_pax_mtime_before_1970_is_the_unpacks() {
    if !can_mount() {
        return;
    }
    let tar = tar_of(&[E::Dir("d/", 0o755), E::PaxMtime("d/old", -14_182_940)]);
    let want = unpacked(&tar, false).unwrap();
    assert!(
        want.iter()
            .any(|l| l.contains("d/old") && l.contains(" -14182940 ")),
        "{want:#?}"
    );
    assert_same(&tar, false, "a PAX mtime before 1970");
}

/// A hostile-ish stream: names through symlinked parents (relative, absolute, climbing
/// past the root, dangling), names given again in every combination, hardlinks to a
/// symlink and through a symlinked parent, implied parents, a directory of more dirents
/// than a block holds, and forged overlay metadata.
#[test]
fn a_hostile_stream_gives_the_unpacks_tree() {
    if !can_mount() {
        return;
    }
    let mut e = vec![
        E::Dir("./", 0o755),
        E::Dir("sub/", 0o755),
        E::File("sub/file", 0o644, b"one".to_vec()),
        E::Sym("link", "sub"),
        E::File("link/via", 0o644, b"through a relative link".to_vec()),
        E::Sym("abs", "/sub"),
        E::File("abs/x", 0o600, b"through an absolute link".to_vec()),
        E::Sym("up", "../../.."),
        E::File("up/sub/y", 0o644, b"climbed and clamped".to_vec()),
        E::Sym("dang", "made/here"),
        E::File("dang/z", 0o644, b"a dangling link's target made".to_vec()),
        E::Hard("hl", "sub/file"),
        E::Hard("hl2", "link/file"),
        E::Hard("hsym", "link"),
        E::File("twice", 0o644, b"first".to_vec()),
        E::File("twice", 0o600, b"second wins".to_vec()),
        E::File("dir-over-file", 0o644, b"x".to_vec()),
        E::Dir("dir-over-file/", 0o700),
        E::Dir("file-over-dir/", 0o755),
        E::File("file-over-dir/inner", 0o644, b"gone".to_vec()),
        E::File("file-over-dir", 0o644, b"replaced a tree".to_vec()),
        E::Dir("sym-over-dir/", 0o755),
        E::Sym("sym-over-dir", "sub"),
        E::Dir("sub/", 0o711),
        E::File("implied/a/b.txt", 0o644, b"parents implied".to_vec()),
        E::File(".wh.lower-only", 0o644, vec![]),
        E::File("sub/.wh..wh..opq", 0o644, vec![]),
        E::Xattr("sub/attr", "trusted.overlay.redirect", b"/etc"),
        E::Xattr("sub/attr2", "user.overlay.opaque", b"y"),
        E::Xattr("sub/attr3", "user.note", b"kept"),
    ];
    let names: Vec<String> = (0..400)
        .map(|i| format!("many/name-{i:04}-padded"))
        .collect();
    for n in &names {
        e.push(E::File(n, 0o644, vec![]));
    }
    assert_same(&tar_of(&e), false, "hostile stream");
}

/// Streams the unpacker refuses are refused on the same entry.
#[test]
fn refused_streams_are_refused_on_the_same_entry() {
    let rows: Vec<(&str, Vec<E>)> = vec![
        ("hardlink to an absent file", vec![E::Hard("h", "nope")]),
        (
            "hardlink to a directory",
            vec![E::Dir("d/", 0o755), E::Hard("h", "d")],
        ),
        (
            "hardlink below an absent directory",
            vec![E::Hard("h", "no/where")],
        ),
        (
            "a file below a file",
            vec![E::File("f", 0o644, vec![]), E::File("f/x", 0o644, vec![])],
        ),
        (
            "a symlink loop",
            vec![
                E::Sym("a", "b"),
                E::Sym("b", "a"),
                E::File("a/x", 0o644, vec![]),
            ],
        ),
        ("an empty whiteout", vec![E::File(".wh.", 0o644, vec![])]),
        ("a whiteout of ..", vec![E::File("d/.wh...", 0o644, vec![])]),
        (
            "a hardlink climbing out",
            vec![E::Hard("h", "../etc/passwd")],
        ),
    ];
    for ((what, entries), chunked) in rows.iter().flat_map(|r| [(r, false), (r, true)]) {
        let tar = tar_of(entries);
        let want = unpacked(&tar, true);
        let opts = image_options(chunked);
        let have = write_image(
            io::Cursor::new(tar),
            &mut io::Cursor::new(Vec::new()),
            &opts,
        );
        match (want, have) {
            (Err(w), Err(h)) => assert_eq!(w, entry_of(h), "{what} (chunked {chunked})"),
            (w, h) => panic!("{what}: unpack {w:?}, image {:?}", h.map(|_| ())),
        }
    }
}

/// The bench's 10,000-file layer (`bench/build.sh`: 512 random bytes each in 100
/// directories) as an image is the unpack's tree.
#[test]
fn the_bench_layer_of_10000_files_is_the_unpacks() {
    if !can_mount() {
        return;
    }
    let mut e = vec![E::Dir("app/", 0o755)];
    let dirs: Vec<String> = (0..100).map(|d| format!("app/d{d:03}/")).collect();
    e.extend(dirs.iter().map(|d| E::Dir(d, 0o755)));
    let files: Vec<String> = (0..10_000)
        .map(|i| format!("app/d{:03}/f{i:05}.txt", i % 100))
        .collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for f in &files {
        let body: Vec<u8> = (0..512)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        e.push(E::File(f, 0o644, body));
    }
    assert_same(&tar_of(&e), true, "10,000 files");
}

/// A chunked image holds no file content: it is smaller than the files' bytes, a file
/// of it reads what the blob holds at that file's place (a byte changed in the blob is
/// seen through the mount), and a truncated or compressed stream is refused.
#[test]
fn a_chunked_images_files_are_read_from_the_blob() {
    if !can_mount() {
        return;
    }
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let tar = tar_of(&[
        E::Dir("d/", 0o755),
        E::File("d/big", 0o644, big.clone()),
        E::File("d/small", 0o644, b"small".to_vec()),
    ]);
    let t = tempfile::tempdir().unwrap();
    let (image, blob, mnt) = (t.path().join("i"), t.path().join("b"), t.path().join("m"));
    let opts = image_options(true);
    let mut f = std::fs::File::create(&image).unwrap();
    let stats = write_image(io::Cursor::new(tar.clone()), &mut f, &opts).unwrap();
    drop(f);
    assert!(stats.image_bytes < 8192, "{stats:?}");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), stats.image_bytes);
    let mut changed = tar.clone();
    let at = tar.windows(5).rposition(|w| w == b"small").unwrap();
    changed[at] = b'S';
    std::fs::write(&blob, &changed).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    crate::sys::mount::mount_erofs_with_device(&image, &blob, &mnt).unwrap();
    let small = std::fs::read(mnt.join("d/small"));
    let big_read = std::fs::read(mnt.join("d/big"));
    crate::sys::mount::umount_detach(&mnt).unwrap();
    assert_eq!(small.unwrap(), b"Small");
    assert!(big_read.unwrap() == big);
    let cut = &tar[..at + 2];
    let e = write_image(
        io::Cursor::new(cut.to_vec()),
        &mut io::Cursor::new(Vec::new()),
        &opts,
    );
    assert_eq!(e.map(|_| ()).map_err(entry_of), Err("d/small".to_string()));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    assert!(write_image(io::Cursor::new(gz), &mut io::Cursor::new(Vec::new()), &opts).is_err());
}

/// The image options of these tests: overlay whiteouts, root's files, fixed time and
/// uuid, chunked or flat.
fn image_options(chunked: bool) -> ImageOptions {
    ImageOptions {
        unpack: overlay_opts(),
        owner: (0, 0),
        now: 0,
        uuid: [7; 16],
        chunked,
    }
}

/// A layer tar with every kind of entry an index meets: a GNU long name, PAX records, a
/// path named twice, contents held twice, a file too large to index, a whiteout.
fn every_kind_of_entry() -> Vec<u8> {
    use crate::layer::index::MAX_INDEXED;
    let long = format!("d/{}", "n".repeat(150));
    tar_of(&[
        E::Dir("d/", 0o755),
        E::File("d/a", 0o644, b"one".to_vec()),
        E::File("d/same", 0o600, b"one".to_vec()),
        E::File(&long, 0o644, vec![5; 700]),
        E::File("d/empty", 0o644, vec![]),
        E::File("d/big", 0o644, vec![3u8; MAX_INDEXED as usize + 1]),
        E::Sym("d/l", "a"),
        E::Hard("d/h", "d/a"),
        E::Dev("d/p", EntryType::Fifo, 0, 0),
        E::Xattr("d/x", "user.k", b"v"),
        E::PaxMtime("d/old", -5),
        E::File("d/twice", 0o644, b"1".to_vec()),
        E::File("d/twice", 0o644, b"2".to_vec()),
        E::File("d/.wh.gone", 0o644, vec![]),
    ])
}

/// A chunked image's writer indexes the contents of the stream it is made of (its blob)
/// as `EntryIndex::of_tar` indexes that blob: the same digests at the same spans (and no
/// fingerprints), with every kind of entry, a GNU long name, PAX records, a path named
/// twice, contents held twice and a file too large to index. A flat image's stream need
/// not be its blob: no index.
#[test]
fn a_chunked_images_index_is_the_blobs() {
    use crate::layer::index::EntryIndex;
    let tar = every_kind_of_entry();
    let write = |chunked| {
        let mut out = io::Cursor::new(Vec::new());
        write_image(
            io::Cursor::new(tar.clone()),
            &mut out,
            &image_options(chunked),
        )
        .unwrap()
    };
    let whole = EntryIndex::of_tar(io::Cursor::new(tar.clone())).unwrap();
    assert!(whole.len() >= 8, "{whole:?}");
    let digest = |b: &[u8]| <sha2::Sha256 as sha2::Digest>::digest(b).into();
    let have = write(true).counts.index.map(|i| i.index()).unwrap();
    for content in [&b"one"[..], &[5; 700], b"", b"1", b"2", b"x"] {
        assert!(have.content(&digest(content)).is_some(), "{content:?}");
    }
    assert_eq!(have, whole.contents_only());
    assert_eq!(have.len(), 0, "no fingerprints");
    assert_eq!(write(false).counts.index, None);
}

/// The contents a chunked image's writer is told of (`KnownContents`, what `layer::tee`
/// passes on from the tar's writer) make the index `EntryIndex::of_tar` gives of the
/// blob, with facts for every indexable file, facts that match no entry (a header's
/// offset, another length) and none for some files (hashed as before). A told digest is
/// taken as it is, never hashed again: a lie at an exact offset and length shows in the
/// index, one with another length does not.
#[test]
fn a_chunked_images_index_from_known_contents_is_the_blobs() {
    use crate::layer::index::{EntryIndex, KnownContent, KnownContents};
    let tar = every_kind_of_entry();
    let digest = |b: &[u8]| -> [u8; 32] { <sha2::Sha256 as sha2::Digest>::digest(b).into() };
    // Every regular file's content: offset, length, digest.
    let mut files = Vec::new();
    let mut a = tar::Archive::new(io::Cursor::new(tar.clone()));
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() == EntryType::Regular {
            let mut body = Vec::new();
            io::Read::read_to_end(&mut e, &mut body).unwrap();
            let at = e.raw_file_position();
            files.push((at, body.len() as u64, digest(&body)));
        }
    }
    let write = |facts: Vec<KnownContent>| {
        let (tx, rx) = std::sync::mpsc::channel();
        facts.into_iter().for_each(|f| tx.send(f).unwrap());
        let opts = image_options(true);
        let mut out = io::Cursor::new(Vec::new());
        let known = Some(KnownContents::new(rx));
        let stats = write_image_knowing(io::Cursor::new(tar.clone()), &mut out, &opts, known);
        stats.unwrap().counts.index.map(|i| i.index()).unwrap()
    };
    let fact = |(offset, len, digest): (u64, u64, [u8; 32])| KnownContent {
        offset,
        len,
        digest,
    };
    let whole = EntryIndex::of_tar(io::Cursor::new(tar.clone()))
        .unwrap()
        .contents_only();
    let mut facts = Vec::new();
    for (i, &f) in files.iter().enumerate() {
        facts.push(fact((f.0 - 512, 512, digest(b"a header"))));
        facts.push(fact((f.0, f.1 + 1, digest(b"another length"))));
        if i % 3 != 1 {
            facts.push(fact(f));
        }
    }
    assert_eq!(write(facts), whole);
    // Told lies: taken at their exact offset and length only.
    let lie = digest(b"not its content");
    let (at, len, _) = files[0];
    let (at2, len2, _) = files[2];
    let told = write(vec![fact((at, len, lie)), fact((at2, len2 + 1, lie))]);
    assert_eq!(
        told.content(&lie).map(|s| (s.offset, s.len)),
        Some((at, len))
    );
    assert_eq!(
        told.content(&digest(&[5; 700])),
        whole.content(&digest(&[5; 700]))
    );
}
