//! Trust in the unpacked-layer cache. A cache entry is keyed by what an image *claims*
//! (its diff_id, or a chain of them), so it is only as good as the proof that its content
//! came from that claim. This module owns that proof:
//!
//! - unpacking hashes the uncompressed stream on its way into the unpacker, and a stream
//!   that does not hash to the diff_id it was asked for is an error (the half-unpacked
//!   directory is then discarded by the caller, `build_cached`);
//! - every entry records what it was unpacked from in `unpacked.json`, written last, beside
//!   the tree in `diff/`, before the entry is renamed into place;
//! - `check` is the cache half of `keel fsck`: a cheap pass (marker present and naming the
//!   directory, same number of entries and bytes as when unpacked) and a full pass that
//!   unpacks again from the blobs and compares every file.
//!
//! It never decides what is referenced (the caller passes the image layer stacks).
use crate::sys::hostfs;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::{copy, LayerBlob, Result, StorageError};
use crate::digest::{self, hex_of, Digest};
use crate::layer::tally::Summary;
use crate::layer::unpack::{unpack, UnpackOptions, UnpackStats, Whiteouts};

/// The record of what a cache entry was unpacked from; its presence means "complete".
pub const MARKER: &str = "unpacked.json";
/// The unpacked tree inside a cache entry (what overlay mounts or the copy driver copies).
pub const TREE: &str = "diff";
/// Paths named per difference in a fsck report before the rest are summarised.
const SHOWN_DIFFERENCES: usize = 5;

/// What `unpacked.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// `layer` (one layer, overlay driver) or `chain` (merged stack, copy driver).
    pub kind: String,
    /// The verified diff_ids of the layers in the tree, bottom first.
    pub diff_ids: Vec<String>,
    /// Entries below `diff/` (not counting it) and bytes of regular files, when written.
    pub entries: u64,
    pub bytes: u64,
    /// sha256 of every directory's path, mode and owner (absent in older markers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirs: Option<String>,
    /// The tree's entry names as the stream that made it gave them, hashed
    /// (`tally::Summary::names`): absent when the tree was walked, or from older keels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<String>,
}

/// A reader that hashes what passes through it; shared so the digest can be finished
/// after the unpacker (which takes its reader by value) is done.
struct Hashing(Rc<RefCell<HashState>>);

