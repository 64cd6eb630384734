//! The fuzz harness: seed corpora, a mutator, a time budget, and the limits every target
//! runs under (time per case, memory in total).
//!
//! Each input is a seed from `testdata/fuzz/<target>/` (plus the conformance files the
//! target names) changed by a few random edits driven by arbtest's `Unstructured` bytes,
//! or plain random bytes. arbtest prints the seed of a failing case (replay it with
//! `ARBTEST_SEED=0x… cargo test --test fuzz <target>`); the harness also writes the failing
//! input to `target/tmp/fuzz-failures/`, ready to be added to the corpus as a regression.
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use arbitrary::Unstructured;

/// Number of fuzz targets sharing the `KEEL_FUZZ_SECS` budget.
const TARGETS: u64 = 8;
/// Default total budget: small, so the normal test command stays quick.
const DEFAULT_SECS: f64 = 12.0;
/// A case slower than this fails (debug build; the inputs are at most a few KiB).
const CASE_SLOW: Duration = Duration::from_secs(5);
/// A case still running after this is a hang: the watchdog prints it and aborts.
const CASE_HANG: Duration = Duration::from_secs(60);
/// Live heap the whole fuzz binary may use; above it the watchdog aborts.
const HEAP_LIMIT: usize = 1 << 30;
/// One allocation larger than this is refused (the process aborts, naming the size).
const ALLOC_LIMIT: usize = 256 << 20;

/// Counts live heap bytes, so a memory bomb is caught instead of taking the machine down.
pub struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The case each thread is running: target, start time, input.
type Running = HashMap<ThreadId, (&'static str, Instant, Vec<u8>)>;

fn running() -> &'static Mutex<Running> {
    static RUNNING: OnceLock<Mutex<Running>> = OnceLock::new();
    static WATCHDOG: OnceLock<()> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        std::thread::spawn(watchdog);
    });
    RUNNING.get_or_init(Default::default)
}

/// Aborts the process on a hung case or a runaway heap, printing what was running: a
/// test that never ends would hold CI for its whole time limit.
fn watchdog() {
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let live = LIVE.load(Ordering::Relaxed);
        let cases = running().lock().unwrap_or_else(|e| e.into_inner());
        let hung = cases.values().find(|c| c.1.elapsed() > CASE_HANG);
        if hung.is_none() && live <= HEAP_LIMIT {
            continue;
        }
        eprintln!("fuzz: aborting: live heap {live} bytes (limit {HEAP_LIMIT}); cases running:");
        for (target, started, input) in cases.values() {
            eprintln!(
                "  {target}: {:?} on {}",
                started.elapsed(),
                save_failure(target, input)
            );
        }
        std::process::abort();
    }
}

/// Writes a failing input where it can be picked up for the corpus; returns its path.
fn save_failure(target: &str, input: &[u8]) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let name = format!("{target}-{:016x}", fnv(input));
    let path = dir.join(name);
    match std::fs::write(&path, input) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("<not saved: {e}> {:?}", String::from_utf8_lossy(input)),
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Marks one case as running; on drop during a panic it saves and names the input.
struct Case {
    target: &'static str,
    started: Instant,
}

impl Case {
    fn start(target: &'static str, input: &[u8]) -> Case {
        let started = Instant::now();
        running().lock().unwrap_or_else(|e| e.into_inner()).insert(
            std::thread::current().id(),
            (target, started, input.to_vec()),
        );
        Case { target, started }
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let entry = running()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&std::thread::current().id());
        if std::thread::panicking() {
            if let Some((_, _, input)) = entry {
                eprintln!(
                    "fuzz target {}: failing input saved to {}",
                    self.target,
                    save_failure(self.target, &input)
                );
            }
        }
    }
}

/// Runs `property` on one input under the harness's limits.
pub fn check(target: &'static str, input: &[u8], property: &dyn Fn(&[u8])) {
    let case = Case::start(target, input);
    property(input);
    let took = case.started.elapsed();
    assert!(
        took < CASE_SLOW,
        "{target}: one case took {took:?} (limit {CASE_SLOW:?})"
    );
}

