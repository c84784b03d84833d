//! The embedded store: one SQLite file in WAL mode. One connection writes (SQLite has one writer
//! anyway), another reads, so history reads never wait behind a commit. Calls run on tokio's
//! blocking pool; every statement is prepared once per connection (`prepare_cached`).

use super::{
    Appended, Attachment, MessageKind, NewMessage, NewRoom, Role, Room, RoomKind, RoomListing, Store, StoreError,
    StoreResult, StoredMessage, UNATTACHED_UPLOAD_LIFETIME_MS, UNREAD_CAP, Upload, UserRecord, attachments_from,
    attachments_text, big, check_target, check_upload, kind_code, kind_from,
};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_last_seen.sql"),
    include_str!("../../migrations/sqlite/0003_channels.sql"),
    include_str!("../../migrations/sqlite/0004_deleted_edits.sql"),
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
    /// Writes run on the calling thread rather than on the blocking pool: set only in the copy
    /// a writer uses from its own thread (see [`Store::for_writer`]).
    inline: bool,
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
    // The WAL is copied into the database file once it holds 10,000 pages (~40 MiB) rather
    // than SQLite's 1,000: a page that many commits changed (an index leaf of a busy room) is
    // copied once for all of them, and the file is synced less often. With 64 senders over 100
    // rooms, a commit wrote ~40 pages, and acked sends/s went 1.2x (bench/README).
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    Ok(conn)
}

/// Runs `f` on the connection, on the calling thread.
fn locked<T>(conn: &Mutex<Connection>, f: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
    let mut guard = conn.lock().map_err(|_| StoreError::Unavailable("connection poisoned".into()))?;
    f(&mut guard)
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

const MESSAGE_COLUMNS: &str = "m.id, m.room_id, m.seq, m.sender_id, u.username, m.client_msg_id, m.text, m.sent_at_ms, \
     m.kind, m.target_seq, m.edited_at_ms, m.deleted, m.attachments";

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
        kind: kind_from(row.get(8)?),
        target_seq: row.get(9)?,
        edited_at_ms: row.get(10)?,
        deleted: row.get(11)?,
        attachments: attachments_from(&row.get::<_, String>(12)?),
    })
}

const UPLOAD_COLUMNS: &str = "id, name, content_type, size, owner_id, room_id";

fn upload_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Upload> {
    Ok(Upload {
        attachment: Attachment { id: row.get(0)?, name: row.get(1)?, content_type: row.get(2)?, size: row.get(3)? },
        owner_id: row.get(4)?,
        room_id: row.get(5)?,
    })
}

/// A room from `id, name, topic, kind`.
fn room_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Room> {
    let kind: String = row.get(3)?;
    Ok(Room { id: row.get(0)?, name: row.get(1)?, topic: row.get(2)?, kind: RoomKind::parse(&kind) })
}

/// Messages of others above `after` in a room, counted up to `UNREAD_CAP`.
fn unread(c: &Connection, room_id: u64, user_id: u64, after: u64) -> rusqlite::Result<u64> {
    c.prepare_cached(
        "SELECT count(*) FROM (SELECT 1 FROM messages
         WHERE room_id = ?1 AND seq > ?2 AND sender_id <> ?3 AND kind = 0 AND deleted = 0 LIMIT ?4)",
    )?
    .query_row(params![room_id, after, user_id, UNREAD_CAP], |r| r.get(0))
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
            inline: false,
        })
    }

    async fn with<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || locked(&conn, f))
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
        if self.inline {
            return locked(&self.writer, f);
        }
        Self::with(&self.writer, f).await
    }
}

/// The row already stored for this send's idempotency key, if any.
///
/// Every send asks, so the question is the unique index alone; the row is read (with its
/// sender's name) only for a duplicate. Asked with the join, SQLite recompiled the statement at
/// every call (its planner treats the sender's id as a value that may change the plan), and that
/// recompilation was about a third of the server's CPU under a stream of sends.
fn stored_duplicate(tx: &rusqlite::Transaction<'_>, m: &NewMessage) -> StoreResult<Option<StoredMessage>> {
    let id: Option<i64> = tx
        .prepare_cached("SELECT id FROM messages WHERE room_id = ?1 AND sender_id = ?2 AND client_msg_id = ?3")?
        .query_row(params![m.room_id, m.sender_id, &m.client_msg_id[..]], |r| r.get(0))
        .optional()?;
    let Some(id) = id else { return Ok(None) };
    Ok(Some(
        tx.prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.sender_id WHERE m.id = ?1"
        ))?
        .query_row(params![id], message_row)?,
    ))
}

