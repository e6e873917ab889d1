//! Enqueue: every job of a batch is checked first (one bad job refuses the batch with
//! nothing changed), then load shedding, then the jobs go in.

use super::*;

impl Engine {
    /// Enqueues a batch atomically: every job is checked first, and one bad job refuses the
    /// whole batch with nothing changed. Returns one id per job, in order; a job whose unique
    /// key is live returns the existing job's id.
    pub fn enqueue(&mut self, jobs: Vec<NewJob>, now: u64) -> Result<Vec<JobId>> {
        super::lease::check_batch_size("jobs", jobs.len(), &self.limits)?;
        for job in &jobs {
            self.validate_new(job, now)?;
        }
        // Load shedding: refuse the whole batch if it would take a queue past its depth.
        let mut per_queue: Vec<(u32, u64)> = Vec::new();
        for job in &jobs {
            if let Some(q) = self.find_queue(&job.queue) {
                match per_queue.iter_mut().find(|(pq, _)| *pq == q) {
                    Some((_, n)) => *n += 1,
                    None => per_queue.push((q, 1)),
                }
            }
        }
        for &(q, n) in &per_queue {
            self.check_depth(q, n, now)?;
        }
        let budget = self.limits.max_memory_bytes;
        if budget > 0 {
            let adding: u64 = jobs
                .iter()
                .map(|j| JOB_OVERHEAD_BYTES + j.payload.len() as u64)
                .sum();
            if self.held_bytes + adding > budget {
                return Err(Error::Overloaded {
                    queue: jobs.first().map(|j| j.queue.clone()).unwrap_or_default(),
                    depth: self.jobs.len() as u64,
                    max_depth: 0,
                    retry_after_ms: 5_000,
                });
            }
        }
        let mut ids = Vec::with_capacity(jobs.len());
        for job in jobs {
            ids.push(self.insert_new(job, now));
        }
        Ok(ids)
    }

    pub(super) fn validate_new(&self, job: &NewJob, now: u64) -> Result<()> {
        validate_new_job(job, &self.limits, now)
    }