/// Every file under `testdata/fuzz/<target>/` and under `extra` (paths relative to the
/// repository), sorted by path so runs are reproducible.
pub fn seeds(target: &str, extra: &[&str]) -> Vec<Vec<u8>> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let own = repo.join("testdata/fuzz").join(target);
    assert!(own.is_dir(), "{} is missing", own.display());
    collect(&own, &mut files);
    for e in extra {
        collect(&repo.join(e), &mut files);
    }
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect()
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            collect(&e.unwrap().path(), out);
        }
    } else if path.is_file() && path.file_name().is_some_and(|n| n != "README.md") {
        out.push(path.to_path_buf());
    }
}

/// Runs every seed unchanged: the corpus is also the regression suite.
pub fn run_corpus(target: &'static str, seeds: &[Vec<u8>], property: &dyn Fn(&[u8])) {
    assert!(!seeds.is_empty(), "{target}: empty corpus");
    for s in seeds {
        check(target, s, property);
    }
}

/// The time one target may search: `KEEL_FUZZ_SECS` (total for all targets) shared out.
pub fn budget() -> Duration {
    let total = std::env::var("KEEL_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(DEFAULT_SECS);
    Duration::from_secs_f64(total / TARGETS as f64)
}

/// Searches for a failing input for the target's budget: mutated seeds and random bytes.
pub fn fuzz(
    target: &'static str,
    seeds: &[Vec<u8>],
    dict: &[&[u8]],
    max_len: usize,
    property: &dyn Fn(&[u8]),
) {
    let mut cases = 0u64;
    arbtest::arbtest(|u| {
        let input = mutate(u, seeds, dict, max_len)?;
        check(target, &input, property);
        cases += 1;
        Ok(())
    })
    .size_max(1 << 14)
    .budget(budget())
    .run();
    eprintln!("fuzz target {target}: {cases} cases");
}

/// One input: a seed (or nothing) with up to 8 edits, or random bytes.
pub fn mutate(
    u: &mut Unstructured,
    seeds: &[Vec<u8>],
    dict: &[&[u8]],
    max_len: usize,
) -> arbitrary::Result<Vec<u8>> {
    if u.ratio(1, 10)? || seeds.is_empty() {
        let n = u.int_in_range(0..=max_len.min(512))?;
        return Ok(u.bytes(n.min(u.len()))?.to_vec());
    }
    let mut data = u.choose(seeds)?.clone();
    for _ in 0..u.int_in_range(0..=8)? {
        edit(u, &mut data, seeds, dict)?;
    }
    data.truncate(max_len);
    Ok(data)
}

fn edit(
    u: &mut Unstructured,
    data: &mut Vec<u8>,
    seeds: &[Vec<u8>],
    dict: &[&[u8]],
) -> arbitrary::Result<()> {
    let at = |u: &mut Unstructured, len: usize| u.int_in_range(0..=len);
    match u.int_in_range(0..=7)? {
        0 if !data.is_empty() => {
            let i = at(u, data.len() - 1)?;
            data[i] ^= 1 << u.int_in_range(0..=7)?;
        }
        1 => {
            let i = at(u, data.len())?;
            data.insert(i, u.arbitrary()?);
        }
        2 if !dict.is_empty() => {
            let i = at(u, data.len())?;
            let word = u.choose(dict)?;
            data.splice(i..i, word.iter().copied());
        }
        3 if !data.is_empty() => {
            let i = at(u, data.len() - 1)?;
            let n = u.int_in_range(1..=(data.len() - i).min(64))?;
            data.drain(i..i + n);
        }
        4 if !data.is_empty() => {
            // Duplicate a run (repeated lines, nested brackets, long names).
            let i = at(u, data.len() - 1)?;
            let n = u.int_in_range(1..=(data.len() - i).min(64))?;
            let run: Vec<u8> = data[i..i + n].to_vec();
            for _ in 0..u.int_in_range(1..=8)? {
                data.splice(i..i, run.iter().copied());
            }
        }
        5 => {
            // Splice the tail of another seed onto a prefix of this one.
            let other = u.choose(seeds)?;
            let cut = at(u, data.len())?;
            let from = at(u, other.len())?;
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        6 => {
            let cut = at(u, data.len())?;
            data.truncate(cut);
        }
        _ if !data.is_empty() => {
            let i = at(u, data.len() - 1)?;
            data[i] = *u.choose(&[0u8, b'\n', b'\r', b' ', b'\\', b'"', 0xff, 0x80])?;
        }
        _ => {}
    }
    Ok(())
}
