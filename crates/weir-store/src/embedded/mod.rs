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
//! Lease grants and heartbeats are written lazily, one batch late and only for jobs still
//! leased then (see `commit.rs`), without anyone waiting for them. A graceful close writes
//! every live lease, so after a restart each lease lives on and its worker's ack is
//! accepted; after `kill -9` only the leases granted in the last two commits are lost (those
//! jobs are delivered again, which at-least-once delivery allows), and every other one
//! counts its attempt when it expires.
//!
//! # Threads
//! Two threads of the store's own, each with a wake-up of its own: the committer (woken when
//! the pending batch gains work) and the maintenance thread (woken on close, or when the next
//! time something falls due moves earlier than it planned to wake; see `maintain.rs`).
//!
//! # Failure
//! A write that fails, or an operation that panics while it holds the lock (which would leave
//! the engine half-updated), marks the store broken: it refuses everything after, and
//! [`Store::health`] (and so `/ready`) reports why. Only a reopen makes memory and disk
//! agree again.
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
mod disk;
#[cfg(feature = "fault-injection")]
mod fault;
mod maintain;
mod recover;
mod store_impl;

pub use disk::DiskUsage;
#[cfg(feature = "fault-injection")]
pub use fault::Fault;
pub use store_impl::LONG_POLL_FALLBACK;

use crate::store::*;
use commit::Pending;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use parking_lot::{Condvar, Mutex};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};
use weir_core::{Change, Clock, Engine, Error, Limits, Result, SystemClock};

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
    /// Cron entries by name (JSON [`crate::CronRecord`]s), written outside the job
    /// committer: they change rarely, each write persisted on its own.
    pub(crate) cron: Keyspace,
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
    /// When the maintenance thread next runs (clock ms; `u64::MAX` without one).
    pub(crate) maint_due: u64,
    /// Maintenance passes run, by the thread or [`Store::maintenance_run`].
    pub(crate) maint_passes: u64,
    /// Faults a test asked for.
    #[cfg(feature = "fault-injection")]
    pub(crate) faults: fault::Faults,
}

impl State {
    /// Runs `f` on the state. Should it panic, the engine may be half-updated, and
    /// parking_lot's mutex does not poison: the store is marked broken so that nothing later
    /// persists the damage, and the panic goes on to the caller (the server answers it with
    /// a 500, the maintenance thread ends).
    pub(crate) fn guarded<T>(&mut self, f: impl FnOnce(&mut State) -> T) -> T {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
            Ok(out) => out,
            Err(panic) => {
                let why = "an operation panicked while it held the store's lock";
                tracing::error!("{why}; the store refuses everything until reopened");
                self.broken = Some(why.to_string());
                std::panic::resume_unwind(panic);
            }
        }
    }

    /// Why the store refuses work, if it does.
    pub(crate) fn refusal(&self) -> Option<String> {
        if let Some(why) = &self.broken {
            return Some(format!("store is failed and must be reopened: {why}"));
        }
        self.closed.then(|| "store is closed".to_string())
    }

    /// Moves what the engine changed into the pending batch, encoded.
    pub(crate) fn absorb_changes(&mut self) {
        self.engine.drain_changes_into(&mut self.changes);
        for c in self.changes.drain(..) {
            commit::encode_change(&self.engine, c, &mut self.pending);
        }
    }
}

pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Wakes the committer when `pending` gains work, and on close.
    pub(crate) wake: Condvar,
    /// Wakes the maintenance thread on close and when its next due time moves earlier.
    pub(crate) maint: Condvar,
    pub(crate) db: Database,
    pub(crate) ks: Keyspaces,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) durability: Durability,
    /// Wakes long-polling fetchers when work may have arrived.
    pub(crate) work: Notify,
    /// Serialises cron writes, so that an advance compares and sets in one step.
    pub(crate) cron_lock: Mutex<()>,
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
        self.shared.maint.notify_all();
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

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::storage_from(e)
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
            cron: open("cron")?,
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
                maint_due: match opts.maintenance_every {
                    Some(every) => opts.clock.now_ms().saturating_add(every.as_millis() as u64),
                    None => u64::MAX,
                },
                maint_passes: 0,
                #[cfg(feature = "fault-injection")]
                faults: fault::Faults::default(),
            }),
            wake: Condvar::new(),
            maint: Condvar::new(),
            db,
            ks,
            clock: opts.clock.clone(),
            durability: opts.durability,
            work: Notify::new(),
            cron_lock: Mutex::new(()),
        });
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("weir-commit".into())
                .spawn(move || commit::run_guarded(&s))
                .map_err(storage)?,
        );
        if let Some(every) = opts.maintenance_every {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("weir-maintain".into())
                    .spawn(move || maintain::run(&s, every))
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

    /// Runs `f` on the engine under the lock, queues what it changed for the committer, and
    /// returns a receiver that resolves once that is on disk (for `durable` operations).
    pub(crate) fn apply<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut Engine, u64) -> Result<T>,
    ) -> Result<(T, Option<CommitWait>)> {
        let shared = &self.inner.shared;
        let mut guard = shared.state.lock();
        let st = &mut *guard;
        if let Some(why) = st.refusal() {
            return Err(Error::storage(why));
        }
        let now = shared.clock.now_ms();
        let out = st.guarded(|st| {
            #[cfg(feature = "fault-injection")]
            st.faults.before_operation();
            let out = f(&mut st.engine, now);
            #[cfg(debug_assertions)]
            debug_check(&st.engine);
            out
        })?;
        st.absorb_changes();
        let has_work = !st.pending.is_empty();
        let rx = if durable && (has_work || st.in_flight) {
            let (tx, rx) = oneshot::channel();
            st.pending.waiters.push(tx);
            Some(rx)
        } else {
            None
        };
        if has_work {
            maintain::note_next_wakeup(shared, st, now);
        }
        drop(guard);
        if has_work || rx.is_some() {
            shared.wake.notify_all();
        }
        Ok((out, rx))
    }

    /// [`Self::apply`] for a durable operation: returns once its writes are on disk.
    pub(crate) async fn apply_durable<T>(
        &self,
        f: impl FnOnce(&mut Engine, u64) -> Result<T>,
    ) -> Result<T> {
        let (out, rx) = self.apply(true, f)?;
        if let Some(rx) = rx {
            wait_durable(rx).await?;
        }
        Ok(out)
    }

    /// Why the store refuses work, if it does.
    pub(crate) fn refusal(&self) -> Option<String> {
        self.inner.shared.state.lock().refusal()
    }

    /// Maintenance passes run so far (by the thread or [`Store::maintenance_run`]).
    pub fn maintenance_passes(&self) -> u64 {
        self.inner.shared.state.lock().maint_passes
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&Engine, u64) -> T) -> T {
        let shared = &self.inner.shared;
        let st = shared.state.lock();
        f(&st.engine, shared.clock.now_ms())
    }

    /// Runs the engine's consistency check (for tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.read(|e, _| e.check_invariants())
    }
}

/// Waits for a commit to make a write durable.
pub(crate) async fn wait_durable(rx: CommitWait) -> Result<()> {
    rx.await
        .map_err(|_| Error::storage("store closed before the write was durable"))?
        .map_err(Error::storage)
}

/// In debug builds (and so in every test), the engine's invariants are checked after each
/// operation. The check is `O(jobs)`: above [`DEBUG_CHECK_ALL_UP_TO`] jobs it runs on every
/// 1,024th operation, so that tests with many jobs stay linear.
#[cfg(debug_assertions)]
fn debug_check(engine: &Engine) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static OPS: AtomicU64 = AtomicU64::new(0);
    let n = OPS.fetch_add(1, Ordering::Relaxed);
    if engine.len() <= DEBUG_CHECK_ALL_UP_TO || n.is_multiple_of(1024) {
        if let Err(e) = engine.check_invariants() {
            panic!("engine invariant broken after an operation: {e}");
        }
    }
}

/// See [`debug_check`].
#[cfg(debug_assertions)]
const DEBUG_CHECK_ALL_UP_TO: usize = 2_000;
