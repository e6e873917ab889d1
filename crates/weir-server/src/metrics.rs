//! Prometheus metrics.
//!
//! Two sources. HTTP request counts and durations are events in this process, recorded with
//! the `prometheus` crate in a registry owned by the app (not a global one, so several
//! servers in one test process do not mix). Queue series (depth per state, oldest waiting
//! age, job counters, wait and run histograms) are the *store's* state: they are read from it
//! at scrape time into a [`Snapshot`], a `prometheus` collector of its own, because a
//! snapshot of counters the store keeps cannot be expressed as increments of a client-side
//! counter. Job counters come from the store's hourly aggregates, so they survive restarts.
//! Cache series are read from the cache's counters the same way. The crate's text encoder
//! writes both.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use std::collections::BTreeMap;
use std::time::Instant;
use weir_core::histogram::BUCKET_BOUNDS_MS;
use weir_core::{Aggregate, LatencyHistogram, QueueStats};

use crate::AppState;
use weir_cache::{CacheStats, TierStats};

/// The process's own metrics.
pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    /// Fetches waiting for work right now (idle workers).
    pub(crate) fetch_waiting: IntGauge,
}

impl HttpMetrics {
    /// Registers the HTTP series.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "weir_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["method", "route", "status"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "weir_http_request_duration_seconds",
                "HTTP request duration by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
            ]),
            &["method", "route"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let fetch_waiting = IntGauge::new(
            "weir_fetch_waiting",
            "Fetch requests in flight (long polls waiting for work)",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let _ = registry.register(Box::new(requests.clone()));
        let _ = registry.register(Box::new(duration.clone()));
        let _ = registry.register(Box::new(fetch_waiting.clone()));
        HttpMetrics {
            registry,
            requests,
            duration,
            fetch_waiting,
        }
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware recording every request by its route template (never the raw path, which
/// would make one series per job id).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let resp = next.run(req).await;
    let m = state.http_metrics();
    m.requests
        .with_label_values(&[&method, &route, resp.status().as_str()])
        .inc();
    m.duration
        .with_label_values(&[&method, &route])
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// A job counter: its name, help, and how to read it from an aggregate.
type Counter = (&'static str, &'static str, fn(&Aggregate) -> u64);

/// A queue gauge: its name, help, and how to read it from the queue's statistics.
type Gauge = (&'static str, &'static str, fn(&QueueStats) -> f64);

/// A queue histogram: its name, help, and which of the queue's histograms it shows.
type Hist = (
    &'static str,
    &'static str,
    fn(&QueueStats) -> &LatencyHistogram,
);

/// A cache tier series: its name, kind, help, and how to read it.
type TierSeries = (
    &'static str,
    MetricType,
    &'static str,
    fn(&TierStats) -> Option<f64>,
);

/// One scrape's snapshot of what the store and the cache hold (queue depths and ages, job
/// counters from the hourly aggregates, wait and run histograms, the group committer's and
/// the cache's counters), as a `prometheus` [`Collector`]: the crate encodes it, escaping
/// and formatting included, next to the HTTP series of the registry.
///
/// It is built per scrape and never registered (its series come and go with queues), so it
/// has no fixed descriptors.
pub struct Snapshot {
    families: Vec<MetricFamily>,
}

impl Collector for Snapshot {
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.families.clone()
    }
}

impl Snapshot {
    /// The series of `queues`, job counters from `totals` (by queue), the store's commit
    /// counters (when it has a committer) and the cache's counters.
    pub fn new(
        queues: &[QueueStats],
        totals: &BTreeMap<String, Aggregate>,
        store: Option<weir_store::CommitStats>,
        cache: &CacheStats,
    ) -> Self {
        let mut f = Families::default();
        let by_queue = |get: &dyn Fn(&QueueStats) -> f64| -> Vec<Metric> {
            queues
                .iter()
                .map(|q| gauge(&[("queue", &q.name)], get(q)))
                .collect()
        };
        f.add(
            "weir_queue_jobs",
            "Jobs per queue and state",
            MetricType::GAUGE,
            queues
                .iter()
                .flat_map(|q| {
                    q.counts
                        .iter()
                        .map(|(state, n)| gauge(&[("queue", &q.name), ("state", state)], *n as f64))
                })
                .collect(),
        );
        f.add(
            "weir_queue_oldest_waiting_seconds",
            "Age of the oldest waiting job",
            MetricType::GAUGE,
            by_queue(&|q| q.oldest_waiting_ms as f64 / 1000.0),
        );
        f.add(
            "weir_queue_paused",
            "1 while the queue is paused",
            MetricType::GAUGE,
            by_queue(&|q| f64::from(u8::from(q.config.paused))),
        );
        let gauges: [Gauge; 5] = [
            (
                "weir_queue_breaker_open",
                "1 while the breaker is open, 0.5 half open, 0 closed or off",
                |q| match q.breaker {
                    "open" => 1.0,
                    "half_open" => 0.5,
                    _ => 0.0,
                },
            ),
            (
                "weir_queue_starving",
                "1 while the oldest waiting job is past starvation_ms",
                |q| f64::from(u8::from(q.starving)),
            ),
            (
                "weir_queue_recommended_workers",
                "The scaling advisor's recommended workers",
                |q| q.advice.recommended_workers as f64,
            ),
            (
                "weir_queue_arrival_per_second",
                "Enqueues per second over the last minute",
                |q| q.arrival_per_s,
            ),
            (
                "weir_queue_completed_per_second",
                "Completions per second over the last minute",
                |q| q.completed_per_s,
            ),
        ];
        for (name, help, get) in gauges {
            f.add(name, help, MetricType::GAUGE, by_queue(&get));
        }
        let counters: [Counter; 7] = [
            ("enqueued", "Jobs enqueued", |a| a.enqueued),
            ("completed", "Jobs completed", |a| a.completed),
            (
                "failed",
                "Attempts failed (including expired leases)",
                |a| a.failed,
            ),
            ("retried", "Failed attempts that will be retried", |a| {
                a.failed.saturating_sub(a.dead)
            }),
            ("dead", "Jobs that went dead", |a| a.dead),
            ("expired", "Leases that expired", |a| a.expired),
            ("cancelled", "Jobs cancelled", |a| a.cancelled),
        ];
        for (name, help, get) in counters {
            f.add(
                &format!("weir_jobs_{name}_total"),
                help,
                MetricType::COUNTER,
                totals
                    .iter()
                    .map(|(queue, a)| counter(&[("queue", queue)], get(a) as f64))
                    .collect(),
            );
        }
        let hists: [Hist; 2] = [
            (
                "weir_job_wait_seconds",
                "Ready-to-start wait of started attempts (since the server started)",
                |q| &q.wait_ms,
            ),
            (
                "weir_job_run_seconds",
                "Run time of completed jobs (since the server started)",
                |q| &q.run_ms,
            ),
        ];
        for (name, help, get) in hists {
            f.add(
                name,
                help,
                MetricType::HISTOGRAM,
                queues.iter().map(|q| histogram(&q.name, get(q))).collect(),
            );
        }
        if let Some(s) = store {
            let series: [(&str, &str, u64); 3] = [
                (
                    "weir_store_commits_total",
                    "Batches the store wrote (one journal write and, durable, one sync each)",
                    s.commits,
                ),
                (
                    "weir_store_records_written_total",
                    "Records the store wrote; divided by commits, how many callers one sync served",
                    s.records,
                ),
                (
                    "weir_store_records_cancelled_total",
                    "Records never written because a job was enqueued and deleted within one batch",
                    s.cancelled,
                ),
            ];
            for (name, help, value) in series {
                f.add(
                    name,
                    help,
                    MetricType::COUNTER,
                    vec![counter(&[], value as f64)],
                );
            }
        }
        f.cache(cache);
        Snapshot { families: f.0 }
    }
}

/// Metric families under construction; a family without samples is left out (the text
/// format has no empty families).
#[derive(Default)]
struct Families(Vec<MetricFamily>);

impl Families {
    fn add(&mut self, name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) {
        if metrics.is_empty() {
            return;
        }
        let mut mf = MetricFamily::default();
        mf.set_name(name.to_string());
        mf.set_help(help.to_string());
        mf.set_field_type(kind);
        mf.set_metric(metrics);
        self.0.push(mf);
    }

    /// The cache's series: per tier, then cache-wide.
    fn cache(&mut self, s: &CacheStats) {
        let tiers = [
            ("memory", &s.memory),
            ("disk", &s.disk),
            ("redis", &s.redis),
        ];
        let series: [TierSeries; 9] = [
            (
                "weir_cache_hits_total",
                MetricType::COUNTER,
                "Reads a tier answered",
                |t| Some(t.hits as f64),
            ),
            (
                "weir_cache_misses_total",
                MetricType::COUNTER,
                "Reads a tier could not answer",
                |t| Some(t.misses as f64),
            ),
            (
                "weir_cache_hit_ratio",
                MetricType::GAUGE,
                "Hits over reads per tier",
                |t| Some(t.hit_ratio()),
            ),
            (
                "weir_cache_evictions_total",
                MetricType::COUNTER,
                "Entries dropped for space",
                |t| Some(t.evictions as f64),
            ),
            (
                "weir_cache_invalidations_total",
                MetricType::COUNTER,
                "Entries removed by delete, tag, dependency or flush",
                |t| Some(t.invalidations as f64),
            ),
            (
                "weir_cache_writes_total",
                MetricType::COUNTER,
                "Entries written (sets and promotions)",
                |t| Some(t.writes as f64),
            ),
            (
                "weir_cache_errors_total",
                MetricType::COUNTER,
                "Failed tier operations",
                |t| Some(t.errors as f64),
            ),
            (
                "weir_cache_bytes",
                MetricType::GAUGE,
                "Bytes a tier holds",
                |t| t.bytes.map(|b| b as f64),
            ),
            (
                "weir_cache_entries",
                MetricType::GAUGE,
                "Entries a tier holds",
                |t| t.entries.map(|n| n as f64),
            ),
        ];
        for (name, kind, help, get) in series {
            let metrics = tiers
                .iter()
                .filter(|(_, t)| t.enabled)
                .filter_map(|(tier, t)| get(t).map(|v| sample(kind, &[("tier", tier)], v)))
                .collect();
            self.add(name, help, kind, metrics);
        }
        let wide: [(&str, MetricType, &str, f64); 5] = [
            (
                "weir_cache_redis_up",
                MetricType::GAUGE,
                "1 while Redis answers",
                f64::from(u8::from(s.redis_up)),
            ),
            (
                "weir_cache_redis_outages_total",
                MetricType::COUNTER,
                "Times Redis stopped answering",
                s.redis_outages as f64,
            ),
            (
                "weir_cache_coalesced_total",
                MetricType::COUNTER,
                "Callers that shared another's computation (stampedes coalesced)",
                s.coalesced as f64,
            ),
            (
                "weir_cache_computations_total",
                MetricType::COUNTER,
                "Computations run by get-or-compute",
                s.computations as f64,
            ),
            (
                "weir_cache_resyncs_total",
                MetricType::COUNTER,
                "Times local tiers were retired because invalidations may have been missed",
                s.resyncs as f64,
            ),
        ];
        for (name, kind, help, v) in wide {
            self.add(name, help, kind, vec![sample(kind, &[], v)]);
        }
    }
}

fn label_pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name(k.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

fn sample(kind: MetricType, labels: &[(&str, &str)], v: f64) -> Metric {
    match kind {
        MetricType::COUNTER => counter(labels, v),
        _ => gauge(labels, v),
    }
}

fn gauge(labels: &[(&str, &str)], v: f64) -> Metric {
    let mut g = prometheus::proto::Gauge::default();
    g.set_value(v);
    let mut m = Metric::default();
    m.set_label(label_pairs(labels));
    m.set_gauge(g);
    m
}

fn counter(labels: &[(&str, &str)], v: f64) -> Metric {
    let mut c = prometheus::proto::Counter::default();
    c.set_value(v);
    let mut m = Metric::default();
    m.set_label(label_pairs(labels));
    m.set_counter(c);
    m
}

/// A queue's latency histogram in seconds (the engine keeps milliseconds).
fn histogram(queue: &str, h: &LatencyHistogram) -> Metric {
    let mut cumulative = 0;
    let buckets = BUCKET_BOUNDS_MS
        .iter()
        .enumerate()
        .map(|(i, bound)| {
            cumulative += h.buckets[i];
            let mut b = Bucket::default();
            b.set_cumulative_count(cumulative);
            b.set_upper_bound(*bound as f64 / 1000.0);
            b
        })
        .collect();
    let mut p = prometheus::proto::Histogram::default();
    p.set_sample_count(h.count);
    p.set_sample_sum(h.sum_ms as f64 / 1000.0);
    p.set_bucket(buckets);
    let mut m = Metric::default();
    m.set_label(label_pairs(&[("queue", queue)]));
    m.set_histogram(p);
    m
}

/// The whole exposition: the snapshot's series, then the process's HTTP series.
pub fn render(http: &HttpMetrics, snapshot: &Snapshot) -> String {
    let mut families = snapshot.collect();
    families.extend(http.registry.gather());
    let mut buf = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::QueueConfig;

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let mut h = LatencyHistogram::default();
        for ms in [1, 3, 400_000] {
            h.observe(ms);
        }
        let q = QueueStats {
            name: "q".into(),
            counts: [("waiting", 2u64)].into_iter().collect(),
            oldest_waiting_ms: 1500,
            config: QueueConfig::default(),
            wait_ms: h,
            run_ms: LatencyHistogram::default(),
            breaker: "open",
            starving: true,
            arrival_per_s: 0.0,
            completed_per_s: 0.0,
            failed_per_s: 0.0,
            advice: weir_core::Advice {
                recommended_workers: 3,
                reason: "x".into(),
            },
        };
        let snap = Snapshot::new(&[q], &BTreeMap::new(), None, &CacheStats::default());
        let text = render(&HttpMetrics::new(), &snap);
        assert!(text.contains("weir_queue_jobs{queue=\"q\",state=\"waiting\"} 2"));
        assert!(text.contains("weir_queue_oldest_waiting_seconds{queue=\"q\"} 1.5"));
        assert!(text.contains("weir_job_wait_seconds_bucket{queue=\"q\",le=\"0.001\"} 1"));
        assert!(text.contains("weir_job_wait_seconds_bucket{queue=\"q\",le=\"0.005\"} 2"));
        assert!(text.contains("weir_job_wait_seconds_bucket{queue=\"q\",le=\"300\"} 2"));
        assert!(text.contains("weir_job_wait_seconds_bucket{queue=\"q\",le=\"+Inf\"} 3"));
        assert!(text.contains("weir_job_wait_seconds_count{queue=\"q\"} 3"));
        assert!(text.contains("weir_queue_breaker_open{queue=\"q\"} 1"));
        assert!(text.contains("weir_queue_starving{queue=\"q\"} 1"));
        assert!(text.contains("weir_queue_recommended_workers{queue=\"q\"} 3"));
    }
}
