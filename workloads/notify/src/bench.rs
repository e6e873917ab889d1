//! `weir-notify bench`: the whole pipeline in one process — an embedded Weir, the stub
//! providers, the workers — measured from trigger to the stub provider's acceptance.
//!
//! It makes `subscribers` subscribers in one topic, triggers one bulk workflow to the topic,
//! and while that drains triggers a transactional workflow (a password reset) to one
//! subscriber every `probe_ms`, recording how long each took to reach its provider. It
//! reports the bulk rate (messages accepted per second, from the trigger to the last
//! acceptance) and the transactional latencies' p50/p99.

use crate::pipeline::now_ms;
use crate::stub;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Subscribers in the bulk topic.
    pub subscribers: usize,
    /// The bulk provider's type: `sendgrid` (batches of up to 1,000) or `twilio` (one per call).
    pub provider: String,
    /// Deliveries per send job.
    pub send_batch: usize,
    /// Messages per run job.
    pub run_batch: usize,
    /// A transactional probe every this many ms (0: none).
    pub probe_ms: u64,
    /// Where to keep the data (a temporary folder if `None`).
    pub data_dir: Option<std::path::PathBuf>,
    /// Only make the subscribers, and report memory and disk for them.
    pub setup_only: bool,
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Subscribers.
    pub subscribers: usize,
    /// The bulk provider's type.
    pub provider: String,
    /// Seconds to create the subscribers and topic.
    pub setup_seconds: f64,
    /// Seconds from the bulk trigger to the last acceptance.
    pub seconds: f64,
    /// Bulk messages accepted per second.
    pub messages_per_second: f64,
    /// Provider calls made for the bulk send.
    pub provider_calls: u64,
    /// Transactional probes sent during the bulk send.
    pub probes: usize,
    /// Their trigger-to-acceptance latency, p50, ms.
    pub probe_p50_ms: f64,
    /// p99, ms.
    pub probe_p99_ms: f64,
    /// The slowest, ms.
    pub probe_max_ms: f64,
    /// The process's resident memory at the end, MiB (VmRSS).
    pub rss_mib: f64,
    /// Its peak, MiB (VmHWM).
    pub peak_rss_mib: f64,
    /// The notify store's size on disk, MiB.
    pub store_mib: f64,
}

fn proc_status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn dir_mib(p: &std::path::Path) -> f64 {
    let mut total = 0u64;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total as f64 / (1024.0 * 1024.0)
}

const CONFIG: &str = r#"
[[providers]]
id = "bulk"
type = "TYPE"
url = "{BULK}"
account = "AC1"
from = "+15550000000"
concurrency = 64

[[providers]]
id = "tx"
type = "sendgrid"
url = "{BULK}"
priority = 1

[[workflows]]
id = "newsletter"
class = "bulk"
[[workflows.steps]]
type = "CHANNEL"
template.en = TEMPLATE

