//! Message scenarios driven through `socketchat-client` (issue: performance).
//!
//! `fanout`: R rooms × M members. S senders (their own connections, spread over the rooms)
//! send at a target rate in total without waiting for their acks (a connection's sends are
//! pipelined); each message carries its send time. Every receiver checks what it gets: each
//! room's seqs arrive one after another (no loss, no duplicate, in order), and in the end it
//! must have every message the room acked. Reports deliveries/s and latency from send to
//! receipt (p50/p90/p99/max), and the generator's own CPU so a generator-bound run shows.
//!
//! `persist`: C senders, each sending and waiting for its ack before the next, over R rooms:
//! acked sends/s and ack latency. Checks that each room's acked seqs are exactly the next ones
//! after its head (gap-free, once each).
//!
//! Receivers use tokens minted with the server's JWT secret (they never send, so they need not
//! exist in the store); senders are registered users (their messages are stored).

use crate::measure::{percentile_ms, process_cpu_seconds, resident_kib};
use socketchat::auth::TokenKeys;
use socketchat::wire::{self, ClientFrame, ServerFrame};
use socketchat_client::link::LinkRx;
use socketchat_client::{Account, Connection, Endpoint};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Errors of a scenario.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Arguments of `fanout`.
#[derive(clap::Parser, Clone, Debug)]
pub struct FanoutArgs {
    /// HTTP address of the server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// HTTP address of another node for the receivers (across the relay); the senders' node
    /// when absent.
    #[arg(long)]
    pub recv_addr: Option<SocketAddr>,
    /// The server's JWT secret (receivers' tokens are minted with it).
    #[arg(long, env = "JWT_SECRET")]
    pub jwt_secret: String,
    /// Rooms (1: `general`; more are created as public channels).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Receiving connections per room.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Sending connections in all, spread over the rooms.
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Connections opened at the same time while setting up.
    #[arg(long, default_value_t = 32)]
    pub parallel: usize,
    /// Server process id, to report its CPU time over the run and its memory per receiver.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Transport of every connection: `websocket` or `webtransport` (the server's HTTP/3
    /// listener, its certificate pinned by the hash `/api/transport` gives).
    #[arg(long, default_value = "websocket")]
    pub transport: String,
    /// Drive `socketchat-ceiling` (the lean reference server) instead: no registration, no
    /// room creation (its rooms exist when joined), every token minted.
    #[arg(long)]
    pub ceiling: bool,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What a `fanout` run measured and checked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FanoutReport {
    /// Messages sent.
    pub sent: u64,
    /// Messages acked.
    pub acked: u64,
    /// Deliveries every receiver should have had (acked × members of the room).
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// Deliveries missing at the end.
    pub lost: u64,
    /// Messages received twice by one receiver.
    pub duplicates: u64,
    /// Messages that came after a higher seq of their room.
    pub out_of_order: u64,
    /// Sender connections the server cut (slow consumer or otherwise).
    pub senders_cut: u64,
    /// Deliveries per second over the sending time.
    pub deliveries_per_sec: f64,
    /// Latency percentiles from send to receipt, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
    /// The generator's CPU seconds over the run.
    pub generator_cpu_s: f64,
    /// The server's CPU seconds over the run (with `--server-pid`).
    pub server_cpu_s: Option<f64>,
    /// The server's resident memory added per receiver once all were joined, KiB (with
    /// `--server-pid`).
    pub server_kib_per_receiver: Option<f64>,
    /// The transport used.
    pub transport: String,
}

impl FanoutReport {
    /// No loss, no duplicate, in order, nobody cut.
    pub fn correct(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.out_of_order == 0 && self.senders_cut == 0
    }
}

fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The rooms of a run: `general` alone, or that many new public channels.
async fn rooms(owners: &[Account], count: usize) -> Result<Vec<String>, BoxError> {
    if count <= 1 {
        return Ok(vec!["general".to_owned()]);
    }
    let run = rand::random::<u32>();
    let http = reqwest::Client::new();
    let mut names = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("b{run:08x}-{i}");
        let owner = &owners[i % owners.len()];
        let response = http
            .post(format!("{}/api/channels", owner.base))
            .header("cookie", format!("token={}", owner.token))
            .json(&serde_json::json!({"name": name}))
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!(
                "creating {name}: {} (raise SOCKETCHAT_ROOM_CREATION_BURST on the server)",
                response.status()
            )
            .into());
        }
        names.push(name);
    }
    Ok(names)
}

