//! The queue engine: every job's state, the indexes that schedule them, and the state machine.
//!
//! Pure and deterministic: no I/O, no threads, no system clock. Each operation takes `now`
//! (ms since the epoch) and randomness comes from a seeded generator, so a sequence of calls
//! always gives the same result. A store wraps the engine, persists what it reports in
//! [`Engine::take_changes`], and rebuilds it on open with [`Engine::restore`].
//!
//! # Invariants (checked by [`Engine::check_invariants`])
//! 1. Every job is in exactly one state, and in exactly the index of that state: `Scheduled`
//!    and `Failed` in `scheduled` by `(run_at, id)`; `Active` in `leases` by
//!    `(deadline, id)`; `Completed` in its queue's `completed`; `Dead` and `Cancelled` in its
//!    queue's `dead`; `Waiting` in its queue's `ready` index unless its group holds it back.
//! 2. A group has at most `group_concurrency` (`g`, default 1) `Active` jobs, and its ready
//!    jobs are exactly the ones it may start now: with `g = 1` (an ordered group), its
//!    lowest-id unfinished job if that one is waiting and nothing of the group is active,
//!    else none; above 1, its lowest-id waiting jobs, as many as `g` less its active ones
//!    (and its per-key rate limit) allow.
//! 3. A job holds at most one lease: a new grant replaces the lease id, and every other lease
//!    id is refused.
//! 4. Per-queue state counts equal the number of jobs in each state.
//! 5. Each queue's id set of a state holds exactly the ids of its jobs in that state, its
//!    ready-time index counts exactly its waiting jobs by ready time, and the set of all ids
//!    holds exactly the jobs held.
//!
//! # Ordering and aging
//! The ready index sorts by `(rank, cost, id)` ascending with
//! `rank = floor(ready_at / aging_ms) - priority`. That is the same order as "effective
//! priority `priority + (aging boundaries passed since ready_at)`, highest first", but the
//! key never changes while a job waits: `now` cancels out of every comparison. So aging costs
//! nothing per tick and fetch stays `O(log n)`.

mod flow;
mod invariants;
pub mod maintenance;
mod read;
mod restore;
pub use restore::Restore;

use crate::aggregate::{Aggregate, HOUR_MS};
use crate::config::ConfigPatch;
use crate::config::{check_attempts, check_backoff, check_queue_name, check_timeout};
use crate::job::{
    Ack, AttemptError, Backoff, BatchOutcome, Fail, FetchedJob, JobId, JobState, NewJob, Payload,
    Rejection,
};
use crate::{Error, LatencyHistogram, Limits, Order, QueueConfig, Result};
use roaring::RoaringTreemap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use flow::FlowEvent;
pub use read::{JobFilter, JobPage, QueueStats};

/// Largest lease id: 2^53 - 1, so lease ids survive JSON clients that read numbers as
/// doubles (JavaScript, jq) exactly.
pub const MAX_LEASE_ID: u64 = (1 << 53) - 1;

/// Most errors kept per job; older ones are dropped.
const MAX_ERRORS_KEPT: usize = 32;

/// What changed, for the store to persist. Job changes name the job; the store reads the
/// current records with [`Engine::spec_record`] and [`Engine::status_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new job: write its spec (its status is implied until the first update).
    Insert(JobId),
    /// A job's status changed: write its status record.
    Update(JobId),
    /// A job was deleted (by retention, or at its ack when its queue keeps no completed
    /// jobs): delete its spec, and its status record when one was ever written.
    Delete {
        /// The job.
        id: JobId,
        /// Whether a status record was written for it (else only the spec is removed).
        status: bool,
    },
    /// A queue's configuration changed.
    Queue(u32),
    /// An hourly aggregate changed: `(queue index, hour start)`.
    Aggregate(u32, u64),
}

