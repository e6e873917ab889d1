//! Cron entries: jobs enqueued on a schedule, once per tick, across restarts and across the
//! servers of a shared store.
//!
//! Each entry is kept by the store (a [`CronRecord`]: the definition as the API took it,
//! and the last tick handled). Every server runs [`run`], which wakes at the next tick of any
//! entry (and at least every second, to see entries other servers set) and, for each entry
//! whose latest tick is past its last one:
//!
//! 1. enqueues the entry's job with the unique key `cron:<name>:<tick ms>` and a 24-hour
//!    unique window, so that a second enqueue of the same tick (another server, or this one
//!    after a crash between the steps) returns the first job instead of a new one;
//! 2. moves the entry's last tick to this tick by compare and set, so that one server wins
//!    and the others see it handled.
//!
//! A crash between 1 and 2 repeats step 1 on the next pass, which the unique key absorbs:
//! each tick is enqueued exactly once. Only the latest due tick is considered: ticks missed
//! while no server ran are skipped (`missed = "skip"`: nothing is enqueued for a tick more
//! than [`ON_TIME_MS`] late) or run once (`run_once`: one job for the latest of them). A
//! queue at its `max_depth` refuses the enqueue; the tick stays due and is retried.
//!
//! Cron expressions are parsed by `croner` (seconds optional) and read in the entry's IANA
//! time zone (`chrono-tz`), so `0 9 * * MON-FRI` in `Europe/Paris` follows daylight saving.

use crate::error::{ApiError, ApiResult};
use crate::AppState;
use chrono::{TimeZone, Utc};
use std::str::FromStr;
use std::time::Duration;
use weir_api::{CronBody, CronView, Missed};
use weir_core::{Limits, NewJob};
use weir_store::{CronRecord, JobInsertManyParams, Store};

/// How late a tick may be handled and still count as on time for `missed = "skip"`.
pub const ON_TIME_MS: u64 = 5_000;

/// How long a tick's unique key deduplicates: longer than any plausible gap between a crash
/// after the enqueue and the next pass.
const TICK_UNIQUE_WINDOW_MS: u64 = 86_400_000;

/// The longest the scheduler sleeps, so that entries other servers set are seen.
const RELOAD_MS: u64 = 1_000;

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl Schedule {
    /// Parses `expr` (five fields, or six with seconds first) read in time zone `tz`.
    pub fn parse(expr: &str, tz: &str) -> Result<Schedule, ApiError> {
        let cron = croner::parser::CronParser::new()
            .parse(expr)
            .map_err(|e| ApiError::invalid("schedule", format!("{expr:?}: {e}")))?;
        let tz = chrono_tz::Tz::from_str(tz).map_err(|_| {
            ApiError::invalid(
                "timezone",
                format!("{tz:?} is not an IANA time zone (e.g. UTC, Europe/Paris)"),
            )
        })?;
        Ok(Schedule { cron, tz })
    }

    /// `ms` in the schedule's zone, to the whole second (ticks are whole seconds, and
    /// croner would carry the milliseconds into the ticks it finds).
    fn at(&self, ms: u64) -> Option<chrono::DateTime<chrono_tz::Tz>> {
        Utc.timestamp_millis_opt((ms - ms % 1000) as i64)
            .single()
            .map(|t| t.with_timezone(&self.tz))
    }

    /// The first tick strictly after `ms`.
    pub fn next_after(&self, ms: u64) -> Option<u64> {
        let t = self.cron.find_next_occurrence(&self.at(ms)?, false).ok()?;
        u64::try_from(t.timestamp_millis()).ok()
    }

    /// The latest tick at or before `ms`.
    pub fn latest_at_or_before(&self, ms: u64) -> Option<u64> {
        let t = self
            .cron
            .find_previous_occurrence(&self.at(ms)?, true)
            .ok()?;
        u64::try_from(t.timestamp_millis()).ok()
    }
}

/// An entry's definition, checked: the name, the schedule and the job are all valid.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name.
    pub name: String,
    /// The definition as given.
    pub body: CronBody,
    /// Its schedule.
    pub schedule: Schedule,
}

/// Checks a definition: a valid name, schedule and time zone, a job `POST /v1/jobs` would
/// take, and a schedule that fires at all.
pub fn check(name: &str, body: CronBody, limits: &Limits, now: u64) -> ApiResult<Entry> {
    weir_core::config::check_queue_name(name).map_err(|_| {
        ApiError::invalid(
            "name",
            format!("{name:?}: 1 to 128 characters of A-Z a-z 0-9 _ - . :"),
        )
    })?;
    let schedule = Schedule::parse(&body.schedule, &body.timezone)?;
    if schedule.next_after(now).is_none() {
        return Err(ApiError::invalid(
            "schedule",
            format!("{:?} never fires after now", body.schedule),
        ));
    }
    let job = body.job.clone().into_new_job();
    weir_core::validate_new_job(&job, limits, now).map_err(|e| match e {
        weir_core::Error::Invalid { field, reason } => {
            ApiError::invalid(&format!("job.{field}"), format!("job.{field}: {reason}"))
        }
        other => other.into(),
    })?;
    if job.delay_ms.is_some() || job.run_at_ms.is_some() {
        return Err(ApiError::invalid(
            "job.delay_ms",
            "a cron job runs at its tick: no delay_ms or run_at_ms",
        ));
    }
    Ok(Entry {
        name: name.to_string(),
        body,
        schedule,
    })
}

