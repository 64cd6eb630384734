//! The build context, read where it lies: resolving COPY/ADD sources (paths and globs)
//! to the files they select, after `.dockerignore`, refusing anything that escapes the
//! context directory. Content digests come from `StatIndex`, which remembers them by
//! (device, inode, size, mtime, ctime) so a no-op rebuild reads no file contents.
//!
//! `.dockerignore` is enforced here and fails closed: a file that cannot be read or
//! understood fails the build, and a path is judged by where its content really lies, so a
//! symlink (`link -> secret`, `alias -> .`) never reaches a file the rules keep out.
pub mod git;
mod stat_index;

use crate::sys::fs::EntryStat;
use crate::sys::rootfs::Kind;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

pub use stat_index::{is_settled, StatIndex};

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("build context {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("source {0:?} is outside the build context; copy the file into the context directory")]
    Escapes(String),
    #[error("source {0:?}: no such file or directory in the build context (or it is excluded by .dockerignore)")]
    NotFound(String),
    #[error("source {pattern:?}: invalid pattern: {why}")]
    BadPattern { pattern: String, why: String },
    #[error("reading {path} in the build context: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: {error}")]
    Dockerignore {
        path: PathBuf,
        line: usize,
        error: crate::dockerfile::ignore::IgnoreError,
    },
    #[error("reading {path}: {source}; make it a readable file (or remove it to ignore nothing)")]
    DockerignoreUnreadable { path: PathBuf, source: io::Error },
}

/// The context's `.dockerignore` as a path predicate (nothing ignored without one). Every
/// pattern is checked here, so the predicate itself cannot fail.
pub fn dockerignore(context_dir: &Path) -> Result<IgnoreFn, ContextError> {
    let path = context_dir.join(".dockerignore");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Box::new(|_: &str| false)),
        Err(source) => return Err(ContextError::DockerignoreUnreadable { path, source }),
    };
    let matcher = crate::dockerfile::ignore::Matcher::from_file(&bytes).map_err(|e| {
        ContextError::Dockerignore {
            path,
            line: e.line,
            error: e.error,
        }
    })?;
    Ok(Box::new(move |p: &str| matcher.matches(p)))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContextError {
    let path = path.to_path_buf();
    move |source| ContextError::Io { path, source }
}

/// What a context entry is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
}

/// One file, directory or symlink of the context, by its path relative to the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextFile {
    /// Path relative to the context root, `/`-separated.
    pub rel: String,
    pub kind: FileKind,
    /// Permission bits (incl. setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub link_target: Option<PathBuf>,
    /// What lstat said, for the digest cache (never part of a cache key).
    pub stamp: FileStamp,
}

/// The lstat fields that tell whether a file may have changed since it was hashed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileStamp {
    pub fn of(st: &EntryStat) -> FileStamp {
        FileStamp {
            dev: st.dev,
            ino: st.ino,
            size: st.size,
            mtime_ns: st.mtime_ns,
            ctime_ns: st.ctime_ns,
        }
    }

    /// The stamp of `path` itself (a symlink is not followed).
    pub fn lstat(path: &Path) -> io::Result<FileStamp> {
        crate::sys::fs::lstat(path).map(|st| FileStamp::of(&st))
    }
}

/// The files one COPY/ADD source selects: `top` is what the source named; for a
/// directory, `entries` are its contents (the directory itself is not copied).
#[derive(Debug, Clone)]
pub struct Selection {
    pub top: ContextFile,
    pub entries: Vec<ContextFile>,
    /// The name the source gave, used as the file name when copying a single file (it
    /// differs from `top.rel` when the source is a symlink inside the context).
    pub name: String,
}

impl Selection {
    /// Every file the selection reads, with its path relative to the selection root
    /// (for a single file: its own name).
    pub fn files(&self) -> Vec<(&ContextFile, &str)> {
        if self.top.kind == FileKind::Dir {
            let skip = if self.top.rel.is_empty() {
                0
            } else {
                self.top.rel.len() + 1
            };
            self.entries
                .iter()
                .map(|e| (e, e.rel.get(skip..).unwrap_or(&e.rel)))
                .collect()
        } else {
            vec![(&self.top, self.name.as_str())]
        }
    }
}

/// Decides whether a context-relative path is excluded (the .dockerignore matcher).
pub type IgnoreFn = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// A build context directory and its ignore rules.
pub struct Context {
    root: PathBuf,
    ignored: IgnoreFn,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Cleans a source path lexically: no leading `/` or `./`, `..` only while it stays inside.
pub fn clean_source(src: &str) -> Result<String, ContextError> {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(src).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::ParentDir if parts.pop().is_none() => {
                return Err(ContextError::Escapes(src.to_string()));
            }
            _ => {}
        }
    }
    Ok(parts.join("/"))
}

