//! The embedded backend: Weir on one machine with no other service.
//!
//! # Design
//! The [`Engine`] holds every job in memory and decides everything; this module makes its
//! decisions durable. Each operation runs on the engine under one mutex, encodes what changed
//! (a job's spec on enqueue, its status on each later change, a tombstone on deletion) into
//! the pending batch, and, for operations that promise durability (enqueue, ack, fail,
//! cancel, retry, queue configuration), waits for the committer thread to have written that
//! batch. The committer takes whatever has accumulated, writes it as one atomic batch, and
//! fsyncs once (**group commit**): concurrent writers share one fsync, and a burst costs one
//! sync, not one per job. On open, the engine is rebuilt from the stored records.
//!
//! Lease grants and heartbeats are written lazily (without waiting): after a crash, a job
//! that was active is simply delivered again, which at-least-once delivery allows.
//!
//! # Why fjall
//! The records live in [fjall](https://docs.rs/fjall), a well-kept LSM-tree engine: its
//! journal gives atomic multi-keyspace batches and an explicit `persist` we can call once per
//! group, and its compaction reclaims the space of deleted jobs, which an append-only log of
//! our own would have to reimplement. The figures in `BENCHMARKS.md` show where its cost lies.
//!
//! # Durability modes
//! [`Durability::Fsync`] (the default) calls `fdatasync` before any durable operation is
//! acknowledged: an acknowledged write survives `kill -9` and power loss.
//! [`Durability::Os`] hands writes to the operating system and acknowledges without syncing:
//! it survives the process being killed, but the last moments of writes can be lost if the
//! machine itself crashes. Opt in only where that trade is acceptable.

mod codec;
mod commit;
mod recover;

use crate::store::*;
use async_trait::async_trait;
use commit::Pending;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use parking_lot::{Condvar, Mutex};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};
use weir_core::{
    AggregateRecord, BatchOutcome, Change, Clock, Engine, Error, FetchedJob, Job, JobFilter, JobId,
    JobPage, Limits, QueueStats, Result, SystemClock,
};

/// When an acknowledged write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fdatasync` before acknowledging (default): survives `kill -9` and power loss.
    #[default]
    Fsync,
    /// Handed to the OS before acknowledging: survives `kill -9`, not a machine crash.
    Os,
}

impl std::str::FromStr for Durability {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "os" => Ok(Durability::Os),
            _ => Err(Error::invalid(
                "durability",
                format!("{s:?}: expected fsync or os"),
            )),
        }
    }
}

/// How to open an [`EmbeddedStore`].
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// When writes are durable.
    pub durability: Durability,
    /// Request limits.
    pub limits: Limits,
    /// The clock (the system clock unless a test injects one).
    pub clock: Arc<dyn Clock>,
    /// Seed of lease ids and jitter; random when `None`.
    pub seed: Option<u64>,
    /// How often the background maintenance runs (due jobs, expired leases, retention);
    /// `None` runs it only when asked ([`Store::maintenance_run`]).
    pub maintenance_every: Option<Duration>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            durability: Durability::Fsync,
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            seed: None,
            maintenance_every: Some(Duration::from_secs(1)),
        }
    }
}

/// What opening the store found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Jobs restored.
    pub jobs: usize,
    /// Time taken, ms.
    pub elapsed_ms: u64,
}

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

/// Most bytes of journal kept before fjall flushes memory tables and deletes old journals.
/// It also bounds how much journal an open has to replay.
pub const MAX_JOURNAL_BYTES: u64 = 128 * 1024 * 1024;

/// Most bytes of one keyspace's memtable before fjall flushes it to a table.
const MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;

/// fjall's block cache: small, see [`EmbeddedStore::open`].
const BLOCK_CACHE_BYTES: u64 = 8 * 1024 * 1024;

pub(crate) struct Keyspaces {
    pub(crate) specs: Keyspace,
    pub(crate) statuses: Keyspace,
    pub(crate) queues: Keyspace,
    pub(crate) aggregates: Keyspace,
    pub(crate) meta: Keyspace,
}

pub(crate) struct State {
    pub(crate) engine: Engine,
    pub(crate) pending: Pending,
    /// Scratch for the engine's change list, reused to avoid an allocation per operation.
    changes: Vec<Change>,
    /// The committer is writing a batch taken from `pending`.
    pub(crate) in_flight: bool,
    pub(crate) closed: bool,
    /// Set when a write failed: the store refuses everything after (its memory is ahead of
    /// its disk, so only a reopen can make them agree again).
    pub(crate) broken: Option<String>,
    pub(crate) stats: CommitStats,
}