[[workflows]]
id = "password-reset"
class = "transactional"
critical = true
[[workflows.steps]]
type = "email"
template.en = { subject = "Reset your password", body = "Code {{ payload.code }}" }
"#;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the benchmark.
pub async fn run(o: BenchOptions) -> Result<BenchReport, String> {
    let tmp = tempfile_dir()?;
    let dir = o.data_dir.clone().unwrap_or_else(|| tmp.clone());
    let listen = || async {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())
    };
    let bulk = stub::http(listen().await?).map_err(|e| e.to_string())?;
    // The stand-in provider keeps keys (to count and deduplicate), not every message's text.
    bulk.state.keys_only.store(true, Ordering::Relaxed);
    let sms_bulk = o.provider == "twilio";
    let channel = if sms_bulk { "sms" } else { "email" };
    let text = CONFIG
        .replace("TYPE", &o.provider)
        .replace("CHANNEL", channel)
        .replace(
            "TEMPLATE",
            if sms_bulk {
                r#"{ body = "Hello {{ subscriber.data.name }}, issue {{ payload.issue }}" }"#
            } else {
                r#"{ subject = "News for {{ subscriber.data.name }}", body = "Hello {{ subscriber.data.name }}, issue {{ payload.issue }}" }"#
            },
        )
        .replace("{BULK}", &bulk.url);
    let file = crate::config::parse(&text)?;
    let mut settings = file.pipeline.settings().map_err(|e| e.to_string())?;
    settings.send_batch = o.send_batch;
    settings.run_batch = o.run_batch;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let running = crate::start(
        crate::Options {
            data_dir: dir.clone(),
            weir: None,
            providers: file.providers,
            workflows: file.workflows,
            settings,
            run_concurrency: cores * 2,
            send_concurrency: 64,
            workers: true,
            retention_ms: crate::DEFAULT_RETENTION_MS,
            archive_dir: dir.join("archive"),
        },
        shutdown.clone(),
    )
    .await?;
    let n = running.notify.clone();
    let started = Instant::now();
    let store = n.store.clone();
    let count = o.subscribers;
    let sms = o.provider == "twilio";
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut ids = Vec::with_capacity(10_000);
        let mut subs = Vec::with_capacity(10_000);
        for i in 0..count {
            let id = format!("s{i:08}");
            subs.push(crate::model::Subscriber {
                id: id.clone(),
                email: (!sms).then(|| format!("user{i}@example.com")),
                phone: sms.then(|| format!("+1555{:07}", i % 10_000_000)),
                data: [("name".to_string(), serde_json::json!(format!("User {i}")))]
                    .into_iter()
                    .collect(),
                ..Default::default()
            });
            ids.push(id);
            if subs.len() == 10_000 || i + 1 == count {
                store.put_subscribers(&subs).map_err(|e| e.to_string())?;
                store
                    .set_members("everyone", &ids, true)
                    .map_err(|e| e.to_string())?;
                subs.clear();
                ids.clear();
            }
        }
        store
            .put_topic(&crate::model::Topic {
                key: "everyone".into(),
                name: None,
            })
            .map_err(|e| e.to_string())?;
        store
            .put_subscribers(&[crate::model::Subscriber {
                id: "alice".into(),
                email: Some("alice@example.com".into()),
                ..Default::default()
            }])
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    let setup_seconds = started.elapsed().as_secs_f64();
    eprintln!("bench: {count} subscribers in {setup_seconds:.1} s");
    if o.setup_only {
        n.store.persist().map_err(|e| e.to_string())?;
        let report = BenchReport {
            subscribers: count,
            provider: o.provider.clone(),
            setup_seconds,
            seconds: 0.0,
            messages_per_second: 0.0,
            provider_calls: 0,
            probes: 0,
            probe_p50_ms: 0.0,
            probe_p99_ms: 0.0,
            probe_max_ms: 0.0,
            rss_mib: proc_status_mib("VmRSS:"),
            peak_rss_mib: proc_status_mib("VmHWM:"),
            store_mib: dir_mib(&dir.join("notify")),
        };
        shutdown.cancel();
        if o.data_dir.is_none() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        return Ok(report);
    }

    let t0 = Instant::now();
    let trigger = crate::store::Trigger {
        id: n.store.next_trigger_id(now_ms()),
        workflow: "newsletter".into(),
        to: crate::store::Recipients::Topic {
            topic: "everyone".into(),
        },
        payload: serde_json::json!({"issue": 7}),
        class: crate::workflow::Class::Bulk,
        created_ms: now_ms(),
        messages: 0,
        fanned_out: false,
        idempotency_key: None,
    };
    n.store.put_trigger(&trigger).map_err(|e| e.to_string())?;
    n.start_fanout(&trigger, "everyone")
        .await
        .map_err(|e| e.message)?;
    // Transactional probes, concurrently with the bulk send, through the same provider.
    let stop_probes = tokio_util::sync::CancellationToken::new();
    let probes = {
        let (n, state, stop, every) = (
            n.clone(),
            bulk.state.clone(),
            stop_probes.clone(),
            o.probe_ms,
        );
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut code = 0u64;
            while every > 0 && !stop.is_cancelled() {
                code += 1;
                let t = Instant::now();
                let tr = crate::store::Trigger {
                    id: n.store.next_trigger_id(now_ms()),
                    workflow: "password-reset".into(),
                    to: crate::store::Recipients::One("alice".into()),
                    payload: serde_json::json!({"code": code}),
                    class: crate::workflow::Class::Transactional,
                    created_ms: now_ms(),
                    messages: 0,
                    fanned_out: true,
                    idempotency_key: None,
                };
                if n.store.put_trigger(&tr).is_err() {
                    break;
                }
                let Ok(ids) = n.start_messages(&tr, &["alice".to_string()], 0, true).await else {
                    break;
                };
                let key = format!("{}/0/0", ids[0]);
                if state
                    .wait_for(Duration::from_secs(60), |a| a.contains_key(&key))
                    .await
                {
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                tokio::time::sleep(Duration::from_millis(every)).await;
            }
            latencies
        })
    };
    let mut last_report = Instant::now();
    loop {
        let done = bulk.state.count_trigger(trigger.id);
        if done >= count {
            break;
        }
        if t0.elapsed() > Duration::from_secs(3_600) {
            return Err(format!("only {done} of {count} accepted after an hour"));
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "bench: {done}/{count} accepted, {:.0}/s",
                done as f64 / t0.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        bulk.state
            .wait_for(Duration::from_millis(200), |a| a.len() >= count + 1_000_000)
            .await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    stop_probes.cancel();
    let mut latencies = probes.await.map_err(|e| e.to_string())?;
    latencies.sort_by(|a, b| a.total_cmp(b));
    let report = BenchReport {
        subscribers: count,
        provider: o.provider.clone(),
        setup_seconds,
        seconds,
        messages_per_second: count as f64 / seconds,
        provider_calls: bulk.state.calls.load(Ordering::Relaxed),
        probes: latencies.len(),
        probe_p50_ms: percentile(&latencies, 0.5),
        probe_p99_ms: percentile(&latencies, 0.99),
        probe_max_ms: latencies.last().copied().unwrap_or(0.0),
        rss_mib: proc_status_mib("VmRSS:"),
        peak_rss_mib: proc_status_mib("VmHWM:"),
        store_mib: dir_mib(&dir.join("notify")),
    };
    shutdown.cancel();
    for w in running.workers {
        let _ = w.await;
    }
    if o.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(report)
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let d = std::env::temp_dir().join(format!("weir-notify-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    Ok(d)
}
