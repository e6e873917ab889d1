//! `mille serve`: pull-request webhooks in, plan summaries out as PR comments, rendered on a
//! Weir worker pool.
//!
//! - `POST /webhook` takes a PR event carrying the plan (`repository.full_name`,
//!   `pull_request.number`, `plan`), checks `X-Hub-Signature-256` (HMAC-SHA256 of the body with
//!   the configured secret; anything else is 401 and nothing is enqueued), keeps the plan in
//!   the cache under its content hash, and enqueues one `render` job on queue `mille.render`
//!   with `cost` = its number of resource changes. The queue is ordered `smallest_cost`, so
//!   small plans are not stuck behind big ones; it retries with backoff and has a circuit
//!   breaker, so a failing GitHub is not hammered. 202 with the job id.
//! - Workers (the Weir worker SDK) render the summary and post it as a PR comment to the
//!   configured GitHub API, updating mille's previous comment on that PR (found by a marker)
//!   rather than adding one. The rendering is kept for `GET /prs/{owner}/{repo}/{number}`.
//! - Weir is embedded by default (an in-process Weir server on a loopback port, its data in
//!   `<data-dir>/weir`), or `--weir URL` uses a Weir server, so several mille servers share
//!   one queue. A plan waits for its worker, and a rendering for `GET /prs`, in a store every
//!   mille server that can take the job also reads ([`Store`]): mille's own tiered cache
//!   (memory, disk, and Redis with `--redis URL`, which several mille servers then share),
//!   or, with `--weir` and no Redis, the Weir server's cache, so that a job enqueued by one
//!   mille server is rendered by whichever takes it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weir_client::{Client, Concurrency, HandlerError, JobContext, WorkerBuilder};

/// The queue render jobs go on.
pub const QUEUE: &str = "mille.render";
/// The largest webhook body, bytes: a 10,000-change plan is about 20-50 MB of JSON.
pub const MAX_EVENT_BYTES: usize = 64 << 20;
/// How long a plan waits for its render, and a rendering is kept for `GET /prs` (the
/// cache's tiers keep nothing longer than 7 days).
const RENDERING_TTL_MS: u64 = 7 * 86_400_000;
/// The marker that identifies mille's comment on a PR.
pub const MARKER: &str = "<!-- mille -->";

/// What `mille serve` runs with (its command-line flags).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:7470")]
    pub listen: String,
    /// Where the embedded Weir and the cache keep their files.
    #[arg(long, default_value = "mille-data")]
    pub data_dir: std::path::PathBuf,
    /// The webhook secret (env MILLE_WEBHOOK_SECRET).
    #[arg(long, env = "MILLE_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: String,
    /// GitHub's API base URL.
    #[arg(long, default_value = "https://api.github.com")]
    pub github_api: String,
    /// Token for posting comments (env MILLE_GITHUB_TOKEN).
    #[arg(long, env = "MILLE_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    /// A Weir server to use instead of the embedded one.
    #[arg(long)]
    pub weir: Option<String>,
    /// Redis for a cache tier shared by several mille servers.
    #[arg(long)]
    pub redis: Option<String>,
    /// Prefix of mille's Redis keys: mille servers with the same prefix share plans and
    /// renderings, others on the same Redis do not see them.
    #[arg(long, default_value = "mille")]
    pub redis_prefix: String,
    /// Render workers (default: sized by --plans, --window and --seconds-per-plan, at least
    /// one per core, capped by memory at 64 MiB a render).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Plans arriving at once (a burst of pushes) that should all be commented within
    /// --window: the pool is sized for it.
    #[arg(long, default_value_t = 10)]
    pub plans: usize,
    /// The window a burst of --plans should be commented in: `5m`, `90s`, or ms.
    #[arg(long, default_value = "5m", value_parser = weir_core::units::parse_duration_ms)]
    pub window: u64,
    /// How long one plan takes a worker, GitHub's calls included, s.
    #[arg(long, default_value_t = 2.0)]
    pub seconds_per_plan: f64,
    /// How long the circuit breaker leaves a failing GitHub alone, ms.
    #[arg(long, default_value_t = 30_000)]
    pub breaker_cooldown_ms: u64,
}

