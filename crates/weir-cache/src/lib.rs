//! Weir's tiered cache: L1 memory, L2 local disk, L3 Redis shared by every instance.
//!
//! Reads try the tiers fastest first and copy what they find into the faster tiers
//! (promotion), never extending an entry's expiry. Writes go to every tier. Each tier is
//! bounded in bytes and caps the time it holds an entry.
//!
//! Invalidation comes in three kinds, each reaching every tier and, through Redis, every
//! instance (see `bus.rs` for how a missed message is bounded):
//! - **tags**: invalidating a tag removes every entry carrying it;
//! - **dependencies**: an entry may depend on other keys of its namespace; invalidating a
//!   key removes its dependents, transitively (each once, so cycles end);
//! - **versions**: bumping a namespace retires all its entries at once, without a scan:
//!   an entry remembers the version it was written under and is refused once it differs.
//!
//! [`Cache::get_or_compute`] runs one computation per key however many callers miss at
//! once (single flight); the others wait for its result, or its error.
//!
//! A failing tier is never the caller's error: disk I/O errors and Redis outages are
//! logged, counted and skipped; Redis is reconnected in the background.
//!
//! # Layout
//! - [`config`]: settings and naming rules; [`error`]: refusals.
//! - [`entry`]: an entry and its byte format.
//! - `memory`: L1 on moka; [`disk`]: L2 files; `remote`: L3 Redis; `bus`: invalidation
//!   events across instances and reconnects.
//! - `index`: local tag and dependency index; [`stats`]: counters.
//! - `tiers`: moving entries between the tiers (lookups with promotion, writes, removal).

pub mod config;
pub mod disk;
pub mod entry;
pub mod error;
pub mod stats;

mod bus;
mod index;
mod memory;
mod remote;
mod tiers;

pub use config::CacheConfig;
pub use disk::{Disk, PruneReport};
pub use entry::{Entry, Meta};
pub use error::CacheError;
pub use stats::{CacheStats, Tier, TierStats};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use index::Index;
use memory::{full_key, split_key, Memory};
use parking_lot::{Mutex, RwLock};
use remote::{Pending, Remote};
use rustc_hash::FxHashMap;
use stats::{add, bump, Counters};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use weir_core::clock::{Clock, SystemClock};

/// How an entry is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// Time to live, ms (None: the configured default).
    pub ttl_ms: Option<u64>,
    /// Tags.
    pub tags: Vec<String>,
    /// Keys of the same namespace this entry depends on.
    pub deps: Vec<String>,
}

/// A read that found its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The value.
    pub value: Bytes,
    /// The tier that had it.
    pub tier: Tier,
    /// When it expires, ms since the epoch.
    pub expires_ms: u64,
}

type Flight = Shared<BoxFuture<'static, Result<Bytes, CacheError>>>;

/// The cache. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Cache(Arc<Inner>);

pub(crate) struct Inner {
    config: CacheConfig,
    clock: Arc<dyn Clock>,
    memory: Option<Memory>,
    disk: Option<Disk>,
    remote: Option<Arc<Remote>>,
    index: Arc<Mutex<Index>>,
    versions: RwLock<FxHashMap<String, u64>>,
    /// False until some namespace has a version above 0.
    any_version: std::sync::atomic::AtomicBool,
    flights: Mutex<HashMap<String, Flight>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("memory", &self.0.memory.is_some())
            .field("disk", &self.0.disk.is_some())
            .field("redis", &self.0.remote.is_some())
            .finish()
    }
}

/// Why the cache could not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] CacheError),
    /// The disk folder could not be opened.
    #[error("cache folder {path}: {source}")]
    Disk {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The Redis URL could not be parsed.
    #[error("{0}")]
    Redis(String),
}

