//! Benchmarks of the embedded store, run with `cargo bench -p weir-store --bench engine`.
//!
//! A bench binary rather than criterion: the figures we hold ourselves to are throughput of
//! many concurrent tasks sharing group commits, recovery of a million jobs, and memory per
//! job, none of which fits criterion's one-closure-many-iterations model.
//!
//! 1. End-to-end throughput (enqueue → fetch → ack, every step acknowledged by the store) for
//!    batch sizes 1 and 100, in both durability modes; and once more durable at batch 100
//!    with completed jobs deleted at the ack (`retention.completed_max = 0`, as the peer
//!    comparison runs every system) instead of kept (retention never runs here).
//! 2. Recovery: a store holding `WEIR_BENCH_RECOVER_JOBS` (default 1,000,000) waiting jobs is
//!    reopened in a fresh process, which reports the time to open and the resident memory the
//!    open added, per job, beyond the payload's bytes.
//!
//! `WEIR_BENCH_QUICK=1` shrinks every size tenfold for a smoke run.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_core::{Ack, NewJob, Payload, QueueConfig};
use weir_store::{
    Durability, EmbeddedOptions, EmbeddedStore, JobAckManyParams, JobFetchParams,
    JobInsertManyParams, QueueConfigSetParams, Store,
};

const QUEUE: &str = "bench";

// The allocator the `weir` binary ships with: glibc's malloc spent a fifth of the time here
// in `_int_malloc`/`malloc_consolidate` and held freed memory, inflating RSS per job.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn quick() -> bool {
    std::env::var("WEIR_BENCH_QUICK").is_ok_and(|v| v == "1")
}

fn scale(n: u64) -> u64 {
    if quick() {
        n / 10
    } else {
        n
    }
}

fn payload(n: u64) -> Payload {
    Payload::json(&serde_json::json!({ "n": n })).unwrap()
}

/// Resident set size of this process, bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("recover-child") {
        recover_child(&args[2]);
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("## end-to-end: enqueue -> fetch -> ack, in process");
    println!("| durability | batch | completed jobs | jobs | producers | consumers | jobs/s | commits | records per commit | records cancelled out |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    // `WEIR_BENCH_ONLY=fsync-100` (durability-batch, or `fsync-100-delete`) runs one
    // end-to-end case and stops;
    // `WEIR_BENCH_ONLY=recovery` runs only the recovery measurement.
    let only = std::env::var("WEIR_BENCH_ONLY").ok();
    for durability in [Durability::Fsync, Durability::Os] {
        for batch in [1usize, 100] {
            let name = format!(
                "{}-{batch}",
                if durability == Durability::Fsync {
                    "fsync"
                } else {
                    "os"
                }
            );
            if only.as_ref().is_some_and(|o| *o != name) {
                continue;
            }
            let jobs = if batch == 1 {
                scale(200_000)
            } else {
                scale(2_000_000)
            };
            rt.block_on(e2e(durability, batch, jobs, true));
        }
    }
    if only.as_ref().is_none_or(|o| o == "fsync-100-delete") {
        rt.block_on(e2e(Durability::Fsync, 100, scale(2_000_000), false));
    }
    if only.as_ref().is_some_and(|o| o != "recovery") {
        return;
    }
    println!();
    rt.block_on(recovery());
}

