//! One cached entry and its byte format, shared by the disk and Redis tiers.
//!
//! An entry carries its own expiry, namespace version, tags and dependencies, so any tier
//! can judge it on its own and the disk tier can rebuild its indexes from its files.
//!
//! Format: `WEIRC1\0\0` (8 bytes), the header's length (u32, little endian), the header as
//! JSON ([`Meta`]), then the value bytes. JSON keeps the header readable with `head -c` and
//! costs nothing next to the I/O it rides on; a torn or foreign file fails the magic or the
//! length check and reads as a miss.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"WEIRC1\0\0";

/// What an entry says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Namespace.
    pub ns: String,
    /// Key within the namespace.
    pub key: String,
    /// When the entry was written by its caller, ms since the epoch.
    pub created_ms: u64,
    /// When the entry stops being valid in every tier, ms since the epoch. A tier may drop
    /// it earlier (its own cap); no tier ever keeps it longer, and promotion never moves it.
    pub expires_ms: u64,
    /// The namespace version it was written under; a bump retires it.
    pub version: u64,
    /// Tags: invalidating one removes the entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Keys (same namespace) this entry was derived from: invalidating one removes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<String>,
}

/// A value and what it says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The cached bytes.
    pub value: Bytes,
    /// Expiry, version, tags, dependencies.
    pub meta: Meta,
}

impl Entry {
    /// Bytes this entry costs in a memory tier: the value, the strings, a fixed overhead.
    pub fn weight(&self) -> u32 {
        let m = &self.meta;
        let strings = m.ns.len()
            + m.key.len()
            + m.tags.iter().map(|t| t.len() + 24).sum::<usize>()
            + m.deps.iter().map(|d| d.len() + 24).sum::<usize>();
        u32::try_from(self.value.len() + strings + 160).unwrap_or(u32::MAX)
    }

    /// The entry in its byte format.
    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.meta).unwrap_or_default();
        let mut out = Vec::with_capacity(12 + header.len() + self.value.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.value);
        out
    }

    /// Reads an entry back; `None` for anything that is not a whole entry.
    pub fn decode(bytes: Bytes) -> Option<Entry> {
        let (meta, start) = decode_meta(&bytes)?;
        Some(Entry {
            value: bytes.slice(start..),
            meta,
        })
    }
}

/// Reads only the header of an encoded entry (the disk tier's index rebuild), returning it
/// and where the value starts.
pub fn decode_meta(bytes: &[u8]) -> Option<(Meta, usize)> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(bytes[8..12].try_into().ok()?) as usize;
    let end = 12usize.checked_add(len)?;
    let header = bytes.get(12..end)?;
    let meta = serde_json::from_slice(header).ok()?;
    Some((meta, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            value: Bytes::from_static(b"hello \x00 world"),
            meta: Meta {
                ns: "n".into(),
                key: "k/ü".into(),
                created_ms: 1,
                expires_ms: 2,
                version: 3,
                tags: vec!["t".into()],
                deps: vec!["d".into()],
            },
        }
    }

    #[test]
    fn round_trips_and_rejects_torn_bytes() {
        let e = entry();
        let bytes = e.encode();
        assert_eq!(Entry::decode(Bytes::from(bytes.clone())), Some(e));
        for cut in [0, 5, 11, 13, 20] {
            assert_eq!(Entry::decode(Bytes::copy_from_slice(&bytes[..cut])), None);
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(Entry::decode(Bytes::from(bad)), None);
    }
}
