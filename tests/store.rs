//! The store contract, run against every backend: the embedded SQLite file and a real
//! PostgreSQL that the harness starts.

mod support;

use socketchat::store::{NewMessage, PostgresStore, SqliteStore, Store, postgres};
use socketchat::wire::UserRef;
use support::{conformance, postgres::Postgres};

#[tokio::test]
async fn sqlite_passes_the_store_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("chat.db")).unwrap();
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn sqlite_reopens_without_reseeding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.db");
    let first = SqliteStore::open(&path).unwrap();
    first.create_user("keep", "keep@example.com", "h").await.unwrap();
    first.revoke_token("logged-out", u64::MAX / 2).await.unwrap();
    first.revoke_token("long-expired", 1).await.unwrap();
    drop(first);
    let again = SqliteStore::open(&path).unwrap();
    assert!(again.is_revoked("logged-out").await.unwrap(), "revocations survive a restart");
    assert!(!again.is_revoked("never-revoked").await.unwrap());
    assert_eq!(again.rooms().await.unwrap().len(), 4);
    assert!(again.user_by_email("KEEP@example.com").await.unwrap().is_some());
}

/// A database from before deletions took their post's edits with them: upgrading empties the
/// edits of posts deleted then, and only those.
#[tokio::test]
async fn upgrading_sqlite_empties_the_edits_of_posts_deleted_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.db");
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        for sql in [
            include_str!("../migrations/sqlite/0001_init.sql"),
            include_str!("../migrations/sqlite/0002_last_seen.sql"),
            include_str!("../migrations/sqlite/0003_channels.sql"),
        ] {
            db.execute_batch(sql).unwrap();
        }
        db.execute_batch(
            "PRAGMA user_version = 3;
             INSERT INTO users (id, username, email, password_hash, created_at_ms) VALUES (1, 'a', 'a@x.y', 'h', 0);
             INSERT INTO messages (room_id, seq, sender_id, client_msg_id, text, sent_at_ms, kind, target_seq, deleted)
             VALUES (1, 1, 1, zeroblob(16), '', 0, 0, NULL, 1),
                    (1, 2, 1, randomblob(16), 'secret, edited', 0, 1, 1, 0),
                    (1, 3, 1, randomblob(16), '', 0, 2, 1, 0),
                    (1, 4, 1, randomblob(16), 'kept', 0, 0, NULL, 0),
                    (1, 5, 1, randomblob(16), 'kept, edited', 0, 1, 4, 0);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let texts: Vec<(u64, String)> = store.range(1, 1, 5).await.unwrap().into_iter().map(|m| (m.seq, m.text)).collect();
    let expected = [(1, ""), (2, ""), (3, ""), (4, "kept"), (5, "kept, edited")];
    assert_eq!(texts, expected.map(|(seq, text)| (seq, text.to_owned())));
}

#[tokio::test]
async fn postgres_passes_the_store_conformance_suite() {
    let pg = Postgres::start();
    let store = PostgresStore::connect(&pg.url(), 4).await.unwrap();
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn postgres_migrations_run_once_even_when_nodes_start_together() {
    let pg = Postgres::start();
    let stores: Vec<PostgresStore> = (0..4).map(|_| PostgresStore::new(&pg.url(), 2).unwrap()).collect();
    let applied = futures_util::future::join_all(stores.iter().map(|s| s.migrate())).await;
    let total: usize = applied.into_iter().map(|r| r.expect("migrate")).sum();
    let files = std::fs::read_dir("migrations/postgres").unwrap().count();
    assert_eq!(total, files, "each migration applied by exactly one node");
    assert_eq!(stores[0].migrate().await.unwrap(), 0, "nothing left to apply");
    let names: Vec<String> = stores[0].rooms().await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["general", "engineering", "design", "support"], "seeded once");
}

