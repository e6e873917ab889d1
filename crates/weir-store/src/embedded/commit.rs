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

use super::codec::{aggregate_key, encode, encode_into, encode_json, job_key};
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
    Aggregate(Vec<u8>, Vec<u8>),
}

/// Writes waiting for the committer.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) ops: Vec<Op>,
    /// The encoded job records the ops point into.
    pub(crate) bytes: Vec<u8>,
    /// Aggregates touched, `(queue, hour)`; encoded when the batch is taken.
    pub(crate) aggregates: Vec<(u32, u64)>,
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
        self.aggregates.clear();
        self.waiters.clear();
        if self.bytes.capacity() > KEEP_BYTES {
            self.bytes = Vec::new();
        }
        if self.ops.capacity() > KEEP_OPS {
            self.ops = Vec::new();
        }
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
                pending.ops.push(Op::Spec(id.0, at));
            }
        }
        Change::Update(id) => {
            if let Some(r) = engine.status_record(id) {
                let at = encode_into(&r, &mut pending.bytes);
                pending.ops.push(Op::Status(id.0, at));
            }
        }
        Change::Delete {
            id: JobId(id),
            status,
        } => pending.ops.push(Op::Delete { id, status }),
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
    }
}

/// The committer thread's body; returns when the store closes with nothing pending.
pub(crate) fn run(shared: &Shared) {
    // The buffers of the last batch written, emptied, for the next.
    let mut spare = Pending::default();
    loop {
        let (mut batch, next_id) = {
            let mut st = shared.state.lock();
            while st.pending.is_empty() {
                if st.closed {
                    return;
                }
                shared.wake.wait(&mut st);
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
            let next_id = st.engine.next_id();
            (batch, next_id)
        };
        let records = batch.ops.len() as u64;
        let result = if batch.ops.is_empty() {
            Ok(())
        } else {
            write(shared, &batch, next_id)
        };
        {
            let mut st = shared.state.lock();
            st.in_flight = false;
            if records > 0 {
                st.stats.commits += 1;
                st.stats.records += records;
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
            Op::Aggregate(k, v) => batch.insert(&ks.aggregates, k.as_slice(), v.as_slice()),
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
