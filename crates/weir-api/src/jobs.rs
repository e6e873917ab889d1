//! Job bodies: enqueue, fetch, ack, fail, heartbeat, and how a job reads back.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;
use weir_core::{Ack, Backoff, Fail, FetchedJob, Job, JobId, NewJob, Payload, Rejection};

/// `POST /v1/jobs`: enqueue a batch, atomically (one bad job refuses the whole batch).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// The jobs, in order.
    pub jobs: Vec<NewJobBody>,
}

/// One job to enqueue. Only `queue`, `kind` and `payload` are required.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewJobBody {
    /// Queue name: 1–128 characters of `A-Z a-z 0-9 _ - . :`.
    pub queue: String,
    /// What the job does; workers dispatch on it.
    pub kind: String,
    /// The job's input: any JSON document.
    #[schema(value_type = serde_json::Value)]
    pub payload: Box<RawValue>,
    /// Higher runs first (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Size hint; `smallest_cost` queues run the cheapest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<u64>,
    /// Run no earlier than this many ms from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Run no earlier than this time, ms since the Unix epoch. Exclusive with `delay_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<u64>,
    /// Attempts before the job is dead (default from the queue, 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Retry backoff (default from the queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffBody>,
    /// Lease length in ms (default from the queue, 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// While a job with this key lives in the queue, enqueueing another returns its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// With `unique_key`: keep deduplicating this long after enqueue, even once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_window_ms: Option<u64>,
    /// Jobs of one group run one at a time, in enqueue order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl NewJobBody {
    /// A job with defaults for everything but queue, kind and payload.
    pub fn new(queue: impl Into<String>, kind: impl Into<String>, payload: Box<RawValue>) -> Self {
        NewJobBody {
            queue: queue.into(),
            kind: kind.into(),
            payload,
            priority: None,
            cost: None,
            delay_ms: None,
            run_at: None,
            max_attempts: None,
            backoff: None,
            timeout_ms: None,
            unique_key: None,
            unique_window_ms: None,
            group: None,
            tags: Vec::new(),
        }
    }

    /// The engine's form; the engine checks every field's range.
    pub fn into_new_job(self) -> NewJob {
        NewJob {
            queue: self.queue,
            kind: self.kind,
            payload: Payload::from_raw(self.payload),
            priority: self.priority.unwrap_or(0),
            cost: self.cost.unwrap_or(0),
            delay_ms: self.delay_ms,
            run_at_ms: self.run_at,
            max_attempts: self.max_attempts,
            backoff: self.backoff.map(|b| Backoff {
                base_ms: b.base_ms,
                cap_ms: b.cap_ms,
            }),
            timeout_ms: self.timeout_ms,
            unique_key: self.unique_key,
            unique_window_ms: self.unique_window_ms,
            group: self.group,
            tags: self.tags,
        }
    }
}

/// Exponential backoff with full jitter: before retry `n` the job waits a random time in
/// `[0, min(cap_ms, base_ms * 2^(n-1))]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffBody {
    /// Delay scale of the first retry, ms.
    pub base_ms: u64,
    /// Upper bound of any delay, ms.
    pub cap_ms: u64,
}

impl From<Backoff> for BackoffBody {
    fn from(b: Backoff) -> Self {
        BackoffBody {
            base_ms: b.base_ms,
            cap_ms: b.cap_ms,
        }
    }
}

/// Reply to `POST /v1/jobs`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnqueueReply {
    /// One id per job, in order (the existing job's id for a live unique key).
    pub ids: Vec<u64>,
}

/// `POST /v1/fetch`: lease ready jobs, waiting up to `wait_ms` for one to arrive.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// Queues to take from, earlier ones first.
    pub queues: Vec<String>,
    /// Most jobs to return (default 1).
    #[serde(default = "one")]
    pub max: usize,
    /// Long poll: wait up to this long for work when none is ready (default 0).
    #[serde(default)]
    pub wait_ms: u64,
    /// The worker's name, for logs.
    #[serde(default)]
    pub worker: String,
}

fn one() -> usize {
    1
}

/// Reply to `POST /v1/fetch`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FetchReply {
    /// The leased jobs; empty when none arrived within `wait_ms`.
    pub jobs: Vec<FetchedJobView>,
    /// When nothing was handed out because a rate limit or an open breaker holds ready work
    /// back: in how many ms the next job may be handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token_in_ms: Option<u64>,
}

/// A job leased to a worker.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FetchedJobView {
    /// The job's id.
    pub id: u64,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// Its payload.
    #[schema(value_type = serde_json::Value)]
    pub payload: Box<RawValue>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The lease to quote in heartbeat, ack and fail.
    pub lease_id: u64,
    /// When the lease ends unless a heartbeat extends it, ms since the epoch.
    pub lease_deadline_ms: u64,
}

impl From<FetchedJob> for FetchedJobView {
    fn from(j: FetchedJob) -> Self {
        FetchedJobView {
            id: j.id.0,
            queue: j.queue,
            kind: j.kind,
            payload: raw(j.payload),
            attempt: j.attempt,
            lease_id: j.lease_id,
            lease_deadline_ms: j.lease_deadline_ms,
        }
    }
}

/// A stored JSON document as a raw value. Stored documents were validated when accepted;
/// should one not parse (a corrupted store), it is handed back as a JSON string.
pub fn raw(p: Payload) -> Box<RawValue> {
    let text = p.as_str();
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| {
        let quoted = serde_json::Value::String(text.to_owned()).to_string();
        RawValue::from_string(quoted).unwrap_or_default()
    })
}

/// `POST /v1/ack`: complete jobs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// The acks.
    pub acks: Vec<AckItem>,
}

