//! Password hashing off the async runtime, on a fixed pool of threads with a bounded queue
//! (G6). argon2id needs 19 MiB per hash: a fixed number of threads bounds how many are in memory
//! at once, each block is given back to the system when the hash is done (see
//! `crate::allocator::tune`), and a full queue answers at once instead of making everyone wait —
//! under a login flood the server grew to 1 GB and never shrank, and a normal login waited
//! seconds behind a queue of registrations.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The queue is full (or the pool stopped): try again shortly.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("too many password checks in progress")]
pub struct Busy;

/// A fixed pool of hashing threads.
pub struct Hasher {
    jobs: SyncSender<Job>,
}

impl Hasher {
    /// `threads` threads taking work from a queue of at most `queue` waiting jobs.
    pub fn start(threads: usize, queue: usize) -> Self {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx: Arc<Mutex<Receiver<Job>>> = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("socketchat-hash-{i}")).spawn(move || {
                loop {
                    // The lock is held only while waiting for the next job, not while hashing.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a hashing thread");
            }
        }
        Self { jobs }
    }

    /// Runs `work` on the pool and waits for its result; `Busy` at once when the queue is full.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        match self.jobs.try_send(job) {
            Ok(()) => result.await.map_err(|_| Busy),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once_and_queued_work_still_completes() {
        let hasher = Hasher::start(1, 1);
        let (started, is_started) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let first = hasher.run(move || {
            started.send(()).unwrap();
            released.recv().unwrap();
            1
        });
        tokio::pin!(first);
        assert!(first.as_mut().now_or_never().is_none());
        is_started.recv().unwrap(); // the thread is busy, the queue empty
        let second = hasher.run(|| 2);
        tokio::pin!(second);
        assert!(second.as_mut().now_or_never().is_none(), "queued");
        assert_eq!(hasher.run(|| 3).await, Err(Busy), "a queue of one is full");
        release.send(()).unwrap();
        assert_eq!(first.await, Ok(1));
        assert_eq!(second.await, Ok(2));
        assert_eq!(hasher.run(|| 4).await, Ok(4));
    }
}
