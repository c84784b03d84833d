//! What every scenario reads off processes and latency samples (Linux `/proc`).

/// The fields of `/proc/{pid}/stat` after the command name: index 0 is field 3 (state) of
/// proc(5), so field N is at N - 3.
fn stat_fields(pid: &str) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')').next().unwrap_or("").split_whitespace().map(|v| v.parse().unwrap_or(0)).collect()
}

/// utime + stime of a process (`self` or a pid), in seconds.
pub fn process_cpu_seconds(pid: &str) -> f64 {
    let fields = stat_fields(pid);
    let ticks = |i: usize| fields.get(i).copied().unwrap_or(0) as f64;
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of a process and all its descendants: its own, its children's that have
/// ended (cutime + cstime), and its live children's. For PostgreSQL, whose postmaster forks a
/// backend per connection, or any server that runs helpers.
pub fn process_tree_cpu_seconds(pid: u32) -> f64 {
    let fields = stat_fields(&pid.to_string());
    let ticks = |i: usize| fields.get(i).copied().unwrap_or(0) as f64;
    let own = (ticks(11) + ticks(12) + ticks(13) + ticks(14)) / 100.0;
    let children: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|child| stat_fields(&child.to_string()).get(1) == Some(&u64::from(pid)))
        .map(process_tree_cpu_seconds)
        .sum();
    own + children
}

/// CPU seconds of the generator (this process), a server and the server's backends
/// (PostgreSQL, Redis: each as a whole process tree), from one moment on.
pub struct CpuWatch {
    server: Option<u32>,
    backends: Vec<u32>,
    start: (f64, Option<f64>, Option<f64>),
}

/// What a [`CpuWatch`] read: CPU seconds since it started.
#[derive(Debug, Clone, Copy)]
pub struct CpuUsed {
    /// This process.
    pub generator: f64,
    /// The server (with its pid).
    pub server: Option<f64>,
    /// The backends together (with their pids).
    pub backends: Option<f64>,
}

impl CpuWatch {
    /// Starts counting now.
    pub fn start(server: Option<u32>, backends: &[u32]) -> Self {
        let mut watch = Self { server, backends: backends.to_vec(), start: (0.0, None, None) };
        watch.start = watch.read();
        watch
    }

    fn read(&self) -> (f64, Option<f64>, Option<f64>) {
        let backends = (!self.backends.is_empty())
            .then(|| self.backends.iter().map(|pid| process_tree_cpu_seconds(*pid)).sum::<f64>());
        (cpu_seconds(), self.server.map(|pid| process_cpu_seconds(&pid.to_string())), backends)
    }

    /// CPU seconds used since the start.
    pub fn used(&self) -> CpuUsed {
        let now = self.read();
        CpuUsed {
            generator: now.0 - self.start.0,
            server: now.1.zip(self.start.1).map(|(a, b)| a - b),
            backends: now.2.zip(self.start.2).map(|(a, b)| a - b),
        }
    }
}

/// This process's CPU seconds.
pub fn cpu_seconds() -> f64 {
    process_cpu_seconds("self")
}

/// A process's resident memory (VmRSS), KiB.
pub fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The `p` quantile (0..=1) of sorted samples in microseconds, in milliseconds.
pub fn percentile_ms<T: Copy + Into<u64>>(sorted: &[T], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].into() as f64 / 1000.0
}
