//! The job: its id, its states, what a client submits, and what a client reads back.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// A job's id: unique within one store, increasing with enqueue order, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a job is in its life. The machine is drawn in `docs/state_machine.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum JobState {
    /// Enqueued with a `run_at` in the future. Enters on enqueue with a delay; leaves for
    /// `Waiting` when `run_at` passes, or for `Cancelled`.
    Scheduled = 0,
    /// Ready to run. Enters on enqueue, when a delay or backoff passes, when a lease expires
    /// with attempts left, or on retry; leaves for `Active` when fetched (for an ordered group,
    /// only the group's oldest unfinished job can be fetched), or for `Cancelled`.
    Waiting = 1,
    /// Leased to one worker until its deadline. Enters on fetch; leaves for `Completed` on
    /// ack, for `Failed` or `Dead` on fail, for `Waiting` or `Dead` when the lease expires,
    /// or for `Cancelled`.
    Active = 2,
    /// Done, with its result. Terminal; deleted by retention.
    Completed = 3,
    /// Failed an attempt and will retry after its backoff. Enters on a retryable fail with
    /// attempts left; leaves for `Waiting` when the backoff passes (or on retry), or for
    /// `Cancelled`.
    Failed = 4,
    /// Failed with no attempts left, or with a non-retryable error. Terminal until an explicit
    /// retry, which returns it to `Waiting` with fresh attempts; deleted by retention.
    Dead = 5,
    /// Cancelled by a client. Terminal until an explicit retry; deleted by retention.
    Cancelled = 6,
}

impl JobState {
    /// Every state, in declaration order.
    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Waiting,
        JobState::Active,
        JobState::Completed,
        JobState::Failed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The state's name, lower case, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Waiting => "waiting",
            JobState::Active => "active",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Parses a state name as [`JobState::as_str`] prints it.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True for `Completed`, `Dead` and `Cancelled`: nothing will run the job again on its own.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        )
    }

    /// Decodes the `repr(u8)` form used in stored records.
    pub fn from_u8(v: u8) -> Option<JobState> {
        JobState::ALL.get(v as usize).copied()
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Exponential backoff with full jitter: before attempt `n + 1` the job waits a uniformly
/// random time in `[0, min(cap_ms, base_ms * 2^(n-1))]`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay scale of the first retry, in ms.
    pub base_ms: u64,
    /// Upper bound of any delay, in ms.
    pub cap_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base_ms: 1_000,
            cap_ms: 3_600_000,
        }
    }
}

impl Backoff {
    /// The upper bound of the delay after failed attempt `attempt` (1-based).
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(62);
        self.base_ms.saturating_mul(1u64 << shift).min(self.cap_ms)
    }
}

/// A job's payload: a JSON document, kept as its text.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload(Box<str>);

impl Payload {
    /// Wraps already-validated JSON (for example a field the HTTP layer parsed).
    pub fn from_raw(raw: Box<RawValue>) -> Self {
        Payload(raw.into())
    }

    /// Serializes a value as the payload.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> crate::Result<Self> {
        serde_json::to_string(value)
            .map(|s| Payload(s.into_boxed_str()))
            .map_err(|e| crate::Error::invalid("payload", e.to_string()))
    }

    /// Parses JSON text, refusing anything that is not one JSON document.
    pub fn parse(text: &str) -> crate::Result<Self> {
        let raw: Box<RawValue> = serde_json::from_str(text)
            .map_err(|e| crate::Error::invalid("payload", format!("not JSON: {e}")))?;
        Ok(Payload::from_raw(raw))
    }

    /// Rebuilds a payload from stored text that was validated when it was first accepted.
    pub fn from_stored(text: Box<str>) -> Self {
        Payload(text)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The size in bytes of the JSON text.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty text (never the case for a valid payload).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the payload into a value.
    pub fn to_value<T: for<'de> Deserialize<'de>>(&self) -> serde_json::Result<T> {
        serde_json::from_str(&self.0)
    }

    pub(crate) fn into_inner(self) -> Box<str> {
        self.0
    }
}

/// Whether JSON text `json` (already known to be valid) nests arrays and objects more than
/// `max` levels deep. One pass over the bytes, stopping at the first level too deep.
pub fn nesting_exceeds(json: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&RawValue>(&self.0) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_str(&self.0),
        }
    }
}

