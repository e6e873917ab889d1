//! The worker pool: register an async handler per job kind, and [`Worker::run`] fetches in
//! batches, runs handlers concurrently, heartbeats while they run, and acks or fails their
//! outcomes in batches.
//!
//! A handler's `Err` or panic is a failed attempt carrying its message (retried with
//! backoff by the server while attempts are left), and the worker goes on. Shutdown is
//! graceful: stop fetching (a fetch already sent is allowed to return, and the jobs it
//! leased are run), let running handlers finish within the grace period, then give the
//! leases of those still running back to the server so another worker
//! picks them up at once rather than after the lease expires (the attempt is not counted).
//!
//! A job of a kind the worker has no handler for is given back the same way, untouched, for
//! a worker that has one (during a rolling deploy, a new kind reaches old workers first);
//! each such kind is logged once, counted in [`WorkerReport::unhandled`], and a fetch that
//! brought nothing else is followed by a short pause so that a worker alone with such jobs
//! does not spin on them.

use crate::client::{Client, ClientError};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_api::{AckItem, FailItem, FetchedJobView, ProblemType};

/// What a handler returns: an optional result document, or why the attempt failed.
pub type HandlerResult = Result<Option<serde_json::Value>, HandlerError>;

/// A failed attempt.
#[derive(Debug, Clone)]
pub struct HandlerError {
    /// What went wrong (stored with the job).
    pub message: String,
    /// `false` makes the job dead at once, whatever attempts are left.
    pub retry: bool,
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn retry(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retry: true,
        }
    }

    /// A failure no retry can fix (bad input, for example).
    pub fn fatal(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retry: false,
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::retry(e.to_string())
    }
}

/// One job as a handler sees it.
pub struct JobContext {
    /// The job's id.
    pub id: u64,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Its payload, as JSON text.
    pub payload: Box<RawValue>,
    lease_id: u64,
    client: Client,
    lease_lost: CancellationToken,
}

impl JobContext {
    /// The payload parsed into `T`; a payload of the wrong shape is a fatal error.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_str(self.payload.get())
            .map_err(|e| HandlerError::fatal(format!("payload: {e}")))
    }

    /// Records progress (and extends the lease).
    pub async fn progress<T: Serialize>(&self, value: &T) -> Result<(), ClientError> {
        let raw = serde_json::value::to_raw_value(value)
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        self.client
            .heartbeat(self.id, self.lease_id, Some(raw))
            .await
            .map(|_| ())
    }

    /// Cancelled when the lease is lost (expired, cancelled by an operator): the result
    /// will be refused, so long handlers may stop early.
    pub fn lease_lost(&self) -> &CancellationToken {
        &self.lease_lost
    }
}

type Handler = Arc<dyn Fn(JobContext) -> BoxFuture<'static, HandlerResult> + Send + Sync>;

/// How many jobs run at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Concurrency {
    /// Exactly this many.
    Fixed(usize),
    /// `min(cores × per_core, memory_budget ÷ per_job_bytes)`, at least 1. The memory
    /// budget is half of the memory available when the worker starts.
    Auto {
        /// Jobs per core (I/O-bound handlers want more).
        per_core: usize,
        /// Estimate of one running job's memory.
        per_job_bytes: u64,
    },
}

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency::Auto {
            per_core: 8,
            per_job_bytes: 64 << 20,
        }
    }
}

impl Concurrency {
    /// The number this resolves to on this machine.
    pub fn resolve(self) -> usize {
        match self {
            Concurrency::Fixed(n) => n.max(1),
            Concurrency::Auto {
                per_core,
                per_job_bytes,
            } => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let by_cpu = cores.saturating_mul(per_core);
                let by_mem = available_memory()
                    .map(|m| (m / 2 / per_job_bytes.max(1)) as usize)
                    .unwrap_or(usize::MAX);
                by_cpu.min(by_mem).max(1)
            }
        }
    }
}

