//! How the cache moves entries between its tiers: reads below memory with promotion,
//! writes to every tier, removal of invalidated entries, and retiring the local tiers.

use super::*;

impl Inner {
    pub(crate) fn version(&self, ns: &str) -> u64 {
        // Most deployments never bump: skip the lock and the hash until one does.
        if !self.any_version.load(std::sync::atomic::Ordering::Acquire) {
            return 0;
        }
        self.versions.read().get(ns).copied().unwrap_or(0)
    }

    pub(crate) fn versions_snapshot(&self) -> HashMap<String, u64> {
        self.versions
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Takes `v` as `ns`'s version if it is newer; saved on disk so a restart keeps it.
    pub(crate) fn adopt_version(&self, ns: &str, v: u64) {
        {
            let mut vs = self.versions.write();
            let cur = vs.entry(ns.to_string()).or_insert(0);
            if *cur >= v {
                return;
            }
            *cur = v;
            self.any_version
                .store(true, std::sync::atomic::Ordering::Release);
        }
        if let Some(d) = &self.disk {
            if let Err(e) = d.set_version(ns, v) {
                bump(&self.counters.tier(Tier::Disk).errors);
                tracing::warn!(error = %e, "could not save a namespace version on disk");
            }
        }
    }

    pub(crate) fn redis_failed(&self, r: &Remote, err: &str) {
        bump(&self.counters.tier(Tier::Redis).errors);
        r.mark_down(err);
    }

    pub(crate) fn memory_value(&self, ns: &str, key: &str) -> Option<Bytes> {
        let item = self.memory.as_ref()?.get(&full_key(ns, key))?;
        let fresh = item.until_ms > self.clock.now_ms() && item.version == self.version(ns);
        fresh.then_some(item.value)
    }

    /// A read of the memory tier alone, counted (a miss counts when the tier is on).
    pub(crate) fn memory_hit(&self, ns: &str, key: &str, now: u64, version: u64) -> Option<Hit> {
        let m = self.memory.as_ref()?;
        let c = self.counters.tier(Tier::Memory);
        match m.get_fresh(ns, key, now, version) {
            Some(item) => {
                bump(&c.hits);
                Some(Hit {
                    value: item.value,
                    tier: Tier::Memory,
                    expires_ms: item.expires_ms,
                })
            }
            None => {
                bump(&c.misses);
                None
            }
        }
    }

    /// The rest of a read after memory missed: disk, then Redis, promoting what it finds.
    pub(crate) async fn lookup_below_memory(
        self: &Arc<Self>,
        ns: &str,
        key: &str,
        now: u64,
        version: u64,
    ) -> Option<Hit> {
        let c = &self.counters;
        let full = full_key(ns, key);
        if self.disk.is_some() {
            let me = self.clone();
            let (ns2, key2) = (ns.to_string(), key.to_string());
            let found = tokio::task::spawn_blocking(move || {
                me.disk.as_ref()?.get(&ns2, &key2, version, now)
            })
            .await
            .ok()
            .flatten();
            match found {
                Some(e) => {
                    bump(&c.tier(Tier::Disk).hits);
                    if let Some(m) = &self.memory {
                        m.insert(full, &e, now);
                        bump(&c.tier(Tier::Memory).writes);
                    }
                    return Some(Hit {
                        value: e.value.clone(),
                        tier: Tier::Disk,
                        expires_ms: e.meta.expires_ms,
                    });
                }
                None => bump(&c.tier(Tier::Disk).misses),
            }
        }
        let r = self.remote.as_ref().filter(|r| r.is_up())?;
        match r.get(ns, version, key).await {
            Ok(Some(e))
                if e.meta.ns == ns
                    && e.meta.key == key
                    && e.meta.version == version
                    && e.meta.expires_ms > now =>
            {
                bump(&c.tier(Tier::Redis).hits);
                let hit = Hit {
                    value: e.value.clone(),
                    tier: Tier::Redis,
                    expires_ms: e.meta.expires_ms,
                };
                // Promotion keeps the entry's own expiry: only the tiers' caps shorten it.
                self.clone().store_local(Arc::new(e), now, true).await;
                Some(hit)
            }
            Ok(_) => {
                bump(&c.tier(Tier::Redis).misses);
                None
            }
            Err(e) => {
                self.redis_failed(r, &e);
                None
            }
        }
    }

    /// Writes `entry` to every tier.
    pub(crate) async fn store(self: &Arc<Self>, entry: Arc<Entry>) {
        let now = self.clock.now_ms();
        self.clone().store_local(entry.clone(), now, true).await;
        if let Some(r) = self.remote.as_ref().filter(|r| r.is_up()) {
            match r.set(&entry, now).await {
                Ok(()) => bump(&self.counters.tier(Tier::Redis).writes),
                Err(e) => self.redis_failed(r, &e),
            }
        }
    }

    /// Writes `entry` to memory and disk and indexes it. `wait_for_disk`: whether to wait
    /// for the file (a caller's write does, so it survives a restart once acknowledged).
    pub(crate) async fn store_local(
        self: Arc<Self>,
        entry: Arc<Entry>,
        now: u64,
        wait_for_disk: bool,
    ) {
        let c = &self.counters;
        self.index.lock().insert(&entry.meta);
        if let Some(m) = &self.memory {
            m.insert(full_key(&entry.meta.ns, &entry.meta.key), &entry, now);
            bump(&c.tier(Tier::Memory).writes);
        }
        if self.disk.is_none() {
            return;
        }
        let me = self.clone();
        let write = tokio::task::spawn_blocking(move || {
            let Some(disk) = &me.disk else { return };
            match disk.put(&entry, now) {
                Ok(evicted) => {
                    bump(&me.counters.tier(Tier::Disk).writes);
                    add(
                        &me.counters.tier(Tier::Disk).evictions,
                        evicted.len() as u64,
                    );
                    me.forget(&evicted);
                }
                Err(e) => {
                    bump(&me.counters.tier(Tier::Disk).errors);
                    tracing::warn!(error = %e, "cache disk write failed; entry kept in memory only");
                }
            }
        });
        if wait_for_disk {
            let _ = write.await;
        }
    }

    /// Drops entries the disk tier let go of from memory and the index, keeping memory a
    /// subset of disk (so the index, kept for disk entries, covers memory too).
    pub(crate) fn forget(&self, gone: &[Meta]) {
        for m in gone {
            if let Some(mem) = &self.memory {
                mem.remove(&full_key(&m.ns, &m.key));
            }
            self.index.lock().remove(&m.ns, &m.key);
        }
    }

    /// Removes from memory and disk every key an invalidation of `keys` and `tags`
    /// reaches through the local index; returns the keys that were held.
    pub(crate) fn invalidate_local_sync(
        &self,
        ns: &str,
        keys: &[String],
        tags: &[String],
    ) -> Vec<String> {
        let closure = self.index.lock().closure(ns, keys, tags);
        let c = &self.counters;
        let mut removed = Vec::new();
        for k in closure {
            let in_memory = self
                .memory
                .as_ref()
                .is_some_and(|m| m.remove(&full_key(ns, &k)));
            let on_disk = self.disk.as_ref().is_some_and(|d| d.remove(ns, &k));
            self.index.lock().remove(ns, &k);
            if in_memory {
                bump(&c.tier(Tier::Memory).invalidations);
            }
            if on_disk {
                bump(&c.tier(Tier::Disk).invalidations);
            }
            if in_memory || on_disk {
                removed.push(k);
            }
        }
        removed
    }

    /// Drops every local entry at once (invalidations may have been missed).
    pub(crate) fn retire_local(&self, why: &str) {
        tracing::warn!(reason = why, "retiring the local cache tiers");
        bump(&self.counters.resyncs);
        if let Some(m) = &self.memory {
            m.clear();
        }
        if let Some(d) = &self.disk {
            if let Err(e) = d.retire_all() {
                bump(&self.counters.tier(Tier::Disk).errors);
                tracing::warn!(error = %e, "could not retire the disk tier");
            }
        }
        self.index.lock().clear();
    }

    pub(crate) fn has_local_entries(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| d.usage().1 > 0)
    }

    pub(crate) fn saved_bus_position(&self) -> Option<(String, u64)> {
        self.disk.as_ref().and_then(Disk::bus_position)
    }

    pub(crate) fn save_bus_position(&self, dataset: &str, seq: u64) {
        if let Some(d) = &self.disk {
            if let Err(e) = d.set_bus_position(dataset, seq) {
                tracing::debug!(error = %e, "could not save the bus position");
            }
        }
    }
}
