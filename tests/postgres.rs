//! Nodes on a shared, real PostgreSQL: concurrent writers with retries across nodes, and a
//! database restart in the middle of a send loop.

mod support;

use socketchat::wire::{self, ClientFrame, ErrorCode, ServerFrame};
use std::collections::{BTreeMap, HashMap};
use support::postgres::Postgres;
use support::*;

const SECRET: &str = "a test secret that is long enough for HS256 keys";

async fn node(pg: &Postgres) -> TestServer {
    node_with(pg, |c| c.send_burst = 100_000).await
}

/// A node on `pg`, with `tweak` applied to its settings.
async fn node_with(pg: &Postgres, tweak: impl FnOnce(&mut socketchat::config::Config)) -> TestServer {
    let url = pg.url();
    TestServer::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.database_url = Some(url);
        c.jwt_secret = Some(SECRET.into());
        tweak(c);
    })
    .await
}

/// A session of its own holding a lock (`sql`, run in a transaction) until released.
struct Held(tokio_postgres::Client);

async fn hold(pg: &Postgres, sql: &str) -> Held {
    let (db, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    db.batch_execute(&format!("BEGIN; {sql}")).await.unwrap();
    Held(db)
}

impl Held {
    /// Ends the transaction, and the lock with it.
    async fn release(self) {
        self.0.batch_execute("ROLLBACK").await.unwrap();
    }
}

fn cmid(client: usize, n: usize) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(client as u64).to_be_bytes());
    id[8..].copy_from_slice(&(n as u64).to_be_bytes());
    id
}

/// Sends through the client library and waits for the answer to this send: Ok(ack) or
/// Err(error frame).
async fn send_for_ack(client: &mut User, room: &str, id: [u8; 16], text: &str) -> Result<wire::Ack, wire::ErrorFrame> {
    let frame = ClientFrame::Send(wire::Send {
        room: room.into(),
        client_msg_id: id,
        text: text.into(),
        attachments: Vec::new(),
    });
    match tokio::time::timeout(WAIT, client.store(frame)).await.expect("an answer within the wait") {
        Ok(ack) => Ok(ack),
        Err(socketchat_client::ClientError::Refused(e)) => Err(e),
        Err(e) => panic!("connection failed: {e}"),
    }
}

/// (room name, seq, message id, client_msg_id, sent_at_ms) of every stored message.
type Row = (String, i64, i64, Vec<u8>, i64);

