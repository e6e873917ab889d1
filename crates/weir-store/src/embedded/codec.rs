//! Keys and values of the embedded store's keyspaces.
//!
//! Values are `postcard` (compact, serde-driven) behind a one-byte format version, so a later
//! release can read what this one wrote. Job keys are the id in big-endian, so iteration order
//! is id order, which is enqueue order.

use serde::Serialize;
use weir_core::{Error, Result};

/// Format version of job, status and aggregate values.
const VERSION: u8 = 1;

/// Format version of queue records: JSON, self-describing, so configuration keys added in a
/// later release read back with their defaults. Queue records are few and small.
const VERSION_JSON: u8 = 2;

/// A job id as a key.
pub(crate) fn job_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// The id of a job key.
pub(crate) fn job_id(key: &[u8]) -> Result<u64> {
    let b: [u8; 8] = key
        .try_into()
        .map_err(|_| Error::Storage(format!("bad job key of {} bytes", key.len())))?;
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
            serde_json::from_slice(body).map_err(|e| Error::Storage(format!("corrupt record: {e}")))
        }
        Some((v, _)) => Err(Error::Storage(format!(
            "queue record format {v} is not known (stores from before 0.1 kept queue \
             configuration in format 1; delete the data directory's queues to reset it)"
        ))),
        None => Err(Error::Storage("empty record".into())),
    }
}

/// Decodes a record; strings may borrow from `bytes`.
pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| Error::Storage(format!("corrupt record: {e}")))
        }
        Some((v, _)) => Err(Error::Storage(format!("record format {v} is not known"))),
        None => Err(Error::Storage("empty record".into())),
    }
}
