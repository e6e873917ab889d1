//! `/v1/cron`: jobs enqueued on a schedule (see [`crate::cron`]).

use crate::auth::Principal;
use crate::config::Rights;
use crate::cron;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use weir_api::{CronBody, CronListReply, CronView, Problem, ProblemType};

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        ProblemType::NotFound,
        format!("cron entry {name:?} not found"),
    )
}

/// The stored entry `name`, parsed.
async fn find(state: &AppState, name: &str) -> ApiResult<(cron::Entry, weir_store::CronRecord)> {
    let r = state
        .store()
        .cron_list()
        .await?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| not_found(name))?;
    let e = cron::parse_record(&r).ok_or_else(|| not_found(name))?;
    Ok((e, r))
}

/// Create or replace a cron entry. Replacing keeps its last tick: no tick already handled
/// runs again. Needs admin rights on the job's queue.
#[utoipa::path(put, path = "/v1/cron/{name}", tag = "cron", request_body = CronBody,
    params(("name" = String, Path, description = "Entry name: 1–128 characters of `A-Z a-z 0-9 _ - . :`")),
    responses((status = 200, description = "Stored; durable before this reply", body = CronView),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn put(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<CronBody>,
) -> ApiResult<Json<CronView>> {
    who.require(&body.job.queue, Rights::Admin)?;
    let now = state.store().clock().now_ms();
    let entry = cron::check(&name, body, &cron::limits(&state), now)?;
    Ok(Json(cron::put(state.store(), &entry, now).await?))
}

/// One cron entry, with its last and next tick.
#[utoipa::path(get, path = "/v1/cron/{name}", tag = "cron",
    params(("name" = String, Path, description = "Entry name")),
    responses((status = 200, body = CronView),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<CronView>> {
    let (e, r) = find(&state, &name).await?;
    who.require(&e.body.job.queue, Rights::Read)?;
    Ok(Json(cron::view(&e, &r, state.store().clock().now_ms())))
}

/// Every cron entry the token may read, by name.
#[utoipa::path(get, path = "/v1/cron", tag = "cron",
    responses((status = 200, body = CronListReply)))]
pub async fn list(State(state): State<AppState>, who: Principal) -> ApiResult<Json<CronListReply>> {
    let now = state.store().clock().now_ms();
    let cron = state
        .store()
        .cron_list()
        .await?
        .iter()
        .filter_map(|r| cron::parse_record(r).map(|e| (e, r)))
        .filter(|(e, _)| who.require(&e.body.job.queue, Rights::Read).is_ok())
        .map(|(e, r)| cron::view(&e, r, now))
        .collect();
    Ok(Json(CronListReply { cron }))
}

/// Delete a cron entry; jobs it already enqueued stay.
#[utoipa::path(delete, path = "/v1/cron/{name}", tag = "cron",
    params(("name" = String, Path, description = "Entry name")),
    responses((status = 204, description = "Deleted"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let (e, _) = find(&state, &name).await?;
    who.require(&e.body.job.queue, Rights::Admin)?;
    if !state.store().cron_delete(&name).await? {
        return Err(not_found(&name));
    }
    Ok(StatusCode::NO_CONTENT)
}
