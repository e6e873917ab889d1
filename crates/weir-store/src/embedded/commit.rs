//! Group commit: the one thread that writes pending changes to fjall.
//!
//! Operations append encoded records to [`Pending`] under the state mutex, in the order the
//! engine applied them. The committer takes everything pending at once, adds the hourly
//! aggregates and the id high-water mark *as of that moment* (still under the mutex, so they
//! agree exactly with the records taken), writes one atomic batch, syncs once, and then
//! answers every waiter. While it syncs, new operations fill the next batch: under load a
//! sync covers many callers.

use super::codec::{aggregate_key, encode, encode_json, job_key};
use super::{Durability, Shared};
use fjall::PersistMode;
use tokio::sync::oneshot;
use weir_core::{Change, Engine, JobId};

/// Key of the id high-water mark in the `meta` keyspace.
pub(crate) const NEXT_ID_KEY: &str = "next_id";

/// One record write.
pub(crate) enum Op {
    Spec(u64, Vec<u8>),
    Status(u64, Vec<u8>),
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
    /// Aggregates touched, `(queue, hour)`; encoded when the batch is taken.
    pub(crate) aggregates: Vec<(u32, u64)>,
    /// Callers waiting for this batch to be durable.
    pub(crate) waiters: Vec<oneshot::Sender<Result<(), String>>>,
}

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.aggregates.is_empty() && self.waiters.is_empty()
    }
}

/// Encodes one engine change into the pending batch.
pub(crate) fn encode_change(engine: &Engine, change: Change, pending: &mut Pending) {
    match change {
        Change::Insert(id) => {
            if let Some(r) = engine.spec_record(id) {
                pending.ops.push(Op::Spec(id.0, encode(&r)));
            }
        }
        Change::Update(id) => {
            if let Some(r) = engine.status_record(id) {
                pending.ops.push(Op::Status(id.0, encode(&r)));
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
    loop {
        let (ops, waiters, next_id) = {
            let mut st = shared.state.lock();
            while st.pending.is_empty() {
                if st.closed {
                    return;
                }
                shared.wake.wait(&mut st);
            }
            st.in_flight = true;
            let mut batch = std::mem::take(&mut st.pending);
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
            (batch.ops, batch.waiters, st.engine.next_id())
        };
        let records = ops.len() as u64;
        let result = if ops.is_empty() {
            Ok(())
        } else {
            write(shared, ops, next_id)
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
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

fn write(shared: &Shared, ops: Vec<Op>, next_id: u64) -> Result<(), String> {
    let ks = &shared.ks;
    let mut batch = shared.db.batch();
    for op in ops {
        match op {
            Op::Spec(id, v) => batch.insert(&ks.specs, job_key(id), v),
            Op::Status(id, v) => batch.insert(&ks.statuses, job_key(id), v),
            Op::Delete { id, status } => {
                batch.remove(&ks.specs, job_key(id));
                if status {
                    batch.remove(&ks.statuses, job_key(id));
                }
            }
            Op::Queue(name, v) => batch.insert(&ks.queues, name, v),
            Op::Aggregate(k, v) => batch.insert(&ks.aggregates, k, v),
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
