//! The system allocator's tuning (glibc's malloc), set once when a node starts.

/// Sets both thresholds, fixed:
/// - glibc raises its mmap threshold after a large block is freed, so the next 19 MiB argon2
///   block came from a thread's heap and was kept there after the hash: 150 failed logins grew
///   the server by 360 MiB (measured, `tests/http.rs`). With the threshold fixed at 4 MiB, every
///   larger block is its own mapping, given back when freed.
/// - Fixing the mmap threshold also fixes the trim threshold at glibc's default of 128 KiB,
///   and a writer's heap, growing and shrinking around it, gave memory back after almost every
///   group commit: a `madvise` that interrupts the other core to flush its TLB, then page
///   faults to take the memory again (6.6 % of the server's CPU under `persist`, in `perf`).
///   A heap keeps up to 4 MiB free instead (glibc makes at most 8 heaps per core, so at most
///   64 MiB on 2 cores is kept this way).
pub(crate) fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// Blocks of this size and more get mappings of their own, given back when freed.
        const OWN_MAPPING: i32 = 4 << 20;
        /// Free memory a thread's heap keeps at its top before giving it back.
        const KEPT_FREE: i32 = 4 << 20;
        let thresholds = [(libc::M_MMAP_THRESHOLD, OWN_MAPPING, "mmap"), (libc::M_TRIM_THRESHOLD, KEPT_FREE, "trim")];
        for (parameter, value, name) in thresholds {
            // SAFETY: mallopt only changes allocator tuning; any value is valid for these parameters.
            if unsafe { libc::mallopt(parameter, value) } != 1 {
                tracing::warn!("could not set the allocator's {name} threshold");
            }
        }
    }
}
