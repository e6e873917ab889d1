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

/// Declares [`QueueConfigPatch`] and its `apply` from one list: each key once, with its
/// doc, its type, and (for keys whose body is not the engine's own value) how it merges into
/// the configuration. A key added here is in the body, the OpenAPI schema, the configuration
/// file's `[queues.*]`, the CLI's `weir queues set` (which parses into this type) and
/// `apply`, with nothing else to keep in step.
macro_rules! queue_config_patch {
    (
        set { $( $(#[doc = $sdoc:literal])* $sfield:ident : $sty:ty ),* $(,)? }
        merge { $( $(#[doc = $mdoc:literal])* $mfield:ident : $mty:ty => |$body:ident, $cfg:ident| $merge:expr ),* $(,)? }
    ) => {
        /// `PUT /v1/queues/{q}`: changes only the keys it names; the queue is created if new.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct QueueConfigPatch {
            $(
                $(#[doc = $sdoc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $sfield: Option<$sty>,
            )*
            $(
                $(#[doc = $mdoc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $mfield: Option<$mty>,
            )*
        }

        impl QueueConfigPatch {
            /// Applies the named keys to `config`. The engine validates the result.
            pub fn apply(&self, config: &mut QueueConfig) {
                $(
                    if let Some(v) = self.$sfield {
                        config.$sfield = v;
                    }
                )*
                $(
                    if let Some($body) = &self.$mfield {
                        let $cfg: &mut QueueConfig = config;
                        $merge;
                    }
                )*
            }
        }
    };
}

queue_config_patch! {
    set {
        /// `fifo` or `smallest_cost`.
        order: Order,
        /// Aging step, ms (0: off).
        aging_ms: u64,
        /// Default attempts.
        max_attempts: u32,
        /// Default lease length, ms.
        timeout_ms: u64,
        /// Pause (true) or resume (false).
        paused: bool,
        /// Most active jobs at once (0: unlimited).
        concurrency: u32,
        /// Most active jobs per group key (1: ordered groups).
        group_concurrency: u32,
        /// Most unfinished jobs (0: unlimited).
        max_depth: u64,
        /// Share in a multi-queue fetch (0: unweighted).
        weight: u32,
        /// Starvation threshold, ms (0: off).
        starvation_ms: u64,
        /// The scaling advisor's drain window, ms.
        drain_window_ms: u64,
    }
    merge {
        /// Default retry backoff.
        backoff: BackoffBody => |b, c| {
            c.backoff.base_ms = b.base_ms;
            c.backoff.cap_ms = b.cap_ms;
        },
        /// Retention; only the keys named change.
        retention: RetentionPatch => |r, c| r.apply(&mut c.retention),
        /// Rate limit (`{"limit": 0}` removes it).
        rate_limit: RateLimitBody => |r, c| c.rate_limit = r.to_core(),
        /// Rate limit per group key (`{"limit": 0}` removes it).
        group_rate_limit: RateLimitBody => |r, c| c.group_rate_limit = r.to_core(),
        /// Circuit breaker (`{"enabled": false}` removes it); only the keys named change.
        breaker: BreakerBody => |b, c| c.breaker = b.apply(c.breaker),
    }
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

impl RetentionPatch {
    /// Applies the named keys to `r`.
    pub fn apply(&self, r: &mut Retention) {
        r.completed_ms = self.completed_ms.unwrap_or(r.completed_ms);
        r.completed_max = self.completed_max.unwrap_or(r.completed_max);
        r.dead_ms = self.dead_ms.unwrap_or(r.dead_ms);
        r.dead_max = self.dead_max.unwrap_or(r.dead_max);
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
    /// Ready-to-start wait, median, ms, since the server started: interpolated within the
    /// latency histogram's bucket and never above the longest wait seen; `null` before the
    /// first start.
    pub wait_ms_p50: Option<u64>,
    /// Same, 95th percentile.
    pub wait_ms_p95: Option<u64>,
    /// Same, 99th percentile.
    pub wait_ms_p99: Option<u64>,
    /// Run time of completed jobs, median, ms (as the waits); `null` before the first.
    pub run_ms_p50: Option<u64>,
    /// Same, 95th percentile.
    pub run_ms_p95: Option<u64>,
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
            wait_ms_p50: s.wait_ms.quantile(0.5),
            wait_ms_p95: s.wait_ms.quantile(0.95),
            wait_ms_p99: s.wait_ms.quantile(0.99),
            run_ms_p50: s.run_ms.quantile(0.5),
            run_ms_p95: s.run_ms.quantile(0.95),
            run_ms_p99: s.run_ms.quantile(0.99),
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

/// Reply to a bulk action on a queue's jobs (`POST /v1/queues/{q}/retry`,
/// `DELETE /v1/queues/{q}/jobs`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkReply {
    /// Jobs the action applied to.
    pub jobs: u64,
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
