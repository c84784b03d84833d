//! Presence scenarios (issue: presence at scale).
//!
//! `connect`: how fast connections open (upgrade with a cookie, `Hello`, `Join`, until the
//! room's first `RoomPresence`) with U distinct users over C connections, and the server's
//! memory per connection once they are all open. Users are minted as tokens with the server's
//! JWT secret (registration would measure argon2, not presence).
//!
//! `latency`: how long a presence change takes to reach the connections that show it. W
//! watchers sit in a room on one node; a mover (named `-mover`, which sorts before every other
//! name, so it is always on the first page) joins and leaves the room on another node (or the
//! same one); K churners join and leave the room at random meanwhile, so the room's presence
//! changes all the time and frames are coalesced. Each watcher notes when the first
//! `RoomPresence` showing the mover's new state arrived.

use futures_util::{SinkExt, StreamExt};
use socketchat::auth::TokenKeys;
use socketchat::wire::{self, ClientFrame, ServerFrame};
use socketchat_bench::measure::CpuWatch;
use socketchat_bench::peer::{Peer, PeerConnection, Target};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Arguments of `connect`.
#[derive(clap::Parser)]
pub struct ConnectArgs {
    /// HTTP address of the server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Server process id (for its resident memory).
    #[arg(long)]
    pid: u32,
    /// Process ids of the server's backends (PostgreSQL's postmaster, Redis), whose CPU time
    /// (with their children's) is reported together.
    #[arg(long)]
    backend_pid: Vec<u32>,
    /// The server: SocketChat (open once the room's first `RoomPresence` came), the ceiling
    /// (once `Joined` came) or the Socket.IO peer (once the `join` was acked).
    #[arg(long, value_enum, default_value_t = Peer::Socketchat)]
    peer: Peer,
    /// The server's JWT secret (tokens are minted with it).
    #[arg(long, env = "JWT_SECRET")]
    jwt_secret: String,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Distinct users; connection i is user i % users.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Connections opened at the same time.
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// Room every connection joins.
    #[arg(long, default_value = "general")]
    room: String,
    /// Which presence the server runs (`embedded` or `redis`), echoed in the output.
    #[arg(long, default_value = "embedded")]
    presence: String,
    /// Protocol version to speak: 1 measures a server from before presence v2 (a connection
    /// is open once `Joined` arrived; v1 sends no `RoomPresence`).
    #[arg(long, default_value_t = wire::PROTOCOL_VERSION)]
    protocol_version: u32,
    /// Generator processes to spread the connections over, each holding its share (a
    /// process holds about as many sockets as its open-file limit: 20,000 here). Connection
    /// i goes to process i % processes.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Source addresses to connect from (loopback: any of 127.0.0.0/8), one per process in
    /// turn: each has its own ephemeral ports (~28,000) toward the server. SocketChat and the
    /// ceiling only.
    #[arg(long, value_delimiter = ',')]
    source: Vec<std::net::IpAddr>,
    /// Set by the parent on the processes it starts: this one is process K of `processes`.
    #[arg(long, hide = true)]
    worker: Option<usize>,
}

/// Arguments of `latency`.
#[derive(clap::Parser)]
pub struct LatencyArgs {
    /// Node the watchers use.
    #[arg(long, default_value = "127.0.0.1:8082")]
    watch_addr: SocketAddr,
    /// Node the mover and the churners use (the same one for the single-node figure).
    #[arg(long, default_value = "127.0.0.1:8081")]
    move_addr: SocketAddr,
    /// The servers' JWT secret.
    #[arg(long, env = "JWT_SECRET")]
    jwt_secret: String,
    /// Watching connections in the room.
    #[arg(long, default_value_t = 200)]
    watchers: usize,
    /// Connections that join and leave the room at random all along.
    #[arg(long, default_value_t = 50)]
    churners: usize,
    /// Times the mover joins or leaves.
    #[arg(long, default_value_t = 20)]
    moves: usize,
    /// Room.
    #[arg(long, default_value = "general")]
    room: String,
}

