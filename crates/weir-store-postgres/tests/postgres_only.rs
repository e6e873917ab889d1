//! What only the PostgreSQL backend has: counts by state kept by triggers (exact after every
//! kind of change, after a backend goes, and after a schema written by an older Weir is
//! migrated), and long polls woken one at a time. Each test in a schema of its own on the
//! local database (`TEST_WEIR_POSTGRES`), dropped afterwards.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::url;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_core::{Ack, Fail, FetchedJob, ManualClock, NewJob, Payload, QueueConfig, Retention};
use weir_store::{
    JobAckManyParams, JobCancelParams, JobFailManyParams, JobFetchParams, JobInsertManyParams,
    QueuePurgeParams, Store,
};
use weir_store_postgres::{PostgresOptions, PostgresStore};

const T0: u64 = 1_700_000_000_000;

fn fresh_schema() -> String {
    common::fresh_schema("po")
}

/// Drops its schema when the test ends, however it ends.
struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        weir_store_postgres::drop_schema_blocking(&url(), &self.0);
    }
}

fn options(schema: &str, clock: &ManualClock) -> PostgresOptions {
    PostgresOptions {
        schema: schema.to_string(),
        clock: Arc::new(clock.clone()),
        pool_size: 4,
        maintenance_every: None,
        ..PostgresOptions::new(url())
    }
}

async fn sql() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

fn job(queue: &str, n: u64) -> NewJob {
    NewJob::new(
        queue,
        "test",
        Payload::json(&serde_json::json!({ "n": n })).unwrap(),
    )
}

async fn put(s: &PostgresStore, jobs: Vec<NewJob>) {
    s.job_insert_many(JobInsertManyParams { jobs })
        .await
        .unwrap();
}

async fn fetch(s: &PostgresStore, queue: &str, max: usize) -> Vec<FetchedJob> {
    s.job_fetch(JobFetchParams {
        queues: vec![queue.into()],
        max,
        wait_ms: 0,
        worker: "w".into(),
    })
    .await
    .unwrap()
}

/// Changes the settings of `queue` on `s` with `f` (the queue is created if need be).
async fn configure(
    s: &PostgresStore,
    queue: &str,
    name: &'static str,
    f: impl Fn(&mut QueueConfig) + Send + Sync + 'static,
) {
    s.queue_config_update(weir_store::QueueConfigUpdateParams {
        name: queue.into(),
        patch: Arc::new(weir_core::config::PatchFn::new(name, f)),
    })
    .await
    .unwrap();
}