/// The limits jobs are checked against, from the server's settings.
pub fn limits(state: &AppState) -> Limits {
    state.config().limits()
}

/// Stores entry `e`; a new entry's first tick is the first after `now`.
pub async fn put(store: &dyn Store, e: &Entry, now: u64) -> ApiResult<CronView> {
    let spec =
        serde_json::to_string(&e.body).map_err(|err| ApiError::invalid("body", err.to_string()))?;
    let stored = store
        .cron_put(CronRecord {
            name: e.name.clone(),
            spec,
            last_tick_ms: now,
            updated_at_ms: now,
        })
        .await?;
    Ok(view(e, &stored, now))
}

/// The view of a stored entry.
pub fn view(e: &Entry, r: &CronRecord, now: u64) -> CronView {
    CronView {
        name: e.name.clone(),
        schedule: e.body.schedule.clone(),
        timezone: e.body.timezone.clone(),
        job: e.body.job.clone(),
        missed: e.body.missed,
        last_tick_ms: r.last_tick_ms,
        next_tick_ms: e.schedule.next_after(r.last_tick_ms.max(now)),
        updated_at_ms: r.updated_at_ms,
    }
}

/// A stored record read back (a record that no longer parses, written by a newer server, is
/// reported and skipped).
pub fn parse_record(r: &CronRecord) -> Option<Entry> {
    let body: CronBody = match serde_json::from_str(&r.spec) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(cron = %r.name, error = %e, "cron entry does not parse; skipped");
            return None;
        }
    };
    match Schedule::parse(&body.schedule, &body.timezone) {
        Ok(schedule) => Some(Entry {
            name: r.name.clone(),
            body,
            schedule,
        }),
        Err(e) => {
            tracing::warn!(cron = %r.name, error = %e.0.detail, "cron schedule does not parse; skipped");
            None
        }
    }
}

/// What one pass did, for tests and logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// `(entry, tick)` enqueued (or found already enqueued) and claimed by this pass.
    pub enqueued: Vec<(String, u64)>,
    /// `(entry, tick)` skipped as missed.
    pub skipped: Vec<(String, u64)>,
    /// The earliest next tick of any entry.
    pub next_tick_ms: Option<u64>,
}

/// One pass at time `now` over every entry (see the module docs).
pub async fn pass(store: &dyn Store, now: u64) -> weir_core::Result<PassReport> {
    let mut report = PassReport::default();
    for r in store.cron_list().await? {
        let Some(e) = parse_record(&r) else { continue };
        let latest = e.schedule.latest_at_or_before(now);
        if let Some(tick) = latest.filter(|&t| t > r.last_tick_ms) {
            let late = now.saturating_sub(tick);
            let run = match e.body.missed {
                Missed::RunOnce => true,
                Missed::Skip => late <= ON_TIME_MS,
            };
            if run {
                if let Err(err) = enqueue(store, &e, tick).await {
                    tracing::warn!(cron = %e.name, tick, error = %err, "cron tick not enqueued; retried next pass");
                    report.next_tick_ms = Some(
                        report
                            .next_tick_ms
                            .map_or(now + RELOAD_MS, |n| n.min(now + RELOAD_MS)),
                    );
                    continue;
                }
            }
            if store.cron_advance(&e.name, r.last_tick_ms, tick).await? {
                if run {
                    report.enqueued.push((e.name.clone(), tick));
                } else {
                    tracing::info!(cron = %e.name, tick, late_ms = late, "missed cron tick skipped");
                    report.skipped.push((e.name.clone(), tick));
                }
            }
        }
        if let Some(next) = e.schedule.next_after(now) {
            report.next_tick_ms = Some(report.next_tick_ms.map_or(next, |n| n.min(next)));
        }
    }
    Ok(report)
}

/// Enqueues tick `tick` of `e`, idempotently.
async fn enqueue(store: &dyn Store, e: &Entry, tick: u64) -> weir_core::Result<()> {
    let mut job: NewJob = e.body.job.clone().into_new_job();
    job.unique_key = Some(format!("cron:{}:{tick}", e.name));
    job.unique_window_ms = Some(TICK_UNIQUE_WINDOW_MS);
    if !job.tags.iter().any(|t| t == "cron") {
        job.tags.push("cron".into());
    }
    store
        .job_insert_many(JobInsertManyParams { jobs: vec![job] })
        .await?;
    Ok(())
}

/// The scheduler: a pass at every tick (and at least every second) until shutdown.
pub async fn run(state: AppState) {
    let stop = state.shutdown_token();
    let clock = state.store().clock();
    loop {
        let now = clock.now_ms();
        let wait_ms = match pass(state.store(), now).await {
            Ok(r) => r
                .next_tick_ms
                .map_or(RELOAD_MS, |t| t.saturating_sub(now).clamp(1, RELOAD_MS)),
            Err(e) => {
                tracing::warn!(error = %e, "cron pass failed; retrying");
                RELOAD_MS
            }
        };
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
            () = stop.cancelled() => return,
        }
    }
}
