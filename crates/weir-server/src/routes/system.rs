//! Health, readiness, metrics, the OpenAPI document and the dashboard page.

use crate::auth::Principal;
use crate::config::Rights;
use crate::error::ApiResult;
use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::BTreeMap;
use std::time::Duration;
use weir_core::Aggregate;
use weir_store::AggregateListParams;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "system", security(),
    responses((status = 200, description = "Alive", body = weir_api::StatusBody)))]
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: the store is healthy (it answers within a second, and no failed write or
/// panicked operation has broken it) and the server is not shutting down.
#[utoipa::path(get, path = "/ready", tag = "system", security(),
    responses((status = 200, description = "Ready", body = weir_api::StatusBody),
        (status = 503, description = "Not ready: shutting down, or the store failed or does not answer",
         body = weir_api::StatusBody)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.shutdown_token().is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "shutting down" })),
        )
            .into_response();
    }
    match tokio::time::timeout(Duration::from_secs(1), state.store().health()).await {
        Ok(Ok(_)) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "store failed", "detail": e.to_string() })),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "store not answering" })),
        )
            .into_response(),
    }
}

/// Prometheus metrics (text format). Needs a read token on every queue when auth is on.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>, who: Principal) -> ApiResult<Response> {
    who.require_all(Rights::Read)?;
    let store = state.store();
    let mut queues = Vec::new();
    for name in store.queue_list().await? {
        if let Some(s) = store.queue_stats(&name).await? {
            queues.push(s);
        }
    }
    let mut totals: BTreeMap<String, Aggregate> = BTreeMap::new();
    for rec in store
        .aggregate_list(AggregateListParams {
            queue: None,
            from_ms: 0,
            to_ms: u64::MAX,
        })
        .await?
    {
        totals.entry(rec.queue).or_default().merge(&rec.counts);
    }
    let snapshot = crate::metrics::Snapshot::new(
        &queues,
        &totals,
        store.commit_stats(),
        &state.cache().stats(),
    );
    let text = crate::metrics::render(state.http_metrics(), &snapshot);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// The OpenAPI document of this API.
pub async fn openapi() -> Json<serde_json::Value> {
    Json(super::document())
}

/// The dashboard's Content-Security-Policy: scripts, styles and API calls from this origin
/// only, no inline script or style, no plugins, no framing, no form posts elsewhere. With the
/// page building its DOM from text (never HTML), a kind or payload such as
/// `<img src=x onerror=...>` stays inert even if a bug rendered it as markup.
pub const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The dashboard: queues, a queue's jobs and settings, a job's attempts, cron, cache, with
/// the operator's actions; served from the binary, no CDN.
pub async fn dashboard() -> Response {
    page(
        "text/html; charset=utf-8",
        include_str!("dashboard/index.html"),
    )
}

/// The dashboard's script.
pub async fn dashboard_js() -> Response {
    page(
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    )
}

/// The dashboard's style sheet.
pub async fn dashboard_css() -> Response {
    page("text/css; charset=utf-8", include_str!("dashboard/app.css"))
}