/// A user's cookie, minted with the server's secret (the user need not exist in the store).
fn cookie(keys: &TokenKeys, id: u64, username: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("token={}", keys.issue(id, username, now).0)
}

async fn upgrade(addr: SocketAddr, cookie: &str) -> Result<Ws, BoxError> {
    upgrade_from(addr, None, cookie).await
}

/// [`upgrade`] from a chosen source address.
async fn upgrade_from(addr: SocketAddr, source: Option<std::net::IpAddr>, cookie: &str) -> Result<Ws, BoxError> {
    let mut request = format!("ws://{addr}/ws").into_client_request()?;
    request.headers_mut().insert("cookie", HeaderValue::from_str(cookie)?);
    let tcp = match source {
        Some(ip) => {
            let socket = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
        None => tokio::net::TcpStream::connect(addr).await?,
    };
    tcp.set_nodelay(true)?;
    // A small read buffer: tungstenite's default (128 KiB, allocated per connection) made the
    // generator's own cost per connection grow with thousands of connections open.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    Ok(tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await?.0)
}

async fn send(ws: &mut Ws, frame: &ClientFrame) -> Result<(), BoxError> {
    Ok(ws.send(Message::Binary(wire::encode(frame).into())).await?)
}

/// Reads until a frame `pick` accepts.
async fn until<T>(ws: &mut Ws, mut pick: impl FnMut(ServerFrame) -> Option<T>) -> Result<T, BoxError> {
    while let Some(message) = ws.next().await {
        if let Message::Binary(bytes) = message?
            && let Some(found) = wire::decode::<ServerFrame>(&bytes, usize::MAX).ok().and_then(&mut pick)
        {
            return Ok(found);
        }
    }
    Err("closed".into())
}

fn hello() -> ClientFrame {
    hello_version(wire::PROTOCOL_VERSION)
}

fn hello_version(version: u32) -> ClientFrame {
    ClientFrame::Hello(wire::Hello { version, client: "bench".into() })
}

fn join(room: &str) -> ClientFrame {
    ClientFrame::Join(wire::Join { room: room.into(), after_seq: None })
}

fn leave(room: &str) -> ClientFrame {
    ClientFrame::Leave(wire::Leave { room: room.into() })
}

/// Upgrade, `Hello`, `Join`, and the room's first `RoomPresence`.
async fn present(addr: SocketAddr, cookie: &str, room: &str) -> Result<Ws, BoxError> {
    present_from(addr, None, cookie, room, wire::PROTOCOL_VERSION).await
}

/// [`present`] from a chosen source address, in a given protocol version (v1: until `Joined`).
async fn present_from(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    cookie: &str,
    room: &str,
    version: u32,
) -> Result<Ws, BoxError> {
    let mut ws = upgrade_from(addr, source, cookie).await?;
    send(&mut ws, &hello_version(version)).await?;
    send(&mut ws, &join(room)).await?;
    if version == 1 {
        until(&mut ws, |f| matches!(f, ServerFrame::Joined(j) if j.room == room).then_some(())).await?;
    } else {
        until_presence(&mut ws, room).await?;
    }
    Ok(ws)
}

/// Reads until the room's first `RoomPresence`, of which only the kind and the room are read
/// (borrowed, no allocation): decoding its page of 50 users per connect would cost generator
/// CPU on the cores the measured server runs on. (Frames are postcard: the variant's index as
/// a varint, then the fields in order; `RoomPresence` begins with its room.)
async fn until_presence(ws: &mut Ws, room: &str) -> Result<(), BoxError> {
    static KIND: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
        let sample =
            ServerFrame::RoomPresence(wire::RoomPresence { room: String::new(), online: 0, users: Vec::new().into() });
        postcard::take_from_bytes::<u32>(&wire::encode(&sample)).map_or(u32::MAX, |(kind, _)| kind)
    });
    while let Some(message) = ws.next().await {
        if let Message::Binary(bytes) = message?
            && let Ok(((kind, name), _)) = postcard::take_from_bytes::<(u32, &str)>(&bytes)
            && kind == *KIND
            && name == room
        {
            return Ok(());
        }
    }
    Err("closed".into())
}

