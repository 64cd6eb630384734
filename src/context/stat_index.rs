//! Remembered content digests of context files, keyed by what `lstat` says about them.
//!
//! A digest is reused only when device, inode, size, mtime and ctime (nanoseconds) all
//! match and the file was not modified within two seconds of the moment the index was
//! written ("racily clean" files are re-hashed, as git does), so a changed file is never
//! a stale hit even when its size and mtime were put back. The index is a plain text
//! file, one line per file sorted by path: loading it finds where each line's path
//! starts, and a lookup parses only the line it finds (a COPY asks in path order, so
//! mostly the line after the last one found).
//!
//! Each entry also remembers the file's `security.capability` xattr (or that it has
//! none), read with the content: a copy puts it into its key and its layer, and setting or
//! removing it changes the file's ctime, which the stamp compares — so a trusted entry's
//! capability is the file's, and a rebuild makes no `lgetxattr` per unchanged file.
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{io_err, ContextError, FileStamp};
use crate::digest;

/// v2 added the capability field; v3 keeps the lines sorted by path, so a load only
/// finds where each line's path starts and a lookup parses the one line it finds. An index
/// of an older version reads as empty (every file of the context hashed once more).
const HEADER: &str = "keel-stat-index v3";
/// The xattr remembered with each digest (`build::step::file_capability`).
const CAPABILITY: &str = "security.capability";

/// Digest cache for one context directory, persisted under the keel root.
pub struct StatIndex {
    file: Option<PathBuf>,
    /// When the index was last written (ns since the epoch).
    written_ns: i128,
    /// What is remembered of each path; digests stay strings (they go into cache keys).
    /// Read from `file` on first use: a rebuild that hits every step never needs it.
    files: Option<Remembered>,
    /// `file` being read and parsed on a thread of its own (`read_ahead`), until the
    /// first use joins it.
    reading: Option<std::thread::JoinHandle<Option<(i128, Remembered)>>>,
    /// The oldest time stamp (a file's newer of mtime and ctime) among the digests this
    /// run learned, if it learned any: a digest is worth writing back only if it will be
    /// trusted next time, that is if its file is past the racy window when the index is
    /// written (`save`).
    learned_oldest_ns: Option<i128>,
    /// How many files had to be read (for tests and `--explain`).
    pub hashed: usize,
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Timestamps closer than this to the index write time are not trusted.
const RACY_NS: i128 = 2_000_000_000;

/// Whether a file whose newest mtime/ctime is `newest_ns` is past the racy window now: a
/// later change to it would give it a newer ctime, so its stamp identifies its content.
pub fn is_settled(newest_ns: i128) -> bool {
    newest_ns < now_ns() - RACY_NS
}

/// What the index remembers of one file: its stamp, `sha256:<hex>` and capability.
#[derive(Clone, Debug, PartialEq)]
struct Known {
    stamp: FileStamp,
    digest: String,
    cap: Option<Vec<u8>>,
}

/// A regular file's content digest (`sha256:<hex>`) and its `security.capability` xattr
/// (None: it has none), as one read of the file saw them.
pub type FileInput = (String, Option<Vec<u8>>);

/// path → what was read of the file: the stored index's lines, looked up in place, and
/// what this run learned (which replaces a stored line of the same path).
#[derive(Default)]
struct Remembered {
    stored: Stored,
    /// foldhash (seeded per process, as std's SipHash is): once one file is hashed —
    /// the first of an edited context, often — every later lookup looks here first.
    learned: foldhash::HashMap<String, Known>,
}

impl Remembered {
    fn get(&mut self, name: &str) -> Option<Known> {
        // Nothing is learned before the first file is hashed: no path hashed to find out
        // (10,000 SipHash runs over absolute paths on a one-file rebuild's key).
        if self.learned.is_empty() {
            return self.stored.find(name);
        }
        match self.learned.get(name) {
            Some(k) => Some(k.clone()),
            None => self.stored.find(name),
        }
    }
}

/// The index file's lines in path order, each parsed only when its path is looked up:
/// parsing 10,000 lines into a hash map of owned strings was ~9 ms of a one-file rebuild.
#[derive(Default)]
struct Stored {
    text: String,
    /// Each line's byte range in `text` and where its path (the last field) starts.
    lines: Vec<Line>,
    /// The line the next lookup tries first: the one after the last found.
    next: usize,
}

#[derive(Clone, Copy)]
struct Line {
    start: usize,
    path: usize,
    end: usize,
}

impl Stored {
    /// The lines of `text` from `body` on; None when a line has fewer than eight fields
    /// or the paths are not strictly increasing (the whole index is then not trusted, as
    /// a malformed one never was).
    fn of(text: String, body: usize) -> Option<Stored> {
        let mut lines: Vec<Line> = Vec::with_capacity(text.len().saturating_sub(body) / 160);
        let mut start = body;
        while start < text.len() {
            let end = text[start..].find('\n').map_or(text.len(), |n| start + n);
            let path = start + path_offset(&text[start..end])?;
            if let Some(prev) = lines.last() {
                if text[prev.path..prev.end] >= text[path..end] {
                    return None;
                }
            }
            lines.push(Line { start, path, end });
            start = end + 1;
        }
        Some(Stored {
            text,
            lines,
            next: 0,
        })
    }

