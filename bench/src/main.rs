//! `socketchat-load`: load scenarios for SocketChat.
//!
//! `store`: acknowledged sends per second through the server's send path below the transport —
//! the group-commit writer and the store (PostgreSQL or SQLite) — with N concurrent senders,
//! each waiting for its ack before sending again, spread over R rooms. `--mode single` bypasses
//! the writer and commits every send on its own (the baseline group commit is measured against).
//! Prints one JSON line per run.
//!
//! `idle`, `relay`: memory of idle connections; delivery latency across nodes. `connect`,
//! `presence-latency`: see `presence.rs`.

use socketchat_bench::fanout;
use socketchat_bench::measure::{cpu_seconds, percentile_ms, resident_kib};
use socketchat_bench::peer::{Peer, PeerConnection, Target};
mod presence;

use clap::{Parser, Subcommand, ValueEnum};
use socketchat::bus::LocalBus;
use socketchat::hub::Hub;
use socketchat::rooms::RoomDirectory;
use socketchat::store::{NewMessage, PostgresStore, SqliteStore, Store};
use socketchat::writer::{Writer, WriterLimits};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "socketchat-load", about = "SocketChat load scenarios")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Acked sends per second through the writer and the store.
    Store(StoreArgs),
    /// Memory of idle WebSocket connections on a running server (SocketChat, the ceiling or
    /// the Socket.IO peer).
    Idle(IdleArgs),
    /// Delivery latency from send to receipt, senders on one node and receivers on another
    /// (or the same node, for the baseline).
    Relay(RelayArgs),
    /// Connects per second and memory per connection with many distinct users.
    Connect(presence::ConnectArgs),
    /// How long a presence change takes to reach the connections that show it.
    PresenceLatency(presence::LatencyArgs),
    /// R rooms × M members, S senders at a target rate: deliveries/s, latency, and every
    /// receiver checked for loss, duplicates and order.
    Fanout(fanout::FanoutArgs),
    /// C senders over the socket, each waiting for its ack: acked sends/s.
    Persist(fanout::PersistArgs),
}

