//! Regression tests of the embedded store's hardening (issue 14): what a failed write or a
//! panicking operation does to the store, and when its maintenance thread runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_core::{Ack, JobState, ManualClock, NewJob, Payload, QueueConfig, Retention};
use weir_store::*;

const T0: u64 = 1_700_000_000_000;

fn job(n: u64) -> NewJob {
    NewJob::new(
        "q",
        "k",
        Payload::json(&serde_json::json!({ "n": n })).unwrap(),
    )
}

fn open(
    dir: &std::path::Path,
    clock: Arc<dyn weir_core::Clock>,
    every: Option<Duration>,
) -> EmbeddedStore {
    EmbeddedStore::open(
        dir,
        EmbeddedOptions {
            clock,
            seed: Some(3),
            maintenance_every: every,
            ..Default::default()
        },
    )
    .unwrap()
}

async fn put(s: &EmbeddedStore, n: u64) -> Result<weir_core::JobId, weir_core::Error> {
    s.job_insert_many(JobInsertManyParams { jobs: vec![job(n)] })
        .await
        .map(|ids| ids[0])
}

/// Regression: the maintenance thread shared the committer's condition variable, so every
/// write woke it and it ran a pass — retention included — at the pace of unrelated writes:
/// with `maintenance_every` at one hour, a job past its retention was deleted 300 ms after
/// an unrelated enqueue (and each pass woke every idle long poll).
#[tokio::test]
async fn unrelated_writes_do_not_run_maintenance() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let s = open(
        dir.path(),
        Arc::new(clock.clone()),
        Some(Duration::from_secs(3600)),
    );
    s.queue_config_set(QueueConfigSetParams {
        name: "q".into(),
        config: QueueConfig {
            retention: Retention {
                completed_ms: 1_000,
                ..Retention::default()
            },
            ..QueueConfig::default()
        },
    })
    .await
    .unwrap();
    // A lease longer than the thread's period, so that nothing falls due before its first
    // pass: the only reason left to run is a write waking it.
    let mut first = job(0);
    first.timeout_ms = Some(7_200_000);
    let done = s
        .job_insert_many(JobInsertManyParams { jobs: vec![first] })
        .await
        .unwrap()[0];
    let got = s
        .job_fetch(JobFetchParams {
            queues: vec!["q".into()],
            max: 1,
            wait_ms: 0,
            worker: "t".into(),
        })
        .await
        .unwrap();
    s.job_ack_many(JobAckManyParams {
        acks: vec![Ack {
            id: got[0].id,
            lease_id: got[0].lease_id,
            result: None,
        }],
    })
    .await
    .unwrap();
    clock.advance(60_000); // `done` is now a minute past its one-second retention
                           // Fifty unrelated durable writes, each a commit the old code woke the thread for.
    for n in 1..=50 {
        put(&s, n).await.unwrap();
    }
    let j = s.job_get(done).await.unwrap();
    assert_eq!(
        j.map(|j| j.state),
        Some(JobState::Completed),
        "retention ran on a write, not on its hourly schedule"
    );
    assert_eq!(s.maintenance_passes(), 0);
    // Asked for, maintenance runs (the same pass the thread runs) and deletes it.
    let report = s.maintenance_run().await.unwrap();
    assert_eq!(report.deleted, 1);
    assert!(s.job_get(done).await.unwrap().is_none());
    assert_eq!(s.maintenance_passes(), 1);
}

/// The thread's own wake-up moves earlier when something falls due before its next pass: a
/// job delayed by 50 ms becomes waiting (in the queue's counts, for every reader) although
/// the thread's period is an hour and nothing fetches.
#[tokio::test]
async fn maintenance_wakes_when_a_job_falls_due_before_its_next_pass() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(
        dir.path(),
        Arc::new(weir_core::SystemClock),
        Some(Duration::from_secs(3600)),
    );
    let mut j = job(1);
    j.delay_ms = Some(50);
    let id = s
        .job_insert_many(JobInsertManyParams { jobs: vec![j] })
        .await
        .unwrap()[0];
    assert_eq!(
        s.job_get(id).await.unwrap().unwrap().state,
        JobState::Scheduled
    );
    // Signal: the thread's pass counter. Bounded well below the hour it would otherwise wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.maintenance_passes() == 0 {
        assert!(
            Instant::now() < deadline,
            "the maintenance thread never woke"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        s.job_get(id).await.unwrap().unwrap().state,
        JobState::Waiting
    );
}

/// Regression: the `broken` path was untested. A commit that fails leaves memory ahead of
/// disk: the write is refused, so is every later one, `health` says why, and a reopen
/// finds exactly what was durable.
#[tokio::test]
async fn a_failed_commit_breaks_the_store_until_it_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn weir_core::Clock> = Arc::new(ManualClock::new(T0));
    let kept = {
        let s = open(dir.path(), clock.clone(), None);
        let kept = put(&s, 1).await.unwrap();
        assert!(s.health().await.is_ok());
        s.inject(Fault::FailNextCommit);
        let err = put(&s, 2).await.expect_err("the failed commit is reported");
        assert_eq!(err.kind(), "storage");
        let why = s.health().await.expect_err("health reports the failure");
        assert!(why.to_string().contains("injected commit failure"), "{why}");
        let again = put(&s, 3).await.expect_err("later writes are refused");
        assert!(again.to_string().contains("must be reopened"), "{again}");
        assert!(s.maintenance_run().await.is_err());
        kept
    };
    let s = open(dir.path(), clock, None);
    assert!(s.health().await.is_ok(), "a reopen heals it");
    let page = s.job_list(weir_core::JobFilter::default()).await.unwrap();
    let ids: Vec<_> = page.jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![kept], "only the durable enqueue is there");
    s.check_invariants().unwrap();
}

/// Regression: a panic while the store's lock was held left a half-updated engine that
/// later calls went on persisting (parking_lot's mutex does not poison, and the server's
/// catch-panic layer keeps serving). Now the store is broken from that moment.
#[tokio::test]
async fn a_panic_inside_an_operation_breaks_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Arc::new(ManualClock::new(T0)), None);
    put(&s, 1).await.unwrap();
    s.inject(Fault::PanicInNextOperation);
    let s2 = s.clone();
    let joined = tokio::spawn(async move { put(&s2, 2).await }).await;
    assert!(joined.expect_err("the operation panicked").is_panic());
    let why = s.health().await.expect_err("health reports it");
    assert!(why.to_string().contains("panicked"), "{why}");
    let refused = put(&s, 3)
        .await
        .expect_err("writes are refused after the panic");
    assert_eq!(refused.kind(), "storage");
}