/// A job as the engine keeps it: compact, with rarely used fields behind one pointer.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) queue: u32,
    pub(crate) kind: u32,
    pub(crate) state: JobState,
    pub(crate) attempt: u16,
    pub(crate) max_attempts: u16,
    pub(crate) priority: i32,
    pub(crate) cost: u64,
    pub(crate) timeout_ms: u64,
    pub(crate) created_at: u64,
    /// Due time while `Scheduled` or `Failed`; ready time while `Waiting` (the aging origin).
    pub(crate) run_at: u64,
    /// The current (or last) lease id; 0 before the first fetch.
    pub(crate) lease_id: u64,
    /// While `Active`: the lease deadline.
    pub(crate) deadline: u64,
    pub(crate) started_at: u64,
    pub(crate) finished_at: u64,
    pub(crate) payload: Box<str>,
    pub(crate) extra: Option<Box<Extra>>,
    /// Whether a status record was ever written (or recovered) for this job: deleting a job
    /// that never had one removes its spec alone — one tombstone instead of two.
    pub(crate) status_stored: bool,
}

/// The fields most jobs leave empty.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extra {
    pub(crate) backoff: Option<Backoff>,
    pub(crate) unique_key: Option<Box<str>>,
    pub(crate) unique_until: u64,
    pub(crate) group: Option<Arc<str>>,
    pub(crate) tags: Vec<Box<str>>,
    pub(crate) result: Option<Box<str>>,
    pub(crate) progress: Option<Box<str>>,
    pub(crate) errors: Vec<AttemptError>,
}

impl Slot {
    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    pub(crate) fn group(&self) -> Option<&Arc<str>> {
        self.extra.as_ref().and_then(|e| e.group.as_ref())
    }
}

/// Key of the per-queue ready index; see the module docs for the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ReadyKey {
    rank: i64,
    cost: u64,
    id: u64,
}

/// One group's scheduling state. With the queue's `group_concurrency` at 1 (the default)
/// the group is ordered: one job at a time, in enqueue order. Above 1 it is a per-key
/// concurrency limit: up to that many of its jobs run at once, taken in enqueue order.
#[derive(Debug, Default)]
pub(crate) struct GroupState {
    /// Ids of the group's unfinished jobs (enqueue order is id order).
    pub(crate) pending: BTreeSet<u64>,
    /// The jobs running now (at most `group_concurrency`).
    pub(crate) active: Vec<u64>,
    /// The jobs in the ready index now (at most `group_concurrency` less the active ones).
    pub(crate) ready: Vec<u64>,
}

pub(crate) struct QueueState {
    pub(crate) name: Arc<str>,
    pub(crate) config: QueueConfig,
    /// Whether the configuration was set explicitly (and so is persisted).
    pub(crate) configured: bool,
    pub(crate) ready: BTreeSet<ReadyKey>,
    pub(crate) completed: BTreeSet<(u64, u64)>,
    pub(crate) dead: BTreeSet<(u64, u64)>,
    pub(crate) counts: [u64; 7],
    /// Ready-to-start waits of started attempts (in memory only).
    pub(crate) wait_hist: LatencyHistogram,
    /// Run times of completed jobs (in memory only).
    pub(crate) run_hist: LatencyHistogram,
    /// Flow-control runtime state (in memory only).
    pub(crate) flow: flow::FlowState,
    /// Ready times of every waiting job, grouped or not, with how many jobs share each:
    /// its first key is when the oldest waiting job became ready, in `O(log n)`. Jobs that
    /// become ready together share an entry, so a burst costs a few entries, not one a job.
    pub(crate) waiting_since: BTreeMap<u64, u32>,
    /// Ids of the queue's jobs in each state, indexed by `JobState as usize`: a page of
    /// one queue's jobs in one state is a walk from the cursor, not a scan of every job.
    /// Compressed bitmaps: ids are dense, so this costs a bit or two per job.
    pub(crate) ids: [RoaringTreemap; 7],
}