impl Context {
    pub fn new(root: &Path, ignored: IgnoreFn) -> Result<Context, ContextError> {
        let root = fs::canonicalize(root).map_err(io_err(root))?;
        if !root.is_dir() {
            return Err(ContextError::NotADirectory(root));
        }
        Ok(Context { root, ignored })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_ignored(&self, rel: &str) -> bool {
        !rel.is_empty() && (self.ignored)(rel)
    }

    fn entry(&self, rel: &str) -> Result<ContextFile, ContextError> {
        let path = self.root.join(rel);
        let st = crate::sys::fs::lstat(&path).map_err(io_err(&path))?;
        self.entry_from(rel.to_string(), || path.clone(), &st)
    }

    /// The entry at `rel` from its lstat result; `path` (the entry on disk) is only built
    /// when needed — for a symlink or an error — since a walk makes 10,000s of these.
    fn entry_from(
        &self,
        rel: String,
        path: impl FnOnce() -> PathBuf,
        st: &EntryStat,
    ) -> Result<ContextFile, ContextError> {
        let kind = match st.kind {
            Kind::Symlink => FileKind::Symlink,
            Kind::Dir => FileKind::Dir,
            Kind::File => FileKind::File,
            Kind::Other => {
                return Err(ContextError::Io {
                    path: path(),
                    source: io::Error::other(
                        "only regular files, directories and symlinks can be copied",
                    ),
                })
            }
        };
        let link_target = if kind == FileKind::Symlink {
            let path = path();
            Some(fs::read_link(&path).map_err(io_err(&path))?)
        } else {
            None
        };
        Ok(ContextFile {
            rel,
            kind,
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
            size: if kind == FileKind::File { st.size } else { 0 },
            link_target,
            stamp: FileStamp::of(st),
        })
    }

    /// Every non-ignored entry under `rel` (not including `rel`), sorted by path, without
    /// following symlinks. On a large context the walk is mostly stat calls, so directories
    /// are shared out between threads through one queue (whatever the tree's shape); the
    /// calling thread is one of them rather than waiting for the others.
    pub fn walk(&self, rel: &str) -> Result<Vec<ContextFile>, ContextError> {
        let start = if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        };
        let queue = DirQueue::new((start, rel.to_string()));
        let work = || {
            let mut found = Vec::new();
            while let Some((dir, rel)) = queue.next() {
                match self.read_dir(&dir, &rel, &mut found) {
                    Ok(subdirs) => queue.done(subdirs),
                    Err(e) => {
                        queue.abort();
                        return Err(e);
                    }
                }
            }
            // Each thread sorts what it found, at the same time as the others: the
            // parts are then merged (a 10,000-entry sort after the walk was ~1.5 ms of
            // the no-op rebuild, on one core).
            sort_by_path(&mut found);
            Ok(found)
        };
        let parts: Vec<Result<Vec<ContextFile>, ContextError>> = std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..walk_threads()).map(|_| scope.spawn(work)).collect();
            let mut parts = vec![work()];
            parts.extend(
                helpers
                    .into_iter()
                    .map(|h| h.join().expect("walker threads do not panic")),
            );
            parts
        });
        let parts = parts.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(merge_by_path(parts))
    }

    /// Reads one directory into `out` and returns its subdirectories. Entries are
    /// lstat'ed relative to the open directory (`sys::fs::list_lstat`), not by full path:
    /// a no-op rebuild is mostly these calls. A directory swapped for a symlink during the
    /// walk is refused, never followed.
    fn read_dir(
        &self,
        dir: &Path,
        rel: &str,
        out: &mut Vec<ContextFile>,
    ) -> Result<Vec<(PathBuf, String)>, ContextError> {
        let mut subdirs = Vec::new();
        let listed = crate::sys::fs::list_lstat(dir, |os_name, st| {
            let st = st.map_err(io_err(&dir.join(os_name)))?;
            let name = os_name.to_string_lossy();
            let mut child = String::with_capacity(rel.len() + 1 + name.len());
            if !rel.is_empty() {
                child.push_str(rel);
                child.push('/');
            }
            child.push_str(&name);
            // Entries below an ignored directory may still be re-included by a `!` rule,
            // so the walk goes on below it; only the entry itself is skipped.
            let keep = !self.is_ignored(&child);
            if st.kind == Kind::Dir {
                subdirs.push((dir.join(os_name), child.clone()));
            }
            if keep {
                out.push(self.entry_from(child, || dir.join(os_name), &st)?);
            }
            Ok(())
        });
        listed.map_err(io_err(dir))??;
        Ok(subdirs)
    }

    /// Resolves one COPY/ADD source (a path or a glob) to what it selects.
    pub fn select(&self, src: &str) -> Result<Vec<Selection>, ContextError> {
        let clean = clean_source(src)?;
        let tops: Vec<String> = if has_glob(&clean) {
            let glob = globset::GlobBuilder::new(&clean)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| ContextError::BadPattern {
                    pattern: src.to_string(),
                    why: e.to_string(),
                })?
                .compile_matcher();
            let depth = clean.split('/').count();
            let mut hits = Vec::new();
            for e in walkdir::WalkDir::new(&self.root)
                .min_depth(1)
                .max_depth(depth)
                .follow_links(false)
                .sort_by_file_name()
            {
                let e = e.map_err(|e| ContextError::Io {
                    path: self.root.clone(),
                    source: e.into(),
                })?;
                let rel = e
                    .path()
                    .strip_prefix(&self.root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                if glob.is_match(&rel) && !self.is_ignored(&rel) {
                    hits.push(rel);
                }
            }
            if hits.is_empty() {
                return Err(ContextError::NotFound(src.to_string()));
            }
            hits
        } else {
            if self.is_ignored(&clean) {
                return Err(ContextError::NotFound(src.to_string()));
            }
            vec![clean]
        };
        tops.into_iter().map(|t| self.select_one(src, &t)).collect()
    }

    fn select_one(&self, src: &str, rel: &str) -> Result<Selection, ContextError> {
        let path = self.root.join(rel);
        if fs::symlink_metadata(&path).is_err() {
            return Err(ContextError::NotFound(src.to_string()));
        }
        // A source that is itself a symlink is followed, but only to inside the context.
        let real = fs::canonicalize(&path).map_err(|_| ContextError::NotFound(src.to_string()))?;
        let real_rel = match real.strip_prefix(&self.root) {
            Ok(r) => r.to_string_lossy().into_owned(),
            Err(_) => return Err(ContextError::Escapes(src.to_string())),
        };
        // The source path may be allowed while the file it leads to is not: `link ->
        // secret`, `alias/key` with `alias -> data`, `self/.env` with `self -> .`. Docker
        // never sends the ignored file, so following the link finds nothing there either.
        if self.is_ignored(&real_rel) {
            return Err(ContextError::NotFound(src.to_string()));
        }
        let top = self.entry(&real_rel)?;
        let name = rel.rsplit('/').next().unwrap_or(rel).to_string();
        let entries = if top.kind == FileKind::Dir {
            self.walk(&real_rel)?
        } else {
            Vec::new()
        };
        Ok(Selection { top, entries, name })
    }

    /// The path on disk of a context-relative entry.
    pub fn path_of(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

/// Where the element `against` finds equal is in `sorted` (ordered as `against`
/// compares), trying `hint` first — the place after the last one found: lookups by
/// context path mostly come in the walk's order, and a cursor reads such a list in
/// sequence where a search or a hash map misses the cache — then a binary search.
pub fn find_from<T>(
    sorted: &[T],
    hint: usize,
    against: impl Fn(&T) -> std::cmp::Ordering,
) -> Option<usize> {
    match sorted.get(hint) {
        Some(t) if against(t).is_eq() => Some(hint),
        _ => sorted.binary_search_by(against).ok(),
    }
}

/// How many threads walk a context: the cores this process may use (at most 8). Asked
/// once per process: std reads the cgroup's CPU quota files for it.
fn walk_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(8)))
}

