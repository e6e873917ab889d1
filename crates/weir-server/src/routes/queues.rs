//! `/v1/queues`: counts, configuration, pause, resume, purge.

use crate::auth::Principal;
use crate::config::Rights;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use std::sync::Arc;
use weir_api::{Problem, ProblemType, PurgeReply, QueueConfigPatch, QueueListReply, QueueView};
use weir_core::config::check_queue_name;
use weir_store::{QueueConfigUpdateParams, QueuePurgeParams};

fn queue_not_found(name: &str) -> ApiError {
    ApiError::new(
        ProblemType::QueueNotFound,
        format!("queue {name:?} not found"),
    )
}

async fn view(state: &AppState, name: &str) -> ApiResult<QueueView> {
    state
        .store()
        .queue_stats(name)
        .await?
        .map(QueueView::from)
        .ok_or_else(|| queue_not_found(name))
}

/// Every queue the token may read, with counts and configuration.
#[utoipa::path(get, path = "/v1/queues", tag = "queues",
    responses((status = 200, body = QueueListReply)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<QueueListReply>> {
    let mut queues = Vec::new();
    for name in state.store().queue_list().await? {
        if !who.can(&name, Rights::Read) {
            continue;
        }
        if let Some(s) = state.store().queue_stats(&name).await? {
            queues.push(s.into());
        }
    }
    Ok(Json(QueueListReply { queues }))
}

/// One queue: counts by state, oldest waiting age, latency, configuration.
#[utoipa::path(get, path = "/v1/queues/{name}", tag = "queues", params(("name" = String, Path, description = "Queue name")),
    responses((status = 200, body = QueueView),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<QueueView>> {
    who.require(&name, Rights::Read)?;
    Ok(Json(view(&state, &name).await?))
}

async fn patch(
    state: &AppState,
    who: &Principal,
    name: &str,
    p: &QueueConfigPatch,
) -> ApiResult<Json<QueueView>> {
    check_queue_name(name)?;
    who.require(name, Rights::Admin)?;
    // One atomic store operation: two concurrent PUTs naming different keys both land.
    state
        .store()
        .queue_config_update(QueueConfigUpdateParams {
            name: name.to_string(),
            patch: Arc::new(p.clone()),
        })
        .await?;
    Ok(Json(view(state, name).await?))
}

/// Change the keys named (the queue is created if new). Durable before the reply.
#[utoipa::path(put, path = "/v1/queues/{name}", tag = "queues", request_body = QueueConfigPatch,
    params(("name" = String, Path, description = "Queue name")),
    responses((status = 200, body = QueueView),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn configure(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(name): ApiPath<String>,
    ApiJson(p): ApiJson<QueueConfigPatch>,
) -> ApiResult<Json<QueueView>> {
    patch(&state, &who, &name, &p).await
}

/// Refuses an admin call on a queue that does not exist, rather than creating it (a typo in
/// `weir queues resume emials` made a phantom queue). Only `PUT` creates queues.
async fn require_queue(state: &AppState, who: &Principal, name: &str) -> ApiResult<()> {
    check_queue_name(name)?;
    who.require(name, Rights::Admin)?;
    match state.store().queue_config_get(name).await? {
        Some(_) => Ok(()),
        None => Err(queue_not_found(name)),
    }
}

/// Stop handing out the queue's jobs; it still accepts new ones.
#[utoipa::path(post, path = "/v1/queues/{name}/pause", tag = "queues", params(("name" = String, Path, description = "Queue name")),
    responses((status = 200, body = QueueView),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn pause(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<QueueView>> {
    require_queue(&state, &who, &name).await?;
    let p = QueueConfigPatch {
        paused: Some(true),
        ..Default::default()
    };
    patch(&state, &who, &name, &p).await
}

/// Hand out the queue's jobs again.
#[utoipa::path(post, path = "/v1/queues/{name}/resume", tag = "queues", params(("name" = String, Path, description = "Queue name")),
    responses((status = 200, body = QueueView),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn resume(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<QueueView>> {
    require_queue(&state, &who, &name).await?;
    let p = QueueConfigPatch {
        paused: Some(false),
        ..Default::default()
    };
    patch(&state, &who, &name, &p).await
}

/// Delete every waiting, scheduled and retry-pending job of the queue; running jobs finish.
#[utoipa::path(post, path = "/v1/queues/{name}/purge", tag = "queues", params(("name" = String, Path, description = "Queue name")),
    responses((status = 200, body = PurgeReply),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn purge(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<PurgeReply>> {
    require_queue(&state, &who, &name).await?;
    let deleted = state.store().queue_purge(QueuePurgeParams { name }).await?;
    Ok(Json(PurgeReply { deleted }))
}