    fn path(&self, line: &Line) -> &str {
        &self.text[line.path..line.end]
    }

    /// What the line for `name` says (None: no line, or one that does not parse).
    fn find(&mut self, name: &str) -> Option<Known> {
        let at = super::find_from(&self.lines, self.next, |l| self.path(l).cmp(name))?;
        self.next = at + 1;
        let line = self.lines[at];
        parse_known(&self.text[line.start..line.path])
    }
}

/// Where a line's path starts: after its seventh space (a path may hold spaces).
fn path_offset(line: &str) -> Option<usize> {
    let mut at = 0;
    for _ in 0..7 {
        at += line[at..].find(' ')? + 1;
    }
    Some(at)
}

/// The fields before a line's path: `dev ino size mtime_ns ctime_ns sha256:hex cap `.
fn parse_known(fields: &str) -> Option<Known> {
    let mut f = fields.split(' ');
    let stamp = FileStamp {
        dev: f.next()?.parse().ok()?,
        ino: f.next()?.parse().ok()?,
        size: f.next()?.parse().ok()?,
        mtime_ns: parse_ns(f.next()?)?,
        ctime_ns: parse_ns(f.next()?)?,
    };
    let digest = f
        .next()
        .filter(|d| d.len() == 71 && d.starts_with("sha256:"))?
        .to_string();
    let cap = parse_cap(f.next()?)?;
    Some(Known { stamp, digest, cap })
}

/// Appends one index line for `path`.
fn push_line(text: &mut String, path: &str, k: &Known) {
    let s = &k.stamp;
    let _ = write!(text, "{} {} {} ", s.dev, s.ino, s.size);
    push_ns(text, s.mtime_ns);
    text.push(' ');
    push_ns(text, s.ctime_ns);
    text.push(' ');
    text.push_str(&k.digest);
    text.push(' ');
    push_cap(text, k.cap.as_deref());
    text.push(' ');
    text.push_str(path);
    text.push('\n');
}

/// The capability field: `-` for none, else the xattr's bytes in hex.
fn push_cap(text: &mut String, cap: Option<&[u8]>) {
    match cap {
        None => text.push('-'),
        Some(b) => b.iter().for_each(|x| {
            let _ = write!(text, "{x:02x}");
        }),
    }
}

fn parse_cap(s: &str) -> Option<Option<Vec<u8>>> {
    if s == "-" {
        return Some(None);
    }
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    bytes.map(Some)
}

/// The header's write time and the `dev ino size mtime_ns ctime_ns sha256:hex cap path`
/// lines after it, sorted by path.
fn parse(text: String) -> Option<(i128, Remembered)> {
    let first = text.find('\n').unwrap_or(text.len());
    let written_ns = text[..first].strip_prefix(HEADER)?.trim().parse().ok()?;
    let body = (first + 1).min(text.len());
    let stored = Stored::of(text, body)?;
    Some((
        written_ns,
        Remembered {
            stored,
            learned: Default::default(),
        },
    ))
}

/// The index stored in `file` (None: missing, unreadable or not an index).
fn read_file(file: &Path) -> Option<(i128, Remembered)> {
    parse(fs::read_to_string(file).ok()?)
}

/// A time in nanoseconds: every real one fits an `i64` (until 2262), whose parse is
/// several times cheaper than an `i128`'s; anything longer is parsed as an `i128`.
fn parse_ns(s: &str) -> Option<i128> {
    match s.parse::<i64>() {
        Ok(n) => Some(n.into()),
        Err(_) => s.parse().ok(),
    }
}

/// Appends `n` in decimal: through `i64` when it fits (the same digits, formatted
/// several times faster than an `i128`).
fn push_ns(text: &mut String, n: i128) {
    let _ = match i64::try_from(n) {
        Ok(small) => write!(text, "{small}"),
        Err(_) => write!(text, "{n}"),
    };
}

/// Every line of `files` in path order: the stored lines as they were read (a stored
/// line is not parsed to be written again), merged with the learned ones, a learned line
/// replacing the stored line of its path.
fn push_merged(text: &mut String, files: &Remembered) {
    let stored = &files.stored;
    let mut learned: Vec<(&String, &Known)> = files.learned.iter().collect();
    learned.sort_unstable_by(|a, b| a.0.cmp(b.0));
    text.reserve(stored.text.len() + learned.iter().map(|(p, _)| p.len() + 142).sum::<usize>());
    let mut learned = learned.into_iter().peekable();
    for line in &stored.lines {
        let path = stored.path(line);
        while let Some((p, k)) = learned.next_if(|(p, _)| p.as_str() < path) {
            push_line(text, p, k);
        }
        if learned.peek().is_some_and(|(p, _)| p.as_str() == path) {
            continue; // replaced: its learned line comes next
        }
        text.push_str(&stored.text[line.start..line.end]);
        text.push('\n');
    }
    learned.for_each(|(p, k)| push_line(text, p, k));
}

impl StatIndex {
    /// An index with no persistence (every file is hashed once per process).
    pub fn in_memory() -> StatIndex {
        StatIndex {
            file: None,
            written_ns: 0,
            files: Some(Remembered::default()),
            reading: None,
            learned_oldest_ns: None,
            hashed: 0,
        }
    }

