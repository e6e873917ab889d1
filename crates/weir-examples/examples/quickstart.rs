//! Weir's engine on its embedded default, with no other service: opens (or recovers) a store
//! in `./weir-data`, enqueues a batch of jobs, works them with a small pool of workers (one in
//! ten fails once and is retried with backoff), and prints throughput and the queue's counts.
//! Run it twice: the second run recovers the first run's jobs from disk.
//!
//! `cargo run --release -p weir-examples --example quickstart [-- JOBS]`

use std::time::Instant;
use weir_core::{Ack, Fail, NewJob, Payload};
use weir_store::{
    EmbeddedOptions, EmbeddedStore, JobAckManyParams, JobFailManyParams, JobFetchParams,
    JobInsertManyParams, Store,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let jobs: usize = match std::env::args().nth(1) {
        None => 100_000,
        Some(a) => match a.parse() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("error: JOBS must be a positive whole number, got {a:?}");
                std::process::exit(2);
            }
        },
    };
    let store = EmbeddedStore::open("weir-data", EmbeddedOptions::default())?;
    let rec = store.recovery();
    println!(
        "weir: embedded store in ./weir-data (fsync durability), recovered {} jobs in {} ms",
        rec.jobs, rec.elapsed_ms
    );

    let started = Instant::now();
    for chunk_start in (0..jobs).step_by(1000) {
        let batch = (chunk_start..jobs.min(chunk_start + 1000))
            .map(|i| {
                let mut j = NewJob::new(
                    "emails",
                    "send",
                    Payload::json(&serde_json::json!({ "to": i }))?,
                );
                j.priority = (i % 3) as i32;
                if i % 5 == 0 {
                    j.group = Some(format!("customer-{}", i % 50));
                }
                Ok(j)
            })
            .collect::<weir_core::Result<Vec<_>>>()?;
        store
            .job_insert_many(JobInsertManyParams { jobs: batch })
            .await?;
    }
    let enqueued = started.elapsed();
    println!("enqueued {jobs} jobs in {:.2} s", enqueued.as_secs_f64());

    let mut workers = Vec::new();
    for w in 0..4 {
        let s = store.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0u64;
            loop {
                let got = s
                    .job_fetch(JobFetchParams {
                        queues: vec!["emails".into()],
                        max: 100,
                        wait_ms: 500,
                        worker: format!("worker-{w}"),
                    })
                    .await?;
                if got.is_empty() {
                    // Stop once nothing is left to do: retried jobs wait out their backoff
                    // (full jitter, up to 2 s for a second attempt) as failed.
                    let pending = s.queue_stats("emails").await?.map_or(0, |q| {
                        ["waiting", "scheduled", "failed", "active"]
                            .iter()
                            .map(|st| q.counts.get(st).copied().unwrap_or(0))
                            .sum()
                    });
                    if pending == 0 {
                        return anyhow::Ok(done);
                    }
                    continue;
                }
                let (fail, ok): (Vec<_>, Vec<_>) = got
                    .into_iter()
                    .partition(|f| f.id.0 % 10 == 0 && f.attempt == 1);
                done += ok.len() as u64;
                let acks = ok.iter().map(Ack::of).collect();
                s.job_ack_many(JobAckManyParams { acks }).await?;
                let fails = fail
                    .into_iter()
                    .map(|f| Fail {
                        id: f.id,
                        lease_id: f.lease_id,
                        error: "smtp timeout".into(),
                        retry: true,
                    })
                    .collect();
                s.job_fail_many(JobFailManyParams { fails }).await?;
            }
        }));
    }
    let mut done = 0;
    for w in workers {
        done += w.await??;
    }
    let worked = started.elapsed() - enqueued;
    println!(
        "4 workers completed {done} jobs in {:.2} s, every step fsynced (the time includes the retries' backoff)",
        worked.as_secs_f64(),
    );
    if let Some(stats) = store.queue_stats("emails").await? {
        let counts: Vec<String> = stats
            .counts
            .iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect();
        println!("queue emails: {}", counts.join(" "));
        println!(
            "(one job in ten failed its first attempt and completed on a retry after a backoff;"
        );
        println!(
            " retention keeps the newest 100,000 completed jobs, with hourly counts beyond that)"
        );
    }
    Ok(())
}
