//! Keys and values of the embedded store's keyspaces.
//!
//! Values are `postcard` (compact, serde-driven) behind a one-byte format version, so a later
//! release can read what this one wrote. Job keys are the id in big-endian, so iteration order
//! is id order, which is enqueue order.

use serde::Serialize;
use weir_core::record::StatusRecord;
use weir_core::{Error, Result};

/// Format version of job, status and aggregate values.
const VERSION: u8 = 1;

/// Format version of queue records: JSON, self-describing, so configuration keys added in a
/// later release read back with their defaults. Queue records are few and small.
const VERSION_JSON: u8 = 2;

/// Format version of status records that carry the lease (`lease_id`, `deadline` at the
/// end). Version 1 status records, written before leases were recorded, still read back.
const VERSION_STATUS_LEASE: u8 = 3;

/// A job id as a key.
pub(crate) fn job_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// The id of a job key.
pub(crate) fn job_id(key: &[u8]) -> Result<u64> {
    let b: [u8; 8] = key
        .try_into()
        .map_err(|_| Error::storage(format!("bad job key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(b))
}

/// An aggregate's key: queue name, a 0xFF separator (never in a queue name), hour.
pub(crate) fn aggregate_key(queue: &str, hour: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(queue.len() + 9);
    k.extend_from_slice(queue.as_bytes());
    k.push(0xFF);
    k.extend_from_slice(&hour.to_be_bytes());
    k
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    // Serializing our own records into a Vec cannot fail: no I/O, no maps with odd keys.
    if let Err(e) = postcard::to_io(value, &mut out) {
        tracing::error!("encoding a record failed: {e}");
    }
    out
}

/// Appends a record, as [`encode`] would write it, to `out`; returns where it lies.
pub(crate) fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> std::ops::Range<usize> {
    let start = out.len();
    out.push(VERSION);
    if let Err(e) = postcard::to_io(value, &mut *out) {
        tracing::error!("encoding a record failed: {e}");
    }
    start..out.len()
}

/// Encodes a record as JSON (see [`VERSION_JSON`]).
pub(crate) fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VERSION_JSON];
    if let Err(e) = serde_json::to_writer(&mut out, value) {
        tracing::error!("encoding a record failed: {e}");
    }
    out
}

/// Decodes a record written by [`encode_json`].
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&VERSION_JSON, body)) => {
            serde_json::from_slice(body).map_err(|e| Error::storage(format!("corrupt record: {e}")))
        }
        Some((v, _)) => Err(Error::storage(format!(
            "queue record format {v} is not known (stores from before 0.1 kept queue \
             configuration in format 1; delete the data directory's queues to reset it)"
        ))),
        None => Err(Error::storage("empty record")),
    }
}

/// Decodes a record; strings may borrow from `bytes`.
pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| Error::storage(format!("corrupt record: {e}")))
        }
        Some((v, _)) => Err(Error::storage(format!("record format {v} is not known"))),
        None => Err(Error::storage("empty record")),
    }
}

/// Appends a status record, in its current format, to `out`; returns where it lies.
pub(crate) fn encode_status_into(
    value: &StatusRecord<'_>,
    out: &mut Vec<u8>,
) -> std::ops::Range<usize> {
    let start = out.len();
    out.push(VERSION_STATUS_LEASE);
    if let Err(e) = postcard::to_io(value, &mut *out) {
        tracing::error!("encoding a record failed: {e}");
    }
    start..out.len()
}

/// A status record as version 1 wrote it: no lease.
#[derive(serde::Deserialize)]
struct StatusRecordV1<'a> {
    state: u8,
    attempt: u32,
    run_at: u64,
    started_at: u64,
    finished_at: u64,
    #[serde(borrow)]
    result: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    progress: Option<std::borrow::Cow<'a, str>>,
    errors: std::borrow::Cow<'a, [weir_core::AttemptError]>,
}

/// Decodes a status record of either format.
pub(crate) fn decode_status(bytes: &[u8]) -> Result<StatusRecord<'_>> {
    match bytes.split_first() {
        Some((&VERSION_STATUS_LEASE, body)) => postcard::from_bytes(body)
            .map_err(|e| Error::storage(format!("corrupt status record: {e}"))),
        Some((&VERSION, _)) => {
            let v1: StatusRecordV1<'_> = decode(bytes)?;
            Ok(StatusRecord {
                state: v1.state,
                attempt: v1.attempt,
                run_at: v1.run_at,
                started_at: v1.started_at,
                finished_at: v1.finished_at,
                result: v1.result,
                progress: v1.progress,
                errors: v1.errors,
                lease_id: 0,
                deadline: 0,
            })
        }
        Some((v, _)) => Err(Error::storage(format!(
            "status record format {v} is not known"
        ))),
        None => Err(Error::storage("empty record")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn status(lease_id: u64) -> StatusRecord<'static> {
        StatusRecord {
            state: 2,
            attempt: 3,
            run_at: 10,
            started_at: 11,
            finished_at: 0,
            result: None,
            progress: Some(Cow::Borrowed("{\"p\":1}")),
            errors: Cow::Owned(vec![]),
            lease_id,
            deadline: if lease_id > 0 { 99 } else { 0 },
        }
    }

    #[test]
    fn status_records_round_trip_with_their_lease() {
        let mut out = Vec::new();
        let at = encode_status_into(&status(42), &mut out);
        assert_eq!(decode_status(&out[at]).unwrap(), status(42));
    }

    /// Stores written before leases were recorded hold version 1 status records: they still
    /// open, with no lease.
    #[test]
    fn version_1_status_records_read_back_without_a_lease() {
        #[derive(serde::Serialize)]
        struct V1<'a> {
            state: u8,
            attempt: u32,
            run_at: u64,
            started_at: u64,
            finished_at: u64,
            result: Option<Cow<'a, str>>,
            progress: Option<Cow<'a, str>>,
            errors: Cow<'a, [weir_core::AttemptError]>,
        }
        let s = status(0);
        let old = encode(&V1 {
            state: s.state,
            attempt: s.attempt,
            run_at: s.run_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            result: s.result.clone(),
            progress: s.progress.clone(),
            errors: s.errors.clone(),
        });
        assert_eq!(decode_status(&old).unwrap(), s);
    }
}
