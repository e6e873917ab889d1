//! Prometheus metrics.
//!
//! Two sources. HTTP request counts and durations are events in this process, recorded with
//! the `prometheus` crate in a registry owned by the app (not a global one, so several
//! servers in one test process do not mix). Queue series (depth per state, oldest waiting
//! age, job counters, wait and run histograms) are the *store's* state: they are read from it
//! at scrape time and written in the text format directly, because a snapshot of counters
//! the store keeps cannot be expressed as increments of a client-side counter. Job counters
//! come from the store's hourly aggregates, so they survive restarts. Cache series are read
//! from the cache's counters the same way.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use std::collections::BTreeMap;
use std::fmt::Write;
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

    fn render(&self, out: &mut String) {
        let mut buf = Vec::new();
        if prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_ok()
        {
            out.push_str(&String::from_utf8_lossy(&buf));
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

/// Renders everything: queue series from `queues` and `totals`, then the HTTP series.
pub fn render(
    http: &HttpMetrics,
    queues: &[QueueStats],
    totals: &BTreeMap<String, Aggregate>,
) -> String {
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "weir_queue_jobs",
        "gauge",
        "Jobs per queue and state",
    );
    for q in queues {
        for (state, n) in &q.counts {
            let _ = writeln!(
                out,
                "weir_queue_jobs{{queue=\"{}\",state=\"{state}\"}} {n}",
                esc(&q.name)
            );
        }
    }
    header(
        &mut out,
        "weir_queue_oldest_waiting_seconds",
        "gauge",
        "Age of the oldest waiting job",
    );
    for q in queues {
        let _ = writeln!(
            out,
            "weir_queue_oldest_waiting_seconds{{queue=\"{}\"}} {}",
            esc(&q.name),
            q.oldest_waiting_ms as f64 / 1000.0
        );
    }
    header(
        &mut out,
        "weir_queue_paused",
        "gauge",
        "1 while the queue is paused",
    );
    for q in queues {
        let _ = writeln!(
            out,
            "weir_queue_paused{{queue=\"{}\"}} {}",
            esc(&q.name),
            u8::from(q.config.paused)
        );
    }
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
        header(&mut out, name, "gauge", help);
        for q in queues {
            let _ = writeln!(out, "{name}{{queue=\"{}\"}} {}", esc(&q.name), get(q));
        }
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
        let metric = format!("weir_jobs_{name}_total");
        header(&mut out, &metric, "counter", help);
        for (queue, a) in totals {
            let _ = writeln!(out, "{metric}{{queue=\"{}\"}} {}", esc(queue), get(a));
        }
    }
    histogram(
        &mut out,
        "weir_job_wait_seconds",
        "Ready-to-start wait of started attempts (since the server started)",
        queues.iter().map(|q| (q.name.as_str(), &q.wait_ms)),
    );
    histogram(
        &mut out,
        "weir_job_run_seconds",
        "Run time of completed jobs (since the server started)",
        queues.iter().map(|q| (q.name.as_str(), &q.run_ms)),
    );
    http.render(&mut out);
    out
}

/// Appends the store's group-commit counters (nothing for a backend without a committer).
pub fn render_store(out: &mut String, stats: Option<weir_store::CommitStats>) {
    let Some(s) = stats else { return };
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
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// A cache tier series: its name, kind, help, and how to read it.
type TierSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TierStats) -> Option<f64>,
);

/// Appends the cache's series: per tier, then cache-wide.
pub fn render_cache(out: &mut String, s: &CacheStats) {
    let tiers = [
        ("memory", &s.memory),
        ("disk", &s.disk),
        ("redis", &s.redis),
    ];
    let series: [TierSeries; 9] = [
        (
            "weir_cache_hits_total",
            "counter",
            "Reads a tier answered",
            |t| Some(t.hits as f64),
        ),
        (
            "weir_cache_misses_total",
            "counter",
            "Reads a tier could not answer",
            |t| Some(t.misses as f64),
        ),
        (
            "weir_cache_hit_ratio",
            "gauge",
            "Hits over reads per tier",
            |t| Some(t.hit_ratio()),
        ),
        (
            "weir_cache_evictions_total",
            "counter",
            "Entries dropped for space",
            |t| Some(t.evictions as f64),
        ),
        (
            "weir_cache_invalidations_total",
            "counter",
            "Entries removed by delete, tag, dependency or flush",
            |t| Some(t.invalidations as f64),
        ),
        (
            "weir_cache_writes_total",
            "counter",
            "Entries written (sets and promotions)",
            |t| Some(t.writes as f64),
        ),
        (
            "weir_cache_errors_total",
            "counter",
            "Failed tier operations",
            |t| Some(t.errors as f64),
        ),
        ("weir_cache_bytes", "gauge", "Bytes a tier holds", |t| {
            t.bytes.map(|b| b as f64)
        }),
        ("weir_cache_entries", "gauge", "Entries a tier holds", |t| {
            t.entries.map(|n| n as f64)
        }),
    ];
    for (name, kind, help, get) in series {
        header(out, name, kind, help);
        for (tier, t) in tiers {
            if let Some(v) = get(t).filter(|_| t.enabled) {
                let _ = writeln!(out, "{name}{{tier=\"{tier}\"}} {v}");
            }
        }
    }
    let wide: [(&str, &str, &str, f64); 5] = [
        (
            "weir_cache_redis_up",
            "gauge",
            "1 while Redis answers",
            f64::from(u8::from(s.redis_up)),
        ),
        (
            "weir_cache_redis_outages_total",
            "counter",
            "Times Redis stopped answering",
            s.redis_outages as f64,
        ),
        (
            "weir_cache_coalesced_total",
            "counter",
            "Callers that shared another's computation (stampedes coalesced)",
            s.coalesced as f64,
        ),
        (
            "weir_cache_computations_total",
            "counter",
            "Computations run by get-or-compute",
            s.computations as f64,
        ),
        (
            "weir_cache_resyncs_total",
            "counter",
            "Times local tiers were retired because invalidations may have been missed",
            s.resyncs as f64,
        ),
    ];
    for (name, kind, help, v) in wide {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (&'a str, &'a LatencyHistogram)>,
) {
    header(out, name, "histogram", help);
    for (queue, h) in series {
        let q = esc(queue);
        let mut cumulative = 0;
        for (i, bound) in BUCKET_BOUNDS_MS.iter().enumerate() {
            cumulative += h.buckets[i];
            let _ = writeln!(
                out,
                "{name}_bucket{{queue=\"{q}\",le=\"{}\"}} {cumulative}",
                *bound as f64 / 1000.0
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{queue=\"{q}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "{name}_sum{{queue=\"{q}\"}} {}",
            h.sum_ms as f64 / 1000.0
        );
        let _ = writeln!(out, "{name}_count{{queue=\"{q}\"}} {}", h.count);
    }
}

/// Escapes a label value (queue names are restricted, but be safe).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
        let text = render(&HttpMetrics::new(), &[q], &BTreeMap::new());
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
