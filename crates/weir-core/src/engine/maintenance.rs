//! Time-driven transitions: due jobs become ready, expired leases are reclaimed, and
//! finished jobs past their queue's retention are deleted.

use super::{Change, Engine};
use crate::job::{JobId, JobState};

/// What one [`Engine::enforce_retention`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Jobs deleted.
    pub deleted: usize,
    /// True when the pass stopped at its budget with more left to delete.
    pub more: bool,
}

impl Engine {
    /// Applies every time-driven transition due at `now`: scheduled and failed jobs whose
    /// time has come become waiting; active jobs whose lease passed its deadline fail their
    /// attempt (back to waiting, or dead when no attempts are left). Returns how many jobs
    /// (or throttled groups) it may have made ready, so that a store wakes long-polling
    /// fetchers only when there is something for them.
    pub fn tick(&mut self, now: u64) -> usize {
        self.now = self.now.max(now);
        let mut woke = 0;
        while let Some((due, q, g)) = self.throttled.first().cloned() {
            if due > now {
                break;
            }
            self.throttled.pop_first();
            self.refresh_group(q, g);
            woke += 1;
        }
        self.prune_group_tats(now);
        while let Some(&(at, id)) = self.scheduled.first() {
            if at > now {
                break;
            }
            // The ready time is the due time, so a job that waited out a delay ages from
            // when it became due, not from when the fetch happened to notice.
            self.transition(id, JobState::Waiting, |_| {});
            woke += 1;
        }
        while let Some(&(deadline, id)) = self.leases.first() {
            if deadline > now {
                break;
            }
            self.fail_attempt(id, "lease expired".to_string(), true, now, true);
            woke += 1;
        }
        self.check_starvation(now);
        woke
    }

    /// The earliest time at which [`Engine::tick`] has something to do, if any: a job falls
    /// due, a lease expires, a throttled group gets a token, or a rate-limited or broken
    /// queue may hand out work again.
    pub fn next_wakeup(&self) -> Option<u64> {
        self.next_transition()
            .into_iter()
            .chain(self.flow_wakeup())
            .min()
    }

    /// The earliest time a job changes state by itself (falls due, loses its lease) or a
    /// throttled group gets a token: [`Engine::next_wakeup`] without the queues' rate
    /// limits and breakers, in `O(log n)` whatever the number of queues, for a store
    /// that asks after every operation.
    pub fn next_transition(&self) -> Option<u64> {
        [
            self.scheduled.first().map(|&(t, _)| t),
            self.throttled.first().map(|(t, _, _)| *t),
            self.leases.first().map(|&(t, _)| t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Deletes finished jobs beyond each queue's retention (by age and by count), at most
    /// `budget` of them, oldest first. Their counts stay in the hourly aggregates.
    pub fn enforce_retention(&mut self, now: u64, budget: usize) -> RetentionReport {
        let mut report = RetentionReport::default();
        for q in 0..self.queues.len() {
            let r = self.queues[q].config.retention;
            for dead_set in [false, true] {
                let (max_age, max_count) = if dead_set {
                    (r.dead_ms, r.dead_max)
                } else {
                    (r.completed_ms, r.completed_max)
                };
                loop {
                    let qs = &self.queues[q];
                    let set = if dead_set { &qs.dead } else { &qs.completed };
                    let Some(&(finished, id)) = set.first() else {
                        break;
                    };
                    let too_old = finished.saturating_add(max_age) <= now;
                    let too_many = set.len() as u64 > max_count;
                    if !too_old && !too_many {
                        break;
                    }
                    if report.deleted == budget {
                        report.more = true;
                        return report;
                    }
                    self.delete(id);
                    report.deleted += 1;
                }
            }
        }
        report
    }

    /// Removes a finished job entirely.
    pub(crate) fn delete(&mut self, id: u64) {
        let Some(s) = self.jobs.get(&id) else {
            return;
        };
        debug_assert!(s.state.is_terminal(), "only finished jobs are deleted");
        let q = s.queue as usize;
        self.unplace(id);
        self.untrack(id);
        self.all_ids.remove(id);
        let mut status = false;
        if let Some(s) = self.jobs.swap_remove(&id) {
            status = s.status_stored;
            self.held_bytes = self
                .held_bytes
                .saturating_sub(super::JOB_OVERHEAD_BYTES + s.payload.len() as u64);
            if let Some(k) = s.extra.and_then(|e| e.unique_key) {
                let key = (q as u32, k);
                if self.unique.get(&key) == Some(&id) {
                    self.unique.remove(&key);
                }
            }
        }
        self.changes.push(Change::Delete {
            id: JobId(id),
            status,
        });
    }
}