#[derive(Clone)]
struct Shared {
    weir: Client,
    store: Store,
    secret: Arc<String>,
}

/// Where plans wait for their render and renderings are kept for `GET /prs`.
#[derive(Clone)]
pub enum Store {
    /// mille's own tiered cache: memory and disk, plus Redis with `--redis` (shared by
    /// every mille server on it). Without Redis it is this server's alone, which is right
    /// when its Weir is its own (embedded).
    Cache(weir_cache::Cache),
    /// The cache of the Weir server the jobs are on (`--weir` without `--redis`): every
    /// mille server that can take a job can read its plan.
    Weir(Client),
}

/// Why a store refused: too big for it, or unavailable.
#[derive(Debug)]
pub enum StoreError {
    /// The value is larger than the store takes.
    TooLarge(String),
    /// The store could not be reached or failed.
    Unavailable(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::TooLarge(m) | StoreError::Unavailable(m) => f.write_str(m),
        }
    }
}

impl Store {
    async fn put(
        &self,
        ns: &str,
        key: &str,
        value: Bytes,
        ttl_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Cache(c) => {
                let opts = weir_cache::SetOptions {
                    ttl_ms,
                    ..Default::default()
                };
                c.set(ns, key, value, &opts)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))
            }
            Store::Weir(w) => match w.cache_set(ns, key, value, ttl_ms, &[], &[]).await {
                Ok(()) => Ok(()),
                Err(weir_client::ClientError::Problem(p)) if p.status == 413 => Err(
                    StoreError::TooLarge(format!(
                        "{} (the Weir server's cache.max_value_bytes bounds plans; raise it, or give mille --redis)",
                        p.detail
                    )),
                ),
                Err(e) => Err(StoreError::Unavailable(format!("Weir's cache: {e}"))),
            },
        }
    }

    async fn get(&self, ns: &str, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self {
            Store::Cache(c) => c
                .get(ns, key)
                .await
                .map(|hit| hit.map(|h| h.value))
                .map_err(|e| StoreError::Unavailable(e.to_string())),
            Store::Weir(w) => w
                .cache_get(ns, key)
                .await
                .map(|hit| hit.map(|(v, _)| v))
                .map_err(|e| StoreError::Unavailable(format!("Weir's cache: {e}"))),
        }
    }
}

/// The part of a PR event mille reads.
#[derive(Deserialize)]
struct Event<'a> {
    repository: Repository,
    pull_request: PullRequest,
    #[serde(borrow)]
    plan: &'a RawValue,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct PullRequest {
    number: u64,
}

/// A render job's payload.
#[derive(Serialize, Deserialize)]
struct RenderJob {
    owner: String,
    repo: String,
    number: u64,
    plan: String,
}

/// What `GET /prs/...` answers.
#[derive(Serialize, Deserialize)]
struct Rendering {
    summary: String,
    resources: usize,
    counts: std::collections::BTreeMap<String, usize>,
    comment_id: u64,
    rendered_at_ms: u64,
}

