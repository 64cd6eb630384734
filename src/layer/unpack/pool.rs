//! The unpacker's file writers: small regular files of a layer created, filled and given
//! their metadata on a few worker threads while the unpacker reads on (issue 14, the cold
//! 10,000-file build: creating inodes is most of an unpack, and the kernel creates them
//! in parallel across directories).
//!
//! A job is one file whose parent directory is already open (an in-root `Dir` handle the
//! unpacker resolved), whose name is new in the tree, and whose bytes were read from the
//! stream: the worker only runs `openat(O_CREAT | O_EXCL | O_NOFOLLOW)` relative to that
//! handle and writes through the new descriptor, so it never resolves a path. Everything
//! that could observe a file still in a worker's queue (a name given again, a hardlink, a
//! whiteout, a path through something not made by the stream) first waits for every job
//! to finish ([`Pool::drain`]): that is the unpacker's rule, kept in `unpack.rs`.
//!
//! A failed job is reported as its entry's error; when several fail, the one earliest in
//! the stream wins (what the serial unpack would have stopped at), and later jobs are
//! skipped. This module must not decide which entries are safe to hand over.
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::{write_new_file, FileMeta};
use crate::layer::LayerError;
use crate::sys::rootfs::Dir;

/// Files at most this large are handed to a worker (their bytes wait in memory); larger
/// ones are written by the unpacker itself.
pub(super) const SMALL: u64 = 64 << 10;
/// Jobs queued per worker: with `SMALL`, at most 4 MiB in flight each.
const QUEUE: usize = 64;
/// Jobs of one directory given to a worker before the next takes over: files of one
/// directory come together in a layer, and ext4 creates them one at a time under the
/// directory's lock, so a worker keeps a directory while it lasts — up to this many, so a
/// flat directory of thousands of files is still shared.
const RUN: usize = 256;

/// How many workers an unpack uses by default: none (the unpacker writes every file),
/// unless `KEEL_UNPACK_WORKERS=N` asks for N (at most 16). Measured on this project's
/// machine (docs/performance.md, "Session 8 — cold 10,000-file build"): on ext4 without
/// a journal, whose inode allocator skips inodes deleted in the last minute by scanning
/// the block group from its start on every creation, two threads creating a tree right
/// after a tree was deleted collide on the same candidate inodes and rescan (up to 3×
/// the kernel time of one thread); with a journal two threads were ~15 % faster.
pub fn default_workers() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("KEEL_UNPACK_WORKERS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(0, |n| n.min(16))
    })
}

/// One file for a worker to create.
pub(super) struct Job {
    /// The entry's position in the stream (the earliest failure is the one reported).
    pub seq: u64,
    pub dir: Arc<Dir>,
    pub name: OsString,
    /// The entry's name as the stream gives it, for messages.
    pub shown: String,
    pub body: Vec<u8>,
    pub meta: FileMeta,
}

/// What the workers share with the unpacker.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    idle: Condvar,
    /// Set with the first error: workers skip what is still queued.
    failed: AtomicBool,
}

#[derive(Default)]
struct State {
    outstanding: usize,
    error: Option<(u64, LayerError)>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A worker never panics while holding the lock (no code between lock and
        // unlock can), so poison only follows a panic elsewhere: the state is still whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self, job: Job) {
        let _done = Done(self);
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        let Job {
            seq,
            dir,
            name,
            shown,
            body,
            meta,
        } = job;
        if let Err(e) = write_new_file(&dir, &name, &shown, &body, &meta) {
            self.fail(seq, e);
        }
    }

    /// Records a failure; the earliest entry's is kept.
    fn fail(&self, seq: u64, e: LayerError) {
        self.failed.store(true, Ordering::Relaxed);
        let mut st = self.lock();
        if st.error.as_ref().is_none_or(|(s, _)| seq < *s) {
            st.error = Some((seq, e));
        }
    }
}

/// Counts a job as done when dropped, even when writing it panicked (then as a failure):
/// `drain` must never wait for a job that will not finish.
struct Done<'a>(&'a Shared);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let e = LayerError::bad("<layer>", "an unpack worker thread panicked");
            self.0.fail(0, e);
        }
        let mut st = self.0.lock();
        st.outstanding -= 1;
        if st.outstanding == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// Worker threads writing files for one unpack.
pub(super) struct Pool {
    queues: Vec<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// The worker that gets the next job, the directory of the last job, and how many
    /// jobs in a row that directory has had.
    turn: usize,
    last_dir: usize,
    run: usize,
}

impl Pool {
    /// Starts `n` (at least one) workers.
    pub fn new(n: usize) -> Pool {
        let shared = Arc::new(Shared::default());
        let (mut queues, mut workers) = (Vec::new(), Vec::new());
        for _ in 0..n.max(1) {
            let (tx, rx) = sync_channel::<Job>(QUEUE);
            let shared = shared.clone();
            workers.push(std::thread::spawn(move || {
                for job in rx {
                    shared.run(job);
                }
            }));
            queues.push(tx);
        }
        Pool {
            queues,
            workers,
            shared,
            turn: 0,
            last_dir: 0,
            run: 0,
        }
    }

    /// Queues a file (blocking while its worker's queue is full). After a failure,
    /// nothing more is queued: the earliest failure is returned.
    pub fn submit(&mut self, job: Job) -> Result<(), LayerError> {
        if self.shared.failed.load(Ordering::Relaxed) {
            self.drain()?;
            return Err(LayerError::bad("<layer>", "an earlier entry failed"));
        }
        let dir = Arc::as_ptr(&job.dir) as usize;
        if dir != self.last_dir || self.run >= RUN {
            (self.turn, self.last_dir, self.run) = ((self.turn + 1) % self.queues.len(), dir, 0);
        }
        self.run += 1;
        self.shared.lock().outstanding += 1;
        if self.queues[self.turn].send(job).is_err() {
            // Workers only end when their queue closes: never while the pool lives.
            self.shared.lock().outstanding -= 1;
            return Err(LayerError::bad(
                "<layer>",
                "an unpack worker thread ended early",
            ));
        }
        Ok(())
    }

    /// Waits until every queued file is written; the earliest failure, unless returned
    /// before.
    pub fn drain(&self) -> Result<(), LayerError> {
        let mut st = self.shared.lock();
        while st.outstanding > 0 {
            st = self.shared.idle.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        // A failure is returned once: the unpack stops at it.
        match st.error.take() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits for every file and stops the workers.
    pub fn finish(mut self) -> Result<(), LayerError> {
        let done = self.drain();
        self.stop();
        done
    }

    fn stop(&mut self) {
        self.queues.clear();
        for w in self.workers.drain(..) {
            if w.join().is_err() {
                tracing::warn!("an unpack worker thread panicked");
            }
        }
    }
}

impl Drop for Pool {
    /// An unpack that stopped early (an error in the stream) still waits for its workers:
    /// no file is written after `unpack` returns.
    fn drop(&mut self) {
        self.stop();
    }
}
