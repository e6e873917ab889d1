//! The cache's settings and the naming rules every call is checked against.

use crate::CacheError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Longest key, tag or dependency, bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Most tags on one entry.
pub const MAX_TAGS: usize = 32;
/// Most dependencies of one entry.
pub const MAX_DEPS: usize = 64;

/// Everything the cache can be told. Every tier is bounded in bytes and caps the TTL of
/// what it holds; `0` bytes turns a tier off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// L1 (memory) budget, bytes.
    pub memory_max_bytes: u64,
    /// Longest an entry stays in memory, ms (15 min).
    pub memory_ttl_cap_ms: u64,
    /// L2 folder; default `$XDG_CACHE_HOME/weir` (`~/.cache/weir`).
    pub dir: Option<PathBuf>,
    /// L2 (disk) budget, bytes; past it the least recently used files go.
    pub disk_max_bytes: u64,
    /// Longest an entry stays on disk, ms (7 days).
    pub disk_ttl_cap_ms: u64,
    /// L3: Redis URL (`redis://127.0.0.1:6379/0`), shared by every instance. None: off.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key Weir writes, so instances of one deployment find each
    /// other and other deployments (or tests) on the same Redis do not.
    pub redis_prefix: String,
    /// Longest an entry stays in Redis, ms (7 days).
    pub redis_ttl_cap_ms: u64,
    /// Redis calls slower than this count as a failure (and the tier as down), ms.
    pub redis_timeout_ms: u64,
    /// TTL of an entry set without one, ms (1 hour).
    pub default_ttl_ms: u64,
    /// Longest TTL a caller may ask for, ms (365 days).
    pub max_ttl_ms: u64,
    /// Largest value, bytes (8 MiB).
    pub max_value_bytes: usize,
    /// When not empty, the only namespaces allowed; others are refused.
    pub namespaces: Vec<String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory_max_bytes: 256 << 20,
            memory_ttl_cap_ms: 15 * 60_000,
            dir: None,
            disk_max_bytes: 4 << 30,
            disk_ttl_cap_ms: 7 * 86_400_000,
            redis_url: None,
            redis_prefix: "weir:cache:".into(),
            redis_ttl_cap_ms: 7 * 86_400_000,
            redis_timeout_ms: 500,
            default_ttl_ms: 3_600_000,
            max_ttl_ms: 365 * 86_400_000,
            max_value_bytes: 8 << 20,
            namespaces: Vec::new(),
        }
    }
}

impl CacheConfig {
    /// The disk tier's folder: `dir`, else `$XDG_CACHE_HOME/weir`, else `~/.cache/weir`.
    pub fn disk_dir(&self) -> Option<PathBuf> {
        self.dir
            .clone()
            .or_else(|| dirs::cache_dir().map(|d| d.join("weir")))
    }

    /// Checks ranges; the server calls it when it loads its file.
    pub fn validate(&self) -> Result<(), CacheError> {
        for ns in &self.namespaces {
            check_namespace_name(ns)?;
        }
        if self.default_ttl_ms == 0 || self.default_ttl_ms > self.max_ttl_ms {
            return Err(CacheError::invalid(
                "ttl_ms",
                "default_ttl_ms must be 1..=max_ttl_ms",
            ));
        }
        if self.max_value_bytes == 0 {
            return Err(CacheError::invalid("max_value_bytes", "must be at least 1"));
        }
        if let Some(url) = &self.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(CacheError::invalid(
                    "redis_url",
                    format!("{url:?} is not a redis:// URL"),
                ));
            }
        }
        Ok(())
    }

    /// Checks a namespace against the naming rules and the declared list.
    pub fn check_namespace(&self, ns: &str) -> Result<(), CacheError> {
        check_namespace_name(ns)?;
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == ns) {
            return Err(CacheError::UnknownNamespace(ns.to_string()));
        }
        Ok(())
    }

    /// The TTL to use for `ttl_ms` (None: the default), checked.
    pub fn ttl(&self, ttl_ms: Option<u64>) -> Result<u64, CacheError> {
        match ttl_ms {
            None => Ok(self.default_ttl_ms),
            Some(0) => Err(CacheError::invalid("ttl_ms", "must be at least 1 ms")),
            Some(t) if t > self.max_ttl_ms => Err(CacheError::invalid(
                "ttl_ms",
                format!("{t} ms is over the limit of {} ms", self.max_ttl_ms),
            )),
            Some(t) => Ok(t),
        }
    }
}

/// Namespaces: 1 to 64 of `A-Z a-z 0-9 _ . -`.
pub fn check_namespace_name(ns: &str) -> Result<(), CacheError> {
    let ok = !ns.is_empty()
        && ns.len() <= 64
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CacheError::invalid(
            "namespace",
            format!("{ns:?}: use 1 to 64 of A-Z a-z 0-9 _ . -"),
        ))
    }
}

/// Keys, tags and dependencies: 1 to [`MAX_KEY_BYTES`] bytes, no control characters.
pub fn check_key(what: &'static str, key: &str) -> Result<(), CacheError> {
    if key.is_empty() {
        return Err(CacheError::invalid(what, "must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(CacheError::invalid(
            what,
            format!("{} bytes is over the limit of {MAX_KEY_BYTES}", key.len()),
        ));
    }
    // Control characters are C0 (< 0x20), DEL and C1 (U+0080..U+009F, lead byte 0xC2):
    // a byte scan finds every candidate; only a 0xC2 needs the character check.
    let suspect = key.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2);
    if suspect && key.chars().any(char::is_control) {
        return Err(CacheError::invalid(
            what,
            "must not hold control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ttls_are_checked() {
        let mut c = CacheConfig::default();
        assert!(c.check_namespace("users.v2-x_1").is_ok());
        for bad in ["", "a b", "a/b", &"n".repeat(65)] {
            assert!(c.check_namespace(bad).is_err(), "{bad:?}");
        }
        c.namespaces = vec!["scores".into()];
        assert!(matches!(
            c.check_namespace("other"),
            Err(CacheError::UnknownNamespace(_))
        ));
        assert!(check_key("key", "").is_err());
        assert!(check_key("key", &"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(check_key("key", "a\nb").is_err());
        assert!(check_key("key", "user:42/ü").is_ok());
        assert_eq!(c.ttl(None).unwrap(), c.default_ttl_ms);
        assert!(c.ttl(Some(0)).is_err());
        assert!(c.ttl(Some(c.max_ttl_ms + 1)).is_err());
        assert!(CacheConfig {
            redis_url: Some("http://x".into()),
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
