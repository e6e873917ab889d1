//! Group commit: the one thread that writes pending changes to fjall.
//!
//! Operations append encoded records to [`Pending`] under the state mutex, in the order the
//! engine applied them. The committer takes everything pending at once, adds the hourly
//! aggregates and the id high-water mark *as of that moment* (still under the mutex, so they
//! agree exactly with the records taken), writes one atomic batch, syncs once, and then
//! answers every waiter. While it syncs, new operations fill the next batch: under load a
//! sync covers many callers.
//!
//! Job records, two or more per job, are encoded into one byte arena per batch rather than a
//! `Vec` each, and the committer hands the emptied arena and op list back for the next batch:
//! allocating and growing them per record on a request thread, then freeing them on this one,
//! cost 8 % of the server's CPU per job at batches of 100 (A/B runs in BENCHMARKS.md).
//!
//! A job inserted by a batch and deleted before that batch is written (enqueued, fetched and
//! acked while the previous batch was syncing, in a queue that keeps no completed jobs)
//! needs no write at all: its spec and its tombstone cancel out, and only the id high-water
//! mark, written with every batch, must remember it. Recovery then finds what it would have
//! found had both been written: no such job. Under load this is where the commit thread's
//! time goes (fjall's memtable inserts), and the slower the commit, the more jobs finish
//! inside one batch.
//!
//! Lease grants and heartbeats are written one batch late. A grant taken by batch `k` is
//! held, and when batch `k + 1` is taken, the status (which carries the lease) of each held
//! job still active is added to it; a job acked in between needs no lease write at all.
//! Writing every grant at once doubled the records per job (a status and its tombstone) and
//! cost a third of the throughput at batches of 100 (BENCHMARKS.md, issue 14). An idle store
//! writes held leases after [`LEASE_WAIT`]; a close writes all of them.

use super::codec::{aggregate_key, encode, encode_into, encode_json, encode_status_into, job_key};
use super::{Durability, Shared};
use fjall::PersistMode;
use std::ops::Range;
use tokio::sync::oneshot;
use weir_core::{Change, Engine, JobId};

/// Key of the id high-water mark in the `meta` keyspace.
pub(crate) const NEXT_ID_KEY: &str = "next_id";

/// One record write. Job records are ranges of [`Pending::bytes`].
pub(crate) enum Op {
    Spec(u64, Range<usize>),
    Status(u64, Range<usize>),
    /// Remove a job's spec, and its status record when `status`.
    Delete {
        id: u64,
        status: bool,
    },
    Queue(String, Vec<u8>),
    /// Remove a queue's configuration and every aggregate of its name.
    QueueDelete(String),
    Aggregate(Vec<u8>, Vec<u8>),
    /// A write cancelled before it was made (see the module's documentation).
    Cancelled,
}

/// Writes waiting for the committer.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) ops: Vec<Op>,
    /// The encoded job records the ops point into.
    pub(crate) bytes: Vec<u8>,
    /// `(job id, index in ops)` of every spec this batch inserts. Ids ascend: the engine
    /// hands out ids in order and changes arrive here in the order it made them.
    inserted: Vec<(u64, usize)>,
    /// Ops turned into [`Op::Cancelled`].
    cancelled_ops: usize,
    /// Deletes never pushed because their job's insert was cancelled.
    cancelled_deletes: usize,
    /// Aggregates touched, `(queue, hour)`; encoded when the batch is taken.
    pub(crate) aggregates: Vec<(u32, u64)>,
    /// Jobs whose lease was granted or extended while this batch filled: their status is
    /// written with the *next* batch if they are still leased then (see the module docs).
    pub(crate) leases: Vec<u64>,
    /// Callers waiting for this batch to be durable.
    pub(crate) waiters: Vec<oneshot::Sender<Result<(), String>>>,
}

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.aggregates.is_empty() && self.waiters.is_empty()
    }

    /// Empties a written batch so its buffers can take the next one; buffers grown past
    /// [`KEEP_BYTES`] by a burst are freed rather than kept for good.
    fn recycle(&mut self) {
        const KEEP_OPS: usize = KEEP_BYTES / 64;
        self.ops.clear();
        self.bytes.clear();
        self.inserted.clear();
        self.cancelled_ops = 0;
        self.cancelled_deletes = 0;
        self.aggregates.clear();
        self.leases.clear();
        self.waiters.clear();
        if self.bytes.capacity() > KEEP_BYTES {
            self.bytes = Vec::new();
        }
        if self.ops.capacity() > KEEP_OPS {
            self.ops = Vec::new();
            self.inserted = Vec::new();
        }
    }

    /// Cancels the writes of job `id` if this batch inserts it, so that its delete needs no
    /// write either; false when the job was written by an earlier batch.
    fn cancel_insert(&mut self, id: u64, status: bool) -> bool {
        let Ok(i) = self.inserted.binary_search_by_key(&id, |&(id, _)| id) else {
            return false;
        };
        let at = self.inserted[i].1;
        debug_assert!(matches!(self.ops[at], Op::Spec(s, _) if s == id));
        self.ops[at] = Op::Cancelled;
        self.cancelled_ops += 1;
        self.cancelled_deletes += 1;
        if status {
            // Status records of a job this batch inserts are all in this batch, after it.
            for op in &mut self.ops[at + 1..] {
                if matches!(op, Op::Status(s, _) if *s == id) {
                    *op = Op::Cancelled;
                    self.cancelled_ops += 1;
                }
            }
        }
        true
    }

    /// Records this batch writes.
    pub(crate) fn records(&self) -> u64 {
        (self.ops.len() - self.cancelled_ops) as u64
    }

    /// Records this batch does not write because they cancelled out.
    pub(crate) fn cancelled(&self) -> u64 {
        (self.cancelled_ops + self.cancelled_deletes) as u64
    }
}

