//! End-to-end tests against the real `weir serve` binary: a smoke test of the HTTP API
//! through the SDK (a long poll woken by an enqueue), and the server's refusal to start
//! without tokens on a public address. The contract route by route is tested through the
//! router in `crates/weir-server/tests/api.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{raw, Server};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};
use weir_api::{AckItem, FailItem, NewJobBody};

/// Reads `/metrics` from a running server.
async fn metrics(base: &str) -> String {
    reqwest::Client::new()
        .request(Method::GET, format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[test]
fn without_tokens_a_public_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_at_once_when_a_job_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let client = server.client();
    let waiter = {
        let c = client.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let jobs = c
                .fetch(&["wake".to_string()], 1, 20_000, "t")
                .await
                .unwrap();
            (jobs, t.elapsed())
        })
    };
    // Wait until the server reports the fetch as waiting (a signal, not a guess).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if metrics(&server.base).await.contains("weir_fetch_waiting 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the fetch never started waiting");
        tokio::task::yield_now().await;
    }
    let sent = Instant::now();
    client
        .enqueue(vec![NewJobBody::new("wake", "k", raw(json!({"hello": 1})))])
        .await
        .unwrap();
    let (jobs, _) = waiter.await.unwrap();
    let woke_after = sent.elapsed();
    assert_eq!(jobs.len(), 1);
    // Below the store's 1 s fallback nap: woken by the enqueue, not by looking again.
    assert!(
        woke_after < Duration::from_millis(500),
        "woken {woke_after:?} after the enqueue"
    );
    // The worker completes it through the SDK's client calls.
    let r = client
        .ack(vec![AckItem {
            id: jobs[0].id,
            lease_id: jobs[0].lease_id,
            result: None,
        }])
        .await
        .unwrap();
    assert_eq!(r.acked, 1);
    let r = client
        .fail(vec![FailItem {
            id: jobs[0].id,
            lease_id: jobs[0].lease_id,
            error: "late".into(),
            retry: true,
        }])
        .await
        .unwrap();
    assert!(
        matches!(
            r.rejected[0].reason.as_str(),
            "lease-expired" | "lease-mismatch"
        ),
        "a completed job's lease is gone: {:?}",
        r.rejected[0]
    );
}