/// Pings every 20 s, the first one 20 s from now (well within the server's 75 s idle limit).
fn keepalive() -> tokio::time::Interval {
    let every = Duration::from_secs(20);
    tokio::time::interval_at(tokio::time::Instant::now() + every, every)
}

/// Keeps reading a connection (pinging now and then) so the server never sees a slow consumer.
fn drain(mut ws: Ws) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ping = keepalive();
        loop {
            tokio::select! {
                next = ws.next() => if !matches!(next, Some(Ok(_))) { return },
                _ = ping.tick() => {
                    if send(&mut ws, &ClientFrame::Ping(wire::Ping { nonce: 0 })).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Keeps reading a connection to any peer (its pings answered) until it ends.
fn drain_peer(conn: PeerConnection) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (_tx, mut rx, _) = conn.split();
        while rx.recv().await.is_ok() {}
    })
}

/// Opens one connection of `cookie` in `room`, as [`ConnectArgs::peer`] says, and keeps it read.
async fn open(
    peer: Peer,
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    cookie: &str,
    room: &str,
    version: u32,
) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    Ok(match peer {
        Peer::Socketchat => drain(present_from(addr, source, cookie, room, version).await?),
        // The ceiling sends no presence: open once `Joined` came, as protocol v1.
        Peer::Ceiling => drain(present_from(addr, source, cookie, room, 1).await?),
        Peer::Socketio => {
            let token = cookie.trim_start_matches("token=");
            let mut conn = PeerConnection::open(&Target::SocketIo(addr), token, "bench-connect").await?;
            conn.join(room).await?;
            drain_peer(conn)
        }
    })
}

/// `connect`: prints one JSON line. With `--processes N` it starts N processes of its own
/// (this binary, `--worker K`), each opening its share; it reads the server's memory once all
/// have reported, then lets them go.
pub async fn connect_scenario(args: ConnectArgs) -> Result<(), BoxError> {
    if args.peer == Peer::Socketio && !args.source.is_empty() {
        return Err("--source is for SocketChat and the ceiling".into());
    }
    if let Some(k) = args.worker {
        return connect_worker(args, k).await;
    }
    let processes = args.processes.max(1);
    let before = socketchat_bench::measure::resident_kib(args.pid);
    let cpu = CpuWatch::start(Some(args.pid), &args.backend_pid);
    let generator_before = socketchat_bench::measure::process_tree_cpu_seconds(std::process::id());
    let start = Instant::now();
    let (held, workers) = if processes == 1 {
        (open_share(&args, 0, 1).await?, Vec::new())
    } else {
        (Vec::new(), start_workers(processes).await?)
    };
    let elapsed = start.elapsed().as_secs_f64();
    let used = cpu.used();
    let generator_cpu = socketchat_bench::measure::process_tree_cpu_seconds(std::process::id()) - generator_before;
    let server_cpu = used.server.unwrap_or(0.0);
    // Let the last presence refreshes go out before memory is read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = socketchat_bench::measure::resident_kib(args.pid);
    println!(
        "{}",
        serde_json::json!({
            "scenario": "connect",
            "peer": args.peer,
            "presence": args.presence,
            "protocol_version": args.protocol_version,
            "connections": args.connections,
            "users": args.users,
            "processes": processes,
            "sources": args.source.len().max(1),
            "seconds": (elapsed * 100.0).round() / 100.0,
            "connects_per_s": (args.connections as f64 / elapsed).round(),
            "server_rss_before_kib": before,
            "server_rss_after_kib": after,
            "kib_per_connection": ((after.saturating_sub(before)) as f64 / args.connections as f64 * 10.0).round() / 10.0,
            "generator_cpu_s": (generator_cpu * 100.0).round() / 100.0,
            "server_cpu_s": (server_cpu * 100.0).round() / 100.0,
            "server_cpu_us_per_connect": (server_cpu * 1e6 / args.connections as f64).round(),
            "backend_cpu_s": used.backends.map(|s| (s * 100.0).round() / 100.0),
        })
    );
    for task in held {
        task.abort();
    }
    for (mut child, stdin) in workers {
        drop(stdin);
        child.wait().await?;
    }
    Ok(())
}

