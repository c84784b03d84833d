//! A throwaway PostgreSQL cluster per test (the newest version installed under
//! `/usr/lib/postgresql`: 15 on Debian 12, 17 on Debian 13): `initdb` into a temp dir, `postgres`
//! on a free loopback port, stopped (and its files removed) when dropped. Runs as the `postgres`
//! user when the tests run as root (PostgreSQL refuses root).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `bin` directory of the newest PostgreSQL installed by Debian's packages.
fn bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let newest = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
            .filter(|(_, bin)| bin.join("initdb").exists())
            .max_by_key(|(major, _)| *major);
        newest.map(|(_, bin)| bin).expect("PostgreSQL under /usr/lib/postgresql (scripts/test installs it)")
    })
}

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Runs a PostgreSQL binary, as `postgres` when we are root.
fn pg_command(binary: &str) -> Command {
    let path = bin().join(binary);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

/// A port that was free just now and that no other call in this process has handed out: the
/// tests of a binary run in parallel, and two of them given the same port started two HAProxy
/// listeners on it (HAProxy sets SO_REUSEPORT), so one test's client reached the other's cluster.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

impl Postgres {
    /// Initialises and starts a cluster, and creates the database `socketchat`.
    pub fn start() -> Self {
        let mut pg = Self::init();
        pg.spawn();
        pg.create_database();
        pg
    }

    /// Initialises a cluster without starting it (`start_again`, then `create_database`).
    pub fn init() -> Self {
        let dir = tempfile::Builder::new().prefix("socketchat-pg-").tempdir().expect("temp dir");
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown for postgres");
        }
        let data = dir.path().join("data");
        let out = pg_command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D"])
            .arg(&data)
            .output()
            .expect("initdb runs (is the postgresql package installed?)");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        Self { port: free_port(), dir, child: None }
    }

    /// Creates the database `socketchat` in the running cluster.
    pub fn create_database(&self) {
        let out = pg_command("createdb")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "socketchat"])
            .output()
            .unwrap();
        assert!(out.status.success(), "createdb: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server and returns once it logs that it accepts connections.
    fn spawn(&mut self) {
        let mut child = pg_command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "fsync=on"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("postgres starts");
        let stderr = child.stderr.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("ready to accept connections")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(60)).expect("postgres ready within 60 s");
        self.child = Some(child);
    }

    /// Stops the server (fast shutdown) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let out = pg_command("pg_ctl").arg("-D").arg(self.data()).args(["-m", "fast", "-w", "stop"]).output();
            if !out.map(|o| o.status.success()).unwrap_or(false) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Stops and starts again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn start_again(&mut self) {
        self.spawn();
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/socketchat", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