pub(crate) type JobMap = indexmap::IndexMap<u64, Slot, rustc_hash::FxBuildHasher>;

/// A hash map keyed by strings a client chooses (queue names, kinds, unique keys, group
/// keys). FxHash, which the id-keyed job map uses, is unseeded: a client could pick keys
/// that all land in one bucket and turn every lookup into a scan. foldhash seeded from the
/// engine's seed resists that (as the cache's memory tier does) and keeps the engine
/// deterministic: the same seed gives the same maps.
pub(crate) type KeyMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

/// The hasher of every [`KeyMap`] of an engine seeded with `seed`: a different seed from
/// the one that draws lease ids, mixed so that neighbouring seeds hash unalike.
fn key_hasher(seed: u64) -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5745_4952)
}

/// The queue engine. See the module docs.
pub struct Engine {
    limits: Limits,
    rng: fastrand::Rng,
    next_id: u64,
    /// Every job. An index map rather than a hash map: slots live densely in one vector and
    /// the hash table holds only indices, which halves memory per job at a million jobs
    /// (a hash map of 100-byte slots rounds its capacity up to a power of two, leaving up to
    /// half of the table's slot-sized buckets empty).
    pub(crate) jobs: JobMap,
    pub(crate) queues: Vec<QueueState>,
    queue_ids: KeyMap<Arc<str>, u32>,
    pub(crate) kinds: Vec<Arc<str>>,
    kind_ids: KeyMap<Arc<str>, u32>,
    pub(crate) scheduled: BTreeSet<(u64, u64)>,
    pub(crate) leases: BTreeSet<(u64, u64)>,
    unique: KeyMap<(u32, Box<str>), u64>,
    pub(crate) groups: KeyMap<(u32, Arc<str>), GroupState>,
    /// Ids of every job held, for a listing of all jobs in id order.
    pub(crate) all_ids: RoaringTreemap,
    pub(crate) aggregates: BTreeMap<(u32, u64), Aggregate>,
    changes: Vec<Change>,
    flow_events: Vec<flow::FlowEvent>,
    /// The latest `now` any operation passed: what per-key rate limits are judged at when
    /// a transition re-derives a group's ready jobs.
    pub(crate) now: u64,
    /// Per-key rate limiter state: GCRA arrival time (µs) per `(queue, group)`. Entries
    /// whose time has passed are equal to fresh ones and are pruned, so the map holds only
    /// keys used within their last period.
    pub(crate) group_tats: KeyMap<(u32, Arc<str>), u64>,
    /// Groups held back by their per-key rate limit, by when their next token is due.
    pub(crate) throttled: BTreeSet<(u64, u32, Arc<str>)>,
    /// Size of `group_tats` after its last pruning.
    group_tats_pruned: usize,
    /// Estimated bytes of the jobs held, for [`Limits::max_memory_bytes`].
    pub(crate) held_bytes: u64,
}

/// Memory a job costs beyond its payload, for the memory budget: the measured figure of
/// `BENCHMARKS.md` (≈ 300 B per waiting job) rounded up.
pub(crate) const JOB_OVERHEAD_BYTES: u64 = 320;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("jobs", &self.jobs.len())
            .field("queues", &self.queues.len())
            .field("next_id", &self.next_id)
            .finish()
    }
}

impl Engine {
    /// An empty engine. `seed` drives lease ids and backoff jitter; give each process a
    /// random one, and tests a fixed one.
    pub fn new(limits: Limits, seed: u64) -> Self {
        let keys = key_hasher(seed);
        Engine {
            limits,
            rng: fastrand::Rng::with_seed(seed),
            next_id: 1,
            jobs: JobMap::default(),
            queues: Vec::new(),
            queue_ids: KeyMap::with_hasher(keys.clone()),
            kinds: Vec::new(),
            kind_ids: KeyMap::with_hasher(keys.clone()),
            scheduled: BTreeSet::new(),
            leases: BTreeSet::new(),
            unique: KeyMap::with_hasher(keys.clone()),
            groups: KeyMap::with_hasher(keys.clone()),
            all_ids: RoaringTreemap::new(),
            aggregates: BTreeMap::new(),
            changes: Vec::new(),
            flow_events: Vec::new(),
            now: 0,
            group_tats: KeyMap::with_hasher(keys.clone()),
            throttled: BTreeSet::new(),
            group_tats_pruned: 0,
            held_bytes: 0,
        }
    }

