//! Queue bodies: how a queue reads back, and the patch `PUT /v1/queues/{q}` takes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use weir_core::{BreakerConfig, Order, QueueConfig, QueueStats, RateLimit, Retention};

use crate::BackoffBody;

/// A rate limit: `limit` jobs per `period_ms`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    /// Jobs per period; 0 in a `PUT` removes the limit.
    pub limit: u32,
    /// The period, ms (default 1000).
    #[serde(default = "second")]
    pub period_ms: u64,
    /// Jobs at once after a quiet spell (default: `limit`).
    #[serde(default)]
    pub burst: Option<u32>,
}

impl From<RateLimit> for RateLimitBody {
    fn from(r: RateLimit) -> Self {
        RateLimitBody {
            limit: r.limit,
            period_ms: r.period_ms,
            burst: Some(r.burst),
        }
    }
}

fn second() -> u64 {
    1000
}

impl RateLimitBody {
    /// The engine's form; `None` for a limit of 0 (removal).
    pub fn to_core(self) -> Option<RateLimit> {
        (self.limit > 0).then(|| RateLimit {
            limit: self.limit,
            period_ms: self.period_ms,
            burst: self.burst.unwrap_or(self.limit),
        })
    }
}

/// A circuit breaker; every key optional (defaults in brackets). `{"enabled": false}` in a
/// `PUT` removes it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerBody {
    /// `false` removes the breaker [true].
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// Failure ratio over the window that opens it; 0 disables the rate trigger [0.5].
    #[serde(default)]
    pub failure_rate: Option<f64>,
    /// Sliding window, ms [60000].
    #[serde(default)]
    pub window_ms: Option<u64>,
    /// Calls in the window before the rate may open it [20].
    #[serde(default)]
    pub min_calls: Option<u32>,
    /// Failures in a row that open it; 0 off [0].
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// Completed calls slower than this count as failures for the rate; 0 off [0].
    #[serde(default)]
    pub slow_call_ms: Option<u64>,
    /// Open time before probing, ms [30000].
    #[serde(default)]
    pub cooldown_ms: Option<u64>,
    /// Jobs handed out while half open [3].
    #[serde(default)]
    pub half_open_probes: Option<u32>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl BreakerBody {
    /// A patch that only switches the breaker on (with the current or default settings)
    /// or off.
    pub fn switch(enabled: bool) -> Self {
        BreakerBody {
            enabled,
            failure_rate: None,
            window_ms: None,
            min_calls: None,
            consecutive_failures: None,
            slow_call_ms: None,
            cooldown_ms: None,
            half_open_probes: None,
        }
    }

    /// Applies the named keys over `base` (the current breaker or the defaults).
    pub fn apply(&self, base: Option<BreakerConfig>) -> Option<BreakerConfig> {
        if !self.enabled {
            return None;
        }
        let mut b = base.unwrap_or_default();
        b.failure_rate = self.failure_rate.unwrap_or(b.failure_rate);
        b.window_ms = self.window_ms.unwrap_or(b.window_ms);
        b.min_calls = self.min_calls.unwrap_or(b.min_calls);
        b.consecutive_failures = self.consecutive_failures.unwrap_or(b.consecutive_failures);
        b.slow_call_ms = self.slow_call_ms.unwrap_or(b.slow_call_ms);
        b.cooldown_ms = self.cooldown_ms.unwrap_or(b.cooldown_ms);
        b.half_open_probes = self.half_open_probes.unwrap_or(b.half_open_probes);
        Some(b)
    }
}

impl From<BreakerConfig> for BreakerBody {
    fn from(b: BreakerConfig) -> Self {
        BreakerBody {
            enabled: true,
            failure_rate: Some(b.failure_rate),
            window_ms: Some(b.window_ms),
            min_calls: Some(b.min_calls),
            consecutive_failures: Some(b.consecutive_failures),
            slow_call_ms: Some(b.slow_call_ms),
            cooldown_ms: Some(b.cooldown_ms),
            half_open_probes: Some(b.half_open_probes),
        }
    }
}

/// `PUT /v1/queues/{q}`: changes only the keys it names; the queue is created if new.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfigPatch {
    /// `fifo` or `smallest_cost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub order: Option<Order>,
    /// Aging step, ms (0: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aging_ms: Option<u64>,
    /// Default attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Default lease length, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Default retry backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffBody>,
    /// Retention; only the keys named change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPatch>,
    /// Pause (true) or resume (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Most active jobs at once (0: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Most active jobs per group key (1: ordered groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_concurrency: Option<u32>,
    /// Rate limit (`{"limit": 0}` removes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitBody>,
    /// Rate limit per group key (`{"limit": 0}` removes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_rate_limit: Option<RateLimitBody>,
    /// Circuit breaker (`{"enabled": false}` removes it); only the keys named change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerBody>,
    /// Most unfinished jobs (0: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u64>,
    /// Share in a multi-queue fetch (0: unweighted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Starvation threshold, ms (0: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starvation_ms: Option<u64>,
    /// The scaling advisor's drain window, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_window_ms: Option<u64>,
}

/// Part of a retention policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionPatch {
    /// See [`Retention::completed_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_ms: Option<u64>,
    /// See [`Retention::completed_max`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_max: Option<u64>,
    /// See [`Retention::dead_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_ms: Option<u64>,
    /// See [`Retention::dead_max`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_max: Option<u64>,
}

impl weir_core::ConfigPatch for QueueConfigPatch {
    fn apply_to(&self, config: &mut QueueConfig) {
        self.apply(config);
    }
}

