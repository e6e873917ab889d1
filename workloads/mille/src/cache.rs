//! The render cache: a plan's outputs kept on disk under `$XDG_CACHE_HOME/mille`
//! (`~/.cache/mille`), keyed by the BLAKE3 hash of the plan's bytes and the render options,
//! so a plan rendered once renders again by reading one file. Weir's disk tier keeps the
//! files (named by the hash of namespace and key, written to a temporary file and renamed,
//! rebuilt from their headers at open, bounded by size with least-recently-used eviction).
//! Entries are versioned by [`RENDERER_VERSION`]: a mille whose output changed bumps it, and
//! every entry of an older renderer is retired at once, without reading them. A rendering
//! holds no value from the plan (mille never keeps one), so nothing sensitive is cached.

use std::path::{Path, PathBuf};

/// Bump when the rendering changes: entries written by another version are not used.
pub const RENDERER_VERSION: u64 = 2;

const NS: &str = "renders";
/// Default size bound of the folder.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;
/// Entries live at most this long.
const TTL_MS: u64 = 30 * 86_400_000;

/// The cache folder: `$XDG_CACHE_HOME/mille`, else `~/.cache/mille`.
pub fn default_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("mille"))
}

/// The key of a render: the plan's bytes and the options that change the output.
pub fn key(plan: &[u8], include_noop: bool) -> String {
    let mut h = blake3::Hasher::new();
    h.update(plan);
    finish_key(h, include_noop)
}

/// [`key`] from a hasher that has taken the plan's bytes.
pub fn finish_key(mut h: blake3::Hasher, include_noop: bool) -> String {
    h.update(&[u8::from(include_noop)]);
    h.finalize().to_hex().to_string()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An open render cache.
pub struct RenderCache {
    disk: weir_cache::Disk,
}

impl RenderCache {
    /// Opens (or creates) the cache in `dir`, retiring entries of other renderer versions.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<RenderCache> {
        let disk = weir_cache::Disk::open(dir, max_bytes, TTL_MS, now_ms())?;
        if disk.version(NS) != RENDERER_VERSION {
            disk.set_version(NS, RENDERER_VERSION)?;
        }
        Ok(RenderCache { disk })
    }

    /// One output (`graph.svg`, ...) of the render under `key`.
    pub fn get_file(&self, key: &str, name: &str) -> Option<impl AsRef<[u8]>> {
        self.disk
            .get(NS, &format!("{key}/{name}"), RENDERER_VERSION, now_ms())
            .map(|e| e.value)
    }

    /// One output of the render under `key` in the cache at `dir`, read without opening the
    /// cache (see [`weir_cache::Disk::peek`]): a hit costs the reads of its files only.
    pub fn peek(dir: &Path, key: &str, name: &str) -> Option<impl AsRef<[u8]>> {
        weir_cache::Disk::peek(
            dir,
            NS,
            &format!("{key}/{name}"),
            RENDERER_VERSION,
            TTL_MS,
            now_ms(),
        )
        .map(|e| e.value)
    }

    /// Keeps one output of the render under `key`, so that a render can write and forget
    /// each output in turn (the peak memory of a render is then its largest output).
    pub fn put_file(&self, key: &str, name: &str, text: String) -> std::io::Result<()> {
        self.put_raw(&format!("{key}/{name}"), text.into_bytes())
    }

    fn put_raw(&self, key: &str, value: Vec<u8>) -> std::io::Result<()> {
        let now = now_ms();
        let entry = weir_cache::Entry {
            value: value.into(),
            meta: weir_cache::Meta {
                ns: NS.into(),
                key: key.into(),
                created_ms: now,
                expires_ms: now + TTL_MS,
                version: RENDERER_VERSION,
                tags: Vec::new(),
                deps: Vec::new(),
            },
        };
        self.disk.put(&entry, now).map(|_| ())
    }

    /// (files, bytes) held: a rendering is one file per output.
    pub fn usage(&self) -> (u64, u64) {
        let (bytes, files) = self.disk.usage();
        (files, bytes)
    }

    /// Removes expired entries, those unused for `older_than_ms`, then the least recently
    /// used down to `max_bytes`.
    pub fn prune(
        &self,
        max_bytes: Option<u64>,
        older_than_ms: Option<u64>,
    ) -> weir_cache::PruneReport {
        self.disk.prune(max_bytes, older_than_ms, now_ms()).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_comes_back_and_other_renderer_versions_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let c = RenderCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert!(c.get_file("k", "graph.svg").is_none());
        c.put_file("k", "graph.svg", "<svg/>".to_string()).unwrap();
        assert_eq!(c.get_file("k", "graph.svg").unwrap().as_ref(), b"<svg/>");
        assert!(c.get_file("k", "graph.html").is_none());
        assert_eq!(c.usage().0, 1);
        // An entry another renderer version wrote is never used.
        let now = now_ms();
        let old = weir_cache::Entry {
            value: b"old".to_vec().into(),
            meta: weir_cache::Meta {
                ns: NS.into(),
                key: "old/graph.svg".into(),
                created_ms: now,
                expires_ms: now + TTL_MS,
                version: RENDERER_VERSION + 1,
                tags: Vec::new(),
                deps: Vec::new(),
            },
        };
        c.disk.put(&old, now).unwrap();
        assert!(c.get_file("old", "graph.svg").is_none());
        drop(c);
        // Reopened: still there; pruned to nothing: gone.
        let c = RenderCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(c.get_file("k", "graph.svg").unwrap().as_ref(), b"<svg/>");
        let r = c.prune(Some(0), None);
        assert!(r.files >= 1 && r.files_left == 0, "{r:?}");
        assert!(c.get_file("k", "graph.svg").is_none());
    }

    #[test]
    fn the_key_depends_on_the_bytes_and_the_options() {
        assert_eq!(key(b"a", false), key(b"a", false));
        assert_ne!(key(b"a", false), key(b"b", false));
        assert_ne!(key(b"a", false), key(b"a", true));
    }
}
