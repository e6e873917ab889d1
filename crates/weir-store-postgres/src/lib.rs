//! Weir's PostgreSQL backend: several stateless `weir serve` processes on one database.
//!
//! Scheduling happens in SQL, not in one process's memory, so every server sees the same
//! jobs and every limit counts all of them (docs/postgres.md):
//!
//! - A fetch claims jobs with `SELECT … ORDER BY rank, sort_cost, id LIMIT n FOR UPDATE SKIP
//!   LOCKED` over a partial index that holds only the jobs it may take (`jobs_ready`). Jobs in
//!   the future and jobs awaiting a retry live in another index and are moved into the hot one
//!   when due, by the fetch that wants them or by the maintenance leader.
//! - Ordered groups and per-key concurrency keep an `avail` flag on each waiting job,
//!   re-derived by `refresh_group` (a SQL function, serialised per group) whenever one of the
//!   group's jobs changes state.
//! - A queue's concurrency limit locks its row in the fetch transaction and counts its
//!   active jobs, so the limit holds across servers.
//! - Unique keys are rows of their own, claimed with `INSERT … ON CONFLICT … WHERE` (no
//!   advisory locks: a rolled-back holder never makes another caller see a phantom conflict).
//! - Long polls wake on the local server at once and on the others through LISTEN/NOTIFY,
//!   sent after the insert has committed (never inside it), with a polling fallback.
//! - Time comes from the store's [`Clock`], passed into every statement, never from `now()`.
//!
//! # Layout
//! - `schema`: versioned migrations, safe when several servers start at once.
//! - `jobs`: enqueue, fetch, ack, fail, heartbeat, release, cancel, retry, purge.
//! - `queues`: configuration, statistics, listings, aggregates.
//! - `background`: LISTEN/NOTIFY, the maintenance leader, the aggregate buffer.
//! - `conv`: rows to jobs, integers, errors.

mod background;
mod conv;
mod flow;
mod jobs;
mod queues;
mod schema;

#[cfg(test)]
mod plans;

use async_trait::async_trait;
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_core::{
    AggregateRecord, BatchOutcome, Clock, Error, FetchedJob, Job, JobFilter, JobId, JobPage,
    LatencyHistogram, Limits, QueueConfig, QueueStats, Result, SystemClock,
};
use weir_store::{
    AggregateListParams, CronRecord, JobAckManyParams, JobCancelParams, JobDeleteParams,
    JobFailManyParams, JobFetchParams, JobHeartbeatParams, JobInsertManyParams, JobReleaseParams,
    JobRetryParams, MaintenanceReport, QueueConfigSetParams, QueueConfigUpdateParams,
    QueueDeleteParams, QueuePurgeParams, Store,
};

pub use schema::{drop_schema_blocking, migrate, validate_schema_name, SCHEMA_VERSION};

/// The default of [`PostgresOptions::poll_interval`].
pub const LONG_POLL_FALLBACK: Duration = Duration::from_millis(250);

/// How long a server trusts its copy of a queue's configuration: a pause or a new limit set
/// through another server is seen within this.
pub const CONFIG_TTL: Duration = Duration::from_millis(500);

/// How to open a [`PostgresStore`].
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://USER@HOST:PORT/DB` (any form tokio-postgres accepts).
    pub url: String,
    /// The schema this deployment's tables live in (created and migrated on open).
    pub schema: String,
    /// Engine-wide limits, as for the embedded store.
    pub limits: Limits,
    /// The clock every time decision reads.
    pub clock: Arc<dyn Clock>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long a request waits for a connection (or for PostgreSQL to answer a connect)
    /// before it fails with a storage error (HTTP 503).
    pub connect_timeout: Duration,
    /// How long a long-polling fetch that found nothing waits for a wake-up before it looks
    /// again on its own: what a NOTIFY lost with a dropped connection costs at most, and
    /// the only wake-up behind a pooler that cannot LISTEN.
    pub poll_interval: Duration,
    /// How often this server tries to be the maintenance leader and, when it is, promotes,
    /// rescues and deletes; `None` runs maintenance only when asked.
    pub maintenance_every: Option<Duration>,
}

