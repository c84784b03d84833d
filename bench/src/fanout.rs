//! Message scenarios (issue: performance), against SocketChat, the ceiling or the Socket.IO
//! peer (`--peer`, see [`crate::peer`]).
//!
//! `fanout`: R rooms × M members. S senders (their own connections, spread over the rooms)
//! send at a target rate in total without waiting for their acks (a connection's sends are
//! pipelined); each message's text is `<send time µs> <sender> <n>`, n counting that sender's
//! sends from 0. Every receiver checks what it gets: nothing twice, nothing after a later
//! message of the same order (each room's seqs where the peer has them — SocketChat, the
//! ceiling —, else each sender's n), and in the end it must have every message the room
//! acked. Reports deliveries/s and latency from send to receipt (p50/p90/p99/max), and the
//! generator's own CPU so a generator-bound run shows.
//!
//! `persist`: C senders, each sending and waiting for its ack before the next, over R rooms:
//! acked sends/s and ack latency. Checks that each room's acked seqs are exactly the next ones
//! after its head (gap-free, once each); on the peer, whose seq is one sequence for all rooms,
//! that no seq was acked twice.
//!
//! Receivers use tokens minted with the server's JWT secret (they never send, so they need not
//! exist in the store); on SocketChat senders are registered users (their messages are stored).

use crate::measure::{CpuWatch, percentile_ms, resident_kib};
use crate::peer::{Event, Peer, PeerConnection, PeerRx, Target};
use socketchat::auth::TokenKeys;
use socketchat_client::Account;
use std::collections::{BTreeSet, HashMap};
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
    /// Process ids of the server's backends (PostgreSQL's postmaster, Redis), whose CPU time
    /// (with their children's) is reported together.
    #[arg(long)]
    pub backend_pid: Vec<u32>,
    /// Transport of every connection: `websocket` or `webtransport` (the server's HTTP/3
    /// listener, its certificate pinned by the hash `/api/transport` gives; SocketChat only).
    #[arg(long, default_value = "websocket")]
    pub transport: String,
    /// The server driven: SocketChat, `socketchat-ceiling` or the Socket.IO peer (the last
    /// two: no registration, no room creation, every token minted).
    #[arg(long, value_enum, default_value_t = Peer::Socketchat)]
    pub peer: Peer,
    /// The rate is meant to be more than the server can take: connections it cuts and sends
    /// it refuses are reported, not failures (every send must still be answered, and every
    /// receiver it did not cut must have every acked message, once, in order).
    #[arg(long)]
    pub overload: bool,
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
    /// Deliveries missing at the end, at receivers the server did not cut.
    pub lost: u64,
    /// Messages received twice by one receiver.
    pub duplicates: u64,
    /// Messages that came after a later one of the same order (see `order_checked`).
    pub out_of_order: u64,
    /// What `out_of_order` compares: each room's seqs (`room seq`), or each sender's own
    /// messages (`per sender`, on the Socket.IO peer, whose seqs are not per room).
    pub order_checked: &'static str,
    /// Sender connections the server cut (slow consumer or otherwise).
    pub senders_cut: u64,
    /// Receiving connections the server cut before the end (slow consumer or otherwise).
    pub receivers_cut: u64,
    /// Sends the server answered with an error (shed under overload, or otherwise refused).
    pub refused: u64,
    /// Sends with no answer (neither an ack nor an error) 10 s after the last send, on
    /// connections the server did not cut.
    pub unanswered: u64,
    /// Whether the run was meant as an overload (`--overload`).
    pub overload: bool,
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
    /// The backends' CPU seconds over the run (with `--backend-pid`).
    pub backend_cpu_s: Option<f64>,
    /// The server's resident memory added per receiver once all were joined, KiB (with
    /// `--server-pid`).
    pub server_kib_per_receiver: Option<f64>,
    /// The transport used.
    pub transport: String,
    /// The server driven.
    pub peer: Peer,
}

impl FanoutReport {
    /// No loss, no duplicate, in order, every send answered; and unless the run is an
    /// overload, nobody cut and nothing refused.
    pub fn correct(&self) -> bool {
        let shed = self.senders_cut + self.receivers_cut + self.refused;
        self.lost == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.unanswered == 0
            && (self.overload || shed == 0)
    }
}

fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The senders' accounts and the rooms of a run: on SocketChat registered users, and
/// `general` alone or that many new public channels; elsewhere minted tokens, and rooms that
/// exist once joined.
async fn cast(
    peer: Peer,
    addr: SocketAddr,
    keys: Option<&TokenKeys>,
    senders: usize,
    rooms: usize,
) -> Result<(Vec<Account>, Vec<String>), BoxError> {
    let run = rand::random::<u32>();
    let names =
        if rooms <= 1 { vec!["general".to_owned()] } else { (0..rooms).map(|i| format!("b{run:08x}-{i}")).collect() };
    if peer == Peer::Socketchat {
        let accounts = register(addr, senders.max(1)).await?;
        if rooms > 1 {
            create_rooms(&accounts, &names).await?;
        }
        return Ok((accounts, names));
    }
    let keys = keys.ok_or("tokens are minted with the server's secret: give --jwt-secret (or JWT_SECRET)")?;
    let base = format!("http://{addr}");
    let accounts = (0..senders.max(1) as u64)
        .map(|i| Ok(Account::from_token(&base, &mint(keys, 2_000_000_000 + i)?, 2_000_000_000 + i, "sender")))
        .collect::<Result<_, BoxError>>()?;
    Ok((accounts, names))
}

/// Creates `names` as public channels on SocketChat.
async fn create_rooms(owners: &[Account], names: &[String]) -> Result<(), BoxError> {
    let http = reqwest::Client::new();
    for (i, name) in names.iter().enumerate() {
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
    }
    Ok(())
}

/// Registers `count` users (the senders) on SocketChat and returns their accounts.
async fn register(addr: SocketAddr, count: usize) -> Result<Vec<Account>, BoxError> {
    let base = format!("http://{addr}");
    let mut accounts = Vec::with_capacity(count);
    for _ in 0..count {
        let name = format!("s{:08x}", rand::random::<u32>());
        accounts.push(Account::register(&base, &name, &format!("{name}@bench.invalid"), "bench password").await?);
    }
    Ok(accounts)
}

/// The arrivals of one ordered stream (a room's seqs, or one sender's n): which came, and
/// whether each came after a later one.
#[derive(Debug)]
struct Order {
    /// Every position below this one has arrived.
    next: u64,
    /// Positions at or above `next` that arrived (non-empty only around a gap).
    ahead: BTreeSet<u64>,
    /// The highest position seen.
    highest: Option<u64>,
}

/// How one arrival fits its stream.
#[derive(Debug, PartialEq, Eq)]
enum Arrival {
    /// After everything it follows.
    InOrder,
    /// After a later position of the same stream.
    Late,
    /// Seen before.
    Duplicate,
}

impl Order {
    /// A stream whose first position is `first`.
    fn new(first: u64) -> Self {
        Self { next: first, ahead: BTreeSet::new(), highest: None }
    }

    fn see(&mut self, position: u64) -> Arrival {
        if position < self.next || self.ahead.contains(&position) {
            return Arrival::Duplicate;
        }
        let late = self.highest.is_some_and(|h| position < h);
        self.highest = Some(self.highest.map_or(position, |h| h.max(position)));
        if position == self.next {
            self.next += 1;
            while self.ahead.remove(&self.next) {
                self.next += 1;
            }
        } else {
            self.ahead.insert(position);
        }
        if late { Arrival::Late } else { Arrival::InOrder }
    }
}

/// What one receiver saw.
#[derive(Default)]
struct Seen {
    delivered: u64,
    duplicates: u64,
    out_of_order: u64,
    latencies_us: Vec<u64>,
    /// The connection ended before the run did.
    cut: bool,
}

