//! PostgreSQL store: a deadpool of tokio-postgres connections, every statement prepared once per
//! connection (`prepare_cached`) and parameterised. `append` stores a whole batch with one call
//! of the `socketchat_append` function (arrays in, one row per send out) that commits once:
//! group commit in one round trip.
//!
//! Seqs stay gap-free and in commit order across any number of nodes: the function first locks
//! the rows of its rooms (`FOR UPDATE`, in id order so two batches never deadlock), and only then
//! looks for duplicates, so nothing can be inserted into those rooms between the duplicate check
//! and the insert. A rolled-back batch returns its seqs with the lock.

use super::{
    Appended, Attachment, MessageKind, NewMessage, NewRoom, Role, Room, RoomKind, RoomListing, Store, StoreError,
    StoreResult, StoredMessage, UNATTACHED_UPLOAD_LIFETIME_MS, UNREAD_CAP, Upload, UserRecord, attachments_from,
    attachments_text, big, check_target, check_upload, kind_code, kind_from,
};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

/// Migrations, applied in order; each is recorded in `schema_migrations`.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/postgres/0001_init.sql")),
    (2, "append_function", include_str!("../../migrations/postgres/0002_append_function.sql")),
    (3, "last_seen", include_str!("../../migrations/postgres/0003_last_seen.sql")),
    (4, "channels", include_str!("../../migrations/postgres/0004_channels.sql")),
    (5, "append_generic_plan", include_str!("../../migrations/postgres/0005_append_generic_plan.sql")),
    (6, "deleted_edits", include_str!("../../migrations/postgres/0006_deleted_edits.sql")),
];

/// The send path: see `migrations/postgres/0002_append_function.sql`.
const APPEND_SQL: &str =
    "SELECT ord, message_id, seq, sent_at_ms, body, duplicate FROM socketchat_append($1, $2, $3, $4, $5)";

/// Connections each writer has of its own: two, so a batch still running after its senders
/// were told "unknown" does not hold up the next one.
const WRITER_CONNECTIONS: usize = 2;

/// Any number that identifies our migration lock among other advisory locks.
const MIGRATION_LOCK: i64 = 0x736f_636b_6574_6368; // "socketch"

/// The range read of a join's replay (also checked with EXPLAIN by the tests).
pub const RANGE_SQL: &str = "SELECT m.id, m.room_id, m.seq, m.sender_id, coalesce(u.username, '[deleted]'), m.client_msg_id, m.text, m.sent_at_ms, \
     m.kind, m.target_seq, m.edited_at_ms, m.deleted, m.attachments \
     FROM messages m LEFT JOIN users u ON u.id = m.sender_id \
     WHERE m.room_id = $1 AND m.seq BETWEEN $2 AND $3 ORDER BY m.seq";

/// The history page read (also checked with EXPLAIN by the tests).
pub const PAGE_SQL: &str = "SELECT m.id, m.room_id, m.seq, m.sender_id, coalesce(u.username, '[deleted]'), m.client_msg_id, m.text, m.sent_at_ms, \
     m.kind, m.target_seq, m.edited_at_ms, m.deleted, m.attachments \
     FROM messages m LEFT JOIN users u ON u.id = m.sender_id \
     WHERE m.room_id = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3";

/// One stored row by its idempotency key (a retry).
const DUPLICATE_SQL: &str = "SELECT m.id, m.room_id, m.seq, m.sender_id, coalesce(u.username, '[deleted]'), m.client_msg_id, m.text, m.sent_at_ms, \
     m.kind, m.target_seq, m.edited_at_ms, m.deleted, m.attachments \
     FROM messages m LEFT JOIN users u ON u.id = m.sender_id \
     WHERE m.room_id = $1 AND m.sender_id = $2 AND m.client_msg_id = $3";

const UPLOAD_COLUMNS: &str = "id, name, content_type, size, owner_id, room_id";

