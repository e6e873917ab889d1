//! Crash safety with a real process: a child writes under load (producers enqueueing,
//! consumers acking and failing) and reports each operation only after the store
//! acknowledged it; the parent kills it with SIGKILL at a random moment, reopens the store,
//! and checks that every acknowledged enqueue, ack and fail is there and nothing is
//! duplicated. Repeats `WEIR_CRASH_KILLS` times (default 20) on the same data, so recovery
//! of recovered state is tested too. Seeds are printed; `TEST_WEIR_CRASH_SEED` replays a run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir_core::{Ack, Fail, JobFilter, JobId, JobState, NewJob, Payload};
use weir_store::*;

const CHILD_ENV: &str = "WEIR_CRASH_CHILD_DIR";

/// The child's body. Ignored in normal runs; the parent runs it in a separate process.
#[test]
#[ignore = "run by crash_kill_9_loses_nothing_acknowledged in a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let base: u64 = std::env::var("WEIR_CRASH_SEQ_BASE")
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = EmbeddedStore::open(
            &dir,
            EmbeddedOptions {
                maintenance_every: None,
                ..Default::default()
            },
        )
        .unwrap();
        println!("READY");
        let mut tasks = Vec::new();
        for p in 0..2u64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut seq = base + p * 100_000;
                let mut rng = fastrand::Rng::with_seed(base + p);
                loop {
                    let n = rng.usize(1..20);
                    let jobs: Vec<NewJob> = (0..n)
                        .map(|i| {
                            let mut j = NewJob::new(
                                "crash",
                                "k",
                                Payload::json(&serde_json::json!({"seq": seq + i as u64})).unwrap(),
                            );
                            j.max_attempts = Some(1);
                            if rng.bool() {
                                j.group = Some(format!("g{}", rng.u8(0..4)));
                            }
                            j
                        })
                        .collect();
                    let ids = s
                        .job_insert_many(JobInsertManyParams { jobs })
                        .await
                        .unwrap();
                    let line: Vec<String> = ids
                        .iter()
                        .enumerate()
                        .map(|(i, id)| format!("{}:{}", seq + i as u64, id.0))
                        .collect();
                    println!("E {}", line.join(" "));
                    seq += n as u64;
                }
            }));
        }
        for _ in 0..2 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let got = s
                        .job_fetch(JobFetchParams {
                            queues: vec!["crash".into()],
                            max: 10,
                            wait_ms: 100,
                            worker: "c".into(),
                        })
                        .await
                        .unwrap();
                    let (fails, acks): (Vec<_>, Vec<_>) =
                        got.into_iter().partition(|f| f.id.0 % 3 == 0);
                    let acks: Vec<Ack> = acks
                        .into_iter()
                        .map(|f| Ack {
                            id: f.id,
                            lease_id: f.lease_id,
                            result: Some(f.payload.clone()),
                        })
                        .collect();
                    let ack_ids: Vec<u64> = acks.iter().map(|a| a.id.0).collect();
                    let out = s.job_ack_many(JobAckManyParams { acks }).await.unwrap();
                    assert!(out.rejected.is_empty());
                    if !ack_ids.is_empty() {
                        println!(
                            "A {}",
                            ack_ids
                                .iter()
                                .map(u64::to_string)
                                .collect::<Vec<_>>()
                                .join(" ")
                        );
                    }
                    let fails: Vec<Fail> = fails
                        .into_iter()
                        .map(|f| Fail {
                            id: f.id,
                            lease_id: f.lease_id,
                            error: "no".into(),
                            retry: false,
                        })
                        .collect();
                    let fail_ids: Vec<u64> = fails.iter().map(|f| f.id.0).collect();
                    s.job_fail_many(JobFailManyParams { fails }).await.unwrap();
                    if !fail_ids.is_empty() {
                        println!(
                            "F {}",
                            fail_ids
                                .iter()
                                .map(u64::to_string)
                                .collect::<Vec<_>>()
                                .join(" ")
                        );
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[derive(Default)]
struct Acknowledged {
    enqueued: HashMap<u64, u64>, // seq -> id
    acked: Vec<u64>,
    failed: Vec<u64>,
}

#[test]
fn crash_kill_9_loses_nothing_acknowledged() {
    let kills: usize = std::env::var("WEIR_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("TEST_WEIR_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash test: {kills} kills, TEST_WEIR_CRASH_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seen = Acknowledged::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut total_lines = 0;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(
                "WEIR_CRASH_SEQ_BASE",
                ((round as u64 + 1) * 10_000_000).to_string(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        // Wait until the child has opened the store, then let it run a random while.
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "child exited before READY"
            );
            // libtest prints "test crash_child ... " without a newline before the body runs.
            if line.trim_end().ends_with("READY") {
                break;
            }
        }
        let run_ms = rng.u64(5..250);
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut line = String::new();
            // Read until the pipe closes (the child is dead). A last line without its
            // newline was cut mid-write by the kill: it was never fully reported.
            while out.read_line(&mut line).unwrap_or(0) > 0 {
                if line.ends_with('\n') {
                    lines.push(std::mem::take(&mut line));
                } else {
                    break;
                }
            }
            lines
        });
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(run_ms) {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        total_lines += lines.len();
        for l in &lines {
            let mut parts = l.split_whitespace();
            match parts.next() {
                Some("E") => {
                    for pair in parts {
                        let (seq, id) = pair.split_once(':').unwrap();
                        seen.enqueued
                            .insert(seq.parse().unwrap(), id.parse().unwrap());
                    }
                }
                Some("A") => seen.acked.extend(parts.map(|p| p.parse::<u64>().unwrap())),
                Some("F") => seen.failed.extend(parts.map(|p| p.parse::<u64>().unwrap())),
                _ => {}
            }
        }
        rt.block_on(verify(dir.path(), &seen, round, run_ms));
    }
    assert!(
        seen.enqueued.len() > kills,
        "the children did too little to test anything: {total_lines} lines"
    );
    assert!(!seen.acked.is_empty() && !seen.failed.is_empty());
    eprintln!(
        "crash test: {} enqueues, {} acks, {} fails acknowledged over {kills} kills, all recovered",
        seen.enqueued.len(),
        seen.acked.len(),
        seen.failed.len()
    );
}