impl PostgresOptions {
    /// Options for `url` with the defaults: schema `weir`, the system clock, 16 connections,
    /// maintenance every second.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            schema: "weir".into(),
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            poll_interval: LONG_POLL_FALLBACK,
            maintenance_every: Some(Duration::from_secs(1)),
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        f.debug_struct("PostgresOptions")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// `url` with any password replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A job store on PostgreSQL. Cheap to clone; every clone and every other server opened on
/// the same schema sees the same jobs.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
    _tasks: Arc<background::Tasks>,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    /// Connections with `synchronous_commit` off, for lease grants (see [`PostgresStore::open`]).
    pub(crate) lease_pool: Pool,
    /// The quoted schema, as statements spell it.
    pub(crate) s: String,
    pub(crate) schema: String,
    pub(crate) limits: Limits,
    pub(crate) clock: Arc<dyn Clock>,
    /// Woken when work may have arrived: by this server's own writes at once, and by the
    /// listener when another server's NOTIFY comes in.
    pub(crate) wake: tokio::sync::Notify,
    /// Asks the notifier task to send one NOTIFY (coalescing requests made meanwhile).
    pub(crate) notify_request: tokio::sync::Notify,
    /// Long polls waiting on one queue, woken by work in that queue only, one at a time: a
    /// woken poll that leases a full batch wakes the next ([`Inner::wake_queue`]).
    pub(crate) wakers: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    /// This server's mark on the NOTIFYs it sends (`@` and 16 hex digits, first word of the
    /// payload), so that its listener skips its own: its long polls were woken already.
    pub(crate) instance: String,
    /// The queues the next NOTIFY names (`*`: all).
    pub(crate) pending_notify: Mutex<std::collections::BTreeSet<String>>,
    pub(crate) configs: Mutex<HashMap<String, (QueueConfig, Instant)>>,
    pub(crate) local: Mutex<HashMap<String, LocalStats>>,
    pub(crate) aggregates: Mutex<background::AggregateBuffer>,
    pub(crate) channel: String,
    pub(crate) url: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) poll_interval: Duration,
    /// When this server last ran the time-driven transitions of each queue it fetches.
    pub(crate) ticks: Mutex<HashMap<String, u64>>,
}

/// What every pooled connection sets first. Sequential scans off: every statement Weir
/// sends is written to be driven by an index (the plan test, `plans.rs`, pins it), and the
/// one way the planner still reaches for a scan of the whole table is when it believes the
/// table empty. It does right after a drained queue's table is vacuumed (truncated to no
/// pages, its statistics zero): the vacuum makes every connection plan again, a generic
/// plan made then is kept through the whole next burst, and the lease read and sorted every
/// waiting job on each fetch (one server fell from ~40,000 to ~10,000 jobs/s). Off, a
/// sequential scan is only taken where no index applies; the indexes keep their real sizes
/// after a vacuum, so their costs stay honest.
///
/// And a random page read costs 1.1 sequential ones (PostgreSQL's default, 4, is a spinning
/// disk's; 1.1 is the usual setting on SSDs). At 4, a generic plan of the promotion of due
/// jobs (`run_at <= $1 ORDER BY run_at LIMIT 5000`, which it guesses selects a third of
/// a queue's scheduled jobs) read all of them through a bitmap and sorted them rather than
/// walk `jobs_due_by_queue` in order, on every fetch's tick.
pub(crate) const SESSION: &str = "SET enable_seqscan TO off; SET random_page_cost TO 1.1";

/// [`SESSION`], and asynchronous commit, for the connections that grant leases.
const LEASE_SESSION: &str =
    "SET enable_seqscan TO off; SET random_page_cost TO 1.1; SET synchronous_commit TO off";

/// What this server has seen of one queue since it started: latency histograms.
#[derive(Default)]
pub(crate) struct LocalStats {
    pub(crate) wait_ms: LatencyHistogram,
    pub(crate) run_ms: LatencyHistogram,
}