/// The first column of every row `sql` returns.
async fn column<T: tokio_postgres::types::FromSqlOwned>(
    db: &tokio_postgres::Client,
    sql: &str,
) -> Vec<T> {
    db.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The jobs of `queue` by state, counted in the table itself.
async fn counted(db: &tokio_postgres::Client, schema: &str, queue: &str) -> BTreeMap<i16, i64> {
    db.query(
        &format!("SELECT state, count(*) FROM \"{schema}\".jobs WHERE queue = $1 GROUP BY state"),
        &[&queue],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The jobs of `queue` by state, as the store's statistics report them.
async fn reported(s: &PostgresStore, queue: &str) -> BTreeMap<i16, i64> {
    let st = s.queue_stats(queue).await.unwrap().unwrap();
    weir_core::JobState::ALL
        .iter()
        .filter_map(|state| {
            let n = st.counts[state.as_str()];
            (n > 0).then(|| (*state as i16, i64::try_from(n).unwrap()))
        })
        .collect()
}

#[tokio::test]
async fn state_counts_match_the_jobs_after_every_kind_of_change_and_a_backend_gone() {
    let schema = Schema(fresh_schema());
    let clock = ManualClock::new(T0);
    let first = PostgresStore::open(options(&schema.0, &clock))
        .await
        .unwrap();
    let db = sql().await;
    let q = "counted";
    configure(&first, q, "keep", |c: &mut QueueConfig| {
        c.retention = Retention {
            completed_ms: 3_600_000,
            completed_max: 1_000,
            dead_ms: 3_600_000,
            dead_max: 1_000,
        };
    })
    .await;
    {
        // A second server writes too, then goes away with its connections: its counts
        // must stay with the jobs it changed.
        let second = PostgresStore::open(options(&schema.0, &clock))
            .await
            .unwrap();
        put(&second, (0..40).map(|n| job(q, n)).collect()).await;
        let grouped = (0..6)
            .map(|n| NewJob {
                group: Some(format!("g{}", n % 2)),
                ..job(q, 100 + n)
            })
            .collect();
        put(&second, grouped).await;
        let unique = NewJob {
            unique_key: Some("once".into()),
            ..job(q, 200)
        };
        put(&second, vec![unique.clone(), unique]).await;
        let delayed = NewJob {
            delay_ms: Some(60_000),
            ..job(q, 300)
        };
        put(&second, vec![delayed]).await;
        let leased = fetch(&second, q, 10).await;
        assert_eq!(leased.len(), 10);
        let acks = leased[..4]
            .iter()
            .map(|f| Ack {
                id: f.id,
                lease_id: f.lease_id,
                result: None,
            })
            .collect();
        second
            .job_ack_many(JobAckManyParams { acks })
            .await
            .unwrap();
        let fails = leased[4..8]
            .iter()
            .enumerate()
            .map(|(k, f)| Fail {
                id: f.id,
                lease_id: f.lease_id,
                error: "boom".into(),
                retry: k % 2 == 0,
            })
            .collect();
        second
            .job_fail_many(JobFailManyParams { fails })
            .await
            .unwrap();
        assert_eq!(counted(&db, &schema.0, q).await, reported(&second, q).await);
    }
    // The first server goes on: cancel, purge, more jobs, leases that expire.
    let waiting = first
        .job_list(weir_core::JobFilter {
            queue: Some(q.into()),
            state: Some(weir_core::JobState::Waiting),
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    for j in &waiting.jobs {
        first
            .job_cancel(JobCancelParams { id: j.id })
            .await
            .unwrap();
    }
    put(&first, (0..5).map(|n| job(q, 400 + n)).collect()).await;
    let expiring = fetch(&first, q, 3).await;
    assert_eq!(expiring.len(), 3);
    clock.advance(10 * 60_000);
    first.maintenance_run().await.unwrap();
    assert_eq!(counted(&db, &schema.0, q).await, reported(&first, q).await);
    // A job in each of the states maintenance moved on: scheduled, failed (to retry).
    let later = NewJob {
        delay_ms: Some(60_000),
        ..job(q, 500)
    };
    put(&first, vec![later]).await;
    let retried = fetch(&first, q, 1).await.remove(0);
    first
        .job_fail_many(JobFailManyParams {
            fails: vec![Fail {
                id: retried.id,
                lease_id: retried.lease_id,
                error: "again".into(),
                retry: true,
            }],
        })
        .await
        .unwrap();
    assert_eq!(fetch(&first, q, 1).await.len(), 1, "one left running");
    // Every state's listing (each from its own index) agrees with the counts too.
    let now_counted = counted(&db, &schema.0, q).await;
    assert!(
        (0..=6).all(|st| now_counted.contains_key(&st)),
        "a job in every state: {now_counted:?}"
    );
    for state in weir_core::JobState::ALL {
        let page = first
            .job_list(weir_core::JobFilter {
                queue: Some(q.into()),
                state: Some(state),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.jobs.iter().all(|j| j.state == state));
        let want = now_counted.get(&(state as i16)).copied().unwrap_or(0);
        assert_eq!(page.jobs.len() as i64, want, "listing of {state:?}");
    }
    let all = first
        .job_list(weir_core::JobFilter {
            queue: Some(q.into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.jobs.len() as i64, now_counted.values().sum::<i64>());
    assert!(
        all.jobs.windows(2).all(|w| w[0].id < w[1].id),
        "in id order"
    );
    first
        .queue_purge(QueuePurgeParams { name: q.into() })
        .await
        .unwrap();
    let after = counted(&db, &schema.0, q).await;
    assert_eq!(after, reported(&first, q).await);
    assert!(!after.contains_key(&0) && !after.contains_key(&1) && !after.contains_key(&4));
    assert!(
        after.contains_key(&3) && after.contains_key(&5) && after.contains_key(&6),
        "completed, dead and cancelled jobs were counted: {after:?}"
    );
    // The gone server's rows were folded: only live backends and the fold remain.
    let stray: i64 = db
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\".state_counts c WHERE c.pid <> 0 AND NOT EXISTS \
                 (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.pid)",
                schema.0
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stray, 0, "rows of backends that are gone were not folded");
}

/// Rows of (queue, state, count) that `sql` returns.
async fn by_queue_and_state(db: &tokio_postgres::Client, sql: &str) -> Vec<(String, i16, i64)> {
    db.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn a_schema_written_by_an_older_weir_migrates_with_its_counts() {
    let schema = Schema(fresh_schema());
    let s = format!("\"{}\"", schema.0);
    let db = sql().await;
    // Version 3 as an older Weir left it, with jobs in it.
    let mut old = format!(
        "CREATE SCHEMA {s}; CREATE TABLE {s}.schema_migrations (version integer PRIMARY KEY, \
         applied_at timestamptz NOT NULL DEFAULT now());"
    );
    for (v, sql) in [
        (1, include_str!("../migrations/0001_jobs.sql")),
        (2, include_str!("../migrations/0002_group_rates.sql")),
        (3, include_str!("../migrations/0003_cron.sql")),
    ] {
        old.push_str(&sql.replace("{s}", &s));
        old.push_str(&format!(
            ";\nINSERT INTO {s}.schema_migrations (version) VALUES ({v});"
        ));
    }
    old.push_str(&format!(
        "INSERT INTO {s}.jobs (id, queue, kind, payload, state, avail, priority, cost, rank, \
           sort_cost, max_attempts, timeout_ms, created_at, run_at) \
         SELECT nextval('{s}.jobs_id_seq'), 'q' || (g % 3), 'k', '{{}}', (g % 7)::smallint, \
           false, 0, 0, 0, 0, 3, 1000, 0, g FROM generate_series(1, 500) g;"
    ));
    // Retention before version 5 left a job's unique key behind when it deleted the job:
    // one key of a job that is gone, one of a job that is there.
    old.push_str(&format!(
        "INSERT INTO {s}.unique_keys (queue, key, job_id, live_until) VALUES \
           ('q1', 'orphan', 1000000, 9223372036854775807), \
           ('q1', 'kept', (SELECT min(id) FROM {s}.jobs), 9223372036854775807);"
    ));
    db.batch_execute(&old).await.unwrap();
    let clock = ManualClock::new(T0);
    let store = PostgresStore::open(options(&schema.0, &clock))
        .await
        .unwrap();
    let versions: Vec<i32> = column(
        &db,
        &format!("SELECT version FROM {s}.schema_migrations ORDER BY version"),
    )
    .await;
    assert_eq!(
        versions,
        (1..=weir_store_postgres::SCHEMA_VERSION).collect::<Vec<_>>()
    );
    let kept = by_queue_and_state(
        &db,
        &format!(
            "SELECT queue, state, sum(n)::bigint FROM {s}.state_counts \
             GROUP BY queue, state HAVING sum(n) <> 0 ORDER BY queue, state"
        ),
    )
    .await;
    let real = by_queue_and_state(
        &db,
        &format!(
            "SELECT queue, state, count(*) FROM {s}.jobs GROUP BY queue, state \
             ORDER BY queue, state"
        ),
    )
    .await;
    let keys: Vec<String> = column(
        &db,
        &format!("SELECT key FROM {s}.unique_keys ORDER BY key"),
    )
    .await;
    assert_eq!(keys, ["kept"], "the orphaned key goes, the live one stays");
    assert_eq!(kept.len(), 21, "3 queues × 7 states: {kept:?}");
    assert_eq!(kept, real);
    // And the counts go on from there.
    put(&store, vec![job("q1", 1)]).await;
    let waiting: i64 = db
        .query_one(
            &format!(
                "SELECT sum(n)::bigint FROM {s}.state_counts WHERE queue = 'q1' AND state = 1"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let before = real
        .iter()
        .find(|(q, st, _)| q == "q1" && *st == 1)
        .unwrap()
        .2;
    assert_eq!(waiting, before + 1);
}

#[tokio::test]
async fn one_enqueue_of_three_jobs_wakes_three_long_polls() {
    // Arrivals wake one long poll at a time; the poll that fills its batch wakes the next.
    // With the fallback poll out of reach (30 s), every poll must be woken by the chain.
    let schema = Schema(fresh_schema());
    let clock = ManualClock::new(T0);
    let store = Arc::new(
        PostgresStore::open(PostgresOptions {
            poll_interval: Duration::from_secs(30),
            ..options(&schema.0, &clock)
        })
        .await
        .unwrap(),
    );
    // The queue exists, so that the polls wait on it (not on a first look-up).
    put(&store, vec![job("chain", 0)]).await;
    assert_eq!(fetch(&store, "chain", 1).await.len(), 1);
    let started = Instant::now();
    let polls: Vec<_> = (0..3)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move {
                s.job_fetch(JobFetchParams {
                    queues: vec!["chain".into()],
                    max: 1,
                    wait_ms: 20_000,
                    worker: "w".into(),
                })
                .await
                .unwrap()
            })
        })
        .collect();
    // Let the polls find nothing and go to sleep (there is no signal for "asleep"; if one
    // is late it finds its job on its first look, and the test still holds).
    tokio::time::sleep(Duration::from_millis(300)).await;
    put(&store, (1..=3).map(|n| job("chain", n)).collect()).await;
    let mut got = Vec::new();
    for p in polls {
        let jobs = tokio::time::timeout(Duration::from_secs(10), p)
            .await
            .expect("a long poll was not woken: the wake-up chain stopped")
            .unwrap();
        got.extend(jobs.into_iter().map(|f| f.id));
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 3, "each poll got its own job");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Rows of `table` in the test's schema.
async fn rows(db: &tokio_postgres::Client, schema: &str, table: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM \"{schema}\".{table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn retention_deletes_a_jobs_unique_key_with_the_job() {
    let schema = Schema(fresh_schema());
    let clock = ManualClock::new(T0);
    let store = PostgresStore::open(options(&schema.0, &clock))
        .await
        .unwrap();
    let db = sql().await;
    let q = "kept_briefly";
    configure(&store, q, "brief", |c: &mut QueueConfig| {
        c.retention.completed_ms = 1_000
    })
    .await;
    // A key that deduplicates for an hour after its job completes.
    let keyed = |n| NewJob {
        unique_key: Some("report-2026-12".into()),
        unique_window_ms: Some(3_600_000),
        ..job(q, n)
    };
    let first = store
        .job_insert_many(JobInsertManyParams {
            jobs: vec![keyed(1)],
        })
        .await
        .unwrap();
    let got = fetch(&store, q, 1).await;
    store
        .job_ack_many(JobAckManyParams {
            acks: got.iter().map(Ack::of).collect(),
        })
        .await
        .unwrap();
    // Within its window, the key still deduplicates.
    let again = store
        .job_insert_many(JobInsertManyParams {
            jobs: vec![keyed(2)],
        })
        .await
        .unwrap();
    assert_eq!(again, first);
    // Retention deletes the job, and its key with it: a new job with the key is a new job.
    clock.advance(2_000);
    let report = store.maintenance_run().await.unwrap();
    assert_eq!(report.deleted, 1);
    assert_eq!(rows(&db, &schema.0, "unique_keys").await, 0);
    let fresh = store
        .job_insert_many(JobInsertManyParams {
            jobs: vec![keyed(3)],
        })
        .await
        .unwrap();
    assert_ne!(fresh, first);
}

#[tokio::test]
async fn maintenance_deletes_rate_limiter_rows_whose_time_has_passed_and_the_limit_holds() {
    let schema = Schema(fresh_schema());
    let clock = ManualClock::new(T0);
    let store = PostgresStore::open(options(&schema.0, &clock))
        .await
        .unwrap();
    let db = sql().await;
    let q = "per_key";
    configure(&store, q, "limit", |c: &mut QueueConfig| {
        c.group_concurrency = 10;
        c.group_rate_limit = Some(weir_core::RateLimit {
            limit: 2,
            period_ms: 1_000,
            burst: 2,
        });
    })
    .await;
    let keyed = (0..20)
        .map(|n| NewJob {
            group: Some(format!("k{}", n % 2)),
            ..job(q, n)
        })
        .collect();
    put(&store, keyed).await;
    let take = |store: &PostgresStore| {
        let store = store.clone();
        async move {
            let got = fetch(&store, q, 20).await;
            store
                .job_ack_many(JobAckManyParams {
                    acks: got.iter().map(Ack::of).collect(),
                })
                .await
                .unwrap();
            got
        }
    };
    // Two keys with a burst of two each: four jobs, one limiter row per key.
    assert_eq!(take(&store).await.len(), 4);
    assert_eq!(rows(&db, &schema.0, "group_rates").await, 2);
    // While their time has not passed, maintenance keeps the rows (and the limit).
    store.maintenance_run().await.unwrap();
    assert_eq!(rows(&db, &schema.0, "group_rates").await, 2);
    assert_eq!(take(&store).await.len(), 0);
    // Once it has, the rows equal fresh ones and go; the limit is the same without them.
    clock.advance(10_000);
    store.maintenance_run().await.unwrap();
    assert_eq!(rows(&db, &schema.0, "group_rates").await, 0);
    assert_eq!(take(&store).await.len(), 4);
    assert_eq!(take(&store).await.len(), 0);
}

/// What the planner believes of `schema`.jobs, and how often it was analyzed.
async fn jobs_statistics(db: &tokio_postgres::Client, schema: &str) -> (f32, i64) {
    db.batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    let row = db
        .query_one(
            "SELECT c.reltuples, s.analyze_count FROM pg_class c \
             JOIN pg_stat_user_tables s ON s.relid = c.oid \
             WHERE s.schemaname = $1 AND s.relname = 'jobs'",
            &[&schema],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A drained queue's table vacuumed (its statistics say it is empty), then a burst: the
/// plans PostgreSQL makes on an "empty" table are a toss-up and are kept through the burst,
/// so the leader analyzes the table once it holds more than twice what its statistics say
/// (one server fell from ~40,000 to ~10,000 jobs/s until autovacuum's next round).
#[tokio::test]
async fn maintenance_analyzes_a_jobs_table_that_outgrew_its_statistics_after_a_vacuum() {
    let schema = Schema(fresh_schema());
    let clock = ManualClock::new(T0);
    let store = PostgresStore::open(options(&schema.0, &clock))
        .await
        .unwrap();
    let db = sql().await;
    // Autovacuum stays out of it: only the leader may analyze.
    db.batch_execute(&format!(
        "ALTER TABLE \"{}\".jobs SET (autovacuum_enabled = false)",
        schema.0
    ))
    .await
    .unwrap();
    let q = "bursty";
    put(&store, (0..100).map(|n| job(q, n)).collect()).await;
    store
        .queue_purge(QueuePurgeParams { name: q.into() })
        .await
        .unwrap();
    db.batch_execute(&format!("VACUUM (ANALYZE) \"{}\".jobs", schema.0))
        .await
        .unwrap();
    let (believed, analyzed) = jobs_statistics(&db, &schema.0).await;
    assert_eq!(
        believed, 0.0,
        "a drained table, vacuumed, is believed empty"
    );

    // The next burst. The statistics system counts its rows within about a second; the
    // leader's pass analyzes the table once it does.
    for chunk in 0..5 {
        put(
            &store,
            (0..1_000).map(|n| job(q, chunk * 1_000 + n)).collect(),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let (believed, after) = loop {
        store.maintenance_run().await.unwrap();
        let now = jobs_statistics(&db, &schema.0).await;
        if now.0 > 0.0 || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        believed >= 4_000.0,
        "the planner should know of the 5,000 jobs, believes {believed}"
    );
    assert_eq!(after, analyzed + 1, "one analyze");
    // Statistics that match the table are left alone.
    store.maintenance_run().await.unwrap();
    assert_eq!(jobs_statistics(&db, &schema.0).await.1, after);
}
