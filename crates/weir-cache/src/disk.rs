//! L2: a folder of files, one per entry, named by the BLAKE3 hash of namespace and key.
//!
//! Layout under the cache folder: `v1/state.json` (the generation and namespace versions,
//! written atomically) and `v1/g<generation>/<2 hex>/<64 hex>` for entries. A write goes to
//! `v1/tmp/` first and is renamed into place, so a reader sees the old file or the new one,
//! never half of one; a crash leaves at worst a stray temp file, removed at the next open.
//! No fsync: a cache entry lost in a power cut is a miss, not a loss.
//!
//! The folder is bounded by bytes: past the budget the least recently used files go. Each
//! file's header is held in memory (the index rebuilt at open by reading headers), so an
//! expired or retired entry is refused without touching the disk, and last use is tracked
//! without writing. After a restart "last use" is the file's modification time.
//!
//! Retiring the local tiers (see `Cache`) moves to a new generation folder and deletes the
//! old one in the background: O(1) for the caller however many files there are.
//!
//! Written here rather than on a crate because no well-kept crate offers a plain-file,
//! restart-surviving, byte-bounded LRU that other processes (and `weir cache prune`) can
//! read; foyer's hybrid cache keeps its own block format and does not survive restarts by
//! key.

use crate::entry::{decode_meta, Entry, Meta};
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// What `state.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DiskState {
    /// The current generation folder.
    pub generation: u64,
    /// Namespace versions (a bump must survive a restart, or retired files would return).
    pub versions: HashMap<String, u64>,
    /// The last invalidation event applied from the shared bus (see `bus.rs`): where to
    /// resume after a restart, so files kept across it are not stale.
    #[serde(default)]
    pub bus_seq: Option<u64>,
    /// The Redis dataset that sequence belongs to (see `bus.rs`).
    #[serde(default)]
    pub bus_dataset: Option<String>,
}

#[derive(Debug, Clone)]
struct FileInfo {
    size: u64,
    seq: u64,
    last_use_ms: u64,
    meta: Meta,
}

#[derive(Debug, Default)]
struct Files {
    by_hash: HashMap<String, FileInfo>,
    by_use: BTreeMap<u64, String>,
    seq: u64,
    bytes: u64,
}

impl Files {
    fn touch(&mut self, hash: &str, now_ms: u64) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(info) = self.by_hash.get_mut(hash) {
            self.by_use.remove(&info.seq);
            info.seq = seq;
            info.last_use_ms = info.last_use_ms.max(now_ms);
            self.by_use.insert(seq, hash.to_string());
        }
    }

    fn put(&mut self, hash: String, mut info: FileInfo) -> Option<FileInfo> {
        let old = self.take(&hash);
        self.seq += 1;
        info.seq = self.seq;
        self.bytes += info.size;
        self.by_use.insert(info.seq, hash.clone());
        self.by_hash.insert(hash, info);
        old
    }

    fn take(&mut self, hash: &str) -> Option<FileInfo> {
        let info = self.by_hash.remove(hash)?;
        self.by_use.remove(&info.seq);
        self.bytes -= info.size;
        Some(info)
    }
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Files removed.
    pub files: u64,
    /// Bytes freed.
    pub bytes: u64,
    /// Files kept.
    pub files_left: u64,
    /// Bytes kept.
    pub bytes_left: u64,
}

/// The disk tier. Blocking I/O: async callers run it on the blocking pool.
pub struct Disk {
    root: PathBuf,
    /// The folder's lock, held while this tier is open: one process per folder, or one's
    /// pruning and generation changes would delete another's entries under it.
    _lock: std::fs::File,
    max_bytes: u64,
    cap_ms: u64,
    files: Mutex<Files>,
    state: Mutex<DiskState>,
}

/// The file name of `key` in `ns`.
fn hash_of(ns: &str, key: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(ns.as_bytes());
    h.update(&[0]);
    h.update(key.as_bytes());
    h.finalize().to_hex().to_string()
}