/// Registers `count` users (the senders) and returns their accounts.
async fn senders(addr: SocketAddr, count: usize) -> Result<Vec<Account>, BoxError> {
    let base = format!("http://{addr}");
    let mut accounts = Vec::with_capacity(count);
    for _ in 0..count {
        let name = format!("s{:08x}", rand::random::<u32>());
        accounts.push(Account::register(&base, &name, &format!("{name}@bench.invalid"), "bench password").await?);
    }
    Ok(accounts)
}

/// What one receiver saw.
#[derive(Default)]
struct Seen {
    delivered: u64,
    duplicates: u64,
    out_of_order: u64,
    latencies_us: Vec<u64>,
}

/// Reads a receiver's frames until the run stopped and it has `expected` messages (or the
/// drain deadline passed), checking that seqs come one after another.
async fn receive(
    mut rx: LinkRx,
    first: Vec<ServerFrame>,
    expected: Arc<AtomicU64>,
    mut stop: watch::Receiver<Option<tokio::time::Instant>>,
) -> Seen {
    let mut seen = Seen::default();
    let mut last: Option<u64> = None;
    let mut handle = |frame: ServerFrame, seen: &mut Seen| {
        if let ServerFrame::Message(m) = frame {
            let at = now_micros();
            match last {
                Some(l) if m.seq <= l => seen.duplicates += 1,
                Some(l) if m.seq != l + 1 => {
                    seen.out_of_order += 1;
                    last = Some(m.seq);
                }
                _ => last = Some(m.seq),
            }
            seen.delivered += 1;
            if let Ok(stamp) = m.text.parse::<u64>() {
                seen.latencies_us.push(at.saturating_sub(stamp));
            }
        }
    };
    for frame in first {
        handle(frame, &mut seen);
    }
    loop {
        let deadline = *stop.borrow_and_update();
        if deadline.is_some() && seen.delivered >= expected.load(Ordering::Relaxed) {
            return seen;
        }
        tokio::select! {
            frame = rx.recv() => match frame {
                Ok(frame) => handle(frame, &mut seen),
                Err(_) => return seen,
            },
            _ = stop.changed(), if deadline.is_none() => {}
            // Stopped, and what is missing did not come in time: it is lost.
            () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                return seen;
            }
        }
    }
}