    /// Loads the index for `context_root` from `dir` (a missing or unreadable index is empty).
    pub fn load(dir: &Path, context_root: &Path) -> StatIndex {
        let name = digest::of_bytes(context_root.as_os_str().as_encoded_bytes());
        let file = dir.join(format!("{}.idx", name.digest()));
        StatIndex {
            file: Some(file),
            written_ns: 0,
            files: None,
            reading: None,
            learned_oldest_ns: None,
            hashed: 0,
        }
    }

    /// Starts reading and parsing the index on a thread of its own, for a caller that
    /// knows it will need it soon and has other work meanwhile (a COPY whose stamp missed
    /// reads the last build's inputs, ~1 MB of JSON, while this parses ~1 MB of lines).
    /// Nothing happens if it is read already or no thread can be started: the first use
    /// reads it then, as without this call.
    pub fn read_ahead(&mut self) {
        if self.files.is_some() || self.reading.is_some() {
            return;
        }
        let Some(file) = self.file.clone() else {
            return;
        };
        self.reading = std::thread::Builder::new()
            .name("keel-stat-index".into())
            .spawn(move || read_file(&file))
            .ok();
    }

    fn files(&mut self) -> &mut Remembered {
        if self.files.is_none() {
            let read = match self.reading.take() {
                // A thread that panicked read nothing: the index is empty, as if unreadable.
                Some(reading) => reading.join().ok().flatten(),
                None => self.file.as_deref().and_then(read_file),
            };
            let (written_ns, files) = read.unwrap_or_default();
            self.written_ns = written_ns;
            self.files = Some(files);
        }
        self.files.get_or_insert_with(Remembered::default)
    }

