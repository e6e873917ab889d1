//! Leases: fetch (within each queue's limits), heartbeat, ack, fail and release, each
//! checked against the job's live lease.

use super::*;

impl Engine {
    /// Leases up to `max` ready jobs from `queues`, each queue in its own order, within each
    /// queue's concurrency limit, rate limit and breaker. Without weights the queues are
    /// served in the order given (earlier queues first); when any of them has a weight,
    /// capacity is shared in proportion to weights, rounds of `weight` jobs per queue, a
    /// starving queue's weight quadrupled. Unknown and paused queues give nothing. Due
    /// scheduled jobs are promoted and expired leases reclaimed first.
    pub fn fetch(&mut self, queues: &[&str], max: usize, now: u64) -> Vec<FetchedJob> {
        self.tick(now);
        let max = max.min(self.limits.max_batch);
        let mut out = Vec::with_capacity(max.min(256));
        // (queue, jobs it may still hand out, weight per round)
        let mut cands: Vec<(u32, usize, usize)> = Vec::with_capacity(queues.len());
        let mut weighted = false;
        for name in queues {
            let Some(q) = self.find_queue(name) else {
                continue;
            };
            if self.queues[q as usize].config.paused || cands.iter().any(|c| c.0 == q) {
                continue;
            }
            let allow = self.allowance(q, now);
            let qs = &self.queues[q as usize];
            weighted |= qs.config.weight > 0;
            let boost = if qs.flow.starving_since.is_some() {
                4
            } else {
                1
            };
            cands.push((q, allow, qs.config.weight.max(1) as usize * boost));
        }
        if !weighted {
            for c in &mut cands {
                self.take_ready(c, max - out.len(), &mut out, now);
                if out.len() == max {
                    break;
                }
            }
        } else {
            loop {
                let before = out.len();
                for c in &mut cands {
                    let room = max - out.len();
                    let quantum = c.2.min(room);
                    self.take_ready(c, quantum, &mut out, now);
                    if out.len() == max {
                        return out;
                    }
                }
                if out.len() == before {
                    break;
                }
            }
        }
        out
    }

    /// Leases up to `n` ready jobs of candidate `c` within its allowance.
    pub(super) fn take_ready(
        &mut self,
        c: &mut (u32, usize, usize),
        n: usize,
        out: &mut Vec<FetchedJob>,
        now: u64,
    ) {
        let q = c.0;
        let mut taken = 0;
        while taken < n.min(c.1) {
            let Some(key) = self.queues[q as usize].ready.first().copied() else {
                break;
            };
            out.push(self.lease(key.id, now));
            taken += 1;
        }
        c.1 -= taken;
        self.consume_allowance(q, taken, now);
    }

    pub(super) fn lease(&mut self, id: u64, now: u64) -> FetchedJob {
        let mut lease_id = self.rng.u64(1..=MAX_LEASE_ID);
        while self.jobs.get(&id).is_some_and(|s| s.lease_id == lease_id) {
            lease_id = self.rng.u64(1..=MAX_LEASE_ID);
        }
        let ready_at = self.jobs.get(&id).map_or(now, |s| s.run_at);
        self.now = self.now.max(now);
        self.consume_group_token(id, now);
        self.transition(id, JobState::Active, |s| {
            s.attempt = s.attempt.saturating_add(1);
            s.lease_id = lease_id;
            s.deadline = now.saturating_add(s.timeout_ms);
            s.started_at = now;
        });
        // The grant is reported for the store to record if the job is still leased a commit
        // later: after a restart the lease lives on, after a crash its attempt still counts,
        // and a job acked within a commit or two costs no write for its lease at all.
        self.changes.push(Change::Lease(JobId(id)));
        let q = self.jobs[&id].queue;
        self.queues[q as usize]
            .wait_hist
            .observe(now.saturating_sub(ready_at));
        self.bump(q, now, |a| {
            a.started += 1;
            a.wait_ms_sum += now.saturating_sub(ready_at);
        });
        let s = &self.jobs[&id];
        FetchedJob {
            id: JobId(id),
            queue: self.queues[s.queue as usize].name.to_string(),
            kind: self.kinds[s.kind as usize].to_string(),
            payload: Payload::from_stored(s.payload.clone()),
            attempt: u32::from(s.attempt),
            lease_id,
            lease_deadline_ms: s.deadline,
        }
    }