struct HashState {
    inner: Box<dyn Read>,
    hasher: sha2::Sha256,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.0.borrow_mut();
        let n = st.inner.read(buf)?;
        st.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks `layer` into `target`, proving on the way that its uncompressed stream hashes
/// to `layer.diff_id`. On a mismatch `target` holds the attacker's files: the caller
/// must discard it (build_cached does).
pub fn unpack_verified(
    layer: &LayerBlob,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats> {
    verified(layer, |r| unpack(r, target, opts))
}

/// [`unpack_verified`], writing the layer's erofs image to the file `image` instead of
/// a tree (the overlay driver's opt-in erofs cache, `layer::erofs`).
pub fn image_verified(
    layer: &LayerBlob,
    image: &Path,
    opts: &UnpackOptions,
) -> Result<crate::layer::erofs::ImageStats> {
    verified(layer, |r| {
        crate::layer::erofs::write_image_file(r, image, opts, false)
    })
}

/// Hands `layer`'s uncompressed stream to `sink`, then proves that it hashes to
/// `layer.diff_id`.
fn verified<T>(
    layer: &LayerBlob,
    sink: impl FnOnce(Hashing) -> std::result::Result<T, crate::layer::LayerError>,
) -> Result<T> {
    let layer_err = |source| StorageError::Layer {
        diff_id: layer.diff_id.to_string(),
        source,
    };
    let file = fs::File::open(&layer.blob).map_err(StorageError::io("opening", &layer.blob))?;
    let plain = crate::layer::decompressed(file).map_err(layer_err)?;
    let state = Rc::new(RefCell::new(HashState {
        inner: plain,
        hasher: sha2::Sha256::new(),
    }));
    let out = sink(Hashing(state.clone())).map_err(layer_err)?;
    // The unpacker stops at the end-of-archive marker; the rest counts too.
    io::copy(&mut Hashing(state.clone()), &mut io::sink())
        .map_err(StorageError::io("reading", &layer.blob))?;
    let hasher = std::mem::take(&mut state.borrow_mut().hasher);
    let actual = digest::from_hasher(hasher);
    if actual != layer.diff_id {
        return Err(StorageError::DiffIdMismatch {
            diff_id: layer.diff_id.to_string(),
            actual: actual.to_string(),
            blob: layer.blob.clone(),
        });
    }
    Ok(out)
}

/// Runs `f` on a cache entry's tree: `diff/`, or the entry's erofs image mounted
/// read-only and detached at once (`sys::mount::mount_erofs_detached`; a chunked one
/// with its blob, `erofs_with_device`, never attached), so nothing stays mounted
/// whatever happens to this process; `f` gets a path into the detached mount.
pub(crate) fn with_tree<T>(entry: &Path, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let image = entry.join(crate::layer::erofs::IMAGE);
    if !image.is_file() {
        return f(&entry.join(TREE));
    }
    if let Some(blob) = super::overlay::entry_device(entry)? {
        if !blob.is_file() {
            return Err(StorageError::io("mounting", &image)(io::Error::other(
                format!("its blob {} is gone", blob.display()),
            )));
        }
        let root = crate::sys::mount::erofs_with_device(&image, &blob)?;
        use std::os::fd::AsRawFd;
        return f(&PathBuf::from(format!(
            "/proc/self/fd/{}",
            root.as_raw_fd()
        )));
    }
    let at = tempfile::Builder::new()
        .prefix("keel-erofs-")
        .tempdir()
        .map_err(StorageError::io("creating a temp dir for", &image))?;
    let root = crate::sys::mount::mount_erofs_detached(&image, at.path())?;
    use std::os::fd::AsRawFd;
    f(&PathBuf::from(format!(
        "/proc/self/fd/{}",
        root.as_raw_fd()
    )))
}

/// Counts the entries below `tree` and the bytes of its regular files, and hashes every
/// directory's path, mode and owner (stat only): a directory left 0700 by a umask, or
/// chmod'ed by hand, breaks every container of the image without changing a count.
pub fn summarize(tree: &Path) -> Result<(u64, u64, String)> {
    let (mut entries, mut bytes) = (0u64, 0u64);
    let mut dirs = sha2::Sha256::new();
    for e in walkdir::WalkDir::new(tree).min_depth(1).sort_by_file_name() {
        let e = e.map_err(|e| StorageError::Io {
            what: "walking",
            path: tree.to_path_buf(),
            source: e.into(),
        })?;
        entries += 1;
        let m = e.metadata().map_err(|e| StorageError::Io {
            what: "reading",
            path: e.path().map(Path::to_path_buf).unwrap_or_default(),
            source: e.into(),
        })?;
        if m.is_file() {
            bytes += m.len();
        } else if m.is_dir() {
            let rel = e.path().strip_prefix(tree).unwrap_or(e.path());
            crate::layer::tally::dir_line(&mut dirs, rel, m.mode(), m.uid(), m.gid());
        }
    }
    Ok((entries, bytes, hex::encode(dirs.finalize())))
}

/// Writes the marker for the finished tree `<entry>/diff`, with the summary counted
/// while the tree was unpacked when there is one (else the tree is walked).
pub(crate) fn write_marker(
    entry: &Path,
    kind: &str,
    diff_ids: Vec<String>,
    counted: Option<Summary>,
) -> Result<()> {
    let (entries, bytes, dirs, names) = match counted {
        Some(s) => (s.entries, s.bytes, s.dirs, s.names),
        None => {
            let (entries, bytes, dirs) = summarize(&entry.join(TREE))?;
            (entries, bytes, dirs, None)
        }
    };
    let m = Marker {
        kind: kind.to_string(),
        diff_ids,
        entries,
        bytes,
        dirs: Some(dirs),
        names,
    };
    let path = entry.join(MARKER);
    let json = serde_json::to_vec_pretty(&m).expect("a marker serialises");
    hostfs::write(&path, json).map_err(StorageError::io("writing", &path))
}

/// Reads the marker of a cache entry; None when it is missing or unreadable.
pub fn read_marker(entry: &Path) -> Option<Marker> {
    let bytes = fs::read(entry.join(MARKER)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Everything fsck compares about one file of a tree (times excepted: an unpack sets them
/// from the tar, a container's reads do not change them, but they say nothing of content).
fn describe(path: &Path, m: &fs::Metadata) -> io::Result<String> {
    let ft = m.file_type();
    let body = if ft.is_file() {
        digest::of_reader(fs::File::open(path)?)?.0.to_string()
    } else if ft.is_symlink() {
        fs::read_link(path)?.display().to_string()
    } else if ft.is_char_device() || ft.is_block_device() {
        format!("dev {}", m.rdev())
    } else {
        String::new()
    };
    let mut xattrs = Vec::new();
    if !ft.is_symlink() {
        for n in crate::sys::fs::list_xattrs(path).unwrap_or_default() {
            let v = crate::sys::fs::get_xattr(path, &n).ok().flatten();
            xattrs.push(format!("{n}={}", hex::encode(v.unwrap_or_default())));
        }
    }
    Ok(format!(
        "mode {:o} owner {}:{} size {} {body} [{}]",
        m.mode(),
        m.uid(),
        m.gid(),
        if ft.is_file() { m.len() } else { 0 },
        xattrs.join(" ")
    ))
}

/// Every file of `tree` (relative path → description), for a full comparison.
fn full_tree(tree: &Path) -> Result<BTreeMap<PathBuf, String>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(tree).min_depth(1) {
        let e = e.map_err(|e| StorageError::Io {
            what: "walking",
            path: tree.to_path_buf(),
            source: e.into(),
        })?;
        let rel = e
            .path()
            .strip_prefix(tree)
            .unwrap_or(e.path())
            .to_path_buf();
        let d = e
            .metadata()
            .map_err(io::Error::from)
            .and_then(|m| describe(e.path(), &m))
            .map_err(StorageError::io("reading", e.path()))?;
        out.insert(rel, d);
    }
    Ok(out)
}

/// The paths on which two trees differ (added, removed or changed), sorted.
fn differences(want: &BTreeMap<PathBuf, String>, have: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (p, w) in want {
        match have.get(p) {
            None => out.push(format!("{} is missing", p.display())),
            Some(h) if h != w => {
                out.push(format!("{} changed ({h}, unpacked as {w})", p.display()))
            }
            Some(_) => {}
        }
    }
    for p in have.keys().filter(|p| !want.contains_key(*p)) {
        out.push(format!("{} was added", p.display()));
    }
    out
}

/// What one cache directory (`layers` or `chains`) should hold: entry name → its stack.
type Expected = HashMap<String, Vec<LayerBlob>>;

/// The layer and chain entries the given image stacks may have in the cache.
fn expected(stacks: &[Vec<LayerBlob>]) -> (Expected, Expected) {
    let (mut layers, mut chains) = (Expected::new(), Expected::new());
    for stack in stacks {
        for (i, (l, chain)) in stack.iter().zip(copy::chain_ids(stack)).enumerate() {
            layers.insert(hex_of(&l.diff_id).to_string(), vec![l.clone()]);
            chains.insert(hex_of(&chain).to_string(), stack[..=i].to_vec());
        }
    }
    (layers, chains)
}

/// The cache half of `keel fsck`: problems found in `<root>/storage/{layers,chains}`.
/// `stacks` are the layer stacks of every image (with blob paths), bottom first; `full`
/// unpacks each referenced entry again from its blobs and compares every file.
pub fn check(root: &Path, stacks: &[Vec<LayerBlob>], full: bool) -> Result<Vec<String>> {
    let storage = root.join("storage");
    let (layers, chains) = expected(stacks);
    let mut problems = Vec::new();
    let checked = [
        ("layers", "layer", &layers),
        ("chains", "chain", &chains),
        // The btrfs driver's chains: the same trees, as subvolumes.
        (super::btrfs::SUBVOLUMES, "chain", &chains),
    ];
    for (sub, kind, expect) in checked {
        let dir = storage.join(sub);
        let Ok(rd) = fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let name = name.to_string_lossy().into_owned();
            let entry = dir.join(&name);
            let label = format!("unpacked {kind} {}", entry.display());
            let fix = "remove the directory (keel unpacks it again when needed)";
            match check_entry(&entry, &name, kind) {
                Err(why) => problems.push(format!("{label}: {why}; {fix}")),
                Ok(()) if full => {
                    if let Some(stack) = expect.get(&name) {
                        let diffs = recheck(&storage, &entry, kind, stack)?;
                        if !diffs.is_empty() {
                            let shown = diffs.iter().take(SHOWN_DIFFERENCES).cloned();
                            let more = diffs.len().saturating_sub(SHOWN_DIFFERENCES);
                            let mut text = shown.collect::<Vec<_>>().join("; ");
                            if more > 0 {
                                text += &format!("; and {more} more");
                            }
                            problems
                                .push(format!("{label}: differs from its layers: {text}; {fix}"));
                        }
                    }
                }
                Ok(()) => {}
            }
        }
    }
    Ok(problems)
}

/// The cheap check of one cache entry: a marker naming this directory, and the same
/// number of entries and bytes as when it was unpacked.
fn check_entry(entry: &Path, name: &str, kind: &str) -> std::result::Result<(), String> {
    let image = entry.join(crate::layer::erofs::IMAGE).is_file();
    if !entry.join(TREE).is_dir() && !image {
        return Err(format!("has no {TREE}/ tree (not made by this keel)"));
    }
    let Some(m) = read_marker(entry) else {
        return Err(format!(
            "has no readable {MARKER}, so nothing says what it was unpacked from"
        ));
    };
    let ids: Vec<Digest> = m.diff_ids.iter().filter_map(|d| digest::parse(d)).collect();
    let key = match kind {
        "layer" if ids.len() == 1 => Some(ids[0].clone()),
        "chain" if ids.len() == m.diff_ids.len() => {
            let blobs: Vec<LayerBlob> = ids
                .iter()
                .map(|d| LayerBlob {
                    diff_id: d.clone(),
                    blob: PathBuf::new(),
                })
                .collect();
            copy::chain_ids(&blobs).pop()
        }
        _ => None,
    };
    if m.kind != kind || key.as_ref().map(hex_of) != Some(name) {
        return Err(format!(
            "{MARKER} records {} {:?}, which is not this directory's name",
            m.kind, m.diff_ids
        ));
    }
    let (entries, bytes, dirs) = with_tree(entry, summarize).map_err(|e| e.to_string())?;
    if (entries, bytes) != (m.entries, m.bytes) {
        return Err(format!(
            "holds {entries} entries and {bytes} bytes but was unpacked with {} and {}",
            m.entries, m.bytes
        ));
    }
    if m.dirs.is_some_and(|d| d != dirs) {
        return Err("a directory's mode or owner changed since it was unpacked".to_string());
    }
    Ok(())
}

/// Unpacks `stack` again into a scratch directory and compares it with `entry`'s tree.
fn recheck(storage: &Path, entry: &Path, kind: &str, stack: &[LayerBlob]) -> Result<Vec<String>> {
    let tmp_root = storage.join("tmp");
    hostfs::create_dir_all(&tmp_root).map_err(StorageError::io("creating", &tmp_root))?;
    let scratch = hostfs::scratch_dir_in(&tmp_root, "fsck")
        .map_err(StorageError::io("creating a temp dir in", &tmp_root))?;
    let opts = UnpackOptions {
        whiteouts: if kind == "layer" {
            Whiteouts::Overlay
        } else {
            Whiteouts::Apply
        },
        allow_devices: true,
        ..UnpackOptions::default()
    };
    for l in stack {
        if let Err(e) = unpack_verified(l, scratch.path(), &opts) {
            return Ok(vec![format!("its layer cannot be unpacked again: {e}")]);
        }
    }
    Ok(differences(
        &full_tree(scratch.path())?,
        &with_tree(entry, full_tree)?,
    ))
}
