//! The build cache: step cache keys (pure) and step results kept under `<root>/cache`.
//!
//! A key is the sha256 of a versioned struct (`KeyInputs`) written as canonical JSON
//! (sorted keys, no spaces): the format version, the parent state, the typed step after
//! expansion, the build args and env it can see, and for COPY/ADD the path, mode, owner and
//! content digest of every file it selects (never mtimes). Changing what goes into a key
//! bumps `KEY_VERSION`; entries are stored with the version and read only when it matches,
//! so an entry of another format never hits. docs/build.md describes the format. The same
//! inputs are kept per step position so a miss can say what changed.
use crate::sys::hostfs;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::context::ContextFile;
use crate::digest::{self, Digest};

/// The version of the key format (and of the cache entries). Bump it whenever a field of
/// `KeyInputs`, or the serialised shape of a step in `instruction`, changes meaning, or
/// what a cached result puts into an image does (4: history entries as BuildKit writes
/// them; a version-3 entry would give an image other than a fresh build's. 5: RUN history
/// with its build args, metadata history texts, an empty layer for a step that changes
/// nothing, pre-1970 mtimes kept; a version-4 entry would carry the old history or no
/// layer).
pub const KEY_VERSION: u32 = 5;

/// Everything a step's result depends on; its key is the digest of its canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInputs {
    /// `KEY_VERSION` when the key was made.
    pub version: u32,
    /// The key of the previous step, or the base image's manifest digest.
    pub parent: String,
    /// The typed step as it runs (after variable expansion), serialised: e.g.
    /// `{"run": {"argv": [...], "network": "default", "mounts": [...]}}`.
    pub instruction: serde_json::Value,
    /// Build args the step can see (name → value).
    pub args: BTreeMap<String, String>,
    /// Environment and other settings the step runs with (name → value).
    pub env: BTreeMap<String, String>,
    /// COPY/ADD inputs: destination path → "kind mode uid:gid digest-or-target".
    pub files: BTreeMap<String, String>,
}

impl KeyInputs {
    /// Inputs of the current version with nothing but a parent and an instruction.
    pub fn new(parent: String, instruction: serde_json::Value) -> KeyInputs {
        KeyInputs {
            version: KEY_VERSION,
            parent,
            instruction,
            args: BTreeMap::new(),
            env: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    }

    /// sha256 of the canonical JSON (object keys sorted, no whitespace). Written straight
    /// into the hasher: a COPY of 10,000 files has a key of ~1 MB of JSON, and going
    /// through `serde_json::Value` to sort the fields cost more than the hashing. The
    /// fields are named in sorted order here (`Sorted`), the maps are sorted already, and
    /// `instruction`'s objects are sorted by serde_json's own map, so the bytes are
    /// those of `canonical_json` (`the_streamed_key_is_the_canonical_jsons_digest`).
    pub fn key(&self) -> CacheKey {
        let mut sink = digest::HashSink::default();
        serde_json::to_writer(&mut sink, &self.sorted()).expect("key inputs serialise to JSON");
        CacheKey(sink.finish())
    }

    /// These inputs with their canonical JSON and key, made once: a step needs its key
    /// several times (lookup, result, its record as the last inputs), and for a COPY of
    /// 10,000 files each serialisation is ~1 MB.
    pub fn keyed(self) -> Keyed {
        // Sized for the files up front (each `"k":"v",`, before any escapes): grown from
        // nothing, the ~1 MB buffer was copied a dozen times into fresh pages.
        let files: usize = self.files.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
        let mut canonical = Vec::with_capacity(files + 1024);
        serde_json::to_writer(&mut canonical, &self.sorted())
            .expect("key inputs serialise to JSON");
        let key = CacheKey(digest::of_bytes(&canonical));
        Keyed {
            inputs: self,
            canonical,
            key,
        }
    }

    fn sorted(&self) -> Sorted<'_> {
        Sorted {
            args: &self.args,
            env: &self.env,
            files: &self.files,
            instruction: &self.instruction,
            parent: &self.parent,
            version: self.version,
        }
    }

    /// One line naming the first input that differs from `before` (the previous build of
    /// the same step), for the progress output.
    pub fn explain_change(&self, before: Option<&LastInputs>) -> String {
        let Some(b) = before.filter(|b| b.version == self.version) else {
            return "not built before".into();
        };
        if b.parent != self.parent {
            return "parent step changed".into();
        }
        if b.instruction != self.instruction {
            return "instruction changed".into();
        }
        if let Some(k) = diff_keys(pairs(&b.args), pairs(&self.args)).first() {
            return format!("build arg {k} changed");
        }
        if let Some(k) = diff_keys(pairs(&b.env), pairs(&self.env)).first() {
            return format!("{k} changed");
        }
        let changed = diff_keys(b.files.iter(), pairs(&self.files));
        match changed.len() {
            0 => "cache entry missing (pruned by `keel gc --cache`?)".into(),
            1 => format!("{} changed", changed[0]),
            n => format!("{} and {} other files changed", changed[0], n - 1),
        }
    }
}

/// `KeyInputs` with its fields in sorted order: serialised, the canonical JSON.
#[derive(Serialize)]
struct Sorted<'a> {
    args: &'a BTreeMap<String, String>,
    env: &'a BTreeMap<String, String>,
    files: &'a BTreeMap<String, String>,
    instruction: &'a serde_json::Value,
    parent: &'a str,
    version: u32,
}

