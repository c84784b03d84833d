//! The embedded store: one SQLite file in WAL mode. One connection writes (SQLite has one writer
//! anyway), another reads, so history reads never wait behind a commit. Calls run on tokio's
//! blocking pool; every statement is prepared once per connection (`prepare_cached`).

use super::{Appended, NewMessage, Room, Store, StoreError, StoreResult, StoredMessage, UserRecord};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_last_seen.sql"),
];

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    /// Revoked token ids with their expiry (Unix s), mirrored in memory: the embedded store
    /// belongs to one process, which makes every revocation itself, so the check every upgrade
    /// and API call makes needs no trip to the blocking pool.
    revoked: Arc<Mutex<std::collections::HashMap<String, u64>>>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        // A constraint (a sender that is no longer a user, say) refuses the data itself.
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Rejected(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk before `append` returns, so an ack is never lost (G1).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()
}

use crate::clock::unix_ms as now_ms;

const MESSAGE_COLUMNS: &str = "m.id, m.room_id, m.seq, m.sender_id, u.username, m.client_msg_id, m.text, m.sent_at_ms";

fn message_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let id: Vec<u8> = row.get(5)?;
    Ok(StoredMessage {
        id: row.get(0)?,
        room_id: row.get(1)?,
        seq: row.get(2)?,
        sender_id: row.get(3)?,
        sender_name: row.get(4)?,
        client_msg_id: id.try_into().unwrap_or([0; 16]),
        text: row.get(6)?,
        sent_at_ms: row.get(7)?,
    })
}

fn user_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord { id: row.get(0)?, username: row.get(1)?, email: row.get(2)?, password_hash: row.get(3)? })
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let mut writer = open(path)?;
        migrate(&mut writer)?;
        let revoked = {
            let mut stmt = writer.prepare("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at >= ?1")?;
            let rows =
                stmt.query_map(params![now_ms() / 1000], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
            rows.collect::<rusqlite::Result<std::collections::HashMap<_, _>>>()?
        };
        let reader = open(path)?;
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            revoked: Arc::new(Mutex::new(revoked)),
        })
    }

    async fn with<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Unavailable("connection poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        Self::with(&self.reader, f).await
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        Self::with(&self.writer, f).await
    }
}

