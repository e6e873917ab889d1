//! Weir's HTTP server: the `/v1` API of `DESIGN.md` ("The HTTP contract") over any
//! [`Store`], with bearer-token auth, request limits, Prometheus metrics, health checks, a
//! generated OpenAPI document and the dashboard page.
//!
//! The router is built by [`app`], so tests drive it without sockets; [`serve`] runs it on a
//! listener with graceful shutdown. Every refusal is an `application/problem+json` body with
//! a stable `type` (see [`weir_api::ProblemType`]), and a handler that panics is answered
//! with a 500 problem while the server goes on.
//!
//! # Layout
//! - [`config`]: settings (TOML file + `WEIR_*` environment).
//! - [`auth`]: tokens, rights, queue-prefix scopes.
//! - [`error`], [`extract`]: the problem type and the extractors that produce it.
//! - [`routes`]: one module per area of the API.
//! - [`metrics`]: the `/metrics` exposition.
//! - [`embedded`]: a Weir served inside another program, on a loopback port.

pub mod auth;
pub mod config;
pub mod cron;
pub mod embedded;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod routes;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use config::{ServerConfig, TokenConfig};
use error::ApiError;
use metrics::HttpMetrics;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;
use weir_api::{Problem, ProblemType, PROBLEM_CONTENT_TYPE};
use weir_store::Store;

pub use routes::ApiDoc;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    store: Arc<dyn Store>,
    cache: weir_cache::Cache,
    config: ServerConfig,
    tokens: Vec<Arc<TokenConfig>>,
    http: HttpMetrics,
    shutdown: CancellationToken,
}

impl AppState {
    /// State for a server over `store` and `cache` with `config`.
    pub fn new(store: Arc<dyn Store>, cache: weir_cache::Cache, config: ServerConfig) -> Self {
        let tokens = config.tokens.iter().cloned().map(Arc::new).collect();
        AppState(Arc::new(Inner {
            store,
            cache,
            config,
            tokens,
            http: HttpMetrics::new(),
            shutdown: CancellationToken::new(),
        }))
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.0.store
    }

    /// The tiered cache.
    pub fn cache(&self) -> &weir_cache::Cache {
        &self.0.cache
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }

    pub(crate) fn tokens(&self) -> &[Arc<TokenConfig>] {
        &self.0.tokens
    }

    pub(crate) fn http_metrics(&self) -> &HttpMetrics {
        &self.0.http
    }

    /// Cancelled when the server begins to shut down: long polls return at once.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.0.shutdown.clone()
    }
}

/// The whole router: API, metrics, health, OpenAPI, dashboard, with limits, compression,
/// tracing and panic recovery.
pub fn app(state: AppState) -> Router {
    let gzip_min = state.config().gzip_min_bytes;
    let body_limit = state.config().max_body_bytes;
    let compress = SizeAbove::new(gzip_min)
        .and(NotForContentType::const_new("text/event-stream"))
        .and(NotForContentType::const_new("image/"));
    Router::new()
        .route(
            "/v1/jobs",
            post(routes::jobs::enqueue).get(routes::jobs::list),
        )
        .route(
            "/v1/jobs/{id}",
            get(routes::jobs::show).delete(routes::jobs::delete),
        )
        .route("/v1/jobs/{id}/cancel", post(routes::jobs::cancel))
        .route("/v1/jobs/{id}/retry", post(routes::jobs::retry))
        .route("/v1/jobs/{id}/heartbeat", post(routes::work::heartbeat))
        .route("/v1/jobs/{id}/release", post(routes::work::release))
        .route("/v1/fetch", post(routes::work::fetch))
        .route("/v1/ack", post(routes::work::ack))
        .route("/v1/fail", post(routes::work::fail))
        .route("/v1/queues", get(routes::queues::list))
        .route(
            "/v1/queues/{name}",
            get(routes::queues::show)
                .put(routes::queues::configure)
                .delete(routes::queues::delete),
        )
        .route(
            "/v1/queues/{name}/jobs",
            axum::routing::delete(routes::queues::delete_jobs),
        )
        .route("/v1/queues/{name}/retry", post(routes::queues::retry_jobs))
        .route("/v1/queues/{name}/pause", post(routes::queues::pause))
        .route("/v1/queues/{name}/resume", post(routes::queues::resume))
        .route("/v1/queues/{name}/purge", post(routes::queues::purge))
        .route("/v1/cron", get(routes::cron::list))
        .route(
            "/v1/cron/{name}",
            get(routes::cron::show)
                .put(routes::cron::put)
                .delete(routes::cron::delete),
        )
        .route("/v1/cache", get(routes::cache::stats))
        .route("/v1/cache/prune", post(routes::cache::prune))
        .route(
            "/v1/cache/{ns}/",
            get(routes::cache::empty_key)
                .put(routes::cache::empty_key)
                .delete(routes::cache::empty_key),
        )
        .route(
            "/v1/cache/{ns}/{key}",
            get(routes::cache::get)
                .put(routes::cache::put)
                .delete(routes::cache::delete),
        )
        // These two paths are also keys: without their GET/PUT/DELETE here, a key named
        // `invalidate` or `bump` could not be read (the router matches paths before
        // methods).
        .route(
            "/v1/cache/{ns}/invalidate",
            post(routes::cache::invalidate)
                .get(routes::cache::get_invalidate)
                .put(routes::cache::put_invalidate)
                .delete(routes::cache::delete_invalidate),
        )
        .route(
            "/v1/cache/{ns}/bump",
            post(routes::cache::bump)
                .get(routes::cache::get_bump)
                .put(routes::cache::put_bump)
                .delete(routes::cache::delete_bump),
        )
        .route("/v1/openapi.json", get(routes::system::openapi))
        .route("/metrics", get(routes::system::metrics))
        .route("/health", get(routes::system::health))
        .route("/ready", get(routes::system::ready))
        .route("/", get(routes::system::dashboard))
        .route("/dashboard/app.js", get(routes::system::dashboard_js))
        .route("/dashboard/app.css", get(routes::system::dashboard_css))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            deadline,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CompressionLayer::new().gzip(true).compress_when(compress))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(panic_reply))
        .with_state(state)
}