    /// The sha256 (`sha256:<hex>`) of the regular file at `path`, reusing a remembered
    /// digest when safe.
    pub fn digest(&mut self, path: &Path) -> Result<String, ContextError> {
        let stamp = FileStamp::lstat(path).map_err(io_err(path))?;
        self.digest_stamped(path, stamp)
    }

    /// Like `digest`, with the lstat result the caller already has.
    pub fn digest_stamped(
        &mut self,
        path: &Path,
        stamp: FileStamp,
    ) -> Result<String, ContextError> {
        Ok(self.input_stamped(path, stamp)?.0)
    }

    /// The digest and capability of the regular file at `path` (lstat'ed as `stamp`),
    /// reusing what is remembered when safe (the same rule for both: setting or removing
    /// a capability gives the file a new ctime).
    pub fn input_stamped(
        &mut self,
        path: &Path,
        stamp: FileStamp,
    ) -> Result<FileInput, ContextError> {
        let name = path.to_string_lossy();
        self.files(); // loads the index (and its write time) on first use
        let settled = self.written_ns - RACY_NS;
        if let Some(k) = self.files().get(name.as_ref()) {
            if k.stamp == stamp && stamp.mtime_ns < settled && stamp.ctime_ns < settled {
                return Ok((k.digest, k.cap));
            }
        }
        let f = fs::File::open(path).map_err(io_err(path))?;
        let digest = digest::of_reader(f).map_err(io_err(path))?.0.to_string();
        // As `build::step::file_capability` reads it: an error is no capability.
        let cap = crate::sys::fs::get_xattr(path, CAPABILITY).ok().flatten();
        self.hashed += 1;
        // Re-stat: a file changing while it was read must not be remembered.
        if FileStamp::lstat(path).ok() == Some(stamp) && !name.contains('\n') {
            let known = Known {
                stamp,
                digest: digest.clone(),
                cap: cap.clone(),
            };
            self.files().learned.insert(name.into_owned(), known);
            let newest = stamp.mtime_ns.max(stamp.ctime_ns);
            self.learned_oldest_ns = Some(self.learned_oldest_ns.map_or(newest, |o| o.min(newest)));
        }
        Ok((digest, cap))
    }

    /// Writes what this run learned (atomically; best effort: a failure only costs
    /// re-hashing next time). Nothing is written when nothing was hashed, nor when every
    /// file hashed was changed within the racy window: written now, the index would not
    /// trust those digests next time either (a file is trusted only when it settled before
    /// the index was written), and what it trusts already it goes on trusting — so a
    /// rebuild right after an edit does not rewrite a 10,000-file index for one file.
    pub fn save(&mut self) {
        self.save_at(now_ns());
    }