impl State {
    /// Moves what the engine changed into the pending batch, encoded.
    fn absorb_changes(&mut self) {
        self.engine.drain_changes_into(&mut self.changes);
        for c in self.changes.drain(..) {
            commit::encode_change(&self.engine, c, &mut self.pending);
        }
    }
}

pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Wakes the committer when `pending` fills, and the maintenance thread on close.
    pub(crate) wake: Condvar,
    pub(crate) db: Database,
    pub(crate) ks: Keyspaces,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) durability: Durability,
    /// Wakes long-polling fetchers when work may have arrived.
    pub(crate) work: Notify,
}

struct Inner {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    path: PathBuf,
    recovery: RecoveryReport,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.wake.notify_all();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

/// Resolves when the committer has made a write durable (or failed to).
type CommitWait = oneshot::Receiver<Result<(), String>>;

/// The embedded store. Cheap to clone; the last clone dropped flushes and closes it.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .field("durability", &self.inner.shared.durability)
            .finish()
    }
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `path` and recovers its state.
    pub fn open(path: impl AsRef<Path>, opts: EmbeddedOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(storage)?;
        let db = Database::builder(&path)
            .manual_journal_persist(true)
            .max_journaling_size(MAX_JOURNAL_BYTES)
            // The engine keeps the live state in memory and reads tables only when it opens
            // (one sequential scan), so a large block cache would only hold memory.
            .cache_size(BLOCK_CACHE_BYTES)
            .open()
            .map_err(storage)?;
        // fjall's memtables default to 64 MiB a keyspace, which its skiplist roughly doubles
        // in memory; the job keyspaces take the write load, and at 64 MiB they were most of
        // the server's RSS under a steady load (bench/soak.sh, BENCHMARKS.md). Smaller
        // memtables flush more often, in smaller tables.
        let open = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(storage)
        };
        let ks = Keyspaces {
            specs: open("job_specs")?,
            statuses: open("job_statuses")?,
            queues: open("queues")?,
            aggregates: open("aggregates")?,
            meta: open("meta")?,
        };
        let started = Instant::now();
        let seed = opts.seed.unwrap_or_else(|| fastrand::u64(..));
        let mut engine = Engine::new(opts.limits.clone(), seed);
        let jobs = recover::recover(&ks, &mut engine, opts.clock.now_ms())?;
        let recovery = RecoveryReport {
            jobs,
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(jobs, elapsed_ms = recovery.elapsed_ms, path = %path.display(), "store recovered");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                engine,
                pending: Pending::default(),
                changes: Vec::new(),
                in_flight: false,
                closed: false,
                broken: None,
                stats: CommitStats::default(),
            }),
            wake: Condvar::new(),
            db,
            ks,
            clock: opts.clock.clone(),
            durability: opts.durability,
            work: Notify::new(),
        });
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("weir-commit".into())
                .spawn(move || commit::run(&s))
                .map_err(storage)?,
        );
        if let Some(every) = opts.maintenance_every {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("weir-maintain".into())
                    .spawn(move || maintenance_loop(&s, every))
                    .map_err(storage)?,
            );
        }
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                shared,
                threads: Mutex::new(threads),
                path,
                recovery,
            }),
        })
    }

    /// What opening found.
    pub fn recovery(&self) -> RecoveryReport {
        self.inner.recovery
    }

    /// The committer's counters.
    pub fn commit_stats(&self) -> CommitStats {
        self.inner.shared.state.lock().stats
    }

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

    /// Runs `f` on the engine under the lock, queues what it changed for the committer, and
    /// returns a receiver that resolves once that is on disk (for `durable` operations).
    fn apply<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut Engine, u64) -> Result<T>,
    ) -> Result<(T, Option<CommitWait>)> {
        let shared = &self.inner.shared;
        let mut guard = shared.state.lock();
        let st = &mut *guard;
        if let Some(why) = &st.broken {
            return Err(Error::Storage(format!(
                "store is failed and must be reopened: {why}"
            )));
        }
        if st.closed {
            return Err(Error::Storage("store is closed".into()));
        }
        let now = shared.clock.now_ms();
        let out = f(&mut st.engine, now)?;
        st.absorb_changes();
        let has_work = !st.pending.is_empty();
        let rx = if durable && (has_work || st.in_flight) {
            let (tx, rx) = oneshot::channel();
            st.pending.waiters.push(tx);
            Some(rx)
        } else {
            None
        };
        drop(guard);
        if has_work || rx.is_some() {
            shared.wake.notify_all();
        }
        Ok((out, rx))
    }

    /// [`Self::apply`] for a durable operation: returns once its writes are on disk.
    async fn apply_durable<T>(&self, f: impl FnOnce(&mut Engine, u64) -> Result<T>) -> Result<T> {
        let (out, rx) = self.apply(true, f)?;
        if let Some(rx) = rx {
            rx.await
                .map_err(|_| Error::Storage("store closed before the write was durable".into()))?
                .map_err(Error::Storage)?;
        }
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&Engine, u64) -> T) -> T {
        let shared = &self.inner.shared;
        let st = shared.state.lock();
        f(&st.engine, shared.clock.now_ms())
    }

    /// Runs the engine's consistency check (for tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.read(|e, _| e.check_invariants())
    }

    fn maintain_once(&self) -> Result<(MaintenanceReport, Option<CommitWait>)> {
        let mut report = MaintenanceReport::default();
        loop {
            let (r, rx) = self.apply(true, |e, now| {
                e.tick(now);
                Ok(e.enforce_retention(now, 10_000))
            })?;
            report.deleted += r.deleted;
            if !r.more {
                return Ok((report, rx));
            }
        }
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

fn maintenance_loop(shared: &Arc<Shared>, every: Duration) {
    loop {
        {
            let mut st = shared.state.lock();
            if st.closed {
                return;
            }
            shared.wake.wait_for(&mut st, every);
            if st.closed {
                return;
            }
            if st.broken.is_some() {
                continue;
            }
            let now = shared.clock.now_ms();
            st.engine.tick(now);
            for e in st.engine.take_flow_events() {
                log_flow_event(&e);
            }
            let mut more = true;
            while more {
                let r = st.engine.enforce_retention(now, 10_000);
                more = r.more;
                st.absorb_changes();
                if more {
                    // Let other operations in between rounds of deletion.
                    parking_lot::MutexGuard::bump(&mut st);
                }
            }
        }
        shared.wake.notify_all();
        shared.work.notify_waiters();
    }
}

fn log_flow_event(e: &weir_core::FlowEvent) {
    use weir_core::FlowEvent;
    match e {
        FlowEvent::Starving { queue, oldest_ms } => {
            tracing::warn!(queue = %queue, oldest_ms, "queue is starving: its oldest waiting job is past starvation_ms; its fetch share is raised");
        }
        FlowEvent::Recovered { queue } => {
            tracing::info!(queue = %queue, "queue recovered from starvation")
        }
        FlowEvent::Breaker { queue, state } => {
            tracing::warn!(queue = %queue, state, "circuit breaker changed state");
        }
        _ => tracing::info!(event = ?e, "flow event"),
    }
}

/// How long a long-polling fetch sleeps before looking again when nothing wakes it: until the
/// next job falls due, at most what is `left` of its wait and at most a second, at least a
/// millisecond unless less than that is left.
fn long_poll_nap(due_in_ms: Option<u64>, left: Duration) -> Duration {
    let max = left.min(Duration::from_secs(1));
    due_in_ms
        .map(Duration::from_millis)
        .unwrap_or(max)
        .clamp(Duration::from_millis(1).min(max), max)
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn job_insert_many(&self, p: JobInsertManyParams) -> Result<Vec<JobId>> {
        let ids = self.apply_durable(|e, now| e.enqueue(p.jobs, now)).await?;
        self.inner.shared.work.notify_waiters();
        Ok(ids)
    }

    async fn job_fetch(&self, p: JobFetchParams) -> Result<Vec<FetchedJob>> {
        let names: Vec<&str> = p.queues.iter().map(String::as_str).collect();
        let deadline = Instant::now() + Duration::from_millis(p.wait_ms);
        loop {
            let notified = self.inner.shared.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (jobs, _) = self.apply(false, |e, now| Ok(e.fetch(&names, p.max, now)))?;
            let left = deadline.saturating_duration_since(Instant::now());
            if !jobs.is_empty() || p.max == 0 || left.is_zero() {
                return Ok(jobs);
            }
            // Wake for new work, or when a scheduled job falls due or a lease expires.
            let due = self.read(|e, now| e.next_wakeup().map(|t| t.saturating_sub(now)));
            let nap = long_poll_nap(due, left);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn job_fetch_next_token(&self, queues: &[String]) -> Result<Option<u64>> {
        let names: Vec<&str> = queues.iter().map(String::as_str).collect();
        Ok(self.read(|e, _| e.next_token_at(&names)))
    }

    async fn job_heartbeat(&self, p: JobHeartbeatParams) -> Result<u64> {
        Ok(self
            .apply(false, |e, now| {
                e.heartbeat(p.id, p.lease_id, p.progress, now)
            })?
            .0)
    }

    async fn job_ack_many(&self, p: JobAckManyParams) -> Result<BatchOutcome> {
        self.apply_durable(|e, now| e.ack(p.acks, now)).await
    }

    async fn job_fail_many(&self, p: JobFailManyParams) -> Result<BatchOutcome> {
        let out = self.apply_durable(|e, now| e.fail(p.fails, now)).await?;
        self.inner.shared.work.notify_waiters();
        Ok(out)
    }

    async fn job_release(&self, p: JobReleaseParams) -> Result<()> {
        self.apply_durable(|e, now| e.release(p.id, p.lease_id, now))
            .await?;
        self.inner.shared.work.notify_waiters();
        Ok(())
    }

    async fn job_cancel(&self, p: JobCancelParams) -> Result<()> {
        self.apply_durable(|e, now| e.cancel(p.id, now)).await?;
        // Cancelling the active job of a group frees the group's next job.
        self.inner.shared.work.notify_waiters();
        Ok(())
    }

    async fn job_retry(&self, p: JobRetryParams) -> Result<()> {
        self.apply_durable(|e, now| e.retry(p.id, now)).await?;
        self.inner.shared.work.notify_waiters();
        Ok(())
    }

    async fn job_get(&self, id: JobId) -> Result<Option<Job>> {
        Ok(self.read(|e, _| e.job(id)))
    }

    async fn job_list(&self, p: JobFilter) -> Result<JobPage> {
        Ok(self.read(|e, _| e.jobs_list(&p)))
    }

    async fn queue_config_set(&self, p: QueueConfigSetParams) -> Result<()> {
        self.apply_durable(|e, _| e.queue_config_set(&p.name, p.config))
            .await?;
        self.inner.shared.work.notify_waiters();
        Ok(())
    }

    async fn queue_purge(&self, p: QueuePurgeParams) -> Result<u64> {
        let n = self
            .apply_durable(|e, now| Ok(e.purge(&p.name, now)))
            .await?;
        // Purging a group's held-back jobs can free nothing, but keep fetchers honest.
        self.inner.shared.work.notify_waiters();
        Ok(n)
    }

    async fn queue_list(&self) -> Result<Vec<String>> {
        Ok(self.read(|e, _| e.queue_names()))
    }

    async fn queue_stats(&self, name: &str) -> Result<Option<QueueStats>> {
        Ok(self.read(|e, now| e.queue_stats(name, now)))
    }

    async fn aggregate_list(&self, p: AggregateListParams) -> Result<Vec<AggregateRecord>> {
        Ok(self.read(|e, _| e.aggregates(p.queue.as_deref(), p.from_ms, p.to_ms)))
    }

    async fn maintenance_run(&self) -> Result<MaintenanceReport> {
        let (report, rx) = self.maintain_once()?;
        if let Some(rx) = rx {
            rx.await
                .map_err(|_| Error::Storage("store closed".into()))?
                .map_err(Error::Storage)?;
        }
        self.inner.shared.work.notify_waiters();
        Ok(report)
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.inner.shared.clock.clone()
    }

    fn commit_stats(&self) -> Option<CommitStats> {
        Some(EmbeddedStore::commit_stats(self))
    }
}

#[cfg(test)]
mod tests {
    use super::long_poll_nap;
    use std::time::Duration;

    #[test]
    fn long_poll_nap_stays_within_what_is_left() {
        let ms = Duration::from_millis;
        // Less than a millisecond left (this once panicked in `clamp`).
        assert_eq!(
            long_poll_nap(Some(50), Duration::from_micros(300)),
            Duration::from_micros(300)
        );
        assert_eq!(
            long_poll_nap(None, Duration::from_micros(300)),
            Duration::from_micros(300)
        );
        assert_eq!(long_poll_nap(Some(0), ms(500)), ms(1));
        assert_eq!(long_poll_nap(Some(20), ms(500)), ms(20));
        assert_eq!(long_poll_nap(None, ms(500)), ms(500));
        assert_eq!(long_poll_nap(None, ms(5000)), ms(1000));
        assert_eq!(long_poll_nap(Some(9000), ms(5000)), ms(1000));
    }
}