impl Disk {
    /// Takes the folder's exclusive lock (released when the process ends, however it ends),
    /// or says which process holds it.
    fn lock(root: &Path) -> std::io::Result<std::fs::File> {
        let path = root.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {
                use std::io::{Seek, Write};
                file.set_len(0)?;
                file.seek(std::io::SeekFrom::Start(0))?;
                write!(file, "{}", std::process::id())?;
                Ok(file)
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "the cache folder {} is in use by another process (pid {}): give each \
                         server its own cache.dir (WEIR_CACHE_DIR)",
                        root.parent().unwrap_or(root).display(),
                        holder.trim()
                    ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Opens (or creates) the tier in `dir`, rebuilding its index from the files there and
    /// removing what is torn, foreign, expired or from a retired generation. Refused while
    /// another process has the folder open.
    pub fn open(dir: &Path, max_bytes: u64, cap_ms: u64, now_ms: u64) -> std::io::Result<Disk> {
        let root = dir.join("v1");
        std::fs::create_dir_all(root.join("tmp"))?;
        let lock = Self::lock(&root)?;
        for e in std::fs::read_dir(root.join("tmp"))?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let state: DiskState = std::fs::read(root.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let disk = Disk {
            root,
            _lock: lock,
            max_bytes,
            cap_ms,
            files: Mutex::new(Files::default()),
            state: Mutex::new(state),
        };
        disk.remove_other_generations()?;
        let mut found = Vec::new();
        let gen_dir = disk.gen_dir();
        std::fs::create_dir_all(&gen_dir)?;
        for sub in std::fs::read_dir(&gen_dir)?.flatten() {
            let Ok(entries) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for f in entries.flatten() {
                let path = f.path();
                let mtime = f
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64);
                match read_header(&path) {
                    Some((meta, size))
                        if meta.expires_ms > now_ms
                            && f.file_name().to_str() == Some(&hash_of(&meta.ns, &meta.key))
                            && disk.version(&meta.ns) == meta.version =>
                    {
                        found.push((mtime, hash_of(&meta.ns, &meta.key), size, meta));
                    }
                    _ => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        found.sort_by_key(|f| f.0);
        {
            let mut files = disk.files.lock();
            for (mtime, hash, size, meta) in found {
                files.put(
                    hash,
                    FileInfo {
                        size,
                        seq: 0,
                        last_use_ms: mtime,
                        meta,
                    },
                );
            }
        }
        disk.shrink_to(disk.max_bytes);
        Ok(disk)
    }

    fn gen_dir(&self) -> PathBuf {
        self.root.join(format!("g{}", self.state.lock().generation))
    }

    fn path_of(&self, hash: &str) -> PathBuf {
        self.gen_dir().join(&hash[..2]).join(hash)
    }

    fn remove_other_generations(&self) -> std::io::Result<()> {
        let current = format!("g{}", self.state.lock().generation);
        for e in std::fs::read_dir(&self.root)?.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('g') && name != current {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        Ok(())
    }

    /// The saved version of `ns` (0 if never bumped).
    pub fn version(&self, ns: &str) -> u64 {
        self.state.lock().versions.get(ns).copied().unwrap_or(0)
    }

    /// Every saved namespace version.
    pub fn versions(&self) -> HashMap<String, u64> {
        self.state.lock().versions.clone()
    }

    /// Saves `ns`'s version (never lowering it).
    pub fn set_version(&self, ns: &str, v: u64) -> std::io::Result<()> {
        let snapshot = {
            let mut st = self.state.lock();
            let cur = st.versions.entry(ns.to_string()).or_insert(0);
            if *cur >= v {
                return Ok(());
            }
            *cur = v;
            st.clone()
        };
        self.save_state(&snapshot)
    }

    /// The Redis dataset and the last bus event applied from it, as saved.
    pub fn bus_position(&self) -> Option<(String, u64)> {
        let st = self.state.lock();
        Some((st.bus_dataset.clone()?, st.bus_seq?))
    }

    /// Saves the last bus event applied, and the dataset it came from.
    pub fn set_bus_position(&self, dataset: &str, seq: u64) -> std::io::Result<()> {
        let snapshot = {
            let mut st = self.state.lock();
            if st.bus_seq == Some(seq) && st.bus_dataset.as_deref() == Some(dataset) {
                return Ok(());
            }
            st.bus_seq = Some(seq);
            st.bus_dataset = Some(dataset.to_string());
            st.clone()
        };
        self.save_state(&snapshot)
    }

    fn save_state(&self, st: &DiskState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(st).map_err(std::io::Error::other)?;
        self.write_atomic(&self.root.join("state.json"), &bytes)
    }

    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{:016x}", fastrand::u64(..)));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        drop(f);
        if let Err(e) = std::fs::rename(&tmp, dest) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(())
    }

    /// The entry for `key` in `ns`, read straight from its file in the tier at `dir` without
    /// opening it: no lock, no index rebuilt from every file's header. For a short-lived
    /// process that only looks up (a CLI on its hit path), where opening would cost a read
    /// of every entry's header. The file's modification time is set to now, so the next
    /// open's least-recently-used order counts this use. `None` when the entry is missing,
    /// torn, of another version, or expired at `now_ms` (or older than `cap_ms`).
    pub fn peek(
        dir: &Path,
        ns: &str,
        key: &str,
        version: u64,
        cap_ms: u64,
        now_ms: u64,
    ) -> Option<Entry> {
        let root = dir.join("v1");
        let state: DiskState =
            serde_json::from_slice(&std::fs::read(root.join("state.json")).ok()?).ok()?;
        let hash = hash_of(ns, key);
        let path = root
            .join(format!("g{}", state.generation))
            .join(&hash[..2])
            .join(&hash);
        let mut file = std::fs::File::open(&path).ok()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        let e = Entry::decode(Bytes::from(bytes))?;
        let fresh = e.meta.ns == ns
            && e.meta.key == key
            && e.meta.version == version
            && e.meta.expires_ms > now_ms
            && e.meta.created_ms.saturating_add(cap_ms) > now_ms;
        if !fresh {
            return None;
        }
        let _ = file.set_modified(UNIX_EPOCH + std::time::Duration::from_millis(now_ms));
        Some(e)
    }

    /// The entry for `key` in `ns` if it is here, unexpired at `now_ms` and of `version`.
    /// A file found stale is removed.
    pub fn get(&self, ns: &str, key: &str, version: u64, now_ms: u64) -> Option<Entry> {
        let hash = hash_of(ns, key);
        let path = {
            let mut files = self.files.lock();
            let info = files.by_hash.get(&hash)?;
            if info.meta.ns != ns || info.meta.key != key {
                return None;
            }
            if !self.fresh(&info.meta, info.last_use_ms, version, now_ms) {
                drop(files);
                self.remove(ns, key);
                return None;
            }
            files.touch(&hash, now_ms);
            self.path_of(&hash)
        };
        match std::fs::read(&path)
            .ok()
            .and_then(|b| Entry::decode(Bytes::from(b)))
        {
            Some(e) if e.meta.ns == ns && e.meta.key == key && e.meta.version == version => Some(e),
            _ => {
                self.files.lock().take(&hash);
                None
            }
        }
    }

    fn fresh(&self, meta: &Meta, _last_use_ms: u64, version: u64, now_ms: u64) -> bool {
        meta.version == version
            && meta.expires_ms > now_ms
            && meta.created_ms.saturating_add(self.cap_ms) > now_ms
    }

    /// Writes `entry` (atomically), then evicts least recently used files past the budget.
    /// Returns the metadata of entries evicted to make room.
    pub fn put(&self, entry: &Entry, now_ms: u64) -> std::io::Result<Vec<Meta>> {
        let bytes = entry.encode();
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Ok(Vec::new());
        }
        let hash = hash_of(&entry.meta.ns, &entry.meta.key);
        let dest = self.path_of(&hash);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        self.write_atomic(&dest, &bytes)?;
        let mut meta = entry.meta.clone();
        // The tier's cap counts from when the entry reached this tier.
        meta.created_ms = meta.created_ms.max(now_ms.min(meta.expires_ms));
        meta.expires_ms = meta.expires_ms.min(now_ms.saturating_add(self.cap_ms));
        self.files.lock().put(
            hash,
            FileInfo {
                size,
                seq: 0,
                last_use_ms: now_ms,
                meta,
            },
        );
        Ok(self.shrink_to(self.max_bytes))
    }

    /// Removes `key`; true when it was here.
    pub fn remove(&self, ns: &str, key: &str) -> bool {
        let hash = hash_of(ns, key);
        let Some(_) = self.files.lock().take(&hash) else {
            return false;
        };
        let _ = std::fs::remove_file(self.path_of(&hash));
        true
    }

    /// Evicts least recently used files until at most `max_bytes` remain.
    fn shrink_to(&self, max_bytes: u64) -> Vec<Meta> {
        let mut victims = Vec::new();
        {
            let mut files = self.files.lock();
            while files.bytes > max_bytes {
                let Some((_, hash)) = files.by_use.pop_first() else {
                    break;
                };
                if let Some(info) = files.by_hash.remove(&hash) {
                    files.bytes -= info.size;
                    victims.push((hash, info.meta));
                }
            }
        }
        victims
            .into_iter()
            .map(|(hash, meta)| {
                let _ = std::fs::remove_file(self.path_of(&hash));
                meta
            })
            .collect()
    }

    /// Removes expired files, files unused for `older_than_ms` (when given), then least
    /// recently used files down to `max_bytes` (when given).
    pub fn prune(
        &self,
        max_bytes: Option<u64>,
        older_than_ms: Option<u64>,
        now_ms: u64,
    ) -> (PruneReport, Vec<Meta>) {
        let mut gone = Vec::new();
        let stale: Vec<String> = {
            let files = self.files.lock();
            let versions = self.state.lock().versions.clone();
            files
                .by_hash
                .iter()
                .filter(|(_, i)| {
                    let v = versions.get(&i.meta.ns).copied().unwrap_or(0);
                    !self.fresh(&i.meta, i.last_use_ms, v, now_ms)
                        || older_than_ms.is_some_and(|age| i.last_use_ms + age <= now_ms)
                })
                .map(|(h, _)| h.clone())
                .collect()
        };
        let mut report = PruneReport::default();
        for hash in stale {
            let taken = self.files.lock().take(&hash);
            if let Some(info) = taken {
                let _ = std::fs::remove_file(self.path_of(&hash));
                report.files += 1;
                report.bytes += info.size;
                gone.push(info.meta);
            }
        }
        if let Some(max) = max_bytes {
            let before = self.files.lock().bytes;
            let evicted = self.shrink_to(max);
            report.files += evicted.len() as u64;
            report.bytes += before - self.files.lock().bytes;
            gone.extend(evicted);
        }
        let (bytes, files) = self.usage();
        report.bytes_left = bytes;
        report.files_left = files;
        (report, gone)
    }

    /// Drops every entry at once: a new generation folder; the old one is deleted on a
    /// background thread.
    pub fn retire_all(&self) -> std::io::Result<()> {
        let snapshot = {
            let mut st = self.state.lock();
            st.generation += 1;
            st.clone()
        };
        *self.files.lock() = Files::default();
        self.save_state(&snapshot)?;
        std::fs::create_dir_all(self.gen_dir())?;
        let root = self.root.clone();
        let current = format!("g{}", snapshot.generation);
        std::thread::spawn(move || {
            if let Ok(rd) = std::fs::read_dir(&root) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if name.starts_with('g') && name != current {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        });
        Ok(())
    }

    /// (bytes, files).
    pub fn usage(&self) -> (u64, u64) {
        let files = self.files.lock();
        (files.bytes, files.by_hash.len() as u64)
    }

    /// Every entry's header (for rebuilding the tag and dependency index at open).
    pub fn metas(&self) -> Vec<Meta> {
        self.files
            .lock()
            .by_hash
            .values()
            .map(|i| i.meta.clone())
            .collect()
    }
}

/// Reads only the header of the file at `path`, and the file's size.
fn read_header(path: &Path) -> Option<(Meta, u64)> {
    let mut f = std::fs::File::open(path).ok()?;
    let size = f.metadata().ok()?.len();
    let mut head = [0u8; 12];
    f.read_exact(&mut head).ok()?;
    let len = u32::from_le_bytes(head[8..12].try_into().ok()?) as u64;
    if 12 + len > size {
        return None;
    }
    let mut buf = vec![0u8; 12 + len as usize];
    buf[..12].copy_from_slice(&head);
    f.read_exact(&mut buf[12..]).ok()?;
    decode_meta(&buf).map(|(m, _)| (m, size))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(key: &str, version: u64, now: u64) -> Entry {
        Entry {
            value: Bytes::from_static(b"value"),
            meta: Meta {
                ns: "ns".into(),
                key: key.into(),
                created_ms: now,
                expires_ms: now + 60_000,
                version,
                tags: Vec::new(),
                deps: Vec::new(),
            },
        }
    }

    #[test]
    fn peek_reads_an_entry_without_opening_and_counts_the_use() {
        let dir = tempfile::tempdir().unwrap();
        // Wall-clock time: the files' modification times are the order an open rebuilds.
        let now = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        {
            let d = Disk::open(dir.path(), 1 << 20, 3_600_000, now).unwrap();
            d.set_version("ns", 1).unwrap();
            d.put(&entry("a", 1, now), now).unwrap();
            d.put(&entry("b", 1, now), now).unwrap();
            // "a" was used longest ago.
            for (key, age) in [("a", 20_000), ("b", 10_000)] {
                let f = std::fs::File::options()
                    .write(true)
                    .open(d.path_of(&hash_of("ns", key)))
                    .unwrap();
                f.set_modified(UNIX_EPOCH + std::time::Duration::from_millis(now - age))
                    .unwrap();
            }
        }
        // While another process holds the folder open, a peek still reads.
        let held = Disk::open(dir.path(), 1 << 20, 3_600_000, now).unwrap();
        let e = Disk::peek(dir.path(), "ns", "a", 1, 3_600_000, now + 5_000).unwrap();
        assert_eq!(&e.value[..], b"value");
        assert!(
            Disk::peek(dir.path(), "ns", "a", 2, 3_600_000, now).is_none(),
            "version"
        );
        assert!(
            Disk::peek(dir.path(), "ns", "c", 1, 3_600_000, now).is_none(),
            "missing"
        );
        assert!(
            Disk::peek(dir.path(), "ns", "a", 1, 3_600_000, now + 60_000).is_none(),
            "expired"
        );
        assert!(
            Disk::peek(dir.path(), "ns", "a", 1, 1_000, now + 5_000).is_none(),
            "older than the cap"
        );
        drop(held);
        // The use moved "a" after "b" in the order the next open evicts by.
        let d = Disk::open(dir.path(), 1 << 20, 3_600_000, now + 10_000).unwrap();
        let size = d.usage().0 / 2;
        d.prune(Some(size), None, now + 10_000);
        assert!(
            d.get("ns", "a", 1, now + 10_000).is_some(),
            "the peeked entry stays"
        );
        assert!(
            d.get("ns", "b", 1, now + 10_000).is_none(),
            "the unused one goes"
        );
    }
}