/// The largest arena a batch hands back for reuse (4 MiB: some 20,000 job records).
const KEEP_BYTES: usize = 4 << 20;

/// Encodes one engine change into the pending batch.
pub(crate) fn encode_change(engine: &Engine, change: Change, pending: &mut Pending) {
    match change {
        Change::Insert(id) => {
            if let Some(r) = engine.spec_record(id) {
                let at = encode_into(&r, &mut pending.bytes);
                debug_assert!(pending.inserted.last().is_none_or(|&(last, _)| last < id.0));
                pending.inserted.push((id.0, pending.ops.len()));
                pending.ops.push(Op::Spec(id.0, at));
            }
        }
        Change::Update(id) => {
            if let Some(r) = engine.status_record(id) {
                let at = encode_status_into(&r, &mut pending.bytes);
                pending.ops.push(Op::Status(id.0, at));
            }
        }
        Change::Delete {
            id: JobId(id),
            status,
        } => {
            if !pending.cancel_insert(id, status) {
                pending.ops.push(Op::Delete { id, status });
            }
        }
        Change::Queue(q) => {
            if let Some(r) = engine.queue_record(q) {
                let name = r.name.clone();
                pending.ops.push(Op::Queue(name, encode_json(&r)));
            }
        }
        Change::Aggregate(q, h) => {
            if pending.aggregates.last() != Some(&(q, h)) {
                pending.aggregates.push((q, h));
            }
        }
        Change::Lease(id) => pending.leases.push(id.0),
        Change::QueueDeleted(q) => {
            if let Some(name) = engine.queue_name(q) {
                // Aggregates of this batch for the queue were made before it was deleted.
                pending.aggregates.retain(|&(aq, _)| aq != q);
                pending.ops.push(Op::QueueDelete(name.to_string()));
            }
        }
    }
}

/// The committer thread's body, guarded: should it panic (a bug in it or under it), the store
/// is marked broken and every waiter is answered, rather than left waiting for a commit that
/// will never come.
pub(crate) fn run_guarded(shared: &Shared) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(shared))).is_err() {
        let mut st = shared.state.lock();
        let why = "the commit thread panicked".to_string();
        tracing::error!("{why}; the store refuses everything until reopened");
        st.broken = Some(why.clone());
        for w in st.pending.waiters.drain(..) {
            let _ = w.send(Err(why.clone()));
        }
    }
}