/// Key inputs sealed with their canonical JSON and its digest, the key
/// (`KeyInputs::keyed`).
#[derive(Debug)]
pub struct Keyed {
    inputs: KeyInputs,
    canonical: Vec<u8>,
    key: CacheKey,
}

impl Keyed {
    pub fn inputs(&self) -> &KeyInputs {
        &self.inputs
    }
    pub fn key(&self) -> &CacheKey {
        &self.key
    }
}

/// A step's inputs as the previous build recorded them (`BuildCache::record_inputs`),
/// with their key: what a miss is explained against and what tells whether the step's
/// last layer can be patched. The files stay in one buffer, in key order: a 10,000-file
/// COPY's ~1 MB record was parsed into a map of 20,000 strings on every one-file rebuild,
/// only to be compared once.
#[derive(Debug, Deserialize)]
pub struct LastInputs {
    version: u32,
    parent: String,
    instruction: serde_json::Value,
    args: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
    files: FileList,
    #[serde(skip, default = "no_key")]
    key: CacheKey,
}

fn no_key() -> CacheKey {
    CacheKey(digest::of_bytes(b""))
}

impl LastInputs {
    pub fn key(&self) -> &CacheKey {
        &self.key
    }
    pub fn parent(&self) -> &str {
        &self.parent
    }
    pub fn instruction(&self) -> &serde_json::Value {
        &self.instruction
    }

    /// Inputs recorded as their canonical JSON (what `record_inputs` writes, so the key is
    /// the digest of the bytes read) or, from an older keel, as any JSON (the key is then
    /// computed); None when the bytes are not key inputs.
    fn read(bytes: &[u8]) -> Option<LastInputs> {
        // The canonical form is the only one whose first field is `args`.
        if !bytes.starts_with(br#"{"args":"#) {
            let inputs: KeyInputs = serde_json::from_slice(bytes).ok()?;
            return LastInputs::read(&inputs.keyed().canonical);
        }
        let mut last: LastInputs = serde_json::from_slice(bytes).ok()?;
        last.key = CacheKey(digest::of_bytes(bytes));
        last.files.sort_if_needed();
        Some(last)
    }
}

/// A read of the last inputs on a thread of its own (`BuildCache::read_inputs_ahead`).
type InputsReading = std::thread::JoinHandle<Option<Arc<LastInputs>>>;

/// The last inputs recorded at `path`; None when there are none or they do not read.
fn read_inputs(path: &Path) -> Option<Arc<LastInputs>> {
    let bytes = fs::read(path).ok()?;
    LastInputs::read(&bytes).map(Arc::new)
}

/// A map of strings to strings as one buffer: each key then its value, and where each
/// ends. Kept in key order (`sort_if_needed`), as a `BTreeMap` would iterate it.
#[derive(Debug, Default)]
struct FileList {
    text: String,
    /// (end of the key, end of the value) per entry; the key starts where the last value
    /// ended.
    ends: Vec<(usize, usize)>,
}

impl FileList {
    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0;
        self.ends.iter().map(move |&(k, v)| {
            let pair = (&self.text[start..k], &self.text[k..v]);
            start = v;
            pair
        })
    }

    fn push(&mut self, key: &str, value: &str) {
        self.text.push_str(key);
        let k = self.text.len();
        self.text.push_str(value);
        self.ends.push((k, self.text.len()));
    }

    /// A record this keel wrote has its keys in order, once each; any other is put in
    /// the order (and with the last value of a repeated key) a `BTreeMap` gives.
    fn sort_if_needed(&mut self) {
        let mut prev = None;
        let sorted = self.iter().all(|(k, _)| {
            let ok = prev < Some(k);
            prev = Some(k);
            ok
        });
        if !sorted {
            let mut list = FileList::default();
            let map: BTreeMap<&str, &str> = self.iter().collect();
            map.into_iter().for_each(|(k, v)| list.push(k, v));
            *self = list;
        }
    }
}

impl<'de> Deserialize<'de> for FileList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FileList, D::Error> {
        d.deserialize_map(FileListVisitor)
    }
}

struct FileListVisitor;

impl<'de> serde::de::Visitor<'de> for FileListVisitor {
    type Value = FileList;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map of strings")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<FileList, A::Error> {
        let mut list = FileList {
            text: String::with_capacity(map.size_hint().unwrap_or(0) * 96),
            ends: Vec::with_capacity(map.size_hint().unwrap_or(0)),
        };
        while map.next_key_seed(Append(&mut list.text))?.is_some() {
            let k = list.text.len();
            map.next_value_seed(Append(&mut list.text))?;
            list.ends.push((k, list.text.len()));
        }
        Ok(list)
    }
}

/// Deserialises a string by appending it to a buffer (no string of its own).
struct Append<'a>(&'a mut String);

impl<'de> serde::de::DeserializeSeed<'de> for Append<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for Append<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }
}

