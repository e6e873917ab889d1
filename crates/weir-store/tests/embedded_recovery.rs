//! What the embedded store promises across a close and reopen: every durable state is
//! recovered, ids are never reused, and retention gives disk space back.

use std::sync::Arc;
use weir_core::{
    Ack, Fail, JobFilter, JobId, JobState, ManualClock, NewJob, Payload, QueueConfig, Retention,
};
use weir_store::*;

const T0: u64 = 1_700_000_000_000;

struct Fixture {
    dir: tempfile::TempDir,
    clock: ManualClock,
}

fn setup() -> Fixture {
    Fixture {
        dir: tempfile::tempdir().expect("tempdir"),
        clock: ManualClock::new(T0),
    }
}

impl Fixture {
    fn open(&self) -> EmbeddedStore {
        EmbeddedStore::open(
            self.dir.path(),
            EmbeddedOptions {
                clock: Arc::new(self.clock.clone()),
                seed: Some(1),
                maintenance_every: None,
                ..Default::default()
            },
        )
        .expect("open")
    }
}

fn job(queue: &str, n: usize) -> NewJob {
    NewJob::new(
        queue,
        "k",
        Payload::json(&serde_json::json!({ "n": n })).expect("json"),
    )
}

async fn fetch(s: &EmbeddedStore, q: &str, max: usize) -> Vec<weir_core::FetchedJob> {
    s.job_fetch(JobFetchParams {
        queues: vec![q.into()],
        max,
        wait_ms: 0,
        worker: "t".into(),
    })
    .await
    .expect("fetch")
}

/// Makes queue `q` delete its jobs at their ack (`retention.completed_max = 0`).
async fn keep_no_completed_jobs(s: &EmbeddedStore, q: &str) {
    s.queue_config_set(QueueConfigSetParams {
        name: q.into(),
        config: QueueConfig {
            retention: Retention {
                completed_max: 0,
                ..Default::default()
            },
            ..Default::default()
        },
    })
    .await
    .expect("config");
}