/// `MemAvailable` from `/proc/meminfo`, where there is one.
/// The memory the kernel says is available (`MemAvailable`), bytes; `None` where it does not
/// say.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    client: Client,
    queues: Vec<String>,
    handlers: HashMap<String, Handler>,
    concurrency: Concurrency,
    batch: usize,
    wait_ms: u64,
    grace: Duration,
    name: String,
}

impl WorkerBuilder {
    /// A worker taking from `queues` (earlier ones first).
    pub fn new(client: Client, queues: &[&str]) -> Self {
        WorkerBuilder {
            client,
            queues: queues.iter().map(|q| q.to_string()).collect(),
            handlers: HashMap::new(),
            concurrency: Concurrency::default(),
            batch: 100,
            wait_ms: 1_000,
            grace: Duration::from_secs(30),
            name: format!("worker-{}", std::process::id()),
        }
    }

    /// Runs `f` for jobs of `kind`.
    pub fn handle<F, Fut>(mut self, kind: &str, f: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.handlers
            .insert(kind.to_string(), Arc::new(move |ctx| f(ctx).boxed()));
        self
    }

    /// How many jobs run at once (default [`Concurrency::default`]).
    pub fn concurrency(mut self, c: Concurrency) -> Self {
        self.concurrency = c;
        self
    }

    /// Most jobs per fetch (default 100).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Long-poll wait per fetch (default 1 s); also bounds how long shutdown waits for a
    /// fetch in flight.
    pub fn wait_ms(mut self, ms: u64) -> Self {
        self.wait_ms = ms;
        self
    }

    /// How long running handlers may take to finish on shutdown (default 30 s).
    pub fn grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// The worker's name in server logs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The worker.
    pub fn build(self) -> Worker {
        Worker {
            concurrency: self.concurrency.resolve(),
            inner: Arc::new(self),
            stats: Arc::new(Stats::default()),
        }
    }
}

#[derive(Default)]
struct Stats {
    completed: AtomicU64,
    failed: AtomicU64,
    given_back: AtomicU64,
    refused: AtomicU64,
    unhandled: AtomicU64,
}

/// What a worker did, when [`Worker::run`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Jobs acked.
    pub completed: u64,
    /// Attempts failed (handler error or panic).
    pub failed: u64,
    /// Jobs of a kind this worker has no handler for, given back untouched (their attempt
    /// not counted) for a worker that has one.
    pub unhandled: u64,
    /// Jobs still running after the grace period, whose leases were given back.
    pub given_back: u64,
    /// Acks or fails the server refused (the lease was already gone).
    pub refused: u64,
}

/// A running pool. See the module docs.
pub struct Worker {
    inner: Arc<WorkerBuilder>,
    concurrency: usize,
    stats: Arc<Stats>,
}

enum Outcome {
    Ack(AckItem),
    Fail(FailItem),
    /// Give the lease back without counting the attempt (shutdown).
    Release {
        id: u64,
        lease_id: u64,
    },
}