async fn verify(dir: &std::path::Path, seen: &Acknowledged, round: usize, run_ms: u64) {
    let ctx = format!("round {round} (killed after {run_ms} ms)");
    let store = EmbeddedStore::open(
        dir,
        EmbeddedOptions {
            maintenance_every: None,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
    store
        .check_invariants()
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
    let mut by_seq: HashMap<u64, JobId> = HashMap::new();
    let mut after = None;
    loop {
        let page = store
            .job_list(JobFilter {
                after,
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        for j in &page.jobs {
            let seq = j.payload.to_value::<serde_json::Value>().unwrap()["seq"]
                .as_u64()
                .unwrap();
            if let Some(other) = by_seq.insert(seq, j.id) {
                panic!("{ctx}: seq {seq} stored twice (jobs {other} and {})", j.id);
            }
        }
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    for (seq, id) in &seen.enqueued {
        assert_eq!(
            by_seq.get(seq),
            Some(&JobId(*id)),
            "{ctx}: acknowledged enqueue of seq {seq} (job {id}) lost"
        );
    }
    for id in &seen.acked {
        let j = store
            .job_get(JobId(*id))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{ctx}: acked job {id} lost"));
        assert_eq!(
            j.state,
            JobState::Completed,
            "{ctx}: acked job {id} is {}",
            j.state
        );
        assert_eq!(
            j.result.as_ref(),
            Some(&j.payload),
            "{ctx}: acked job {id} lost its result"
        );
    }
    for id in &seen.failed {
        let j = store
            .job_get(JobId(*id))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{ctx}: failed job {id} lost"));
        assert_eq!(
            j.state,
            JobState::Dead,
            "{ctx}: failed job {id} is {}",
            j.state
        );
    }
}