    /// Checks that `lease_id` is the live lease of active job `id`.
    pub(super) fn check_lease(&self, id: JobId, lease_id: u64, now: u64) -> Result<()> {
        let s = self.jobs.get(&id.0).ok_or(Error::JobNotFound(id))?;
        if s.lease_id != lease_id || lease_id == 0 {
            return Err(Error::LeaseMismatch(id));
        }
        if s.state != JobState::Active || s.deadline <= now {
            return Err(Error::LeaseExpired(id));
        }
        Ok(())
    }

    pub(super) fn check_doc(&self, field: &'static str, doc: Option<&Payload>) -> Result<()> {
        check_document(field, doc, &self.limits)
    }

    /// Extends a live lease by the job's timeout from `now` and records progress.
    /// Returns the new deadline.
    pub fn heartbeat(
        &mut self,
        id: JobId,
        lease_id: u64,
        progress: Option<Payload>,
        now: u64,
    ) -> Result<u64> {
        self.check_lease(id, lease_id, now)?;
        self.check_doc("progress", progress.as_ref())?;
        let s = &self.jobs[&id.0];
        let (old, new) = (s.deadline, now.saturating_add(s.timeout_ms).max(s.deadline));
        self.leases.remove(&(old, id.0));
        self.leases.insert((new, id.0));
        if let Some(s) = self.jobs.get_mut(&id.0) {
            s.deadline = new;
            match progress {
                Some(p) => {
                    s.extra_mut().progress = Some(p.into_inner());
                    self.updated(id.0);
                }
                // The new deadline is recorded like a grant, so a restart keeps it.
                None => self.changes.push(Change::Lease(id)),
            }
        }
        Ok(new)
    }

    /// Whether completing these jobs could let another job start: one of them holds a slot
    /// of its queue's concurrency limit or of its group. A store wakes idle fetchers after
    /// such an ack only, not after every ack.
    pub fn acks_may_free_work(&self, acks: &[Ack]) -> bool {
        acks.iter().any(|a| {
            self.jobs.get(&a.id.0).is_some_and(|s| {
                s.state == JobState::Active
                    && (s.group().is_some() || self.queues[s.queue as usize].config.concurrency > 0)
            })
        })
    }

    /// Completes jobs under their live leases. Each refused ack changes nothing.
    pub fn ack(&mut self, acks: Vec<Ack>, now: u64) -> Result<BatchOutcome> {
        self.check_batch("acks", acks.len())?;
        let mut out = BatchOutcome::default();
        for a in acks {
            let checked = self
                .check_lease(a.id, a.lease_id, now)
                .and_then(|()| self.check_doc("result", a.result.as_ref()));
            if let Err(e) = checked {
                out.rejected.push(rejection(a.id, e));
                continue;
            }
            let id = a.id.0;
            self.transition(id, JobState::Completed, |s| {
                s.finished_at = now;
                if let Some(r) = a.result {
                    s.extra_mut().result = Some(r.into_inner());
                }
            });
            let s = &self.jobs[&id];
            let (q, run) = (s.queue, now.saturating_sub(s.started_at));
            self.release_unique(id);
            self.queues[q as usize].run_hist.observe(run);
            self.flow_completed(q, run, now);
            self.bump(q, now, |agg| {
                agg.completed += 1;
                agg.run_ms_sum += run;
                agg.run_ms_max = agg.run_ms_max.max(run);
            });
            // A queue that keeps no completed jobs drops this one now, as BullMQ's
            // `removeOnComplete` does: one spec tombstone instead of a status write now and
            // two tombstones at the next retention sweep.
            let keep = self.queues[q as usize].config.retention;
            if keep.completed_max == 0 || keep.completed_ms == 0 {
                self.delete(id);
            } else {
                self.updated(id);
            }
            out.applied += 1;
        }
        Ok(out)
    }

    /// Notes that job `id`'s status record must be written.
    pub(super) fn updated(&mut self, id: u64) {
        if let Some(s) = self.jobs.get_mut(&id) {
            s.status_stored = true;
        }
        self.changes.push(Change::Update(JobId(id)));
    }

    /// Records failed attempts under their live leases: a retryable failure with attempts
    /// left waits out its backoff in `Failed`; any other goes `Dead`. Each refused fail
    /// changes nothing.
    pub fn fail(&mut self, fails: Vec<Fail>, now: u64) -> Result<BatchOutcome> {
        self.check_batch("fails", fails.len())?;
        let mut out = BatchOutcome::default();
        for f in fails {
            if let Err(e) = self.check_lease(f.id, f.lease_id, now) {
                out.rejected.push(rejection(f.id, e));
                continue;
            }
            self.fail_attempt(f.id.0, f.error, f.retry, now, false);
            out.applied += 1;
        }
        Ok(out)
    }