impl QueueConfigPatch {
    /// Applies the named keys to `config`. The engine validates the result.
    pub fn apply(&self, config: &mut QueueConfig) {
        if let Some(o) = self.order {
            config.order = o;
        }
        if let Some(v) = self.aging_ms {
            config.aging_ms = v;
        }
        if let Some(v) = self.max_attempts {
            config.max_attempts = v;
        }
        if let Some(v) = self.timeout_ms {
            config.timeout_ms = v;
        }
        if let Some(b) = self.backoff {
            config.backoff.base_ms = b.base_ms;
            config.backoff.cap_ms = b.cap_ms;
        }
        if let Some(r) = self.retention {
            let c: &mut Retention = &mut config.retention;
            c.completed_ms = r.completed_ms.unwrap_or(c.completed_ms);
            c.completed_max = r.completed_max.unwrap_or(c.completed_max);
            c.dead_ms = r.dead_ms.unwrap_or(c.dead_ms);
            c.dead_max = r.dead_max.unwrap_or(c.dead_max);
        }
        if let Some(p) = self.paused {
            config.paused = p;
        }
        if let Some(v) = self.concurrency {
            config.concurrency = v;
        }
        if let Some(v) = self.group_concurrency {
            config.group_concurrency = v;
        }
        if let Some(r) = self.rate_limit {
            config.rate_limit = r.to_core();
        }
        if let Some(r) = self.group_rate_limit {
            config.group_rate_limit = r.to_core();
        }
        if let Some(b) = &self.breaker {
            config.breaker = b.apply(config.breaker);
        }
        if let Some(v) = self.max_depth {
            config.max_depth = v;
        }
        if let Some(v) = self.weight {
            config.weight = v;
        }
        if let Some(v) = self.starvation_ms {
            config.starvation_ms = v;
        }
        if let Some(v) = self.drain_window_ms {
            config.drain_window_ms = v;
        }
    }
}

/// A queue: counts by state, oldest waiting age, latency, configuration.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    /// The name.
    pub name: String,
    /// Jobs per state (`scheduled`, `waiting`, `active`, `completed`, `failed`, `dead`,
    /// `cancelled`).
    pub counts: BTreeMap<String, u64>,
    /// Age of the oldest waiting job, ms (0 when none waits).
    pub oldest_waiting_ms: u64,
    /// Whether the queue is paused.
    pub paused: bool,
    /// Ready-to-start wait: the upper bound of the histogram bucket holding the median
    /// (since the server started); absent before the first start.
    pub wait_ms_p50: Option<u64>,
    /// Same, 99th percentile.
    pub wait_ms_p99: Option<u64>,
    /// Run time of completed jobs, median bucket bound.
    pub run_ms_p50: Option<u64>,
    /// Same, 99th percentile.
    pub run_ms_p99: Option<u64>,
    /// The circuit breaker: `off`, `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Whether the oldest waiting job is past `starvation_ms`.
    pub starving: bool,
    /// Enqueues per second over the last minute.
    pub arrival_per_s: f64,
    /// Completions per second over the last minute.
    pub completed_per_s: f64,
    /// Failed attempts per second over the last minute.
    pub failed_per_s: f64,
    /// The scaling advisor: workers (concurrent jobs) this queue needs.
    pub recommended_workers: u64,
    /// Why.
    pub reason: String,
    /// The configuration, in the engine's own shape (the keys `PUT` takes, every one set).
    pub config: QueueConfig,
}

impl From<QueueStats> for QueueView {
    fn from(s: QueueStats) -> Self {
        QueueView {
            counts: s.counts.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            oldest_waiting_ms: s.oldest_waiting_ms,
            paused: s.config.paused,
            wait_ms_p50: s.wait_ms.quantile_upper_bound(0.5),
            wait_ms_p99: s.wait_ms.quantile_upper_bound(0.99),
            run_ms_p50: s.run_ms.quantile_upper_bound(0.5),
            run_ms_p99: s.run_ms.quantile_upper_bound(0.99),
            breaker: s.breaker.to_string(),
            starving: s.starving,
            arrival_per_s: s.arrival_per_s,
            completed_per_s: s.completed_per_s,
            failed_per_s: s.failed_per_s,
            recommended_workers: s.advice.recommended_workers,
            reason: s.advice.reason.clone(),
            config: s.config.clone(),
            name: s.name,
        }
    }
}

/// Reply to `GET /v1/queues`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueListReply {
    /// Every known queue.
    pub queues: Vec<QueueView>,
}

/// Reply to `POST /v1/queues/{q}/purge`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PurgeReply {
    /// Jobs deleted.
    pub deleted: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `enabled` was never serialized, so a client asking to remove a breaker
    /// (`enabled: false`) sent `{}`, which the server read as "enable with defaults".
    #[test]
    fn breaker_removal_survives_the_round_trip() {
        let off = BreakerBody::switch(false);
        let text = serde_json::to_string(&off).unwrap();
        let back: BreakerBody = serde_json::from_str(&text).unwrap();
        assert!(!back.enabled, "{text}");
        assert_eq!(back.apply(Some(BreakerConfig::default())), None);
        let on: BreakerBody = serde_json::from_str(r#"{"consecutive_failures":5}"#).unwrap();
        let cfg = on.apply(None).unwrap();
        assert_eq!(cfg.consecutive_failures, 5);
        assert_eq!(cfg.cooldown_ms, BreakerConfig::default().cooldown_ms);
    }
}
