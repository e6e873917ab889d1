//! Crash test of scale-out: three `weir serve` processes on one PostgreSQL schema, under a
//! steady load of enqueues and acks through all of them, while one server after another is
//! killed with SIGKILL and started again (at least 10 kills; the seed is printed, set
//! `TEST_WEIR_CRASH_SEED` to replay a run's choices).
//!
//! What must hold: every enqueue a server acknowledged is there and runs to completion;
//! every ack a server applied stands; no job's ack is applied twice; jobs whose lease died
//! with a killed server's reply are delivered again once the lease expires.

#![allow(clippy::unwrap_used)]

mod common;

use common::pg::{Cluster, Load};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_servers_under_load_loses_no_acknowledged_write() {
    let seed = std::env::var("TEST_WEIR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash test seed: {seed} (TEST_WEIR_CRASH_SEED={seed} replays the kill order)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let cluster = Arc::new(Cluster::start("crash", 3));
    let load = Load::start(&cluster, "crash");
    for k in 0..10 {
        tokio::time::sleep(Duration::from_millis(300 + rng.u64(..500))).await;
        let victim = rng.usize(..3);
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.crash(victim))
            .await
            .unwrap();
        eprintln!("kill {}: server {victim}", k + 1);
    }
    let problems = load.problems();
    load.finish(&cluster, "crash").await;
    assert!(
        !problems.keys().any(|s| *s >= 500 && *s != 503),
        "servers answered errors other than 503: {problems:?}"
    );
}
