//! How the engine keeps one job: a compact slot, with the rarely used fields behind one
//! pointer.

use super::*;

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
    pub(crate) fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    pub(crate) fn group(&self) -> Option<&Arc<str>> {
        self.extra.as_ref().and_then(|e| e.group.as_ref())
    }
}