    fn save_at(&mut self, now: i128) {
        let Some(file) = &self.file else { return };
        match self.learned_oldest_ns {
            Some(oldest) if oldest < now - RACY_NS => {}
            _ => return,
        }
        self.written_ns = now;
        let mut text = format!("{HEADER} {}\n", self.written_ns);
        if let Some(files) = &self.files {
            push_merged(&mut text, files);
        }
        // Not renamed over the old index (a 10,000-file index is ~1 MB, which ext4 would
        // start writing out at once): an empty index after a crash only costs re-hashing.
        let _ = crate::sys::hostfs::replace(file, text.as_bytes());
        self.learned_oldest_ns = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;

    fn set_mtime(p: &Path, secs: i64) {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn a_changed_file_is_rehashed_even_with_size_and_mtime_restored() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a b");
        fs::write(&f, "aaaa").unwrap();
        let old = fs::metadata(&f).unwrap().mtime();
        set_mtime(&f, old - 100);
        let idx_dir = d.path().join("idx");
        let mut idx = StatIndex::load(&idx_dir, d.path());
        let first = idx.digest(&f).unwrap();
        assert_eq!(idx.hashed, 1);
        idx.save();
        // ctime is recent, so the entry is not trusted yet: hashed again, same digest.
        let mut idx = StatIndex::load(&idx_dir, d.path());
        assert_eq!(idx.digest(&f).unwrap(), first);
        fs::write(&f, "bbbb").unwrap();
        set_mtime(&f, old - 100);
        let mut idx = StatIndex::load(&idx_dir, d.path());
        assert_ne!(
            idx.digest(&f).unwrap(),
            first,
            "same size and mtime, new content: a new digest"
        );
    }

    /// Times written through the `i64` shortcut read back as written, and so do ones
    /// only an `i128` holds (the text is the same decimal either way).
    #[test]
    fn times_of_every_size_round_trip() {
        for n in [
            0i128,
            -1,
            1_796_035_839_128_000_000,
            i64::MAX as i128 + 1,
            i128::MIN,
        ] {
            let mut text = String::new();
            push_ns(&mut text, n);
            assert_eq!(text, n.to_string());
            assert_eq!(parse_ns(&text), Some(n));
        }
        assert_eq!(parse_ns("12x"), None);
    }

    #[test]
    fn settled_files_are_not_read_again_and_the_index_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("settled");
        fs::write(&f, "x").unwrap();
        let idx_dir = d.path().join("idx");
        let mut idx = StatIndex::load(&idx_dir, d.path());
        let first = idx.digest(&f).unwrap();
        // Written long after the file settled.
        idx.save_at(now_ns() + 10 * RACY_NS);
        let mut idx = StatIndex::load(&idx_dir, d.path());
        assert_eq!(idx.digest(&f).unwrap(), first);
        assert_eq!(idx.hashed, 0, "a settled, unchanged file was read");
    }

    /// An index read ahead on its own thread is the one read on first use: the same
    /// settled digest trusted (nothing hashed), a changed file read again; read ahead
    /// twice, or for a missing index (every file hashed), it is still one index.
    #[test]
    fn an_index_read_ahead_is_the_index_read_on_first_use() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        let idx_dir = d.path().join("idx");
        let mut missing = StatIndex::load(&idx_dir, d.path());
        missing.read_ahead();
        let first = (missing.digest(&a).unwrap(), missing.digest(&b).unwrap());
        assert_eq!(missing.hashed, 2);
        missing.save_at(now_ns() + 10 * RACY_NS);
        fs::write(&b, "changed").unwrap();
        let mut lazy = StatIndex::load(&idx_dir, d.path());
        let mut ahead = StatIndex::load(&idx_dir, d.path());
        ahead.read_ahead();
        ahead.read_ahead();
        for idx in [&mut lazy, &mut ahead] {
            assert_eq!(idx.digest(&a).unwrap(), first.0);
            assert_ne!(idx.digest(&b).unwrap(), first.1);
            assert_eq!(idx.hashed, 1, "only the changed file is read");
        }
        assert_eq!(lazy.written_ns, ahead.written_ns);
        let mut in_memory = StatIndex::in_memory();
        in_memory.read_ahead();
        assert_eq!(in_memory.digest(&a).unwrap(), first.0);
    }