/// Runs `fanout`.
pub async fn fanout(args: FanoutArgs) -> Result<FanoutReport, BoxError> {
    let keys = TokenKeys::new(args.jwt_secret.as_bytes(), 3600);
    let (accounts, rooms, endpoint) = if args.ceiling {
        let base = format!("http://{}", args.addr);
        let minted: Vec<Account> = (0..args.senders.max(1) as u64)
            .map(|i| Ok(Account::from_token(&base, &mint(&keys, 2_000_000_000 + i)?, 2_000_000_000 + i, "sender")))
            .collect::<Result<_, BoxError>>()?;
        let names = (0..args.rooms.max(1)).map(|i| format!("ceiling-{i}")).collect();
        (minted, names, Endpoint::WebSocket { url: format!("ws://{}/ws", args.addr) })
    } else {
        let accounts = senders(args.addr, args.senders.max(1)).await?;
        let rooms = rooms(&accounts, args.rooms).await?;
        let endpoint = endpoint_of(args.addr, &args.transport, &accounts[0]).await?;
        (accounts, rooms, endpoint)
    };
    let recv_endpoint = match args.recv_addr {
        Some(addr) if !args.ceiling => endpoint_of(addr, &args.transport, &accounts[0]).await?,
        _ => endpoint.clone(),
    };
    let rss_before = args.server_pid.map(resident_kib);
    let (stop, stopped) = watch::channel(None);
    // Acked messages per room: each receiver of a room expects that many.
    let acked: Vec<Arc<AtomicU64>> = rooms.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();

    // Receivers first, all joined at the head before anything is sent.
    let gate = Arc::new(tokio::sync::Semaphore::new(args.parallel.max(1)));
    let mut joins = Vec::new();
    for (r, room) in rooms.iter().enumerate() {
        for m in 0..args.members {
            let (endpoint, room, gate) = (recv_endpoint.clone(), room.clone(), gate.clone());
            let token = mint(&keys, 1_000_000_000 + (r * args.members + m) as u64)?;
            joins.push(tokio::spawn(async move {
                let _slot = gate.acquire().await;
                let mut conn = Connection::open(&endpoint, &token, "bench-fanout").await?;
                conn.join(&room, None).await?;
                Ok::<_, socketchat_client::ClientError>((r, conn))
            }));
        }
    }
    let mut readers = Vec::new();
    // The receivers' sending halves stay open until the end (dropping one closes it).
    let mut quiet = Vec::new();
    for join in joins {
        let (r, conn) = join.await??;
        let (tx, rx, first) = conn.split();
        readers.push(tokio::spawn(receive(rx, first, acked[r].clone(), stopped.clone())));
        quiet.push(tx);
    }

    let receivers = (rooms.len() * args.members).max(1) as f64;
    let server_kib_per_receiver = args
        .server_pid
        .zip(rss_before)
        .map(|(pid, before)| ((resident_kib(pid).saturating_sub(before)) as f64 / receivers * 10.0).round() / 10.0);

    // Senders: their own connections; a reader per sender counts acks.
    let cut = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let per_sender = args.rate as f64 / args.senders.max(1) as f64;
    let cpu_before = process_cpu_seconds("self");
    let server_before = args.server_pid.map(|p| process_cpu_seconds(&p.to_string()));
    let started = Instant::now();
    let mut sending = Vec::new();
    for (i, account) in accounts.iter().enumerate() {
        let r = i % rooms.len();
        let room = rooms[r].clone();
        let mut conn = Connection::open(&endpoint, &account.token, "bench-fanout").await?;
        conn.join(&room, None).await?;
        let (mut tx, mut rx, _) = conn.split();
        let (acked, cut, sent, seconds) = (acked[r].clone(), cut.clone(), sent.clone(), args.seconds);
        let count = Arc::new(AtomicU64::new(0));
        let acks = {
            let count = count.clone();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(ServerFrame::Ack(_)) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            count.fetch_sub(1, Ordering::Relaxed);
                        }
                        Ok(ServerFrame::Error(e)) => {
                            eprintln!("sender refused: {} {}", e.code, e.message);
                            count.fetch_sub(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            // This task is stopped before the sender closes: any end is a cut.
                            eprintln!("sender cut: {e}");
                            cut.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            })
        };
        sending.push(tokio::spawn(async move {
            let interval = Duration::from_secs_f64(1.0 / per_sender.max(0.001));
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let end = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < end {
                tick.tick().await;
                let frame = ClientFrame::Send(wire::Send {
                    room: room.clone(),
                    client_msg_id: rand::random(),
                    text: now_micros().to_string(),
                    attachments: Vec::new(),
                });
                count.fetch_add(1, Ordering::Relaxed);
                if tx.send(&frame).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            // Every ack is in before the sender goes (or the connection went).
            let deadline = Instant::now() + Duration::from_secs(10);
            while count.load(Ordering::Relaxed) > 0 && Instant::now() < deadline && !acks.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acks.abort();
            tx.close().await;
        }));
    }
    for s in sending {
        s.await?;
    }
    let sending_secs = started.elapsed().as_secs_f64();
    // Receivers drain for up to 5 s more.
    stop.send_replace(Some(tokio::time::Instant::now() + Duration::from_secs(5)));
    let mut total = Seen::default();
    let mut expected = 0;
    for reader in readers {
        let seen = reader.await?;
        total.delivered += seen.delivered;
        total.duplicates += seen.duplicates;
        total.out_of_order += seen.out_of_order;
        total.latencies_us.extend(seen.latencies_us);
    }
    for a in &acked {
        expected += a.load(Ordering::Relaxed) * args.members as u64;
    }
    let generator_cpu_s = process_cpu_seconds("self") - cpu_before;
    let server_cpu_s = args.server_pid.zip(server_before).map(|(p, b)| process_cpu_seconds(&p.to_string()) - b);
    for mut tx in quiet {
        tx.close().await;
    }
    total.latencies_us.sort_unstable();
    let lat = &total.latencies_us;
    Ok(FanoutReport {
        sent: sent.load(Ordering::Relaxed),
        acked: acked.iter().map(|a| a.load(Ordering::Relaxed)).sum(),
        expected,
        delivered: total.delivered,
        lost: expected.saturating_sub(total.delivered - total.duplicates),
        duplicates: total.duplicates,
        out_of_order: total.out_of_order,
        senders_cut: cut.load(Ordering::Relaxed),
        deliveries_per_sec: total.delivered as f64 / sending_secs,
        p50_ms: percentile_ms(lat, 0.50),
        p90_ms: percentile_ms(lat, 0.90),
        p99_ms: percentile_ms(lat, 0.99),
        max_ms: lat.last().map_or(0.0, |m| *m as f64 / 1000.0),
        generator_cpu_s,
        server_cpu_s,
        server_kib_per_receiver,
        transport: args.transport,
    })
}

/// A token for user `id`, minted with the server's secret (the user need not exist).
fn mint(keys: &TokenKeys, id: u64) -> Result<String, BoxError> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    Ok(keys.issue(id, &format!("r{id}"), now).0)
}

