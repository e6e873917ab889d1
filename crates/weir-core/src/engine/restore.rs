//! Records out (for the store to persist) and records in (to rebuild the engine on open).

use super::{Engine, Extra, ReadyKey, Slot};
use crate::aggregate::{Aggregate, AggregateRecord, HOUR_MS};
use crate::job::{JobId, JobState};
use crate::record::{QueueRecord, SpecRecord, StatusRecord};
use crate::{Error, Result};
use std::borrow::Cow;
use std::collections::BTreeSet;
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
            lease_id: if s.state == JobState::Active {
                s.lease_id
            } else {
                0
            },
            deadline: if s.state == JobState::Active {
                s.deadline
            } else {
                0
            },
        })
    }

    /// The status record of job `id` if it is active (its lease is live), for a store
    /// writing a [`super::Change::Lease`]; marks it as stored, so that deleting the job later
    /// removes the record too.
    pub fn lease_record(&mut self, id: JobId) -> Option<StatusRecord<'_>> {
        let s = self.jobs.get_mut(&id.0)?;
        if s.state != JobState::Active {
            return None;
        }
        s.status_stored = true;
        self.status_record(id)
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

    /// Starts restoring about `n` jobs on open (see [`Restore`]).
    pub fn restore(&mut self, n: usize) -> Restore<'_> {
        self.jobs.reserve(n);
        Restore {
            engine: self,
            ready: Vec::new(),
            completed: Vec::new(),
            dead: Vec::new(),
            scheduled: Vec::new(),
        }
    }
}

/// Restores jobs on open, one [`Restore::job`] each, and builds the ordered indexes when it
/// is dropped.
///
/// Why not insert into the indexes as jobs come: they are `BTreeSet`s, and keys inserted in
/// ascending order (ids ascend, and so do most keys built from them) leave every node a
/// little over half full, because std's B-tree splits a full node in the middle. Sorted keys
/// collected into a set are bulk-built into full nodes instead: at a million waiting jobs the
/// ready index shrinks from ~53 to ~29 bytes per job (BENCHMARKS.md, "Recovery"). Keys wait
/// in small vectors and are merged into their set whenever a vector reaches an eighth of the
/// set (merging rebuilds from sorted input too, and frees the old nodes as it goes): the
/// memory in transit stays a fraction of the index's, and the rebuilds add up to a few
/// passes over it. The rest is merged on drop, so a restore that stops at an error still
/// leaves every restored job in its index.
pub struct Restore<'a> {
    engine: &'a mut Engine,
    /// Ready keys of ungrouped waiting jobs, per queue index.
    ready: Vec<Vec<ReadyKey>>,
    /// `(finished_at, id)` of completed jobs, per queue index.
    completed: Vec<Vec<(u64, u64)>>,
    /// `(finished_at, id)` of dead and cancelled jobs, per queue index.
    dead: Vec<Vec<(u64, u64)>>,
    /// `(run_at, id)` of scheduled jobs and failed jobs awaiting their retry.
    scheduled: Vec<(u64, u64)>,
}

/// The vector of queue `at`, growing the outer vector as queues appear.
fn of_queue<T>(per_queue: &mut Vec<Vec<T>>, at: u32) -> &mut Vec<T> {
    let at = at as usize;
    if per_queue.len() <= at {
        per_queue.resize_with(at + 1, Vec::new);
    }
    &mut per_queue[at]
}

/// Stages `key` for `set`, merging the staged keys in once there are enough of them.
fn stage<T: Ord>(set: &mut BTreeSet<T>, staged: &mut Vec<T>, key: T) {
    staged.push(key);
    if staged.len() >= (set.len() / 8).max(4096) {
        build(set, std::mem::take(staged));
    }
}

