//! [`Client`]: one method per route of the `/v1` API, typed with `weir-api`'s bodies.

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use weir_api::*;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server refused the request; the problem says why (and nothing changed).
    #[error("{0}")]
    Problem(Problem),
    /// The server could not be reached, or the connection broke. The request may or may not
    /// have been applied.
    #[error("transport: {0}")]
    Transport(#[source] reqwest::Error),
    /// The server answered with something that is not the expected body.
    #[error("unexpected reply: {0}")]
    Decode(String),
}

impl ClientError {
    /// The problem type, when the server refused.
    pub fn problem_type(&self) -> Option<ProblemType> {
        match self {
            ClientError::Problem(p) => p.kind(),
            _ => None,
        }
    }
}

/// Result alias.
pub type ClientResult<T> = Result<T, ClientError>;

/// A connection to one Weir server. Cheap to clone (connections are pooled and shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:7420`).
    pub fn new(base: impl Into<String>) -> ClientResult<Self> {
        // No gzip: workers usually sit next to the server, where compressing every fetch
        // reply costs more CPU than the bytes it saves (it was 12 % of the server's time
        // in `weir bench`).
        let http = reqwest::Client::builder()
            .no_gzip()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(ClientError::Transport)?;
        Ok(Client {
            http,
            base: base.into().trim_end_matches('/').to_string(),
            token: None,
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> ClientResult<R> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(ClientError::Transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(ClientError::Transport)?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<Problem>(&bytes) {
                Ok(p) => ClientError::Problem(p),
                Err(_) => ClientError::Decode(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                )),
            });
        }
        // 204 No Content (a delete) reads as JSON null: `()`.
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Enqueues jobs atomically; returns their ids in order.
    pub async fn enqueue(&self, jobs: Vec<NewJobBody>) -> ClientResult<Vec<u64>> {
        let r: EnqueueReply = self
            .call(
                Method::POST,
                "/v1/jobs",
                Some(&EnqueueRequest { jobs }),
                None,
            )
            .await?;
        Ok(r.ids)
    }

    /// Enqueues like [`Client::enqueue`], but when the server sheds load (a queue at its
    /// `max_depth`, HTTP 429) waits as long as it says (at least 50 ms, with jitter, growing
    /// if it keeps refusing) and tries again, for up to `patience` (the last try at its end;
    /// a zero patience gives up at the first refusal). Nothing was enqueued by a
    /// refused attempt, so retrying cannot duplicate.
    pub async fn enqueue_patiently(
        &self,
        jobs: Vec<NewJobBody>,
        patience: Duration,
    ) -> ClientResult<Vec<u64>> {
        self.enqueue_patiently_with(jobs, patience, |_, _| {}).await
    }

    /// [`Client::enqueue_patiently`], calling `on_wait(wait, refusal)` before each wait, so
    /// that a caller can say why it is waiting.
    pub async fn enqueue_patiently_with(
        &self,
        jobs: Vec<NewJobBody>,
        patience: Duration,
        mut on_wait: impl FnMut(Duration, &ClientError) + Send,
    ) -> ClientResult<Vec<u64>> {
        let give_up = std::time::Instant::now() + patience;
        let body = EnqueueRequest { jobs };
        let mut refusals = 0u32;
        loop {
            let r: ClientResult<EnqueueReply> =
                self.call(Method::POST, "/v1/jobs", Some(&body), None).await;
            match r {
                Ok(r) => return Ok(r.ids),
                Err(e) => {
                    let Some(wait) = overloaded_wait(&e, refusals) else {
                        return Err(e);
                    };
                    // The last try goes at the deadline rather than never.
                    let left = give_up.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(e);
                    }
                    let wait = wait.min(left);
                    refusals += 1;
                    tracing::debug!(
                        wait_ms = wait.as_millis() as u64,
                        "server shed load; waiting"
                    );
                    on_wait(wait, &e);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Leases up to `max` jobs from `queues`, waiting up to `wait_ms` for work.
    pub async fn fetch(
        &self,
        queues: &[String],
        max: usize,
        wait_ms: u64,
        worker: &str,
    ) -> ClientResult<Vec<FetchedJobView>> {
        let req = FetchRequest {
            queues: queues.to_vec(),
            max,
            wait_ms,
            worker: worker.to_string(),
        };
        // The request may legitimately take `wait_ms`; allow for it plus slack.
        let timeout = Duration::from_millis(wait_ms) + Duration::from_secs(30);
        let r: FetchReply = self
            .call(Method::POST, "/v1/fetch", Some(&req), Some(timeout))
            .await?;
        Ok(r.jobs)
    }

    /// Completes jobs.
    pub async fn ack(&self, acks: Vec<AckItem>) -> ClientResult<BatchReply> {
        self.call(Method::POST, "/v1/ack", Some(&AckRequest { acks }), None)
            .await
    }

    /// Fails attempts.
    pub async fn fail(&self, fails: Vec<FailItem>) -> ClientResult<BatchReply> {
        self.call(Method::POST, "/v1/fail", Some(&FailRequest { fails }), None)
            .await
    }

    /// Extends a lease; returns the new deadline.
    pub async fn heartbeat(
        &self,
        id: u64,
        lease_id: u64,
        progress: Option<Box<serde_json::value::RawValue>>,
    ) -> ClientResult<u64> {
        let r: HeartbeatReply = self
            .call(
                Method::POST,
                &format!("/v1/jobs/{id}/heartbeat"),
                Some(&HeartbeatRequest { lease_id, progress }),
                None,
            )
            .await?;
        Ok(r.lease_deadline_ms)
    }

    /// Gives a lease back without counting the attempt; returns the job as it is now.
    pub async fn release(&self, id: u64, lease_id: u64) -> ClientResult<JobView> {
        self.call(
            Method::POST,
            &format!("/v1/jobs/{id}/release"),
            Some(&ReleaseRequest { lease_id }),
            None,
        )
        .await
    }

    /// One job.
    pub async fn job(&self, id: u64) -> ClientResult<JobView> {
        self.call::<(), _>(Method::GET, &format!("/v1/jobs/{id}"), None, None)
            .await
    }

    /// A page of jobs.
    pub async fn jobs(
        &self,
        queue: Option<&str>,
        state: Option<&str>,
        cursor: Option<u64>,
        limit: usize,
    ) -> ClientResult<JobPageView> {
        self.jobs_matching(queue, state, None, None, cursor, limit)
            .await
    }

    /// [`Client::jobs`], also filtered by kind and tag (a filtered page may be short and
    /// still have a `next_cursor`).
    pub async fn jobs_matching(
        &self,
        queue: Option<&str>,
        state: Option<&str>,
        kind: Option<&str>,
        tag: Option<&str>,
        cursor: Option<u64>,
        limit: usize,
    ) -> ClientResult<JobPageView> {
        let mut q = vec![format!("limit={limit}")];
        for (k, v) in [
            ("queue", queue),
            ("state", state),
            ("kind", kind),
            ("tag", tag),
        ] {
            if let Some(v) = v {
                q.push(format!("{k}={}", encode(v)));
            }
        }
        if let Some(c) = cursor {
            q.push(format!("cursor={c}"));
        }
        self.call::<(), _>(
            Method::GET,
            &format!("/v1/jobs?{}", q.join("&")),
            None,
            None,
        )
        .await
    }

    /// Cancels a job; returns it as it is now.
    pub async fn cancel(&self, id: u64) -> ClientResult<JobView> {
        self.call::<(), _>(Method::POST, &format!("/v1/jobs/{id}/cancel"), None, None)
            .await
    }

    /// Retries a job now; returns it as it is now.
    pub async fn retry(&self, id: u64) -> ClientResult<JobView> {
        self.call::<(), _>(Method::POST, &format!("/v1/jobs/{id}/retry"), None, None)
            .await
    }

    /// Every queue.
    pub async fn queues(&self) -> ClientResult<Vec<QueueView>> {
        let r: QueueListReply = self
            .call::<(), _>(Method::GET, "/v1/queues", None, None)
            .await?;
        Ok(r.queues)
    }

    /// One queue.
    pub async fn queue(&self, name: &str) -> ClientResult<QueueView> {
        self.call::<(), _>(
            Method::GET,
            &format!("/v1/queues/{}", encode(name)),
            None,
            None,
        )
        .await
    }

    /// Changes the keys `patch` names.
    pub async fn configure(&self, name: &str, patch: &QueueConfigPatch) -> ClientResult<QueueView> {
        self.call(
            Method::PUT,
            &format!("/v1/queues/{}", encode(name)),
            Some(patch),
            None,
        )
        .await
    }

    /// Pauses a queue.
    pub async fn pause(&self, name: &str) -> ClientResult<QueueView> {
        self.call::<(), _>(
            Method::POST,
            &format!("/v1/queues/{}/pause", encode(name)),
            None,
            None,
        )
        .await
    }

    /// Resumes a queue.
    pub async fn resume(&self, name: &str) -> ClientResult<QueueView> {
        self.call::<(), _>(
            Method::POST,
            &format!("/v1/queues/{}/resume", encode(name)),
            None,
            None,
        )
        .await
    }

    /// Every cron entry.
    pub async fn cron_list(&self) -> ClientResult<Vec<CronView>> {
        let r: CronListReply = self
            .call::<(), _>(Method::GET, "/v1/cron", None, None)
            .await?;
        Ok(r.cron)
    }

    /// Creates or replaces cron entry `name`.
    pub async fn cron_set(&self, name: &str, body: &CronBody) -> ClientResult<CronView> {
        self.call(
            Method::PUT,
            &format!("/v1/cron/{}", encode(name)),
            Some(body),
            None,
        )
        .await
    }

    /// Deletes cron entry `name`.
    pub async fn cron_delete(&self, name: &str) -> ClientResult<()> {
        self.call::<(), ()>(
            Method::DELETE,
            &format!("/v1/cron/{}", encode(name)),
            None,
            None,
        )
        .await
    }

    /// Deletes a job that is not running.
    pub async fn delete_job(&self, id: u64) -> ClientResult<()> {
        self.call::<(), ()>(Method::DELETE, &format!("/v1/jobs/{id}"), None, None)
            .await
    }

    /// Deletes a queue with every job it holds (refused while any is active); returns how
    /// many jobs went.
    pub async fn delete_queue(&self, name: &str) -> ClientResult<u64> {
        let r: PurgeReply = self
            .call::<(), _>(
                Method::DELETE,
                &format!("/v1/queues/{}", encode(name)),
                None,
                None,
            )
            .await?;
        Ok(r.deleted)
    }

    /// Retries every job of a queue in `state` (`dead`, `cancelled`, `failed` or
    /// `scheduled`); returns how many.
    pub async fn retry_jobs(&self, name: &str, state: &str) -> ClientResult<u64> {
        let r: BulkReply = self
            .call::<(), _>(
                Method::POST,
                &format!("/v1/queues/{}/retry?state={}", encode(name), encode(state)),
                None,
                None,
            )
            .await?;
        Ok(r.jobs)
    }

    /// Deletes every job of a queue in a finished `state` (`completed`, `dead` or
    /// `cancelled`); returns how many.
    pub async fn delete_jobs(&self, name: &str, state: &str) -> ClientResult<u64> {
        let r: BulkReply = self
            .call::<(), _>(
                Method::DELETE,
                &format!("/v1/queues/{}/jobs?state={}", encode(name), encode(state)),
                None,
                None,
            )
            .await?;
        Ok(r.jobs)
    }

    /// Deletes a queue's unstarted jobs; returns how many.
    pub async fn purge(&self, name: &str) -> ClientResult<u64> {
        let r: PurgeReply = self
            .call::<(), _>(
                Method::POST,
                &format!("/v1/queues/{}/purge", encode(name)),
                None,
                None,
            )
            .await?;
        Ok(r.deleted)
    }

    /// The value under `key` in namespace `ns` and the tier that had it (`memory`, `disk`
    /// or `redis`); `None` on a miss.
    pub async fn cache_get(
        &self,
        ns: &str,
        key: &str,
    ) -> ClientResult<Option<(bytes::Bytes, String)>> {
        let resp = self
            .raw(Method::GET, &cache_path(ns, key), None, &[])
            .await?;
        match resp {
            Raw::Ok(headers, body) => {
                let tier = headers
                    .get("weir-cache-tier")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                Ok(Some((body, tier)))
            }
            Raw::Problem(p) if p.kind() == Some(ProblemType::CacheMiss) => Ok(None),
            Raw::Problem(p) => Err(ClientError::Problem(p)),
        }
    }

    /// Stores `value` under `key` with a TTL (None: the server's default), tags and the
    /// keys it depends on.
    pub async fn cache_set(
        &self,
        ns: &str,
        key: &str,
        value: impl Into<bytes::Bytes>,
        ttl_ms: Option<u64>,
        tags: &[String],
        deps: &[String],
    ) -> ClientResult<()> {
        let mut query = Vec::new();
        if let Some(t) = ttl_ms {
            query.push(format!("ttl_ms={t}"));
        }
        if !tags.is_empty() {
            query.push(format!("tags={}", encode(&tags.join(","))));
        }
        if !deps.is_empty() {
            query.push(format!("deps={}", encode(&deps.join(","))));
        }
        let mut path = cache_path(ns, key);
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        match self
            .raw(Method::PUT, &path, Some(value.into()), &[])
            .await?
        {
            Raw::Ok(..) => Ok(()),
            Raw::Problem(p) => Err(ClientError::Problem(p)),
        }
    }

    /// Removes `key` and what depends on it; returns how many entries went.
    pub async fn cache_delete(&self, ns: &str, key: &str) -> ClientResult<u64> {
        let r: CacheRemovedReply = self
            .call::<(), _>(Method::DELETE, &cache_path(ns, key), None, None)
            .await?;
        Ok(r.removed)
    }

    /// Removes `keys`, entries tagged with any of `tags`, and their dependents.
    pub async fn cache_invalidate(
        &self,
        ns: &str,
        keys: Vec<String>,
        tags: Vec<String>,
    ) -> ClientResult<u64> {
        let r: CacheRemovedReply = self
            .call(
                Method::POST,
                &format!("/v1/cache/{}/invalidate", encode(ns)),
                Some(&CacheInvalidateBody { tags, keys }),
                None,
            )
            .await?;
        Ok(r.removed)
    }

    /// Retires every entry of `ns`; returns its new version.
    pub async fn cache_bump(&self, ns: &str) -> ClientResult<u64> {
        let r: CacheBumpReply = self
            .call::<(), _>(
                Method::POST,
                &format!("/v1/cache/{}/bump", encode(ns)),
                None,
                None,
            )
            .await?;
        Ok(r.version)
    }

    /// Prunes the server's disk tier.
    pub async fn cache_prune(&self, body: &CachePruneBody) -> ClientResult<CachePruneReply> {
        self.call(Method::POST, "/v1/cache/prune", Some(body), None)
            .await
    }

    /// Every cache tier's figures.
    pub async fn cache_stats(&self) -> ClientResult<CacheStatsView> {
        self.call::<(), _>(Method::GET, "/v1/cache", None, None)
            .await
    }

    /// A request with a raw body and a raw reply (the cache's values are bytes).
    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<bytes::Bytes>,
        headers: &[(&str, &str)],
    ) -> ClientResult<Raw> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/octet-stream")
                .body(b);
        }
        let resp = req.send().await.map_err(ClientError::Transport)?;
        let status = resp.status();
        let h = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(ClientError::Transport)?;
        if status.is_success() {
            return Ok(Raw::Ok(h, bytes));
        }
        serde_json::from_slice::<Problem>(&bytes)
            .map(Raw::Problem)
            .map_err(|_| {
                ClientError::Decode(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ))
            })
    }

    /// True when `/ready` answers 200.
    pub async fn ready(&self) -> bool {
        match self.http.get(format!("{}/ready", self.base)).send().await {
            Ok(r) => r.status() == StatusCode::OK,
            Err(_) => false,
        }
    }
}

/// How long to wait before retrying after `e`, when it is a load-shedding refusal: the
/// server's hint, doubled for each refusal in a row (at most 8×), with ±20 % jitter so
/// refused producers do not return in step.
pub fn overloaded_wait(e: &ClientError, refusals: u32) -> Option<Duration> {
    let ClientError::Problem(p) = e else {
        return None;
    };
    if p.kind() != Some(ProblemType::Overloaded) {
        return None;
    }
    let hint = p.retry_after_ms.unwrap_or(1_000).max(50);
    let ms = hint.saturating_mul(1 << refusals.min(3));
    let jitter = fastrand::u64(0..=ms / 5);
    Some(Duration::from_millis(ms - ms / 10 + jitter))
}

/// Percent-encodes a path segment or query value. Queue names are restricted to
/// `A-Z a-z 0-9 _ - . :`, but states and user input pass through here too.
enum Raw {
    Ok(reqwest::header::HeaderMap, bytes::Bytes),
    Problem(Problem),
}

fn cache_path(ns: &str, key: &str) -> String {
    format!("/v1/cache/{}/{}", encode(ns), encode(key))
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
