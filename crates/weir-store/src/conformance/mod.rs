//! The conformance suite: the job semantics of `DESIGN.md`, written once against [`Store`],
//! expanded by every backend's test file into one test per case with
//! [`conformance_tests!`](crate::conformance_tests).
//!
//! Each case gets a fresh store whose clock is a [`ManualClock`] the case moves itself, so
//! no case sleeps and every run gives the same result. A failing case panics with its name.

#![allow(clippy::unwrap_used, missing_docs)]

pub mod flow;
pub mod lifecycle;
pub mod multi;
pub mod scheduling;

use crate::store::*;
pub use weir_core::ManualClock;
use weir_core::{Ack, FetchedJob, JobId, NewJob, Payload, QueueConfig};

/// Start of every case's clock: a fixed, realistic time (2023-11-14), so runs are identical.
pub const T0: u64 = 1_700_000_000_000;

/// How soon a long-polling fetch must be woken by new work: well below every backend's
/// fallback nap (1 s embedded, [`crate::embedded::LONG_POLL_FALLBACK`]), so that a case
/// cannot pass on the nap alone with the wake-up itself broken.
pub const WAKE_BOUND: std::time::Duration = std::time::Duration::from_millis(500);

/// A backend's fixture for one case: the store, plus whatever must live as long as it (a
/// temporary directory, a schema to drop). `(store, guard)` is one.
pub trait Fixture: Send + Sync {
    /// The store under test.
    type S: Store;
    /// The store.
    fn store(&self) -> &Self::S;
    /// A second store on the same data, as another server would open it, for the cases of
    /// [`multi`]; or why the backend has none (they are then skipped, saying so).
    fn second(&self) -> Result<&Self::S, &'static str> {
        Err("one process owns this backend's data: there is no second handle to open")
    }
}

impl<S: Store, G: Send + Sync> Fixture for (S, G) {
    type S = S;
    fn store(&self) -> &S {
        &self.0
    }
}

/// Expands the whole suite into one `#[tokio::test]` per case (a module per area:
/// `lifecycle::cancel_and_retry`, ...), each on a fresh fixture from `make`, a closure from
/// a [`ManualClock`] to a future of a [`Fixture`]:
///
/// ```ignore
/// weir_store::conformance_tests!(|clock| async move { (open_store(clock), guard) });
/// ```
///
/// One test per case: a failure names its case, the others still run, and
/// `cargo test lifecycle::` picks an area.
///
/// A backend lacking what a case needs skips it with the reason, which the test prints:
///
/// ```ignore
/// weir_store::conformance_tests!(make, skip = &[("flow::weights_share_one_fetch", "why")]);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::__weir_conformance_cases!(__weir_conformance_test, $make, &[]);
    };
    ($make:expr, skip = $skip:expr) => {
        $crate::__weir_conformance_cases!(__weir_conformance_test, $make, $skip);
    };
}

