//! Writes a build makes only for later builds — a step's last inputs (~1 MB for a
//! 10,000-file COPY, read by the next build to explain a miss and find the layer to
//! patch) and a new layer's entry index (~1 MB, read when that layer is next patched) —
//! done in order on one worker thread instead of on the build's critical path. They then
//! overlap the next step (a RUN's container keeps one core busy and leaves the other idle)
//! instead of delaying it by ~10 ms. Each is best effort: a write that never happens (keel
//! killed first, no thread) costs the next build only the shortcut it offered, and what a
//! half-finished write leaves is refused by its reader (the index carries its checksum; the
//! last inputs are replaced in place and an empty or torn file reads as no previous build).
//!
//! `finish` waits for every write; the build calls it before it returns, since the
//! command may then exit without dropping the build's state (`exec::Scratch`).
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// The worker and its queue; both are started by the first write.
#[derive(Default)]
pub struct WriteBehind {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl WriteBehind {
    /// Runs `job` after the writes queued before it, on the worker (started on first use);
    /// here and now when no thread can be started.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        let mut queue = self.queue.lock().expect("write-behind queue lock");
        if queue.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new()
                .name("keel-write-behind".into())
                .spawn(move || rx.into_iter().for_each(run_caught));
            match spawned {
                Ok(handle) => {
                    *self.worker.lock().expect("write-behind worker lock") = Some(handle);
                    *queue = Some(tx);
                }
                Err(e) => tracing::debug!("no write-behind thread ({e}): writing now"),
            }
        }
        let job: Job = Box::new(job);
        match queue.as_ref() {
            // The worker stops only once the queue is closed (`finish`); should it be gone
            // all the same, the job runs here.
            Some(tx) => {
                if let Err(mpsc::SendError(job)) = tx.send(job) {
                    job();
                }
            }
            None => job(),
        }
    }

    /// Waits until every write queued so far is done (the worker stays, for later ones).
    pub fn settle(&self) {
        let (done, wait) = mpsc::sync_channel::<()>(1);
        let queued = {
            let queue = self.queue.lock().expect("write-behind queue lock");
            match queue.as_ref() {
                Some(tx) => tx
                    .send(Box::new(move || {
                        let _ = done.send(());
                    }))
                    .is_ok(),
                None => false,
            }
        };
        if queued {
            let _ = wait.recv();
        }
    }

    /// Waits for every queued write and stops the worker; a later `submit` starts another.
    pub fn finish(&self) {
        drop(self.queue.lock().expect("write-behind queue lock").take());
        let worker = self.worker.lock().expect("write-behind worker lock").take();
        if let Some(handle) = worker {
            let _ = handle.join();
        }
    }
}

/// Runs one job; a panicking one (a bug) is reported and does not stop the jobs after it.
fn run_caught(job: Job) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
        tracing::debug!("a write-behind job panicked");
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::WriteBehind;
    use std::sync::{Arc, Mutex};

    fn slow_push(log: &Arc<Mutex<Vec<u32>>>, n: u32) -> impl FnOnce() + Send + 'static {
        let log = Arc::clone(log);
        move || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            log.lock().unwrap().push(n);
        }
    }

    #[test]
    fn writes_run_in_order_and_are_done_when_finish_returns() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let behind = WriteBehind::default();
        for n in 0..5 {
            behind.submit(slow_push(&log, n));
        }
        behind.finish();
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        // A write after finish starts the worker again and is not lost.
        behind.submit(slow_push(&log, 5));
        drop(behind);
        assert_eq!(log.lock().unwrap().len(), 6);
    }

    #[test]
    fn settle_waits_for_what_was_queued_and_keeps_the_worker() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let behind = WriteBehind::default();
        behind.submit(slow_push(&log, 1));
        behind.settle();
        assert_eq!(*log.lock().unwrap(), vec![1]);
        behind.submit(slow_push(&log, 2));
        behind.settle();
        assert_eq!(*log.lock().unwrap(), vec![1, 2]);
        // Settling with nothing queued (or no worker) returns at once.
        WriteBehind::default().settle();
    }

    #[test]
    fn a_panicking_write_does_not_lose_the_ones_after_it() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let behind = WriteBehind::default();
        behind.submit(|| panic!("a write failed badly"));
        behind.submit(slow_push(&log, 7));
        behind.finish();
        assert_eq!(*log.lock().unwrap(), vec![7]);
    }
}