/// Opens connections k, k + n, k + 2n… of `args.connections`, `args.parallel` at a time (from
/// this process's source address, if any), and returns their readers.
async fn open_share(args: &ConnectArgs, k: usize, n: usize) -> Result<Vec<tokio::task::JoinHandle<()>>, BoxError> {
    let keys = TokenKeys::new(args.jwt_secret.as_bytes(), 3600);
    let cookies: Arc<Vec<String>> =
        Arc::new((0..args.users).map(|i| cookie(&keys, 50_000_000 + i as u64, &format!("load{i:06}"))).collect());
    let source = (!args.source.is_empty()).then(|| args.source[k % args.source.len()]);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(k));
    let held = Arc::new(Mutex::new(Vec::with_capacity(args.connections / n + 1)));
    let workers: Vec<_> = (0..args.parallel)
        .map(|_| {
            let (next, held, cookies, room) = (next.clone(), held.clone(), cookies.clone(), args.room.clone());
            let (addr, total, version, peer) = (args.addr, args.connections, args.protocol_version, args.peer);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        return Ok::<(), BoxError>(());
                    }
                    let reader = open(peer, addr, source, &cookies[i % cookies.len()], &room, version).await?;
                    held.lock().unwrap().push(reader);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let held = std::mem::take(&mut *held.lock().unwrap());
    Ok(held)
}

/// A process started by [`start_workers`]: opens its share, says how many on one line, holds
/// them until its stdin closes.
async fn connect_worker(args: ConnectArgs, k: usize) -> Result<(), BoxError> {
    use tokio::io::AsyncReadExt;
    let held = open_share(&args, k, args.processes.max(1)).await?;
    println!("{}", serde_json::json!({ "worker": k, "opened": held.len() }));
    let mut rest = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut rest).await;
    for task in held {
        task.abort();
    }
    Ok(())
}