async fn e2e(durability: Durability, batch: usize, total: u64, keep_completed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedOptions {
            durability,
            maintenance_every: None,
            ..Default::default()
        },
    )
    .unwrap();
    if !keep_completed {
        let mut config = QueueConfig::default();
        config.retention.completed_max = 0;
        store
            .queue_config_set(QueueConfigSetParams {
                name: QUEUE.into(),
                config,
            })
            .await
            .unwrap();
    }
    // Enough concurrent writers that group commit has something to group: with batch 1 each
    // task has one write in flight, so the tasks are the batch.
    let (producers, consumers) = if batch == 1 { (64u64, 64u64) } else { (4, 4) };
    let per_producer = total / producers;
    let total = per_producer * producers;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while n < per_producer {
                let k = (batch as u64).min(per_producer - n);
                let jobs = (0..k)
                    .map(|i| NewJob::new(QUEUE, "k", payload(p * per_producer + n + i)))
                    .collect();
                s.job_insert_many(JobInsertManyParams { jobs })
                    .await
                    .unwrap();
                n += k;
            }
        }));
    }
    for c in 0..consumers {
        let s = store.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < total {
                let got = s
                    .job_fetch(JobFetchParams {
                        queues: vec![QUEUE.into()],
                        max: batch,
                        wait_ms: 20,
                        worker: format!("w{c}"),
                    })
                    .await
                    .unwrap();
                if got.is_empty() {
                    continue;
                }
                let n = got.len() as u64;
                let acks = got.iter().map(Ack::of).collect();
                let out = s.job_ack_many(JobAckManyParams { acks }).await.unwrap();
                assert!(out.rejected.is_empty());
                done.fetch_add(n, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = store.commit_stats();
    println!(
        "| {durability:?} | {batch} | {} | {total} | {producers} | {consumers} | {:.0} | {} | {:.1} | {} |",
        if keep_completed {
            "kept"
        } else {
            "deleted at the ack"
        },
        total as f64 / secs,
        stats.commits,
        stats.records as f64 / stats.commits.max(1) as f64,
        stats.cancelled
    );
}

async fn recovery() {
    let jobs = scale(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    eprintln!("recovery: writing {jobs} waiting jobs ...");
    {
        let store = EmbeddedStore::open(
            dir.path(),
            EmbeddedOptions {
                durability: Durability::Os,
                maintenance_every: None,
                ..Default::default()
            },
        )
        .unwrap();
        let mut n = 0;
        while n < jobs {
            let k = 10_000.min(jobs - n);
            let batch = (n..n + k)
                .map(|i| NewJob::new(QUEUE, "k", payload(i)))
                .collect();
            store
                .job_insert_many(JobInsertManyParams { jobs: batch })
                .await
                .unwrap();
            n += k;
            if n % 200_000 == 0 {
                eprintln!("recovery: {n}/{jobs} written");
            }
        }
    }
    let payload_bytes = payload(500_000).as_str().len();
    println!("## recovery of {jobs} waiting jobs (fresh process, payload {payload_bytes} bytes)");
    println!("| records read from | run | open ms | jobs restored | RSS added by open | RSS per job | beyond payload |");
    println!("|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().unwrap();
    for phase in [
        "journal + tables (as after kill -9)",
        "tables (after compaction)",
    ] {
        if phase.starts_with("tables") {
            let store = EmbeddedStore::open(
                dir.path(),
                EmbeddedOptions {
                    maintenance_every: None,
                    ..Default::default()
                },
            )
            .unwrap();
            store.compact().unwrap();
        }
        for run in 1..=3 {
            let out = std::process::Command::new(&exe)
                .args(["recover-child", &dir.path().display().to_string()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = String::from_utf8_lossy(&out.stdout);
            let v: Vec<u64> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            let (ms, restored, rss) = (v[0], v[1], v[2]);
            let per_job = rss as f64 / restored.max(1) as f64;
            println!(
                "| {phase} | {run} | {ms} | {restored} | {:.1} MiB | {per_job:.0} B | {:.0} B |",
                rss as f64 / (1024.0 * 1024.0),
                per_job - payload_bytes as f64
            );
        }
    }
}

/// Opens the store at `dir` and prints `open_ms jobs rss_added_bytes`.
fn recover_child(dir: &str) {
    let before = rss_bytes();
    let started = Instant::now();
    let store = EmbeddedStore::open(
        dir,
        EmbeddedOptions {
            maintenance_every: None,
            ..Default::default()
        },
    )
    .unwrap();
    let ms = started.elapsed().as_millis();
    // Let fjall's background threads settle so the reading is of the steady state.
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_bytes();
    println!(
        "{ms} {} {}",
        store.recovery().jobs,
        after.saturating_sub(before)
    );
}
