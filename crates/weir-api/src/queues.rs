//! Queue bodies: how a queue reads back, and the patch `PUT /v1/queues/{q}` takes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use weir_core::{Order, QueueConfig, QueueStats, Retention};

use crate::BackoffBody;

/// A queue's configuration as it reads back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueConfigView {
    /// `fifo` or `smallest_cost`: order among jobs of equal effective priority.
    pub order: String,
    /// A waiting job's effective priority rises by one per `aging_ms` it waits (0: off).
    pub aging_ms: u64,
    /// Default attempts.
    pub max_attempts: u32,
    /// Default lease length, ms.
    pub timeout_ms: u64,
    /// Default retry backoff.
    pub backoff: BackoffBody,
    /// How long finished jobs are kept.
    pub retention: RetentionView,
    /// A paused queue accepts jobs but hands none out.
    pub paused: bool,
}

/// Retention of finished jobs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct RetentionView {
    /// Completed jobs are deleted this long after they finished.
    pub completed_ms: u64,
    /// At most this many completed jobs are kept.
    pub completed_max: u64,
    /// Dead and cancelled jobs are deleted this long after they finished.
    pub dead_ms: u64,
    /// At most this many dead and cancelled jobs are kept.
    pub dead_max: u64,
}

impl From<&QueueConfig> for QueueConfigView {
    fn from(c: &QueueConfig) -> Self {
        QueueConfigView {
            order: match c.order {
                Order::Fifo => "fifo",
                Order::SmallestCost => "smallest_cost",
            }
            .to_string(),
            aging_ms: c.aging_ms,
            max_attempts: c.max_attempts,
            timeout_ms: c.timeout_ms,
            backoff: c.backoff.into(),
            retention: RetentionView {
                completed_ms: c.retention.completed_ms,
                completed_max: c.retention.completed_max,
                dead_ms: c.retention.dead_ms,
                dead_max: c.retention.dead_max,
            },
            paused: c.paused,
        }
    }
}

/// `PUT /v1/queues/{q}`: changes only the keys it names; the queue is created if new.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
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
}

/// Part of a retention policy.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionPatch {
    /// See [`RetentionView::completed_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_ms: Option<u64>,
    /// See [`RetentionView::completed_max`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_max: Option<u64>,
    /// See [`RetentionView::dead_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_ms: Option<u64>,
    /// See [`RetentionView::dead_max`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_max: Option<u64>,
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
    /// The configuration.
    pub config: QueueConfigView,
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
            config: (&s.config).into(),
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