    /// The limits requests are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The id the next enqueued job will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Everything that changed since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Appends everything that changed since the last call to `out`, in order.
    pub fn drain_changes_into(&mut self, out: &mut Vec<Change>) {
        out.append(&mut self.changes);
    }

    /// The number of jobs held, in every state.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// True when no job is held.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    // ---- queues ------------------------------------------------------------------------

    pub(crate) fn queue_idx(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.queue_ids.get(name) {
            return i;
        }
        let i = self.queues.len() as u32;
        let name: Arc<str> = name.into();
        self.queues.push(QueueState {
            name: name.clone(),
            config: QueueConfig::default(),
            configured: false,
            ready: BTreeSet::new(),
            completed: BTreeSet::new(),
            dead: BTreeSet::new(),
            counts: [0; 7],
            wait_hist: LatencyHistogram::default(),
            run_hist: LatencyHistogram::default(),
            flow: flow::FlowState::default(),
            waiting_since: BTreeMap::new(),
            ids: Default::default(),
        });
        self.queue_ids.insert(name, i);
        i
    }

    pub(crate) fn find_queue(&self, name: &str) -> Option<u32> {
        self.queue_ids.get(name).copied()
    }

    fn kind_idx(&mut self, kind: &str) -> u32 {
        if let Some(&i) = self.kind_ids.get(kind) {
            return i;
        }
        let i = self.kinds.len() as u32;
        let k: Arc<str> = kind.into();
        self.kinds.push(k.clone());
        self.kind_ids.insert(k, i);
        i
    }

    /// Sets a queue's whole configuration, creating the queue if needed.
    pub fn queue_config_set(&mut self, name: &str, config: QueueConfig) -> Result<()> {
        check_queue_name(name)?;
        config.validate(&self.limits)?;
        let q = self.queue_idx(name);
        let qs = &mut self.queues[q as usize];
        let reorder = qs.config.order != config.order || qs.config.aging_ms != config.aging_ms;
        let regroup = qs.config.group_concurrency != config.group_concurrency
            || qs.config.group_rate_limit != config.group_rate_limit;
        qs.config = config;
        qs.configured = true;
        if reorder {
            let ids: Vec<u64> = qs.ready.iter().map(|k| k.id).collect();
            qs.ready.clear();
            for id in ids {
                let key = self.ready_key(id);
                self.queues[q as usize].ready.insert(key);
            }
        }
        if regroup {
            self.refresh_groups_of(q);
        }
        self.changes.push(Change::Queue(q));
        Ok(())
    }

    /// A queue's configuration (the default for a queue never configured).
    pub fn queue_config(&self, name: &str) -> QueueConfig {
        self.queue_config_get(name).unwrap_or_default()
    }

    /// A known queue's configuration, or `None` for a queue never seen. `O(1)`: no counts,
    /// no statistics.
    pub fn queue_config_get(&self, name: &str) -> Option<QueueConfig> {
        self.find_queue(name)
            .map(|q| self.queues[q as usize].config.clone())
    }

    /// Applies `patch` to a queue's current configuration (the defaults for a new queue)
    /// and sets the result, in one step: two patches never lose each other's keys. Returns
    /// the configuration set; a patch whose result does not validate changes nothing.
    pub fn queue_config_update(
        &mut self,
        name: &str,
        patch: &dyn ConfigPatch,
    ) -> Result<QueueConfig> {
        let mut config = self.queue_config(name);
        patch.apply_to(&mut config);
        self.queue_config_set(name, config.clone())?;
        Ok(config)
    }