impl Cache {
    /// Opens the cache with the system clock. Must run inside a Tokio runtime when Redis
    /// is configured (its supervisor is spawned here). Redis being down is not an error:
    /// the tier joins when it answers.
    pub async fn open(config: CacheConfig) -> Result<Cache, OpenError> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Opens the cache reading time from `clock` (tests move time by hand).
    pub async fn open_with_clock(
        config: CacheConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Cache, OpenError> {
        config.validate()?;
        let counters = Arc::new(Counters::default());
        let index = Arc::new(Mutex::new(Index::default()));
        let disk = match (config.disk_max_bytes, config.disk_dir()) {
            (0, _) | (_, None) => None,
            (max, Some(dir)) => {
                let (cap, now) = (config.disk_ttl_cap_ms, clock.now_ms());
                let path = dir.display().to_string();
                let opened = tokio::task::spawn_blocking(move || Disk::open(&dir, max, cap, now))
                    .await
                    .map_err(|e| OpenError::Disk {
                        path: path.clone(),
                        source: std::io::Error::other(e),
                    })?
                    .map_err(|source| OpenError::Disk { path, source })?;
                Some(opened)
            }
        };
        let memory = (config.memory_max_bytes > 0).then(|| {
            let (ix, disk_on) = (Arc::downgrade(&index), disk.is_some());
            Memory::new(
                config.memory_max_bytes,
                config.memory_ttl_cap_ms,
                counters.clone(),
                move |full| {
                    // With a disk tier, the entry is still there and keeps its index entry.
                    if disk_on {
                        return;
                    }
                    if let (Some(ix), Some((ns, key))) = (ix.upgrade(), split_key(full)) {
                        ix.lock().remove(ns, key);
                    }
                },
            )
        });
        let mut versions = FxHashMap::default();
        if let Some(d) = &disk {
            versions = d.versions().into_iter().collect();
            let mut ix = index.lock();
            for m in d.metas() {
                ix.insert(&m);
            }
        }
        let remote = match &config.redis_url {
            None => None,
            Some(url) => Some(Arc::new(
                Remote::new(
                    url,
                    &config.redis_prefix,
                    config.redis_ttl_cap_ms,
                    config.redis_timeout_ms,
                )
                .map_err(OpenError::Redis)?,
            )),
        };
        let inner = Arc::new(Inner {
            config,
            clock,
            memory,
            disk,
            remote: remote.clone(),
            index,
            any_version: std::sync::atomic::AtomicBool::new(!versions.is_empty()),
            versions: RwLock::new(versions),
            flights: Mutex::new(HashMap::new()),
            counters,
        });
        if let Some(r) = remote {
            if inner.saved_bus_position().is_none() && inner.has_local_entries() {
                inner.retire_local(
                    "disk entries kept from a run that never read the invalidation stream",
                );
            }
            // Wait (briefly) for the first connection, so a server that starts while Redis
            // is up serves with all three tiers from its first request.
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(bus::supervise(Arc::downgrade(&inner), r, tx));
            let wait = std::time::Duration::from_millis(inner.config.redis_timeout_ms * 4 + 1000);
            let _ = tokio::time::timeout(wait, rx).await;
        }
        Ok(Cache(inner))
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.0.config
    }

    fn check_key(&self, ns: &str, key: &str) -> Result<(), CacheError> {
        self.0.config.check_namespace(ns)?;
        config::check_key("key", key)
    }

    /// The entry for `key` in `ns`, from the fastest tier holding it.
    pub async fn get(&self, ns: &str, key: &str) -> Result<Option<Hit>, CacheError> {
        self.check_key(ns, key)?;
        // The memory tier answers without entering the slower path's state machine.
        let (now, version) = (self.0.clock.now_ms(), self.0.version(ns));
        if let Some(hit) = self.0.memory_hit(ns, key, now, version) {
            return Ok(Some(hit));
        }
        Ok(self.0.lookup_below_memory(ns, key, now, version).await)
    }

    /// Writes `value` under `key` in every tier.
    pub async fn set(
        &self,
        ns: &str,
        key: &str,
        value: Bytes,
        opts: &SetOptions,
    ) -> Result<(), CacheError> {
        let entry = self.entry(ns, key, value, opts)?;
        self.0.store(Arc::new(entry)).await;
        Ok(())
    }

    /// Checks a write and builds its entry.
    fn entry(
        &self,
        ns: &str,
        key: &str,
        value: Bytes,
        opts: &SetOptions,
    ) -> Result<Entry, CacheError> {
        let c = &self.0.config;
        self.check_key(ns, key)?;
        if value.len() > c.max_value_bytes {
            return Err(CacheError::TooLarge {
                size: value.len(),
                max: c.max_value_bytes,
            });
        }
        check_names("tag", &opts.tags, config::MAX_TAGS)?;
        check_names("dep", &opts.deps, config::MAX_DEPS)?;
        let ttl = c.ttl(opts.ttl_ms)?;
        let now = self.0.clock.now_ms();
        Ok(Entry {
            value,
            meta: Meta {
                ns: ns.to_string(),
                key: key.to_string(),
                created_ms: now,
                expires_ms: now.saturating_add(ttl),
                version: self.0.version(ns),
                tags: dedup(&opts.tags),
                deps: dedup(&opts.deps),
            },
        })
    }

    /// Removes `key` and, transitively, what depends on it, from every tier and instance.
    /// Returns how many entries were removed.
    pub async fn delete(&self, ns: &str, key: &str) -> Result<u64, CacheError> {
        self.invalidate(ns, &[key.to_string()], &[]).await
    }

    /// Removes `keys`, every entry carrying one of `tags`, and, transitively, every entry
    /// depending on a removed key, from every tier and (through Redis) every instance.
    /// Returns how many entries were removed here and in Redis (each key once).
    pub async fn invalidate(
        &self,
        ns: &str,
        keys: &[String],
        tags: &[String],
    ) -> Result<u64, CacheError> {
        self.0.config.check_namespace(ns)?;
        for k in keys {
            config::check_key("key", k)?;
        }
        for t in tags {
            config::check_key("tag", t)?;
        }
        let inner = &self.0;
        let version = inner.version(ns);
        let mut removed: HashSet<String> = HashSet::new();
        let mut reach: Vec<String> = keys.to_vec();
        if let Some(r) = &inner.remote {
            let mut done = false;
            if r.is_up() {
                match r.invalidate(ns, version, keys, tags).await {
                    Ok(inv) => {
                        add(
                            &inner.counters.tier(Tier::Redis).invalidations,
                            inv.removed.len() as u64,
                        );
                        removed.extend(inv.removed);
                        reach.extend(inv.closure);
                        done = true;
                    }
                    Err(e) => inner.redis_failed(r, &e),
                }
            }
            if !done {
                r.defer(Pending::Invalidate {
                    ns: ns.to_string(),
                    version,
                    keys: keys.to_vec(),
                    tags: tags.to_vec(),
                });
            }
        }
        let me = self.0.clone();
        let (ns2, tags2) = (ns.to_string(), tags.to_vec());
        let local =
            tokio::task::spawn_blocking(move || me.invalidate_local_sync(&ns2, &reach, &tags2))
                .await
                .unwrap_or_default();
        removed.extend(local);
        Ok(removed.len() as u64)
    }

    /// Retires every entry of `ns` in every tier and instance at once; returns the new
    /// version.
    pub async fn bump(&self, ns: &str) -> Result<u64, CacheError> {
        self.0.config.check_namespace(ns)?;
        let inner = &self.0;
        let next = inner.version(ns) + 1;
        let mut v = next;
        if let Some(r) = &inner.remote {
            let mut done = false;
            if r.is_up() {
                match r.bump(ns, next).await {
                    Ok(got) => {
                        v = got;
                        done = true;
                    }
                    Err(e) => inner.redis_failed(r, &e),
                }
            }
            if !done {
                r.defer(Pending::Bump {
                    ns: ns.to_string(),
                    at_least: next,
                });
            }
        }
        inner.adopt_version(ns, v);
        Ok(v)
    }

    /// The namespace's current version.
    pub fn version(&self, ns: &str) -> u64 {
        self.0.version(ns)
    }

    /// The entry for `key`, or the result of `compute` (stored with `opts`). Concurrent
    /// callers that miss the same key share one computation: one runs it, the others wait
    /// for its value or its error. A caller that gives up does not cancel it for the rest.
    pub async fn get_or_compute<F, Fut, E>(
        &self,
        ns: &str,
        key: &str,
        opts: SetOptions,
        compute: F,
    ) -> Result<Bytes, CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        if let Some(hit) = self.get(ns, key).await? {
            return Ok(hit.value);
        }
        // Checked before the computation runs, so a bad option is the caller's error, not
        // a value that silently never gets cached.
        self.entry(ns, key, Bytes::new(), &opts)?;
        let full = full_key(ns, key);
        let flight = {
            let mut flights = self.0.flights.lock();
            if let Some(f) = flights.get(&full) {
                bump(&self.0.counters.coalesced);
                f.clone()
            } else {
                // A flight that finished just now wrote L1 before leaving the map.
                if let Some(v) = self.0.memory_value(ns, key) {
                    return Ok(v);
                }
                let fut = compute();
                let cache = self.clone();
                let (ns, key, full2) = (ns.to_string(), key.to_string(), full.clone());
                let f = async move {
                    bump(&cache.0.counters.computations);
                    let r = fut
                        .await
                        .map_err(|e| CacheError::Compute(Arc::from(e.into())));
                    if let Ok(v) = &r {
                        if let Err(e) = cache.set(&ns, &key, v.clone(), &opts).await {
                            tracing::debug!(error = %e, "computed value not cached");
                        }
                    }
                    cache.0.flights.lock().remove(&full2);
                    r
                }
                .boxed()
                .shared();
                flights.insert(full, f.clone());
                f
            }
        };
        flight.await
    }

