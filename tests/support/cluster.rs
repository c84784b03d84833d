//! Real Redis (standalone and a 3-master Redis Cluster), HAProxy with the project's own
//! `haproxy.cfg`, and `socketchat` nodes as separate processes (so one can be killed with
//! SIGKILL). Each starts on free loopback ports in its own temp dir and stops when dropped.

use super::postgres::free_port;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Spawns `command` and waits until a line of its output contains `ready` (stdout or stderr);
/// the rest of its output is drained so it never blocks.
fn spawn_until(mut command: Command, ready: &'static str, what: &str) -> Child {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| {
        panic!("{what} starts (is its package installed? scripts/test installs it): {e}");
    });
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || watch(BufReader::new(out), ready, tx));
    std::thread::spawn(move || watch(BufReader::new(err), ready, tx2));
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        panic!("{what} did not get ready within 60 s");
    }
    child
}

fn watch(reader: impl BufRead, ready: &str, tx: mpsc::Sender<()>) {
    let verbose = std::env::var_os("SOCKETCHAT_TEST_LOGS").is_some();
    let mut tx = Some(tx);
    for line in reader.lines().map_while(Result::ok) {
        if verbose {
            eprintln!("{line}");
        }
        if line.contains(ready)
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(());
        }
    }
}

fn stop_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// One `redis-server` on a free loopback port, no persistence.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    cluster: bool,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    fn start_with(cluster: bool) -> Self {
        let dir = tempfile::Builder::new().prefix("socketchat-redis-").tempdir().unwrap();
        let mut redis = Self { port: free_port(), dir, child: None, cluster };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--dir"])
            .arg(self.dir.path());
        if self.cluster {
            command.args(["--cluster-enabled", "yes", "--cluster-config-file"]).arg(self.dir.path().join("nodes.conf"));
        }
        self.child = Some(spawn_until(command, "Ready to accept connections", "redis-server"));
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    /// Starts it again on the same port, empty.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Runs `redis-cli` against it and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three cluster-enabled masters joined with `redis-cli --cluster create`, no replicas.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<Redis> = (0..3).map(|_| Redis::start_with(true)).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        // The nodes agree on the slot map through gossip; wait until each says so.
        for node in &nodes {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !node.cli(&["cluster", "info"]).contains("cluster_state:ok") {
                assert!(std::time::Instant::now() < deadline, "cluster never became ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self { nodes }
    }

    /// Seed URLs, comma-separated (the form REDIS_URL takes).
    pub fn url(&self) -> String {
        self.nodes.iter().map(Redis::url).collect::<Vec<_>>().join(",")
    }
}

/// HAProxy running the project's `haproxy.cfg` in front of two nodes.
pub struct Haproxy {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Haproxy {
    pub fn start(node1: SocketAddr, node2: SocketAddr) -> Self {
        let port = free_port();
        let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/haproxy.cfg");
        let mut command = Command::new("haproxy");
        command
            .args(["-db", "-f", cfg])
            .env("SOCKETCHAT_PROXY_BIND", format!("127.0.0.1:{port}"))
            .env("SOCKETCHAT_NODE1", node1.to_string())
            .env("SOCKETCHAT_NODE2", node2.to_string())
            .env("SOCKETCHAT_PROXY_CHECK_INTER", "200ms");
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("haproxy starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // HAProxy prints nothing when its listener is bound: wait until it accepts.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "haproxy did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { addr, child: Some(child) }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// A `socketchat` node as its own process.
pub struct ProcessNode {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ProcessNode {
    pub fn start(name: &str, env: &[(&str, String)]) -> Self {
        let dir = tempfile::Builder::new().prefix("socketchat-node-").tempdir().unwrap();
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(env!("CARGO_BIN_EXE_socketchat"));
        command
            .env("SOCKETCHAT_LISTEN", addr.to_string())
            .env("SOCKETCHAT_WT_LISTEN", "127.0.0.1:0")
            .env("SOCKETCHAT_DATA_DIR", dir.path())
            .env("SOCKETCHAT_NODE_ID", name)
            .env("RUST_LOG", "socketchat=info");
        for (k, v) in env {
            command.env(k, v);
        }
        let child = spawn_until(command, "listening on http://", "socketchat");
        Self { addr, dir, child: Some(child) }
    }

    /// The process id (for its memory).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no drain, no goodbye, nothing removed from Redis.
    pub fn kill(&mut self) {
        stop_child(&mut self.child);
    }

    /// SIGTERM, then wait for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        child.wait().unwrap()
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}
