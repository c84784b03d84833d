//! The send path's writers: each takes the sends for its share of the rooms from every
//! connection, stores whatever has queued up in one transaction (group commit), then — only
//! after the commit — publishes each new message, encoded once, and answers each sender.
//! Publishing here, in commit order, keeps every room's live stream in seq order.

use crate::bus::Bus;
use crate::hub::{Hub, message_event};
use crate::rooms::RoomDirectory;
use crate::store::{Appended, NewMessage, Store, StoreError};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most sends committed in one transaction.
const MAX_BATCH: usize = 512;
/// A batch that has not committed by then is reported to its senders as unknown (they retry
/// with the same ids; a late commit is then found as the original row, so nothing is stored
/// twice), and announced to the room whenever it does commit.
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Sends waiting for each writer by default. Beyond, a send is refused at once (shedding):
/// under overload the wait for a commit stays bounded instead of growing with the backlog.
pub const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<Appended, StoreError>>;

/// How the writers run.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// Writer tasks; rooms are spread over them.
    pub shards: usize,
    /// Sends waiting for each writer before new ones are refused.
    pub queue: usize,
    /// Time after which a batch's senders are told its outcome is unknown.
    pub timeout: Duration,
}

impl Default for WriterLimits {
    fn default() -> Self {
        Self { shards: 2, queue: QUEUE, timeout: APPEND_TIMEOUT }
    }
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct Writer {
    shards: Arc<[mpsc::Sender<(NewMessage, Reply)>]>,
    counters: Arc<Counters>,
    /// How long a sender waits for its outcome.
    timeout: Duration,
}

/// What the writer has done since start.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages stored (duplicates excluded).
    pub stored: AtomicU64,
    /// Transactions (batches) committed or attempted.
    pub batches: AtomicU64,
    /// Sends handed to the store, duplicates included.
    pub sends: AtomicU64,
    /// Sends refused because their writer's queue was full.
    pub shed: AtomicU64,
    /// When a refusal was last logged (ms since the Unix epoch), so overload logs once a second.
    shed_logged_ms: AtomicU64,
}

impl Writer {
    /// Starts `limits.shards` writers. A room always goes to the same shard, so each room's
    /// sends are committed and published in order, while different rooms commit in parallel.
    ///
    /// Each writer runs on a thread of its own (a single-threaded runtime), not among the
    /// connections: a large fan-out leaves thousands of woken connections in the node runtime's
    /// queues, and a writer woken by its store's answer there waited behind all of them before
    /// it could announce the commit (measured: 25–57 ms per commit of one message with 5,000
    /// receivers in the room). Its own thread is scheduled by the kernel at once.
    pub fn start(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        bus: Arc<dyn Bus>,
        rooms: Arc<RoomDirectory>,
        limits: WriterLimits,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let shards: Vec<_> = (0..limits.shards.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(limits.queue.max(1));
                let out =
                    Outlet { hub: hub.clone(), bus: bus.clone(), rooms: rooms.clone(), counters: counters.clone() };
                let (store, timeout) = (store.for_writer().unwrap_or_else(|| store.clone()), limits.timeout);
                let writer = std::thread::Builder::new().name("socketchat-writer".into()).spawn(move || {
                    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(runtime) => runtime.block_on(run(rx, store, out, timeout)),
                        Err(e) => tracing::error!(error = %e, "the writer's runtime did not start"),
                    }
                });
                if let Err(e) = writer {
                    tracing::error!(error = %e, "the writer's thread did not start");
                }
                tx
            })
            .collect();
        Self { shards: shards.into(), counters, timeout: limits.timeout }
    }

    /// Stores one send; resolves after its transaction committed.
    pub async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        self.submit(message)?.await
    }

    /// Queues one send and returns the future of its outcome: a connection queues its sends in
    /// the order it accepted them, and goes on reading while they commit. A send whose writer
    /// already has its full queue waiting is refused at once (`Unavailable`: not stored, retry
    /// later) rather than waiting for room. The outcome is "unknown" once the store timeout has
    /// passed since the send was queued, counted here on the sender's side: a writer whose
    /// commit stalls its own thread (the embedded store commits on it) cannot count it.
    pub fn submit(
        &self,
        message: NewMessage,
    ) -> Result<impl Future<Output = Result<Appended, StoreError>> + Send + 'static, StoreError> {
        let (reply, answer) = oneshot::channel();
        let shard = &self.shards[(message.room_id % self.shards.len() as u64) as usize];
        shard.try_send((message, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => self.shed(shard.max_capacity()),
            mpsc::error::TrySendError::Closed(_) => StoreError::Unavailable("writer stopped".into()),
        })?;
        let timeout = self.timeout;
        Ok(async move {
            match tokio::time::timeout(timeout, answer).await {
                Ok(outcome) => outcome.map_err(|_| StoreError::Unavailable("writer stopped".into()))?,
                Err(_) => Err(unknown_outcome()),
            }
        })
    }

    /// Counts (and logs, at most once a second) a send refused for a full queue.
    fn shed(&self, queue: usize) -> StoreError {
        let counters = &self.counters;
        counters.shed.fetch_add(1, Ordering::Relaxed);
        let now = crate::clock::unix_ms();
        let last = counters.shed_logged_ms.load(Ordering::Relaxed);
        if now >= last + 1000
            && counters.shed_logged_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let refused = counters.shed.load(Ordering::Relaxed);
            tracing::warn!(queue, refused, "overloaded: sends refused, their writer's queue is full");
        }
        StoreError::Unavailable(format!("the server is overloaded ({queue} sends waiting for the store)"))
    }

    /// The writer's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// Where a writer announces what it committed: this node's hub at once, the other nodes
