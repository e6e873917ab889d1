//! An operator's changes to jobs and queues: cancel, retry, delete, purge.

use super::*;

impl Engine {
    /// Cancels a job that has not finished. An active job's lease is revoked: its worker's
    /// ack or fail will be refused.
    pub fn cancel(&mut self, id: JobId, now: u64) -> Result<()> {
        let s = self.jobs.get(&id.0).ok_or(Error::JobNotFound(id))?;
        if s.state.is_terminal() {
            return Err(Error::InvalidState {
                id,
                op: "cancel",
                state: s.state.as_str(),
            });
        }
        let q = s.queue;
        self.transition(id.0, JobState::Cancelled, |s| s.finished_at = now);
        self.release_unique(id.0);
        self.bump(q, now, |a| a.cancelled += 1);
        self.updated(id.0);
        Ok(())
    }

    /// Deletes every job of queue `name` that is waiting, scheduled or failed (waiting for a
    /// retry). Active jobs are left to finish. The deleted jobs count as cancelled in the
    /// hourly aggregates. Returns how many were deleted (0 for an unknown queue).
    pub fn purge(&mut self, name: &str, now: u64) -> u64 {
        let Some(q) = self.find_queue(name) else {
            return 0;
        };
        let ids: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, s)| {
                s.queue == q
                    && matches!(
                        s.state,
                        JobState::Waiting | JobState::Scheduled | JobState::Failed
                    )
            })
            .map(|(&id, _)| id)
            .collect();
        for &id in &ids {
            // Cancelling first keeps groups, unique keys and indexes right; then the
            // finished job is deleted like retention would.
            if self.cancel(JobId(id), now).is_ok() {
                self.delete(id);
            }
        }
        ids.len() as u64
    }

    /// Deletes one job that is not running: one that has not finished is cancelled first (so
    /// that its group and unique key move on, and the hourly aggregates count it as
    /// cancelled). An active job is refused: cancel it, or let it finish.
    pub fn delete_job(&mut self, id: JobId, now: u64) -> Result<()> {
        let s = self.jobs.get(&id.0).ok_or(Error::JobNotFound(id))?;
        match s.state {
            JobState::Active => {
                return Err(Error::InvalidState {
                    id,
                    op: "delete",
                    state: s.state.as_str(),
                })
            }
            st if !st.is_terminal() => self.cancel(id, now)?,
            _ => {}
        }
        self.delete(id.0);
        Ok(())
    }

    /// Deletes queue `name` with every job it holds, its configuration, its flow-control
    /// state and its hourly aggregates. Refused while any of its jobs is active (pause the
    /// queue and let them finish, or cancel them). Returns how many jobs were deleted. A
    /// later enqueue or configuration of the name starts a new queue.
    pub fn delete_queue(&mut self, name: &str, now: u64) -> Result<u64> {
        let q = self
            .find_queue(name)
            .ok_or_else(|| Error::QueueNotFound(name.to_string()))?;
        let active = self.queues[q as usize].counts[JobState::Active as usize];
        if active > 0 {
            return Err(Error::QueueBusy {
                queue: name.to_string(),
                active,
            });
        }
        let ids: Vec<u64> = self.queues[q as usize]
            .ids
            .iter()
            .flat_map(|set| set.iter())
            .collect();
        for &id in &ids {
            self.delete_job(JobId(id), now)?;
        }
        let hours: Vec<u64> = self
            .aggregates
            .range((q, 0)..=(q, u64::MAX))
            .map(|(&(_, h), _)| h)
            .collect();
        for h in hours {
            self.aggregates.remove(&(q, h));
        }
        self.group_tats.retain(|(gq, _), _| *gq != q);
        self.throttled.retain(|(_, gq, _)| *gq != q);
        self.groups.retain(|(gq, _), _| *gq != q);
        let qs = &mut self.queues[q as usize];
        *qs = QueueState::fresh(qs.name.clone());
        qs.deleted = true;
        self.changes.push(Change::QueueDeleted(q));
        Ok(ids.len() as u64)
    }

    /// Runs a job again now: a dead or cancelled job returns to waiting with fresh attempts;
    /// a scheduled or failed one skips the rest of its wait.
    pub fn retry(&mut self, id: JobId, now: u64) -> Result<()> {
        let s = self.jobs.get(&id.0).ok_or(Error::JobNotFound(id))?;
        match s.state {
            JobState::Dead | JobState::Cancelled => {
                let q = s.queue;
                let key = s
                    .extra
                    .as_ref()
                    .and_then(|e| e.unique_key.clone())
                    .map(|k| (q, k));
                self.transition(id.0, JobState::Waiting, |s| {
                    s.attempt = 0;
                    s.finished_at = 0;
                    s.run_at = now;
                });
                if let Some(key) = key {
                    let taken = self
                        .unique
                        .get(&key)
                        .is_some_and(|&other| other != id.0 && self.unique_live(other, now));
                    if !taken {
                        self.unique.insert(key, id.0);
                    }
                }
            }
            JobState::Scheduled | JobState::Failed => {
                self.transition(id.0, JobState::Waiting, |s| s.run_at = now);
            }
            state => {
                return Err(Error::InvalidState {
                    id,
                    op: "retry",
                    state: state.as_str(),
                })
            }
        }
        self.updated(id.0);
        Ok(())
    }
}