fn problem(status: StatusCode, title: &str, detail: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "type": format!("urn:mille:problem:{}", title.to_lowercase().replace(' ', "-")),
        "title": title, "status": status.as_u16(), "detail": detail.into(),
    });
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// Checks `sha256=<hex>` against the body's HMAC with `secret`, in constant time.
pub fn signature_ok(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Some(sig) = hex_decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// `sha256=<hex>` for `body`, as GitHub sends it.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn webhook(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature_ok(&s.secret, &body, sig) {
        return problem(
            StatusCode::UNAUTHORIZED,
            "Bad signature",
            "X-Hub-Signature-256 is missing or does not match the body and the webhook secret",
        );
    }
    let event: Event = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid event",
                format!("expected repository.full_name, pull_request.number and plan: {e}"),
            )
        }
    };
    let Some((owner, repo)) = event.repository.full_name.split_once('/') else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid event",
            "repository.full_name must be OWNER/REPO",
        );
    };
    let plan_bytes = event.plan.get().as_bytes();
    let plan = match crate::Plan::parse(plan_bytes) {
        Ok(p) => p,
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid plan",
                e.to_string(),
            )
        }
    };
    let key = content_key(plan_bytes);
    let kept = s
        .store
        .put(
            "plans",
            &key,
            Bytes::copy_from_slice(plan_bytes),
            Some(RENDERING_TTL_MS),
        )
        .await;
    match kept {
        Ok(()) => {}
        Err(StoreError::TooLarge(why)) => {
            return problem(StatusCode::PAYLOAD_TOO_LARGE, "Plan too large", why)
        }
        Err(StoreError::Unavailable(why)) => {
            return problem(StatusCode::SERVICE_UNAVAILABLE, "Cache unavailable", why)
        }
    }
    let job = RenderJob {
        owner: owner.to_string(),
        repo: repo.to_string(),
        number: event.pull_request.number,
        plan: key,
    };
    let payload = match serde_json::value::to_raw_value(&job) {
        Ok(p) => p,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, "Internal", e.to_string()),
    };
    let mut new = weir_api::NewJobBody::new(QUEUE, "render", payload);
    new.cost = Some(plan.changes.len() as u64);
    match s
        .weir
        .enqueue_patiently(vec![new], Duration::from_secs(10))
        .await
    {
        Ok(ids) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "job": ids.first(), "resources": plan.changes.len() })),
        )
            .into_response(),
        Err(e) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Queue unavailable",
            e.to_string(),
        ),
    }
}

/// The cache key of a plan: the BLAKE3 hash of its bytes and mille's version, so a new
/// renderer never reads another version's entries.
fn content_key(bytes: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(&[0]);
    h.update(bytes);
    h.finalize().to_hex().to_string()
}

async fn show_pr(
    State(s): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
) -> Response {
    match s
        .store
        .get("prs", &format!("{owner}/{repo}/{number}"))
        .await
    {
        Ok(Some(value)) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            value,
        )
            .into_response(),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no rendering for {owner}/{repo}#{number} yet"),
        ),
        Err(e) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Cache unavailable",
            e.to_string(),
        ),
    }
}