/// Inserts a new row for `m` with the room's next seq.
fn insert(
    tx: &rusqlite::Transaction<'_>,
    m: &NewMessage,
    at: u64,
    attachments: Vec<Attachment>,
) -> StoreResult<StoredMessage> {
    let seq: u64 = tx
        .prepare_cached("UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq")?
        .query_row(params![m.room_id], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO messages (room_id, seq, sender_id, client_msg_id, text, sent_at_ms, kind, target_seq, attachments)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        m.room_id,
        seq,
        m.sender_id,
        &m.client_msg_id[..],
        m.text,
        at,
        kind_code(m.kind),
        m.target_seq,
        attachments_text(&attachments)
    ])?;
    Ok(StoredMessage {
        id: tx.last_insert_rowid() as u64,
        room_id: m.room_id,
        seq,
        sender_id: m.sender_id,
        sender_name: m.sender_name.clone(),
        client_msg_id: m.client_msg_id,
        text: m.text.clone(),
        sent_at_ms: at,
        kind: m.kind,
        target_seq: m.target_seq,
        edited_at_ms: None,
        deleted: false,
        attachments,
    })
}

/// `Store::append_checked` inside a transaction.
fn append_checked_in(tx: &rusqlite::Transaction<'_>, m: &NewMessage, at: u64) -> StoreResult<Appended> {
    if let Some(message) = stored_duplicate(tx, m)? {
        return Ok(Appended { message, duplicate: true });
    }
    let mut attachments = Vec::with_capacity(m.attachments.len());
    match m.kind {
        MessageKind::Post => {
            let mut stmt = tx.prepare_cached(&format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ?1"))?;
            for id in &m.attachments {
                let found = stmt.query_row(params![big(*id)], upload_row).optional()?;
                check_upload(m, *id, found.as_ref())?;
                attachments.extend(found.map(|u| u.attachment));
            }
        }
        MessageKind::Edit | MessageKind::Delete => {
            let found = tx
                .prepare_cached("SELECT sender_id, kind, deleted FROM messages WHERE room_id = ?1 AND seq = ?2")?
                .query_row(params![m.room_id, m.target_seq.map(big)], |r| {
                    Ok((r.get::<_, u64>(0)?, kind_from(r.get(1)?), r.get::<_, bool>(2)?))
                })
                .optional()?;
            check_target(m, found)?;
        }
    }
    let message = insert(tx, m, at, attachments)?;
    match m.kind {
        MessageKind::Post => {
            let mut attach = tx.prepare_cached("UPDATE uploads SET room_id = ?2, seq = ?3 WHERE id = ?1")?;
            for id in &m.attachments {
                attach.execute(params![id, m.room_id, message.seq])?;
            }
        }
        MessageKind::Edit => {
            tx.prepare_cached("UPDATE messages SET text = ?3, edited_at_ms = ?4 WHERE room_id = ?1 AND seq = ?2")?
                .execute(params![m.room_id, m.target_seq, m.text, at])?;
        }
        MessageKind::Delete => {
            tx.prepare_cached(
                "UPDATE messages SET text = '', deleted = 1, attachments = '' WHERE room_id = ?1 AND seq = ?2",
            )?
            .execute(params![m.room_id, m.target_seq])?;
            // The post's earlier edits carry its text too.
            tx.prepare_cached("UPDATE messages SET text = '' WHERE room_id = ?1 AND target_seq = ?2 AND kind = 1")?
                .execute(params![m.room_id, m.target_seq])?;
            tx.prepare_cached("DELETE FROM uploads WHERE room_id = ?1 AND seq = ?2")?
                .execute(params![m.room_id, m.target_seq])?;
        }
    }
    Ok(Appended { message, duplicate: false })
}

fn append_one(tx: &rusqlite::Transaction<'_>, m: &NewMessage, at: u64) -> StoreResult<Appended> {
    if m.needs_checks() {
        // The writer stores these alone; in a batch, a failed check refuses the batch.
        return append_checked_in(tx, m, at);
    }
    if let Some(message) = stored_duplicate(tx, m)? {
        return Ok(Appended { message, duplicate: true });
    }
    Ok(Appended { message: insert(tx, m, at, Vec::new())?, duplicate: false })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    /// The writer's thread is its own and does nothing but wait for its commits, so it commits
    /// itself: handing each commit to the blocking pool and back cost about 3 context switches
    /// per commit (~1,000 commits a second under load); without them the CPU per acked send
    /// went 0.89-0.94x (bench/README).
    ///
    /// A commit that stalls then holds the writer's thread; its senders still hear at the store
    /// timeout, which their own side keeps ([`crate::writer::Writer::submit`]).
    fn for_writer(&self) -> Option<Arc<dyn Store>> {
        Some(Arc::new(Self { inline: true, ..self.clone() }))
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

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let username = username.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT id, username, email, password_hash FROM users WHERE username = ?1")?
                .query_row(params![username], user_row)
                .optional()?)
        })
        .await
    }

    async fn rooms(&self) -> StoreResult<Vec<Room>> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id, name, topic, kind FROM rooms WHERE kind = 'public' ORDER BY id")?;
            let rows = stmt.query_map([], room_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn room_by_id(&self, id: u64) -> StoreResult<Option<Room>> {
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT id, name, topic, kind FROM rooms WHERE id = ?1")?
                .query_row(params![id], room_row)
                .optional()?)
        })
        .await
    }

    async fn room_by_name(&self, name: &str) -> StoreResult<Option<Room>> {
        let name = name.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT id, name, topic, kind FROM rooms WHERE name = ?1")?
                .query_row(params![name], room_row)
                .optional()?)
        })
        .await
    }

    async fn create_room(&self, room: NewRoom) -> StoreResult<Room> {
        self.write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if tx.prepare_cached("SELECT 1 FROM rooms WHERE name = ?1")?.exists(params![room.name])? {
                return Err(StoreError::Conflict("name"));
            }
            tx.prepare_cached("INSERT INTO rooms (name, topic, kind) VALUES (?1, ?2, ?3)")?.execute(params![
                room.name,
                room.topic,
                room.kind.as_str()
            ])?;
            let id = tx.last_insert_rowid() as u64;
            {
                let mut add = tx.prepare_cached(
                    "INSERT INTO memberships (room_id, user_id, role) VALUES (?1, ?2, ?3)
                     ON CONFLICT (room_id, user_id) DO NOTHING",
                )?;
                if let Some(owner) = room.owner {
                    add.execute(params![id, owner, Role::Owner.as_str()])?;
                }
                for member in &room.members {
                    add.execute(params![id, member, Role::Member.as_str()])?;
                }
            }
            tx.commit()?;
            Ok(Room { id, name: room.name, topic: room.topic, kind: room.kind })
        })
        .await
    }

    async fn role(&self, room_id: u64, user_id: u64) -> StoreResult<Option<Role>> {
        self.read(move |c| {
            let role: Option<String> = c
                .prepare_cached("SELECT role FROM memberships WHERE room_id = ?1 AND user_id = ?2")?
                .query_row(params![room_id, user_id], |r| r.get(0))
                .optional()?;
            Ok(role.as_deref().map(Role::parse))
        })
        .await
    }

    async fn add_member(&self, room_id: u64, user_id: u64) -> StoreResult<bool> {
        self.write(move |c| {
            let added = c
                .prepare_cached(
                    "INSERT INTO memberships (room_id, user_id, role) VALUES (?1, ?2, 'member')
                     ON CONFLICT (room_id, user_id) DO NOTHING",
                )?
                .execute(params![room_id, user_id])?;
            Ok(added > 0)
        })
        .await
    }

    async fn remove_member(&self, room_id: u64, user_id: u64) -> StoreResult<bool> {
        self.write(move |c| {
            let removed = c
                .prepare_cached("DELETE FROM memberships WHERE room_id = ?1 AND user_id = ?2")?
                .execute(params![room_id, user_id])?;
            Ok(removed > 0)
        })
        .await
    }

    async fn members(&self, room_id: u64) -> StoreResult<Vec<(u64, String, Role)>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT u.id, u.username, m.role FROM memberships m JOIN users u ON u.id = m.user_id
                 WHERE m.room_id = ?1 ORDER BY u.username COLLATE BINARY",
            )?;
            let rows =
                stmt.query_map(params![room_id], |r| Ok((r.get(0)?, r.get(1)?, Role::parse(&r.get::<_, String>(2)?))))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn rooms_for(&self, user_id: u64) -> StoreResult<Vec<RoomListing>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT r.id, r.name, r.topic, r.kind, r.last_seq, coalesce(k.last_read_seq, 0), m.role
                 FROM rooms r
                 LEFT JOIN memberships m ON m.room_id = r.id AND m.user_id = ?1
                 LEFT JOIN read_marks k ON k.room_id = r.id AND k.user_id = ?1
                 WHERE r.kind = 'public' OR m.user_id IS NOT NULL
                 ORDER BY r.id",
            )?;
            let rows = stmt.query_map(params![user_id], |r| {
                let role: Option<String> = r.get(6)?;
                Ok(RoomListing {
                    room: room_row(r)?,
                    head_seq: r.get(4)?,
                    last_read_seq: r.get(5)?,
                    unread: 0,
                    role: role.as_deref().map(Role::parse),
                })
            })?;
            let mut listings: Vec<RoomListing> = rows.collect::<rusqlite::Result<_>>()?;
            for l in &mut listings {
                if l.head_seq > l.last_read_seq {
                    l.unread = unread(c, l.room.id, user_id, l.last_read_seq)?;
                }
            }
            Ok(listings)
        })
        .await
    }

    async fn mark_read(&self, user_id: u64, room_id: u64, seq: u64) -> StoreResult<u64> {
        let seq = big(seq);
        self.write(move |c| {
            Ok(c.prepare_cached(
                "INSERT INTO read_marks (user_id, room_id, last_read_seq)
                 SELECT ?1, id, min(?3, last_seq) FROM rooms WHERE id = ?2
                 ON CONFLICT (user_id, room_id) DO UPDATE
                 SET last_read_seq = max(last_read_seq, excluded.last_read_seq)
                 RETURNING last_read_seq",
            )?
            .query_row(params![user_id, room_id, seq], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
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

    async fn append_checked(&self, message: NewMessage) -> StoreResult<Appended> {
        self.write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let appended = append_checked_in(&tx, &message, now_ms())?;
            tx.commit()?;
            Ok(appended)
        })
        .await
    }

    async fn create_upload(&self, owner_id: u64, name: &str, content_type: &str, data: &[u8]) -> StoreResult<Upload> {
        let (name, content_type, data) = (name.to_owned(), content_type.to_owned(), data.to_vec());
        self.write(move |c| {
            let now = now_ms();
            c.prepare_cached("DELETE FROM uploads WHERE room_id IS NULL AND created_at_ms < ?1")?
                .execute(params![now.saturating_sub(UNATTACHED_UPLOAD_LIFETIME_MS)])?;
            let size = data.len() as u64;
            c.prepare_cached(
                "INSERT INTO uploads (owner_id, name, content_type, size, data, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![owner_id, name, content_type, size, data, now])?;
            let id = c.last_insert_rowid() as u64;
            Ok(Upload { attachment: Attachment { id, name, content_type, size }, owner_id, room_id: None })
        })
        .await
    }

    async fn upload(&self, id: u64) -> StoreResult<Option<(Upload, Vec<u8>)>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {UPLOAD_COLUMNS}, data FROM uploads WHERE id = ?1"))?
                .query_row(params![big(id)], |r| Ok((upload_row(r)?, r.get::<_, Vec<u8>>(6)?)))
                .optional()?)
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
        let before = big(before.unwrap_or(u64::MAX));
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
                if let Some(ms) = stmt.query_row(params![big(id)], |r| r.get(0)).optional()? {
                    seen.push((id, ms));
                }
            }
            Ok(seen)
        })
        .await
    }
}
