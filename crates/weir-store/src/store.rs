//! The storage trait every backend implements. Internal to Weir: the server and the SDK talk
//! to it, users talk to the server.
//!
//! Operations are noun-first (`job_fetch`, `queue_config_set`) and take one params struct
//! each, so adding a field never changes a signature. Every backend keeps the job semantics
//! of `DESIGN.md`, checked by the suite in [`crate::conformance`].

use async_trait::async_trait;
use std::sync::Arc;
use weir_core::{
    Ack, AggregateRecord, BatchOutcome, Clock, ConfigPatch, Fail, FetchedJob, Job, JobFilter,
    JobId, JobPage, NewJob, Payload, QueueConfig, QueueStats, Result,
};

/// Enqueue a batch of jobs (atomic: all or none).
#[derive(Debug, Clone, Default)]
pub struct JobInsertManyParams {
    /// The jobs.
    pub jobs: Vec<NewJob>,
}

/// Lease ready jobs.
#[derive(Debug, Clone, Default)]
pub struct JobFetchParams {
    /// Queues to take from, earlier ones first.
    pub queues: Vec<String>,
    /// Most jobs to return.
    pub max: usize,
    /// When nothing is ready, wait up to this long for work (long poll). 0 returns at once.
    pub wait_ms: u64,
    /// The worker's name, for logs and metrics.
    pub worker: String,
}

/// Extend a lease.
#[derive(Debug, Clone)]
pub struct JobHeartbeatParams {
    /// The job.
    pub id: JobId,
    /// Its lease.
    pub lease_id: u64,
    /// Progress to record.
    pub progress: Option<Payload>,
}

/// Acknowledge jobs.
#[derive(Debug, Clone, Default)]
pub struct JobAckManyParams {
    /// The acks.
    pub acks: Vec<Ack>,
}

/// Fail attempts.
#[derive(Debug, Clone, Default)]
pub struct JobFailManyParams {
    /// The fails.
    pub fails: Vec<Fail>,
}

/// Give a lease back without counting the attempt.
#[derive(Debug, Clone, Copy)]
pub struct JobReleaseParams {
    /// The job.
    pub id: JobId,
    /// Its live lease.
    pub lease_id: u64,
}

/// Cancel one job.
#[derive(Debug, Clone, Copy)]
pub struct JobCancelParams {
    /// The job.
    pub id: JobId,
}

/// Retry one job now.
#[derive(Debug, Clone, Copy)]
pub struct JobRetryParams {
    /// The job.
    pub id: JobId,
}

/// Delete one job.
#[derive(Debug, Clone, Copy)]
pub struct JobDeleteParams {
    /// The job.
    pub id: JobId,
}

/// Set a queue's configuration.
#[derive(Debug, Clone)]
pub struct QueueConfigSetParams {
    /// The queue (created if new).
    pub name: String,
    /// Its whole configuration.
    pub config: QueueConfig,
}

/// Change a queue's configuration atomically: `patch` is applied over the configuration as it
/// is when the store applies it, so concurrent updates never lose each other's keys.
#[derive(Debug, Clone)]
pub struct QueueConfigUpdateParams {
    /// The queue (created if new, over the defaults).
    pub name: String,
    /// The change.
    pub patch: Arc<dyn ConfigPatch>,
}

/// Delete a queue's jobs that have not started.
#[derive(Debug, Clone)]
pub struct QueuePurgeParams {
    /// The queue.
    pub name: String,
}

/// Delete a queue.
#[derive(Debug, Clone)]
pub struct QueueDeleteParams {
    /// The queue.
    pub name: String,
}

/// Read hourly aggregates.
#[derive(Debug, Clone, Default)]
pub struct AggregateListParams {
    /// One queue, or all.
    pub queue: Option<String>,
    /// Hours starting at or after this time.
    pub from_ms: u64,
    /// Hours starting before this time.
    pub to_ms: u64,
}

/// A cron entry as a store keeps it: the definition as the API took it (JSON text, which the
/// server parses and checks; the store does not read it) and the last tick enqueued.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CronRecord {
    /// The entry's name.
    pub name: String,
    /// The definition (schedule, time zone, job, missed-tick policy), as JSON.
    pub spec: String,
    /// The last tick handled (enqueued, or skipped by the missed-tick policy), ms since the
    /// epoch; ticks up to it are never enqueued again.
    pub last_tick_ms: u64,
    /// When the definition was last set, ms since the epoch.
    pub updated_at_ms: u64,
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Finished jobs deleted by retention.
    pub deleted: usize,
}

