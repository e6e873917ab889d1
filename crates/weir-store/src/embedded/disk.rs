//! Where the embedded store's disk space goes, and compaction on demand.

use super::{storage, EmbeddedStore};
use std::path::Path;
use weir_core::Result;

/// Where the store's disk space goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// The write-ahead journal: bounded by [`MAX_JOURNAL_BYTES`]; rotated and deleted once
    /// its records are flushed into tables.
    pub journal_bytes: u64,
    /// Tables and metadata: the records themselves, compacted in the background.
    pub table_bytes: u64,
}

impl DiskUsage {
    /// Both together.
    pub fn total(&self) -> u64 {
        self.journal_bytes + self.table_bytes
    }
}

impl EmbeddedStore {
    /// Bytes the store's files occupy on disk: blocks actually allocated, not file lengths
    /// (fjall preallocates its journal as a sparse 64 MiB file, which costs only what it holds).
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let mut usage = DiskUsage::default();
        allocated_bytes(&self.inner.path, &mut usage).map_err(storage)?;
        Ok(usage)
    }

    /// Flushes memory tables and compacts every keyspace now, so the space of deleted jobs
    /// is returned to the file system. Compaction also runs on its own in the background;
    /// this is for operators and tests that want it done before they measure.
    pub fn compact(&self) -> Result<()> {
        let ks = &self.inner.shared.ks;
        for k in [
            &ks.specs,
            &ks.statuses,
            &ks.queues,
            &ks.aggregates,
            &ks.meta,
        ] {
            k.rotate_memtable_and_wait().map_err(storage)?;
            k.major_compact().map_err(storage)?;
        }
        Ok(())
    }
}

fn allocated_bytes(dir: &Path, usage: &mut DiskUsage) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            allocated_bytes(&entry.path(), usage)?;
            continue;
        }
        #[cfg(unix)]
        let bytes = {
            use std::os::unix::fs::MetadataExt;
            meta.blocks() * 512
        };
        #[cfg(not(unix))]
        let bytes = meta.len();
        if entry.path().extension().is_some_and(|e| e == "jnl") {
            usage.journal_bytes += bytes;
        } else {
            usage.table_bytes += bytes;
        }
    }
    Ok(())
}
