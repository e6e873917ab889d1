//! weir-notify: notification workflows on Weir. A trigger (one subscriber, a list, or a
//! topic) runs a workflow's steps for each subscriber — delay, digest, throttle, branch — and
//! its channel steps send email, SMS, push and chat through providers in priority order,
//! with per-provider rate limits, circuit breakers, failover, retries and a dead-letter queue.
//!
//! # Layout (the pipeline, one stage a module)
//! - [`model`]: subscribers, topics, preferences, channels.
//! - [`workflow`]: definitions and their compiled programs.
//! - [`render`]: templates and conditions (minijinja).
//! - [`store`]: the product's records (fjall).
//! - [`pipeline`]: the Weir jobs: fan-out, runs, digests, sends.
//! - [`providers`]: SMTP and HTTP providers, breakers.
//! - [`api`]: the HTTP API.
//! - [`config`]: the configuration file.
//! - [`bench`]: `weir-notify bench`, the pipeline measured end to end.
//! - [`stub`]: local stand-ins for the providers, with injectable faults, for tests and
//!   benchmarks.

pub mod api;
pub mod bench;
pub mod config;
pub mod model;
pub mod pipeline;
pub mod providers;
pub mod render;
pub mod store;
pub mod stub;
pub mod workflow;

use pipeline::{Notify, Registry, Settings};
use providers::{ProviderConfig, Providers};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use workflow::{Workflow, WorkflowDef};

/// What [`start`] needs.
pub struct Options {
    /// The data folder (the store in `data/notify`, an embedded Weir in `data/weir`).
    pub data_dir: PathBuf,
    /// A Weir server; `None` runs an embedded one.
    pub weir: Option<String>,
    /// Providers.
    pub providers: Vec<ProviderConfig>,
    /// Workflows from the config file.
    pub workflows: Vec<WorkflowDef>,
    /// Tuning.
    pub settings: Settings,
    /// Pipeline jobs at once.
    pub run_concurrency: usize,
    /// Send jobs at once.
    pub send_concurrency: usize,
    /// Whether to run the worker pools here (`false`: API only).
    pub workers: bool,
    /// How long messages are kept before they are archived (ms).
    pub retention_ms: u64,
    /// Where archives go.
    pub archive_dir: PathBuf,
}

/// Six months.
pub const DEFAULT_RETENTION_MS: u64 = 180 * 86_400_000;
/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_MS: u64 = 86_400_000;

/// A running weir-notify: the shared state, and the tasks to wait for.
pub struct Running {
    /// The shared state (the API's and the workers').
    pub notify: Arc<Notify>,
    /// The embedded Weir's task, if one runs here.
    pub weir_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The worker pools' tasks.
    pub workers: Vec<tokio::task::JoinHandle<weir_client::WorkerReport>>,
    /// Flushes daily aggregates every second.
    pub stats_task: tokio::task::JoinHandle<()>,
    /// Archives old messages every hour.
    pub retention_task: tokio::task::JoinHandle<()>,
}

/// Compiles the file's workflows and those saved through the API (the file's win on a
/// clash: they are what is in version control).
pub fn registry(file: &[WorkflowDef], saved: Vec<WorkflowDef>) -> Result<Registry, model::Invalid> {
    let mut out = Vec::new();
    let mut ids = BTreeSet::new();
    for (i, d) in file.iter().enumerate() {
        let w = Workflow::compile(d.clone(), &render::check_syntax)
            .map_err(|e| e.under(&format!("workflows[{i}]")))?;
        if !ids.insert(w.def.id.clone()) {
            return Err(model::Invalid::new(
                format!("workflows[{i}].id"),
                "ids must be unique",
            ));
        }
        out.push(w);
    }
    let from_file = ids.clone();
    for d in saved {
        if ids.contains(&d.id) {
            continue;
        }
        match Workflow::compile(d, &render::check_syntax) {
            Ok(w) => {
                ids.insert(w.def.id.clone());
                out.push(w);
            }
            Err(e) => tracing::error!(error = %e, "a saved workflow no longer compiles; skipped"),
        }
    }
    Ok(Registry::new(out, from_file))
}

/// Opens the store, starts (or connects to) Weir, sets the providers' queues up and starts
/// the worker pools. Stops when `shutdown` is cancelled.
pub async fn start(
    opts: Options,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<Running, String> {
    let store = store::Store::open(&opts.data_dir.join("notify")).map_err(|e| e.to_string())?;
    let saved = store.workflows().map_err(|e| e.to_string())?;
    let reg = registry(&opts.workflows, saved).map_err(|e| e.to_string())?;
    let providers = Providers::new(opts.providers).map_err(|e| e.to_string())?;
    let stop = shutdown.clone();
    let (url, weir_task) =
        weir_server::embedded::given_or_start(opts.weir.as_deref(), &opts.data_dir, async move {
            stop.cancelled().await
        })
        .await?;
    let client = weir_client::Client::new(url).map_err(|e| e.to_string())?;
    let notify = Arc::new(Notify::new(store, client, providers, reg, opts.settings));
    let mut tries = 0;
    loop {
        match notify.configure_queues().await {
            Ok(()) => break,
            Err(e) if tries < 50 => {
                tries += 1;
                tracing::warn!(error = %e, "Weir is not answering yet");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("cannot configure Weir's queues: {e}")),
        }
    }
    let mut workers = Vec::new();
    if opts.workers {
        for w in pipeline::workers(notify.clone(), opts.run_concurrency, opts.send_concurrency) {
            let stop = shutdown.clone();
            workers.push(tokio::spawn(w.run(stop)));
        }
    }
    let s = notify.store.clone();
    let stop = shutdown.clone();
    let stats_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => {
                    let _ = s.flush_stats();
                    return;
                }
            }
            let s2 = s.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s2.flush_stats()).await {
                tracing::warn!(error = %e, "writing aggregates failed; kept for the next try");
            }
        }
    });
    let s = notify.store.clone();
    let stop = shutdown.clone();
    let (retention, archive_dir) = (opts.retention_ms, opts.archive_dir.clone());
    let retention_task = tokio::spawn(async move {
        // Several processes on one data folder are not supported, so one pass at a time.
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3_600));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let (s, dir) = (s.clone(), archive_dir.clone());
            let now = pipeline::now_ms();
            let r = tokio::task::spawn_blocking(move || {
                s.archive(now.saturating_sub(retention), IDEMPOTENCY_MS, now, &dir)
            })
            .await;
            match r {
                Ok(Ok(r)) if r.messages > 0 || r.idempotency_keys > 0 => tracing::info!(
                    messages = r.messages,
                    idempotency_keys = r.idempotency_keys,
                    "archived"
                ),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "archiving failed; will retry"),
                Err(e) => tracing::error!(error = %e, "archiving panicked"),
            }
        }
    });
    Ok(Running {
        notify,
        weir_task,
        workers,
        stats_task,
        retention_task,
    })
}