/// A job store. See the module docs.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Enqueues jobs; durable before it returns. Returns one id per job (the existing id for
    /// a live unique key).
    async fn job_insert_many(&self, p: JobInsertManyParams) -> Result<Vec<JobId>>;
    /// Leases up to `max` ready jobs, waiting up to `wait_ms` for one to arrive.
    async fn job_fetch(&self, p: JobFetchParams) -> Result<Vec<FetchedJob>>;
    /// When one of `queues`, holding ready work that a rate limit or breaker keeps back, may
    /// next hand out a job (ms since the epoch), for a fetcher that got nothing.
    async fn job_fetch_next_token(&self, queues: &[String]) -> Result<Option<u64>>;
    /// Extends a live lease; returns the new deadline.
    async fn job_heartbeat(&self, p: JobHeartbeatParams) -> Result<u64>;
    /// Completes jobs under live leases; durable before it returns.
    async fn job_ack_many(&self, p: JobAckManyParams) -> Result<BatchOutcome>;
    /// Fails attempts under live leases; durable before it returns.
    async fn job_fail_many(&self, p: JobFailManyParams) -> Result<BatchOutcome>;
    /// Returns an active job to waiting under its live lease, without counting the attempt;
    /// durable before it returns.
    async fn job_release(&self, p: JobReleaseParams) -> Result<()>;
    /// Cancels a job; durable before it returns.
    async fn job_cancel(&self, p: JobCancelParams) -> Result<()>;
    /// Retries a job now; durable before it returns.
    async fn job_retry(&self, p: JobRetryParams) -> Result<()>;
    /// Deletes a job that is not active (an unfinished one counts as cancelled: its group
    /// moves on, its unique key is free); durable before it returns. An active job is
    /// refused with [`weir_core::Error::InvalidState`].
    async fn job_delete(&self, p: JobDeleteParams) -> Result<()>;
    /// Reads one job.
    async fn job_get(&self, id: JobId) -> Result<Option<Job>>;
    /// Lists jobs.
    async fn job_list(&self, p: JobFilter) -> Result<JobPage>;
    /// Sets a queue's configuration; durable before it returns.
    async fn queue_config_set(&self, p: QueueConfigSetParams) -> Result<()>;
    /// Applies a patch to a queue's configuration in one atomic step and returns the result;
    /// durable before it returns. A result that does not validate changes nothing.
    async fn queue_config_update(&self, p: QueueConfigUpdateParams) -> Result<QueueConfig>;
    /// A known queue's configuration (`None` for a queue never seen), without the counts and
    /// statistics [`Store::queue_stats`] computes.
    async fn queue_config_get(&self, name: &str) -> Result<Option<QueueConfig>>;
    /// Deletes every waiting, scheduled and failed (awaiting retry) job of a queue; active
    /// jobs finish. Durable before it returns. Returns how many were deleted.
    async fn queue_purge(&self, p: QueuePurgeParams) -> Result<u64>;
    /// Deletes a queue: every job, its configuration, its rate and breaker state and its
    /// aggregates; durable before it returns. Refused with [`weir_core::Error::QueueBusy`]
    /// while any of its jobs is active, and [`weir_core::Error::QueueNotFound`] for an
    /// unknown queue. A later enqueue or configuration starts a new queue of that name.
    /// Returns how many jobs were deleted.
    async fn queue_delete(&self, p: QueueDeleteParams) -> Result<u64>;
    /// Names of the known queues.
    async fn queue_list(&self) -> Result<Vec<String>>;
    /// One queue's counts, oldest waiting age and configuration.
    async fn queue_stats(&self, name: &str) -> Result<Option<QueueStats>>;
    /// Creates or replaces a cron entry; durable before it returns. Replacing keeps the
    /// stored `last_tick_ms` (a changed schedule does not replay ticks already handled).
    /// Returns the entry as stored.
    async fn cron_put(&self, r: CronRecord) -> Result<CronRecord>;
    /// Deletes a cron entry; false if there was none. Durable before it returns.
    async fn cron_delete(&self, name: &str) -> Result<bool>;
    /// Every cron entry, by name.
    async fn cron_list(&self) -> Result<Vec<CronRecord>>;
    /// Moves entry `name`'s last tick from `from_ms` to `to_ms` if it is still `from_ms`
    /// (compare and set, across every server of a shared store); false if another server
    /// moved it first or the entry is gone. Durable before it returns.
    async fn cron_advance(&self, name: &str, from_ms: u64, to_ms: u64) -> Result<bool>;
    /// Hourly aggregates.
    async fn aggregate_list(&self, p: AggregateListParams) -> Result<Vec<AggregateRecord>>;
    /// Runs time-driven work now: promotes due jobs, reclaims expired leases, enforces
    /// retention. Backends also run it on their own schedule.
    async fn maintenance_run(&self) -> Result<MaintenanceReport>;
    /// Whether the store can serve requests: `Err` says why not (a failed write, a broken
    /// connection). What `/ready` reports.
    async fn health(&self) -> Result<()>;
    /// The clock this store reads.
    fn clock(&self) -> Arc<dyn Clock>;
    /// The group committer's counters, for metrics; `None` from a backend without one.
    fn commit_stats(&self) -> Option<CommitStats> {
        None
    }
}

/// Counters of a backend's group committer, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Batches written (each one journal write and, durable, one sync).
    pub commits: u64,
    /// Records written.
    pub records: u64,
    /// Records not written because they cancelled out: a job inserted and deleted within one
    /// batch (its spec, any status records and its tombstone).
    pub cancelled: u64,
}