async fn stored_rows(pg: &Postgres) -> Vec<Row> {
    let (db, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    db.query(
        "SELECT r.name, m.seq, m.id, m.client_msg_id, m.sent_at_ms FROM messages m JOIN rooms r ON r.id = m.room_id ORDER BY r.name, m.seq",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_retries_and_duplicates_keep_every_room_gap_free() {
    const CLIENTS: usize = 6;
    const SENDS: usize = 60;
    let pg = Postgres::start();
    let (a, b) = (node(&pg).await, node(&pg).await);
    let token = a.register("alice").await;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (home, other) = if c % 2 == 0 { (a.addr, b.addr) } else { (b.addr, a.addr) };
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let (mut main, _) = user_at(home, &token).await;
            let (mut retry, _) = user_at(other, &token).await;
            for client in [&mut main, &mut retry] {
                for room in ["general", "design"] {
                    join_and_replay(client, room, None).await;
                }
            }
            let mut acks = Vec::new();
            for n in 0..SENDS {
                let room = if n % 3 == 0 { "design" } else { "general" };
                let id = cmid(c, n);
                let first = send_for_ack(&mut main, room, id, &format!("c{c} n{n}")).await.expect("ack");
                acks.push((room.to_owned(), first.clone()));
                if n % 4 == 0 {
                    // A retry of the same send on the other node: the identical ack.
                    let again = send_for_ack(&mut retry, room, id, &format!("c{c} n{n}")).await.expect("ack");
                    assert_eq!(again, first, "retry on the other node");
                }
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.unwrap());
    }
    let rows = stored_rows(&pg).await;
    assert_eq!(rows.len(), CLIENTS * SENDS, "one row per distinct send, no duplicates");
    let mut per_room: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (room, seq, ..) in &rows {
        per_room.entry(room.clone()).or_default().push(*seq);
    }
    for (room, seqs) in &per_room {
        assert_eq!(*seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{room}: seqs 1..N");
    }
    let by_key: HashMap<(String, i64), &Row> = rows.iter().map(|r| ((r.0.clone(), r.1), r)).collect();
    for (room, ack) in &acks {
        let row = by_key[&(room.clone(), ack.seq as i64)];
        assert_eq!(
            (row.2 as u64, row.3.as_slice(), row.4 as u64),
            (ack.message_id, &ack.client_msg_id[..], ack.sent_at_ms),
            "the ack matches the stored row"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_during_a_send_loop_loses_nothing_and_duplicates_nothing() {
    const SENDS: usize = 120;
    let mut pg = Postgres::start();
    let server = node(&pg).await;
    let token = server.register("alice").await;
    let (mut client, _) = server.connect_hello(&token).await;
    join_and_replay(&mut client, "general", None).await;

    let mut acks = Vec::new();
    let mut unavailable = 0;
    let mut readyz_while_down = None;
    for n in 0..SENDS {
        if n == SENDS / 3 {
            pg.stop();
            let status = server.http.get(server.url("/readyz")).send().await.unwrap().status().as_u16();
            readyz_while_down = Some(status);
            // The REST API says so too, with when to come back.
            let listed = server.get("/api/channels", &token).await;
            let retry = listed.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            assert_eq!(
                (listed.status().as_u16(), retry.as_deref()),
                (503, Some("1")),
                "a request that needs the store"
            );
        }
        let id = cmid(0, n);
        loop {
            match send_for_ack(&mut client, "general", id, &format!("n{n}")).await {
                Ok(ack) => {
                    acks.push(ack);
                    break;
                }
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::Unavailable.code(), "only retryable errors: {e:?}");
                    unavailable += 1;
                    if unavailable == 3 {
                        pg.start_again();
                    }
                    // The protocol says when to retry; do as a client must.
                    tokio::time::sleep(std::time::Duration::from_millis(e.retry_after_ms.unwrap_or(1000).into())).await;
                }
            }
        }
    }
    assert_eq!(readyz_while_down, Some(503), "/readyz says 503 while the database is down");
    assert!(unavailable >= 3, "sends failed (retryably) while the database was down");
    assert_eq!(server.http.get(server.url("/readyz")).send().await.unwrap().status(), 200);

    let rows = stored_rows(&pg).await;
    assert_eq!(rows.len(), SENDS, "every send stored exactly once");
    assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), (1..=SENDS as i64).collect::<Vec<_>>(), "gap-free");
    for (ack, row) in acks.iter().zip(&rows) {
        assert_eq!((ack.seq as i64, ack.message_id as i64, &ack.client_msg_id[..]), (row.1, row.2, row.3.as_slice()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_its_database_waits_for_it() {
    let mut pg = Postgres::init();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    // The database does not run yet: without retrying, start() would fail at once.
    let starting = tokio::spawn(async move {
        TestServer::start_with(dir, move |c| {
            c.database_url = Some(url);
            c.jwt_secret = Some(SECRET.into());
        })
        .await
    });
    pg.start_again();
    pg.create_database();
    let server = starting.await.expect("the node started once the database was there");
    assert_eq!(server.http.get(server.url("/readyz")).send().await.unwrap().status(), 200);
    let token = server.register("late").await;
    let (mut client, _) = server.connect_hello(&token).await;
    join_and_replay(&mut client, "general", None).await;
    assert_eq!(send_for_ack(&mut client, "general", cmid(1, 1), "hello").await.unwrap().seq, 1);
}

/// A row lock holds the room longer than the store timeout: the sender hears that the outcome
/// is unknown (never "not stored"), the send commits once the lock goes, the room's members
/// receive it live, and the sender's retry gets the original ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_outlasts_the_store_timeout_is_announced_when_it_commits() {
    let pg = Postgres::start();
    let server = node_with(&pg, |c| c.store_timeout_ms = 300).await;
    let (mut alice, mut bob) = alice_and_bob_in(&server, "general").await;

    let lock = hold(&pg, "SELECT 1 FROM rooms WHERE name = 'general' FOR UPDATE").await;

    let id = cmid(1, 1);
    let err = send_for_ack(&mut alice, "general", id, "held up").await.expect_err("the store is stalled");
    assert_eq!(err.code, ErrorCode::Unavailable.code());
    assert!(!err.message.contains("not stored"), "the outcome is unknown: {}", err.message);
    assert!(err.message.contains("may still be stored"), "{}", err.message);
    lock.release().await;

    let delivered = bob.recv_until(pick::message).await;
    assert_eq!((delivered.seq, delivered.text.as_str()), (1, "held up"), "announced once it committed");
    let ack = send_for_ack(&mut alice, "general", id, "held up").await.expect("the retry is acked");
    assert_eq!((ack.seq, ack.message_id), (1, delivered.message_id), "the original row");
    assert_eq!(stored_rows(&pg).await.len(), 1, "stored once");
}

/// A table lock stalls every read of the rooms: an HTTP request that needs them is answered
/// `503` with `Retry-After: 1` once the store timeout passes (PostgreSQL cancels the statement),
/// instead of waiting for as long as the stall lasts; once the lock goes, it is answered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_database_stalls_is_answered_503_after_the_store_timeout() {
    let pg = Postgres::start();
    let server = node_with(&pg, |c| c.store_timeout_ms = 300).await;
    let token = server.register("alice").await;
    assert_eq!(server.get("/api/channels", &token).await.status(), 200);

    let lock = hold(&pg, "LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE").await;
    let stalled = tokio::time::timeout(std::time::Duration::from_secs(20), server.get("/api/channels", &token))
        .await
        .expect("answered while the database stalls");
    assert_eq!(stalled.status(), 503);
    assert_eq!(stalled.headers()["retry-after"], "1");
    lock.release().await;
    assert_eq!(server.get("/api/channels", &token).await.status(), 200, "answered again once the lock goes");
}

/// While the server answers a request from its store in line (a `Join`'s head and replay), it
/// reads nothing from the connection, so the answer to its lag probe waits in the socket: a
/// client whose `Join` the database stalls past the allowed lag gets `Error` 7 for it, and is
/// not cut as slow (4001): the answer that waited is read before the lag is judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_request_the_database_stalls_is_not_cut_as_slow() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let pg = Postgres::start();
    let server = node_with(&pg, |c| {
        c.store_timeout_ms = 1000;
        c.max_lag_ms = 200;
    })
    .await;
    let token = server.register("alice").await;
    // A bare WebSocket: the test decides when the server's Pings are read (and so answered).
    let (mut alice, _) = server.connect_hello_raw(&token).await;
    let lock = hold(&pg, "LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE").await;
    // Each round: a write that carries a probe (the server probes at most every max_lag / 2, a
    // wait for time itself), its frame read but not the probe behind it, then a Join whose
    // head the lock holds for the statement timeout (1 s) while the probe's answer waits.
    for (round, room) in ["general", "engineering", "design", "support"].into_iter().enumerate() {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        alice.send(&ClientFrame::Ping(wire::Ping { nonce: round as u64 })).await;
        alice.recv_until(|f| matches!(f, ServerFrame::Pong(p) if p.nonce == round as u64).then_some(())).await;
        alice.send(&join(room, None)).await;
        loop {
            let next = tokio::time::timeout(WAIT, alice.ws.next()).await.expect("a frame within the wait");
            match next.expect("open").expect("no transport error") {
                Message::Binary(bytes) => match wire::decode::<ServerFrame>(&bytes, usize::MAX).unwrap() {
                    ServerFrame::Error(e) if e.room.as_deref() == Some(room) => {
                        assert_eq!(e.code, ErrorCode::Unavailable.code(), "{e:?}");
                        break;
                    }
                    ServerFrame::GoAway(g) => panic!("cut in round {round}: {g:?}"),
                    _ => {}
                },
                Message::Close(close) => panic!("closed in round {round}: {close:?}"),
                _ => {}
            }
        }
    }
    lock.release().await;
}

/// A WebTransport CONNECT whose token cannot be checked against the revocation list (the table
/// locked past the store timeout) is answered `503`, to retry, not `401`, which would send the
/// user back to the login form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webtransport_connect_the_store_cannot_check_is_answered_503() {
    let pg = Postgres::start();
    let server = node_with(&pg, |c| c.store_timeout_ms = 300).await;
    let token = server.register("alice").await;
    let lock = hold(&pg, "LOCK TABLE revoked_tokens IN ACCESS EXCLUSIVE MODE").await;
    let h3 = support::wt::raw::RawH3::connect(&server).await;
    let (_send, mut recv) = h3.send_connect(&token).await;
    let head = support::wt::raw::response_head(&mut recv).await;
    assert_eq!(head.get(2), Some(&0xdc), "a 503 response; HEADERS block {head:02x?}");
    lock.release().await;
}

/// A logout whose token the store cannot check (revoked_tokens locked past the store timeout)
/// is answered 503 and clears nothing: the token may still be valid. Once the store answers,
/// the logout revokes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_the_store_cannot_check_is_answered_503_and_revokes_once_it_can() {
    let pg = Postgres::start();
    let server = node_with(&pg, |c| c.store_timeout_ms = 300).await;
    let token = server.register("alice").await;
    let lock = hold(&pg, "LOCK TABLE revoked_tokens IN ACCESS EXCLUSIVE MODE").await;
    let logout = || server.http.post(server.url("/api/auth/logout")).header("cookie", format!("token={token}")).send();
    let refused = logout().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(refused.headers().get("set-cookie").is_none(), "the cookie is not cleared");
    lock.release().await;
    assert_eq!(server.get("/api/auth/me", &token).await.status(), 200, "not revoked");
    assert_eq!(logout().await.unwrap().status(), 204);
    assert_eq!(server.get("/api/auth/me", &token).await.status(), 401, "revoked");
}

/// A connection's sends are pipelined: while one waits for its commit (a row lock holds the
/// room), the connection still reads, answers pings and queues more sends; the acks then come
/// in send order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_keeps_reading_while_its_sends_commit() {
    let pg = Postgres::start();
    let server = node(&pg).await;
    let token = server.register("alice").await;
    let (mut alice, _) = server.connect_hello(&token).await;
    join_and_replay(&mut alice, "general", None).await;
    let lock = hold(&pg, "SELECT 1 FROM rooms WHERE name = 'general' FOR UPDATE").await;

    for n in 0..3 {
        alice
            .send(&ClientFrame::Send(wire::Send {
                room: "general".into(),
                client_msg_id: cmid(1, n),
                text: format!("n{n}"),
                attachments: Vec::new(),
            }))
            .await;
    }
    alice.send(&ClientFrame::Ping(wire::Ping { nonce: 77 })).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(deadline, alice.recv()).await {
            Ok(ServerFrame::Pong(wire::Ping { nonce: 77 })) => break,
            Ok(ServerFrame::Ack(a)) => panic!("acked while the room is locked: {a:?}"),
            Ok(_) => {}
            Err(_) => panic!("the ping was not answered while the sends wait for the lock"),
        }
    }
    lock.release().await;
    let mut acked = Vec::new();
    while acked.len() < 3 {
        if let ServerFrame::Ack(a) = alice.recv().await {
            acked.push((a.client_msg_id, a.seq));
        }
    }
    assert_eq!(acked, vec![(cmid(1, 0), 1), (cmid(1, 1), 2), (cmid(1, 2), 3)], "acks and seqs in send order");
}

