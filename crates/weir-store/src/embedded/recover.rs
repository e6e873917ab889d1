//! Rebuilding the engine from the stored records on open.

use super::codec::{decode, decode_json, decode_status, job_id};
use super::commit::NEXT_ID_KEY;
use super::Keyspaces;
use fjall::UserValue;
use weir_core::record::{QueueRecord, SpecRecord, StatusRecord};
use weir_core::{AggregateRecord, Engine, Error, JobId, Result};

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::storage_from(e)
}

/// Restores queues, aggregates, the id high-water mark and every job. Returns the number of
/// jobs restored. A record that does not decode fails the open: silently dropping data would
/// be worse than refusing to start.
pub(crate) fn recover(ks: &Keyspaces, engine: &mut Engine, now: u64) -> Result<usize> {
    if let Some(v) = ks.meta.get(NEXT_ID_KEY).map_err(storage)? {
        let b: [u8; 8] = (&*v)
            .try_into()
            .map_err(|_| Error::storage("bad next_id record"))?;
        engine.restore_next_id(u64::from_be_bytes(b));
    }
    for kv in ks.queues.iter() {
        let (_, v) = kv.into_inner().map_err(storage)?;
        engine.restore_queue(decode_json::<QueueRecord>(&v)?)?;
    }
    for kv in ks.aggregates.iter() {
        let (_, v) = kv.into_inner().map_err(storage)?;
        engine.restore_aggregate(decode::<AggregateRecord>(&v)?);
    }
    // Size the job table once: growing it by doubling costs time and leaves freed tables behind.
    let mut restore = engine.restore(ks.specs.approximate_len());
    // Specs and statuses are both in id order: merge them.
    let mut statuses = ks.statuses.iter();
    let mut next_status = || -> Result<Option<(u64, UserValue)>> {
        match statuses.next() {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv.into_inner().map_err(storage)?;
                Ok(Some((job_id(&k)?, v)))
            }
        }
    };
    let mut status = next_status()?;
    let mut n = 0;
    for kv in ks.specs.iter() {
        let (k, v) = kv.into_inner().map_err(storage)?;
        let id = job_id(&k)?;
        while status.as_ref().is_some_and(|(sid, _)| *sid < id) {
            tracing::warn!(
                id = status.as_ref().map(|s| s.0),
                "status without a spec skipped"
            );
            status = next_status()?;
        }
        let mine = match &status {
            Some((sid, _)) if *sid == id => status.take().map(|(_, v)| v),
            _ => None,
        };
        if mine.is_some() {
            status = next_status()?;
        }
        let spec: SpecRecord<'_> = decode(&v)?;
        let st: Option<StatusRecord<'_>> = mine.as_deref().map(decode_status).transpose()?;
        restore.job(JobId(id), spec, st, now)?;
        n += 1;
    }
    drop(restore); // builds the ordered indexes
    engine.take_changes();
    Ok(n)
}