/// One ack.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckItem {
    /// The job.
    pub id: u64,
    /// The lease it was fetched under.
    pub lease_id: u64,
    /// Its result, any JSON document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub result: Option<Box<RawValue>>,
}

impl AckItem {
    /// An ack without a result of a job as it was fetched: `got.iter().map(AckItem::of)`.
    pub fn of(job: &FetchedJobView) -> AckItem {
        AckItem {
            id: job.id,
            lease_id: job.lease_id,
            result: None,
        }
    }
}

impl From<AckItem> for Ack {
    fn from(a: AckItem) -> Self {
        Ack {
            id: JobId(a.id),
            lease_id: a.lease_id,
            result: a.result.map(Payload::from_raw),
        }
    }
}

/// `POST /v1/fail`: report failed attempts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// The fails.
    pub fails: Vec<FailItem>,
}

/// One failed attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailItem {
    /// The job.
    pub id: u64,
    /// The lease it was fetched under.
    pub lease_id: u64,
    /// What went wrong.
    pub error: String,
    /// `false` makes the job dead at once; default `true` (retry with backoff while
    /// attempts are left).
    #[serde(default = "yes")]
    pub retry: bool,
}

fn yes() -> bool {
    true
}

impl From<FailItem> for Fail {
    fn from(f: FailItem) -> Self {
        Fail {
            id: JobId(f.id),
            lease_id: f.lease_id,
            error: f.error,
            retry: f.retry,
        }
    }
}

/// Reply to `POST /v1/ack` and `POST /v1/fail` (one shape for both).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchReply {
    /// How many acks (or fails) were applied. A fail reply carries it too, equal to
    /// `failed`, for clients written before `failed` existed.
    pub acked: usize,
    /// In a reply to `POST /v1/fail`: how many fails were applied (absent from ack replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<usize>,
    /// The refused ones; each changed nothing.
    pub rejected: Vec<RejectionView>,
}

/// One refused item of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RejectionView {
    /// The job.
    pub id: u64,
    /// Stable reason: `job-not-found`, `lease-mismatch`, `lease-expired`, `invalid-input`.
    pub reason: String,
    /// Human message.
    pub message: String,
}

impl From<Rejection> for RejectionView {
    fn from(r: Rejection) -> Self {
        RejectionView {
            id: r.id.0,
            reason: r.reason.to_string(),
            message: r.message,
        }
    }
}

/// `POST /v1/jobs/{id}/heartbeat`: extend a lease.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The lease the job was fetched under.
    pub lease_id: u64,
    /// Progress to record, any JSON document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub progress: Option<Box<RawValue>>,
}

/// `POST /v1/jobs/{id}/release`: give a lease back without counting the attempt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The lease the job was fetched under.
    pub lease_id: u64,
}

/// Reply to a heartbeat.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatReply {
    /// The lease's new deadline, ms since the epoch.
    pub lease_deadline_ms: u64,
}

/// One failed attempt, as a job reads back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptErrorView {
    /// The attempt (from 1).
    pub attempt: u32,
    /// When it failed, ms since the epoch.
    pub at_ms: u64,
    /// What the worker (or Weir, for an expired lease) said.
    pub message: String,
}

/// A job as a client reads it back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// The id.
    pub id: u64,
    /// The queue.
    pub queue: String,
    /// The kind.
    pub kind: String,
    /// The payload.
    #[schema(value_type = serde_json::Value)]
    pub payload: Box<RawValue>,
    /// `scheduled`, `waiting`, `active`, `completed`, `failed`, `dead` or `cancelled`.
    pub state: String,
    /// Priority.
    pub priority: i32,
    /// Cost hint.
    pub cost: u64,
    /// Attempts started so far.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Retry backoff.
    pub backoff: BackoffBody,
    /// Lease length, ms.
    pub timeout_ms: u64,
    /// When it was enqueued, ms since the epoch.
    pub created_at_ms: u64,
    /// When it is due (scheduled, failed) or became ready (waiting).
    pub run_at_ms: u64,
    /// When its current or last attempt started.
    pub started_at_ms: Option<u64>,
    /// When it finished.
    pub finished_at_ms: Option<u64>,
    /// While active: when its lease ends.
    pub lease_deadline_ms: Option<u64>,
    /// Unique key.
    pub unique_key: Option<String>,
    /// Ordered group.
    pub group: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Last progress a heartbeat reported.
    #[schema(value_type = Option<serde_json::Value>)]
    pub progress: Option<Box<RawValue>>,
    /// The result its ack carried.
    #[schema(value_type = Option<serde_json::Value>)]
    pub result: Option<Box<RawValue>>,
    /// Failed attempts, oldest first (the last 32).
    pub errors: Vec<AttemptErrorView>,
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        JobView {
            id: j.id.0,
            queue: j.queue,
            kind: j.kind,
            payload: raw(j.payload),
            state: j.state.as_str().to_string(),
            priority: j.priority,
            cost: j.cost,
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            backoff: j.backoff.into(),
            timeout_ms: j.timeout_ms,
            created_at_ms: j.created_at_ms,
            run_at_ms: j.run_at_ms,
            started_at_ms: j.started_at_ms,
            finished_at_ms: j.finished_at_ms,
            lease_deadline_ms: j.lease_deadline_ms,
            unique_key: j.unique_key,
            group: j.group,
            tags: j.tags,
            progress: j.progress.map(raw),
            result: j.result.map(raw),
            errors: j
                .errors
                .into_iter()
                .map(|e| AttemptErrorView {
                    attempt: e.attempt,
                    at_ms: e.at_ms,
                    message: e.message,
                })
                .collect(),
        }
    }
}

/// Reply to `GET /v1/jobs`: a page of jobs in id order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobPageView {
    /// The jobs.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<u64>,
}