    /// Ends the current attempt of an active job as failed (a worker's fail, or an expired
    /// lease when `expired`).
    pub(crate) fn fail_attempt(
        &mut self,
        id: u64,
        error: String,
        retry: bool,
        now: u64,
        expired: bool,
    ) {
        let Some(s) = self.jobs.get(&id) else {
            return;
        };
        let q = s.queue;
        let attempt = u32::from(s.attempt);
        let exhausted = attempt >= u32::from(s.max_attempts);
        self.flow_failed(q, now);
        let Some(s) = self.jobs.get(&id) else {
            return;
        };
        let mut message = error;
        truncate_utf8(&mut message, self.limits.max_key_bytes.max(4096));
        let err = AttemptError {
            attempt,
            at_ms: now,
            message,
        };
        let push_err = move |s: &mut Slot| {
            let errors = &mut s.extra_mut().errors;
            if errors.len() == MAX_ERRORS_KEPT {
                errors.remove(0);
            }
            errors.push(err);
        };
        if retry && !exhausted {
            if expired {
                // The lease expired: back to waiting at once, keeping its place in line.
                self.transition(id, JobState::Waiting, push_err);
            } else {
                let backoff = s
                    .extra
                    .as_ref()
                    .and_then(|e| e.backoff)
                    .unwrap_or(self.queues[q as usize].config.backoff);
                let delay = self.rng.u64(0..=backoff.ceiling_ms(attempt));
                self.transition(id, JobState::Failed, |s| {
                    push_err(s);
                    s.run_at = now.saturating_add(delay);
                });
            }
            self.bump(q, now, |a| {
                a.failed += 1;
                a.expired += u64::from(expired);
            });
        } else {
            self.transition(id, JobState::Dead, |s| {
                push_err(s);
                s.finished_at = now;
            });
            self.release_unique(id);
            self.bump(q, now, |a| {
                a.failed += 1;
                a.expired += u64::from(expired);
                a.dead += 1;
            });
        }
        self.updated(id);
    }

    pub(super) fn check_batch(&self, field: &'static str, n: usize) -> Result<()> {
        check_batch_size(field, n, &self.limits)
    }

    /// Drops a finished job's unique key unless a window keeps it alive.
    pub(super) fn release_unique(&mut self, id: u64) {
        let Some(s) = self.jobs.get(&id) else {
            return;
        };
        let Some(e) = s.extra.as_ref() else {
            return;
        };
        let Some(k) = e.unique_key.as_ref() else {
            return;
        };
        if e.unique_until == 0 {
            let key = (s.queue, k.clone());
            if self.unique.get(&key) == Some(&id) {
                self.unique.remove(&key);
            }
        }
    }

    /// Gives a live lease back without counting the attempt: the job is waiting again at
    /// once, with no backoff and no error recorded (a worker shutting down mid-job). The
    /// lease is dead afterwards: an ack or fail quoting it is refused.
    pub fn release(&mut self, id: JobId, lease_id: u64, now: u64) -> Result<()> {
        self.check_lease(id, lease_id, now)?;
        self.transition(id.0, JobState::Waiting, |s| {
            s.attempt = s.attempt.saturating_sub(1);
            s.run_at = now;
        });
        self.updated(id.0);
        Ok(())
    }
}

fn rejection(id: JobId, e: Error) -> Rejection {
    Rejection {
        id,
        reason: e.kind(),
        message: e.to_string(),
    }
}

pub(super) fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Checks a result or progress document as every backend must: its size and nesting depth.
pub fn check_document(field: &'static str, doc: Option<&Payload>, limits: &Limits) -> Result<()> {
    match doc {
        Some(p) if p.len() > limits.max_payload_bytes => Err(Error::TooLarge {
            field,
            size: p.len(),
            limit: limits.max_payload_bytes,
        }),
        Some(p) => super::enqueue::check_depth_of(field, p.as_str(), limits),
        None => Ok(()),
    }
}

/// Refuses a batch (of jobs, acks, fails) larger than `limits.max_batch`.
pub fn check_batch_size(field: &'static str, n: usize, limits: &Limits) -> Result<()> {
    if n > limits.max_batch {
        return Err(Error::invalid(
            field,
            format!("batch of {n} over the limit {}", limits.max_batch),
        ));
    }
    Ok(())
}
