//! The queue engine: every job's state, the indexes that schedule them, and the state machine.
//!
//! Pure and deterministic: no I/O, no threads, no system clock. Each operation takes `now`
//! (ms since the epoch) and randomness comes from a seeded generator, so a sequence of calls
//! always gives the same result. A store wraps the engine, persists what it reports in
//! [`Engine::take_changes`], and rebuilds it on open with [`Engine::restore`].
//!
//! # Layout
//! - `slot`: how one job is kept; `index`: the indexes a state puts a job in and the one
//!   transition function; `groups`: ordered groups and per-key concurrency.
//! - `enqueue`: validation and insertion; `lease`: fetch, heartbeat, ack, fail, release;
//!   `admin`: cancel, retry, purge; `maintenance`: ticks and retention.
//! - `flow`: flow control; `read`: jobs, pages, queue statistics; `restore`: records out
//!   and in; `invariants`: the full consistency check.
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

mod admin;
mod enqueue;
mod flow;
mod groups;
mod index;
mod invariants;
mod lease;
pub mod maintenance;
mod read;
mod restore;
mod slot;
pub(crate) use groups::GroupState;
pub(crate) use index::ReadyKey;
pub use restore::Restore;
pub(crate) use slot::{Extra, Slot};

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

pub use enqueue::validate_new_job;
pub use flow::{gcra, gcra_allowance, Breaker, FlowEvent, SharedFlow};
pub use lease::{check_batch_size, check_document};
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
    /// A lease was granted or extended. The store writes the job's status (which carries
    /// the lease) with a later commit if the job is then still leased
    /// ([`Engine::lease_record`]), so that jobs finished within a commit or two cost no
    /// lease write, and every longer one is recorded.
    Lease(JobId),
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
    /// A queue was deleted: remove its configuration and every hourly aggregate of its name
    /// (its jobs went with their own [`Change::Delete`]s before this). The queue's name stays
    /// readable at this index ([`Engine::queue_name`]).
    QueueDeleted(u32),
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
    /// Deleted: unknown to every read until a job or a configuration names it again, when
    /// it starts afresh. (Queue indexes are never reused, so the slot stays.)
    pub(crate) deleted: bool,
}

impl QueueState {
    fn fresh(name: Arc<str>) -> Self {
        QueueState {
            name,
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
            deleted: false,
        }
    }
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
            let qs = &mut self.queues[i as usize];
            if qs.deleted {
                *qs = QueueState::fresh(qs.name.clone());
            }
            return i;
        }
        let i = self.queues.len() as u32;
        let name: Arc<str> = name.into();
        self.queues.push(QueueState::fresh(name.clone()));
        self.queue_ids.insert(name, i);
        i
    }

    /// The name of queue index `q`, deleted or not.
    pub fn queue_name(&self, q: u32) -> Option<&str> {
        self.queues.get(q as usize).map(|qs| &*qs.name)
    }

    /// The index of a queue that exists (not deleted).
    pub(crate) fn find_queue(&self, name: &str) -> Option<u32> {
        self.queue_ids
            .get(name)
            .copied()
            .filter(|&q| !self.queues[q as usize].deleted)
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

    pub(super) fn bump(&mut self, q: u32, now: u64, f: impl FnOnce(&mut Aggregate)) {
        let hour = now - now % HOUR_MS;
        f(self.aggregates.entry((q, hour)).or_default());
        self.changes.push(Change::Aggregate(q, hour));
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