/// The send path has PostgreSQL connections of its own: with every pooled connection stuck
/// behind a lock (a registration waiting on `users`), a send still commits at once instead of
/// waiting for the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_commit_while_every_pooled_connection_is_stuck() {
    let pg = Postgres::start();
    let server = node_with(&pg, |c| c.db_pool_size = 1).await;
    let token = server.register("alice").await;
    let (mut alice, _) = server.connect_hello(&token).await;
    join_and_replay(&mut alice, "general", None).await;

    let lock = hold(&pg, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await;
    let (http, addr) = (server.http.clone(), server.addr);
    let bob = tokio::spawn(async move { register_at(&http, addr, "bob").await });
    // The pool's one connection is taken once a node's backend waits for the lock.
    let (watch, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while watch
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'socketchat' AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(std::time::Instant::now() < deadline, "the registration never waited for the lock");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // The pool would make a waiting send fail after 5 s: the ack must come well before.
    let ack = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        send_for_ack(&mut alice, "general", cmid(1, 0), "while the pool is stuck"),
    )
    .await
    .expect("no answer while the pool is stuck")
    .expect("the send was refused while the pool is stuck");
    assert_eq!(ack.seq, 1);

    lock.release().await;
    assert!(!bob.await.unwrap().is_empty(), "the registration goes through once the lock is gone");
}