fn append_one(tx: &rusqlite::Transaction<'_>, m: &NewMessage, at: u64) -> StoreResult<Appended> {
    let existing = tx
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.sender_id
             WHERE m.room_id = ?1 AND m.sender_id = ?2 AND m.client_msg_id = ?3"
        ))?
        .query_row(params![m.room_id, m.sender_id, &m.client_msg_id[..]], message_row)
        .optional()?;
    if let Some(message) = existing {
        return Ok(Appended { message, duplicate: true });
    }
    let seq: u64 = tx
        .prepare_cached("UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq")?
        .query_row(params![m.room_id], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO messages (room_id, seq, sender_id, client_msg_id, text, sent_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![m.room_id, seq, m.sender_id, &m.client_msg_id[..], m.text, at])?;
    Ok(Appended {
        message: StoredMessage {
            id: tx.last_insert_rowid() as u64,
            room_id: m.room_id,
            seq,
            sender_id: m.sender_id,
            sender_name: m.sender_name.clone(),
            client_msg_id: m.client_msg_id,
            text: m.text.clone(),
            sent_at_ms: at,
        },
        duplicate: false,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn create_user(&self, username: &str, email: &str, password_hash: &str) -> StoreResult<UserRecord> {
        let (username, email, hash) = (username.to_owned(), email.to_owned(), password_hash.to_owned());
        self.write(move |c| {
            let taken = |sql: &str, v: &str| -> StoreResult<bool> { Ok(c.prepare_cached(sql)?.exists(params![v])?) };
            if taken("SELECT 1 FROM users WHERE username = ?1", &username)? {
                return Err(StoreError::Conflict("username"));
            }
            if taken("SELECT 1 FROM users WHERE email = ?1", &email)? {
                return Err(StoreError::Conflict("email"));
            }
            c.prepare_cached(
                "INSERT INTO users (username, email, password_hash, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![username, email, hash, now_ms()])?;
            Ok(UserRecord { id: c.last_insert_rowid() as u64, username, email, password_hash: hash })
        })
        .await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        let email = email.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT id, username, email, password_hash FROM users WHERE email = ?1")?
                .query_row(params![email], user_row)
                .optional()?)
        })
        .await
    }

    async fn user_by_id(&self, id: u64) -> StoreResult<Option<UserRecord>> {
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT id, username, email, password_hash FROM users WHERE id = ?1")?
                .query_row(params![id], user_row)
                .optional()?)
        })
        .await
    }

    async fn rooms(&self) -> StoreResult<Vec<Room>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT id, name, topic FROM rooms ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok(Room { id: r.get(0)?, name: r.get(1)?, topic: r.get(2)? }))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn append(&self, batch: Vec<NewMessage>) -> StoreResult<Vec<Appended>> {
        self.write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let at = now_ms();
            let out = batch.iter().map(|m| append_one(&tx, m, at)).collect::<StoreResult<Vec<_>>>()?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn head_seq(&self, room_id: u64) -> StoreResult<u64> {
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT last_seq FROM rooms WHERE id = ?1")?
                .query_row(params![room_id], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
        .await
    }

    async fn heads(&self, room_ids: &[u64]) -> StoreResult<Vec<(u64, u64)>> {
        let ids = room_ids.to_vec();
        self.read(move |c| {
            let mut stmt = c.prepare_cached("SELECT last_seq FROM rooms WHERE id = ?1")?;
            let mut heads = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(head) = stmt.query_row(params![id], |r| r.get(0)).optional()? {
                    heads.push((id, head));
                }
            }
            Ok(heads)
        })
        .await
    }

    async fn range(&self, room_id: u64, from: u64, to: u64) -> StoreResult<Vec<StoredMessage>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.sender_id
                 WHERE m.room_id = ?1 AND m.seq BETWEEN ?2 AND ?3 ORDER BY m.seq"
            ))?;
            let rows = stmt.query_map(params![room_id, from, to], message_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn page_before(&self, room_id: u64, before: Option<u64>, limit: u32) -> StoreResult<Vec<StoredMessage>> {
        let before = before.unwrap_or(i64::MAX as u64).min(i64::MAX as u64);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.sender_id
                 WHERE m.room_id = ?1 AND m.seq < ?2 ORDER BY m.seq DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![room_id, before, limit], message_row)?;
            let mut page: Vec<StoredMessage> = rows.collect::<rusqlite::Result<_>>()?;
            page.reverse();
            Ok(page)
        })
        .await
    }

    async fn revoke_token(&self, jti: &str, expires_at: u64) -> StoreResult<()> {
        let owned = jti.to_owned();
        self.write(move |c| {
            let now = now_ms() / 1000;
            c.prepare_cached("DELETE FROM revoked_tokens WHERE expires_at < ?1")?.execute(params![now])?;
            c.prepare_cached("INSERT OR IGNORE INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2)")?
                .execute(params![owned, expires_at])?;
            Ok(())
        })
        .await?;
        // Only once it is on disk; expired ones are forgotten as the table forgets them.
        let now = now_ms() / 1000;
        let mut revoked = self.revoked.lock().map_err(|_| StoreError::Unavailable("revocations poisoned".into()))?;
        revoked.retain(|_, exp| *exp >= now);
        revoked.insert(jti.to_owned(), expires_at);
        Ok(())
    }

    async fn is_revoked(&self, jti: &str) -> StoreResult<bool> {
        Ok(self.revoked.lock().map_err(|_| StoreError::Unavailable("revocations poisoned".into()))?.contains_key(jti))
    }

    async fn record_seen(&self, seen: Vec<(u64, u64)>) -> StoreResult<()> {
        self.write(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE users SET last_seen_ms = max(coalesce(last_seen_ms, 0), ?2) WHERE id = ?1",
                )?;
                for (id, ms) in seen {
                    stmt.execute(params![id, ms])?;
                }
            }
            Ok(tx.commit()?)
        })
        .await
    }

    async fn last_seen(&self, ids: &[u64]) -> StoreResult<Vec<(u64, u64)>> {
        let ids = ids.to_vec();
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT last_seen_ms FROM users WHERE id = ?1 AND last_seen_ms IS NOT NULL")?;
            let mut seen = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(ms) = stmt.query_row(params![id], |r| r.get(0)).optional()? {
                    seen.push((id, ms));
                }
            }
            Ok(seen)
        })
        .await
    }
}
