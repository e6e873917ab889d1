//! `weir bench`: drives a running server end to end over HTTP.
//!
//! 1. Throughput: producers enqueue `--jobs` jobs in batches while consumers fetch and ack
//!    in batches; reports the enqueue rate and the end-to-end rate (first enqueue to last
//!    ack).
//! 2. Latency: producers enqueue at a steady `--rate` for `--seconds`; consumers long-poll.
//!    Each payload carries its send time, so the enqueue-to-start latency is measured from
//!    the moment the producer sent the job to the moment a consumer received it (same
//!    machine, same clock).

use crate::cli::BenchArgs;
use crate::out::{self, CmdResult, Failure};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::value::RawValue;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;
use weir_api::{AckItem, BreakerBody, NewJobBody, QueueConfigPatch, RateLimitBody};
use weir_client::Client;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A payload of about `size` bytes that carries its send time.
fn payload(size: usize, t_us: u64) -> Box<RawValue> {
    let pad = "x".repeat(size.saturating_sub(30));
    let text = format!("{{\"t\":{t_us},\"pad\":\"{pad}\"}}");
    RawValue::from_string(text).unwrap_or_default()
}

fn sent_at(p: &RawValue) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct T {
        t: u64,
    }
    serde_json::from_str::<T>(p.get()).ok().map(|t| t.t)
}

pub async fn run(client: &Client, a: BenchArgs, json: bool) -> CmdResult {
    if a.batch == 0 || a.producers == 0 || a.consumers == 0 || a.jobs == 0 {
        return Err(Failure::usage(
            "--jobs, --batch, --producers and --consumers must be at least 1",
        ));
    }
    if !client.ready().await {
        return Err(Failure::Runtime(format!(
            "no ready server at {} (start one with `weir serve`)",
            client.base()
        )));
    }
    prepare(client, &a).await?;
    let through = throughput(client, &a, json).await?;
    prepare(client, &a).await?;
    let latency = if a.rate > 0 {
        Some(latency(client, &a, json).await?)
    } else {
        None
    };
    let report = serde_json::json!({
        "server": client.base(),
        "jobs": a.jobs, "batch": a.batch, "producers": a.producers, "consumers": a.consumers,
        "payload_bytes": a.payload_bytes,
        "enqueue_jobs_per_s": through.0,
        "end_to_end_jobs_per_s": through.1,
        "latency": latency.as_ref().map(|(l, held)| serde_json::json!({
            "rate": a.rate, "held_jobs_per_s": held, "seconds": a.seconds, "jobs": l.len(),
            "p50_ms": l.value_at_quantile(0.50) as f64 / 1000.0,
            "p99_ms": l.value_at_quantile(0.99) as f64 / 1000.0,
            "p999_ms": l.value_at_quantile(0.999) as f64 / 1000.0,
            "max_ms": l.max() as f64 / 1000.0,
        })),
    });
    if json {
        return out::json(&report);
    }
    println!(
        "throughput ({} jobs, batch {}, {} producers, {} consumers, {} B payload):",
        a.jobs, a.batch, a.producers, a.consumers, a.payload_bytes
    );
    println!("  enqueue      {:>10.0} jobs/s", through.0);
    println!("  end to end   {:>10.0} jobs/s", through.1);
    if let Some((l, held)) = latency {
        println!(
            "enqueue-to-start latency at {} jobs/s for {} s ({} jobs, {held:.0} jobs/s held):",
            a.rate,
            a.seconds,
            l.len()
        );
        for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
            println!(
                "  {name:<6} {:>8.2} ms",
                l.value_at_quantile(q) as f64 / 1000.0
            );
        }
        println!("  max    {:>8.2} ms", l.max() as f64 / 1000.0);
    }
    Ok(())
}

async fn prepare(client: &Client, a: &BenchArgs) -> CmdResult {
    let queue = a.queue.as_str();
    // The flow controls under test; zero values remove them, so runs do not inherit.
    let patch = QueueConfigPatch {
        concurrency: Some(a.queue_concurrency),
        group_concurrency: Some(a.group_concurrency),
        group_rate_limit: Some(RateLimitBody {
            limit: a.group_rate,
            period_ms: 1000,
            burst: None,
        }),
        rate_limit: Some(RateLimitBody {
            limit: a.queue_rate,
            period_ms: 1000,
            burst: None,
        }),
        breaker: Some(BreakerBody::switch(a.breaker)),
        ..Default::default()
    };
    client.configure(queue, &patch).await?;
    let exists = client.queues().await?.iter().any(|q| q.name == queue);
    if exists {
        client.purge(queue).await?;
        let active = client
            .queue(queue)
            .await?
            .counts
            .get("active")
            .copied()
            .unwrap_or(0);
        if active > 0 {
            return Err(Failure::usage(format!(
                "queue {queue:?} has {active} active jobs (another bench or worker?); use --queue"
            )));
        }
    }
    Ok(())
}