#[tokio::test]
async fn every_durable_state_survives_reopen() {
    let fx = setup();
    let (ids, before) = {
        let s = fx.open();
        s.queue_config_set(QueueConfigSetParams {
            name: "q".into(),
            config: QueueConfig {
                max_attempts: 3,
                aging_ms: 0,
                ..Default::default()
            },
        })
        .await
        .expect("config");
        let mut jobs: Vec<NewJob> = (0..6).map(|n| job("q", n)).collect();
        jobs[4].delay_ms = Some(60_000);
        jobs[5].group = Some("g".into());
        jobs[5].unique_key = Some("u".into());
        let ids = s
            .job_insert_many(JobInsertManyParams { jobs })
            .await
            .expect("enqueue");
        let got = fetch(&s, "q", 4).await;
        let by_n = |n: u64| {
            got.iter()
                .find(|f| f.payload.to_value::<serde_json::Value>().expect("json")["n"] == n)
                .expect("fetched")
                .clone()
        };
        let (a, b, c, d) = (by_n(0), by_n(1), by_n(2), by_n(3));
        s.job_ack_many(JobAckManyParams {
            acks: vec![Ack {
                id: a.id,
                lease_id: a.lease_id,
                result: Some(Payload::parse(r#"{"r":1}"#).expect("json")),
            }],
        })
        .await
        .expect("ack");
        s.job_fail_many(JobFailManyParams {
            fails: vec![
                Fail {
                    id: b.id,
                    lease_id: b.lease_id,
                    error: "transient".into(),
                    retry: true,
                },
                Fail {
                    id: c.id,
                    lease_id: c.lease_id,
                    error: "fatal".into(),
                    retry: false,
                },
            ],
        })
        .await
        .expect("fail");
        let _still_active = d;
        s.job_cancel(JobCancelParams { id: ids[5] })
            .await
            .expect("cancel");
        let before: Vec<_> = s.job_list(JobFilter::default()).await.expect("list").jobs;
        (ids, before)
    };
    let s = fx.open();
    assert_eq!(s.recovery().jobs, 6);
    s.check_invariants().expect("invariants after recovery");
    let after = s.job_list(JobFilter::default()).await.expect("list").jobs;
    assert_eq!(after.len(), before.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.payload, b.payload);
        assert_eq!(a.result, b.result);
        assert_eq!(a.errors, b.errors);
        // Leases included: an active job is still active, on the same attempt and lease.
        assert_eq!((a.state, a.attempt), (b.state, b.attempt), "job {}", a.id);
        assert_eq!(a.lease_deadline_ms, b.lease_deadline_ms, "job {}", a.id);
    }
    assert_eq!(
        s.queue_stats("q")
            .await
            .expect("stats")
            .expect("queue")
            .config
            .max_attempts,
        3
    );
    // The unique key of the cancelled job is free; a new job gets a fresh id above all old ones.
    let mut again = job("q", 9);
    again.unique_key = Some("u".into());
    let new = s
        .job_insert_many(JobInsertManyParams { jobs: vec![again] })
        .await
        .expect("enqueue");
    assert!(new[0] > ids[5]);
    let aggs = s
        .aggregate_list(AggregateListParams {
            queue: None,
            from_ms: 0,
            to_ms: u64::MAX,
        })
        .await
        .expect("aggs");
    let enq: u64 = aggs.iter().map(|a| a.counts.enqueued).sum();
    assert_eq!(enq, 7, "aggregates recovered and still counting");
}

#[tokio::test]
async fn ids_are_never_reused_after_retention_deletes_the_newest() {
    let fx = setup();
    let last = {
        let s = fx.open();
        keep_no_completed_jobs(&s, "q").await;
        let ids = s
            .job_insert_many(JobInsertManyParams {
                jobs: (0..3).map(|n| job("q", n)).collect(),
            })
            .await
            .expect("enqueue");
        let got = fetch(&s, "q", 3).await;
        let acks = got.iter().map(Ack::of).collect();
        s.job_ack_many(JobAckManyParams { acks })
            .await
            .expect("ack");
        // A queue that keeps no completed jobs deletes them at the ack: nothing left to sweep.
        assert_eq!(s.maintenance_run().await.expect("maintain").deleted, 0);
        assert!(s.job_get(ids[2]).await.expect("get").is_none());
        ids[2]
    };
    let s = fx.open();
    assert_eq!(s.recovery().jobs, 0);
    let new = s
        .job_insert_many(JobInsertManyParams {
            jobs: vec![job("q", 9)],
        })
        .await
        .expect("enqueue");
    assert!(new[0] > last, "id {} reused (last was {last})", new[0]);
    assert!(s.job_get(JobId(last.0)).await.expect("get").is_none());
}

/// Keys left in one keyspace of a closed store's directory.
fn records_in(dir: &std::path::Path, keyspace: &str) -> usize {
    let db = fjall::Database::builder(dir).open().expect("open fjall");
    let ks = db
        .keyspace(keyspace, fjall::KeyspaceCreateOptions::default)
        .expect("keyspace");
    ks.iter().count()
}

#[tokio::test]
async fn a_queue_that_keeps_no_completed_jobs_leaves_no_record_behind() {
    let fx = setup();
    {
        let s = fx.open();
        keep_no_completed_jobs(&s, "q").await;
        s.job_insert_many(JobInsertManyParams {
            jobs: (0..4).map(|n| job("q", n)).collect(),
        })
        .await
        .expect("enqueue");
        let got = fetch(&s, "q", 4).await;
        // Two fail once first, so a status record is written for them before their ack.
        s.job_fail_many(JobFailManyParams {
            fails: got[..2]
                .iter()
                .map(|f| Fail {
                    id: f.id,
                    lease_id: f.lease_id,
                    error: "once".into(),
                    retry: true,
                })
                .collect(),
        })
        .await
        .expect("fail");
        let ack = |f: &weir_core::FetchedJob| Ack {
            id: f.id,
            lease_id: f.lease_id,
            result: None,
        };
        let out = s
            .job_ack_many(JobAckManyParams {
                acks: got[2..].iter().map(ack).collect(),
            })
            .await
            .expect("ack");
        assert_eq!(out.applied, 2);
        fx.clock.advance(3_600_000);
        let again = fetch(&s, "q", 4).await;
        assert_eq!(
            again.len(),
            2,
            "the two failed jobs come back after their backoff"
        );
        let out = s
            .job_ack_many(JobAckManyParams {
                acks: again.iter().map(ack).collect(),
            })
            .await
            .expect("ack");
        assert_eq!(out.applied, 2);
        let aggs = s
            .aggregate_list(AggregateListParams {
                queue: Some("q".into()),
                from_ms: 0,
                to_ms: u64::MAX,
            })
            .await
            .expect("aggs");
        let done: u64 = aggs.iter().map(|a| a.counts.completed).sum();
        assert_eq!(done, 4, "deleted at the ack, still counted as completed");
    }
    assert_eq!(records_in(fx.dir.path(), "job_specs"), 0);
    assert_eq!(
        records_in(fx.dir.path(), "job_statuses"),
        0,
        "no status orphaned"
    );
    let s = fx.open();
    assert_eq!(s.recovery().jobs, 0);
}

#[tokio::test]
async fn retention_gives_disk_space_back() {
    let fx = setup();
    let s = fx.open();
    s.queue_config_set(QueueConfigSetParams {
        name: "big".into(),
        config: QueueConfig {
            retention: Retention {
                completed_ms: 1_000,
                ..Default::default()
            },
            ..Default::default()
        },
    })
    .await
    .expect("config");
    // Random text, so the engine's compression cannot shrink it.
    let mut rng = fastrand::Rng::with_seed(3);
    for _ in 0..20 {
        let jobs = (0..100)
            .map(|_| {
                let blob: String = (0..16 * 1024).map(|_| rng.alphanumeric()).collect();
                NewJob::new("big", "k", Payload::json(&blob).expect("json"))
            })
            .collect();
        s.job_insert_many(JobInsertManyParams { jobs })
            .await
            .expect("enqueue");
        let got = fetch(&s, "big", 100).await;
        let acks = got.iter().map(Ack::of).collect();
        s.job_ack_many(JobAckManyParams { acks })
            .await
            .expect("ack");
    }
    s.compact().expect("compact");
    let full = s.disk_usage().expect("space");
    assert!(
        full.table_bytes > 20 * 100 * 16 * 1024,
        "payloads should be in tables: {full:?}"
    );
    fx.clock.advance(1_000);
    assert_eq!(s.maintenance_run().await.expect("maintain").deleted, 2_000);
    s.compact().expect("compact");
    let empty = s.disk_usage().expect("space");
    assert!(
        empty.table_bytes < full.table_bytes / 20,
        "space not reclaimed: {full:?} -> {empty:?}"
    );
    // The journal still holds the writes until it rotates, and is bounded.
    assert!(empty.journal_bytes <= MAX_JOURNAL_BYTES, "{empty:?}");
}

/// Jobs enqueued, fetched and acked while the previous batch is being written finish inside
/// one commit batch, whose records for them cancel out (nothing is written but the id
/// high-water mark). Whichever way the timing falls, every record is either written or
/// cancelled, the reopened store holds none of the jobs, and no id is handed out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_finished_within_one_commit_leave_nothing_and_reuse_no_id() {
    const PRODUCERS: usize = 4;
    const BATCHES: usize = 50;
    const BATCH: usize = 40;
    let total = (PRODUCERS * BATCHES * BATCH) as u64;
    let fx = setup();
    let max_id = {
        let s = fx.open();
        keep_no_completed_jobs(&s, "q").await;
        let before = s.commit_stats();
        let mut tasks = Vec::new();
        for p in 0..PRODUCERS {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut max = 0;
                for b in 0..BATCHES {
                    let jobs = (0..BATCH).map(|i| job("q", (p * BATCHES + b) * BATCH + i));
                    let ids = s
                        .job_insert_many(JobInsertManyParams {
                            jobs: jobs.collect(),
                        })
                        .await
                        .expect("enqueue");
                    max = ids.iter().map(|id| id.0).fold(max, u64::max);
                }
                max
            }));
        }
        let consumer = {
            let s = s.clone();
            tokio::spawn(async move {
                let mut acked = 0;
                while acked < total {
                    let got = fetch(&s, "q", 100).await;
                    let acks = got.iter().map(Ack::of);
                    let out = s
                        .job_ack_many(JobAckManyParams {
                            acks: acks.collect(),
                        })
                        .await
                        .expect("ack");
                    assert!(out.rejected.is_empty());
                    acked += out.applied as u64;
                    if got.is_empty() {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        let mut max_id = 0;
        for t in tasks {
            max_id = max_id.max(t.await.expect("producer"));
        }
        consumer.await.expect("consumer");
        let stats = s.commit_stats();
        let (written, cancelled) = (
            stats.records - before.records,
            stats.cancelled - before.cancelled,
        );
        eprintln!("{written} records written, {cancelled} cancelled out");
        // Each job is one spec and one tombstone, written or cancelled; aggregates, queue
        // records and the high-water mark are the rest of what was written.
        assert!(cancelled % 2 == 0 && cancelled <= 2 * total);
        assert!(written + cancelled >= 2 * total);
        max_id
    };
    assert_eq!(records_in(fx.dir.path(), "job_specs"), 0);
    assert_eq!(records_in(fx.dir.path(), "job_statuses"), 0);
    let s = fx.open();
    assert_eq!(s.recovery().jobs, 0);
    let next = s
        .job_insert_many(JobInsertManyParams {
            jobs: vec![job("q", 0)],
        })
        .await
        .expect("enqueue after reopen");
    assert!(
        next[0].0 > max_id,
        "id {} handed out again (the last before reopen was {max_id})",
        next[0].0
    );
}

/// Regression: a restart forgot every lease. A job fetched before a graceful close came back
/// `waiting` with `attempt` 0, so its worker's ack was refused, every deploy re-ran all work
/// in flight, and a job that took the server down on every attempt never reached `dead`.
#[tokio::test]
async fn a_lease_survives_a_restart_and_its_ack_is_accepted() {
    let fx = setup();
    let (id, lease_id, attempt) = {
        let s = fx.open();
        let id = s
            .job_insert_many(JobInsertManyParams {
                jobs: vec![job("q", 1)],
            })
            .await
            .expect("enqueue")[0];
        let got = fetch(&s, "q", 1).await;
        assert_eq!(got[0].id, id);
        (id, got[0].lease_id, got[0].attempt)
    }; // dropped: a graceful close
    let s = fx.open();
    let j = s.job_get(id).await.expect("get").expect("job");
    assert_eq!(j.state, JobState::Active, "still leased after the restart");
    assert_eq!(j.attempt, attempt);
    assert!(
        fetch(&s, "q", 1).await.is_empty(),
        "not handed to anyone else"
    );
    let out = s
        .job_ack_many(JobAckManyParams {
            acks: vec![Ack {
                id,
                lease_id,
                result: None,
            }],
        })
        .await
        .expect("ack");
    assert_eq!(
        out.applied, 1,
        "the worker's ack after the restart: {out:?}"
    );
    assert_eq!(state_of(&s, id).await, JobState::Completed);
}

/// The other half of the same regression: an attempt that was running when the server went
/// down counts. A job with one attempt whose lease runs out across a restart is dead, not
/// waiting for a fresh first attempt.
#[tokio::test]
async fn an_attempt_running_at_a_restart_counts_when_its_lease_expires() {
    let fx = setup();
    let id = {
        let s = fx.open();
        let mut j = job("q", 1);
        j.max_attempts = Some(1);
        j.timeout_ms = Some(1_000);
        let id = s
            .job_insert_many(JobInsertManyParams { jobs: vec![j] })
            .await
            .expect("enqueue")[0];
        assert_eq!(fetch(&s, "q", 1).await.len(), 1);
        id
    };
    fx.clock.advance(5_000);
    let s = fx.open();
    s.maintenance_run().await.expect("maintenance");
    let j = s.job_get(id).await.expect("get").expect("job");
    assert_eq!(j.state, JobState::Dead, "its only attempt was spent");
    assert_eq!(j.attempt, 1);
    assert_eq!(j.errors.len(), 1, "the expiry is recorded: {:?}", j.errors);
}

async fn state_of(s: &EmbeddedStore, id: JobId) -> JobState {
    s.job_get(id).await.expect("get").expect("job").state
}

/// A deleted queue stays deleted across a restart: no configuration, job or aggregate record
/// of it is left on disk, and a queue of the same name made afterwards is the one restored.
#[tokio::test]
async fn a_deleted_queue_leaves_no_record_and_stays_deleted_after_reopen() {
    let fx = setup();
    {
        let s = fx.open();
        s.queue_config_set(QueueConfigSetParams {
            name: "gone".into(),
            config: QueueConfig {
                max_attempts: 9,
                ..Default::default()
            },
        })
        .await
        .expect("configure");
        s.job_insert_many(JobInsertManyParams {
            jobs: (0..5).map(|n| job("gone", n)).collect(),
        })
        .await
        .expect("enqueue");
        let got = fetch(&s, "gone", 2).await;
        s.job_ack_many(JobAckManyParams {
            acks: got.iter().map(Ack::of).collect(),
        })
        .await
        .expect("ack");
        s.job_insert_many(JobInsertManyParams {
            jobs: vec![job("kept", 0)],
        })
        .await
        .expect("enqueue");
        s.maintenance_run().await.expect("maintain");
        assert_eq!(
            s.queue_delete(QueueDeleteParams {
                name: "gone".into()
            })
            .await
            .expect("delete"),
            5
        );
        // The name used again at once, in the same commit window as the delete.
        s.job_insert_many(JobInsertManyParams {
            jobs: vec![job("gone", 99)],
        })
        .await
        .expect("enqueue again");
    }
    assert_eq!(
        records_in(fx.dir.path(), "queues"),
        0,
        "no configuration left"
    );
    let s = fx.open();
    assert_eq!(
        s.queue_list().await.expect("list"),
        vec!["gone".to_string(), "kept".to_string()]
    );
    let st = s
        .queue_stats("gone")
        .await
        .expect("stats")
        .expect("recreated");
    assert_eq!(
        st.counts["waiting"], 1,
        "only the job enqueued after the delete"
    );
    assert_eq!(st.counts["completed"], 0);
    assert_eq!(st.config.max_attempts, QueueConfig::default().max_attempts);
    let aggregates = s
        .aggregate_list(AggregateListParams {
            queue: Some("gone".into()),
            from_ms: 0,
            to_ms: u64::MAX,
        })
        .await
        .expect("aggregates");
    let enqueued: u64 = aggregates.iter().map(|a| a.counts.enqueued).sum();
    assert_eq!(
        enqueued, 1,
        "only the new queue's enqueue is counted: {aggregates:?}"
    );
}