#[derive(Parser)]
struct RelayArgs {
    /// HTTP address of the node the senders use.
    #[arg(long, default_value = "127.0.0.1:8081")]
    send_addr: std::net::SocketAddr,
    /// HTTP address of the node the receivers use (the same one for the single-node baseline).
    #[arg(long, default_value = "127.0.0.1:8082")]
    recv_addr: std::net::SocketAddr,
    /// Sending connections.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Receiving connections, all in the room.
    #[arg(long, default_value_t = 100)]
    receivers: usize,
    /// Messages per second, all senders together (deliveries/s = rate × receivers).
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Measured seconds (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Room to use.
    #[arg(long, default_value = "general")]
    room: String,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Registers a throwaway user on `addr` and returns its cookie.
async fn bench_cookie(addr: std::net::SocketAddr, prefix: &str) -> Result<String, Box<dyn std::error::Error>> {
    let name = format!("{prefix}{:08x}", rand::random::<u32>());
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/auth/register"))
        .json(&serde_json::json!({"username": name, "email": format!("{name}@bench.invalid"), "password": "bench password"}))
        .send()
        .await?;
    Ok(response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or("no cookie")?
        .to_owned())
}

/// Connects, says Hello, joins `room` and waits for `Joined`.
async fn joined_socket(addr: std::net::SocketAddr, cookie: &str, room: &str) -> Result<Ws, Box<dyn std::error::Error>> {
    use futures_util::{SinkExt, StreamExt};
    use socketchat::wire::{self, ClientFrame, ServerFrame};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
    let mut request = format!("ws://{addr}/ws").into_client_request()?;
    request.headers_mut().insert("cookie", HeaderValue::from_str(cookie)?);
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await?;
    for frame in [
        ClientFrame::Hello(wire::Hello { version: wire::PROTOCOL_VERSION, client: "bench".into() }),
        ClientFrame::Join(wire::Join { room: room.into(), after_seq: None }),
    ] {
        ws.send(Message::Binary(wire::encode(&frame).into())).await?;
    }
    while let Some(message) = ws.next().await {
        if let Message::Binary(bytes) = message?
            && let Ok(ServerFrame::Joined(_)) = wire::decode::<ServerFrame>(&bytes, usize::MAX)
        {
            return Ok(ws);
        }
    }
    Err("closed before Joined".into())
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Senders stamp each message with their send time; receivers measure send → receipt.
async fn relay_scenario(args: RelayArgs) -> Result<(), Box<dyn std::error::Error>> {
    use futures_util::{SinkExt, StreamExt};
    use socketchat::wire::{self, ClientFrame, ServerFrame};
    use tokio_tungstenite::tungstenite::Message;
    let send_cookie = bench_cookie(args.send_addr, "tx").await?;
    let recv_cookie = bench_cookie(args.recv_addr, "rx").await?;
    let warmup = Duration::from_secs(2);
    let start = Instant::now();
    let measure_from = unix_micros() + warmup.as_micros() as u64;
    let measure_to = measure_from + args.seconds * 1_000_000;
    let mut receivers = Vec::new();
    for _ in 0..args.receivers {
        let mut ws = joined_socket(args.recv_addr, &recv_cookie, &args.room).await?;
        receivers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut received = 0u64;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
            loop {
                let next = tokio::time::timeout_at(deadline, ws.next()).await;
                // The server's Pings (its lag probe, RFC 6455 § 5.5.2) come between frames at
                // any time: tungstenite answers them; only a close or an error ends the wait.
                let bytes = match next {
                    Ok(Some(Ok(Message::Binary(bytes)))) => bytes,
                    Ok(Some(Ok(_))) => continue,
                    _ => break,
                };
                if let Ok(ServerFrame::Message(m)) = wire::decode::<ServerFrame>(&bytes, usize::MAX)
                    && let Some(sent) = m.text.split(' ').next().and_then(|t| t.parse::<u64>().ok())
                {
                    if sent >= measure_from && sent < measure_to {
                        received += 1;
                        latencies.push(u32::try_from(unix_micros().saturating_sub(sent)).unwrap_or(u32::MAX));
                    }
                    // Concurrent senders' messages can commit slightly out of send order:
                    // stop only well past the window.
                    if sent >= measure_to + 1_000_000 {
                        break;
                    }
                }
            }
            (received, latencies)
        }));
    }
    let per_sender = Duration::from_secs_f64(args.senders as f64 / args.rate as f64);
    let mut senders = Vec::new();
    for s in 0..args.senders {
        let ws = joined_socket(args.send_addr, &send_cookie, &args.room).await?;
        let room = args.room.clone();
        senders.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            // Acks and the room's own messages are read and dropped.
            tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
            let mut tick = tokio::time::interval(per_sender);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut counted = 0u64;
            let mut n = 0u64;
            loop {
                tick.tick().await;
                let now = unix_micros();
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&(s as u64).to_be_bytes());
                id[8..].copy_from_slice(&n.to_be_bytes());
                n += 1;
                let frame = ClientFrame::Send(wire::Send {
                    room: room.clone(),
                    client_msg_id: id,
                    text: format!("{now} bench"),
                    attachments: Vec::new(),
                });
                if sink.send(Message::Binary(wire::encode(&frame).into())).await.is_err() {
                    break;
                }
                if now >= measure_from && now < measure_to {
                    counted += 1;
                }
                if now >= measure_to + 1_500_000 {
                    break;
                }
            }
            counted
        }));
    }
    let mut sent = 0u64;
    for s in senders {
        sent += s.await?;
    }
    let mut received = 0u64;
    let mut latencies = Vec::new();
    for r in receivers {
        let (n, l) = tokio::time::timeout(Duration::from_secs(10), r).await??;
        received += n;
        latencies.extend(l);
    }
    latencies.sort_unstable();
    let expected = sent * args.receivers as u64;
    println!(
        "{}",
        serde_json::json!({
            "scenario": "relay",
            "cross_node": args.send_addr != args.recv_addr,
            "senders": args.senders,
            "receivers": args.receivers,
            "messages_sent": sent,
            "deliveries_per_s": (received as f64 / args.seconds as f64).round(),
            "missing": expected.saturating_sub(received),
            "latency_p50_ms": percentile_ms(&latencies, 0.50),
            "latency_p99_ms": percentile_ms(&latencies, 0.99),
            "latency_max_ms": percentile_ms(&latencies, 1.0),
            "elapsed_s": start.elapsed().as_secs(),
        })
    );
    if expected > received {
        return Err(format!("relay: {} of {expected} deliveries missing", expected - received).into());
    }
    Ok(())
}