/// Bulk-builds `keys` into `set` (which may already hold keys: the two are merged, and the
/// result is built from sorted input too).
fn build<T: Ord>(set: &mut BTreeSet<T>, keys: Vec<T>) {
    if keys.is_empty() {
        return;
    }
    let mut built: BTreeSet<T> = keys.into_iter().collect();
    set.append(&mut built);
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let e = &mut *self.engine;
        for (q, keys) in std::mem::take(&mut self.ready).into_iter().enumerate() {
            build(&mut e.queues[q].ready, keys);
        }
        for (q, keys) in std::mem::take(&mut self.completed).into_iter().enumerate() {
            build(&mut e.queues[q].completed, keys);
        }
        for (q, keys) in std::mem::take(&mut self.dead).into_iter().enumerate() {
            build(&mut e.queues[q].dead, keys);
        }
        build(&mut e.scheduled, std::mem::take(&mut self.scheduled));
    }
}

impl Restore<'_> {
    /// Restores one job. Jobs must come in increasing id order (so ordered groups keep
    /// enqueue order). A job that was active when the store closed keeps its lease when the
    /// lease was recorded (it lives on until its deadline, and then its attempt counts as
    /// failed); without a recorded lease it is waiting again and simply delivered again.
    pub fn job(
        &mut self,
        id: JobId,
        spec: SpecRecord<'_>,
        status: Option<StatusRecord<'_>>,
        now: u64,
    ) -> Result<()> {
        let id = self.insert(id, spec, status, now)?;
        let e = &mut *self.engine;
        let s = &e.jobs[&id];
        let (q, run_at, finished_at) = (s.queue, s.run_at, s.finished_at);
        match s.state {
            JobState::Scheduled | JobState::Failed => {
                stage(&mut e.scheduled, &mut self.scheduled, (run_at, id));
            }
            JobState::Waiting if s.group().is_none() => {
                let key = e.ready_key(id);
                let staged = of_queue(&mut self.ready, q);
                stage(&mut e.queues[q as usize].ready, staged, key);
            }
            JobState::Completed => {
                let staged = of_queue(&mut self.completed, q);
                stage(
                    &mut e.queues[q as usize].completed,
                    staged,
                    (finished_at, id),
                );
            }
            JobState::Dead | JobState::Cancelled => {
                let staged = of_queue(&mut self.dead, q);
                stage(&mut e.queues[q as usize].dead, staged, (finished_at, id));
            }
            // Grouped waiting jobs go through their group's bookkeeping now.
            JobState::Waiting => e.place(id),
            // A job whose lease was recorded is still leased: its worker's ack is accepted
            // until the lease's deadline, and an expiry counts the attempt.
            JobState::Active => {
                e.place(id);
                if let Some(g) = e.jobs[&id].group().cloned() {
                    if let Some(gs) = e.groups.get_mut(&(q, g.clone())) {
                        gs.active.push(id);
                    }
                    e.refresh_group(q, g);
                }
            }
        }
        Ok(())
    }

    /// Puts job `id` into the job map and the bookkeeping that is not an ordered index;
    /// returns its id.
    fn insert(
        &mut self,
        id: JobId,
        spec: SpecRecord<'_>,
        status: Option<StatusRecord<'_>>,
        now: u64,
    ) -> Result<u64> {
        let engine = &mut *self.engine;
        if engine.jobs.contains_key(&id.0) {
            return Err(Error::storage(format!("job {id} restored twice")));
        }
        let q = engine.queue_idx(&spec.queue);
        let kind = engine.kind_idx(&spec.kind);
        let status_stored = status.is_some();
        let mut lease = (0, 0);
        let (mut state, attempt, run_at, started_at, finished_at, result, progress, errors) =
            match status {
                Some(st) => {
                    lease = (st.lease_id, st.deadline);
                    (
                        JobState::from_u8(st.state).ok_or_else(|| {
                            Error::storage(format!("job {id}: unknown state {}", st.state))
                        })?,
                        st.attempt,
                        st.run_at,
                        st.started_at,
                        st.finished_at,
                        st.result.map(|r| r.into_owned().into_boxed_str()),
                        st.progress.map(|r| r.into_owned().into_boxed_str()),
                        st.errors.into_owned(),
                    )
                }
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
        if state == JobState::Active && lease.0 == 0 {
            // Written before leases were recorded: nobody can quote its lease, so it is
            // delivered again, and the attempt it was on does not count.
            state = JobState::Waiting;
            lease = (0, 0);
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
            lease_id: lease.0,
            deadline: lease.1,
            started_at,
            finished_at,
            payload: spec.payload.into_owned().into_boxed_str(),
            extra: (!is_plain).then(|| Box::new(extra)),
            status_stored,
        };
        let unique = slot.extra.as_ref().and_then(|e| e.unique_key.clone());
        engine.held_bytes += super::JOB_OVERHEAD_BYTES + slot.payload.len() as u64;
        engine.jobs.insert(id.0, slot);
        engine.next_id = engine.next_id.max(id.0 + 1);
        engine.all_ids.insert(id.0);
        engine.track(id.0);
        if let Some(g) = group {
            if !state.is_terminal() {
                engine
                    .groups
                    .entry((q, g))
                    .or_default()
                    .pending
                    .insert(id.0);
            }
        }
        if let Some(k) = unique {
            if engine.unique_live(id.0, now) {
                engine.unique.insert((q, k), id.0);
            }
        }
        Ok(id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ack, Fail, Limits, NewJob, Payload};

    fn job(i: u64, delay_ms: Option<u64>) -> NewJob {
        let mut j = NewJob::new(
            "q",
            "k",
            Payload::json(&serde_json::json!({ "i": i })).unwrap(),
        );
        j.priority = (i % 3) as i32; // keys that do not simply follow the ids
        j.delay_ms = delay_ms;
        j
    }

    /// A restore that goes through many staged merges (20,000 waiting jobs, a few thousand
    /// in every other index) rebuilds an engine that orders and counts exactly like the one
    /// whose records it read.
    #[test]
    fn a_restored_engine_orders_and_counts_like_the_original() {
        let mut a = Engine::new(Limits::default(), 1);
        let now = 1_000;
        for chunk in 0..2 {
            let jobs = (chunk * 10_000..(chunk + 1) * 10_000).map(|i| job(i, None));
            a.enqueue(jobs.collect(), now).unwrap();
        }
        a.enqueue((0..3_000).map(|i| job(i, Some(60_000))).collect(), now)
            .unwrap();
        let done = a.fetch(&["q"], 5_000, now);
        let acks = done.iter().map(Ack::of);
        assert_eq!(a.ack(acks.collect(), now).unwrap().applied, 5_000);
        let doomed = a.fetch(&["q"], 1_000, now);
        let fails = doomed.iter().map(|f| Fail {
            id: f.id,
            lease_id: f.lease_id,
            error: "no".into(),
            retry: false,
        });
        assert_eq!(a.fail(fails.collect(), now).unwrap().applied, 1_000);

        let mut b = Engine::new(Limits::default(), 1);
        {
            let mut r = b.restore(a.jobs.len());
            for id in 1..a.next_id() {
                if let Some(spec) = a.spec_record(JobId(id)) {
                    r.job(JobId(id), spec, a.status_record(JobId(id)), now)
                        .unwrap();
                }
            }
        }
        let (sa, sb) = (a.queue_stats("q", now), b.queue_stats("q", now));
        assert_eq!(sa.map(|s| s.counts), sb.map(|s| s.counts));
        let ids = |e: &mut Engine, at| {
            let mut all = Vec::new();
            loop {
                let got = e.fetch(&["q"], 10_000, at);
                if got.is_empty() {
                    return all;
                }
                all.extend(got.iter().map(|f| f.id));
            }
        };
        let waiting = ids(&mut a, now);
        assert_eq!(waiting.len(), 14_000);
        assert_eq!(waiting, ids(&mut b, now), "the same jobs in the same order");
        let later = now + 120_000;
        // The delayed jobs come due, and the leases taken above expire: in both alike.
        let due = ids(&mut a, later);
        assert_eq!(due.iter().filter(|id| id.0 > 20_000).count(), 3_000);
        assert_eq!(due, ids(&mut b, later));
    }
}
