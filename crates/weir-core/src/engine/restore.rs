//! Records out (for the store to persist) and records in (to rebuild the engine on open).

use super::{Engine, Extra, Slot};
use crate::aggregate::{Aggregate, AggregateRecord, HOUR_MS};
use crate::job::{JobId, JobState};
use crate::record::{QueueRecord, SpecRecord, StatusRecord};
use crate::{Error, Result};
use std::borrow::Cow;
use std::sync::Arc;

impl Engine {
    /// The spec record of a job, borrowing from the engine.
    pub fn spec_record(&self, id: JobId) -> Option<SpecRecord<'_>> {
        let s = self.jobs.get(&id.0)?;
        let e = s.extra.as_deref();
        Some(SpecRecord {
            queue: Cow::Borrowed(&self.queues[s.queue as usize].name),
            kind: Cow::Borrowed(&self.kinds[s.kind as usize]),
            payload: Cow::Borrowed(&s.payload),
            priority: s.priority,
            cost: s.cost,
            max_attempts: u32::from(s.max_attempts),
            backoff: e.and_then(|e| e.backoff),
            timeout_ms: s.timeout_ms,
            unique_key: e.and_then(|e| e.unique_key.as_deref()).map(Cow::Borrowed),
            unique_until: e.map_or(0, |e| e.unique_until),
            group: e.and_then(|e| e.group.as_deref()).map(Cow::Borrowed),
            tags: e
                .map(|e| e.tags.iter().map(|t| Cow::Borrowed(&**t)).collect())
                .unwrap_or_default(),
            created_at: s.created_at,
            run_at: s.run_at,
        })
    }

    /// The status record of a job, borrowing from the engine.
    pub fn status_record(&self, id: JobId) -> Option<StatusRecord<'_>> {
        let s = self.jobs.get(&id.0)?;
        let e = s.extra.as_deref();
        Some(StatusRecord {
            state: s.state as u8,
            attempt: u32::from(s.attempt),
            run_at: s.run_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            result: e.and_then(|e| e.result.as_deref()).map(Cow::Borrowed),
            progress: e.and_then(|e| e.progress.as_deref()).map(Cow::Borrowed),
            errors: e.map_or(Cow::Borrowed(&[][..]), |e| Cow::Borrowed(&e.errors[..])),
        })
    }

    /// The record of queue `q` (as named by [`super::Change::Queue`]).
    pub fn queue_record(&self, q: u32) -> Option<QueueRecord> {
        let qs = self.queues.get(q as usize)?;
        Some(QueueRecord {
            name: qs.name.to_string(),
            config: qs.config.clone(),
        })
    }

    /// The aggregate named by [`super::Change::Aggregate`].
    pub fn aggregate_at(&self, q: u32, hour: u64) -> Option<AggregateRecord> {
        let a = self.aggregates.get(&(q, hour))?;
        Some(self.aggregate_record(q, hour, a))
    }

    /// Restores a queue's configuration on open.
    pub fn restore_queue(&mut self, rec: QueueRecord) -> Result<()> {
        self.queue_config_set(&rec.name, rec.config)?;
        self.take_changes();
        Ok(())
    }

    /// Restores an hourly aggregate on open.
    pub fn restore_aggregate(&mut self, rec: AggregateRecord) {
        let q = self.queue_idx(&rec.queue);
        let hour = rec.hour_ms - rec.hour_ms % HOUR_MS;
        let slot: &mut Aggregate = self.aggregates.entry((q, hour)).or_default();
        slot.merge(&rec.counts);
    }

    /// Raises the next id to at least `next` (ids are never reused, even of deleted jobs).
    pub fn restore_next_id(&mut self, next: u64) {
        self.next_id = self.next_id.max(next);
    }

    /// Makes room for `n` more jobs, before restoring many.
    pub fn reserve_jobs(&mut self, n: usize) {
        self.jobs.reserve(n);
    }

    /// Restores one job on open. Jobs must come in increasing id order (so ordered groups
    /// keep enqueue order). A job that was active when the store closed is waiting again:
    /// its lease was never durable, so it is simply delivered again.
    pub fn restore_job(
        &mut self,
        id: JobId,
        spec: SpecRecord<'_>,
        status: Option<StatusRecord<'_>>,
        now: u64,
    ) -> Result<()> {
        if self.jobs.contains_key(&id.0) {
            return Err(Error::Storage(format!("job {id} restored twice")));
        }
        let q = self.queue_idx(&spec.queue);
        let kind = self.kind_idx(&spec.kind);
        let status_stored = status.is_some();
        let (mut state, attempt, run_at, started_at, finished_at, result, progress, errors) =
            match status {
                Some(st) => (
                    JobState::from_u8(st.state).ok_or_else(|| {
                        Error::Storage(format!("job {id}: unknown state {}", st.state))
                    })?,
                    st.attempt,
                    st.run_at,
                    st.started_at,
                    st.finished_at,
                    st.result.map(|r| r.into_owned().into_boxed_str()),
                    st.progress.map(|r| r.into_owned().into_boxed_str()),
                    st.errors.into_owned(),
                ),
                None => (
                    if spec.run_at > spec.created_at {
                        JobState::Scheduled
                    } else {
                        JobState::Waiting
                    },
                    0,
                    spec.run_at,
                    0,
                    0,
                    None,
                    None,
                    Vec::new(),
                ),
            };
        if state == JobState::Active {
            state = JobState::Waiting;
        }
        let group: Option<Arc<str>> = spec.group.map(|g| Arc::from(&*g));
        let extra = Extra {
            backoff: spec.backoff,
            unique_key: spec.unique_key.map(|k| k.into_owned().into_boxed_str()),
            unique_until: spec.unique_until,
            group: group.clone(),
            tags: spec
                .tags
                .into_iter()
                .map(|t| t.into_owned().into_boxed_str())
                .collect(),
            result,
            progress,
            errors,
        };
        let is_plain = extra.backoff.is_none()
            && extra.unique_key.is_none()
            && extra.group.is_none()
            && extra.tags.is_empty()
            && extra.result.is_none()
            && extra.progress.is_none()
            && extra.errors.is_empty();
        let slot = Slot {
            queue: q,
            kind,
            state,
            attempt: attempt.min(u32::from(u16::MAX)) as u16,
            max_attempts: spec.max_attempts.min(u32::from(u16::MAX)) as u16,
            priority: spec.priority,
            cost: spec.cost,
            timeout_ms: spec.timeout_ms,
            created_at: spec.created_at,
            run_at,
            lease_id: 0,
            deadline: 0,
            started_at,
            finished_at,
            payload: spec.payload.into_owned().into_boxed_str(),
            extra: (!is_plain).then(|| Box::new(extra)),
            status_stored,
        };
        let unique = slot.extra.as_ref().and_then(|e| e.unique_key.clone());
        self.held_bytes += super::JOB_OVERHEAD_BYTES + slot.payload.len() as u64;
        self.jobs.insert(id.0, slot);
        self.next_id = self.next_id.max(id.0 + 1);
        self.queues[q as usize].counts[state as usize] += 1;
        if let Some(g) = group {
            if !state.is_terminal() {
                self.groups.entry((q, g)).or_default().pending.insert(id.0);
            }
        }
        if let Some(k) = unique {
            if self.unique_live(id.0, now) {
                self.unique.insert((q, k), id.0);
            }
        }
        self.place(id.0);
        Ok(())
    }
}
