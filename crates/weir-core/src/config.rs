//! Queue configuration and engine-wide limits.

use crate::job::Backoff;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// How jobs of equal (effective) priority are ordered within a queue.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Oldest first.
    #[default]
    Fifo,
    /// Lowest `cost` first, then oldest.
    SmallestCost,
}

impl Order {
    /// The name the API and the configuration file use.
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Fifo => "fifo",
            Order::SmallestCost => "smallest_cost",
        }
    }
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long finished jobs are kept. Aggregates outlive the jobs they count.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Retention {
    /// Completed jobs older than this (since they finished) are deleted; 0 deletes a job as
    /// it is acknowledged.
    pub completed_ms: u64,
    /// At most this many completed jobs are kept per queue; the oldest go first. 0 deletes a
    /// job as it is acknowledged (like BullMQ's `removeOnComplete`).
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

/// A rate limit (GCRA): on average `limit` jobs per `period_ms`, with up to `burst` at once.
/// In any window of one period a queue hands out at most `limit + burst` jobs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Jobs per period (at least 1).
    pub limit: u32,
    /// The period, ms (at least 1).
    pub period_ms: u64,
    /// Jobs that may start at once after a quiet spell (at least 1).
    pub burst: u32,
}

/// A circuit breaker: stops handing out a queue's jobs while its downstream is failing, so no
/// attempts are burned, then probes before closing again.
///
/// It opens when any enabled trigger fires: a failure rate of at least `failure_rate` over
/// the calls finished in the last `window_ms` (once there are `min_calls` of them),
/// `consecutive_failures` failures in a row, or the same rate counting calls slower than
/// `slow_call_ms` as failures. After `cooldown_ms` it is half open: `half_open_probes` jobs are
/// handed out; if they all succeed it closes, and any failure opens it again.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerConfig {
    /// Failure ratio (0–1] that opens the breaker; 0 disables the rate trigger.
    pub failure_rate: f64,
    /// Sliding window of the rate trigger, ms.
    pub window_ms: u64,
    /// Calls in the window before the rate trigger may fire.
    pub min_calls: u32,
    /// Failures in a row that open the breaker; 0 disables this trigger.
    pub consecutive_failures: u32,
    /// A completed call slower than this counts as a failure for the rate trigger; 0 off.
    pub slow_call_ms: u64,
    /// How long the breaker stays open before probing, ms.
    pub cooldown_ms: u64,
    /// Jobs handed out while half open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_rate: 0.5,
            window_ms: 60_000,
            min_calls: 20,
            consecutive_failures: 0,
            slow_call_ms: 0,
            cooldown_ms: 30_000,
            half_open_probes: 3,
        }
    }
}

