//! The server's life: graceful shutdown under load, and `kill -9` under load.

#![allow(clippy::unwrap_used)]

mod common;

use common::{raw, Server};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_api::{AckItem, NewJobBody};
use weir_client::{Client, ClientError};

fn jobs(queue: &str, from: u64, n: u64, timeout_ms: Option<u64>) -> Vec<NewJobBody> {
    (from..from + n)
        .map(|i| {
            let mut j = NewJobBody::new(queue, "t", raw(serde_json::json!({ "n": i })));
            j.timeout_ms = timeout_ms;
            j
        })
        .collect()
}

/// Every job of `queue`, by id, with its state and payload number.
async fn all_jobs(c: &Client, queue: &str) -> HashMap<u64, (String, u64)> {
    let mut out = HashMap::new();
    let mut cursor = None;
    loop {
        let page = c.jobs(Some(queue), None, cursor, 1000).await.unwrap();
        for j in page.jobs {
            let n: serde_json::Value = serde_json::from_str(j.payload.get()).unwrap();
            out.insert(j.id, (j.state, n["n"].as_u64().unwrap()));
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_loses_nothing_and_runs_nothing_twice() {
    const N: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[], &[]);
    let client = server.client();
    for chunk in 0..(N / 500) {
        client
            .enqueue(jobs("g", chunk * 500, 500, Some(1_500)))
            .await
            .unwrap();
    }
    // Consumers fetch and ack until the server goes away, recording what the server
    // acknowledged.
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let progress = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    for _ in 0..3 {
        let (c, acked, progress) = (client.clone(), acked.clone(), progress.clone());
        consumers.push(tokio::spawn(async move {
            loop {
                let got = match c.fetch(&["g".to_string()], 50, 1_000, "t").await {
                    Ok(g) => g,
                    Err(_) => return,
                };
                if got.is_empty() {
                    continue;
                }
                let items: Vec<AckItem> = got.iter().map(AckItem::of).collect();
                match c.ack(items).await {
                    Ok(r) => {
                        let refused: HashSet<u64> = r.rejected.iter().map(|x| x.id).collect();
                        let mut a = acked.lock().unwrap();
                        for j in &got {
                            if !refused.contains(&j.id) {
                                a.insert(j.id);
                            }
                        }
                        progress.fetch_add(r.acked as u64, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.load(Ordering::Relaxed) < N / 3 {
        assert!(Instant::now() < deadline, "consumers made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = tokio::task::spawn_blocking(move || {
        let s = server.terminate();
        (s, server)
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "SIGTERM must exit 0, got {:?}",
        status.0
    );
    for c in consumers {
        c.await.unwrap();
    }
    let acked_before: HashSet<u64> = acked.lock().unwrap().clone();
    assert!(acked_before.len() as u64 >= N / 3);

    // Restart: every acknowledged ack is there; finish the rest; nothing acked runs again.
    let server = Server::start(dir.path(), &[], &[]);
    let client = server.client();
    let state = all_jobs(&client, "g").await;
    assert_eq!(state.len() as u64, N, "no job lost");
    for id in &acked_before {
        assert_eq!(
            state[id].0, "completed",
            "acked job {id} not completed after restart"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut completed = acked_before.len() as u64;
    while completed < N {
        assert!(
            Instant::now() < deadline,
            "could not finish the rest: {completed}/{N}"
        );
        let got = client
            .fetch(&["g".to_string()], 100, 500, "t")
            .await
            .unwrap();
        for j in &got {
            assert!(
                !acked_before.contains(&j.id),
                "job {} ran again after its ack",
                j.id
            );
        }
        if got.is_empty() {
            continue;
        }
        let r = client
            .ack(got.iter().map(AckItem::of).collect())
            .await
            .unwrap();
        completed += r.acked as u64;
    }
    let q = client.queue("g").await.unwrap();
    assert_eq!(q.counts["completed"], N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_keeps_every_acknowledged_enqueue() {
    let kills: u64 = std::env::var("WEIR_SERVER_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed = std::env::var("WEIR_SERVER_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("server crash test: {kills} kills, seed {seed} (WEIR_SERVER_CRASH_SEED to replay)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    // n -> id the server acknowledged for payload n.
    let mut acknowledged: HashMap<u64, u64> = HashMap::new();
    let next_n = Arc::new(AtomicU64::new(0));
    for round in 0..kills {
        let mut server = Server::start(dir.path(), &[], &[]);
        let client = server.client();
        let got: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
        let batches = Arc::new(AtomicU64::new(0));
        let mut producers = Vec::new();
        for _ in 0..4 {
            let (c, got, next_n, batches) =
                (client.clone(), got.clone(), next_n.clone(), batches.clone());
            producers.push(tokio::spawn(async move {
                loop {
                    let from = next_n.fetch_add(100, Ordering::Relaxed);
                    match c.enqueue(jobs("crash", from, 100, None)).await {
                        Ok(ids) => {
                            let mut g = got.lock().unwrap();
                            g.extend((from..from + 100).zip(ids));
                            batches.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(ClientError::Transport(_)) => return,
                        Err(e) => panic!("unexpected refusal: {e}"),
                    }
                }
            }));
        }
        let kill_after = rng.u64(5..60);
        while batches.load(Ordering::Relaxed) < kill_after {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        server.kill9();
        for p in producers {
            p.await.unwrap();
        }
        let got = got.lock().unwrap().clone();
        eprintln!(
            "round {round}: killed after {} acknowledged enqueues",
            got.len()
        );
        acknowledged.extend(got);
        let server = Server::start(dir.path(), &[], &[]);
        let state = all_jobs(&server.client(), "crash").await;
        let mut seen_n = HashSet::new();
        for (id, (_, n)) in &state {
            assert!(seen_n.insert(*n), "payload {n} stored twice (id {id})");
        }
        for (n, id) in &acknowledged {
            match state.get(id) {
                Some((_, stored)) => assert_eq!(stored, n, "id {id} holds another job"),
                None => panic!("acknowledged job {id} (payload {n}) lost; seed {seed}"),
            }
        }
    }
    assert!(acknowledged.len() as u64 >= kills * 500);
}

/// Regression: a restart forgot every lease. A job fetched before a graceful restart came
/// back `waiting` with attempt 0, so its worker's ack was refused and every deploy ran all
/// work in flight again. Now the worker's ack after the restart is accepted, and nobody else
/// is handed the job meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_acks_after_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[], &[]);
    let client = server.client();
    client.enqueue(jobs("deploy", 0, 5, None)).await.unwrap();
    let held = client
        .fetch(&["deploy".to_string()], 5, 0, "w")
        .await
        .unwrap();
    assert_eq!(held.len(), 5);
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "SIGTERM must exit 0, got {status:?}");

    let server = Server::start(dir.path(), &[], &[]);
    let client = server.client();
    for j in &held {
        let v = client.job(j.id).await.unwrap();
        assert_eq!((v.state.as_str(), v.attempt), ("active", 1), "job {}", j.id);
    }
    let others = client
        .fetch(&["deploy".to_string()], 5, 0, "other")
        .await
        .unwrap();
    assert!(others.is_empty(), "leased jobs were handed out again");
    let items = held.iter().map(AckItem::of).collect();
    let r = client.ack(items).await.unwrap();
    assert_eq!(
        r.acked, 5,
        "the worker's acks after the restart: {:?}",
        r.rejected
    );
    assert_eq!(client.queue("deploy").await.unwrap().counts["completed"], 5);
}

/// The other half: after `kill -9`, the attempt that was running counts. A job with a single
/// attempt, leased before the kill, is dead once its lease runs out after the restart, rather
/// than waiting again for a "first" attempt (a job that crashes the server on every attempt
/// would otherwise never reach `dead`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_running_attempt_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[], &[]);
    let client = server.client();
    let mut j = NewJobBody::new("crashy", "t", raw(serde_json::json!({ "n": 1 })));
    j.max_attempts = Some(1);
    j.timeout_ms = Some(300);
    let id = client.enqueue(vec![j]).await.unwrap()[0];
    let got = client
        .fetch(&["crashy".to_string()], 1, 0, "w")
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    // Two durable writes after the fetch, one after the other: a grant is written with the
    // commit after the one that follows it, so by the second reply the lease is on disk.
    client.enqueue(jobs("other", 0, 1, None)).await.unwrap();
    client.enqueue(jobs("other", 1, 1, None)).await.unwrap();
    server.kill9();

    let server = Server::start(dir.path(), &[], &[]);
    let client = server.client();
    // Signal: the job's own state, read until its lease has run out and maintenance ran.
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v = client.job(id).await.unwrap();
        if v.state != "active" {
            break v;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(v.state, "dead", "its one attempt was spent before the kill");
    assert_eq!(v.attempt, 1);
}
