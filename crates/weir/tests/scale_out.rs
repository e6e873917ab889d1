//! Scale-out: three real `weir serve` processes on one PostgreSQL schema (the local
//! database, `TEST_WEIR_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`), each
//! test in a schema of its own, dropped afterwards.

#![allow(clippy::unwrap_used)]

mod common;

use common::pg::{pg_url, Schema};
use common::{raw, Server};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use weir_api::{NewJobBody, QueueConfigPatch, RateLimitBody};
use weir_client::{Client, Concurrency, JobContext, WorkerBuilder};

/// `n` servers on one schema, each with its own data directory (unused on PostgreSQL).
fn servers(
    schema: &Schema,
    n: usize,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Vec<tempfile::TempDir>, Vec<Server>) {
    let url = pg_url();
    let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers = dirs
        .iter()
        .map(|d| {
            let mut args = vec!["--store", url.as_str(), "--store-schema", schema.0.as_str()];
            args.extend_from_slice(extra);
            Server::start(d.path(), &args, env)
        })
        .collect();
    (dirs, servers)
}

fn jobs(queue: &str, n: u64) -> Vec<NewJobBody> {
    (0..n)
        .map(|i| NewJobBody::new(queue, "t", raw(serde_json::json!({ "n": i }))))
        .collect()
}