/// Sorts a walk's entries by path string. The order is found over indexes and then
/// applied by following its cycles: each entry moves about once, where sorting the
/// entries themselves moved their ~140 bytes again at every level of the sort.
fn sort_by_path(files: &mut [ContextFile]) {
    let mut order: Vec<u32> = (0..files.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| files[a as usize].rel.cmp(&files[b as usize].rel));
    // `order[k]` is the index of the entry that belongs at position k.
    let mut placed = vec![false; files.len()];
    for start in 0..files.len() {
        if placed[start] {
            continue;
        }
        let mut at = start;
        loop {
            placed[at] = true;
            let from = order[at] as usize;
            if from == start {
                break;
            }
            files.swap(at, from);
            at = from;
        }
    }
}

/// The walk's parts, each sorted by path, as one list sorted by path: merged two at a
/// time, the smallest parts first. With one part (one walk thread, or a single directory)
/// nothing is moved.
fn merge_by_path(mut parts: Vec<Vec<ContextFile>>) -> Vec<ContextFile> {
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    while parts.len() > 1 {
        let (b, a) = (
            parts.pop().unwrap_or_default(),
            parts.pop().unwrap_or_default(),
        );
        parts.push(merge_two(a, b));
        parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    }
    parts.pop().unwrap_or_default()
}