/// Bounds every request's time, reading its body included: a client that stalls mid-body, or
/// a store that stops answering, gets a 503 `timeout` problem instead of holding a connection
/// and a task for good. A long-polling fetch may wait its `wait_ms` (at most `max_wait_ms`)
/// on top. Our own few lines rather than tower-http's `TimeoutLayer`, whose reply is an empty
/// 408: every refusal here is `application/problem+json`.
async fn deadline(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let cfg = state.config();
    let mut limit = Duration::from_millis(cfg.request_timeout_ms);
    if req.uri().path() == "/v1/fetch" {
        limit += Duration::from_millis(cfg.max_wait_ms);
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            ProblemType::Timeout,
            format!(
                "the request did not complete within {} ms (request_timeout_ms)",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        ProblemType::NotFound,
        "no route at this path (see /v1/openapi.json)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ProblemType::MethodNotAllowed,
        "this route does not take this method (see /v1/openapi.json)",
    )
}

fn panic_reply(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = msg, "handler panicked");
    let p = Problem::new(ProblemType::Internal, "internal error (see server log)");
    let mut resp = (
        StatusCode::INTERNAL_SERVER_ERROR,
        serde_json::to_vec(&p).unwrap_or_default(),
    )
        .into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    resp
}

/// Applies the configuration file's `[queues.*]` settings to the store (each patch over the
/// queue's current configuration, atomically, so a `PUT` from a running peer is never
/// overwritten with a stale copy). Durable before it returns.
pub async fn apply_queue_settings(
    store: &dyn Store,
    config: &ServerConfig,
) -> Result<(), weir_core::Error> {
    for (name, patch) in &config.queues {
        store
            .queue_config_update(weir_store::QueueConfigUpdateParams {
                name: name.clone(),
                patch: Arc::new(patch.clone()),
            })
            .await?;
    }
    // `[[cron]]` entries: checked as `PUT /v1/cron/{name}` checks them.
    let limits = config.limits();
    let now = store.clock().now_ms();
    for c in &config.cron {
        let entry = cron::check(&c.name, c.body(), &limits, now).map_err(|e| {
            weir_core::Error::invalid("cron", format!("[[cron]] {:?}: {}", c.name, e.0.detail))
        })?;
        cron::put(store, &entry, now).await.map_err(|e| {
            weir_core::Error::storage(format!("[[cron]] {:?}: {}", c.name, e.0.detail))
        })?;
    }
    Ok(())
}

/// Serves `state` on `listener` until `shutdown` resolves, then shuts down cleanly: stops
/// accepting, wakes long polls (they return empty lists), lets in-flight requests finish
/// for up to `shutdown_grace_ms`, and returns. The caller drops the store afterwards, which
/// flushes it.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = state.shutdown_token();
    let grace = Duration::from_millis(state.config().shutdown_grace_ms);
    // The cron scheduler runs while the server serves (it stops with the shutdown token).
    let scheduler = tokio::spawn(cron::run(state.clone()));
    let router = app(state);
    let stop = token.clone();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        stop.cancel();
    });
    let mut server = tokio::spawn(async move { server.await });
    let result = tokio::select! {
        r = &mut server => r.map_err(std::io::Error::other).and_then(|r| r),
        () = token.cancelled() => match tokio::time::timeout(grace, server).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "requests still running after the grace period; closing them"
                );
                Ok(())
            }
        },
    };
    // The scheduler holds the store: let it go before the caller drops (and flushes) it.
    token.cancel();
    let _ = scheduler.await;
    result
}
