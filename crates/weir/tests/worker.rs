//! The worker SDK against the real server: handlers per kind, errors and panics as failed
//! attempts, automatic heartbeats, graceful shutdown giving leases back.

#![allow(clippy::unwrap_used)]

mod common;

use common::{raw, Server};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weir_api::NewJobBody;
use weir_client::{Client, Concurrency, HandlerError, WorkerBuilder};

async fn wait_for(
    c: &Client,
    queue: &str,
    what: &str,
    pred: impl Fn(&std::collections::BTreeMap<String, u64>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let q = c.queue(queue).await.unwrap();
        if pred(&q.counts) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            q.counts
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn job(kind: &str, n: u64) -> NewJobBody {
    let mut j = NewJobBody::new("sdk", kind, raw(serde_json::json!({ "n": n })));
    j.max_attempts = Some(1);
    j
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_errors_panics_and_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let client = server.client();
    let mut slow = job("slow", 0);
    slow.timeout_ms = Some(300); // the handler runs 4 leases long; heartbeats keep it
    let ids = client
        .enqueue(vec![
            job("ok", 1),
            job("ok", 2),
            job("err", 3),
            job("fatal", 4),
            job("panic", 5),
            job("unknown-kind", 6),
            slow,
        ])
        .await
        .unwrap();
    let worker = WorkerBuilder::new(client.clone(), &["sdk"])
        .concurrency(Concurrency::Fixed(8))
        .wait_ms(200)
        .handle("ok", |job| async move {
            let p: serde_json::Value = job.payload()?;
            Ok(Some(
                serde_json::json!({ "double": p["n"].as_u64().unwrap_or(0) * 2 }),
            ))
        })
        .handle("err", |_| async {
            Err(HandlerError::retry("downstream 503"))
        })
        .handle("fatal", |_| async { Err(HandlerError::fatal("bad input")) })
        .handle("panic", |_| async { panic!("boom in handler") })
        .handle("slow", |job| async move {
            job.progress(&serde_json::json!({ "step": 1 })).await?;
            tokio::time::sleep(Duration::from_millis(1_200)).await;
            Ok(None)
        })
        .build();
    assert_eq!(worker.concurrency(), 8);
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    wait_for(&client, "sdk", "every job it can run to finish", |c| {
        c["completed"] + c["dead"] == 6
    })
    .await;
    let unknown = ids[5];
    while client.job(unknown).await.unwrap().state != "waiting" {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let report = run.await.unwrap();
    assert_eq!(
        (report.completed, report.failed, report.given_back),
        (3, 3, 0)
    );
    assert!(report.unhandled >= 1, "{report:?}");

    let get = |i: usize| {
        let c = client.clone();
        let id = ids[i];
        async move { c.job(id).await.unwrap() }
    };
    let ok = get(1).await;
    assert_eq!(ok.state, "completed");
    assert_eq!(ok.result.unwrap().get(), r#"{"double":4}"#);
    let err = get(2).await;
    assert_eq!(
        (err.state.as_str(), err.errors[0].message.as_str()),
        ("dead", "downstream 503")
    );
    assert_eq!(get(3).await.errors[0].message, "bad input");
    let p = get(4).await;
    assert!(
        p.errors[0].message.contains("boom in handler"),
        "{:?}",
        p.errors
    );
    // Regression: a kind without a handler was failed, burning its attempts; it is given
    // back untouched for a worker that has the handler.
    let u = get(5).await;
    assert_eq!((u.state.as_str(), u.attempt), ("waiting", 0), "{u:?}");
    assert!(u.errors.is_empty(), "{:?}", u.errors);
    let s = get(6).await;
    assert_eq!(
        (s.state.as_str(), s.attempt),
        ("completed", 1),
        "heartbeats kept the lease"
    );
    assert_eq!(s.progress.unwrap().get(), r#"{"step":1}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_quick_handlers_and_gives_back_stuck_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let client = server.client();
    let mut stuck = NewJobBody::new("sdk", "stuck", raw(serde_json::json!({})));
    stuck.max_attempts = Some(5);
    let ids = client.enqueue(vec![stuck]).await.unwrap();
    let started = Arc::new(Notify::new());
    let never = Arc::new(Notify::new());
    let worker = {
        let (started, never) = (started.clone(), never.clone());
        WorkerBuilder::new(client.clone(), &["sdk"])
            .concurrency(Concurrency::Fixed(2))
            .wait_ms(100)
            .grace(Duration::from_millis(200))
            .handle("stuck", move |_| {
                let (started, never) = (started.clone(), never.clone());
                async move {
                    started.notify_one();
                    never.notified().await;
                    Ok(None)
                }
            })
            .build()
    };
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    started.notified().await;
    stop.cancel();
    let report = run.await.unwrap();
    assert_eq!(report.given_back, 1);
    let j = client.job(ids[0]).await.unwrap();
    assert_eq!(
        j.state, "waiting",
        "given back, ready for another worker at once"
    );
    assert_eq!(j.attempt, 0, "a given-back attempt does not count");
    assert!(j.errors.is_empty(), "{:?}", j.errors);
}