/// Reads a receiver's events until the run stopped and it has `expected` messages (or the
/// drain deadline passed). With `head` (the room's head seq at its join) it checks the room's
/// seqs from `head + 1`; without, each sender's n from 0 (the text `<time> <sender> <n>`).
async fn receive(
    mut rx: PeerRx,
    first: Vec<Event>,
    head: Option<u64>,
    expected: Arc<AtomicU64>,
    mut stop: watch::Receiver<Option<tokio::time::Instant>>,
) -> Seen {
    let mut seen = Seen::default();
    let mut orders: HashMap<u64, Order> = HashMap::new();
    let mut handle = |event: Event, seen: &mut Seen| {
        let Event::Message(m) = event else { return };
        let at = now_micros();
        let mut fields = m.text.split(' ').map(|f| f.parse::<u64>().ok());
        let (stamp, sender, n) = (fields.next().flatten(), fields.next().flatten(), fields.next().flatten());
        let (key, position, first) = match head {
            Some(head) => (0, m.seq, head + 1),
            None => (sender.unwrap_or(u64::MAX), n.unwrap_or(0), 0),
        };
        match orders.entry(key).or_insert_with(|| Order::new(first)).see(position) {
            Arrival::Duplicate => seen.duplicates += 1,
            Arrival::Late => seen.out_of_order += 1,
            Arrival::InOrder => {}
        }
        seen.delivered += 1;
        if let Some(stamp) = stamp {
            seen.latencies_us.push(at.saturating_sub(stamp));
        }
    };
    for event in first {
        handle(event, &mut seen);
    }
    loop {
        let deadline = *stop.borrow_and_update();
        if deadline.is_some() && seen.delivered >= expected.load(Ordering::Relaxed) {
            return seen;
        }
        tokio::select! {
            event = rx.recv() => match event {
                Ok(event) => handle(event, &mut seen),
                Err(_) => {
                    seen.cut = true;
                    return seen;
                }
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
    if args.peer != Peer::Socketchat && args.transport != "websocket" {
        return Err(format!("{:?} speaks WebSocket only", args.peer).into());
    }
    let (accounts, rooms) = cast(args.peer, args.addr, Some(&keys), args.senders, args.rooms).await?;
    let target = target_of(args.peer, args.addr, &args.transport, &accounts[0]).await?;
    let recv_target = match args.recv_addr {
        Some(addr) => target_of(args.peer, addr, &args.transport, &accounts[0]).await?,
        None => target.clone(),
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
            let (target, room, gate) = (recv_target.clone(), room.clone(), gate.clone());
            let token = mint(&keys, 1_000_000_000 + (r * args.members + m) as u64)?;
            joins.push(tokio::spawn(async move {
                let _slot = gate.acquire().await;
                let mut conn = PeerConnection::open(&target, &token, "bench-fanout").await?;
                let head = conn.join(&room).await?;
                Ok::<_, BoxError>((r, head, conn))
            }));
        }
    }
    let mut readers = Vec::new();
    // The receivers' sending halves stay open until the end (dropping one closes it).
    let mut quiet = Vec::new();
    for join in joins {
        let (r, head, conn) = join.await??;
        let (tx, rx, first) = conn.split();
        readers.push((r, tokio::spawn(receive(rx, first, head, acked[r].clone(), stopped.clone()))));
        quiet.push(tx);
    }

    let receivers = (rooms.len() * args.members).max(1) as f64;
    let server_kib_per_receiver = args
        .server_pid
        .zip(rss_before)
        .map(|(pid, before)| ((resident_kib(pid).saturating_sub(before)) as f64 / receivers * 10.0).round() / 10.0);

    // Senders: their own connections; a reader per sender counts acks.
    let cut = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let unanswered = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let per_sender = args.rate as f64 / args.senders.max(1) as f64;
    let cpu = CpuWatch::start(args.server_pid, &args.backend_pid);
    let started = Instant::now();
    let mut sending = Vec::new();
    for (i, account) in accounts.iter().enumerate() {
        let r = i % rooms.len();
        let room = rooms[r].clone();
        let mut conn = PeerConnection::open(&target, &account.token, "bench-fanout").await?;
        conn.join(&room).await?;
        let (mut tx, mut rx, _) = conn.split();
        let (acked, cut, sent, seconds) = (acked[r].clone(), cut.clone(), sent.clone(), args.seconds);
        let (refused, unanswered) = (refused.clone(), unanswered.clone());
        let count = Arc::new(AtomicU64::new(0));
        let acks = {
            let count = count.clone();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(Event::Ack(_)) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            count.fetch_sub(1, Ordering::Relaxed);
                        }
                        Ok(Event::Refused(why)) => {
                            // Under overload, thousands: the first few say why.
                            if refused.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("sender refused: {why}");
                            }
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
            let mut n = 0u64;
            while Instant::now() < end {
                tick.tick().await;
                count.fetch_add(1, Ordering::Relaxed);
                if tx.send(&room, &format!("{} {i} {n}", now_micros())).await.is_err() {
                    break;
                }
                n += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            // Every ack is in before the sender goes (or the connection went).
            let deadline = Instant::now() + Duration::from_secs(10);
            while count.load(Ordering::Relaxed) > 0 && Instant::now() < deadline && !acks.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !acks.is_finished() {
                unanswered.fetch_add(count.load(Ordering::Relaxed), Ordering::Relaxed);
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
    let (mut expected, mut lost, mut receivers_cut) = (0, 0, 0);
    for (r, reader) in readers {
        let seen = reader.await?;
        let room_acked = acked[r].load(Ordering::Relaxed);
        expected += room_acked;
        // A receiver the server cut misses the rest by design (it would resume): not a loss.
        if seen.cut {
            receivers_cut += 1;
        } else {
            lost += room_acked.saturating_sub(seen.delivered - seen.duplicates);
        }
        total.delivered += seen.delivered;
        total.duplicates += seen.duplicates;
        total.out_of_order += seen.out_of_order;
        total.latencies_us.extend(seen.latencies_us);
    }
    let used = cpu.used();
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
        lost,
        duplicates: total.duplicates,
        out_of_order: total.out_of_order,
        order_checked: args.peer.order_checked(),
        senders_cut: cut.load(Ordering::Relaxed),
        receivers_cut,
        refused: refused.load(Ordering::Relaxed),
        unanswered: unanswered.load(Ordering::Relaxed),
        overload: args.overload,
        deliveries_per_sec: total.delivered as f64 / sending_secs,
        p50_ms: percentile_ms(lat, 0.50),
        p90_ms: percentile_ms(lat, 0.90),
        p99_ms: percentile_ms(lat, 0.99),
        max_ms: lat.last().map_or(0.0, |m| *m as f64 / 1000.0),
        generator_cpu_s: used.generator,
        server_cpu_s: used.server,
        backend_cpu_s: used.backends,
        server_kib_per_receiver,
        transport: args.transport,
        peer: args.peer,
    })
}

/// A token for user `id`, minted with the server's secret (the user need not exist).
pub fn mint(keys: &TokenKeys, id: u64) -> Result<String, BoxError> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    Ok(keys.issue(id, &format!("r{id}"), now).0)
}

/// Where connections to `peer` at `addr` go over `transport` (`websocket`, or `webtransport`
/// on SocketChat).
async fn target_of(peer: Peer, addr: SocketAddr, transport: &str, account: &Account) -> Result<Target, BoxError> {
    match transport {
        "websocket" => Ok(Target::websocket(peer, addr)),
        "webtransport" => Ok(Target::Chat(account.webtransport().await?.ok_or("the server offers no WebTransport")?)),
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
    /// Process ids of the server's backends (PostgreSQL's postmaster, Redis), whose CPU time
    /// (with their children's) is reported together.
    #[arg(long)]
    pub backend_pid: Vec<u32>,
    /// The server driven (SocketChat or the Socket.IO peer; the ceiling stores nothing).
    #[arg(long, value_enum, default_value_t = Peer::Socketchat)]
    pub peer: Peer,
    /// The server's JWT secret, to mint the senders' tokens where nobody registers (the peer).
    #[arg(long, env = "JWT_SECRET")]
    pub jwt_secret: Option<String>,
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
    /// Acks whose seq broke `seq_check`.
    pub seq_errors: u64,
    /// What `seq_errors` counts: acked seqs that are not the next free ones of their room
    /// (`gap-free per room`: a gap or a seq given twice), or, on the peer, whose seq is one
    /// sequence for all rooms, seqs acked twice (`distinct`).
    pub seq_check: &'static str,
    /// Sends refused or lost with their connection.
    pub failed: u64,
    /// The generator's CPU seconds.
    pub generator_cpu_s: f64,
    /// The server's CPU seconds (with `--server-pid`).
    pub server_cpu_s: Option<f64>,
    /// The backends' CPU seconds (with `--backend-pid`).
    pub backend_cpu_s: Option<f64>,
    /// The server driven.
    pub peer: Peer,
}

/// Runs `persist`.
pub async fn persist(args: PersistArgs) -> Result<PersistReport, BoxError> {
    let keys = args.jwt_secret.as_ref().map(|s| TokenKeys::new(s.as_bytes(), 3600));
    let (accounts, rooms) = cast(args.peer, args.addr, keys.as_ref(), args.senders, args.rooms).await?;
    let target = Target::websocket(args.peer, args.addr);
    let mut conns = Vec::new();
    // Each room's head at the first join (per room seqs), or nothing (one sequence).
    let mut heads: HashMap<String, Option<u64>> = HashMap::new();
    for (i, account) in accounts.iter().enumerate() {
        let room = rooms[i % rooms.len()].clone();
        let mut conn = PeerConnection::open(&target, &account.token, "bench-persist").await?;
        let joined = conn.join(&room).await?;
        let head = heads.entry(room.clone()).or_insert(joined);
        *head = (*head).min(joined);
        conns.push((room, conn));
    }
    let cpu = CpuWatch::start(args.server_pid, &args.backend_pid);
    let started = Instant::now();
    let end = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for (room, mut conn) in conns {
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut failed = 0u64;
            while Instant::now() < end {
                let at = Instant::now();
                match conn.store(&room, "persisted by the benchmark").await {
                    Ok(Ok(seq)) => acks.push((seq, at.elapsed().as_micros() as u64)),
                    Ok(Err(_)) => failed += 1,
                    Err(_) => {
                        failed += 1;
                        break;
                    }
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
        // One list per room where seqs are per room, else one for all.
        let key = if args.peer.room_seqs() { room } else { String::new() };
        for (seq, us) in acks {
            seqs.entry(key.clone()).or_default().push(seq);
            latencies.push(us);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let used = cpu.used();
    let mut seq_errors = 0;
    for (room, mut list) in seqs {
        list.sort_unstable();
        seq_errors += match heads.get(&room).copied().flatten() {
            Some(head) => list.iter().enumerate().filter(|(i, s)| **s != head + 1 + *i as u64).count(),
            None => list.windows(2).filter(|pair| pair[0] == pair[1]).count(),
        } as u64;
    }
    latencies.sort_unstable();
    Ok(PersistReport {
        acked: latencies.len() as u64,
        acks_per_sec: latencies.len() as f64 / elapsed,
        p50_ms: percentile_ms(&latencies, 0.5),
        p99_ms: percentile_ms(&latencies, 0.99),
        seq_errors,
        seq_check: if args.peer.room_seqs() { "gap-free per room" } else { "distinct" },
        failed,
        generator_cpu_s: used.generator,
        server_cpu_s: used.server,
        backend_cpu_s: used.backends,
        peer: args.peer,
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

#[cfg(test)]
mod tests {
    use super::{Arrival, Order};

    #[test]
    fn order_tells_in_order_late_and_duplicate_arrivals() {
        let mut order = Order::new(5);
        assert_eq!(order.see(5), Arrival::InOrder);
        assert_eq!(order.see(6), Arrival::InOrder);
        assert_eq!(order.see(6), Arrival::Duplicate);
        // 7 is missing for now: 8 is not late, 7 then is.
        assert_eq!(order.see(8), Arrival::InOrder);
        assert_eq!(order.see(7), Arrival::Late);
        assert_eq!(order.see(8), Arrival::Duplicate);
        assert_eq!(order.see(9), Arrival::InOrder);
        assert!(order.ahead.is_empty(), "the gap closed: {order:?}");
        assert_eq!(order.see(4), Arrival::Duplicate, "below the first position counts as seen");
    }

    #[test]
    fn a_gap_that_never_closes_is_not_disorder() {
        let mut order = Order::new(0);
        for n in [0, 1, 3, 4, 5] {
            assert_eq!(order.see(n), Arrival::InOrder);
        }
        assert_eq!(order.see(4), Arrival::Duplicate);
    }
}