/// A map's entries as string pairs.
fn pairs(map: &BTreeMap<String, String>) -> impl Iterator<Item = (&str, &str)> {
    map.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

/// The keys whose values differ between `a` and `b` (in one map only, or in both with
/// different values), sorted: one merge walk over the two sorted maps. A 10,000-file
/// COPY's inputs used to be looked up key by key in the other map (~14 string
/// comparisons each) on every one-file rebuild's miss.
fn diff_keys<'a, 'b>(
    mut ia: impl Iterator<Item = (&'a str, &'a str)>,
    mut ib: impl Iterator<Item = (&'b str, &'b str)>,
) -> Vec<String> {
    use std::cmp::Ordering;
    let mut out = Vec::new();
    let (mut na, mut nb) = (ia.next(), ib.next());
    loop {
        let order = match (na, nb) {
            (None, None) => return out,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match (order, na, nb) {
            (Ordering::Less, Some((k, _)), _) => {
                out.push(k.to_string());
                na = ia.next();
            }
            (Ordering::Greater, _, Some((k, _))) => {
                out.push(k.to_string());
                nb = ib.next();
            }
            (_, Some((k, va)), Some((_, vb))) => {
                if va != vb {
                    out.push(k.to_string());
                }
                (na, nb) = (ia.next(), ib.next());
            }
            _ => return out,
        }
    }
}

/// A step's cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheKey(pub Digest);

impl CacheKey {
    pub fn hex(&self) -> &str {
        self.0.digest()
    }
}

/// What `lstat` said of every file a COPY step selects, with the step's other inputs
/// (never file contents). While every stamped file is older than the racy window, the same
/// stamp means the same files, so the step's key can be reused without reading the stat
/// index or building the key inputs: the no-op rebuild's fast path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectionStamp(pub Digest);

impl SelectionStamp {
    /// The stamp of `inputs` (the step's other key inputs, in a fixed order) and of each
    /// `(name, file)` selected; also the newest mtime/ctime among the files. Each file's
    /// fields are gathered in a buffer that is hashed in large pieces: a dozen `update`
    /// calls of a few bytes per file cost more than the hashing (the bytes are the same).
    pub fn of<'a, S: AsRef<str>>(
        inputs: &[&str],
        files: impl IntoIterator<Item = (&'a str, S, &'a ContextFile)>,
    ) -> (SelectionStamp, i128) {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for i in inputs {
            h.update(i.as_bytes());
            h.update([0]);
        }
        let mut buf: Vec<u8> = Vec::with_capacity(STAMP_CHUNK + 4096);
        let mut newest = i128::MIN;
        for (name, rel, f) in files {
            let s = &f.stamp;
            for part in [name.as_bytes(), b":", rel.as_ref().as_bytes(), b"\0"] {
                buf.extend_from_slice(part);
            }
            buf.push(f.kind as u8);
            for n in [f.mode, f.uid, f.gid] {
                buf.extend_from_slice(&n.to_le_bytes());
            }
            for n in [s.dev, s.ino, s.size] {
                buf.extend_from_slice(&n.to_le_bytes());
            }
            for n in [s.mtime_ns, s.ctime_ns] {
                buf.extend_from_slice(&n.to_le_bytes());
            }
            if let Some(t) = &f.link_target {
                buf.extend_from_slice(t.as_os_str().as_encoded_bytes());
            }
            buf.push(0);
            newest = newest.max(s.mtime_ns).max(s.ctime_ns);
            if buf.len() >= STAMP_CHUNK {
                h.update(&buf);
                buf.clear();
            }
        }
        h.update(&buf);
        (SelectionStamp(digest::from_hasher(h)), newest)
    }
}

/// How many bytes of file fields a selection stamp gathers before hashing them.
const STAMP_CHUNK: usize = 64 * 1024;

/// The field of a cache entry that holds the format version it was written with.
const ENTRY_VERSION: &str = "keel_cache_version";

/// How long `keel gc` keeps cache entries nobody has used.
pub const KEEP_UNUSED: Duration = Duration::from_secs(7 * 24 * 3600);

/// A cache hit marks its entry used (its mtime) when the mark is older than this.
const TOUCH_EVERY: Duration = Duration::from_secs(3600);

/// The build cache under `<root>/cache`.
pub struct BuildCache {
    dir: PathBuf,
    /// The last `last_inputs` read (position and what it found): a step that misses asks
    /// for it more than once (why it missed, whether its previous layer can be patched),
    /// and for a COPY of 10,000 files each read parses ~1 MB of JSON.
    last_read: std::sync::Mutex<Option<(String, Option<Arc<LastInputs>>)>>,
    /// The last inputs of one position being read on a thread of its own
    /// (`read_inputs_ahead`), until `last_inputs` asks for that position.
    reading: std::sync::Mutex<Option<(String, InputsReading)>>,
    /// Large key inputs done with (a memo replaced, a COPY's own inputs and file digests
    /// once its step is over), held until the cache is dropped: freeing a 10,000-file
    /// COPY's inputs is ~20,000 frees on the build's critical path, and a command about to exit forgets
    /// the cache instead (`build::exec::Scratch`).
    set_aside: std::sync::Mutex<Vec<Box<dyn std::any::Any + Send>>>,
    /// Writes for later builds (the last inputs; a layer's entry index), off the build's
    /// critical path.
    behind: super::behind::WriteBehind,
    /// The last-inputs files with a write still queued in `behind`: a read of one waits
    /// for it (a read of another, as a RUN after a COPY makes, does not).
    writing: Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>>,
}

impl BuildCache {
    pub fn new(root: &Path) -> BuildCache {
        BuildCache {
            dir: root.join("cache"),
            last_read: std::sync::Mutex::new(None),
            reading: std::sync::Mutex::new(None),
            set_aside: std::sync::Mutex::new(Vec::new()),
            behind: Default::default(),
            writing: Default::default(),
        }
    }

    /// Waits for a queued write of the last-inputs file `path`, if there is one.
    fn settle_inputs(&self, path: &Path) {
        if self
            .writing
            .lock()
            .expect("inputs writing lock")
            .contains(path)
        {
            self.behind.settle();
        }
    }

    /// The build's writes for later builds (see `build::behind`).
    pub fn behind(&self) -> &super::behind::WriteBehind {
        &self.behind
    }
    fn entry_path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join("steps").join(format!("{}.json", key.hex()))
    }
    fn inputs_path(&self, position: &str) -> PathBuf {
        self.dir.join("last").join(format!(
            "{}.json",
            digest::of_bytes(position.as_bytes()).digest()
        ))
    }
    pub fn stat_dir(&self) -> PathBuf {
        self.dir.join("stat")
    }
    pub fn mounts_dir(&self) -> PathBuf {
        self.dir.join("mounts")
    }
    /// The directory of `RUN --mount=type=cache,id=ID` (named by the id's sha256).
    pub fn mount_dir(&self, id: &str) -> PathBuf {
        self.mounts_dir()
            .join(crate::digest::of_bytes(id.as_bytes()).digest())
    }
    fn stamp_path(&self, stamp: &SelectionStamp) -> PathBuf {
        self.dir.join("stamps").join(stamp.0.digest())
    }

    /// The key a COPY step had when its selection last looked exactly like `stamp`.
    pub fn key_by_stamp(&self, stamp: &SelectionStamp) -> Option<CacheKey> {
        let text = fs::read_to_string(self.stamp_path(stamp)).ok()?;
        digest::parse(text.trim()).map(CacheKey)
    }
    /// Remembers `key` for `stamp` (callers only do so for settled selections).
    pub fn remember_stamp(&self, stamp: &SelectionStamp, key: &CacheKey) {
        let p = self.stamp_path(stamp);
        if self.key_by_stamp(stamp).as_ref() != Some(key) {
            let _ = hostfs::write_atomic(&p, key.0.to_string().as_bytes());
        }
    }

    /// The stored result for `key`, marking it used. Only an entry written with the
    /// current `KEY_VERSION` counts: one of another format is a miss, never a stale hit.
    pub fn get<T: for<'de> Deserialize<'de>>(&self, key: &CacheKey) -> Option<T> {
        use std::io::Read;
        let p = self.entry_path(key);
        let mut f = fs::File::open(&p).ok()?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        if v.get(ENTRY_VERSION).and_then(|x| x.as_u64()) != Some(KEY_VERSION.into()) {
            return None;
        }
        let v = serde_json::from_value(v).ok()?;
        // "Used" only matters at `KEEP_UNUSED`'s scale: an entry touched within the last
        // `TOUCH_EVERY` is not touched again (a no-op rebuild wrote every hit's mtime).
        let fresh = f
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < TOUCH_EVERY);
        if !fresh {
            let _ = hostfs::open_with(fs::File::options().write(true), &p)
                .and_then(|f| f.set_modified(SystemTime::now()));
        }
        Some(v)
    }

    /// Stores the result for `key` (atomically), marked with `KEY_VERSION`.
    pub fn put<T: Serialize>(&self, key: &CacheKey, value: &T) -> std::io::Result<()> {
        let mut v = serde_json::to_value(value).expect("cache entries serialise");
        if let Some(m) = v.as_object_mut() {
            m.insert(ENTRY_VERSION.into(), KEY_VERSION.into());
        }
        hostfs::write_atomic(
            &self.entry_path(key),
            &serde_json::to_vec(&v).expect("cache entries serialise"),
        )
    }

    /// The inputs the previous build used at `position` (Dockerfile, stage and step).
    pub fn last_inputs(&self, position: &str) -> Option<Arc<LastInputs>> {
        let mut memo = self.last_read.lock().expect("inputs memo lock");
        if let Some((_, found)) = memo.as_ref().filter(|(p, _)| p == position) {
            return found.clone();
        }
        let ahead = {
            let mut slot = self.reading.lock().expect("inputs reading lock");
            match slot.as_ref() {
                Some((p, _)) if p == position => slot.take().map(|(_, reading)| reading),
                _ => None,
            }
        };
        // A thread that panicked read nothing: they are read here, as without it.
        let found = match ahead.map(std::thread::JoinHandle::join) {
            Some(Ok(found)) => found,
            _ => {
                let path = self.inputs_path(position);
                self.settle_inputs(&path);
                read_inputs(&path)
            }
        };
        let before = memo.replace((position.to_string(), found.clone()));
        self.set_aside_memo(before);
        found
    }

    /// Starts reading and parsing the last inputs at `position` on a thread of its own,
    /// for a caller that will ask `last_inputs` for them after other work (a COPY whose
    /// stamp missed computes its key's file entries meanwhile: ~1 MB of JSON parsed and
    /// hashed off the main thread). Nothing happens when they are read already or no
    /// thread can be started: `last_inputs` then reads them itself, as without this call.
    pub fn read_inputs_ahead(&self, position: &str) {
        let memo = self.last_read.lock().expect("inputs memo lock");
        let mut slot = self.reading.lock().expect("inputs reading lock");
        let known = |p: &String| p == position;
        if memo.as_ref().is_some_and(|(p, _)| known(p))
            || slot.as_ref().is_some_and(|(p, _)| known(p))
        {
            return;
        }
        let path = self.inputs_path(position);
        self.settle_inputs(&path);
        let spawned = std::thread::Builder::new()
            .name("keel-last-inputs".into())
            .spawn(move || read_inputs(&path));
        if let Ok(reading) = spawned {
            // A read-ahead of another position nobody asked for is dropped (detached).
            *slot = Some((position.to_string(), reading));
        }
    }

    /// Records `inputs` as the last ones at `position`, as their canonical JSON.
    pub fn record_inputs(&self, position: &str, inputs: &Keyed) {
        // A read-ahead of the file about to be replaced must not be taken for it later.
        let ahead = self.reading.lock().expect("inputs reading lock").take();
        if let Some((_, reading)) = ahead {
            let _ = reading.join();
        }
        let before = self.last_read.lock().expect("inputs memo lock").take();
        self.set_aside_memo(before);
        // ~1 MB for a 10,000-file COPY: not renamed over the old file (see `replace`); an
        // empty file after a crash reads as no previous build. Written behind: only a later
        // build reads it (this one's reads wait for it).
        let (path, text) = (self.inputs_path(position), inputs.canonical.clone());
        let writing = Arc::clone(&self.writing);
        writing
            .lock()
            .expect("inputs writing lock")
            .insert(path.clone());
        self.behind.submit(move || {
            let _ = hostfs::replace(&path, &text);
            writing.lock().expect("inputs writing lock").remove(&path);
        });
    }

    /// Holds a step's large inputs (its `Keyed` key inputs, what it read of its files)
    /// until the cache is dropped (see `set_aside`).
    pub fn set_aside(&self, done_with: impl std::any::Any + Send) {
        self.set_aside
            .lock()
            .expect("set-aside inputs lock")
            .push(Box::new(done_with));
    }

    fn set_aside_memo(&self, memo: Option<(String, Option<Arc<LastInputs>>)>) {
        if let Some((_, Some(inputs))) = memo {
            self.set_aside(inputs);
        }
    }

    /// Digests the live cache entries reference (they keep their layers through gc).
    /// With `prune`, entries unused for `keep` are deleted first.
    pub fn roots(&self, prune: Option<Duration>) -> Vec<Digest> {
        let mut out = Vec::new();
        // Stamps are only shortcuts to keys; those of pruned entries are dropped with them.
        if let (Some(keep), Ok(stamps)) = (prune, fs::read_dir(self.dir.join("stamps"))) {
            for e in stamps.flatten() {
                let age = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok());
                if age.is_some_and(|a| a >= keep) {
                    let _ = hostfs::remove_file(e.path());
                }
            }
        }
        let Ok(entries) = fs::read_dir(self.dir.join("steps")) else {
            return out;
        };
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if let (Some(keep), Some(age)) = (prune, old) {
                if age >= keep {
                    let _ = hostfs::remove_file(e.path());
                    continue;
                }
            }
            if let Ok(bytes) = fs::read(e.path()) {
                collect_digests(
                    &serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
                    &mut out,
                );
            }
        }
        out
    }
}

