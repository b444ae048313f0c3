//! Measuring: warm-up, latency percentiles and this process's peak memory.

use std::time::Duration;

/// Untimed calls each writer makes first, so connections are open and statements
/// prepared before the clock starts.
pub const WARMUP_CALLS: usize = 5;

/// Mean, p50 and p99 of a set of latencies, in milliseconds.
#[derive(Clone, Copy)]
pub struct Latency {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Latency {
    pub fn of(latencies: &[Duration]) -> Latency {
        let mut sorted = latencies.to_vec();
        sorted.sort_unstable();
        let mean_ms = sorted.iter().sum::<Duration>().as_secs_f64() * 1000.0 / sorted.len() as f64;
        Latency { mean_ms, p50_ms: percentile(&sorted, 0.50), p99_ms: percentile(&sorted, 0.99) }
    }
}

/// Nearest-rank percentile of sorted latencies, in milliseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// Resets the kernel's peak-RSS mark (VmHWM) of this process, so each replay's peak
/// is its own and not the fill's.
pub fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("note: cannot reset the peak RSS mark ({e}); peaks include earlier phases");
    }
}

/// VmHWM from /proc/self/status, in MiB.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