    // ---- enqueue -----------------------------------------------------------------------

    /// Enqueues a batch atomically: every job is checked first, and one bad job refuses the
    /// whole batch with nothing changed. Returns one id per job, in order; a job whose unique
    /// key is live returns the existing job's id.
    pub fn enqueue(&mut self, jobs: Vec<NewJob>, now: u64) -> Result<Vec<JobId>> {
        if jobs.len() > self.limits.max_batch {
            return Err(Error::invalid(
                "jobs",
                format!(
                    "batch of {} over the limit {}",
                    jobs.len(),
                    self.limits.max_batch
                ),
            ));
        }
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

    fn validate_new(&self, job: &NewJob, now: u64) -> Result<()> {
        let l = &self.limits;
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

    fn insert_new(&mut self, job: NewJob, now: u64) -> JobId {
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
    fn unique_live(&self, id: u64, now: u64) -> bool {
        match self.jobs.get(&id) {
            None => false,
            Some(s) => {
                !s.state.is_terminal() || s.extra.as_ref().is_some_and(|e| now < e.unique_until)
            }
        }
    }

    // ---- indexes -----------------------------------------------------------------------

    fn ready_key(&self, id: u64) -> ReadyKey {
        let s = &self.jobs[&id];
        let cfg = &self.queues[s.queue as usize].config;
        let epoch = s.run_at.checked_div(cfg.aging_ms).unwrap_or(0) as i64;
        ReadyKey {
            rank: epoch - i64::from(s.priority),
            cost: if cfg.order == Order::SmallestCost {
                s.cost
            } else {
                0
            },
            id,
        }
    }

    /// Counts job `id` in its queue's state: the count, the id set of its state, and, while
    /// it waits, the ready-time index. [`Self::untrack`] undoes it; every change of state or
    /// of a waiting job's ready time goes between the two.
    pub(crate) fn track(&mut self, id: u64) {
        let s = &self.jobs[&id];
        let qs = &mut self.queues[s.queue as usize];
        qs.counts[s.state as usize] += 1;
        qs.ids[s.state as usize].insert(id);
        if s.state == JobState::Waiting {
            *qs.waiting_since.entry(s.run_at).or_default() += 1;
        }
    }

    /// Undoes [`Self::track`] for job `id` as it is now.
    pub(crate) fn untrack(&mut self, id: u64) {
        let s = &self.jobs[&id];
        let qs = &mut self.queues[s.queue as usize];
        qs.counts[s.state as usize] -= 1;
        qs.ids[s.state as usize].remove(id);
        if s.state == JobState::Waiting {
            if let std::collections::btree_map::Entry::Occupied(mut e) =
                qs.waiting_since.entry(s.run_at)
            {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }

    /// Puts a job into the index its state calls for. The job must be in none.
    fn place(&mut self, id: u64) {
        let s = &self.jobs[&id];
        let (state, q) = (s.state, s.queue);
        match state {
            JobState::Scheduled | JobState::Failed => {
                self.scheduled.insert((s.run_at, id));
            }
            JobState::Waiting => match s.group().cloned() {
                Some(g) => self.refresh_group(q, g),
                None => {
                    let key = self.ready_key(id);
                    self.queues[q as usize].ready.insert(key);
                }
            },
            JobState::Active => {
                self.leases.insert((s.deadline, id));
            }
            JobState::Completed => {
                self.queues[q as usize]
                    .completed
                    .insert((s.finished_at, id));
            }
            JobState::Dead | JobState::Cancelled => {
                self.queues[q as usize].dead.insert((s.finished_at, id));
            }
        }
    }

    /// Takes a job out of the index its state put it in.
    fn unplace(&mut self, id: u64) {
        let s = &self.jobs[&id];
        let (state, q) = (s.state, s.queue);
        match state {
            JobState::Scheduled | JobState::Failed => {
                self.scheduled.remove(&(s.run_at, id));
            }
            JobState::Waiting => match s.group().cloned() {
                Some(g) => {
                    let key = self.ready_key(id);
                    if let Some(gs) = self.groups.get_mut(&(q, g)) {
                        if let Some(i) = gs.ready.iter().position(|&r| r == id) {
                            gs.ready.swap_remove(i);
                            self.queues[q as usize].ready.remove(&key);
                        }
                    }
                }
                None => {
                    let key = self.ready_key(id);
                    self.queues[q as usize].ready.remove(&key);
                }
            },
            JobState::Active => {
                self.leases.remove(&(s.deadline, id));
            }
            JobState::Completed => {
                self.queues[q as usize]
                    .completed
                    .remove(&(s.finished_at, id));
            }
            JobState::Dead | JobState::Cancelled => {
                self.queues[q as usize].dead.remove(&(s.finished_at, id));
            }
        }
    }

    /// Moves a job to `to`: out of its old index, counts, state, into its new index. `edit`
    /// runs between the two, to change the fields the new index is keyed by.
    fn transition(&mut self, id: u64, to: JobState, edit: impl FnOnce(&mut Slot)) {
        self.unplace(id);
        self.untrack(id);
        let Some(s) = self.jobs.get_mut(&id) else {
            return;
        };
        let from = s.state;
        let q = s.queue as usize;
        let group = s.group().cloned();
        s.state = to;
        edit(s);
        self.track(id);
        if let Some(g) = group {
            let key = (q as u32, g.clone());
            if let Some(gs) = self.groups.get_mut(&key) {
                if from == JobState::Active {
                    gs.active.retain(|&a| a != id);
                }
                if to == JobState::Active {
                    gs.active.push(id);
                }
                if to.is_terminal() {
                    gs.pending.remove(&id);
                } else {
                    gs.pending.insert(id);
                }
            } else if !to.is_terminal() {
                // A retried job whose group had emptied and been dropped.
                let gs = self.groups.entry(key).or_default();
                gs.pending.insert(id);
            }
            self.place(id);
            self.refresh_group(q as u32, g);
        } else {
            self.place(id);
        }
    }

    /// Re-establishes invariant 2 for one group: its ready job is its lowest-id unfinished
    /// job if that one is waiting and nothing of the group is active; otherwise none.
    fn refresh_group(&mut self, q: u32, g: Arc<str>) {
        let key = (q, g);
        let limit = self.queues[q as usize].config.group_concurrency.max(1) as usize;
        let Some(gs) = self.groups.get(&key) else {
            return;
        };
        if gs.pending.is_empty() && gs.active.is_empty() {
            for old in gs.ready.clone() {
                let k = self.ready_key(old);
                self.queues[q as usize].ready.remove(&k);
            }
            self.groups.remove(&key);
            return;
        }
        let want = self.group_want(key.0, &key.1, gs, limit);
        let tokens = self.group_tokens(key.0, &key.1);
        if tokens < limit.saturating_sub(gs.active.len()) && want.len() == tokens {
            // Its per-key rate limit, not its concurrency, holds jobs back: look again when
            // the next token is due (if anything else waits).
            let more_waiting = gs
                .pending
                .iter()
                .filter(|&&id| {
                    self.jobs
                        .get(&id)
                        .is_some_and(|s| s.state == JobState::Waiting)
                })
                .nth(tokens)
                .is_some();
            if more_waiting {
                let due = self.group_token_due(key.0, &key.1, tokens);
                self.throttled.insert((due, key.0, key.1.clone()));
            }
        }
        let Some(gs) = self.groups.get(&key) else {
            return;
        };
        if want == gs.ready {
            return;
        }
        let have = gs.ready.clone();
        for &old in have.iter().filter(|id| !want.contains(id)) {
            let k = self.ready_key(old);
            self.queues[q as usize].ready.remove(&k);
        }
        for &new in want.iter().filter(|id| !have.contains(id)) {
            let k = self.ready_key(new);
            self.queues[q as usize].ready.insert(k);
        }
        if let Some(gs) = self.groups.get_mut(&key) {
            gs.ready = want;
        }
    }

    /// The jobs of a group that should be ready: with a limit of 1, its lowest-id unfinished
    /// job if that one is waiting and nothing runs (strict order); above 1, its lowest-id
    /// waiting jobs, as many as slots are free.
    pub(crate) fn group_want(
        &self,
        q: u32,
        g: &Arc<str>,
        gs: &GroupState,
        limit: usize,
    ) -> Vec<u64> {
        let slots = limit
            .saturating_sub(gs.active.len())
            .min(self.group_tokens(q, g));
        if slots == 0 {
            return Vec::new();
        }
        let waiting = |id: &u64| {
            self.jobs
                .get(id)
                .is_some_and(|s| s.state == JobState::Waiting)
        };
        if limit == 1 {
            return gs
                .pending
                .first()
                .copied()
                .filter(waiting)
                .into_iter()
                .collect();
        }
        gs.pending
            .iter()
            .copied()
            .filter(waiting)
            .take(slots)
            .collect()
    }

    /// Re-derives the ready jobs of every group of queue `q` (its group limit changed).
    fn refresh_groups_of(&mut self, q: u32) {
        let keys: Vec<Arc<str>> = self
            .groups
            .keys()
            .filter(|(gq, _)| *gq == q)
            .map(|(_, g)| g.clone())
            .collect();
        for g in keys {
            self.refresh_group(q, g);
        }
    }

    fn bump(&mut self, q: u32, now: u64, f: impl FnOnce(&mut Aggregate)) {
        let hour = now - now % HOUR_MS;
        f(self.aggregates.entry((q, hour)).or_default());
        self.changes.push(Change::Aggregate(q, hour));
    }

    // ---- fetch, heartbeat, ack, fail ---------------------------------------------------

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
    fn take_ready(
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

    fn lease(&mut self, id: u64, now: u64) -> FetchedJob {
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
        // The grant is recorded (a store writes it with its next commit, without waiting):
        // after a restart the lease lives on, and after a crash its attempt still counts.
        self.updated(id);
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
    fn check_lease(&self, id: JobId, lease_id: u64, now: u64) -> Result<()> {
        let s = self.jobs.get(&id.0).ok_or(Error::JobNotFound(id))?;
        if s.lease_id != lease_id || lease_id == 0 {
            return Err(Error::LeaseMismatch(id));
        }
        if s.state != JobState::Active || s.deadline <= now {
            return Err(Error::LeaseExpired(id));
        }
        Ok(())
    }

    fn check_doc(&self, field: &'static str, doc: Option<&Payload>) -> Result<()> {
        match doc {
            Some(p) if p.len() > self.limits.max_payload_bytes => Err(Error::TooLarge {
                field,
                size: p.len(),
                limit: self.limits.max_payload_bytes,
            }),
            Some(p) => check_depth_of(field, p.as_str(), &self.limits),
            None => Ok(()),
        }
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
            if let Some(p) = progress {
                s.extra_mut().progress = Some(p.into_inner());
            }
        }
        // The new deadline is recorded like the grant, so a restart keeps the extension.
        self.updated(id.0);
        Ok(new)
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
    fn updated(&mut self, id: u64) {
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

    fn check_batch(&self, field: &'static str, n: usize) -> Result<()> {
        if n > self.limits.max_batch {
            return Err(Error::invalid(
                field,
                format!("batch of {n} over the limit {}", self.limits.max_batch),
            ));
        }
        Ok(())
    }

    /// Drops a finished job's unique key unless a window keeps it alive.
    fn release_unique(&mut self, id: u64) {
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

    // ---- cancel, retry -----------------------------------------------------------------

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

fn rejection(id: JobId, e: Error) -> Rejection {
    Rejection {
        id,
        reason: e.kind(),
        message: e.to_string(),
    }
}

/// Refuses a JSON document nested deeper than [`Limits::max_payload_depth`]: many parsers a
/// worker may use recurse per level and overflow their stack long before Weir's limit on
/// size would stop such a document.
fn check_depth_of(field: &'static str, json: &str, limits: &Limits) -> Result<()> {
    let max = limits.max_payload_depth;
    if max > 0 && crate::job::nesting_exceeds(json, max) {
        return Err(Error::invalid(
            field,
            format!("nested more than {max} levels deep (the limit is max_payload_depth)"),
        ));
    }
    Ok(())
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Regression: unique keys and group keys (strings a client chooses) keyed FxHash maps,
    /// whose hash is the same in every process, so a client could choose keys that collide
    /// and make every lookup of them a scan. The maps' hasher is now seeded from the engine's
    /// seed: another seed hashes the same keys differently, the same seed alike (so the
    /// engine stays deterministic).
    #[test]
    fn client_chosen_keys_hash_with_the_engines_seed() {
        let keys = ["order-1", "order-2", "tenant/ada", ""];
        let hashes = |seed: u64| -> Vec<u64> {
            let e = Engine::new(Limits::default(), seed);
            keys.iter()
                .map(|k| e.unique.hasher().hash_one((0u32, Box::<str>::from(*k))))
                .collect()
        };
        assert_eq!(hashes(1), hashes(1));
        assert_ne!(hashes(1), hashes(2));
        let e = Engine::new(Limits::default(), 7);
        let h = |m: &KeyMap<(u32, Arc<str>), GroupState>| m.hasher().hash_one((0u32, "g"));
        assert_eq!(h(&e.groups), e.group_tats.hasher().hash_one((0u32, "g")));
        assert_ne!(h(&e.groups), h(&Engine::new(Limits::default(), 8).groups));
    }

    fn nested(depth: usize) -> Payload {
        Payload::parse(&format!("{}{}", "[".repeat(depth), "]".repeat(depth))).unwrap()
    }

    /// Regression: a payload nested 200,000 levels deep was accepted, and handed to workers
    /// whose parsers overflow their stack on it. Refused now, with nothing changed.
    #[test]
    fn a_payload_nested_past_the_limit_is_refused() {
        let mut e = Engine::new(Limits::default(), 1);
        let deep = NewJob::new("q", "k", nested(200_000));
        match e.enqueue(vec![deep], 0) {
            Err(Error::Invalid { field, reason }) => {
                assert_eq!(field, "payload");
                assert!(reason.contains("128"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(e.is_empty(), "a refused enqueue changes nothing");
        assert!(e
            .enqueue(vec![NewJob::new("q", "k", nested(129))], 0)
            .is_err());
        e.enqueue(vec![NewJob::new("q", "k", nested(128))], 0)
            .expect("128 levels are allowed");
        // Brackets inside strings are text, not nesting.
        let text = Payload::json(&serde_json::json!({ "s": "[".repeat(1_000) })).unwrap();
        e.enqueue(vec![NewJob::new("q", "k", text)], 0).unwrap();
        // Results are held to the same limit.
        let got = e.fetch(&["q"], 1, 0);
        let out = e
            .ack(
                vec![Ack {
                    id: got[0].id,
                    lease_id: got[0].lease_id,
                    result: Some(nested(500)),
                }],
                0,
            )
            .unwrap();
        assert_eq!(out.applied, 0);
        assert_eq!(out.rejected[0].reason, "invalid-input");
        // The limit is a setting; 0 turns it off.
        let mut open = Engine::new(
            Limits {
                max_payload_depth: 0,
                ..Limits::default()
            },
            1,
        );
        open.enqueue(vec![NewJob::new("q", "k", nested(1_000))], 0)
            .unwrap();
    }
}
