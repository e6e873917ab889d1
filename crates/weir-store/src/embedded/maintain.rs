//! Time-driven work: due jobs become ready, expired leases are reclaimed, finished jobs past
//! their retention are deleted, flow events are logged.
//!
//! One code path, [`pass`], serves both the maintenance thread and
//! [`Store::maintenance_run`](crate::Store::maintenance_run).
//!
//! The thread has a condition variable of its own. Sharing the committer's would wake it on
//! every write, and each wake ran a pass (retention included) and woke every idle long poll:
//! a thundering herd under load, and retention running at the pace of unrelated enqueues
//! rather than of `maintenance_every`. Now it sleeps until its due time: `maintenance_every`
//! after its last pass, or earlier when an operation makes something fall due sooner (a
//! delayed job, a short lease, a backoff; see [`note_next_wakeup`]). It wakes long polls only
//! when a pass made work ready.

use super::{Shared, State};
use crate::store::MaintenanceReport;
use std::time::Duration;

/// Most finished jobs one round of retention deletes before letting other operations in.
const RETENTION_ROUND: usize = 10_000;

/// One maintenance pass over the locked state at `now`: tick (due jobs, expired leases,
/// throttled groups, starvation), flow events logged, retention in rounds. Returns what it
/// deleted and how many jobs it may have made ready. `bump` lets other operations take the
/// lock between rounds of deletion.
pub(crate) fn pass(
    st: &mut parking_lot::MutexGuard<'_, State>,
    now: u64,
) -> (MaintenanceReport, usize) {
    let woke = st.guarded(|st| {
        let woke = st.engine.tick(now);
        for e in st.engine.take_flow_events() {
            log_flow_event(&e);
        }
        st.absorb_changes();
        woke
    });
    let mut report = MaintenanceReport::default();
    loop {
        let r = st.guarded(|st| {
            let r = st.engine.enforce_retention(now, RETENTION_ROUND);
            st.absorb_changes();
            r
        });
        report.deleted += r.deleted;
        if !r.more {
            break;
        }
        parking_lot::MutexGuard::bump(st);
    }
    st.maint_passes += 1;
    (report, woke)
}

/// After an operation at `now` changed the engine: if a job now falls due (or a lease
/// expires) before the maintenance thread planned to wake, bring its wake-up forward. Cheap:
/// three first-key lookups, whatever the number of queues. Rate limits and breakers are left
/// to fetchers, who ask for their tokens themselves; a time already reached is too (a queue
/// with tokens to spare reports "now" until someone fetches, and waking for it would spin).
pub(crate) fn note_next_wakeup(shared: &Shared, st: &mut State, now: u64) {
    if st.maint_due == u64::MAX {
        return; // no maintenance thread
    }
    if let Some(at) = st.engine.next_transition().filter(|&t| t > now) {
        if at < st.maint_due {
            st.maint_due = at;
            shared.maint.notify_one();
        }
    }
}

/// The maintenance thread's body: a pass whenever it falls due, until the store closes.
pub(crate) fn run(shared: &Shared, every: Duration) {
    let every_ms = every.as_millis().max(1) as u64;
    let mut st = shared.state.lock();
    loop {
        if st.closed {
            return;
        }
        let now = shared.clock.now_ms();
        if now < st.maint_due {
            // Sleep until due (at most one period: a clock a test holds still never gets
            // there, and this thread should not sleep forever on it).
            let wait = Duration::from_millis((st.maint_due - now).min(every_ms));
            shared.maint.wait_for(&mut st, wait);
            continue;
        }
        if st.refusal().is_some() {
            st.maint_due = now.saturating_add(every_ms);
            continue;
        }
        let (_, woke) = pass(&mut st, now);
        let next = st
            .engine
            .next_transition()
            .filter(|&t| t > now)
            .unwrap_or(u64::MAX);
        st.maint_due = now.saturating_add(every_ms).min(next);
        let wrote = !st.pending.is_empty();
        drop(st);
        if wrote {
            shared.wake.notify_all();
        }
        if woke > 0 {
            shared.work.notify_waiters();
        }
        st = shared.state.lock();
    }
}

fn log_flow_event(e: &weir_core::FlowEvent) {
    use weir_core::FlowEvent;
    match e {
        FlowEvent::Starving { queue, oldest_ms } => {
            tracing::warn!(queue = %queue, oldest_ms, "queue is starving: its oldest waiting job is past starvation_ms; its fetch share is raised");
        }
        FlowEvent::Recovered { queue } => {
            tracing::info!(queue = %queue, "queue recovered from starvation")
        }
        FlowEvent::Breaker { queue, state } => {
            tracing::warn!(queue = %queue, state, "circuit breaker changed state");
        }
        _ => tracing::info!(event = ?e, "flow event"),
    }
}