fn bar(total: u64, hidden: bool, what: &str) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template(&format!("{what} {{bar:40}} {{pos}}/{{len}} {{per_sec}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// What the consumers of one run share.
#[derive(Clone)]
struct Consumers {
    client: Client,
    queue: String,
    batch: usize,
    acked: Arc<AtomicU64>,
    target: u64,
    /// When the ack that reached `target` returned: the run's end. (The other consumers may
    /// still sit in a long poll for up to its wait; that idle time is not the server's.)
    finished: Arc<OnceLock<Instant>>,
    stop: Arc<AtomicBool>,
    hist: Option<Arc<Mutex<Histogram<u64>>>>,
    progress: ProgressBar,
}

/// Consumes until `target` jobs are acked (or `stop`), recording latency when asked.
async fn consume(c: Consumers) -> Result<(), Failure> {
    let Consumers {
        client,
        queue,
        batch,
        acked,
        target,
        finished,
        stop,
        hist,
        progress,
    } = c;
    let queues = vec![queue];
    let mut local = Histogram::<u64>::new(3).map_err(|e| Failure::Runtime(e.to_string()))?;
    while acked.load(Ordering::Relaxed) < target && !stop.load(Ordering::Relaxed) {
        let jobs = client.fetch(&queues, batch, 200, "bench").await?;
        if jobs.is_empty() {
            continue;
        }
        if hist.is_some() {
            let now = now_us();
            for j in &jobs {
                if let Some(t) = sent_at(&j.payload) {
                    let _ = local.record(now.saturating_sub(t).max(1));
                }
            }
        }
        let acks: Vec<AckItem> = jobs.iter().map(AckItem::of).collect();
        let r = client.ack(acks).await?;
        if acked.fetch_add(r.acked as u64, Ordering::Relaxed) + r.acked as u64 >= target {
            let _ = finished.set(Instant::now());
        }
        progress.inc(r.acked as u64);
    }
    if let Some(h) = hist {
        let _ = h.lock().await.add(&local);
    }
    Ok(())
}

async fn throughput(client: &Client, a: &BenchArgs, quiet: bool) -> Result<(f64, f64), Failure> {
    let progress = bar(a.jobs, quiet, "throughput");
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(OnceLock::new());
    let started = Instant::now();
    let shared = Consumers {
        client: client.clone(),
        queue: a.queue.clone(),
        batch: a.batch,
        acked: acked.clone(),
        target: a.jobs,
        finished: finished.clone(),
        stop: stop.clone(),
        hist: None,
        progress: progress.clone(),
    };
    let consumers: Vec<_> = (0..a.consumers)
        .map(|_| tokio::spawn(consume(shared.clone())))
        .collect();
    let mut producers = Vec::new();
    for _ in 0..a.producers {
        let (client, next, queue) = (client.clone(), next.clone(), a.queue.clone());
        let (batch, total, size, groups) = (a.batch as u64, a.jobs, a.payload_bytes, a.groups);
        producers.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(batch, Ordering::Relaxed);
                if from >= total {
                    return Ok::<(), Failure>(());
                }
                let n = batch.min(total - from);
                let jobs = (from..from + n)
                    .map(|i| {
                        let mut j =
                            NewJobBody::new(queue.clone(), "bench", payload(size, now_us()));
                        if groups > 0 {
                            j.group = Some(format!("g{}", i % groups));
                        }
                        j
                    })
                    .collect();
                client.enqueue(jobs).await?;
            }
        }));
    }
    let mut result = Ok(());
    for p in producers {
        if let Ok(Err(e)) = p.await {
            result = Err(e);
        }
    }
    let enqueue_secs = started.elapsed().as_secs_f64();
    if result.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    for c in consumers {
        if let Ok(Err(e)) = c.await {
            result = Err(e);
        }
    }
    result?;
    let total_secs = finished
        .get()
        .map_or_else(|| started.elapsed(), |end| end.duration_since(started))
        .as_secs_f64();
    progress.finish_and_clear();
    Ok((
        a.jobs as f64 / enqueue_secs.max(1e-9),
        a.jobs as f64 / total_secs.max(1e-9),
    ))
}

/// The enqueue-to-start latencies at a steady rate, and the rate the producers really held
/// (jobs/s from the first send to the last).
async fn latency(
    client: &Client,
    a: &BenchArgs,
    quiet: bool,
) -> Result<(Histogram<u64>, f64), Failure> {
    let total = a.rate * a.seconds;
    let sending = Instant::now();
    let progress = bar(total, quiet, "latency   ");
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new(3).map_err(|e| Failure::Runtime(e.to_string()))?,
    ));
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Consumers {
        client: client.clone(),
        queue: a.queue.clone(),
        batch: a.batch,
        acked: acked.clone(),
        target: total,
        finished: Arc::new(OnceLock::new()),
        stop: stop.clone(),
        hist: Some(hist.clone()),
        progress: progress.clone(),
    };
    let consumers: Vec<_> = (0..a.consumers)
        .map(|_| tokio::spawn(consume(shared.clone())))
        .collect();
    // A tick every millisecond, each sending the jobs due by then, spread over producers so
    // one slow request does not hold the schedule back.
    let per_producer = (a.rate as f64 / a.producers as f64).max(1.0);
    let mut producers = Vec::new();
    for p in 0..a.producers {
        let (client, queue, size) = (client.clone(), a.queue.clone(), a.payload_bytes);
        let quota = total / a.producers as u64 + u64::from((p as u64) < total % a.producers as u64);
        producers.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while sent < quota {
                tick.tick().await;
                let due = ((start.elapsed().as_secs_f64() * per_producer) as u64).min(quota);
                if due <= sent {
                    continue;
                }
                let jobs = (sent..due)
                    .map(|_| NewJobBody::new(queue.clone(), "bench", payload(size, now_us())))
                    .collect();
                client.enqueue(jobs).await?;
                sent = due;
            }
            Ok::<(), Failure>(())
        }));
    }
    let mut result = Ok(());
    for p in producers {
        if let Ok(Err(e)) = p.await {
            result = Err(e);
            stop.store(true, Ordering::Relaxed);
        }
    }
    let held = total as f64 / sending.elapsed().as_secs_f64().max(1e-9);
    for c in consumers {
        if let Ok(Err(e)) = c.await {
            result = Err(e);
        }
    }
    result?;
    progress.finish_and_clear();
    let h = hist.lock().await.clone();
    Ok((h, held))
}
