//! `/v1/queues`: counts, configuration, pause, resume, purge, delete, and bulk actions on
//! a queue's jobs.

use crate::auth::Principal;
use crate::config::Rights;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use std::sync::Arc;
use weir_api::{
    BulkReply, Problem, ProblemType, PurgeReply, QueueConfigPatch, QueueListReply, QueueView,
};
use weir_core::config::check_queue_name;
use weir_core::{JobFilter, JobId, JobState};
use weir_store::{
    JobDeleteParams, JobRetryParams, QueueConfigUpdateParams, QueueDeleteParams, QueuePurgeParams,
};

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

/// Delete the queue: every job, its settings, its rate and breaker state and its hourly
/// aggregates. Refused (409) while any of its jobs is active: pause it and let them finish,
/// or cancel them. A later enqueue or `PUT` starts a new queue of that name.
#[utoipa::path(delete, path = "/v1/queues/{name}", tag = "queues", params(("name" = String, Path, description = "Queue name")),
    responses((status = 200, description = "Deleted, with how many jobs", body = PurgeReply),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The queue has active jobs", body = Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<PurgeReply>> {
    require_queue(&state, &who, &name).await?;
    let deleted = state
        .store()
        .queue_delete(QueueDeleteParams { name })
        .await?;
    Ok(Json(PurgeReply { deleted }))
}

/// The state a bulk action applies to.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BulkQuery {
    /// The jobs' state: for a retry `dead` (default), `cancelled`, `failed` or `scheduled`;
    /// for a delete `completed`, `dead` or `cancelled`.
    pub state: Option<String>,
}

/// Runs `op` on every job of `queue` in `st`, a page at a time; returns how many it applied
/// to. A job that changed state meanwhile (a worker got to it) is skipped, not an error.
async fn each_job<F, Fut>(state: &AppState, queue: &str, st: JobState, op: F) -> ApiResult<u64>
where
    F: Fn(JobId) -> Fut,
    Fut: std::future::Future<Output = weir_core::Result<()>>,
{
    let mut after = None;
    let mut done = 0;
    loop {
        let page = state
            .store()
            .job_list(JobFilter {
                queue: Some(queue.to_string()),
                state: Some(st),
                after,
                limit: 1000,
            })
            .await?;
        for j in &page.jobs {
            match op(j.id).await {
                Ok(()) => done += 1,
                Err(weir_core::Error::InvalidState { .. } | weir_core::Error::JobNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => return Ok(done),
        }
    }
}

/// Retry every job of the queue in one state: dead (the default) or cancelled ones run again
/// with fresh attempts, failed or scheduled ones without waiting further.
#[utoipa::path(post, path = "/v1/queues/{name}/retry", tag = "queues",
    params(("name" = String, Path, description = "Queue name"), BulkQuery),
    responses((status = 200, description = "How many jobs wait again", body = BulkReply),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn retry_jobs(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<BulkQuery>,
) -> ApiResult<Json<BulkReply>> {
    require_queue(&state, &who, &name).await?;
    let st = bulk_state(
        q.state.as_deref().unwrap_or("dead"),
        &[
            JobState::Dead,
            JobState::Cancelled,
            JobState::Failed,
            JobState::Scheduled,
        ],
    )?;
    let store = state.store();
    let n = each_job(&state, &name, st, |id| async move {
        store.job_retry(JobRetryParams { id }).await
    })
    .await?;
    Ok(Json(BulkReply { jobs: n }))
}

/// Delete every finished job of the queue in one state: `completed`, `dead` or `cancelled`.
#[utoipa::path(delete, path = "/v1/queues/{name}/jobs", tag = "queues",
    params(("name" = String, Path, description = "Queue name"), BulkQuery),
    responses((status = 200, description = "How many jobs were deleted", body = BulkReply),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn delete_jobs(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<BulkQuery>,
) -> ApiResult<Json<BulkReply>> {
    require_queue(&state, &who, &name).await?;
    let Some(given) = q.state.as_deref() else {
        return Err(ApiError::invalid(
            "state",
            "name the finished state to delete: completed, dead or cancelled",
        ));
    };
    let st = bulk_state(
        given,
        &[JobState::Completed, JobState::Dead, JobState::Cancelled],
    )?;
    let store = state.store();
    let n = each_job(&state, &name, st, |id| async move {
        store.job_delete(JobDeleteParams { id }).await
    })
    .await?;
    Ok(Json(BulkReply { jobs: n }))
}

/// `s` as one of `allowed`, or a 422 naming them.
fn bulk_state(s: &str, allowed: &[JobState]) -> ApiResult<JobState> {
    let st = super::jobs::parse_state(s)?;
    if allowed.contains(&st) {
        Ok(st)
    } else {
        Err(ApiError::invalid(
            "state",
            format!(
                "{s:?}: this action takes {}",
                allowed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }
}