    /// Prunes the disk tier: expired and retired files, files unused for `older_than_ms`,
    /// then least recently used files down to `max_bytes`. None without a disk tier.
    pub async fn prune(
        &self,
        max_bytes: Option<u64>,
        older_than_ms: Option<u64>,
    ) -> Option<PruneReport> {
        let me = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let disk = me.disk.as_ref()?;
            let (report, gone) = disk.prune(max_bytes, older_than_ms, me.clock.now_ms());
            me.forget(&gone);
            add(&me.counters.tier(Tier::Disk).evictions, report.files);
            Some(report)
        })
        .await
        .ok()
        .flatten()
    }

    /// The figures of every tier.
    pub fn stats(&self) -> CacheStats {
        let inner = &self.0;
        let c = &inner.counters;
        let mut memory = TierStats::from_counters(c.tier(Tier::Memory), inner.memory.is_some());
        if let Some(m) = &inner.memory {
            let (b, n) = m.usage();
            memory.bytes = Some(b);
            memory.entries = Some(n);
        }
        let mut disk = TierStats::from_counters(c.tier(Tier::Disk), inner.disk.is_some());
        if let Some(d) = &inner.disk {
            let (b, n) = d.usage();
            disk.bytes = Some(b);
            disk.entries = Some(n);
        }
        let redis = TierStats::from_counters(c.tier(Tier::Redis), inner.remote.is_some());
        use std::sync::atomic::Ordering::Relaxed;
        CacheStats {
            memory,
            disk,
            redis,
            redis_up: inner.remote.as_ref().is_some_and(|r| r.is_up()),
            redis_outages: inner.remote.as_ref().map_or(0, |r| r.outages.load(Relaxed)),
            coalesced: c.coalesced.load(Relaxed),
            computations: c.computations.load(Relaxed),
            resyncs: c.resyncs.load(Relaxed),
        }
    }

    /// Whether Redis is configured and answering.
    pub fn redis_up(&self) -> bool {
        self.0.remote.as_ref().is_some_and(|r| r.is_up())
    }

    /// What one tier holds for `key`, valid or not, without promoting or counting: for
    /// inspection (`weir cache get --tier`) and tests.
    pub async fn peek(&self, tier: Tier, ns: &str, key: &str) -> Option<Entry> {
        let inner = &self.0;
        match tier {
            // Memory keeps values and deadlines only: tags and dependencies come back empty.
            Tier::Memory => inner
                .memory
                .as_ref()?
                .get(&full_key(ns, key))
                .map(|i| Entry {
                    value: i.value,
                    meta: Meta {
                        ns: ns.to_string(),
                        key: key.to_string(),
                        created_ms: 0,
                        expires_ms: i.expires_ms,
                        version: i.version,
                        tags: Vec::new(),
                        deps: Vec::new(),
                    },
                }),
            Tier::Disk => {
                let me = inner.clone();
                let (ns, key) = (ns.to_string(), key.to_string());
                tokio::task::spawn_blocking(move || {
                    let v = me.version(&ns);
                    me.disk.as_ref()?.get(&ns, &key, v, me.clock.now_ms())
                })
                .await
                .ok()
                .flatten()
            }
            Tier::Redis => {
                let r = inner.remote.as_ref()?;
                r.get(ns, inner.version(ns), key).await.ok().flatten()
            }
        }
    }
}

fn check_names(what: &'static str, names: &[String], max: usize) -> Result<(), CacheError> {
    if names.len() > max {
        return Err(CacheError::invalid(
            what,
            format!("{} given, at most {max} allowed", names.len()),
        ));
    }
    names.iter().try_for_each(|n| config::check_key(what, n))
}

fn dedup(names: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    names
        .iter()
        .filter(|n| seen.insert(n.as_str()))
        .cloned()
        .collect()
}
