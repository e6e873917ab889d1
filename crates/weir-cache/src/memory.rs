//! L1: entries in process memory, bounded by bytes, on [moka](https://docs.rs/moka)
//! (TinyLFU admission, LRU eviction, a time-to-live for the tier). We add only what moka
//! does not know: each entry's own deadline on our clock, checked on every read, so an
//! entry is never served past it even before moka's housekeeping drops it.

use crate::entry::Entry;
use crate::stats::{bump, Counters, Tier};
use bytes::Bytes;
use moka::notification::RemovalCause;
use std::sync::Arc;

/// What L1 holds per key: the value and what a read checks, nothing else. Tags and
/// dependencies live in the index; keeping them here too would make every hit touch
/// (and reference-count) a second allocation, which cost more than moka's own lookup.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub value: Bytes,
    /// min(entry's expiry, time of insert + the tier's cap), ms since the epoch.
    pub until_ms: u64,
    /// The entry's own expiry (reported to the caller).
    pub expires_ms: u64,
    /// The namespace version it was written under.
    pub version: u64,
    weight: u32,
}

/// The memory tier.
pub(crate) struct Memory {
    cache: moka::sync::Cache<String, Item, foldhash::fast::RandomState>,
    cap_ms: u64,
}

/// The L1 key of `key` in `ns`: both, separated by a byte no namespace holds.
pub(crate) fn full_key(ns: &str, key: &str) -> String {
    let mut s = String::with_capacity(ns.len() + 1 + key.len());
    s.push_str(ns);
    s.push('\u{1}');
    s.push_str(key);
    s
}

/// Splits [`full_key`] back.
pub(crate) fn split_key(full: &str) -> Option<(&str, &str)> {
    full.split_once('\u{1}')
}

impl Memory {
    /// `on_evict` hears of every entry moka drops for space or age (not ones we remove).
    pub fn new(
        max_bytes: u64,
        cap_ms: u64,
        counters: Arc<Counters>,
        on_evict: impl Fn(&str) + Send + Sync + 'static,
    ) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &String, v: &Item| v.weight)
            // No moka expiry at all (neither per entry nor for the tier): its timers cost a
            // clock read and queue work on every hit, doubling the cost of a read
            // (BENCHMARKS.md). An entry past its deadline is refused and dropped when read,
            // and one never read again leaves by size like any cold entry.
            .eviction_listener(move |k: Arc<String>, _v, cause| {
                if matches!(cause, RemovalCause::Size) {
                    bump(&counters.tier(Tier::Memory).evictions);
                }
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    on_evict(&k);
                }
            })
            // foldhash, randomly seeded: keys come from clients, so the hash must resist
            // chosen collisions, and SipHash (the default) was a tenth of a hit's cost.
            .build_with_hasher(foldhash::fast::RandomState::default());
        Memory { cache, cap_ms }
    }

    /// The item for `full` (it may be past its deadline: the caller judges).
    pub fn get(&self, full: &str) -> Option<Item> {
        self.cache.get(full)
    }

    /// The item for `key` in `ns` if it is before its deadline at `now_ms` and of
    /// `version`; a stale one is dropped. The hot path of every read: the lookup key is
    /// built in a reused thread-local buffer, not a fresh allocation.
    pub fn get_fresh(&self, ns: &str, key: &str, now_ms: u64, version: u64) -> Option<Item> {
        thread_local! {
            static BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        BUF.with(|buf| {
            let mut full = buf.borrow_mut();
            full.clear();
            full.push_str(ns);
            full.push('\u{1}');
            full.push_str(key);
            let item = self.cache.get(full.as_str())?;
            if item.until_ms > now_ms && item.version == version {
                return Some(item);
            }
            self.cache.invalidate(full.as_str());
            None
        })
    }

    /// Holds `entry` until min(its expiry, now + the cap).
    pub fn insert(&self, full: String, entry: &Entry, now_ms: u64) {
        let until_ms = entry
            .meta
            .expires_ms
            .min(now_ms.saturating_add(self.cap_ms));
        if until_ms <= now_ms {
            return;
        }
        let item = Item {
            value: entry.value.clone(),
            until_ms,
            expires_ms: entry.meta.expires_ms,
            version: entry.meta.version,
            weight: entry.weight(),
        };
        self.cache.insert(full, item);
    }

    /// Drops `full`; true when it was there.
    pub fn remove(&self, full: &str) -> bool {
        self.cache.remove(full).is_some()
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// (bytes, entries), after moka's pending housekeeping.
    pub fn usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        (self.cache.weighted_size(), self.cache.entry_count())
    }
}
