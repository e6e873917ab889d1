//! PostgreSQL itself crashed and restarted under load: two servers keep answering (503
//! `application/problem+json` while the database is away, never a 500 or a hang), `/ready`
//! says not ready, and both recover on their own with no acknowledged write lost.
//!
//! It stops and starts the local PostgreSQL cluster, so it runs only when
//! `TEST_WEIR_PG_RESTART=1` (CI sets it; on a developer's machine it would interrupt every
//! other user of that database). In a test binary of its own: nothing else runs beside it.

#![allow(clippy::unwrap_used)]

mod common;

use common::pg::{Cluster, Load};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `pg_ctlcluster ACTION`; a stop is `-m immediate`: PostgreSQL crashes as a killed server
/// would (no shutdown checkpoint; WAL replay on start), so commits that were acknowledged
/// asynchronously (lease grants) may be lost, and nothing acknowledged to a client may.
fn pg_ctl(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a PostgreSQL cluster under /etc/postgresql");
    let mut args = vec!["--skip-systemctl-redirect", &version, "main", action];
    if action == "stop" {
        args.extend(["-m", "immediate"]);
    }
    let ok = Command::new("pg_ctlcluster").args(&args).status().unwrap();
    assert!(ok.success(), "pg_ctlcluster {action} failed");
}

/// Starts PostgreSQL again if the test stops before it does.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::panic::catch_unwind(|| pg_ctl("start"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_costs_503s_and_no_acknowledged_write() {
    if std::env::var("TEST_WEIR_PG_RESTART").as_deref() != Ok("1") {
        eprintln!("skipped: set TEST_WEIR_PG_RESTART=1 to let this test restart PostgreSQL");
        return;
    }
    let cluster = Arc::new(Cluster::start("pgrestart", 2));
    let load = Load::start(&cluster, "restart");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let guard = Restart;
    tokio::task::spawn_blocking(|| pg_ctl("stop"))
        .await
        .unwrap();
    // While it is down, the servers say they are not ready.
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.any().ready().await {
        assert!(
            Instant::now() < deadline,
            "/ready stayed ready without PostgreSQL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = load.problems();
    tokio::task::spawn_blocking(|| pg_ctl("start"))
        .await
        .unwrap();
    drop(guard);
    // Both come back by themselves.
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..2 {
        while !cluster.any().ready().await {
            assert!(Instant::now() < deadline, "a server did not recover");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.finish(&cluster, "restart").await;
    assert!(
        during.get(&503).copied().unwrap_or(0) > 0,
        "clients saw the outage as 503s: {during:?}"
    );
    assert!(
        !during.keys().any(|s| *s >= 500 && *s != 503),
        "servers answered errors other than 503: {during:?}"
    );
}