/// Every case of the suite, one after another, each on fresh stores from `$make` (as for
/// [`conformance_tests!`](crate::conformance_tests)), as one future: for a backend's own
/// test that needs what the whole suite did (every statement it sent, say) rather than a
/// test per case. Multi-handle cases run where the fixture has a second handle.
#[macro_export]
macro_rules! conformance_run_all {
    ($make:expr) => {
        $crate::__weir_conformance_cases!(__weir_conformance_sequence, $make)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __weir_conformance_sequence {
    ([$make:expr] $( $m:ident { $($f:ident),* $(,)? } ),* ;
        $mm:ident { $($mf:ident),* $(,)? }) => {
        async {
            $($(
                {
                    let clock = $crate::conformance::ManualClock::new($crate::conformance::T0);
                    let fixture = ($make)(clock.clone()).await;
                    let store = $crate::conformance::Fixture::store(&fixture);
                    $crate::conformance::$m::$f(store, &clock).await;
                }
            )*)*
            $(
                {
                    let clock = $crate::conformance::ManualClock::new($crate::conformance::T0);
                    let fixture = ($make)(clock.clone()).await;
                    if let Ok(second) = $crate::conformance::Fixture::second(&fixture) {
                        let first = $crate::conformance::Fixture::store(&fixture);
                        $crate::conformance::$mm::$mf(first, second, &clock).await;
                    }
                }
            )*
        }
    };
}

/// Why a backend skips case `name`, if it does (see [`conformance_tests!`]); printed by the
/// case's test, which then passes without running.
pub fn skip_reason(name: &str, skip: &[(&str, &'static str)]) -> Option<&'static str> {
    skip.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

/// The one list of cases, by area, handed to `$then`.
#[doc(hidden)]
#[macro_export]
macro_rules! __weir_conformance_cases {
    ($then:ident, $($args:tt)*) => {
        $crate::$then! { [$($args)*]
            lifecycle {
                enqueue_and_read_back,
                bad_input_is_refused_and_changes_nothing,
                batch_enqueue_is_all_or_nothing,
                unknown_ids_are_refused,
                fetch_ack_completes_with_result,
                ack_under_stale_or_foreign_lease_is_refused,
                heartbeat_extends_lease_and_records_progress,
                expired_lease_returns_job_and_counts_attempt,
                fail_backs_off_with_jitter_then_dies,
                fail_without_retry_dies_at_once,
                batch_ack_applies_good_and_rejects_bad,
                cancel_and_retry,
                release_returns_the_job_without_counting_the_attempt,
            },
            scheduling {
                delayed_and_scheduled_jobs_wait,
                priority_then_fifo,
                smallest_cost_first,
                aging_lifts_old_low_priority_work,
                unique_keys_deduplicate_while_live,
                ordered_groups_run_one_at_a_time_in_order,
                fetch_takes_queues_in_the_order_given,
                paused_queue_hands_out_nothing,
                queue_stats_count_states,
                retention_deletes_and_aggregates_remain,
                retention_by_count_takes_the_oldest_dead_and_cancelled_jobs_together,
                listing_pages_with_a_cursor,
                long_poll_wakes_on_enqueue,
                concurrent_config_updates_all_land,
                purge_deletes_unstarted_jobs_only,
                delete_job_frees_its_group_and_key_and_refuses_a_running_one,
                delete_queue_removes_everything_but_waits_for_running_jobs,
                cron_entries_keep_their_last_tick_and_advance_by_compare_and_set,
            },
            flow {
                rate_limit_hands_out_at_most_limit_plus_burst_per_second,
                concurrency_limit_holds_across_fetches,
                breaker_opens_probes_and_closes,
                breaker_opens_on_failure_rate_over_min_calls,
                max_depth_sheds_load_and_changes_nothing,
                weights_share_one_fetch,
                starvation_is_flagged_and_boosts_the_share,
                advisor_recommends_workers_from_backlog_and_run_time,
                group_concurrency_limits_each_key,
                group_rate_limit_holds_per_key,
            };
            multi {
                two_handles_never_lease_one_job_twice,
                a_concurrency_limit_holds_across_handles,
                one_handle_wins_each_cron_tick,
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __weir_conformance_test {
    ([$make:expr, $skip:expr] $( $m:ident { $($f:ident),* $(,)? } ),* ;
        $mm:ident { $($mf:ident),* $(,)? }) => {
        mod $mm {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $mf() {
                    let name = concat!(stringify!($mm), "::", stringify!($mf));
                    if let Some(why) = $crate::conformance::skip_reason(name, $skip) {
                        eprintln!("conformance case {name} skipped: {why}");
                        return;
                    }
                    let clock = $crate::conformance::ManualClock::new($crate::conformance::T0);
                    let fixture = ($make)(clock.clone()).await;
                    match $crate::conformance::Fixture::second(&fixture) {
                        Ok(second) => {
                            let first = $crate::conformance::Fixture::store(&fixture);
                            $crate::conformance::$mm::$mf(first, second, &clock).await;
                        }
                        Err(why) => eprintln!("conformance case {name} skipped: {why}"),
                    }
                }
            )*
        }
        $(
            mod $m {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $f() {
                        let name = concat!(stringify!($m), "::", stringify!($f));
                        if let Some(why) = $crate::conformance::skip_reason(name, $skip) {
                            eprintln!("conformance case {name} skipped: {why}");
                            return;
                        }
                        let clock = $crate::conformance::ManualClock::new($crate::conformance::T0);
                        let fixture = ($make)(clock.clone()).await;
                        let store = $crate::conformance::Fixture::store(&fixture);
                        $crate::conformance::$m::$f(store, &clock).await;
                    }
                )*
            }
        )*
    };
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