impl Worker {
    /// How many jobs run at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Runs until `shutdown` is cancelled, then shuts down gracefully (module docs).
    pub async fn run(self, shutdown: CancellationToken) -> WorkerReport {
        let w = &self.inner;
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let (tx, rx) = mpsc::unbounded_channel::<Outcome>();
        let reporter = tokio::spawn(report(w.client.clone(), rx, self.stats.clone()));
        let tracker = TaskTracker::new();
        let abandon = CancellationToken::new();
        let mut failures = 0u32;
        let mut unknown_kinds = std::collections::HashSet::new();
        while !shutdown.is_cancelled() {
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                () = shutdown.cancelled() => break,
            };
            let mut permits = vec![first];
            while permits.len() < w.batch {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // Not raced against shutdown: jobs a fetch leased must be run, not dropped.
            match w
                .client
                .fetch(&w.queues, permits.len(), w.wait_ms, &w.name)
                .await
            {
                Ok(jobs) => {
                    failures = 0;
                    let (mut ran, mut unhandled) = (0, 0);
                    for job in jobs {
                        if !w.handlers.contains_key(&job.kind) {
                            // Another worker (a newer deployment) may know the kind: give the
                            // job back without burning an attempt.
                            unhandled += 1;
                            self.release_unhandled(&job, &mut unknown_kinds).await;
                            continue;
                        }
                        let Some(permit) = permits.pop() else { break };
                        let ctx = (w.clone(), tx.clone(), abandon.clone(), self.stats.clone());
                        tracker.spawn(run_one(job, permit, ctx));
                        ran += 1;
                    }
                    if unhandled > 0 && ran == 0 {
                        // Only jobs nobody here can run: do not spin on them.
                        let pause = Duration::from_millis(fastrand::u64(250..=750));
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = shutdown.cancelled() => {}
                        }
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let pause = backoff(failures, e.problem_type());
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "fetch failed");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
        tracker.close();
        if tokio::time::timeout(w.grace, tracker.wait()).await.is_err() {
            abandon.cancel();
            tracker.wait().await;
        }
        drop(tx);
        let _ = reporter.await;
        let s = &self.stats;
        WorkerReport {
            completed: s.completed.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            given_back: s.given_back.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            unhandled: s.unhandled.load(Ordering::Relaxed),
        }
    }
}

impl Worker {
    /// Gives back the lease of a job whose kind has no handler here, logging each such kind
    /// once.
    async fn release_unhandled(
        &self,
        job: &FetchedJobView,
        seen: &mut std::collections::HashSet<String>,
    ) {
        if seen.insert(job.kind.clone()) {
            tracing::warn!(
                kind = %job.kind,
                queue = %job.queue,
                "no handler for this kind on this worker: its jobs are given back for a worker \
                 that has one (logged once per kind)"
            );
        }
        self.stats.unhandled.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.inner.client.release(job.id, job.lease_id).await {
            // The lease then expires and the job is handed out again, its attempt counted.
            tracing::warn!(job = job.id, error = %e, "could not give back an unhandled job");
        }
    }
}

/// Exponential backoff with full jitter for a failing server, capped at 5 s; a `429`-style
/// refusal (load shedding, a later issue) and transport errors are treated alike.
fn backoff(failures: u32, _problem: Option<ProblemType>) -> Duration {
    let ceiling = 50u64.saturating_mul(1 << failures.min(7)).min(5_000);
    Duration::from_millis(fastrand::u64(ceiling / 2..=ceiling))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type RunCtx = (
    Arc<WorkerBuilder>,
    mpsc::UnboundedSender<Outcome>,
    CancellationToken,
    Arc<Stats>,
);

async fn run_one(job: FetchedJobView, permit: OwnedSemaphorePermit, ctx: RunCtx) {
    let (w, tx, abandon, stats) = ctx;
    let (id, lease_id) = (job.id, job.lease_id);
    let lease_lost = CancellationToken::new();
    let done = CancellationToken::new();
    let beat = tokio::spawn(heartbeat(
        w.client.clone(),
        id,
        lease_id,
        job.lease_deadline_ms,
        lease_lost.clone(),
        done.clone(),
    ));
    let fail = |message: String, retry: bool| {
        Outcome::Fail(FailItem {
            id,
            lease_id,
            error: message,
            retry,
        })
    };
    let outcome = match w.handlers.get(&job.kind).cloned() {
        // Kinds without a handler are given back before a job is spawned; a handler cannot
        // go away meanwhile, but stay safe.
        None => Outcome::Release { id, lease_id },
        Some(handler) => {
            let ctx = JobContext {
                id,
                queue: job.queue,
                kind: job.kind,
                attempt: job.attempt,
                payload: job.payload,
                lease_id,
                client: w.client.clone(),
                lease_lost,
            };
            let run = AssertUnwindSafe(handler(ctx)).catch_unwind();
            tokio::select! {
                r = run => match r {
                    Ok(Ok(result)) => {
                        stats.completed.fetch_add(1, Ordering::Relaxed);
                        Outcome::Ack(AckItem {
                            id,
                            lease_id,
                            result: result.and_then(|v| serde_json::value::to_raw_value(&v).ok()),
                        })
                    }
                    Ok(Err(e)) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        fail(e.message, e.retry)
                    }
                    Err(panic) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        let msg = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown panic".into());
                        fail(format!("handler panicked: {msg}"), true)
                    }
                },
                () = abandon.cancelled() => {
                    stats.given_back.fetch_add(1, Ordering::Relaxed);
                    Outcome::Release { id, lease_id }
                }
            }
        }
    };
    done.cancel();
    let _ = beat.await;
    let _ = tx.send(outcome);
    drop(permit);
}

/// Extends the lease at a third of what is left of it, until `done`; cancels `lost` when the
/// server says the lease is gone.
async fn heartbeat(
    client: Client,
    id: u64,
    lease_id: u64,
    mut deadline: u64,
    lost: CancellationToken,
    done: CancellationToken,
) {
    loop {
        let wait = Duration::from_millis((deadline.saturating_sub(now_ms()) / 3).max(50));
        tokio::select! {
            () = done.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        match client.heartbeat(id, lease_id, None).await {
            Ok(d) => deadline = d,
            Err(ClientError::Problem(p)) => {
                tracing::warn!(job = id, problem = %p, "lease lost");
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!(job = id, error = %e, "heartbeat failed; will retry"),
        }
    }
}

/// Sends outcomes in batches: whatever accumulated while the previous batch was in flight.
async fn report(client: Client, mut rx: mpsc::UnboundedReceiver<Outcome>, stats: Arc<Stats>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 1_000 {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let (mut acks, mut fails) = (Vec::new(), Vec::new());
        for o in batch {
            match o {
                Outcome::Ack(a) => acks.push(a),
                Outcome::Fail(f) => fails.push(f),
                Outcome::Release { id, lease_id } => {
                    // Rare (shutdown only): one call each. If it fails, the lease expires
                    // and the job is delivered again anyway.
                    if let Err(e) = client.release(id, lease_id).await {
                        tracing::warn!(job = id, error = %e, "could not give the lease back");
                    }
                }
            }
        }
        let (a, f) = tokio::join!(
            send("ack", acks, |v| client.ack(v)),
            send("fail report", fails, |v| client.fail(v))
        );
        stats.refused.fetch_add(a + f, Ordering::Relaxed);
    }
}

/// Sends one batch of acks or fails, retrying on transport errors (the server may be
/// restarting). Returns how many the server refused. A report that never lands leaves its
/// jobs to be delivered again when their leases expire (at-least-once).
async fn send<T, F, Fut>(what: &str, items: Vec<T>, call: F) -> u64
where
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Result<weir_api::BatchReply, ClientError>>,
    T: Clone,
{
    if items.is_empty() {
        return 0;
    }
    for attempt in 1..=5u32 {
        match call(items.clone()).await {
            Ok(r) => return r.rejected.len() as u64,
            Err(ClientError::Transport(e)) => {
                tracing::warn!(error = %e, attempt, "{what} failed; retrying");
                tokio::time::sleep(backoff(attempt, None)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "{what} refused");
                return items.len() as u64;
            }
        }
    }
    items.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_resolves_to_at_least_one() {
        assert_eq!(Concurrency::Fixed(0).resolve(), 1);
        assert_eq!(Concurrency::Fixed(7).resolve(), 7);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let auto = Concurrency::Auto {
            per_core: 4,
            per_job_bytes: 1,
        };
        assert_eq!(
            auto.resolve(),
            cores * 4,
            "memory is not the limit at 1 byte a job"
        );
        let huge = Concurrency::Auto {
            per_core: 4,
            per_job_bytes: u64::MAX,
        };
        if available_memory().is_some() {
            assert_eq!(huge.resolve(), 1, "memory-bound to the minimum");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for f in 1..20 {
            let d = backoff(f, None).as_millis() as u64;
            let ceiling = (50u64 << f.min(7)).min(5_000);
            assert!(d >= ceiling / 2 && d <= ceiling, "{f}: {d}");
        }
    }
}
