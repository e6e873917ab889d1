//! The conformance suite: the job semantics of `DESIGN.md`, written once against [`Store`],
//! run by every backend from one test:
//!
//! ```ignore
//! #[tokio::test]
//! async fn conformance() {
//!     weir_store::conformance::run_all(|clock| async move { /* a fresh store reading clock */ }).await;
//! }
//! ```
//!
//! Each case gets a fresh store whose clock is a [`ManualClock`] the case moves itself, so
//! no case sleeps and every run gives the same result. A failing case panics with its name.

#![allow(clippy::unwrap_used, missing_docs)]

mod flow;
mod lifecycle;
mod scheduling;

use crate::store::*;
use std::future::Future;
use weir_core::{Ack, FetchedJob, JobId, ManualClock, NewJob, Payload, QueueConfig};

/// Start of every case's clock: a fixed, realistic time (2023-11-14), so runs are identical.
pub const T0: u64 = 1_700_000_000_000;

/// How soon a long-polling fetch must be woken by new work: well below every backend's
/// fallback nap (1 s embedded, [`crate::embedded::LONG_POLL_FALLBACK`]), so that a case
/// cannot pass on the nap alone with the wake-up itself broken.
pub const WAKE_BOUND: std::time::Duration = std::time::Duration::from_millis(500);

/// Boxed case futures, so the runner can hold a list of them.
pub type CaseFuture<'a> = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A named case.
pub struct Case<S> {
    /// Its name.
    pub name: &'static str,
    /// Its body.
    pub run: for<'a> fn(&'a S, &'a ManualClock) -> CaseFuture<'a>,
}

macro_rules! cases {
    ($($m:ident :: $f:ident),* $(,)?) => {
        vec![$(Case { name: concat!(stringify!($m), "::", stringify!($f)), run: |s, c| Box::pin($m::$f(s, c)) }),*]
    };
}

/// Every case, in a stable order.
pub fn cases<S: Store>() -> Vec<Case<S>> {
    cases![
        lifecycle::enqueue_and_read_back,
        lifecycle::bad_input_is_refused_and_changes_nothing,
        lifecycle::batch_enqueue_is_all_or_nothing,
        lifecycle::unknown_ids_are_refused,
        lifecycle::fetch_ack_completes_with_result,
        lifecycle::ack_under_stale_or_foreign_lease_is_refused,
        lifecycle::heartbeat_extends_lease_and_records_progress,
        lifecycle::expired_lease_returns_job_and_counts_attempt,
        lifecycle::fail_backs_off_with_jitter_then_dies,
        lifecycle::fail_without_retry_dies_at_once,
        lifecycle::batch_ack_applies_good_and_rejects_bad,
        lifecycle::cancel_and_retry,
        lifecycle::release_returns_the_job_without_counting_the_attempt,
        scheduling::delayed_and_scheduled_jobs_wait,
        scheduling::priority_then_fifo,
        scheduling::smallest_cost_first,
        scheduling::aging_lifts_old_low_priority_work,
        scheduling::unique_keys_deduplicate_while_live,
        scheduling::ordered_groups_run_one_at_a_time_in_order,
        scheduling::fetch_takes_queues_in_the_order_given,
        scheduling::paused_queue_hands_out_nothing,
        scheduling::queue_stats_count_states,
        scheduling::retention_deletes_and_aggregates_remain,
        scheduling::listing_pages_with_a_cursor,
        scheduling::long_poll_wakes_on_enqueue,
        scheduling::concurrent_config_updates_all_land,
        scheduling::purge_deletes_unstarted_jobs_only,
        flow::rate_limit_hands_out_at_most_limit_plus_burst_per_second,
        flow::concurrency_limit_holds_across_fetches,
        flow::breaker_opens_probes_and_closes,
        flow::breaker_opens_on_failure_rate_over_min_calls,
        flow::max_depth_sheds_load_and_changes_nothing,
        flow::weights_share_one_fetch,
        flow::starvation_is_flagged_and_boosts_the_share,
        flow::advisor_recommends_workers_from_backlog_and_run_time,
        flow::group_concurrency_limits_each_key,
        flow::group_rate_limit_holds_per_key,
    ]
}

/// Runs every case, each on a fresh store from `make`.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = S>,
{
    for case in cases::<S>() {
        let clock = ManualClock::new(T0);
        let store = make(clock.clone()).await;
        eprintln!("conformance: {}", case.name);
        (case.run)(&store, &clock).await;
    }
}

// ---- helpers shared by the cases ---------------------------------------------------------

pub(crate) fn job(queue: &str, n: u64) -> NewJob {
    NewJob::new(
        queue,
        "test",
        Payload::json(&serde_json::json!({ "n": n })).unwrap(),
    )
}

pub(crate) async fn put<S: Store>(s: &S, jobs: Vec<NewJob>) -> Vec<JobId> {
    s.job_insert_many(JobInsertManyParams { jobs })
        .await
        .unwrap()
}

pub(crate) async fn put1<S: Store>(s: &S, j: NewJob) -> JobId {
    put(s, vec![j]).await[0]
}

pub(crate) async fn fetch<S: Store>(s: &S, queues: &[&str], max: usize) -> Vec<FetchedJob> {
    s.job_fetch(JobFetchParams {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        max,
        wait_ms: 0,
        worker: "conformance".into(),
    })
    .await
    .unwrap()
}

pub(crate) async fn ack<S: Store>(
    s: &S,
    f: &FetchedJob,
    result: Option<serde_json::Value>,
) -> weir_core::BatchOutcome {
    s.job_ack_many(JobAckManyParams {
        acks: vec![Ack {
            id: f.id,
            lease_id: f.lease_id,
            result: result.map(|r| Payload::json(&r).unwrap()),
        }],
    })
    .await
    .unwrap()
}

pub(crate) async fn fail<S: Store>(s: &S, f: &FetchedJob, retry: bool) -> weir_core::BatchOutcome {
    s.job_fail_many(JobFailManyParams {
        fails: vec![weir_core::Fail {
            id: f.id,
            lease_id: f.lease_id,
            error: format!("boom on attempt {}", f.attempt),
            retry,
        }],
    })
    .await
    .unwrap()
}

pub(crate) async fn state<S: Store>(s: &S, id: JobId) -> weir_core::JobState {
    s.job_get(id).await.unwrap().unwrap().state
}

pub(crate) async fn configure<S: Store>(
    s: &S,
    name: &str,
    f: impl Fn(&mut QueueConfig) + Send + Sync + 'static,
) {
    s.queue_config_update(QueueConfigUpdateParams {
        name: name.into(),
        patch: std::sync::Arc::new(weir_core::config::PatchFn::new("case", f)),
    })
    .await
    .unwrap();
}

pub(crate) fn n_of(f: &FetchedJob) -> u64 {
    f.payload.to_value::<serde_json::Value>().unwrap()["n"]
        .as_u64()
        .unwrap()
}