fn upload_row(row: &tokio_postgres::Row) -> Upload {
    Upload {
        attachment: Attachment {
            id: row.get::<_, i64>(0) as u64,
            name: row.get(1),
            content_type: row.get(2),
            size: row.get::<_, i64>(3) as u64,
        },
        owner_id: row.get::<_, i64>(4) as u64,
        room_id: row.get::<_, Option<i64>>(5).map(|id| id as u64),
    }
}

/// PostgreSQL-backed [`Store`].
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Where the pool connects, for the writers' own connections.
    config: tokio_postgres::Config,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // SQLSTATE classes 22 (data exception, e.g. a NUL character in text) and 23 (integrity
        // constraint violation): the data is at fault, not the database.
        match e.as_db_error().map(|db| db.code().code()) {
            Some(code) if code.starts_with("22") || code.starts_with("23") => StoreError::Rejected(e.to_string()),
            _ => unavailable(e),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        unavailable(e)
    }
}

fn now_ms() -> i64 {
    crate::clock::unix_ms() as i64
}

fn message_row(row: &tokio_postgres::Row) -> StoredMessage {
    let cmid: &[u8] = row.get(5);
    StoredMessage {
        id: row.get::<_, i64>(0) as u64,
        room_id: row.get::<_, i64>(1) as u64,
        seq: row.get::<_, i64>(2) as u64,
        sender_id: row.get::<_, i64>(3) as u64,
        sender_name: row.get(4),
        client_msg_id: cmid.try_into().unwrap_or([0; 16]),
        text: row.get(6),
        sent_at_ms: row.get::<_, i64>(7) as u64,
        kind: kind_from(i64::from(row.get::<_, i16>(8))),
        target_seq: row.get::<_, Option<i64>>(9).map(|s| s as u64),
        edited_at_ms: row.get::<_, Option<i64>>(10).map(|s| s as u64),
        deleted: row.get(11),
        attachments: attachments_from(row.get(12)),
    }
}

/// A room from `id, name, topic, kind`.
fn room_row(row: &tokio_postgres::Row) -> Room {
    Room { id: row.get::<_, i64>(0) as u64, name: row.get(1), topic: row.get(2), kind: RoomKind::parse(row.get(3)) }
}

fn user_row(row: &tokio_postgres::Row) -> UserRecord {
    UserRecord { id: row.get::<_, i64>(0) as u64, username: row.get(1), email: row.get(2), password_hash: row.get(3) }
}

/// Whether PostgreSQL's `text` can hold `s`: it cannot hold U+0000, so no stored name has one,
/// and a lookup of such a name finds nothing (as on SQLite) rather than failing the statement.
fn storable(s: &str) -> bool {
    !s.contains('\0')
}

/// A pool of up to `size` connections, made lazily: each connection's driver task runs on the
/// runtime of the task that first needed it. With `statement_timeout`, each new connection sets
/// it for its session (a `SET`, which poolers in front of PostgreSQL pass on, where a startup
/// option may be refused).
fn pool(config: tokio_postgres::Config, size: usize, statement_timeout: Option<Duration>) -> StoreResult<Pool> {
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let mut builder = Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .runtime(Runtime::Tokio1);
    if let Some(limit) = statement_timeout {
        let set = format!("SET statement_timeout = {}", limit.as_millis());
        builder = builder.post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
            let set = set.clone();
            Box::pin(async move { client.batch_execute(&set).await.map_err(deadpool_postgres::HookError::Backend) })
        }));
    }
    builder.build().map_err(unavailable)
}

/// The least time the node's statements get before PostgreSQL cancels them, whatever the store
/// timeout (a send's wait for its commit) is set to.
const STATEMENT_TIMEOUT_FLOOR: Duration = Duration::from_secs(1);