async fn wait_completed(c: &Client, queue: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let q = c.queue(queue).await.unwrap();
        if q.counts["completed"] >= n {
            return;
        }
        assert!(Instant::now() < deadline, "timed out: {:?}", q.counts);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Four workers on each server's client, running `handler`.
fn workers_on<F, Fut>(
    clients: &[Client],
    queue: &'static str,
    per_server: usize,
    handler: F,
) -> (
    CancellationToken,
    Vec<tokio::task::JoinHandle<weir_client::WorkerReport>>,
)
where
    F: Fn(JobContext) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = weir_client::HandlerResult> + Send + 'static,
{
    let stop = CancellationToken::new();
    let mut runs = Vec::new();
    for (s, c) in clients.iter().enumerate() {
        for w in 0..per_server {
            let h = handler.clone();
            let worker = WorkerBuilder::new(c.clone(), &[queue])
                .name(format!("s{s}w{w}"))
                .concurrency(Concurrency::Fixed(4))
                .batch(4)
                .wait_ms(200)
                .handle("t", h)
                .build();
            runs.push(tokio::spawn(worker.run(stop.clone())));
        }
    }
    (stop, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_enqueued_on_one_server_run_exactly_once_across_three() {
    let schema = Schema::new("once");
    let (_dirs, servers) = servers(&schema, 3, &[], &[]);
    let clients: Vec<Client> = servers.iter().map(Server::client).collect();
    let ids = clients[0].enqueue(jobs("shared", 600)).await.unwrap();
    // How often each job ran.
    let runs: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let seen = runs.clone();
    let (stop, handles) = workers_on(&clients, "shared", 4, move |job: JobContext| {
        let seen = seen.clone();
        async move {
            *seen.lock().unwrap().entry(job.id).or_default() += 1;
            Ok(None)
        }
    });
    wait_completed(&clients[2], "shared", 600).await;
    stop.cancel();
    let mut by_server = [0usize; 3];
    for (s, h) in handles.into_iter().enumerate() {
        by_server[s / 4] += h.await.unwrap().completed as usize;
    }
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), ids.len(), "every job ran");
    for (id, r) in runs.iter() {
        assert_eq!(*r, 1, "job {id} ran {r} times");
    }
    assert_eq!(by_server.iter().sum::<usize>(), 600);
    assert!(
        by_server.iter().all(|&n| n > 0),
        "every server's workers took part: {by_server:?}"
    );
    // Every server reads the same queue.
    for c in &clients {
        assert_eq!(c.queue("shared").await.unwrap().counts["completed"], 600);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_of_5_holds_across_three_servers() {
    let schema = Schema::new("cc");
    let (_dirs, servers) = servers(&schema, 3, &[], &[]);
    let clients: Vec<Client> = servers.iter().map(Server::client).collect();
    let patch = QueueConfigPatch {
        concurrency: Some(5),
        ..Default::default()
    };
    clients[1].configure("cc", &patch).await.unwrap();
    clients[0].enqueue(jobs("cc", 120)).await.unwrap();
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen_max = max.clone();
    // 3 servers × 4 workers × 4 slots = 48 slots against a limit of 5.
    let (stop, handles) = workers_on(&clients, "cc", 4, move |_job| {
        let (now, max) = (now.clone(), max.clone());
        async move {
            let in_flight = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(in_flight, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(None)
        }
    });
    wait_completed(&clients[0], "cc", 120).await;
    stop.cancel();
    for h in handles {
        h.await.unwrap();
    }
    let peak = seen_max.load(Ordering::SeqCst);
    assert!(peak <= 5, "{peak} jobs ran at once under a limit of 5");
    assert!(
        peak >= 2,
        "the limit, not the workers, was the bottleneck: {peak}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_server_wakes_on_an_enqueue_on_another() {
    let schema = Schema::new("wake");
    // Polling every 30 s on its own: only a NOTIFY can wake the fetch within the bound.
    let (_dirs, servers) = servers(&schema, 2, &[], &[("WEIR_STORE_POLL_MS", "30000")]);
    let (a, b) = (servers[0].client(), servers[1].client());
    a.enqueue(jobs("wake", 1)).await.unwrap();
    // Make the queue known and empty, so B's fetch parks.
    let first = b.fetch(&["wake".into()], 1, 0, "b").await.unwrap();
    assert_eq!(first.len(), 1);
    let started = Instant::now();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            let got = b.fetch(&["wake".into()], 1, 20_000, "b").await.unwrap();
            (got, Instant::now())
        })
    };
    // Give the fetch time to park: if it had not, it would find the job at once, and the
    // elapsed-time check below would fail rather than pass wrongly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let enqueued_at = Instant::now();
    let id = a.enqueue(jobs("wake", 1)).await.unwrap()[0];
    let (got, woke_at) = waiter.await.unwrap();
    assert_eq!(
        got.len(),
        1,
        "the fetch on B returned the job enqueued on A"
    );
    assert_eq!(got[0].id, id);
    assert!(woke_at >= enqueued_at, "B waited for the enqueue");
    let latency = woke_at - enqueued_at;
    assert!(
        latency < Duration::from_secs(5),
        "B woke {latency:?} after A's enqueue: a NOTIFY, not its 30 s poll, woke it"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_of_50_per_second_holds_in_total_across_three_servers() {
    let schema = Schema::new("rate");
    let (_dirs, servers) = servers(&schema, 3, &[], &[]);
    let clients: Vec<Client> = servers.iter().map(Server::client).collect();
    let patch = QueueConfigPatch {
        rate_limit: Some(RateLimitBody {
            limit: 50,
            period_ms: 1000,
            burst: Some(5),
        }),
        ..Default::default()
    };
    clients[2].configure("rl", &patch).await.unwrap();
    clients[0].enqueue(jobs("rl", 155)).await.unwrap();
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let s2 = starts.clone();
    let (stop, handles) = workers_on(&clients, "rl", 2, move |_job| {
        let s = s2.clone();
        async move {
            s.lock().unwrap().push(Instant::now());
            Ok(None)
        }
    });
    wait_completed(&clients[1], "rl", 155).await;
    stop.cancel();
    let mut per_server = Vec::new();
    for h in handles {
        per_server.push(h.await.unwrap().completed);
    }
    let mut t = starts.lock().unwrap().clone();
    t.sort();
    assert_eq!(t.len(), 155);
    // In any one-second window, at most limit + burst (55) hand-outs over all three
    // servers. What the test sees is the handler's start, up to ~100 ms after the hand-out
    // when this file's tests run side by side on two cores (each with three servers and
    // their maintenance leader), so 5 jobs of slack; three servers each allowing 50/s
    // would show ~150 here and fail the duration check below as well.
    let within = common::most_within_a_second(&t);
    assert!(
        within <= 60,
        "{within} starts within a second across the servers"
    );
    // 150 jobs at 50/s after a burst of 5: at least 2.9 s, whatever the servers.
    assert!(
        t[154].duration_since(t[0]) >= Duration::from_millis(2_800),
        "{:?}",
        t[154].duration_since(t[0])
    );
    assert!(
        per_server.chunks(2).all(|s| s.iter().sum::<u64>() > 0),
        "every server handed out jobs: {per_server:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_on_one_server_is_seen_by_the_others_within_a_second() {
    let schema = Schema::new("pause");
    let (_dirs, servers) = servers(&schema, 2, &[], &[]);
    let (a, b) = (servers[0].client(), servers[1].client());
    a.enqueue(jobs("p", 1)).await.unwrap();
    // B has read the queue's settings (and keeps its copy for a while).
    assert_eq!(b.fetch(&["p".into()], 1, 0, "b").await.unwrap().len(), 1);
    a.pause("p").await.unwrap();
    a.enqueue(jobs("p", 3)).await.unwrap();
    // The promise is one second: after it, B must hand out nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(b.fetch(&["p".into()], 3, 0, "b").await.unwrap().is_empty());
    assert!(b.queue("p").await.unwrap().config.paused);
    a.resume("p").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.fetch(&["p".into()], 3, 0, "b").await.unwrap().len(), 3);
}

/// Cron across servers: an every-second entry set on one of three servers is ticked by all
/// three schedulers, and each tick is enqueued once (its unique key `cron:<name>:<tick>`
/// appears once among the queue's jobs, read through another server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_tick_is_enqueued_once_across_three_servers() {
    let schema = Schema::new("cron_once");
    let (_dirs, servers) = servers(&schema, 3, &[], &[]);
    let a = servers[0].client();
    let c = servers[2].client();
    a.cron_set(
        "tick",
        &weir_api::CronBody {
            schedule: "* * * * * *".into(),
            timezone: "UTC".into(),
            job: NewJobBody::new("ticks", "t", raw(serde_json::json!({}))),
            missed: weir_api::Missed::RunOnce,
        },
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = c.jobs(Some("ticks"), None, None, 1000).await.unwrap();
        let keys: Vec<String> = page
            .jobs
            .iter()
            .map(|j| j.unique_key.clone().unwrap())
            .collect();
        let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
        assert_eq!(
            distinct.len(),
            keys.len(),
            "a tick was enqueued twice: {keys:?}"
        );
        if keys.len() >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} ticks: {keys:?}",
            keys.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every server sees the entry and its progress.
    let listed = servers[1].client().cron_list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_tick_ms > 0);
}

/// Regression: the maintenance leader's statement failed to plan on PostgreSQL (`$2 + $3`
/// with untyped parameters), so no server ever became leader and retention never ran on
/// its own. Completed jobs past a queue's `completed_max` must be deleted by whichever of
/// the servers leads, with nobody asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_on_the_maintenance_leader_without_anyone_asking() {
    let schema = Schema::new("leader_retention");
    let (_dirs, servers) = servers(&schema, 2, &[], &[]);
    let (a, b) = (servers[0].client(), servers[1].client());
    let patch = QueueConfigPatch {
        retention: Some(weir_api::RetentionPatch {
            completed_max: Some(2),
            ..Default::default()
        }),
        ..Default::default()
    };
    a.configure("kept", &patch).await.unwrap();
    a.enqueue(jobs("kept", 6)).await.unwrap();
    let leased = a.fetch(&["kept".into()], 6, 0, "w").await.unwrap();
    assert_eq!(leased.len(), 6);
    let acks: Vec<weir_api::AckItem> = leased.iter().map(weir_api::AckItem::of).collect();
    assert_eq!(a.ack(acks).await.unwrap().acked, 6);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let counts = b.queue("kept").await.unwrap().counts;
        if counts["completed"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "retention never ran: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