/// Where connections go for `transport` (`websocket` or `webtransport`).
async fn endpoint_of(addr: SocketAddr, transport: &str, account: &Account) -> Result<Endpoint, BoxError> {
    match transport {
        "websocket" => Ok(Endpoint::WebSocket { url: format!("ws://{addr}/ws") }),
        "webtransport" => Ok(account.webtransport().await?.ok_or("the server offers no WebTransport")?),
        other => Err(format!("unknown transport {other} (websocket or webtransport)").into()),
    }
}

/// Arguments of `persist`.
#[derive(clap::Parser, Clone, Debug)]
pub struct PersistArgs {
    /// HTTP address of the server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Sending connections, each waiting for its ack before its next send.
    #[arg(long, default_value_t = 64)]
    pub senders: usize,
    /// Rooms the senders are spread over (1: `general`).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Server process id, to report its CPU time over the run.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What a `persist` run measured and checked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PersistReport {
    /// Acked sends.
    pub acked: u64,
    /// Acked sends per second.
    pub acks_per_sec: f64,
    /// Ack latency percentiles, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Acks whose seq was not the next free one of its room (a gap or a seq given twice).
    pub seq_errors: u64,
    /// Sends refused or lost with their connection.
    pub failed: u64,
    /// The generator's CPU seconds.
    pub generator_cpu_s: f64,
    /// The server's CPU seconds (with `--server-pid`).
    pub server_cpu_s: Option<f64>,
}

/// Runs `persist`.
pub async fn persist(args: PersistArgs) -> Result<PersistReport, BoxError> {
    let accounts = senders(args.addr, args.senders.max(1)).await?;
    let rooms = rooms(&accounts, args.rooms).await?;
    let endpoint = Endpoint::WebSocket { url: format!("ws://{}/ws", args.addr) };
    let mut conns = Vec::new();
    let mut heads: HashMap<String, u64> = HashMap::new();
    for (i, account) in accounts.iter().enumerate() {
        let room = rooms[i % rooms.len()].clone();
        let mut conn = Connection::open(&endpoint, &account.token, "bench-persist").await?;
        let (joined, _) = conn.join(&room, None).await?;
        let head = heads.entry(room.clone()).or_insert(joined.head_seq);
        *head = (*head).min(joined.head_seq);
        conns.push((room, conn));
    }
    let cpu_before = process_cpu_seconds("self");
    let server_before = args.server_pid.map(|p| process_cpu_seconds(&p.to_string()));
    let started = Instant::now();
    let end = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for (room, mut conn) in conns {
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut failed = 0u64;
            while Instant::now() < end {
                let at = Instant::now();
                let frame = ClientFrame::Send(wire::Send {
                    room: room.clone(),
                    client_msg_id: rand::random(),
                    text: "persisted by the benchmark".into(),
                    attachments: Vec::new(),
                });
                match conn.store(frame).await {
                    Ok(ack) => acks.push((ack.seq, at.elapsed().as_micros() as u64)),
                    Err(e) if e.reconnectable() => {
                        failed += 1;
                        break;
                    }
                    Err(_) => failed += 1,
                }
            }
            conn.close().await;
            (room, acks, failed)
        }));
    }
    let mut seqs: HashMap<String, Vec<u64>> = HashMap::new();
    let mut latencies = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (room, acks, f) = task.await?;
        failed += f;
        for (seq, us) in acks {
            seqs.entry(room.clone()).or_default().push(seq);
            latencies.push(us);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut seq_errors = 0;
    for (room, mut list) in seqs {
        list.sort_unstable();
        let head = heads.get(&room).copied().unwrap_or(0);
        seq_errors += list.iter().enumerate().filter(|(i, s)| **s != head + 1 + *i as u64).count() as u64;
    }
    latencies.sort_unstable();
    Ok(PersistReport {
        acked: latencies.len() as u64,
        acks_per_sec: latencies.len() as f64 / elapsed,
        p50_ms: percentile_ms(&latencies, 0.5),
        p99_ms: percentile_ms(&latencies, 0.99),
        seq_errors,
        failed,
        generator_cpu_s: process_cpu_seconds("self") - cpu_before,
        server_cpu_s: args.server_pid.zip(server_before).map(|(p, b)| process_cpu_seconds(&p.to_string()) - b),
    })
}

/// Prints a report as a table, or as one JSON line.
pub fn print<T: serde::Serialize>(scenario: &str, report: &T, json: bool) {
    let value = serde_json::to_value(report).unwrap_or_default();
    if json {
        let mut line = serde_json::json!({ "scenario": scenario });
        if let (Some(line), Some(fields)) = (line.as_object_mut(), value.as_object()) {
            line.extend(fields.clone());
        }
        println!("{line}");
        return;
    }
    println!("{scenario}");
    if let Some(fields) = value.as_object() {
        for (k, v) in fields {
            println!("  {k:<20} {v}");
        }
    }
}
