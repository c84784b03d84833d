//! The send path's single writer: takes sends from every connection, stores whatever has queued
//! up in one transaction (group commit), then — only after the commit — publishes each new
//! message, encoded once, and answers each sender. Publishing here, in commit order, keeps every
//! room's live stream in seq order.

use crate::bus::Bus;
use crate::hub::{Event, EventKind, Topic};
use crate::rooms::RoomDirectory;
use crate::store::{Appended, NewMessage, Store, StoreError};
use crate::wire::{ServerFrame, encode_bytes};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Most sends committed in one transaction.
const MAX_BATCH: usize = 512;
/// Sends waiting for the writer before senders wait too (backpressure, G6).
const QUEUE: usize = 8192;

type Reply = oneshot::Sender<Result<Appended, StoreError>>;

/// Handle to the writer task.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<(NewMessage, Reply)>,
    stored: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer task.
    pub fn start(store: Arc<dyn Store>, bus: Arc<dyn Bus>, rooms: Arc<RoomDirectory>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stored = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(rx, store, bus, rooms, stored.clone()));
        Self { tx, stored }
    }

    /// Stores one send; resolves after its transaction committed.
    pub async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((message, reply)).await.map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("writer stopped".into()))?
    }

    /// Messages stored (not counting duplicates) since start.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }
}

async fn run(
    mut rx: mpsc::Receiver<(NewMessage, Reply)>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    rooms: Arc<RoomDirectory>,
    stored: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (messages, replies): (Vec<NewMessage>, Vec<Reply>) = batch.drain(..).unzip();
        match store.append(messages).await {
            Ok(results) => {
                for (appended, reply) in results.into_iter().zip(replies) {
                    if !appended.duplicate {
                        stored.fetch_add(1, Ordering::Relaxed);
                        let m = &appended.message;
                        let event = Event {
                            topic: Topic::Room(m.room_id),
                            kind: EventKind::Message { seq: m.seq },
                            from_user: m.sender_id,
                            bytes: encode_bytes(&ServerFrame::Message(rooms.to_wire(m))),
                        };
                        if let Err(e) = bus.publish(event).await {
                            tracing::warn!(room = m.room_id, seq = m.seq, error = %e, "publish failed after commit");
                        }
                    }
                    let _ = reply.send(Ok(appended));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, sends = replies.len(), "batch not stored");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
                }
            }
        }
    }
}
