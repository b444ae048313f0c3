//! What a bench reports: its figures, each a shiplog value beside its baseline, as
//! a table and as JSON.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::measure::Latency;
use crate::store::{Replay, Stats};

/// What a benchmark reports: lines printed above the table, and its figures.
pub type Report = (Vec<String>, Vec<Figure>);

/// A shiplog figure beside its baseline.
#[derive(Serialize, Clone, Copy)]
pub struct Pair {
    pub shiplog: f64,
    pub baseline: f64,
    pub ratio: f64,
}

impl Pair {
    pub fn new(shiplog: f64, baseline: f64) -> Pair {
        Pair { shiplog, baseline, ratio: shiplog / baseline }
    }
}

/// One benchmark's result, as JSON and as rows of the table.
#[derive(Serialize)]
pub struct Figure {
    pub name: String,
    unit: &'static str,
    #[serde(flatten)]
    pub value: Pair,
    #[serde(skip_serializing_if = "Option::is_none")]
    ops_per_s: Option<Pair>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_ms: Option<Pair>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_ms: Option<Pair>,
}

impl Figure {
    pub fn plain(name: String, unit: &'static str, value: Pair) -> Figure {
        Figure { name, unit, value, ops_per_s: None, p50_ms: None, p99_ms: None }
    }

    pub fn append(name: String, shiplog: Stats, raw: Stats) -> Figure {
        Figure {
            ops_per_s: Some(Pair::new(shiplog.calls_per_s, raw.calls_per_s)),
            p50_ms: Some(Pair::new(shiplog.p50_ms, raw.p50_ms)),
            p99_ms: Some(Pair::new(shiplog.p99_ms, raw.p99_ms)),
            ..Figure::plain(name, "events/s", Pair::new(shiplog.events_per_s, raw.events_per_s))
        }
    }

    /// Latencies of one operation: the mean as the figure's value, then p50 and p99.
    pub fn latency(name: &str, shiplog: &[Duration], baseline: &[Duration]) -> Figure {
        let (shiplog, baseline) = (Latency::of(shiplog), Latency::of(baseline));
        Figure {
            p50_ms: Some(Pair::new(shiplog.p50_ms, baseline.p50_ms)),
            p99_ms: Some(Pair::new(shiplog.p99_ms, baseline.p99_ms)),
            ..Figure::plain(format!("{name}, mean"), "ms", Pair::new(shiplog.mean_ms, baseline.mean_ms))
        }
    }

    pub fn replay(total: u64, shiplog: &Replay, raw: &Replay) -> Vec<Figure> {
        let rate = |r: &Replay| r.events as f64 / r.wall.as_secs_f64();
        vec![
            Figure::plain(format!("replay {total} events"), "events/s", Pair::new(rate(shiplog), rate(raw))),
            Figure::plain(
                "replay peak RSS, first 10%".into(),
                "MiB",
                Pair::new(shiplog.peak_rss_tenth_mib, raw.peak_rss_tenth_mib),
            ),
            Figure::plain("replay peak RSS, whole".into(), "MiB", Pair::new(shiplog.peak_rss_mib, raw.peak_rss_mib)),
        ]
    }

    /// The figure's rows: its value, then calls/s where a call carries several
    /// events, then latencies.
    fn rows(&self) -> Vec<(String, Pair, usize)> {
        let mut rows = vec![(format!("{} ({})", self.name, self.unit), self.value, decimals(self.unit))];
        if let Some(ops) = self.ops_per_s.filter(|ops| ops.shiplog != self.value.shiplog) {
            rows.push(("  calls/s".into(), ops, 0));
        }
        for (label, pair) in [("  p50 latency (ms)", self.p50_ms), ("  p99 latency (ms)", self.p99_ms)] {
            if let Some(pair) = pair {
                rows.push((label.into(), pair, 3));
            }
        }
        rows
    }
}

fn decimals(unit: &str) -> usize {
    match unit {
        "ms" => 3,
        // Rates are large; sizes and per-patch counts (means over many patches) are small.
        "MiB" | "rows" | "commits" | "xids" => 1,
        _ => 0,
    }
}

pub fn print_report(header: &[String], figures: &[Figure], json_path: Option<&std::path::Path>) -> anyhow::Result<()> {
    println!();
    for line in header {
        println!("{line}");
    }
    println!("{:<44} {:>12} {:>12} {:>8}", "benchmark", "shiplog", "baseline", "ratio");
    println!("{}", "-".repeat(79));
    for figure in figures {
        for (label, pair, decimals) in figure.rows() {
            println!("{label:<44} {:>12.decimals$} {:>12.decimals$} {:>8.2}", pair.shiplog, pair.baseline, pair.ratio);
        }
    }
    println!();
    let json = serde_json::to_string_pretty(figures)?;
    match json_path {
        Some(path) => {
            std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
            println!("JSON written to {}", path.display());
        }
        None => println!("{json}"),
    }
    Ok(())
}