/// Two lists sorted by path as one (an entry of `a` first when two paths are equal,
/// which a walk never gives: each path is found once). Merged from the back into `a`
/// grown by `b`'s length, so no second buffer of the whole is allocated (a fresh one
/// cost ~150 page faults for a 10,000-entry walk).
fn merge_two(mut a: Vec<ContextFile>, mut b: Vec<ContextFile>) -> Vec<ContextFile> {
    let placeholder = || ContextFile {
        rel: String::new(),
        kind: FileKind::File,
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        link_target: None,
        stamp: FileStamp::default(),
    };
    // `a[..from]` are `a`'s entries not yet placed; `a[to]` the next place to fill.
    let mut from = a.len();
    a.resize_with(a.len() + b.len(), placeholder);
    let mut to = a.len();
    while let Some(last_b) = b.last() {
        to -= 1;
        if from > 0 && a[from - 1].rel > last_b.rel {
            from -= 1;
            a.swap(from, to);
        } else {
            a[to] = b.pop().expect("b has a last entry");
        }
    }
    a
}

/// Directories still to read, shared by the walker threads. The walk is over when the
/// queue is empty and no thread is reading (a reading thread may add more).
struct DirQueue {
    state: std::sync::Mutex<DirQueueState>,
    ready: std::sync::Condvar,
}

struct DirQueueState {
    dirs: Vec<(PathBuf, String)>,
    reading: usize,
    aborted: bool,
}

impl DirQueue {
    fn new(first: (PathBuf, String)) -> DirQueue {
        DirQueue {
            state: std::sync::Mutex::new(DirQueueState {
                dirs: vec![first],
                reading: 0,
                aborted: false,
            }),
            ready: std::sync::Condvar::new(),
        }
    }

    /// The next directory to read, or None when the walk is over.
    fn next(&self) -> Option<(PathBuf, String)> {
        let mut s = self.state.lock().expect("walk queue lock");
        loop {
            if s.aborted {
                return None;
            }
            if let Some(d) = s.dirs.pop() {
                s.reading += 1;
                return Some(d);
            }
            if s.reading == 0 {
                return None;
            }
            s = self.ready.wait(s).expect("walk queue lock");
        }
    }

    /// A directory was read; these are its subdirectories.
    fn done(&self, subdirs: Vec<(PathBuf, String)>) {
        let mut s = self.state.lock().expect("walk queue lock");
        s.reading -= 1;
        s.dirs.extend(subdirs);
        self.ready.notify_all();
    }

