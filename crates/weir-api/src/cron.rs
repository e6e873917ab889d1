//! Cron entries: `PUT/GET/DELETE /v1/cron/{name}`, `GET /v1/cron`.

use crate::NewJobBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What to do with ticks that passed while no server was running (or the queue was full).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Enqueue nothing for them; go on with the next tick on time (the default).
    #[default]
    Skip,
    /// Enqueue one job for the latest missed tick, however many were missed.
    RunOnce,
}

/// `PUT /v1/cron/{name}`: a job enqueued on a schedule.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CronBody {
    /// A cron expression: `MIN HOUR DOM MONTH DOW`, with an optional leading seconds field
    /// (`*/5 * * * * *`: every 5 s); ranges, lists, steps, names (`MON`, `JAN`) and `L`, `#`,
    /// `W`.
    pub schedule: String,
    /// The IANA time zone the schedule reads in (`Europe/Paris`); default `UTC`.
    #[serde(default = "utc")]
    pub timezone: String,
    /// The job, as `POST /v1/jobs` takes it. Its `unique_key` is set by the scheduler (one
    /// per tick), so that a tick is enqueued once.
    pub job: NewJobBody,
    /// Ticks missed while no server ran: `skip` (default) or `run_once`.
    #[serde(default)]
    pub missed: Missed,
}

fn utc() -> String {
    "UTC".to_string()
}

/// A cron entry with its last and next run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CronView {
    /// The name.
    pub name: String,
    /// The cron expression.
    pub schedule: String,
    /// Its time zone.
    pub timezone: String,
    /// The job each tick enqueues.
    pub job: NewJobBody,
    /// The missed-tick policy.
    pub missed: Missed,
    /// The last tick handled (enqueued, or skipped as missed), ms since the epoch.
    pub last_tick_ms: u64,
    /// The next tick, ms since the epoch (`null` if the schedule never fires again).
    pub next_tick_ms: Option<u64>,
    /// When the entry was last set, ms since the epoch.
    pub updated_at_ms: u64,
}

/// Reply to `GET /v1/cron`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CronListReply {
    /// Every entry, by name.
    pub cron: Vec<CronView>,
}