/// through the bus.
#[derive(Clone)]
struct Outlet {
    hub: Arc<Hub>,
    bus: Arc<dyn Bus>,
    rooms: Arc<RoomDirectory>,
    counters: Arc<Counters>,
}

impl Outlet {
    /// Delivers and relays each newly stored message (duplicates were announced before).
    fn announce(&self, results: &[Appended]) {
        for appended in results.iter().filter(|a| !a.duplicate) {
            self.counters.stored.fetch_add(1, Ordering::Relaxed);
            let event = message_event(&self.rooms, &appended.message);
            self.hub.deliver(&event);
            self.bus.publish(&event);
        }
    }
}

/// A send's outcome when the store has not answered within the timeout.
fn unknown_outcome() -> StoreError {
    StoreError::Unavailable("the store did not answer in time; the send may still be stored".into())
}

async fn run(mut rx: mpsc::Receiver<(NewMessage, Reply)>, store: Arc<dyn Store>, out: Outlet, timeout: Duration) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        out.counters.sends.fetch_add(batch.len() as u64, Ordering::Relaxed);
        // Plain messages go in one transaction; a send that needs checks (an edit, a deletion,
        // attachments) goes alone, in its place, so commits and announcements keep the order.
        let mut plain = Vec::with_capacity(batch.len());
        for (message, reply) in batch.drain(..) {
            if message.needs_checks() {
                if !plain.is_empty() {
                    commit(&store, &out, std::mem::take(&mut plain), timeout).await;
                }
                commit(&store, &out, vec![(message, reply)], timeout).await;
            } else {
                plain.push((message, reply));
            }
        }
        if !plain.is_empty() {
            commit(&store, &out, plain, timeout).await;
        }
    }
}

async fn commit(store: &Arc<dyn Store>, out: &Outlet, batch: Vec<(NewMessage, Reply)>, timeout: Duration) {
    let mut pending = std::collections::VecDeque::from([batch]);
    while let Some(mut part) = pending.pop_front() {
        let (messages, replies): (Vec<NewMessage>, Vec<Reply>) = part.drain(..).unzip();
        out.counters.batches.fetch_add(1, Ordering::Relaxed);
        // Polled here rather than spawned: the store's answer wakes this writer directly. Under
        // a large fan-out the runtime's queues hold thousands of woken connections, and every
        // extra task between a send and its announcement waits behind all of them.
        let mut append: Pin<Box<dyn Future<Output = Result<Vec<Appended>, StoreError>> + Send>> = Box::pin({
            let (store, messages) = (store.clone(), messages.clone());
            let append = async move {
                match &messages[..] {
                    [one] if one.needs_checks() => store.append_checked(one.clone()).await.map(|a| vec![a]),
                    _ => store.append(messages).await,
                }
            };
            AssertUnwindSafe(append).catch_unwind().map(|finished| {
                finished.unwrap_or_else(|_| Err(StoreError::Unavailable("the store failed (panic)".into())))
            })
        });
        let started = std::time::Instant::now();
        let outcome = match tokio::time::timeout(timeout, &mut append).await {
            // A store that commits on this thread (the embedded one) cannot be timed out here:
            // its senders heard at the timeout on their side; say what happened.
            Ok(result) if started.elapsed() >= timeout => {
                tracing::warn!(
                    sends = replies.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "the store answered after the timeout; its senders were told the outcome is unknown"
                );
                result
            }
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(sends = replies.len(), "the store did not answer in time; outcome unknown");
                for reply in replies {
                    let _ = reply.send(Err(unknown_outcome()));
                }
                let out = out.clone();
                tokio::spawn(async move {
                    if let Ok(results) = append.await {
                        tracing::info!(sends = results.len(), "a batch reported as unknown committed late; announced");
                        out.announce(&results);
                    }
                });
                continue;
            }
        };
        match outcome {
            Ok(results) => {
                out.announce(&results);
                for (appended, reply) in results.into_iter().zip(replies) {
                    let _ = reply.send(Ok(appended));
                }
            }
            Err(StoreError::Rejected(_)) if messages.len() > 1 => {
                let mut halves: Vec<(NewMessage, Reply)> = messages.into_iter().zip(replies).collect();
                let second = halves.split_off(halves.len() / 2);
                pending.push_front(second);
                pending.push_front(halves);
            }
            Err(e) => {
                tracing::warn!(error = %e, sends = replies.len(), "not stored");
                for reply in replies {
                    let _ = reply.send(Err(match &e {
                        StoreError::Rejected(why) => StoreError::Rejected(why.clone()),
                        other => StoreError::Unavailable(other.to_string()),
                    }));
                }
            }
        }
    }
}
