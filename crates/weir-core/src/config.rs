//! Queue configuration and engine-wide limits.

use crate::job::Backoff;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// How jobs of equal (effective) priority are ordered within a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Oldest first.
    #[default]
    Fifo,
    /// Lowest `cost` first, then oldest.
    SmallestCost,
}

/// How long finished jobs are kept. Aggregates outlive the jobs they count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Retention {
    /// Completed jobs older than this (since they finished) are deleted.
    pub completed_ms: u64,
    /// At most this many completed jobs are kept per queue; the oldest go first.
    pub completed_max: u64,
    /// Dead and cancelled jobs older than this are deleted.
    pub dead_ms: u64,
    /// At most this many dead and cancelled jobs are kept per queue.
    pub dead_max: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            completed_ms: 86_400_000,
            completed_max: 100_000,
            dead_ms: 14 * 86_400_000,
            dead_max: 100_000,
        }
    }
}

/// One queue's settings. Every field has a default; a queue that was never configured uses them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueConfig {
    /// Order among jobs of equal effective priority.
    pub order: Order,
    /// Aging: a waiting job's effective priority rises by one for every `aging_ms` boundary
    /// of the clock that passes while it waits, so low-priority work cannot starve.
    /// 0 turns aging off.
    pub aging_ms: u64,
    /// Default attempts for jobs that do not say.
    pub max_attempts: u32,
    /// Default lease length for jobs that do not say.
    pub timeout_ms: u64,
    /// Default retry backoff for jobs that do not say.
    pub backoff: Backoff,
    /// Retention of finished jobs.
    pub retention: Retention,
    /// A paused queue keeps accepting jobs but hands none out.
    pub paused: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            order: Order::Fifo,
            aging_ms: 60_000,
            max_attempts: 25,
            timeout_ms: 30_000,
            backoff: Backoff::default(),
            retention: Retention::default(),
            paused: false,
        }
    }
}

impl QueueConfig {
    /// Checks every field's range.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        check_attempts(self.max_attempts, limits)?;
        check_timeout(self.timeout_ms, limits)?;
        check_backoff(&self.backoff, limits)?;
        if self.aging_ms > limits.max_duration_ms {
            return Err(Error::invalid(
                "aging_ms",
                "longer than the maximum duration",
            ));
        }
        let r = &self.retention;
        if r.completed_ms > limits.max_duration_ms || r.dead_ms > limits.max_duration_ms {
            return Err(Error::invalid(
                "retention",
                "longer than the maximum duration",
            ));
        }
        Ok(())
    }
}

/// Engine-wide bounds on what a request may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest payload, result or progress document, in bytes (default 1 MiB).
    pub max_payload_bytes: usize,
    /// Most jobs in one enqueue, fetch, ack or fail batch.
    pub max_batch: usize,
    /// Longest delay, timeout, backoff, window or retention, in ms (default 10 years).
    pub max_duration_ms: u64,
    /// Most attempts a job may be given.
    pub max_attempts: u32,
    /// Longest unique key, group key, tag or error message kept, in bytes.
    pub max_key_bytes: usize,
    /// Most tags on one job.
    pub max_tags: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1 << 20,
            max_batch: 10_000,
            max_duration_ms: 10 * 365 * 86_400_000,
            max_attempts: 10_000,
            max_key_bytes: 512,
            max_tags: 32,
        }
    }
}

pub(crate) fn check_attempts(n: u32, limits: &Limits) -> Result<()> {
    if n == 0 || n > limits.max_attempts {
        return Err(Error::invalid(
            "max_attempts",
            format!("must be 1..={}, got {n}", limits.max_attempts),
        ));
    }
    Ok(())
}

pub(crate) fn check_timeout(ms: u64, limits: &Limits) -> Result<()> {
    if ms == 0 || ms > limits.max_duration_ms {
        return Err(Error::invalid(
            "timeout_ms",
            format!("must be 1..={} ms, got {ms}", limits.max_duration_ms),
        ));
    }
    Ok(())
}

pub(crate) fn check_backoff(b: &Backoff, limits: &Limits) -> Result<()> {
    if b.base_ms == 0 || b.cap_ms < b.base_ms || b.cap_ms > limits.max_duration_ms {
        return Err(Error::invalid(
            "backoff",
            format!(
                "need 1 <= base_ms <= cap_ms <= {}, got base {} cap {}",
                limits.max_duration_ms, b.base_ms, b.cap_ms
            ),
        ));
    }
    Ok(())
}

/// Checks a queue name: 1–128 characters of `A-Z a-z 0-9 _ - . :`.
pub fn check_queue_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 {
        return Err(Error::invalid("queue", "must be 1 to 128 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return Err(Error::invalid(
            "queue",
            format!("{name:?} may only hold A-Z a-z 0-9 _ - . :"),
        ));
    }
    Ok(())
}