/// What a client submits to enqueue one job. Only `queue`, `kind` and `payload` are required;
/// the rest default from the queue's configuration.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Queue name: 1–128 characters of `A-Z a-z 0-9 _ - . :`.
    pub queue: String,
    /// What the job does; workers dispatch on it. 1–128 characters.
    pub kind: String,
    /// The job's input.
    pub payload: Payload,
    /// Higher runs first; default 0.
    pub priority: i32,
    /// A size hint (for example resource changes in a plan); `smallest_cost` queues run the
    /// cheapest first.
    pub cost: u64,
    /// Run no earlier than this many ms from now.
    pub delay_ms: Option<u64>,
    /// Run no earlier than this time (ms since the epoch). Exclusive with `delay_ms`.
    pub run_at_ms: Option<u64>,
    /// Attempts before the job is dead; default from the queue (25).
    pub max_attempts: Option<u32>,
    /// Retry backoff; default from the queue.
    pub backoff: Option<Backoff>,
    /// Lease length in ms; default from the queue (30 s).
    pub timeout_ms: Option<u64>,
    /// While a job with this key lives in the same queue, enqueueing another returns its id.
    pub unique_key: Option<String>,
    /// With a unique key: keep deduplicating for this long after enqueue, even once the first
    /// job has finished.
    pub unique_window_ms: Option<u64>,
    /// Jobs of one group run one at a time, in enqueue order.
    pub group: Option<String>,
    /// Free-form labels.
    pub tags: Vec<String>,
}

impl NewJob {
    /// A job with defaults for everything but queue, kind and payload.
    pub fn new(queue: impl Into<String>, kind: impl Into<String>, payload: Payload) -> Self {
        NewJob {
            queue: queue.into(),
            kind: kind.into(),
            payload,
            priority: 0,
            cost: 0,
            delay_ms: None,
            run_at_ms: None,
            max_attempts: None,
            backoff: None,
            timeout_ms: None,
            unique_key: None,
            unique_window_ms: None,
            group: None,
            tags: Vec::new(),
        }
    }
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// The attempt that failed (1-based).
    pub attempt: u32,
    /// When it failed, ms since the epoch.
    pub at_ms: u64,
    /// What the worker (or Weir, for an expired lease) said.
    pub message: String,
}

/// A job as a client reads it back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// The id.
    pub id: JobId,
    /// The queue.
    pub queue: String,
    /// The kind.
    pub kind: String,
    /// The payload.
    pub payload: Payload,
    /// The state.
    pub state: JobState,
    /// The priority given at enqueue.
    pub priority: i32,
    /// The cost hint.
    pub cost: u64,
    /// Attempts started so far.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Retry backoff.
    pub backoff: Backoff,
    /// Lease length.
    pub timeout_ms: u64,
    /// When it was enqueued.
    pub created_at_ms: u64,
    /// When it is due (scheduled or failed) or became ready (waiting).
    pub run_at_ms: u64,
    /// When its current or last attempt started.
    pub started_at_ms: Option<u64>,
    /// When it reached a terminal state.
    pub finished_at_ms: Option<u64>,
    /// While active: when its lease ends.
    pub lease_deadline_ms: Option<u64>,
    /// Unique key, if any.
    pub unique_key: Option<String>,
    /// Ordered group, if any.
    pub group: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Last progress a heartbeat reported (JSON).
    pub progress: Option<Payload>,
    /// The result its ack carried (JSON).
    pub result: Option<Payload>,
    /// Every failed attempt, oldest first (the last 32 are kept).
    pub errors: Vec<AttemptError>,
}

/// A job handed to a worker under a lease.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FetchedJob {
    /// The id.
    pub id: JobId,
    /// The queue.
    pub queue: String,
    /// The kind.
    pub kind: String,
    /// The payload.
    pub payload: Payload,
    /// This attempt's number (1-based).
    pub attempt: u32,
    /// The lease to quote in heartbeat, ack and fail.
    pub lease_id: u64,
    /// When the lease ends unless a heartbeat extends it.
    pub lease_deadline_ms: u64,
}

/// A worker's acknowledgement of one job.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The job.
    pub id: JobId,
    /// The lease it was fetched under.
    pub lease_id: u64,
    /// Its result, if any.
    pub result: Option<Payload>,
}

impl Ack {
    /// An ack without a result of a job as it was fetched: `got.iter().map(Ack::of)`.
    pub fn of(job: &FetchedJob) -> Ack {
        Ack {
            id: job.id,
            lease_id: job.lease_id,
            result: None,
        }
    }
}

/// A worker's report that one attempt failed.
#[derive(Debug, Clone)]
pub struct Fail {
    /// The job.
    pub id: JobId,
    /// The lease it was fetched under.
    pub lease_id: u64,
    /// What went wrong.
    pub error: String,
    /// `false` makes the job dead at once, whatever attempts are left.
    pub retry: bool,
}

/// The outcome of a batch of acks or fails: how many applied, and why each other was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchOutcome {
    /// How many were applied.
    pub applied: usize,
    /// The refused ones, each with its reason; they changed nothing.
    pub rejected: Vec<Rejection>,
}

/// One refused item of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The job.
    pub id: JobId,
    /// Stable reason (an [`crate::Error::kind`]).
    pub reason: &'static str,
    /// Human message.
    pub message: String,
}
