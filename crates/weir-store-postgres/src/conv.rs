//! Conversions: rows to jobs, the integer types PostgreSQL has to the ones Weir uses, and
//! driver errors to storage errors (which the server answers with 503).

use tokio_postgres::Row;
use weir_core::{AttemptError, Backoff, Error, Job, JobId, JobState, Payload};

/// A u64 as PostgreSQL's bigint (saturating: no Weir value comes near 2^63).
pub(crate) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A bigint read back (never negative in Weir's tables).
pub(crate) fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A database error as a storage error, the source kept.
pub(crate) fn db(e: tokio_postgres::Error) -> Error {
    let message = match e.as_db_error() {
        Some(d) => format!("PostgreSQL: {} ({})", d.message(), d.code().code()),
        None => format!("PostgreSQL: {e}"),
    };
    Error::Storage {
        message,
        source: Some(std::sync::Arc::new(e)),
    }
}

/// A pool error (no connection within the timeout, PostgreSQL down) as a storage error.
pub(crate) fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    Error::Storage {
        message: format!("no PostgreSQL connection: {e}"),
        source: Some(std::sync::Arc::new(e)),
    }
}

pub(crate) fn state_of(v: i16) -> JobState {
    u8::try_from(v)
        .ok()
        .and_then(JobState::from_u8)
        .unwrap_or(JobState::Dead)
}

/// The columns [`job_of`] reads, in order, for `SELECT {JOB_COLUMNS} FROM {s}.jobs j JOIN
/// {s}.queues q ON q.name = j.queue`.
pub(crate) const JOB_COLUMNS: &str = "j.id, j.queue, j.kind, j.payload, j.state, j.priority, \
    j.cost, j.attempt, j.max_attempts, coalesce(j.backoff_base_ms, q.backoff_base_ms), \
    coalesce(j.backoff_cap_ms, q.backoff_cap_ms), j.timeout_ms, j.created_at, j.run_at, \
    j.started_at, j.finished_at, j.lease_deadline, j.unique_key, j.grp, j.tags, j.progress, \
    j.result, j.errors";

pub(crate) fn job_of(r: &Row) -> Job {
    let state = state_of(r.get(4));
    let errors: serde_json::Value = r.get(22);
    Job {
        id: JobId(u(r.get(0))),
        queue: r.get(1),
        kind: r.get(2),
        payload: Payload::from_stored(r.get::<_, String>(3).into_boxed_str()),
        state,
        priority: r.get(5),
        cost: u(r.get(6)),
        attempt: u32::try_from(r.get::<_, i32>(7)).unwrap_or(0),
        max_attempts: u32::try_from(r.get::<_, i32>(8)).unwrap_or(0),
        backoff: Backoff {
            base_ms: u(r.get(9)),
            cap_ms: u(r.get(10)),
        },
        timeout_ms: u(r.get(11)),
        created_at_ms: u(r.get(12)),
        run_at_ms: u(r.get(13)),
        started_at_ms: r.get::<_, Option<i64>>(14).map(u),
        finished_at_ms: r.get::<_, Option<i64>>(15).map(u),
        lease_deadline_ms: (state == JobState::Active).then(|| u(r.get(16))),
        unique_key: r.get(17),
        group: r.get(18),
        tags: r.get(19),
        progress: r
            .get::<_, Option<String>>(20)
            .map(|t| Payload::from_stored(t.into_boxed_str())),
        result: r
            .get::<_, Option<String>>(21)
            .map(|t| Payload::from_stored(t.into_boxed_str())),
        errors: serde_json::from_value::<Vec<AttemptError>>(errors).unwrap_or_default(),
    }
}

/// Whether `e` is a transient conflict between transactions (a deadlock PostgreSQL broke,
/// a serialization failure): the operation changed nothing and may simply run again.
pub(crate) fn retryable(e: &Error) -> bool {
    use tokio_postgres::error::SqlState;
    let Error::Storage {
        source: Some(src), ..
    } = e
    else {
        return false;
    };
    let src: &(dyn std::error::Error + 'static) = &**src;
    src.downcast_ref::<tokio_postgres::Error>()
        .and_then(|pg| pg.code())
        .is_some_and(|c| {
            *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        })
}

/// Runs a transaction again (up to three times, after a short random pause) when it lost
/// a conflict with another one; every other outcome is returned as it is.
pub(crate) async fn with_retry<T, F, Fut>(mut f: F) -> weir_core::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = weir_core::Result<T>>,
{
    let mut tries = 0u64;
    loop {
        match f().await {
            Err(e) if tries < 3 && retryable(&e) => {
                tries += 1;
                tracing::debug!(error = %e, tries, "transaction conflict; running it again");
                tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(
                    1..=10 * tries,
                )))
                .await;
            }
            r => return r,
        }
    }
}
