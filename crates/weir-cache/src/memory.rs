//! L1: entries in process memory, bounded by bytes, on [moka](https://docs.rs/moka)
//! (TinyLFU admission, LRU eviction, per-entry expiry). We add only what moka does not
//! know: the tier's TTL cap and our own clock, checked on every read, so an entry is never
//! served past its deadline even before moka's housekeeping drops it.

use crate::entry::Entry;
use crate::stats::{bump, Counters, Tier};
use moka::notification::RemovalCause;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What L1 holds per key: the entry and the tier's own deadline.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub entry: Arc<Entry>,
    /// min(entry's expiry, time of insert + the tier's cap), ms since the epoch.
    pub until_ms: u64,
    /// The same deadline for moka's timer wheel, which runs on `Instant`.
    ttl: Duration,
}

struct ItemExpiry;

impl moka::Expiry<String, Item> for ItemExpiry {
    fn expire_after_create(&self, _: &String, item: &Item, _: Instant) -> Option<Duration> {
        Some(item.ttl)
    }
    fn expire_after_update(
        &self,
        _: &String,
        item: &Item,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(item.ttl)
    }
}

/// The memory tier.
pub(crate) struct Memory {
    cache: moka::sync::Cache<String, Item>,
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
            .weigher(|_k: &String, v: &Item| v.entry.weight())
            .expire_after(ItemExpiry)
            .eviction_listener(move |k: Arc<String>, _v, cause| {
                if matches!(cause, RemovalCause::Size) {
                    bump(&counters.tier(Tier::Memory).evictions);
                }
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    on_evict(&k);
                }
            })
            .build();
        Memory { cache, cap_ms }
    }

    /// The item for `full` (it may be past its deadline: the caller judges).
    pub fn get(&self, full: &str) -> Option<Item> {
        self.cache.get(full)
    }

    /// Holds `entry` until min(its expiry, now + the cap).
    pub fn insert(&self, full: String, entry: Arc<Entry>, now_ms: u64) {
        let until_ms = entry
            .meta
            .expires_ms
            .min(now_ms.saturating_add(self.cap_ms));
        if until_ms <= now_ms {
            return;
        }
        let ttl = Duration::from_millis(until_ms - now_ms);
        self.cache.insert(
            full,
            Item {
                entry,
                until_ms,
                ttl,
            },
        );
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