    pub(super) fn insert_new(&mut self, job: NewJob, now: u64) -> JobId {
        let q = self.queue_idx(&job.queue);
        if let Some(key) = &job.unique_key {
            if let Some(&existing) = self.unique.get(&(q, key.as_str().into())) {
                if self.unique_live(existing, now) {
                    return JobId(existing);
                }
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let cfg = &self.queues[q as usize].config;
        let run_at = match (job.delay_ms, job.run_at_ms) {
            (Some(d), _) => now.saturating_add(d),
            (None, Some(at)) => at.max(now),
            (None, None) => now,
        };
        let max_attempts = job.max_attempts.unwrap_or(cfg.max_attempts);
        let timeout_ms = job.timeout_ms.unwrap_or(cfg.timeout_ms);
        let has_extra = job.backoff.is_some()
            || job.unique_key.is_some()
            || job.group.is_some()
            || !job.tags.is_empty();
        let group: Option<Arc<str>> = job.group.map(Arc::from);
        let extra = has_extra.then(|| {
            Box::new(Extra {
                backoff: job.backoff,
                unique_until: match (&job.unique_key, job.unique_window_ms) {
                    (Some(_), Some(w)) => now.saturating_add(w),
                    _ => 0,
                },
                unique_key: job.unique_key.map(String::into_boxed_str),
                group: group.clone(),
                tags: job.tags.into_iter().map(String::into_boxed_str).collect(),
                ..Default::default()
            })
        });
        let kind = self.kind_idx(&job.kind);
        let state = if run_at > now {
            JobState::Scheduled
        } else {
            JobState::Waiting
        };
        let slot = Slot {
            queue: q,
            kind,
            state,
            attempt: 0,
            max_attempts: max_attempts as u16,
            priority: job.priority,
            cost: job.cost,
            timeout_ms,
            created_at: now,
            run_at,
            lease_id: 0,
            deadline: 0,
            started_at: 0,
            finished_at: 0,
            payload: job.payload.into_inner(),
            extra,
            status_stored: false,
        };
        if let Some(key) = slot.extra.as_ref().and_then(|e| e.unique_key.clone()) {
            self.unique.insert((q, key), id);
        }
        self.held_bytes += JOB_OVERHEAD_BYTES + slot.payload.len() as u64;
        self.jobs.insert(id, slot);
        self.all_ids.insert(id);
        self.track(id);
        if let Some(g) = group {
            self.groups.entry((q, g)).or_default().pending.insert(id);
        }
        self.place(id);
        self.changes.push(Change::Insert(JobId(id)));
        self.bump(q, now, |a| a.enqueued += 1);
        self.queues[q as usize].flow.enqueued.add(now, 1);
        JobId(id)
    }

    /// Whether a unique key pointing at `id` still deduplicates at `now`.
    pub(super) fn unique_live(&self, id: u64, now: u64) -> bool {
        match self.jobs.get(&id) {
            None => false,
            Some(s) => {
                !s.state.is_terminal() || s.extra.as_ref().is_some_and(|e| now < e.unique_until)
            }
        }
    }
}

/// Refuses a JSON document nested deeper than [`Limits::max_payload_depth`]: many parsers a
/// worker may use recurse per level and overflow their stack long before Weir's limit on
/// size would stop such a document.
pub(super) fn check_depth_of(field: &'static str, json: &str, limits: &Limits) -> Result<()> {
    let max = limits.max_payload_depth;
    if max > 0 && crate::job::nesting_exceeds(json, max) {
        return Err(Error::invalid(
            field,
            format!("nested more than {max} levels deep (the limit is max_payload_depth)"),
        ));
    }
    Ok(())
}

/// Checks one job as every backend must before it stores it: the queue name, sizes, nesting
/// depth, durations, keys and tags against `limits`. What the store itself decides (load
/// shedding, unique keys) is not checked here.
pub fn validate_new_job(job: &NewJob, l: &Limits, now: u64) -> Result<()> {
    check_queue_name(&job.queue)?;
    if job.kind.is_empty() || job.kind.len() > 128 {
        return Err(Error::invalid("kind", "must be 1 to 128 bytes"));
    }
    if job.payload.len() > l.max_payload_bytes {
        return Err(Error::TooLarge {
            field: "payload",
            size: job.payload.len(),
            limit: l.max_payload_bytes,
        });
    }
    if job.payload.is_empty() {
        return Err(Error::invalid("payload", "empty"));
    }
    check_depth_of("payload", job.payload.as_str(), l)?;
    if job.delay_ms.is_some() && job.run_at_ms.is_some() {
        return Err(Error::invalid(
            "delay_ms",
            "give delay_ms or run_at, not both",
        ));
    }
    if let Some(d) = job.delay_ms {
        if d > l.max_duration_ms {
            return Err(Error::invalid(
                "delay_ms",
                format!("{d} ms over the limit {}", l.max_duration_ms),
            ));
        }
    }
    if let Some(at) = job.run_at_ms {
        if at > now.saturating_add(l.max_duration_ms) {
            return Err(Error::invalid(
                "run_at",
                "further ahead than the maximum duration",
            ));
        }
    }
    if let Some(n) = job.max_attempts {
        check_attempts(n, l)?;
    }
    if let Some(t) = job.timeout_ms {
        check_timeout(t, l)?;
    }
    if let Some(b) = &job.backoff {
        check_backoff(b, l)?;
    }
    for (field, key) in [("unique_key", &job.unique_key), ("group", &job.group)] {
        if let Some(k) = key {
            if k.is_empty() || k.len() > l.max_key_bytes {
                return Err(Error::invalid(
                    field,
                    format!("must be 1 to {} bytes", l.max_key_bytes),
                ));
            }
        }
    }
    if let Some(w) = job.unique_window_ms {
        if job.unique_key.is_none() {
            return Err(Error::invalid("unique_window_ms", "needs a unique_key"));
        }
        if w > l.max_duration_ms {
            return Err(Error::invalid(
                "unique_window_ms",
                "over the maximum duration",
            ));
        }
    }
    if job.tags.len() > l.max_tags {
        return Err(Error::invalid("tags", format!("more than {}", l.max_tags)));
    }
    if job
        .tags
        .iter()
        .any(|t| t.is_empty() || t.len() > l.max_key_bytes)
    {
        return Err(Error::invalid(
            "tags",
            "each must be 1 to max_key_bytes bytes",
        ));
    }
    Ok(())
}