impl PostgresStore {
    /// Connects, creates or migrates the schema, and starts the listener and (if asked) the
    /// maintenance loop. Fails with a storage error that names what went wrong (bad URL,
    /// unreachable server, a schema migrated by a newer Weir).
    pub async fn open(opts: PostgresOptions) -> Result<Self> {
        validate_schema_name(&opts.schema)?;
        let mut pg = tokio_postgres::Config::from_str(&opts.url)
            .map_err(|e| Error::invalid("store", format!("not a PostgreSQL URL ({e})")))?;
        pg.connect_timeout(opts.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("weir");
        }
        let build = |size: usize, post_create: Option<Hook>| {
            let manager = Manager::from_config(
                pg.clone(),
                tokio_postgres::NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            let mut b = Pool::builder(manager)
                .max_size(size)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(opts.connect_timeout))
                .create_timeout(Some(opts.connect_timeout))
                .recycle_timeout(Some(opts.connect_timeout));
            if let Some(hook) = post_create {
                b = b.post_create(hook);
            }
            b.build()
                .map_err(|e| Error::storage(format!("cannot build the connection pool: {e}")))
        };
        let session = |sql: &'static str| {
            Hook::async_fn(move |client, _| {
                Box::pin(async move { client.batch_execute(sql).await.map_err(HookError::Backend) })
            })
        };
        let pool = build(opts.pool_size.max(2), Some(session(SESSION)))?;
        // Leases are granted on connections that commit asynchronously: a fetch does not
        // wait for its lease to reach the disk. DESIGN.md allows it — a lease lost with a
        // crash of PostgreSQL only means the job is delivered again — and every later
        // synchronous commit (an ack, an enqueue) flushes the log up to itself, so an
        // acknowledged write never rests on a lost lease. Acks, fails, enqueues and the
        // limited queues' fetches (their rate and concurrency bookkeeping) stay on the
        // synchronous pool.
        let lease_pool = build((opts.pool_size / 2).max(2), Some(session(LEASE_SESSION)))?;
        let s = schema::quote(&opts.schema);
        {
            let mut client = pool.get().await.map_err(conv::pool_err)?;
            migrate(&mut client, &opts.schema).await?;
        }
        let inner = Arc::new(Inner {
            pool,
            lease_pool,
            channel: format!("weir_{}", opts.schema),
            s,
            schema: opts.schema.clone(),
            limits: opts.limits,
            clock: opts.clock.clone(),
            wake: tokio::sync::Notify::new(),
            notify_request: tokio::sync::Notify::new(),
            wakers: Mutex::new(HashMap::new()),
            instance: format!("@{:016x}", fastrand::u64(..)),
            pending_notify: Mutex::new(std::collections::BTreeSet::new()),
            configs: Mutex::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
            aggregates: Mutex::new(background::AggregateBuffer::default()),
            url: opts.url.clone(),
            connect_timeout: opts.connect_timeout,
            poll_interval: opts.poll_interval.max(Duration::from_millis(5)),
            ticks: Mutex::new(HashMap::new()),
        });
        let tasks = background::Tasks::start(&inner, opts.maintenance_every).await;
        Ok(PostgresStore {
            inner,
            _tasks: Arc::new(tasks),
        })
    }

    /// The schema this store works in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }
}

impl Inner {
    /// `sql` with `{s}` replaced by the quoted schema.
    pub(crate) fn q(&self, sql: &str) -> String {
        #[cfg(test)]
        plans::seen(sql);
        sql.replace("{s}", &self.s)
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(conv::pool_err)
    }

    /// A connection that commits asynchronously, for lease grants only.
    pub(crate) async fn lease_client(&self) -> Result<deadpool_postgres::Client> {
        self.lease_pool.get().await.map_err(conv::pool_err)
    }

    /// Wakes every long poll of this server now and of the others through a NOTIFY (work
    /// may have arrived in any queue).
    pub(crate) fn work_arrived(&self) {
        self.wake.notify_waiters();
        self.pending_notify.lock().insert("*".to_string());
        self.notify_request.notify_one();
    }