    /// A read failed: every thread stops.
    fn abort(&self) {
        self.state.lock().expect("walk queue lock").aborted = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_cleaned_and_escapes_refused() {
        let ok = [
            ("./a/b", "a/b"),
            ("/a", "a"),
            ("a/../b", "b"),
            (".", ""),
            ("a/", "a"),
        ];
        for (src, want) in ok {
            assert_eq!(clean_source(src).unwrap(), want, "{src}");
        }
        for bad in ["..", "../x", "a/../../x"] {
            assert!(
                matches!(clean_source(bad), Err(ContextError::Escapes(_))),
                "{bad}"
            );
        }
    }

    fn ctx_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Context) {
        let d = tempfile::tempdir().unwrap();
        for (p, body) in files {
            let path = d.path().join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, body).unwrap();
        }
        let c = Context::new(d.path(), Box::new(|p: &str| p.ends_with(".log"))).unwrap();
        (d, c)
    }

    /// A regular file's walk entry at `rel` (mode 0644, root's) of `size` bytes.
    fn file_entry(rel: &str, size: u64) -> ContextFile {
        ContextFile {
            rel: rel.to_string(),
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            link_target: None,
            stamp: FileStamp::default(),
        }
    }

    /// The index sort gives the order a plain sort by path gives, for any permutation
    /// (cycles of every length, entries already in place, names that prefix others).
    #[test]
    fn the_walk_is_sorted_by_path_whatever_order_it_was_found_in() {
        let names = [
            "a", "a-b", "a/b", "a/b/c", "a.txt", "b", "ä", "a/c", "", "z/y",
        ];
        let file = |rel: &str| file_entry(rel, rel.len() as u64);
        let mut want: Vec<ContextFile> = names.iter().map(|n| file(n)).collect();
        want.sort_by(|a, b| a.rel.cmp(&b.rel));
        // Every rotation and the reverse of every rotation, plus a fixed shuffle.
        let mut orders: Vec<Vec<usize>> = Vec::new();
        for r in 0..names.len() {
            let rot: Vec<usize> = (0..names.len()).map(|i| (i + r) % names.len()).collect();
            orders.push(rot.iter().rev().copied().collect());
            orders.push(rot);
        }
        orders.push(vec![3, 0, 9, 1, 2, 8, 7, 4, 6, 5]);
        for order in orders {
            let mut got: Vec<ContextFile> = order.iter().map(|&i| file(names[i])).collect();
            sort_by_path(&mut got);
            assert_eq!(got, want, "{order:?}");
        }
        sort_by_path(&mut []);
    }

    /// Parts sorted on their own and merged are the whole sorted at once: parts of every
    /// size (none, empty, one entry, interleaved, one after the other, names that prefix
    /// others or differ around `/`), and a real walk over a tree of such names equals its
    /// entries sorted by path.
    #[test]
    fn merged_parts_are_the_whole_sorted_by_path() {
        let names = [
            "a", "a-b", "a/b", "a/b/c", "a.txt", "b", "ä", "a/c", "z/y", "a0", "a/", "ab/c",
        ];
        let file = |rel: &str| file_entry(rel, 0);
        let mut want: Vec<ContextFile> = names.iter().map(|n| file(n)).collect();
        want.sort_by(|a, b| a.rel.cmp(&b.rel));
        for split in [
            vec![0, 12],
            vec![12],
            vec![1, 11],
            vec![3, 4, 5],
            vec![6, 0, 6],
            vec![1; 12],
        ] {
            for stride in [1, 5, 7] {
                let order: Vec<usize> = (0..12).map(|i| (i * stride) % 12).collect();
                let mut parts = Vec::new();
                let mut at = 0;
                for len in &split {
                    let mut part: Vec<ContextFile> = order[at..at + len]
                        .iter()
                        .map(|&i| file(names[i]))
                        .collect();
                    sort_by_path(&mut part);
                    parts.push(part);
                    at += len;
                }
                assert_eq!(merge_by_path(parts), want, "{split:?} {stride}");
            }
        }
        assert!(merge_by_path(Vec::new()).is_empty());

        let (_d, c) = ctx_with(&[
            ("a/b/c", ""),
            ("a-b/x", ""),
            ("a.b/y", ""),
            ("a0/z", ""),
            ("a/b-c", ""),
            ("b/c/d/e", ""),
            ("b/c.d", ""),
            ("top", ""),
        ]);
        let walked = c.walk("").unwrap();
        let mut sorted = walked.clone();
        sorted.sort_by(|a, b| a.rel.cmp(&b.rel));
        assert_eq!(walked, sorted);
        assert_eq!(walked.len(), 16, "every file and directory, once");
    }

    #[test]
    fn selection_follows_docker_rules() {
        let (d, c) = ctx_with(&[
            ("src/main.rs", "fn main(){}"),
            ("src/lib.rs", ""),
            ("src/debug.log", "x"),
            ("a.txt", "a"),
            ("b.txt", "b"),
            ("c.md", ""),
        ]);
        let s = c.select("src").unwrap();
        assert_eq!(s.len(), 1);
        let names: Vec<&str> = s[0].files().into_iter().map(|(_, n)| n).collect();
        assert_eq!(
            names,
            ["lib.rs", "main.rs"],
            "directory contents, ignored files skipped"
        );
        let g = c.select("*.txt").unwrap();
        assert_eq!(
            g.iter().map(|s| s.top.rel.as_str()).collect::<Vec<_>>(),
            ["a.txt", "b.txt"]
        );
        assert!(matches!(
            c.select("src/debug.log"),
            Err(ContextError::NotFound(_))
        ));
        assert!(matches!(c.select("nope"), Err(ContextError::NotFound(_))));
        assert!(matches!(c.select("*.none"), Err(ContextError::NotFound(_))));
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("evil")).unwrap();
        assert!(matches!(c.select("evil"), Err(ContextError::Escapes(_))));
        std::os::unix::fs::symlink("a.txt", d.path().join("good")).unwrap();
        assert_eq!(c.select("good").unwrap()[0].top.kind, FileKind::File);
    }
}