#[derive(Parser)]
struct IdleArgs {
    /// The server's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// The server's process id (its resident memory is read from /proc).
    #[arg(long)]
    pid: u32,
    /// Connections to open.
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// The server: SocketChat (a user is registered), the ceiling or the Socket.IO peer
    /// (a token is minted with `--jwt-secret`).
    #[arg(long, value_enum, default_value_t = Peer::Socketchat)]
    peer: Peer,
    /// The server's JWT secret, where a token is minted.
    #[arg(long, env = "JWT_SECRET")]
    jwt_secret: Option<String>,
}

/// Opens N connections of one user (SocketChat: Hello, Join general; the peer: the namespace,
/// `join` general), waits 2 s for the server to settle, and reports its resident memory before
/// and after, per connection.
async fn idle_scenario(args: IdleArgs) -> Result<(), Box<dyn std::error::Error>> {
    let token = match (args.peer, &args.jwt_secret) {
        (Peer::Socketchat, _) => bench_cookie(args.addr, "idle").await?.trim_start_matches("token=").to_owned(),
        (_, Some(secret)) => fanout::mint(&socketchat::auth::TokenKeys::new(secret.as_bytes(), 3600), 40_000_000)
            .map_err(|e| e as Box<dyn std::error::Error>)?,
        (_, None) => return Err("--jwt-secret (or JWT_SECRET) is needed to mint a token".into()),
    };
    let target = Target::websocket(args.peer, args.addr);
    let before = resident_kib(args.pid);
    let mut held = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        // Joined, so the server holds the full per-connection state.
        let opened = async {
            let mut conn = PeerConnection::open(&target, &token, "bench-idle").await?;
            conn.join("general").await?;
            Ok::<_, fanout::BoxError>(conn)
        };
        held.push(opened.await.map_err(|e| e as Box<dyn std::error::Error>)?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = resident_kib(args.pid);
    let per = (after.saturating_sub(before)) as f64 / args.connections as f64;
    println!(
        "{}",
        serde_json::json!({
            "scenario": "idle",
            "peer": args.peer,
            "connections": args.connections,
            "server_rss_before_kib": before,
            "server_rss_after_kib": after,
            "kib_per_connection": (per * 10.0).round() / 10.0,
        })
    );
    drop(held);
    Ok(())
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Mode {
    /// Through the group-commit writer (what the server does).
    Group,
    /// One transaction per send, no batching (baseline).
    Single,
}

#[derive(Parser)]
struct StoreArgs {
    /// PostgreSQL URL; without it a SQLite file in a temp dir is used.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Concurrent senders, each with one send in flight.
    #[arg(long, default_value_t = 64)]
    senders: usize,
    /// Rooms the senders are spread over.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Message text length in bytes.
    #[arg(long, default_value_t = 100)]
    text_bytes: usize,
    /// Group commit or one commit per send.
    #[arg(long, value_enum, default_value_t = Mode::Group)]
    mode: Mode,
    /// Group-commit writers (rooms are spread over them), as `--writers` of the server; by
    /// default as many as the server's default for the backend (2 PostgreSQL, 1 SQLite).
    #[arg(long)]
    writers: Option<usize>,
    /// PostgreSQL pool size.
    #[arg(long, default_value_t = 16)]
    pool: usize,
}

async fn store_scenario(args: StoreArgs) -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempdir();
    let writers = args.writers.unwrap_or(if args.database_url.is_some() { 2 } else { 1 });
    let store: Arc<dyn Store> = match &args.database_url {
        Some(url) => {
            let store = PostgresStore::connect(url, args.pool).await?;
            let (db, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            db.execute(
                "INSERT INTO rooms (name) SELECT format('bench-%s', g) FROM generate_series(1, $1::int) g
                 ON CONFLICT (name) DO NOTHING",
                &[&(args.rooms as i32)],
            )
            .await?;
            Arc::new(store)
        }
        None => Arc::new(SqliteStore::open(&tmp.join("bench.db"))?),
    };
    let all = store.rooms().await?;
    let mut rooms: Vec<u64> = all.iter().filter(|r| r.name.starts_with("bench-")).map(|r| r.id).collect();
    if rooms.len() < args.rooms {
        rooms = all.iter().map(|r| r.id).collect();
    }
    rooms.truncate(args.rooms);
    if rooms.len() < args.rooms {
        return Err(format!("only {} rooms available", rooms.len()).into());
    }
    let name = format!("load{:08x}", rand::random::<u32>());
    let user = store.create_user(&name, &format!("{name}@bench.invalid"), "not a real hash").await?;
    let hub = Arc::new(Hub::default());
    let writer = Writer::start(
        store.clone(),
        hub,
        Arc::new(LocalBus),
        Arc::new(RoomDirectory::new(all)),
        WriterLimits { shards: writers, ..WriterLimits::default() },
    );

    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.seconds);
    let text = "x".repeat(args.text_bytes);
    let cpu_before = cpu_seconds();
    let mut tasks = Vec::new();
    for s in 0..args.senders {
        let (store, writer, text, room) = (store.clone(), writer.clone(), text.clone(), rooms[s % rooms.len()]);
        let (user_id, username, mode) = (user.id, user.username.clone(), args.mode);
        tasks.push(tokio::spawn(async move {
            let mut latencies_us: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&(s as u64).to_be_bytes());
                id[8..].copy_from_slice(&n.to_be_bytes());
                n += 1;
                let sender = socketchat::wire::UserRef { id: user_id, username: username.clone() };
                let message = NewMessage::post(room, &sender, id, text.clone());
                let ok = match mode {
                    Mode::Group => writer.append(message).await.is_ok(),
                    Mode::Single => store.append(vec![message]).await.is_ok(),
                };
                let done = Instant::now();
                if now >= measure_from && done <= end {
                    if ok {
                        latencies_us.push(done.duration_since(now).as_micros().min(u128::from(u32::MAX)) as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies_us, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors += e;
    }
    let cpu = cpu_seconds() - cpu_before;
    latencies.sort_unstable();
    let acked = latencies.len() as f64;
    let c = writer.counters();
    let batches = c.batches.load(std::sync::atomic::Ordering::Relaxed).max(1);
    let avg_batch = (c.sends.load(std::sync::atomic::Ordering::Relaxed) as f64 / batches as f64 * 10.0).round() / 10.0;
    let report = serde_json::json!({
        "scenario": "store",
        "backend": if args.database_url.is_some() { "postgres" } else { "sqlite" },
        "mode": if args.mode == Mode::Group { "group" } else { "single" },
        "senders": args.senders,
        "rooms": args.rooms,
        "seconds": args.seconds,
        "acked_per_sec": (acked / args.seconds as f64).round(),
        "ack_p50_ms": percentile_ms(&latencies, 0.50),
        "ack_p99_ms": percentile_ms(&latencies, 0.99),
        "errors": errors,
        "writers": writers,
        "avg_batch": avg_batch,
        "generator_cpu_s": (cpu * 100.0).round() / 100.0,
    });
    println!("{report}");
    let _ = std::fs::remove_dir_all(&tmp);
    if errors > 0 {
        return Err(format!("store: {errors} sends failed").into());
    }
    Ok(())
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("socketchat-bench-{:08x}", rand::random::<u32>()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().scenario {
        Scenario::Store(args) => store_scenario(args).await,
        Scenario::Idle(args) => idle_scenario(args).await,
        Scenario::Relay(args) => relay_scenario(args).await,
        Scenario::Connect(args) => presence::connect_scenario(args).await.map_err(|e| e as Box<dyn std::error::Error>),
        Scenario::PresenceLatency(args) => {
            presence::latency_scenario(args).await.map_err(|e| e as Box<dyn std::error::Error>)
        }
        Scenario::Fanout(args) => {
            let json = args.json;
            let report = fanout::fanout(args).await.map_err(|e| e as Box<dyn std::error::Error>)?;
            fanout::print("fanout", &report, json);
            if !report.correct() {
                return Err(
                    "fanout: loss, duplicates, disorder, an unanswered send, or (without --overload) a cut or refusal \
                     (see the report)"
                        .into(),
                );
            }
            Ok(())
        }
        Scenario::Persist(args) => {
            let json = args.json;
            let report = fanout::persist(args).await.map_err(|e| e as Box<dyn std::error::Error>)?;
            fanout::print("persist", &report, json);
            if report.seq_errors > 0 {
                return Err("persist: acked seqs are not gap-free".into());
            }
            Ok(())
        }
    }
}