/// How long the committer waits for more work before it writes leases held over from the
/// last batch on their own (an idle store records a lease within about this long).
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// The committer thread's body; returns when the store closes with nothing pending.
fn run(shared: &Shared) {
    // The buffers of the last batch written, emptied, for the next.
    let mut spare = Pending::default();
    // Leases granted while the last batch filled: recorded with this one if still live.
    let mut held: Vec<u64> = Vec::new();
    loop {
        let (mut batch, next_id) = {
            let mut st = shared.state.lock();
            while st.pending.is_empty() {
                let leases = !held.is_empty() || !st.pending.leases.is_empty();
                if st.closed {
                    if !leases {
                        return;
                    }
                    break; // a close records every lease still live
                }
                if leases {
                    // Leases to record: give an ack the chance to make them moot, but not
                    // for long.
                    if shared.wake.wait_for(&mut st, LEASE_WAIT).timed_out() {
                        break;
                    }
                } else {
                    shared.wake.wait(&mut st);
                }
            }
            st.in_flight = true;
            let mut batch = std::mem::replace(&mut st.pending, std::mem::take(&mut spare));
            batch.aggregates.sort_unstable();
            batch.aggregates.dedup();
            for (q, h) in batch.aggregates.drain(..) {
                if let Some(r) = st.engine.aggregate_at(q, h) {
                    batch.ops.push(Op::Aggregate(
                        aggregate_key(&r.queue, r.hour_ms),
                        encode(&r),
                    ));
                }
            }
            // Leases of the previous batch whose jobs are still active are written now; a job
            // acked meanwhile needs none. On close, this batch's own leases go too.
            if st.closed {
                held.append(&mut batch.leases);
            }
            held.sort_unstable();
            held.dedup();
            for id in held.drain(..) {
                if let Some(r) = st.engine.lease_record(JobId(id)) {
                    let at = encode_status_into(&r, &mut batch.bytes);
                    batch.ops.push(Op::Status(id, at));
                }
            }
            std::mem::swap(&mut held, &mut batch.leases);
            let next_id = st.engine.next_id();
            (batch, next_id)
        };
        // A batch whose ops all cancelled out is still written: it carries the id high-water
        // mark past the ids it handed out.
        let wrote = !batch.ops.is_empty();
        let result = if wrote {
            #[cfg(feature = "fault-injection")]
            let injected = shared.state.lock().faults.take_commit_failure();
            #[cfg(not(feature = "fault-injection"))]
            let injected = false;
            if injected {
                Err("injected commit failure".to_string())
            } else {
                write(shared, &batch, next_id)
            }
        } else {
            Ok(())
        };
        {
            let mut st = shared.state.lock();
            st.in_flight = false;
            if wrote {
                st.stats.commits += 1;
                st.stats.records += batch.records();
                st.stats.cancelled += batch.cancelled();
            }
            if let Err(e) = &result {
                tracing::error!(error = %e, "commit failed; the store refuses writes until reopened");
                st.broken = Some(e.clone());
            }
        }
        for w in batch.waiters.drain(..) {
            let _ = w.send(result.clone());
        }
        batch.recycle();
        spare = batch;
    }
}