#[tokio::test]
async fn postgres_history_and_resume_reads_use_the_room_seq_index() {
    let pg = Postgres::start();
    let store = PostgresStore::connect(&pg.url(), 4).await.unwrap();
    let user = store.create_user("alice", "alice@example.com", "h").await.unwrap();
    for batch in 0..10u32 {
        let messages = (0..1000u32)
            .map(|i| {
                let n = batch * 1000 + i;
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&n.to_be_bytes());
                NewMessage::post(1, &UserRef { id: user.id, username: "alice".into() }, id, format!("m{n}"))
            })
            .collect();
        store.append(messages).await.unwrap();
    }
    let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute("ANALYZE").await.unwrap();
    let plan =
        |rows: Vec<tokio_postgres::Row>| rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n");
    let range =
        plan(client.query(&format!("EXPLAIN {}", postgres::RANGE_SQL), &[&1i64, &5000i64, &5050i64]).await.unwrap());
    let page =
        plan(client.query(&format!("EXPLAIN {}", postgres::PAGE_SQL), &[&1i64, &7000i64, &50i64]).await.unwrap());
    for (name, plan) in [("range", &range), ("page", &page)] {
        assert!(plan.contains("Index Scan") && plan.contains("_pkey"), "{name} uses the (room_id, seq) key:\n{plan}");
        assert!(!plan.contains("Seq Scan on messages"), "{name} scans no partition:\n{plan}");
        assert_eq!(plan.matches("on messages_p").count(), 1, "{name} touches one partition:\n{plan}");
    }
    assert_eq!(store.range(1, 5000, 5050).await.unwrap().len(), 51);
}

/// Nine sends to one room go through the writer at once, in one batch; the fifth is one the
/// store refuses (`bad`). Only its sender gets the error, terminal; the others are stored with
/// seqs 1..=8 in the order they were sent.
async fn a_refused_send_fails_only_its_sender(store: std::sync::Arc<dyn Store>, bad: NewMessage) {
    use socketchat::store::StoreError;
    use std::sync::Arc;
    let user = store.create_user("alice", "alice@example.com", "h").await.unwrap();
    let rooms = Arc::new(socketchat::rooms::RoomDirectory::new(store.rooms().await.unwrap()));
    let hub = Arc::new(socketchat::hub::Hub::default());
    let writer = socketchat::writer::Writer::start(
        store.clone(),
        hub,
        Arc::new(socketchat::bus::LocalBus),
        rooms,
        socketchat::writer::WriterLimits { shards: 1, ..Default::default() },
    );
    let sends: Vec<NewMessage> = (0..9u8)
        .map(|i| {
            if i == 4 {
                return bad.clone();
            }
            NewMessage::post(1, &UserRef { id: user.id, username: "alice".into() }, [i; 16], format!("m{i}"))
        })
        .collect();
    let results = futures_util::future::join_all(sends.into_iter().map(|m| writer.append(m))).await;
    assert_eq!(writer.counters().sends.load(std::sync::atomic::Ordering::Relaxed), 9);
    let mut seqs = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(appended) => seqs.push(appended.message.seq),
            Err(StoreError::Rejected(_)) if i == 4 => {}
            other => panic!("send {i}: {other:?}"),
        }
    }
    assert_eq!(seqs, (1..=8).collect::<Vec<u64>>(), "everyone else stored, in order, without a gap");
    assert_eq!(store.head_seq(1).await.unwrap(), 8);
}

#[tokio::test]
async fn sqlite_isolates_a_send_its_constraints_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("chat.db")).unwrap());
    let ghost = NewMessage::post(
        1,
        &UserRef { id: 999_999, username: "removed".into() },
        [99; 16],
        "from a user no longer in the database".into(),
    );
    a_refused_send_fails_only_its_sender(store, ghost).await;
}

#[tokio::test]
async fn postgres_isolates_a_send_with_text_it_cannot_hold() {
    let pg = Postgres::start();
    let store = std::sync::Arc::new(PostgresStore::connect(&pg.url(), 4).await.unwrap());
    let nul = NewMessage::post(1, &UserRef { id: 1, username: "alice".into() }, [99; 16], "nul \0 inside".into());
    a_refused_send_fails_only_its_sender(store, nul).await;
}
