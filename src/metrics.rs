//! Operational metrics in Prometheus's text format (GET /metrics), encoded by
//! prometheus-client. A request touches only its route's counter and histogram (shared
//! locks after the first request of a route and status), never one lock for everything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::policy::PolicyStats;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: &'static str,
}

type Latency = Family<Route, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

pub struct Metrics {
    requests: Family<RouteStatus, Counter>,
    latency: Latency,
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

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            events: AtomicU64::new(0),
            blob_errors: AtomicU64::new(0),
            connections: Default::default(),
        }
    }
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
    /// The task queue, read from the store at this scrape.
    pub queue: crate::model::task::QueueStats,
    /// Task runs that ended in an error, and tasks marked failed, by this process.
    pub task_run_failures: u64,
    pub tasks_failed: u64,
}

impl Metrics {
    /// Records one finished request.
    pub fn request(&self, route: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RouteStatus { route, status })
            .inc();
        self.latency
            .get_or_create(&Route { route })
            .observe(took.as_secs_f64());
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

    /// The exposition text. The registry is built per scrape: the request families are
    /// shared with it, the other values are read now.
    pub fn render(&self, policy: PolicyStats, held: Held) -> String {
        let mut registry = Registry::default();
        registry.register(
            "vellum_http_requests",
            "Requests answered, by route and status",
            self.requests.clone(),
        );
        registry.register(
            "vellum_http_request_duration_seconds",
            "Time to the response head, by route",
            self.latency.clone(),
        );
        let counters: [(&str, &str, u64); 13] = [
            (
                "vellum_task_run_failures",
                "Task runs that ended in an error on this node (each retried, or failed at its last attempt)",
                held.task_run_failures,
            ),
            (
                "vellum_tasks_failed",
                "Tasks this node marked failed after TASK_MAX_ATTEMPTS runs",
                held.tasks_failed,
            ),
            (
                "vellum_bytes_in",
                "File content bytes received by uploads",
                self.bytes_in.load(Ordering::Relaxed),
            ),
            (
                "vellum_bytes_out",
                "File content bytes sent by /stream",
                self.bytes_out.load(Ordering::Relaxed),
            ),
            (
                "vellum_transactions_committed",
                "POST /write transactions committed",
                self.transactions.load(Ordering::Relaxed),
            ),
            (
                "vellum_events_committed",
                "Events those transactions stored",
                self.events.load(Ordering::Relaxed),
            ),
            (
                "vellum_blob_store_errors",
                "Failed blob store operations (uploads, reads, deletes)",
                self.blob_errors.load(Ordering::Relaxed),
            ),
            (
                "vellum_policy_evaluations",
                "Policy evaluations requested",
                policy.evaluations,
            ),
            (
                "vellum_policy_cache_hits",
                "Evaluations answered from the result cache",
                policy.result_cache_hits,
            ),
            (
                "vellum_policy_compilations",
                "Policies compiled (compiled-cache misses)",
                policy.compiled,
            ),
            (
                "vellum_policy_errors",
                "Evaluations that met an error or a limit (granting nothing)",
                policy.errors,
            ),
            (
                "vellum_policy_budget_stops",
                "Evaluations stopped by a budget (time, instructions, memory, a guarded builtin)",
                policy.budget_stops,
            ),
            (
                "vellum_policy_skipped",
                "Evaluations not run because the request's policy budget was spent or it was abandoned",
                policy.skipped,
            ),
        ];
        for (name, help, v) in counters {
            let c: Counter = Counter::default();
            c.inc_by(v);
            registry.register(name, help, c);
        }
        // What the server holds right now: every cache is bounded, and this shows how full.
        let gauges = [
            (
                "vellum_policy_compiled_cache_entries",
                "Compiled policies held",
                policy.compiled_entries,
            ),
            (
                "vellum_policy_compiled_cache_bytes",
                "Estimated bytes of the compiled policies held (bounded by POLICY_CACHE_BYTES)",
                policy.compiled_bytes,
            ),
            (
                "vellum_policy_result_cache_entries",
                "Policy results held",
                policy.result_entries,
            ),
            (
                "vellum_policy_gate_waiting",
                "Evaluations waiting for a permit (POLICY_CONCURRENCY)",
                policy.waiting,
            ),
            (
                "vellum_token_cache_entries",
                "Verified tokens held",
                held.tokens,
            ),
            (
                "vellum_http_connections_open",
                "Connections being served (bounded by MAX_CONNECTIONS plus the reserve)",
                self.connections.load(Ordering::Relaxed),
            ),
            ("vellum_feeds_open", "Notification feeds open.", held.feeds),
            (
                "vellum_tasks_todo",
                "Tasks waiting to run, store-wide (queue depth)",
                held.queue.todo,
            ),
            (
                "vellum_tasks_in_progress",
                "Tasks running or waiting for their children, store-wide",
                held.queue.in_progress,
            ),
            (
                "vellum_tasks_failed_now",
                "Tasks in the failed state, store-wide (each waits for a retry)",
                held.queue.failed,
            ),
            (
                "vellum_task_oldest_age_seconds",
                "Age of the oldest task still to run or running (0 when none)",
                held.queue.oldest_open_ms.map_or(0, |created| {
                    crate::tasks::queue::now_ms().saturating_sub(created) / 1000
                }),
            ),
        ];
        for (name, help, v) in gauges {
            let g: Gauge = Gauge::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            registry.register(name, help, g);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}
