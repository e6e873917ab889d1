//! The shapes in which a store persists jobs, queues and aggregates.
//!
//! The engine defines *what* is persisted; each store chooses the encoding. A job is two
//! records: its [`SpecRecord`] (written once, at enqueue: everything the client submitted)
//! and its [`StatusRecord`] (rewritten on each durable state change; absent until the first
//! one). Splitting them keeps an ack from rewriting the payload. A lease grant and each
//! heartbeat rewrite the status too, without being waited for: a store writes them with
//! its next commit, so a restart finds the lease where it was and counts its attempt. Fields borrow from the engine
//! when writing and own their data when read back.

use crate::job::{AttemptError, Backoff};
use crate::QueueConfig;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// What a client submitted for a job, resolved against the queue's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecRecord<'a> {
    /// Queue name.
    pub queue: Cow<'a, str>,
    /// Kind.
    pub kind: Cow<'a, str>,
    /// Payload JSON text.
    pub payload: Cow<'a, str>,
    /// Priority.
    pub priority: i32,
    /// Cost hint.
    pub cost: u64,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Backoff, if the job set its own.
    pub backoff: Option<Backoff>,
    /// Lease length.
    pub timeout_ms: u64,
    /// Unique key.
    pub unique_key: Option<Cow<'a, str>>,
    /// With a unique key: deduplicate until this time even after the job finished (0: no window).
    pub unique_until: u64,
    /// Ordered group.
    pub group: Option<Cow<'a, str>>,
    /// Tags.
    pub tags: Vec<Cow<'a, str>>,
    /// Enqueue time.
    pub created_at: u64,
    /// First due time.
    pub run_at: u64,
}

/// A job's state after its latest durable change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord<'a> {
    /// [`crate::JobState`] as `u8`.
    pub state: u8,
    /// Attempts started.
    pub attempt: u32,
    /// Due or ready time.
    pub run_at: u64,
    /// Start of the last attempt (0: none).
    pub started_at: u64,
    /// Terminal time (0: not terminal).
    pub finished_at: u64,
    /// Ack result JSON.
    pub result: Option<Cow<'a, str>>,
    /// Last heartbeat progress JSON.
    pub progress: Option<Cow<'a, str>>,
    /// Failed attempts.
    pub errors: Cow<'a, [AttemptError]>,
    /// While `Active`: the live lease's id (0: none recorded, as in records written before
    /// leases were persisted; such a job is delivered again).
    #[serde(default)]
    pub lease_id: u64,
    /// While `Active`: the lease's deadline, ms.
    #[serde(default)]
    pub deadline: u64,
}

/// A queue's persisted configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueRecord {
    /// Queue name.
    pub name: String,
    /// Its configuration.
    pub config: QueueConfig,
}
