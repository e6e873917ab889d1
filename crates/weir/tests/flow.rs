//! Flow control through the real server, with several concurrent workers.

#![allow(clippy::unwrap_used)]

mod common;

use common::{raw, Server};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use weir_api::{BreakerBody, NewJobBody, ProblemType, QueueConfigPatch, RateLimitBody};
use weir_client::{Client, Concurrency, HandlerError, WorkerBuilder};

fn jobs(queue: &str, n: u64) -> Vec<NewJobBody> {
    (0..n)
        .map(|i| NewJobBody::new(queue, "t", raw(serde_json::json!({ "n": i }))))
        .collect()
}

async fn wait_counts(c: &Client, queue: &str, pred: impl Fn(&weir_api::QueueView) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let q = c.queue(queue).await.unwrap();
        if pred(&q) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out: {:?}", q.counts);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `n` workers on `queue`, each running `handler` with 4 slots.
fn workers<F, Fut>(
    c: &Client,
    queue: &'static str,
    n: usize,
    handler: F,
) -> (
    CancellationToken,
    Vec<tokio::task::JoinHandle<weir_client::WorkerReport>>,
)
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = weir_client::HandlerResult> + Send + 'static,
{
    let stop = CancellationToken::new();
    let runs = (0..n)
        .map(|i| {
            let h = handler.clone();
            let w = WorkerBuilder::new(c.clone(), &[queue])
                .name(format!("w{i}"))
                .concurrency(Concurrency::Fixed(4))
                .batch(4)
                .wait_ms(100)
                .handle("t", move |_| h())
                .build();
            tokio::spawn(w.run(stop.clone()))
        })
        .collect();
    (stop, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_holds_across_workers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let c = server.client();
    let patch = QueueConfigPatch {
        concurrency: Some(3),
        ..Default::default()
    };
    c.configure("cc", &patch).await.unwrap();
    c.enqueue(jobs("cc", 60)).await.unwrap();
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen_max = max.clone();
    let (stop, runs) = workers(&c, "cc", 3, move || {
        let (now, max) = (now.clone(), max.clone());
        async move {
            let in_flight = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(in_flight, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(15)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(None)
        }
    });
    wait_counts(&c, "cc", |q| q.counts["completed"] == 60).await;
    stop.cancel();
    for r in runs {
        r.await.unwrap();
    }
    let q = c.queue("cc").await.unwrap();
    assert_eq!(q.counts["completed"], 60);
    // 12 worker slots, never more than 3 jobs at once, as the handlers saw it.
    let peak = seen_max.load(Ordering::SeqCst);
    assert!(peak <= 3, "{peak} jobs ran at once under a limit of 3");
    assert!(
        peak >= 2,
        "the limit, not the workers, was the bottleneck: peak {peak}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_across_workers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let c = server.client();
    let patch = QueueConfigPatch {
        rate_limit: Some(RateLimitBody {
            limit: 20,
            period_ms: 1000,
            burst: Some(5),
        }),
        ..Default::default()
    };
    let q = c.configure("rl", &patch).await.unwrap();
    assert_eq!(q.config.rate_limit.unwrap().burst, 5);
    c.enqueue(jobs("rl", 55)).await.unwrap();
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let s2 = starts.clone();
    let (stop, runs) = workers(&c, "rl", 3, move || {
        let s = s2.clone();
        async move {
            s.lock().unwrap().push(Instant::now());
            Ok(None)
        }
    });
    wait_counts(&c, "rl", |q| q.counts["completed"] == 55).await;
    stop.cancel();
    for r in runs {
        r.await.unwrap();
    }
    let mut t = starts.lock().unwrap().clone();
    t.sort();
    assert_eq!(t.len(), 55);
    // In any one-second window: at most limit + burst starts (a little slack for the
    // moment a job is handed out versus the moment its handler starts).
    let within = common::most_within_a_second(&t);
    assert!(within <= 25, "{within} starts within a second");
    // 55 jobs at 20/s after a burst of 5 take at least 2.4 s.
    assert!(
        t[54].duration_since(t[0]) >= Duration::from_millis(2_300),
        "{:?}",
        t[54].duration_since(t[0])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_stops_a_failing_queue_without_burning_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let c = server.client();
    let patch = QueueConfigPatch {
        breaker: Some(BreakerBody {
            failure_rate: Some(0.0),
            consecutive_failures: Some(3),
            cooldown_ms: Some(600_000),
            half_open_probes: Some(1),
            ..BreakerBody::switch(true)
        }),
        ..Default::default()
    };
    c.configure("br", &patch).await.unwrap();
    c.enqueue(jobs("br", 30)).await.unwrap();
    let (stop, runs) = workers(&c, "br", 2, || async {
        Err(HandlerError::retry("downstream down"))
    });
    wait_counts(&c, "br", |q| q.breaker == "open").await;
    // Give the workers time to (not) take more: the queue stays untouched while open.
    let before = c.queue("br").await.unwrap();
    let attempts_at_open: u64 = c
        .jobs(Some("br"), None, None, 100)
        .await
        .unwrap()
        .jobs
        .iter()
        .map(|j| u64::from(j.attempt))
        .sum();
    let more = c.fetch(&["br".into()], 10, 300, "probe").await.unwrap();
    assert!(more.is_empty(), "an open breaker hands out nothing");
    stop.cancel();
    let mut failed = 0;
    for r in runs {
        failed += r.await.unwrap().failed;
    }
    // Only the calls that tripped the breaker (and a batch in flight with them) used an
    // attempt; every other job is untouched. (Failed jobs move back to waiting as their
    // backoff passes, so compare attempts, not states.)
    let page = c.jobs(Some("br"), None, None, 100).await.unwrap();
    let attempts: u64 = page.jobs.iter().map(|j| u64::from(j.attempt)).sum();
    assert_eq!(
        attempts, failed,
        "attempts used = failures the workers reported"
    );
    assert_eq!(
        attempts, attempts_at_open,
        "nothing was handed out while open"
    );
    // Before it opened, each worker could have a batch running and one being reported.
    assert!(failed <= 3 + 2 * 4 * 2, "{failed} attempts burned");
    assert_eq!(
        page.jobs.iter().filter(|j| j.attempt == 0).count() as u64,
        30 - failed
    );
    assert_eq!(before.breaker, "open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_push_waits_for_room() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let c = server.client();
    let patch = QueueConfigPatch {
        max_depth: Some(5),
        ..Default::default()
    };
    c.configure("full", &patch).await.unwrap();
    c.enqueue(jobs("full", 5)).await.unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/jobs", server.base))
        .json(&serde_json::json!({"jobs":[{"queue":"full","kind":"t","payload":{}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let p: weir_api::Problem = resp.json().await.unwrap();
    assert_eq!(p.kind(), Some(ProblemType::Overloaded));
    assert!(p.retry_after_ms.is_some());
    assert_eq!(
        c.queue("full").await.unwrap().counts["waiting"],
        5,
        "nothing was added"
    );

    // `weir push` of 20 more waits for room while a worker drains the queue.
    let (stop, runs) = workers(&c, "full", 1, || async { Ok(None) });
    let file = dir.path().join("jobs.ndjson");
    let lines: String = (0..20)
        .map(|n| format!("{{\"queue\":\"full\",\"kind\":\"t\",\"payload\":{n}}}\n"))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--server", &server.base, "push", "--batch", "2", "--file"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_counts(&c, "full", |q| q.counts["completed"] == 25).await;
    stop.cancel();
    for r in runs {
        r.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_concurrency_and_rate_hold_across_workers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let c = server.client();
    let patch = QueueConfigPatch {
        group_concurrency: Some(2),
        group_rate_limit: Some(RateLimitBody {
            limit: 10,
            period_ms: 1000,
            burst: Some(2),
        }),
        ..Default::default()
    };
    let q = c.configure("pk", &patch).await.unwrap();
    assert_eq!(q.config.group_concurrency, 2);
    let jobs: Vec<NewJobBody> = (0..45u64)
        .map(|i| {
            let mut j = NewJobBody::new("pk", "t", raw(serde_json::json!({ "key": i % 3 })));
            j.group = Some(format!("customer-{}", i % 3));
            j
        })
        .collect();
    c.enqueue(jobs).await.unwrap();
    // Per key: how many run now, the most seen at once, and when each started.
    type PerKey = Arc<Mutex<Vec<(usize, usize, Vec<Instant>)>>>;
    let state: PerKey = Arc::new(Mutex::new(vec![(0, 0, Vec::new()); 3]));
    let s2 = state.clone();
    let stop = CancellationToken::new();
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let s = s2.clone();
            let w = WorkerBuilder::new(c.clone(), &["pk"])
                .concurrency(Concurrency::Fixed(8))
                .wait_ms(100)
                .handle("t", move |job| {
                    let s = s.clone();
                    async move {
                        let k = job.payload::<serde_json::Value>()?["key"]
                            .as_u64()
                            .unwrap_or(0) as usize;
                        {
                            let mut st = s.lock().unwrap();
                            st[k].0 += 1;
                            st[k].1 = st[k].1.max(st[k].0);
                            st[k].2.push(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        s.lock().unwrap()[k].0 -= 1;
                        Ok(None)
                    }
                })
                .build();
            tokio::spawn(w.run(stop.clone()))
        })
        .collect();
    wait_counts(&c, "pk", |q| q.counts["completed"] == 45).await;
    stop.cancel();
    for r in runs {
        r.await.unwrap();
    }
    let st = state.lock().unwrap();
    for (k, (_, peak, starts)) in st.iter().enumerate() {
        assert!(
            *peak <= 2,
            "key {k}: {peak} at once under a per-key limit of 2"
        );
        let mut t = starts.clone();
        t.sort();
        assert_eq!(t.len(), 15);
        let within = common::most_within_a_second(&t);
        assert!(
            within <= 12,
            "key {k}: {within} starts within a second (10/s + 2)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_settings_come_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.toml");
    std::fs::write(
        &cfg,
        "[queues.emails]\nconcurrency = 4\nmax_depth = 1000\nrate_limit = { limit = 50, burst = 10 }\n\
         breaker = { consecutive_failures = 5 }\n",
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
        &[],
    );
    let q = server.client().queue("emails").await.unwrap();
    assert_eq!((q.config.concurrency, q.config.max_depth), (4, 1000));
    assert_eq!(q.config.rate_limit.unwrap().burst, 10);
    assert_eq!(q.config.breaker.unwrap().consecutive_failures, 5);
    assert_eq!(q.breaker, "closed");
}
