//! `/metrics` in Prometheus' text format: request latency per route,
//! subscriptions open, runs by status and projection lag. The first two are
//! counted in memory by this process; the others are read from the database
//! when scraped, so every process reports the same figures for them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sqlx::PgPool;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Default)]
struct Histogram {
    /// Observations at or below each bound (cumulative when written out).
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// This process's counters. Cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    subscriptions: Arc<AtomicI64>,
    latency: Arc<Mutex<BTreeMap<(String, u16), Histogram>>>,
}

/// Counts one open subscription until dropped.
pub struct OpenSubscription(Arc<AtomicI64>);

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Counts a subscription as open for as long as the returned guard lives.
    pub fn subscription_opened(&self) -> OpenSubscription {
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
        OpenSubscription(self.subscriptions.clone())
    }

    pub fn subscriptions_open(&self) -> i64 {
        self.subscriptions.load(Ordering::Relaxed)
    }

    fn observe(&self, route: String, status: u16, seconds: f64) {
        let mut latency = self.latency.lock().expect("not poisoned");
        let h = latency.entry((route, status)).or_default();
        for (count, bound) in h.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The exposition: this process's counters, then what the database says
    /// (absent while the read models are first being created).
    pub async fn render(&self, pool: &PgPool) -> String {
        let mut out = String::new();
        out.push_str("# HELP shiplog_http_request_duration_seconds Time to answer an HTTP request.\n");
        out.push_str("# TYPE shiplog_http_request_duration_seconds histogram\n");
        for ((route, status), h) in self.latency.lock().expect("not poisoned").iter() {
            let labels = format!("route=\"{route}\",status=\"{status}\"");
            for (count, bound) in h.counts.iter().zip(BUCKETS) {
                let _ =
                    writeln!(out, "shiplog_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "shiplog_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "shiplog_http_request_duration_seconds_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "shiplog_http_request_duration_seconds_count{{{labels}}} {}", h.count);
        }
        out.push_str("# HELP shiplog_subscriptions_open GraphQL subscriptions open in this process.\n");
        out.push_str("# TYPE shiplog_subscriptions_open gauge\n");
        let _ = writeln!(out, "shiplog_subscriptions_open {}", self.subscriptions_open());

        if let Err(e) = database_metrics(pool, &mut out).await {
            tracing::warn!(error = %e, "metrics from the database are unavailable");
        }
        out
    }
}

/// Runs by status and projection lag.
async fn database_metrics(pool: &PgPool, out: &mut String) -> Result<(), shiplog_projections::ProjectionError> {
    let runs = shiplog_projections::read::runs::count_by_status(pool).await?;
    let projections = shiplog_projections::runner::status(pool).await?;
    out.push_str("# HELP shiplog_runs Runs by status, from the runs read model.\n");
    out.push_str("# TYPE shiplog_runs gauge\n");
    for (status, count) in runs {
        let _ = writeln!(out, "shiplog_runs{{status=\"{status}\"}} {count}");
    }
    out.push_str("# HELP shiplog_projection_lag_events Events committed and not yet folded, per projection.\n");
    out.push_str("# TYPE shiplog_projection_lag_events gauge\n");
    for p in &projections {
        let _ = writeln!(out, "shiplog_projection_lag_events{{projection=\"{}\"}} {}", p.name, p.lag_events);
    }
    out.push_str("# HELP shiplog_projection_lag_seconds Age of the oldest event not yet folded, per projection.\n");
    out.push_str("# TYPE shiplog_projection_lag_seconds gauge\n");
    for p in &projections {
        let _ = writeln!(out, "shiplog_projection_lag_seconds{{projection=\"{}\"}} {}", p.name, p.lag_seconds);
    }
    out.push_str(
        "# HELP shiplog_projection_stalled_position Global position of the event a projection cannot fold; 0 while it folds.\n",
    );
    out.push_str("# TYPE shiplog_projection_stalled_position gauge\n");
    for p in &projections {
        let position = p.stalled.as_ref().map_or(0, |s| s.position);
        let _ = writeln!(out, "shiplog_projection_stalled_position{{projection=\"{}\"}} {position}", p.name);
    }
    Ok(())
}

/// Middleware: times every request by its route pattern (never the raw path, so
/// the label set stays bounded).
pub async fn time_requests(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe(route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}