impl PostgresStore {
    /// Builds the pool (connections are made lazily) for a `postgres://` URL.
    pub fn new(url: &str, max_connections: usize) -> StoreResult<Self> {
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Unavailable(format!("DATABASE_URL: {e}")))?;
        config.connect_timeout(Duration::from_secs(5));
        config.application_name("socketchat");
        Ok(Self { pool: pool(config.clone(), max_connections, None)?, config })
    }

    /// The same store, whose statements PostgreSQL cancels after `limit`, at least
    /// `STATEMENT_TIMEOUT_FLOOR` (its `statement_timeout`, lock waits included): a stalled
    /// database then answers a read or a request with an error (503, `Error` 7) instead of
    /// holding it for as long as it stalls. The writers' connections ([`Store::for_writer`])
    /// keep no limit: a commit the writer stopped waiting for may still complete, and is
    /// announced when it does.
    pub fn with_statement_timeout(self, limit: Duration) -> StoreResult<Self> {
        let limit = limit.max(STATEMENT_TIMEOUT_FLOOR);
        Ok(Self { pool: pool(self.config.clone(), self.pool.status().max_size, Some(limit))?, config: self.config })
    }

    /// Connects, retrying with backoff (1 s doubling to 30 s) and logging why, until the
    /// database answers; then applies pending migrations.
    pub async fn connect(url: &str, max_connections: usize) -> StoreResult<Self> {
        let store = Self::new(url, max_connections)?;
        let mut delay = Duration::from_secs(1);
        loop {
            match store.migrate().await {
                Ok(applied) => {
                    if applied > 0 {
                        tracing::info!(applied, "database migrated");
                    }
                    return Ok(store);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "PostgreSQL not usable yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Applies pending migrations under an advisory lock (two nodes starting together take
    /// turns); returns how many were applied.
    pub async fn migrate(&self) -> StoreResult<usize> {
        let mut client = self.pool.get().await?;
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
        let result = async {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (
                        version integer PRIMARY KEY,
                        name text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now())",
                )
                .await?;
            let done: Vec<i32> =
                client.query("SELECT version FROM schema_migrations", &[]).await?.iter().map(|r| r.get(0)).collect();
            let mut applied = 0;
            for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| !done.contains(v)) {
                let tx = client.transaction().await?;
                tx.batch_execute(sql).await?;
                tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name]).await?;
                tx.commit().await?;
                applied += 1;
            }
            Ok::<_, StoreError>(applied)
        }
        .await;
        client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
        result
    }

    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<tokio_postgres::Row>> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query(&stmt, params).await?)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        self.query("SELECT 1", &[]).await.map(|_| ())
    }

    fn for_writer(&self) -> Option<Arc<dyn Store>> {
        match pool(self.config.clone(), WRITER_CONNECTIONS, None) {
            Ok(pool) => Some(Arc::new(Self { pool, config: self.config.clone() })),
            Err(e) => {
                tracing::warn!(error = %e, "a writer shares the node's pool");
                None
            }
        }
    }

    async fn create_user(&self, username: &str, email: &str, password_hash: &str) -> StoreResult<UserRecord> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO users (username, email, password_hash) VALUES ($1, $2, $3)
                 RETURNING id, username, email, password_hash",
            )
            .await?;
        match client.query_one(&stmt, &[&username, &email, &password_hash]).await {
            Ok(row) => Ok(user_row(&row)),
            Err(e) => Err(conflict_field(&e).map_or_else(|| e.into(), StoreError::Conflict)),
        }
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        if !storable(email) {
            return Ok(None);
        }
        let rows = self
            .query("SELECT id, username, email, password_hash FROM users WHERE lower(email) = lower($1)", &[&email])
            .await?;
        Ok(rows.first().map(user_row))
    }

    async fn user_by_id(&self, id: u64) -> StoreResult<Option<UserRecord>> {
        let rows =
            self.query("SELECT id, username, email, password_hash FROM users WHERE id = $1", &[&big(id)]).await?;
        Ok(rows.first().map(user_row))
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        if !storable(username) {
            return Ok(None);
        }
        let rows = self
            .query(
                "SELECT id, username, email, password_hash FROM users WHERE lower(username) = lower($1)",
                &[&username],
            )
            .await?;
        Ok(rows.first().map(user_row))
    }

    async fn rooms(&self) -> StoreResult<Vec<Room>> {
        let rows = self.query("SELECT id, name, topic, kind FROM rooms WHERE kind = 'public' ORDER BY id", &[]).await?;
        Ok(rows.iter().map(room_row).collect())
    }

    async fn room_by_id(&self, id: u64) -> StoreResult<Option<Room>> {
        let rows = self.query("SELECT id, name, topic, kind FROM rooms WHERE id = $1", &[&big(id)]).await?;
        Ok(rows.first().map(room_row))
    }

    async fn room_by_name(&self, name: &str) -> StoreResult<Option<Room>> {
        if !storable(name) {
            return Ok(None);
        }
        let rows = self.query("SELECT id, name, topic, kind FROM rooms WHERE name = $1", &[&name]).await?;
        Ok(rows.first().map(room_row))
    }

    async fn create_room(&self, room: NewRoom) -> StoreResult<Room> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO rooms (name, topic, kind) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING RETURNING id",
            )
            .await?;
        let Some(row) = tx.query_opt(&insert, &[&room.name, &room.topic, &room.kind.as_str()]).await? else {
            return Err(StoreError::Conflict("name"));
        };
        let id: i64 = row.get(0);
        let mut users = Vec::new();
        let mut roles = Vec::new();
        if let Some(owner) = room.owner {
            users.push(big(owner));
            roles.push(Role::Owner.as_str());
        }
        for member in &room.members {
            users.push(big(*member));
            roles.push(Role::Member.as_str());
        }
        let add = tx
            .prepare_cached(
                "INSERT INTO memberships (room_id, user_id, role)
                 SELECT $1, u, r FROM unnest($2::bigint[], $3::text[]) AS v(u, r)
                 ON CONFLICT (room_id, user_id) DO NOTHING",
            )
            .await?;
        tx.execute(&add, &[&id, &users, &roles]).await?;
        tx.commit().await?;
        Ok(Room { id: id as u64, name: room.name, topic: room.topic, kind: room.kind })
    }

    async fn role(&self, room_id: u64, user_id: u64) -> StoreResult<Option<Role>> {
        let rows = self
            .query("SELECT role FROM memberships WHERE room_id = $1 AND user_id = $2", &[&big(room_id), &big(user_id)])
            .await?;
        Ok(rows.first().map(|r| Role::parse(r.get(0))))
    }

    async fn add_member(&self, room_id: u64, user_id: u64) -> StoreResult<bool> {
        let rows = self
            .query(
                "INSERT INTO memberships (room_id, user_id, role) VALUES ($1, $2, 'member')
                 ON CONFLICT (room_id, user_id) DO NOTHING RETURNING 1",
                &[&big(room_id), &big(user_id)],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn remove_member(&self, room_id: u64, user_id: u64) -> StoreResult<bool> {
        let rows = self
            .query(
                "DELETE FROM memberships WHERE room_id = $1 AND user_id = $2 RETURNING 1",
                &[&big(room_id), &big(user_id)],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn members(&self, room_id: u64) -> StoreResult<Vec<(u64, String, Role)>> {
        let rows = self
            .query(
                "SELECT u.id, u.username, m.role FROM memberships m JOIN users u ON u.id = m.user_id
                 WHERE m.room_id = $1 ORDER BY u.username COLLATE \"C\"",
                &[&big(room_id)],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get(1), Role::parse(r.get(2)))).collect())
    }

    async fn rooms_for(&self, user_id: u64) -> StoreResult<Vec<RoomListing>> {
        // The unread count reads at most UNREAD_CAP index entries per room.
        let rows = self
            .query(
                "SELECT r.id, r.name, r.topic, r.kind, r.last_seq, coalesce(k.last_read_seq, 0), m.role,
                        CASE WHEN r.last_seq > coalesce(k.last_read_seq, 0) THEN
                            (SELECT count(*) FROM (SELECT 1 FROM messages x
                              WHERE x.room_id = r.id AND x.seq > coalesce(k.last_read_seq, 0)
                                AND x.sender_id <> $1 AND x.kind = 0 AND NOT x.deleted LIMIT $2) c)
                        ELSE 0 END
                 FROM rooms r
                 LEFT JOIN memberships m ON m.room_id = r.id AND m.user_id = $1
                 LEFT JOIN read_marks k ON k.room_id = r.id AND k.user_id = $1
                 WHERE r.kind = 'public' OR m.user_id IS NOT NULL
                 ORDER BY r.id",
                &[&big(user_id), &big(UNREAD_CAP)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| RoomListing {
                room: room_row(r),
                head_seq: r.get::<_, i64>(4) as u64,
                last_read_seq: r.get::<_, i64>(5) as u64,
                role: r.get::<_, Option<&str>>(6).map(Role::parse),
                unread: r.get::<_, i64>(7) as u64,
            })
            .collect())
    }

    async fn mark_read(&self, user_id: u64, room_id: u64, seq: u64) -> StoreResult<u64> {
        let rows = self
            .query(
                "INSERT INTO read_marks (user_id, room_id, last_read_seq)
                 SELECT $1, id, LEAST($3, last_seq) FROM rooms WHERE id = $2
                 ON CONFLICT (user_id, room_id) DO UPDATE
                 SET last_read_seq = GREATEST(read_marks.last_read_seq, excluded.last_read_seq)
                 RETURNING last_read_seq",
                &[&big(user_id), &big(room_id), &big(seq)],
            )
            .await?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0) as u64).unwrap_or(0))
    }

    async fn append(&self, batch: Vec<NewMessage>) -> StoreResult<Vec<Appended>> {
        if batch.iter().any(NewMessage::needs_checks) {
            return Err(StoreError::Rejected("edits, deletions and attachments are stored with append_checked".into()));
        }
        let rooms: Vec<i64> = batch.iter().map(|m| big(m.room_id)).collect();
        let senders: Vec<i64> = batch.iter().map(|m| big(m.sender_id)).collect();
        let ids: Vec<&[u8]> = batch.iter().map(|m| &m.client_msg_id[..]).collect();
        let texts: Vec<&str> = batch.iter().map(|m| m.text.as_str()).collect();
        // One round trip; outside a transaction block the call commits when it returns.
        let rows = self.query(APPEND_SQL, &[&rooms, &senders, &ids, &texts, &now_ms()]).await?;
        if rows.len() != batch.len() {
            return Err(unavailable(format!("append returned {} rows for {} sends", rows.len(), batch.len())));
        }
        Ok(rows
            .iter()
            .zip(batch)
            .map(|(row, m)| Appended {
                message: StoredMessage {
                    id: row.get::<_, i64>(1) as u64,
                    room_id: m.room_id,
                    seq: row.get::<_, i64>(2) as u64,
                    sender_id: m.sender_id,
                    sender_name: m.sender_name,
                    client_msg_id: m.client_msg_id,
                    text: row.get(4),
                    sent_at_ms: row.get::<_, i64>(3) as u64,
                    kind: MessageKind::Post,
                    target_seq: None,
                    edited_at_ms: None,
                    deleted: false,
                    attachments: Vec::new(),
                },
                duplicate: row.get(5),
            })
            .collect())
    }

    async fn append_checked(&self, m: NewMessage) -> StoreResult<Appended> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let room = big(m.room_id);
        let lock = tx.prepare_cached("SELECT last_seq FROM rooms WHERE id = $1 FOR UPDATE").await?;
        let Some(head) = tx.query_opt(&lock, &[&room]).await? else {
            return Err(StoreError::Rejected(format!("no room {}", m.room_id)));
        };
        let head: i64 = head.get(0);
        let duplicate = tx.prepare_cached(DUPLICATE_SQL).await?;
        if let Some(row) = tx.query_opt(&duplicate, &[&room, &big(m.sender_id), &&m.client_msg_id[..]]).await? {
            return Ok(Appended { message: message_row(&row), duplicate: true });
        }
        let mut attachments = Vec::with_capacity(m.attachments.len());
        let target = m.target_seq.map(big);
        match m.kind {
            MessageKind::Post => {
                let stmt = tx
                    .prepare_cached(&format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1 FOR UPDATE"))
                    .await?;
                for id in &m.attachments {
                    let found = tx.query_opt(&stmt, &[&big(*id)]).await?.map(|r| upload_row(&r));
                    check_upload(&m, *id, found.as_ref())?;
                    attachments.extend(found.map(|u| u.attachment));
                }
            }
            MessageKind::Edit | MessageKind::Delete => {
                let stmt = tx
                    .prepare_cached("SELECT sender_id, kind, deleted FROM messages WHERE room_id = $1 AND seq = $2")
                    .await?;
                let found = tx.query_opt(&stmt, &[&room, &target]).await?.map(|r| {
                    (r.get::<_, i64>(0) as u64, kind_from(i64::from(r.get::<_, i16>(1))), r.get::<_, bool>(2))
                });
                check_target(&m, found)?;
            }
        }
        let seq = head + 1;
        let at = now_ms();
        let insert = tx
            .prepare_cached(
                "INSERT INTO messages (room_id, seq, sender_id, client_msg_id, text, sent_at_ms, kind, target_seq, attachments)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .await?;
        let text_of_attachments = attachments_text(&attachments);
        let row = tx
            .query_one(
                &insert,
                &[
                    &room,
                    &seq,
                    &big(m.sender_id),
                    &&m.client_msg_id[..],
                    &m.text,
                    &at,
                    &kind_code(m.kind),
                    &target,
                    &text_of_attachments,
                ],
            )
            .await?;
        let advance = tx.prepare_cached("UPDATE rooms SET last_seq = $2 WHERE id = $1").await?;
        tx.execute(&advance, &[&room, &seq]).await?;
        match m.kind {
            MessageKind::Post => {
                let ids: Vec<i64> = m.attachments.iter().map(|id| big(*id)).collect();
                let attach = tx.prepare_cached("UPDATE uploads SET room_id = $2, seq = $3 WHERE id = ANY($1)").await?;
                tx.execute(&attach, &[&ids, &room, &seq]).await?;
            }
            MessageKind::Edit => {
                let edit = tx
                    .prepare_cached("UPDATE messages SET text = $3, edited_at_ms = $4 WHERE room_id = $1 AND seq = $2")
                    .await?;
                tx.execute(&edit, &[&room, &target, &m.text, &at]).await?;
            }
            MessageKind::Delete => {
                let delete = tx
                    .prepare_cached(
                        "UPDATE messages SET text = '', deleted = true, attachments = '' WHERE room_id = $1 AND seq = $2",
                    )
                    .await?;
                tx.execute(&delete, &[&room, &target]).await?;
                // The post's earlier edits carry its text too.
                let edits = tx
                    .prepare_cached("UPDATE messages SET text = '' WHERE room_id = $1 AND target_seq = $2 AND kind = 1")
                    .await?;
                tx.execute(&edits, &[&room, &target]).await?;
                let files = tx.prepare_cached("DELETE FROM uploads WHERE room_id = $1 AND seq = $2").await?;
                tx.execute(&files, &[&room, &target]).await?;
            }
        }
        tx.commit().await?;
        let message = StoredMessage {
            id: row.get::<_, i64>(0) as u64,
            room_id: m.room_id,
            seq: seq as u64,
            sender_id: m.sender_id,
            sender_name: m.sender_name,
            client_msg_id: m.client_msg_id,
            text: m.text,
            sent_at_ms: at as u64,
            kind: m.kind,
            target_seq: m.target_seq,
            edited_at_ms: None,
            deleted: false,
            attachments,
        };
        Ok(Appended { message, duplicate: false })
    }

    async fn create_upload(&self, owner_id: u64, name: &str, content_type: &str, data: &[u8]) -> StoreResult<Upload> {
        let now = now_ms();
        let stale = now - UNATTACHED_UPLOAD_LIFETIME_MS as i64;
        self.query("DELETE FROM uploads WHERE room_id IS NULL AND created_at_ms < $1", &[&stale]).await?;
        let rows = self
            .query(
                &format!(
                    "INSERT INTO uploads (owner_id, name, content_type, size, data, created_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING {UPLOAD_COLUMNS}"
                ),
                &[&big(owner_id), &name, &content_type, &(data.len() as i64), &data, &now],
            )
            .await?;
        rows.first().map(upload_row).ok_or_else(|| unavailable("upload not stored"))
    }

    async fn upload(&self, id: u64) -> StoreResult<Option<(Upload, Vec<u8>)>> {
        let rows =
            self.query(&format!("SELECT {UPLOAD_COLUMNS}, data FROM uploads WHERE id = $1"), &[&big(id)]).await?;
        Ok(rows.first().map(|r| (upload_row(r), r.get::<_, Vec<u8>>(6))))
    }

    async fn head_seq(&self, room_id: u64) -> StoreResult<u64> {
        let rows = self.query("SELECT last_seq FROM rooms WHERE id = $1", &[&big(room_id)]).await?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0) as u64).unwrap_or(0))
    }

    async fn heads(&self, room_ids: &[u64]) -> StoreResult<Vec<(u64, u64)>> {
        let ids: Vec<i64> = room_ids.iter().map(|id| big(*id)).collect();
        let rows = self.query("SELECT id, last_seq FROM rooms WHERE id = ANY($1)", &[&ids]).await?;
        Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64)).collect())
    }

    async fn range(&self, room_id: u64, from: u64, to: u64) -> StoreResult<Vec<StoredMessage>> {
        let rows = self.query(RANGE_SQL, &[&big(room_id), &big(from), &big(to)]).await?;
        Ok(rows.iter().map(message_row).collect())
    }

    async fn page_before(&self, room_id: u64, before: Option<u64>, limit: u32) -> StoreResult<Vec<StoredMessage>> {
        let before = big(before.unwrap_or(u64::MAX));
        let rows = self.query(PAGE_SQL, &[&big(room_id), &before, &i64::from(limit)]).await?;
        let mut page: Vec<StoredMessage> = rows.iter().map(message_row).collect();
        page.reverse();
        Ok(page)
    }

    async fn revoke_token(&self, jti: &str, expires_at: u64) -> StoreResult<()> {
        let now = now_ms() / 1000;
        self.query("DELETE FROM revoked_tokens WHERE expires_at < $1", &[&now]).await?;
        self.query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
            &[&jti, &big(expires_at)],
        )
        .await?;
        Ok(())
    }

    async fn is_revoked(&self, jti: &str) -> StoreResult<bool> {
        Ok(!self.query("SELECT 1 FROM revoked_tokens WHERE jti = $1", &[&jti]).await?.is_empty())
    }

    async fn record_seen(&self, seen: Vec<(u64, u64)>) -> StoreResult<()> {
        let (ids, times): (Vec<i64>, Vec<i64>) = seen.iter().map(|(id, ms)| (big(*id), big(*ms))).unzip();
        self.query(
            "UPDATE users u SET last_seen_ms = GREATEST(u.last_seen_ms, v.ms)
             FROM unnest($1::bigint[], $2::bigint[]) AS v(id, ms) WHERE u.id = v.id",
            &[&ids, &times],
        )
        .await?;
        Ok(())
    }

    async fn last_seen(&self, ids: &[u64]) -> StoreResult<Vec<(u64, u64)>> {
        let ids: Vec<i64> = ids.iter().map(|id| big(*id)).collect();
        let rows = self
            .query("SELECT id, last_seen_ms FROM users WHERE id = ANY($1) AND last_seen_ms IS NOT NULL", &[&ids])
            .await?;
        Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64)).collect())
    }
}

/// Maps a unique violation on `users` to the field it concerns.
fn conflict_field(e: &tokio_postgres::Error) -> Option<&'static str> {
    let db = e.as_db_error()?;
    if db.code() != &SqlState::UNIQUE_VIOLATION {
        return None;
    }
    match db.constraint() {
        Some("users_username_key") => Some("username"),
        Some("users_email_key") => Some("email"),
        _ => None,
    }
}