fn write(shared: &Shared, pending: &Pending, next_id: u64) -> Result<(), String> {
    let ks = &shared.ks;
    let bytes = &pending.bytes;
    let mut batch = shared.db.batch();
    for op in &pending.ops {
        match op {
            Op::Spec(id, at) => batch.insert(&ks.specs, job_key(*id), &bytes[at.clone()]),
            Op::Status(id, at) => batch.insert(&ks.statuses, job_key(*id), &bytes[at.clone()]),
            Op::Delete { id, status } => {
                batch.remove(&ks.specs, job_key(*id));
                if *status {
                    batch.remove(&ks.statuses, job_key(*id));
                }
            }
            Op::Queue(name, v) => batch.insert(&ks.queues, name.as_str(), v.as_slice()),
            Op::QueueDelete(name) => {
                batch.remove(&ks.queues, name.as_str());
                // Aggregates written before this batch; later ops of the batch (a new
                // queue of the same name) come after these removals.
                let prefix = aggregate_key(name, 0);
                for kv in ks.aggregates.prefix(&prefix[..name.len() + 1]) {
                    let key = kv.key().map_err(|e| e.to_string())?;
                    batch.remove(&ks.aggregates, key);
                }
            }
            Op::Aggregate(k, v) => batch.insert(&ks.aggregates, k.as_slice(), v.as_slice()),
            Op::Cancelled => {}
        }
    }
    batch.insert(&ks.meta, NEXT_ID_KEY, next_id.to_be_bytes());
    batch.commit().map_err(|e| e.to_string())?;
    let mode = match shared.durability {
        Durability::Fsync => PersistMode::SyncData,
        Durability::Os => PersistMode::Buffer,
    };
    shared.db.persist(mode).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::{Ack, Fail, Limits, NewJob, Payload, QueueConfig};

    /// An engine whose queue `q` deletes jobs at their ack, and a pending batch.
    fn setup() -> (Engine, Pending) {
        let mut engine = Engine::new(Limits::default(), 7);
        let mut config = QueueConfig::default();
        config.retention.completed_max = 0;
        engine.queue_config_set("q", config).unwrap();
        let mut pending = Pending::default();
        absorb(&mut engine, &mut pending);
        (engine, pending)
    }

    fn absorb(engine: &mut Engine, pending: &mut Pending) {
        let mut changes = Vec::new();
        engine.drain_changes_into(&mut changes);
        for c in changes {
            encode_change(engine, c, pending);
        }
    }

    fn enqueue(engine: &mut Engine, now: u64) -> JobId {
        let job = NewJob::new(
            "q",
            "k",
            Payload::json(&serde_json::json!({"n": 1})).unwrap(),
        );
        engine.enqueue(vec![job], now).unwrap()[0]
    }

    fn run_to_ack(engine: &mut Engine, now: u64) {
        let got = engine.fetch(&["q"], 1, now);
        let out = engine
            .ack(
                vec![Ack {
                    id: got[0].id,
                    lease_id: got[0].lease_id,
                    result: None,
                }],
                now,
            )
            .unwrap();
        assert_eq!(out.applied, 1);
    }

    fn job_ops(p: &Pending) -> Vec<&'static str> {
        p.ops
            .iter()
            .filter_map(|op| match op {
                Op::Spec(..) => Some("spec"),
                Op::Status(..) => Some("status"),
                Op::Delete { .. } => Some("delete"),
                Op::Cancelled => Some("cancelled"),
                Op::Queue(..) | Op::QueueDelete(..) | Op::Aggregate(..) => None,
            })
            .collect()
    }

    #[test]
    fn a_job_inserted_and_deleted_in_one_batch_writes_nothing() {
        let (mut engine, mut p) = setup();
        p.recycle();
        // As the store does: changes are absorbed after each operation.
        enqueue(&mut engine, 1);
        absorb(&mut engine, &mut p);
        assert_eq!(job_ops(&p), ["spec"]);
        run_to_ack(&mut engine, 2);
        absorb(&mut engine, &mut p);
        assert_eq!(job_ops(&p), ["cancelled"]);
        assert_eq!((p.records(), p.cancelled()), (0, 2));
    }

    #[test]
    fn a_job_written_by_an_earlier_batch_gets_its_tombstone() {
        let (mut engine, mut p) = setup();
        enqueue(&mut engine, 1);
        absorb(&mut engine, &mut p);
        p.recycle(); // the committer took and wrote that batch
        run_to_ack(&mut engine, 2);
        absorb(&mut engine, &mut p);
        assert_eq!(job_ops(&p), ["delete"]);
        assert_eq!(p.cancelled(), 0);
    }

    #[test]
    fn status_records_of_a_cancelled_job_are_cancelled_too() {
        let (mut engine, mut p) = setup();
        p.recycle();
        let keep = enqueue(&mut engine, 1); // written, not deleted
        absorb(&mut engine, &mut p);
        let id = enqueue(&mut engine, 1);
        absorb(&mut engine, &mut p);
        let got = engine.fetch(&["q"], 2, 2);
        let mine = got.iter().find(|f| f.id == id).unwrap();
        let fail = Fail {
            id,
            lease_id: mine.lease_id,
            error: "boom".into(),
            retry: true,
        };
        engine.fail(vec![fail], 3).unwrap();
        absorb(&mut engine, &mut p);
        // Two specs and the fail: lease grants are held for the next batch, not encoded here.
        assert_eq!(job_ops(&p), ["spec", "spec", "status"]);
        assert_eq!(p.leases.len(), 2);
        // A day later both are waiting again: `id` after its backoff, `keep` after its lease.
        let again = engine.fetch(&["q"], 2, 86_400_000);
        let mine = again.iter().find(|f| f.id == id).unwrap();
        let out = engine.ack(
            vec![Ack {
                id,
                lease_id: mine.lease_id,
                result: None,
            }],
            86_400_000,
        );
        assert_eq!(out.unwrap().applied, 1);
        absorb(&mut engine, &mut p);
        // `keep`'s spec stays, and so does the status its expired lease wrote.
        assert_eq!(job_ops(&p), ["spec", "cancelled", "cancelled", "status"]);
        assert_eq!((p.records(), p.cancelled()), (2, 3));
        assert!(matches!(p.ops[0], Op::Spec(k, _) if k == keep.0));
        assert!(matches!(p.ops.last(), Some(Op::Status(k, _)) if *k == keep.0));
    }

    #[test]
    fn records_in_the_arena_are_what_encode_writes() {
        let mut p = Pending::default();
        let values = ["a", "a longer record value", ""];
        let ranges: Vec<_> = values
            .iter()
            .map(|v| encode_into(&v.to_string(), &mut p.bytes))
            .collect();
        for (v, r) in values.iter().zip(ranges) {
            assert_eq!(&p.bytes[r], encode(&v.to_string()).as_slice());
        }
    }

    #[test]
    fn a_recycled_batch_is_empty_keeps_small_buffers_and_frees_large_ones() {
        let mut p = Pending::default();
        let at = encode_into(&7u64, &mut p.bytes);
        p.ops.push(Op::Spec(1, at));
        p.aggregates.push((0, 0));
        let (ops_cap, bytes_cap) = (p.ops.capacity(), p.bytes.capacity());
        p.recycle();
        assert!(p.is_empty() && p.bytes.is_empty());
        assert_eq!((p.ops.capacity(), p.bytes.capacity()), (ops_cap, bytes_cap));

        p.bytes.reserve(KEEP_BYTES + 1);
        p.recycle();
        assert_eq!(
            p.bytes.capacity(),
            0,
            "a burst's arena is not kept for good"
        );
    }
}