/// Renders one job and posts (or updates) the PR comment.
async fn render(
    job: JobContext,
    store: Store,
    http: reqwest::Client,
    api: Arc<String>,
    token: Option<Arc<String>>,
) -> Result<Option<serde_json::Value>, HandlerError> {
    let j: RenderJob = job.payload()?;
    let bytes = store
        .get("plans", &j.plan)
        .await
        .map_err(|e| HandlerError::retry(format!("cache: {e}")))?
        .ok_or_else(|| HandlerError::fatal("the plan is no longer in the cache"))?;
    let plan = crate::Plan::parse(&bytes).map_err(|e| HandlerError::fatal(e.to_string()))?;
    let summary = crate::summary::markdown(&plan, crate::summary::COMMENT_LIMIT - MARKER.len() - 1);
    let body = format!("{MARKER}\n{summary}");
    let base = format!("{}/repos/{}/{}", api.trim_end_matches('/'), j.owner, j.repo);
    let authed = |r: reqwest::RequestBuilder| match &token {
        Some(t) => r.bearer_auth(t.as_str()),
        None => r,
    };
    let fail = |what: &str, e: String| HandlerError::retry(format!("GitHub {what}: {e}"));
    let check = |r: reqwest::Response| -> Result<reqwest::Response, String> {
        if r.status().is_success() {
            Ok(r)
        } else {
            Err(format!("HTTP {}", r.status()))
        }
    };
    let comments: Vec<serde_json::Value> =
        authed(http.get(format!("{base}/issues/{}/comments", j.number)))
            .send()
            .await
            .map_err(|e| fail("list comments", e.to_string()))
            .and_then(|r| check(r).map_err(|e| fail("list comments", e)))?
            .json()
            .await
            .map_err(|e| fail("list comments", e.to_string()))?;
    let previous = comments.iter().find_map(|c| {
        let ours = c["body"].as_str().is_some_and(|b| b.starts_with(MARKER));
        ours.then(|| c["id"].as_u64()).flatten()
    });
    let reply: serde_json::Value = match previous {
        Some(id) => authed(http.patch(format!("{base}/issues/comments/{id}")))
            .json(&serde_json::json!({ "body": body }))
            .send()
            .await
            .map_err(|e| fail("update comment", e.to_string()))
            .and_then(|r| check(r).map_err(|e| fail("update comment", e)))?,
        None => authed(http.post(format!("{base}/issues/{}/comments", j.number)))
            .json(&serde_json::json!({ "body": body }))
            .send()
            .await
            .map_err(|e| fail("post comment", e.to_string()))
            .and_then(|r| check(r).map_err(|e| fail("post comment", e)))?,
    }
    .json()
    .await
    .map_err(|e| fail("comment reply", e.to_string()))?;
    let comment_id = reply["id"].as_u64().unwrap_or_default();
    let rendering = Rendering {
        summary,
        resources: plan.changes.len(),
        counts: plan.counts(),
        comment_id,
        rendered_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    let text = serde_json::to_vec(&rendering).map_err(|e| HandlerError::fatal(e.to_string()))?;
    store
        .put(
            "prs",
            &format!("{}/{}/{}", j.owner, j.repo, j.number),
            Bytes::from(text),
            Some(RENDERING_TTL_MS),
        )
        .await
        .map_err(|e| HandlerError::retry(format!("cache: {e}")))?;
    Ok(Some(
        serde_json::json!({ "comment": comment_id, "resources": plan.changes.len() }),
    ))
}

/// Runs until `stop`: Weir (embedded unless `--weir`), the workers and the HTTP server.
/// Prints `mille serving on http://ADDR (weir: URL)` once it listens.
pub async fn run(cfg: ServeConfig, stop: CancellationToken) -> Result<(), String> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", cfg.data_dir.display()))?;
    let stopped = stop.clone();
    let (weir_url, embedded) =
        weir_server::embedded::given_or_start(cfg.weir.as_deref(), &cfg.data_dir, async move {
            stopped.cancelled().await
        })
        .await?;
    let weir = Client::new(&weir_url).map_err(|e| e.to_string())?;
    // The render queue: smallest plans first, retries with backoff, a breaker on GitHub.
    let settings: weir_api::QueueConfigPatch = serde_json::from_value(serde_json::json!({
        "order": "smallest_cost",
        "max_attempts": 20,
        "backoff": {"base_ms": 200, "cap_ms": 10_000},
        "breaker": {"consecutive_failures": 5, "cooldown_ms": cfg.breaker_cooldown_ms, "half_open_probes": 1},
    }))
    .map_err(|e| e.to_string())?;
    let mut tries = 0;
    loop {
        match weir.configure(QUEUE, &settings).await {
            Ok(_) => break,
            Err(e) if tries < 50 => {
                tries += 1;
                pause_before_retry().await;
                let _ = e;
            }
            Err(e) => return Err(format!("cannot configure queue {QUEUE} on {weir_url}: {e}")),
        }
    }
    let store = if cfg.weir.is_some() && cfg.redis.is_none() {
        Store::Weir(weir.clone())
    } else {
        Store::Cache(
            weir_cache::Cache::open(weir_cache::CacheConfig {
                dir: Some(cfg.data_dir.join("cache")),
                redis_url: cfg.redis.clone(),
                redis_prefix: cfg.redis_prefix.clone(),
                max_value_bytes: MAX_EVENT_BYTES,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot open the cache: {e}"))?,
        )
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent("mille")
        .build()
        .map_err(|e| e.to_string())?;
    let api = Arc::new(cfg.github_api.clone());
    let token = cfg.github_token.clone().map(Arc::new);
    let concurrency = Concurrency::Fixed(match cfg.workers {
        Some(n) => n.max(1),
        None => pool_size(
            cfg.plans,
            cfg.seconds_per_plan,
            cfg.window as f64 / 1000.0,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            weir_client::available_memory(),
            RENDER_BYTES,
        ),
    });
    let worker = {
        let store = store.clone();
        WorkerBuilder::new(weir.clone(), &[QUEUE])
            .concurrency(concurrency)
            .batch(1)
            .handle("render", move |job| {
                render(job, store.clone(), http.clone(), api.clone(), token.clone())
            })
            .build()
    };
    let workers = worker.concurrency();
    let work = tokio::spawn(worker.run(stop.clone()));
    let shared = Shared {
        weir,
        store,
        secret: Arc::new(cfg.secret.clone()),
    };
    let app = Router::new()
        .route(
            "/webhook",
            post(webhook).layer(axum::extract::DefaultBodyLimit::max(MAX_EVENT_BYTES)),
        )
        .route("/prs/{owner}/{repo}/{number}", get(show_pr))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("mille serving on http://{addr} (weir: {weir_url}, {workers} render workers)");
    let stopped = stop.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopped.cancelled().await })
        .await
        .map_err(|e| e.to_string())?;
    let _ = work.await;
    if let Some(e) = embedded {
        let _ = e.await;
    }
    Ok(())
}

/// What one render may hold at once: a 10,000-change plan's webhook body, plan and outputs.
const RENDER_BYTES: u64 = 64 << 20;

/// The seed's pool size: enough workers to finish `plans` plans of `seconds_per_plan` each
/// within `window_s` (⌈plans × time per plan ÷ window⌉), at least one per core so a burst
/// uses the machine, and no more than half the available memory holds at `per_plan_bytes`
/// a render. At least one.
pub fn pool_size(
    plans: usize,
    seconds_per_plan: f64,
    window_s: f64,
    cores: usize,
    available_bytes: Option<u64>,
    per_plan_bytes: u64,
) -> usize {
    let needed = if window_s > 0.0 && seconds_per_plan.is_finite() && seconds_per_plan > 0.0 {
        (plans as f64 * seconds_per_plan / window_s).ceil().min(1e6) as usize
    } else {
        plans
    };
    let by_memory =
        available_bytes.map_or(usize::MAX, |m| (m / 2 / per_plan_bytes.max(1)) as usize);
    needed.max(cores).min(by_memory).max(1)
}

/// A short pause while a Weir server starts answering.
async fn pause_before_retry() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::pool_size;

    #[test]
    fn the_pool_is_sized_by_the_window_then_cores_then_memory() {
        const MIB: u64 = 1 << 20;
        // The seed's case: 10 plans in 5 minutes at 2 s each needs 1; two cores give 2.
        assert_eq!(pool_size(10, 2.0, 300.0, 2, Some(24 << 30), 64 * MIB), 2);
        // 600 plans in a minute at 1.5 s each: 15 workers.
        assert_eq!(pool_size(600, 1.5, 60.0, 2, Some(24 << 30), 64 * MIB), 15);
        // ... but 1 GiB available holds 8 renders at 64 MiB in its half.
        assert_eq!(pool_size(600, 1.5, 60.0, 2, Some(1 << 30), 64 * MIB), 8);
        // Never none, whatever is asked.
        assert_eq!(pool_size(0, 0.0, 0.0, 1, Some(0), 64 * MIB), 1);
        // A time that means nothing sizes for the whole burst at once.
        assert_eq!(pool_size(5, f64::NAN, 60.0, 1, None, 64 * MIB), 5);
    }
}