/// Starts `n` processes of this binary with this process's arguments and `--worker K`, and
/// waits until each has opened its share. A worker's stdin is kept: closing it lets it go.
async fn start_workers(n: usize) -> Result<Vec<(tokio::process::Child, tokio::process::ChildStdin)>, BoxError> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut workers = Vec::with_capacity(n);
    let mut reports = Vec::with_capacity(n);
    for k in 0..n {
        let mut child = tokio::process::Command::new(&exe)
            .args(&args)
            .args(["--worker", &k.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or("a worker's stdin")?;
        let stdout = child.stdout.take().ok_or("a worker's stdout")?;
        reports.push(tokio::spawn(async move {
            let mut line = String::new();
            tokio::io::BufReader::new(stdout).read_line(&mut line).await.map(|_| line)
        }));
        workers.push((child, stdin));
    }
    for (k, report) in reports.into_iter().enumerate() {
        let line = report.await??;
        if !line.contains("\"opened\"") {
            return Err(format!("worker {k} failed before opening its share (its error is above)").into());
        }
    }
    Ok(workers)
}

/// What a watcher saw: when, and whether the mover was listed.
type Sightings = Arc<Mutex<Vec<(Instant, bool)>>>;

/// `latency`: prints one JSON line.
pub async fn latency_scenario(args: LatencyArgs) -> Result<(), BoxError> {
    const MOVER: &str = "-mover";
    let keys = TokenKeys::new(args.jwt_secret.as_bytes(), 3600);
    let room = args.room.clone();
    let mut watchers: Vec<(Sightings, tokio::task::JoinHandle<()>)> = Vec::new();
    for i in 0..args.watchers {
        let mut ws =
            present(args.watch_addr, &cookie(&keys, 60_000_000 + i as u64, &format!("w{i:05}")), &room).await?;
        let room = room.clone();
        let seen: Sightings = Arc::default();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut ping = keepalive();
            loop {
                tokio::select! {
                    next = ws.next() => match next {
                        Some(Ok(Message::Binary(bytes))) => {
                            if let Ok(ServerFrame::RoomPresence(p)) = wire::decode::<ServerFrame>(&bytes, usize::MAX)
                                && p.room == room
                            {
                                let listed = p.users.iter().any(|u| u.username == MOVER);
                                record.lock().unwrap().push((Instant::now(), listed));
                            }
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                        Some(Ok(_)) => {}
                    },
                    _ = ping.tick() => {
                        let _ = send(&mut ws, &ClientFrame::Ping(wire::Ping { nonce: 0 })).await;
                    }
                }
            }
        });
        watchers.push((seen, task));
    }
    let mut churners = Vec::new();
    for i in 0..args.churners {
        let mut ws = upgrade(args.move_addr, &cookie(&keys, 70_000_000 + i as u64, &format!("c{i:05}"))).await?;
        send(&mut ws, &hello()).await?;
        let room = room.clone();
        churners.push(tokio::spawn(async move {
            let (mut writes, mut reads) = ws.split();
            let reader = tokio::spawn(async move { while let Some(Ok(_)) = reads.next().await {} });
            let mut inside = false;
            loop {
                tokio::time::sleep(Duration::from_millis(rand::random_range(200..1500))).await;
                let frame = if inside { leave(&room) } else { join(&room) };
                inside = !inside;
                if writes.send(Message::Binary(wire::encode(&frame).into())).await.is_err() {
                    break;
                }
            }
            reader.abort();
        }));
    }
    let mut mover = upgrade(args.move_addr, &cookie(&keys, 80_000_000, MOVER)).await?;
    send(&mut mover, &hello()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut moves: Vec<(Instant, bool)> = Vec::new();
    for n in 0..args.moves {
        let inside = n % 2 == 0;
        moves.push((Instant::now(), inside));
        send(&mut mover, &if inside { join(&room) } else { leave(&room) }).await?;
        // The mover reads what it is sent, and waits longer than any coalescing interval.
        let deadline = Instant::now() + Duration::from_millis(1500);
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline.into(), mover.next()).await {}
    }
    for churner in churners {
        churner.abort();
    }
    // For each move and watcher: the first frame after the move that shows it, before the next.
    let mut latencies: Vec<u32> = Vec::new();
    let mut missing = 0usize;
    for (seen, task) in watchers {
        task.abort();
        let seen = seen.lock().unwrap();
        for (n, (at, inside)) in moves.iter().enumerate() {
            let until = moves.get(n + 1).map(|(next, _)| *next);
            match seen.iter().find(|(t, listed)| t >= at && until.is_none_or(|u| *t < u) && listed == inside) {
                Some((t, _)) => latencies.push(t.duration_since(*at).as_micros() as u32),
                None => missing += 1,
            }
        }
    }
    latencies.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "scenario": "presence-latency",
            "cross_node": args.watch_addr != args.move_addr,
            "watchers": args.watchers,
            "churners": args.churners,
            "moves": args.moves,
            "samples": latencies.len(),
            "missing": missing,
            "latency_p50_ms": socketchat_bench::measure::percentile_ms(&latencies, 0.50),
            "latency_p99_ms": socketchat_bench::measure::percentile_ms(&latencies, 0.99),
            "latency_max_ms": socketchat_bench::measure::percentile_ms(&latencies, 1.0),
        })
    );
    if missing > 0 {
        return Err(format!("presence-latency: {missing} watcher(s) never saw a move").into());
    }
    Ok(())
}
