//! Operational metrics in Prometheus's text format (GET /metrics). Counters are atomics and
//! two small maps keyed by the router's closed set of route names, so recording costs a few
//! nanoseconds and the exposition needs no crate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::policy::PolicyStats;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// File content received in uploads.
    pub bytes_in: AtomicU64,
    /// File content sent by /stream.
    pub bytes_out: AtomicU64,
    pub transactions: AtomicU64,
    pub events: AtomicU64,
    pub blob_errors: AtomicU64,
    /// Connections being served (a gauge: see [`ConnectionGauge`]).
    pub connections: std::sync::Arc<AtomicU64>,
}

/// Counts one open connection for as long as it lives.
pub struct ConnectionGauge(std::sync::Arc<AtomicU64>);

impl ConnectionGauge {
    pub fn open(metrics: &Metrics) -> ConnectionGauge {
        metrics.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGauge(metrics.connections.clone())
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the layers above the policy engine hold, for the gauges.
pub struct Held {
    /// Verified tokens cached.
    pub tokens: u64,
    /// Notification feeds open.
    pub feeds: u64,
}

impl Metrics {
    /// Records one finished request.
    pub fn request(&self, route: &'static str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route, status))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let mut lat = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = lat.entry(route).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a failure that is the blob store's (not the client's).
    pub fn blob_error(&self, e: &crate::blob::BlobError) {
        use crate::blob::BlobError as B;
        if matches!(
            e,
            B::Backend(_)
                | B::Integrity { .. }
                | B::NotFound { .. }
                | B::Crypto(_)
                | B::Full(_)
                | B::Io(_)
                | B::Timeout(_)
        ) {
            Self::add(&self.blob_errors, 1);
        }
    }

    /// The exposition text.
    pub fn render(&self, policy: PolicyStats, held: Held) -> String {
        let mut out = String::new();
        out.push_str("# HELP vellum_http_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE vellum_http_requests_total counter\n");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "vellum_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP vellum_http_request_duration_seconds Time to the response head, by route.\n",
        );
        out.push_str("# TYPE vellum_http_request_duration_seconds histogram\n");
        for (route, h) in self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            for (le, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "vellum_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "vellum_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "vellum_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "vellum_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        let counters: [(&str, &str, u64); 11] = [
            (
                "vellum_bytes_in_total",
                "File content bytes received by uploads.",
                self.bytes_in.load(Ordering::Relaxed),
            ),
            (
                "vellum_bytes_out_total",
                "File content bytes sent by /stream.",
                self.bytes_out.load(Ordering::Relaxed),
            ),
            (
                "vellum_transactions_committed_total",
                "POST /write transactions committed.",
                self.transactions.load(Ordering::Relaxed),
            ),
            (
                "vellum_events_committed_total",
                "Events those transactions stored.",
                self.events.load(Ordering::Relaxed),
            ),
            (
                "vellum_blob_store_errors_total",
                "Failed blob store operations (uploads, reads, deletes).",
                self.blob_errors.load(Ordering::Relaxed),
            ),
            (
                "vellum_policy_evaluations_total",
                "Policy evaluations requested.",
                policy.evaluations,
            ),
            (
                "vellum_policy_cache_hits_total",
                "Evaluations answered from the result cache.",
                policy.result_cache_hits,
            ),
            (
                "vellum_policy_compilations_total",
                "Policies compiled (compiled-cache misses).",
                policy.compiled,
            ),
            (
                "vellum_policy_errors_total",
                "Evaluations that met an error or a limit (granting nothing).",
                policy.errors,
            ),
            (
                "vellum_policy_budget_stops_total",
                "Evaluations stopped by a budget (time, instructions, memory, a guarded builtin).",
                policy.budget_stops,
            ),
            (
                "vellum_policy_skipped_total",
                "Evaluations not run because the request's policy budget was spent or it was abandoned.",
                policy.skipped,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        // What the server holds right now: every cache is bounded, and this shows how full.
        let gauges = [
            (
                "vellum_policy_compiled_cache_entries",
                "Compiled policies held.",
                policy.compiled_entries,
            ),
            (
                "vellum_policy_compiled_cache_bytes",
                "Estimated bytes of the compiled policies held (bounded by POLICY_CACHE_BYTES).",
                policy.compiled_bytes,
            ),
            (
                "vellum_policy_result_cache_entries",
                "Policy results held.",
                policy.result_entries,
            ),
            (
                "vellum_policy_gate_waiting",
                "Evaluations waiting for a permit (POLICY_CONCURRENCY).",
                policy.waiting,
            ),
            (
                "vellum_token_cache_entries",
                "Verified tokens held.",
                held.tokens,
            ),
            (
                "vellum_http_connections_open",
                "Connections being served (bounded by MAX_CONNECTIONS plus the reserve).",
                self.connections.load(Ordering::Relaxed),
            ),
            ("vellum_feeds_open", "Notification feeds open.", held.feeds),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}