/// One queue's settings. Every field has a default; a queue that was never configured uses them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Most jobs of this queue active at once, across all workers; 0 is unlimited.
    pub concurrency: u32,
    /// Most jobs of one group (one `group` key) active at once. 1 (the default) makes
    /// groups ordered: one at a time, in enqueue order (messages of a conversation).
    /// Above 1 it is a per-key concurrency limit (at most 3 jobs per customer at once);
    /// jobs still start in enqueue order, but run in parallel.
    pub group_concurrency: u32,
    /// Rate limit across all workers.
    pub rate_limit: Option<RateLimit>,
    /// Rate limit per group key (per customer, per tenant), across all workers.
    pub group_rate_limit: Option<RateLimit>,
    /// Circuit breaker.
    pub breaker: Option<BreakerConfig>,
    /// Most unfinished jobs (scheduled, waiting, active, failed) the queue holds; further
    /// enqueues are refused with a retry hint (HTTP 429). 0 is unlimited.
    pub max_depth: u64,
    /// Share of a fetch over several queues: when any queue of a fetch has a weight, capacity
    /// is shared in proportion to weights (unweighted queues count as 1); otherwise queues
    /// are served in the order the fetch names them. 0 is unweighted.
    pub weight: u32,
    /// When the oldest waiting job has waited this long the queue is starving: it is
    /// reported (event, metric) and its weight is quadrupled until it recovers. 0 is off.
    pub starvation_ms: u64,
    /// The scaling advisor recommends enough workers to drain the backlog within this
    /// window while keeping up with arrivals, ms.
    pub drain_window_ms: u64,
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
            concurrency: 0,
            group_concurrency: 1,
            rate_limit: None,
            group_rate_limit: None,
            breaker: None,
            max_depth: 0,
            weight: 0,
            starvation_ms: 0,
            drain_window_ms: 60_000,
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
        if self.group_concurrency == 0 || self.group_concurrency > 100_000 {
            return Err(Error::invalid(
                "group_concurrency",
                format!("must be 1..=100000, got {}", self.group_concurrency),
            ));
        }
        for rl in self.rate_limit.iter().chain(self.group_rate_limit.iter()) {
            if rl.limit == 0 || rl.period_ms == 0 || rl.burst == 0 {
                return Err(Error::invalid(
                    "rate_limit",
                    "limit, period_ms and burst must each be at least 1",
                ));
            }
            if rl.period_ms > limits.max_duration_ms {
                return Err(Error::invalid(
                    "rate_limit",
                    "period longer than the maximum duration",
                ));
            }
        }
        if let Some(b) = &self.breaker {
            if !(0.0..=1.0).contains(&b.failure_rate) || b.failure_rate.is_nan() {
                return Err(Error::invalid(
                    "breaker",
                    "failure_rate must be within 0..=1",
                ));
            }
            if b.failure_rate == 0.0 && b.consecutive_failures == 0 {
                return Err(Error::invalid(
                    "breaker",
                    "enable failure_rate or consecutive_failures (or remove the breaker)",
                ));
            }
            if b.window_ms == 0 || b.cooldown_ms == 0 || b.half_open_probes == 0 {
                return Err(Error::invalid(
                    "breaker",
                    "window_ms, cooldown_ms and half_open_probes must each be at least 1",
                ));
            }
            if b.window_ms.max(b.cooldown_ms).max(b.slow_call_ms) > limits.max_duration_ms {
                return Err(Error::invalid(
                    "breaker",
                    "longer than the maximum duration",
                ));
            }
        }
        if self.starvation_ms > limits.max_duration_ms
            || self.drain_window_ms > limits.max_duration_ms
        {
            return Err(Error::invalid(
                "starvation_ms",
                "longer than the maximum duration",
            ));
        }
        if self.drain_window_ms == 0 {
            return Err(Error::invalid("drain_window_ms", "must be at least 1"));
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
    /// Memory budget for the jobs the engine holds (payloads plus a fixed estimate per
    /// job); an enqueue that would go past it is refused as overloaded (HTTP 429) until
    /// retention or completions make room. 0 is unlimited.
    pub max_memory_bytes: u64,
    /// Deepest nesting of arrays and objects in a payload, result or progress document
    /// (default 128, as serde_json's own parser allows). 0 is unlimited.
    pub max_payload_depth: usize,
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
            max_memory_bytes: 0,
            max_payload_depth: 128,
        }
    }
}

/// A change to a queue's configuration that a store applies atomically, over whatever the
/// configuration is at that moment (the HTTP API's `PUT /v1/queues/{q}` body implements it).
/// Reading the configuration, changing it and writing it back as two steps would let two
/// concurrent changes lose one of them.
pub trait ConfigPatch: std::fmt::Debug + Send + Sync {
    /// Applies the change to `config`; the store validates the result.
    fn apply_to(&self, config: &mut QueueConfig);
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

/// A [`ConfigPatch`] made of a function and a name to show for it (tests, tools, the
/// configuration file's start-up settings).
pub struct PatchFn<F> {
    name: &'static str,
    f: F,
}

impl<F: Fn(&mut QueueConfig) + Send + Sync> PatchFn<F> {
    /// A patch that runs `f`, shown as `name`.
    pub fn new(name: &'static str, f: F) -> Self {
        PatchFn { name, f }
    }
}

impl<F> std::fmt::Debug for PatchFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PatchFn({})", self.name)
    }
}

impl<F: Fn(&mut QueueConfig) + Send + Sync> ConfigPatch for PatchFn<F> {
    fn apply_to(&self, config: &mut QueueConfig) {
        (self.f)(config);
    }
}