    /// Wakes the long polls on `queues`, here now and on the other servers through a NOTIFY
    /// that names them (so a server's idle workers on other queues stay asleep).
    pub(crate) fn work_arrived_in<'a>(&self, queues: impl IntoIterator<Item = &'a str>) {
        let mut pending = self.pending_notify.lock();
        for q in queues {
            self.wake_queue(q);
            pending.insert(q.to_string());
        }
        drop(pending);
        self.notify_request.notify_one();
    }

    /// Wakes one of this server's long polls on `queue` (or, with none waiting, lets the next
    /// one look at once). Waking every poll for every arrival made each enqueue cost one
    /// empty fetch per idle worker; the poll that wakes and fills its batch wakes the next
    /// (see `fetch`), and a woken poll that gives up before it looks passes its turn on.
    pub(crate) fn wake_queue(&self, queue: &str) {
        if let Some(n) = self.wakers.lock().get(queue) {
            n.notify_one();
        }
    }

    /// The wake-up of long polls on `queue`.
    pub(crate) fn waker(&self, queue: &str) -> Arc<tokio::sync::Notify> {
        self.wakers
            .lock()
            .entry(queue.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Notify::new()))
            .clone()
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn job_insert_many(&self, p: JobInsertManyParams) -> Result<Vec<JobId>> {
        conv::with_retry(|| self.inner.insert_many(&p.jobs)).await
    }

    async fn job_fetch(&self, p: JobFetchParams) -> Result<Vec<FetchedJob>> {
        self.inner.fetch(p).await
    }

    async fn job_fetch_next_token(&self, queues: &[String]) -> Result<Option<u64>> {
        self.inner.next_token(queues).await
    }

    async fn job_heartbeat(&self, p: JobHeartbeatParams) -> Result<u64> {
        self.inner.heartbeat(p).await
    }

    async fn job_ack_many(&self, p: JobAckManyParams) -> Result<BatchOutcome> {
        self.inner.ack_many(&p.acks).await
    }

    async fn job_fail_many(&self, p: JobFailManyParams) -> Result<BatchOutcome> {
        conv::with_retry(|| self.inner.fail_many(&p.fails)).await
    }

    async fn job_release(&self, p: JobReleaseParams) -> Result<()> {
        self.inner.release(p.id, p.lease_id).await
    }

    async fn job_cancel(&self, p: JobCancelParams) -> Result<()> {
        self.inner.cancel(p.id).await
    }

    async fn job_retry(&self, p: JobRetryParams) -> Result<()> {
        self.inner.retry(p.id).await
    }

    async fn job_delete(&self, p: JobDeleteParams) -> Result<()> {
        self.inner.delete(p.id).await
    }

    async fn job_get(&self, id: JobId) -> Result<Option<Job>> {
        self.inner.get(id).await
    }

    async fn job_list(&self, p: JobFilter) -> Result<JobPage> {
        self.inner.list(p).await
    }

    async fn queue_config_set(&self, p: QueueConfigSetParams) -> Result<()> {
        let config = p.config;
        self.inner
            .config_update(&p.name, move |c| *c = config.clone())
            .await
            .map(|_| ())
    }

    async fn queue_config_update(&self, p: QueueConfigUpdateParams) -> Result<QueueConfig> {
        let patch = p.patch;
        self.inner
            .config_update(&p.name, move |c| patch.apply_to(c))
            .await
    }

    async fn queue_config_get(&self, name: &str) -> Result<Option<QueueConfig>> {
        self.inner.config_get(name).await
    }

    async fn queue_purge(&self, p: QueuePurgeParams) -> Result<u64> {
        self.inner.purge(&p.name).await
    }

    async fn queue_delete(&self, p: QueueDeleteParams) -> Result<u64> {
        self.inner.delete_queue(&p.name).await
    }

    async fn queue_list(&self) -> Result<Vec<String>> {
        self.inner.queue_list().await
    }

    async fn queue_stats(&self, name: &str) -> Result<Option<QueueStats>> {
        self.inner.queue_stats(name).await
    }

    async fn cron_put(&self, r: CronRecord) -> Result<CronRecord> {
        let client = self.inner.client().await?;
        let row = client
            .query_one(
                &self.inner.q(
                    "INSERT INTO {s}.cron (name, spec, last_tick_ms, updated_at_ms) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE \
                     SET spec = excluded.spec, updated_at_ms = excluded.updated_at_ms \
                     RETURNING last_tick_ms",
                ),
                &[
                    &r.name,
                    &r.spec,
                    &(r.last_tick_ms as i64),
                    &(r.updated_at_ms as i64),
                ],
            )
            .await
            .map_err(conv::db)?;
        Ok(CronRecord {
            last_tick_ms: row.get::<_, i64>(0) as u64,
            ..r
        })
    }

    async fn cron_delete(&self, name: &str) -> Result<bool> {
        let client = self.inner.client().await?;
        let n = client
            .execute(
                &self.inner.q("DELETE FROM {s}.cron WHERE name = $1"),
                &[&name],
            )
            .await
            .map_err(conv::db)?;
        Ok(n > 0)
    }

    async fn cron_list(&self) -> Result<Vec<CronRecord>> {
        let client = self.inner.client().await?;
        let rows = client
            .query(
                &self.inner.q(
                    "SELECT name, spec, last_tick_ms, updated_at_ms FROM {s}.cron ORDER BY name",
                ),
                &[],
            )
            .await
            .map_err(conv::db)?;
        Ok(rows
            .iter()
            .map(|r| CronRecord {
                name: r.get(0),
                spec: r.get(1),
                last_tick_ms: r.get::<_, i64>(2) as u64,
                updated_at_ms: r.get::<_, i64>(3) as u64,
            })
            .collect())
    }

    async fn cron_advance(&self, name: &str, from_ms: u64, to_ms: u64) -> Result<bool> {
        let client = self.inner.client().await?;
        let n = client
            .execute(
                &self.inner.q(
                    "UPDATE {s}.cron SET last_tick_ms = $3 WHERE name = $1 AND last_tick_ms = $2",
                ),
                &[&name, &(from_ms as i64), &(to_ms as i64)],
            )
            .await
            .map_err(conv::db)?;
        Ok(n == 1)
    }

    async fn aggregate_list(&self, p: AggregateListParams) -> Result<Vec<AggregateRecord>> {
        self.inner.aggregate_list(p).await
    }

    async fn maintenance_run(&self) -> Result<MaintenanceReport> {
        self.inner.maintain().await
    }

    async fn health(&self) -> Result<()> {
        let client = self.inner.client().await?;
        tokio::time::timeout(self.inner.connect_timeout, client.simple_query("SELECT 1"))
            .await
            .map_err(|_| Error::storage("PostgreSQL did not answer in time"))?
            .map_err(conv::db)?;
        Ok(())
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_never_printed() {
        assert_eq!(
            redact_url("postgres://weir:s3cret@db:5432/jobs"),
            "postgres://weir:***@db:5432/jobs"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        let opts = PostgresOptions::new("postgres://u:hunter2@h/d");
        assert!(!format!("{opts:?}").contains("hunter2"));
    }
}