    /// Digests of files changed within the racy window would not be trusted by an index
    /// written now, so none is written for them alone; once one of them has settled, it is.
    #[test]
    fn an_index_that_would_trust_nothing_new_is_not_written() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("just-edited");
        fs::write(&f, "x").unwrap();
        let idx_dir = d.path().join("idx");
        let mut idx = StatIndex::load(&idx_dir, d.path());
        idx.digest(&f).unwrap();
        idx.save();
        assert!(
            !idx_dir.exists(),
            "an index was written for a racy file only"
        );
        idx.save_at(now_ns() + 2 * RACY_NS);
        assert_eq!(fs::read_dir(&idx_dir).unwrap().count(), 1);
        let mut idx = StatIndex::load(&idx_dir, d.path());
        idx.digest(&f).unwrap();
        assert_eq!(idx.hashed, 0, "the settled file's digest was not kept");
    }

    /// The capability is remembered with the digest and read back from a settled entry
    /// (a file with none as `-`); a capability set later gives the file a new ctime, so
    /// the entry is not trusted and the new one is read; a v1 index (no capability field)
    /// reads as empty.
    #[test]
    fn capabilities_round_trip_and_a_new_one_is_read() {
        let d = tempfile::tempdir().unwrap();
        let (with, without) = (d.path().join("with cap"), d.path().join("plain"));
        fs::write(&with, "x").unwrap();
        fs::write(&without, "y").unwrap();
        // vfs_cap_data v2, effective, cap_net_raw permitted.
        let cap = [
            1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        if let Err(e) = crate::sys::fs::set_xattr(&with, CAPABILITY, &cap) {
            // Not root, or a filesystem without security xattrs: never skipped in CI.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "setting a capability: {e}"
            );
            return;
        }
        let idx_dir = d.path().join("idx");
        let stamp = |p: &Path| FileStamp::lstat(p).unwrap();
        let mut idx = StatIndex::load(&idx_dir, d.path());
        let read = idx.input_stamped(&with, stamp(&with)).unwrap();
        assert_eq!(read.1.as_deref(), Some(&cap[..]));
        assert_eq!(
            idx.input_stamped(&without, stamp(&without)).unwrap().1,
            None
        );
        idx.save_at(now_ns() + 10 * RACY_NS);
        let mut idx = StatIndex::load(&idx_dir, d.path());
        assert_eq!(idx.input_stamped(&with, stamp(&with)).unwrap(), read);
        assert_eq!(
            idx.input_stamped(&without, stamp(&without)).unwrap().1,
            None
        );
        assert_eq!(idx.hashed, 0, "settled entries were read again");
        crate::sys::fs::remove_xattr(&with, CAPABILITY).unwrap();
        assert_eq!(idx.input_stamped(&with, stamp(&with)).unwrap().1, None);
        assert_eq!(idx.hashed, 1);
        let file = fs::read_dir(&idx_dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = fs::read_to_string(&file).unwrap();
        for older in ["keel-stat-index v1", "keel-stat-index v2"] {
            fs::write(&file, text.replace(HEADER, older)).unwrap();
            let mut idx = StatIndex::load(&idx_dir, d.path());
            idx.input_stamped(&without, stamp(&without)).unwrap();
            assert_eq!(idx.hashed, 1, "a {older} index was trusted");
        }
    }

    /// The v2 definition, kept to check v3 against: every line after the header parsed
    /// into a map (in any order; a later line of the same path wins).
    fn parse_v2(text: &str) -> Option<(i128, HashMap<String, Known>)> {
        let mut lines = text.lines();
        let written_ns = lines
            .next()?
            .strip_prefix("keel-stat-index v2")?
            .trim()
            .parse()
            .ok()?;
        let mut files = HashMap::new();
        for line in lines {
            // The fields are read as v3 reads them (`parse_known`, unchanged from v2):
            // what this checks is where lines are found, not how one is spelt.
            let (last_space, _) = line.match_indices(' ').nth(6)?;
            let known = parse_known(&line[..=last_space])?;
            files.insert(line[last_space + 1..].to_string(), known);
        }
        Some((written_ns, files))
    }

    /// Entries of every shape: names with spaces, that prefix others or differ around
    /// `/`, non-ASCII, capabilities or none, times an `i64` does not hold.
    fn sample_entries() -> HashMap<String, Known> {
        let mut names: Vec<String> = [
            "/c/a",
            "/c/a b",
            "/c/a/b",
            "/c/a-b",
            "/c/a.txt",
            "/c/ä",
            "/c/z y/x  y",
            "/c/a/",
            "/c/b",
            "/d",
            "/",
        ]
        .iter()
        .map(|n| n.to_string())
        .collect();
        names.extend((0..300).map(|i| format!("/c/src/d{:03}/f{i:05}.txt", i % 7)));
        names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let n = i as i128;
                let known = Known {
                    stamp: FileStamp {
                        dev: 2049 + (i as u64 % 2),
                        ino: 1000 + i as u64,
                        size: i as u64 * 3,
                        mtime_ns: 1_796_035_839_128_000_000 + n,
                        ctime_ns: if i % 5 == 0 { i128::MIN + n } else { -n },
                    },
                    digest: digest::of_bytes(name.as_bytes()).to_string(),
                    cap: (i % 3 == 0).then(|| vec![1, 0, i as u8, 0xff]),
                };
                (name, known)
            })
            .collect()
    }

    /// The sorted (v3) index finds for every path what the v2 index (every line parsed
    /// into a map) found: paths present and absent, asked in path order (the next line),
    /// in reverse and shuffled (a search); with learned entries replacing stored ones and
    /// added beside them, as stored and as written again (merged, still sorted).
    #[test]
    fn sorted_lookups_find_what_the_v2_index_found() {
        let entries = sample_entries();
        let text_of = |files: &Remembered, header: &str| {
            let mut text = format!("{header} 42\n");
            push_merged(&mut text, files);
            text
        };
        let fresh = Remembered {
            stored: Stored::default(),
            learned: entries.clone().into_iter().collect(),
        };
        let v3 = text_of(&fresh, HEADER);
        // v2 lines were in hash-map order: the same lines reversed.
        let body: Vec<&str> = v3.lines().skip(1).collect();
        let v2 = format!(
            "keel-stat-index v2 42\n{}\n",
            body.iter().rev().copied().collect::<Vec<_>>().join("\n")
        );
        let (_, mut want) = parse_v2(&v2).unwrap();
        assert_eq!(want, entries);
        let mut asked: Vec<String> = want.keys().cloned().collect();
        asked.extend(["", "/c", "/c/", "/c/a/b/c", "/c/src/d000/f", "/e"].map(String::from));
        asked.sort();
        let check = |got: &mut Remembered, want: &HashMap<String, Known>| {
            let shuffled: Vec<String> = (0..asked.len())
                .map(|i| asked[(i * 7) % asked.len()].clone())
                .collect();
            let reversed: Vec<String> = asked.iter().rev().cloned().collect();
            for order in [&asked, &reversed, &shuffled, &asked] {
                for p in order {
                    assert_eq!(got.get(p), want.get(p).cloned(), "{p:?}");
                }
            }
        };
        let (written, mut got) = parse(v3.clone()).unwrap();
        assert_eq!(written, 42);
        check(&mut got, &want);

        // What a run learns replaces a stored line (v2: inserted over it) or is new.
        for (i, p) in asked.iter().enumerate().filter(|(i, _)| i % 4 == 0) {
            let mut k = entries.values().next().unwrap().clone();
            k.stamp.ino = 7_000_000 + i as u64;
            got.learned.insert(p.clone(), k.clone());
            want.insert(p.clone(), k);
        }
        check(&mut got, &want);
        let (_, mut again) = parse(text_of(&got, HEADER)).unwrap();
        check(&mut again, &want);
    }

    /// Lines out of path order or a path twice: not an index this keel wrote, so not
    /// trusted at all (every file hashed), as a malformed v2 index was not.
    #[test]
    fn an_index_out_of_path_order_reads_as_empty() {
        let line = |p: &str| format!("1 2 3 4 5 {} - {p}\n", digest::of_bytes(b"x"));
        let ok = format!("{HEADER} 9\n{}{}", line("/a"), line("/b"));
        assert!(parse(ok).is_some());
        for bad in [
            format!("{HEADER} 9\n{}{}", line("/b"), line("/a")),
            format!("{HEADER} 9\n{}{}", line("/a"), line("/a")),
            format!("{HEADER} 9\n{}1 2 3\n", line("/a")),
        ] {
            assert!(parse(bad).is_none());
        }
        assert!(parse(format!("{HEADER} 9\n")).is_some_and(|(_, r)| r.stored.lines.is_empty()));
    }

    #[test]
    fn capability_fields_parse_as_written() {
        for cap in [None, Some(vec![0u8, 1, 0xab, 0xff])] {
            let mut text = String::new();
            push_cap(&mut text, cap.as_deref());
            assert_eq!(parse_cap(&text), Some(cap));
        }
        for bad in ["", "a", "zz", "0g"] {
            assert_eq!(parse_cap(bad), None, "{bad:?}");
        }
    }
}