impl BuildCache {
    /// The layer stacks (diff_ids, bottom first) of every cache entry, so that their
    /// unpacked layers survive a storage prune.
    pub fn layer_stacks(&self) -> Vec<Vec<Digest>> {
        let Ok(entries) = fs::read_dir(self.dir.join("steps")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                serde_json::from_slice::<serde_json::Value>(&fs::read(e.path()).ok()?).ok()
            })
            .map(|v| {
                v["layers"]
                    .as_array()
                    .map(|ls| {
                        ls.iter()
                            .filter_map(|l| l["diff_id"].as_str().and_then(digest::parse))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// Every `"digest": "sha256:…"` value in a JSON document.
fn collect_digests(v: &serde_json::Value, out: &mut Vec<Digest>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == "digest" {
                    if let Some(d) = x.as_str().and_then(digest::parse) {
                        out.push(d);
                    }
                }
                collect_digests(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_digests(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> KeyInputs {
        KeyInputs {
            version: KEY_VERSION,
            parent: "sha256:aa".into(),
            instruction: serde_json::json!({"copy": {"srcs": ["src/"], "dest": "/app"}}),
            args: BTreeMap::from([("VERSION".into(), "1".into())]),
            env: BTreeMap::new(),
            files: BTreeMap::from([
                ("/app/main.rs".into(), "file 644 0:0 sha256:01".into()),
                ("/app/lib.rs".into(), "file 644 0:0 sha256:02".into()),
            ]),
        }
    }

    /// `diff_keys`' old definition (lookups in the other map, then sorted and
    /// deduplicated), kept to check the merge walk and `explain_change` against.
    fn by_lookup(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
        let mut out: Vec<String> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .collect();
        out.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
        out.sort();
        out.dedup();
        out
    }

    /// The merge walk against the definition it replaced (lookups in the other map,
    /// then sorted and deduplicated), over maps that share, change, add and drop keys.
    #[test]
    fn diff_keys_is_every_key_whose_value_differs_sorted() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let cases = [
            map(&[]),
            map(&[("a", "1")]),
            map(&[("a", "2")]),
            map(&[("a", "1"), ("b", "1"), ("d/e", "1")]),
            map(&[("a", "1"), ("c", "1"), ("d/e", "2"), ("z", "")]),
            map(&[("b", "1"), ("d", "1"), ("d/e", "1"), ("d-e", "1")]),
        ];
        for a in &cases {
            for b in &cases {
                assert_eq!(
                    diff_keys(pairs(a), pairs(b)),
                    by_lookup(a, b),
                    "{a:?} {b:?}"
                );
            }
        }
    }

    /// `inputs` as the last inputs a later build reads back.
    fn last_of(inputs: &KeyInputs) -> LastInputs {
        LastInputs::read(&inputs.clone().keyed().canonical).unwrap()
    }

    /// The definition `explain_change` had when the last inputs were parsed into
    /// `KeyInputs` (maps of owned strings), kept to check the one-buffer reading against.
    fn explain_by_maps(now: &KeyInputs, before: Option<&KeyInputs>) -> String {
        let diff = by_lookup;
        let Some(b) = before.filter(|b| b.version == now.version) else {
            return "not built before".into();
        };
        if b.parent != now.parent {
            return "parent step changed".into();
        }
        if b.instruction != now.instruction {
            return "instruction changed".into();
        }
        if let Some(k) = diff(&b.args, &now.args).first() {
            return format!("build arg {k} changed");
        }
        if let Some(k) = diff(&b.env, &now.env).first() {
            return format!("{k} changed");
        }
        let changed = diff(&b.files, &now.files);
        match changed.len() {
            0 => "cache entry missing (pruned by `keel gc --cache`?)".into(),
            1 => format!("{} changed", changed[0]),
            n => format!("{} and {} other files changed", changed[0], n - 1),
        }
    }

    /// Last inputs read into one buffer explain every change as the parsed maps did, and
    /// give the same parent, instruction, key and files: over inputs that differ in each
    /// part (files with escapes and non-ASCII names, added, dropped and changed, one or
    /// many; another version), each read back both from the canonical record and from an
    /// older keel's (fields in declaration order).
    #[test]
    fn last_inputs_in_one_buffer_explain_what_the_parsed_maps_explained() {
        let mut cases = vec![inputs()];
        let mut v = inputs();
        v.files
            .insert("/app/ü \"x\"\\\n".into(), "file 600 1:2 sha256:03".into());
        cases.push(v.clone());
        v.files.remove("/app/lib.rs");
        cases.push(v.clone());
        for i in 0..50 {
            v.files.insert(
                format!("/app/d/f{i:03}"),
                format!("file 644 0:0 sha256:{i}"),
            );
        }
        cases.push(v.clone());
        v.files
            .insert("/app/d/f007".into(), "file 644 0:0 sha256:x".into());
        cases.push(v.clone());
        v.files.insert("/app/d/f049".into(), "dir 755 0:0".into());
        cases.push(v);
        let mut v = inputs();
        v.args.insert("A".into(), "1".into());
        cases.push(v.clone());
        v.env.insert("workdir".into(), "/w".into());
        cases.push(v);
        let mut v = inputs();
        v.instruction = serde_json::json!({"copy": {"srcs": ["src/"], "dest": "/b"}});
        cases.push(v);
        let mut v = inputs();
        v.parent = "sha256:\u{e9}".into();
        cases.push(v);
        let mut v = inputs();
        v.version = 4;
        cases.push(v);
        let dir = tempfile::tempdir().unwrap();
        let old_form = dir.path().join("old.json");
        for before in &cases {
            fs::write(&old_form, serde_json::to_vec(before).unwrap()).unwrap();
            let older = LastInputs::read(&fs::read(&old_form).unwrap()).unwrap();
            for last in [last_of(before), older] {
                assert_eq!(last.key(), &before.key());
                assert_eq!(last.parent(), before.parent);
                assert_eq!(last.instruction(), &before.instruction);
                assert!(last.files.iter().eq(pairs(&before.files)));
                for now in &cases {
                    assert_eq!(
                        now.explain_change(Some(&last)),
                        explain_by_maps(now, Some(before)),
                        "{before:?} -> {now:?}"
                    );
                }
            }
        }
    }

    /// A record whose files are out of order or name one twice (not one keel writes)
    /// reads as the map parsing it gave: in key order, the last value of a repeated key.
    #[test]
    fn last_inputs_out_of_order_read_as_a_map() {
        let text = br#"{"args":{},"env":{},"files":{"b":"1","a":"2","b":"3","\u00e9":"4"},"instruction":null,"parent":"p","version":5}"#;
        let want: KeyInputs = serde_json::from_slice(text).unwrap();
        let last = LastInputs::read(text).unwrap();
        assert!(last.files.iter().eq(pairs(&want.files)));
        assert_eq!(last.files.iter().count(), 3);
        assert!(LastInputs::read(br#"{"args":{},"env":{},"files":{"a":1}}"#).is_none());
    }

    #[test]
    fn keys_change_exactly_with_their_inputs() {
        let a = inputs();
        assert_eq!(a.key(), inputs().key());
        let mut b = inputs();
        b.files
            .insert("/app/main.rs".into(), "file 644 0:0 sha256:03".into());
        assert_ne!(a.key(), b.key());
        assert_eq!(b.explain_change(Some(&last_of(&a))), "/app/main.rs changed");
        let mut c = inputs();
        c.args.insert("VERSION".into(), "2".into());
        assert_eq!(
            c.explain_change(Some(&last_of(&a))),
            "build arg VERSION changed"
        );
        let mut d = inputs();
        d.parent = "sha256:bb".into();
        assert_eq!(d.explain_change(Some(&last_of(&a))), "parent step changed");
        assert_eq!(a.explain_change(None), "not built before");
        let mut old = inputs();
        old.version = 1;
        assert_ne!(old.key(), a.key(), "the version is part of the key");
        assert_eq!(a.explain_change(Some(&last_of(&old))), "not built before");
    }

    /// The key streamed into the hasher is the digest of `canonical_json`, whatever the
    /// inputs hold (escapes, non-ASCII, nested objects in the instruction).
    #[test]
    fn the_streamed_key_is_the_canonical_jsons_digest() {
        let mut a = inputs();
        a.instruction = serde_json::json!({"run": {"z": [1, {"b": "\"q\"", "a": null}], "argv": ["sh", "-c", "é\n\t"]}});
        a.env.insert("PATH".into(), "/bin:\\x\u{1}".into());
        a.files
            .insert("/app/ü \"x\"".into(), "file 600 1:2 sha256:03".into());
        for v in [inputs(), a] {
            let canonical = crate::store::canonical_json(&v);
            let keyed = v.clone().keyed();
            assert_eq!((&keyed.canonical, keyed.key()), (&canonical, &v.key()));
            assert_eq!(
                v.key().0,
                digest::of_bytes(&canonical),
                "{}",
                String::from_utf8_lossy(&canonical)
            );
        }
    }

    /// The last inputs are stored as their canonical JSON, so their key is the digest of
    /// the bytes read; a record of an older keel (fields in declaration order) reads back
    /// with its key computed, the same key.
    #[test]
    fn recorded_inputs_read_back_with_their_key_in_either_form() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(dir.path());
        let a = inputs();
        cache.record_inputs("step", &a.clone().keyed());
        let read = cache.last_inputs("step").unwrap();
        assert_eq!((read.key(), read.parent()), (&a.key(), a.parent.as_str()));
        assert!(read.files.iter().eq(pairs(&a.files)));
        let old = cache.inputs_path("old step");
        fs::create_dir_all(old.parent().unwrap()).unwrap();
        let text = serde_json::to_vec(&a).unwrap();
        assert!(text.starts_with(br#"{"version":"#), "declaration order");
        fs::write(&old, text).unwrap();
        let read = cache.last_inputs("old step").unwrap();
        assert_eq!((read.key(), read.parent()), (&a.key(), a.parent.as_str()));
        assert!(read.files.iter().eq(pairs(&a.files)));
        fs::write(&old, b"{").unwrap();
        let cache = BuildCache::new(dir.path());
        assert!(cache.last_inputs("old step").is_none());
    }

    /// What `last_inputs` gives after `read_inputs_ahead`, against a fresh cache reading
    /// the same file itself: recorded, missing, older-keel and unreadable records; a
    /// read-ahead of another position; asked twice; and a record written after a
    /// read-ahead of its position (the new record is what is read).
    #[test]
    fn inputs_read_ahead_are_the_inputs_read_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let seen = |i: Option<Arc<LastInputs>>| {
            i.map(|i| {
                let files: Vec<(String, String)> =
                    i.files.iter().map(|(k, v)| (k.into(), v.into())).collect();
                (
                    i.key().clone(),
                    i.parent().to_string(),
                    i.instruction().clone(),
                    files,
                )
            })
        };
        let fresh = |position: &str| seen(BuildCache::new(dir.path()).last_inputs(position));
        let (a, mut b) = (inputs(), inputs());
        b.files
            .insert("/app/new".into(), "File 644 0:0 sha256:03".into());
        let writer = BuildCache::new(dir.path());
        writer.record_inputs("a", &a.clone().keyed());
        writer.behind().finish(); // written behind: done once the writer's build ends
        let older = writer.inputs_path("older");
        fs::write(&older, serde_json::to_vec(&b).unwrap()).unwrap();
        fs::write(writer.inputs_path("broken"), b"{").unwrap();
        for position in ["a", "older", "broken", "missing"] {
            let cache = BuildCache::new(dir.path());
            cache.read_inputs_ahead(position);
            cache.read_inputs_ahead(position); // a second call starts nothing new
            assert_eq!(
                seen(cache.last_inputs(position)),
                fresh(position),
                "{position}"
            );
            assert_eq!(
                seen(cache.last_inputs(position)),
                fresh(position),
                "{position}"
            );
            let other = BuildCache::new(dir.path());
            other.read_inputs_ahead("missing");
            assert_eq!(
                seen(other.last_inputs(position)),
                fresh(position),
                "{position}"
            );
        }
        assert!(fresh("a").is_some() && fresh("older").is_some());
        assert!(fresh("broken").is_none() && fresh("missing").is_none());
        let cache = BuildCache::new(dir.path());
        cache.read_inputs_ahead("a");
        cache.record_inputs("a", &b.clone().keyed());
        let read = cache.last_inputs("a").unwrap();
        assert_eq!(read.key(), &b.key());
        assert_eq!(seen(Some(read)), fresh("a"));
    }

    #[test]
    fn keys_are_digests_of_canonical_json() {
        let a = inputs();
        let text = r#"{"args":{"VERSION":"1"},"env":{},"files":{"/app/lib.rs":"file 644 0:0 sha256:02","/app/main.rs":"file 644 0:0 sha256:01"},"instruction":{"copy":{"dest":"/app","srcs":["src/"]}},"parent":"sha256:aa","version":5}"#;
        assert_eq!(a.key().0, digest::of_bytes(text.as_bytes()));
    }

    #[test]
    fn entries_of_another_format_never_hit() {
        let d = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(d.path());
        let key = inputs().key();
        // What keel wrote before entries were versioned: the bare value.
        hostfs::write_atomic(&cache.entry_path(&key), br#"{"layers": []}"#).unwrap();
        assert_eq!(cache.get::<serde_json::Value>(&key), None);
        cache.put(&key, &serde_json::json!({"layers": []})).unwrap();
        assert!(cache.get::<serde_json::Value>(&key).is_some());
    }

    #[test]
    fn selection_stamps_change_with_any_stat_field_and_input() {
        use crate::context::{FileKind, FileStamp};
        let file = ContextFile {
            rel: "src/a".into(),
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 3,
            link_target: None,
            stamp: FileStamp {
                dev: 1,
                ino: 2,
                size: 3,
                mtime_ns: 4,
                ctime_ns: 5,
            },
        };
        let stamp =
            |inputs: &[&str], f: &ContextFile| SelectionStamp::of(inputs, [("src", "a", f)]);
        let (base, newest) = stamp(&["COPY src /app"], &file);
        assert_eq!(newest, 5);
        assert_eq!(base, stamp(&["COPY src /app"], &file).0);
        assert_ne!(base, stamp(&["COPY src /srv"], &file).0);
        let variants: [fn(&mut ContextFile); 7] = [
            |f| f.stamp.dev += 1,
            |f| f.stamp.ino += 1,
            |f| f.stamp.size += 1,
            |f| f.stamp.mtime_ns += 1,
            |f| f.stamp.ctime_ns += 1,
            |f| f.mode = 0o755,
            |f| f.uid = 1000,
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut g = file.clone();
            change(&mut g);
            assert_ne!(base, stamp(&["COPY src /app"], &g).0, "variant {i}");
        }
        let d = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(d.path());
        assert_eq!(cache.key_by_stamp(&base), None);
        cache.remember_stamp(&base, &inputs().key());
        assert_eq!(cache.key_by_stamp(&base), Some(inputs().key()));
    }

    /// The stamp hashed in chunks is the stamp hashed field by field (as it was before
    /// the buffer): stamps remembered by an older keel still hit.
    #[test]
    fn a_chunked_stamp_equals_the_field_by_field_one() {
        use crate::context::{FileKind, FileStamp};
        use sha2::Digest as _;
        let files: Vec<ContextFile> = (0..3000u64)
            .map(|i| ContextFile {
                rel: format!("src/d{:03}/{}-{i}", i % 7, "x".repeat((i % 40) as usize)),
                kind: [FileKind::File, FileKind::Dir, FileKind::Symlink][(i % 3) as usize],
                mode: 0o644 + i as u32,
                uid: i as u32,
                gid: 7,
                size: i,
                link_target: (i % 3 == 2).then(|| format!("../t{i}").into()),
                stamp: FileStamp {
                    dev: 1,
                    ino: i,
                    size: i,
                    mtime_ns: i as i128 * 1_000_003,
                    ctime_ns: -(i as i128),
                },
            })
            .collect();
        let inputs = ["/ctx", "sha256:aa", "{\"copy\":{}}", ""];
        let named = || files.iter().map(|f| ("src", &f.rel[4..], f));
        let (got, newest) = SelectionStamp::of(&inputs, named());
        let mut h = sha2::Sha256::new();
        for i in inputs {
            h.update(i.as_bytes());
            h.update([0]);
        }
        for (name, rel, f) in named() {
            for part in [name.as_bytes(), b":", rel.as_bytes(), b"\0"] {
                h.update(part);
            }
            h.update([f.kind as u8]);
            for n in [f.mode, f.uid, f.gid] {
                h.update(n.to_le_bytes());
            }
            for n in [f.stamp.dev, f.stamp.ino, f.stamp.size] {
                h.update(n.to_le_bytes());
            }
            for n in [f.stamp.mtime_ns, f.stamp.ctime_ns] {
                h.update(n.to_le_bytes());
            }
            if let Some(t) = &f.link_target {
                h.update(t.as_os_str().as_encoded_bytes());
            }
            h.update([0]);
        }
        assert_eq!(got.0, digest::from_hasher(h));
        assert_eq!(newest, 2999 * 1_000_003);
    }

    #[test]
    fn entries_round_trip_and_name_their_layers_as_gc_roots() {
        let d = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(d.path());
        let key = inputs().key();
        let layer = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        cache
            .put(&key, &serde_json::json!({"layers": [{"digest": layer}]}))
            .unwrap();
        let back: serde_json::Value = cache.get(&key).unwrap();
        assert_eq!(back["layers"][0]["digest"], layer);
        assert_eq!(cache.roots(None).len(), 1);
        assert_eq!(
            cache.roots(Some(Duration::ZERO)).len(),
            0,
            "pruning with zero age drops everything"
        );
    }
}
