//! `/v1/jobs`: enqueue, read, list, cancel, retry, delete.

use super::{check_batch, job_not_found, require_on_job, reread};
use crate::auth::Principal;
use crate::config::Rights;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use weir_api::{EnqueueReply, EnqueueRequest, JobPageView, JobView, Problem};
use weir_core::{JobFilter, JobId, JobState};
use weir_store::{JobCancelParams, JobDeleteParams, JobInsertManyParams, JobRetryParams};

/// Enqueue jobs (atomic: one bad job refuses the batch and nothing changes).
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = EnqueueRequest,
    responses(
        (status = 201, description = "Enqueued; durable before this reply", body = EnqueueReply),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or a payload too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or out of range", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn enqueue(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<EnqueueRequest>,
) -> ApiResult<(StatusCode, Json<EnqueueReply>)> {
    check_batch(&state, "jobs", req.jobs.len())?;
    for j in &req.jobs {
        who.require(&j.queue, Rights::Write)?;
    }
    let jobs = req.jobs.into_iter().map(|j| j.into_new_job()).collect();
    let ids = state
        .store()
        .job_insert_many(JobInsertManyParams { jobs })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(EnqueueReply {
            ids: ids.into_iter().map(|i| i.0).collect(),
        }),
    ))
}

/// Query of `GET /v1/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<u64>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<usize>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs with this tag.
    pub tag: Option<String>,
}

/// With a kind or tag filter, the most jobs one request examines: a page may then hold
/// fewer than `limit` jobs and still have a `next_cursor` to go on from.
const FILTER_SCAN: usize = 10_000;

/// A page of jobs in id order, filtered by queue and state (through the store's indexes),
/// and by kind and tag (examined here, up to 10,000 jobs a request: a page may then be short
/// and still have a `next_cursor`).
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobPageView),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<JobPageView>> {
    match &q.queue {
        Some(name) => who.require(name, Rights::Read)?,
        None => who.require_all(Rights::Read)?,
    }
    let st = q.state.as_deref().map(parse_state).transpose()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to 1000, got {limit}"),
        ));
    }
    let filter = JobFilter {
        queue: q.queue,
        state: st,
        after: q.cursor.map(JobId),
        limit,
    };
    if q.kind.is_none() && q.tag.is_none() {
        let page = state.store().job_list(filter).await?;
        return Ok(Json(JobPageView {
            jobs: page.jobs.into_iter().map(JobView::from).collect(),
            next_cursor: page.next_cursor.map(|c| c.0),
        }));
    }
    let wanted = |j: &weir_core::Job| {
        q.kind.as_deref().is_none_or(|k| j.kind == k)
            && q.tag
                .as_deref()
                .is_none_or(|t| j.tags.iter().any(|x| x == t))
    };
    let (mut jobs, mut after, mut scanned) = (Vec::new(), filter.after, 0);
    let next_cursor = loop {
        let page = state
            .store()
            .job_list(JobFilter {
                after,
                limit: 1000,
                ..filter.clone()
            })
            .await?;
        for j in page.jobs {
            scanned += 1;
            after = Some(j.id);
            if wanted(&j) {
                jobs.push(JobView::from(j));
                if jobs.len() == limit {
                    break;
                }
            }
        }
        if jobs.len() == limit || scanned >= FILTER_SCAN {
            break after.map(|c| c.0);
        }
        if page.next_cursor.is_none() {
            break None;
        }
    };
    Ok(Json(JobPageView { jobs, next_cursor }))
}

/// One job: state, attempts, errors, result.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = u64, Path, description = "Job id")),
    responses((status = 200, body = JobView),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<JobView>> {
    let job = state
        .store()
        .job_get(JobId(id))
        .await?
        .ok_or_else(|| job_not_found(id))?;
    who.require(&job.queue, Rights::Read)?;
    Ok(Json(job.into()))
}

/// A job state named in a query.
pub(crate) fn parse_state(s: &str) -> ApiResult<JobState> {
    JobState::parse(s).ok_or_else(|| {
        ApiError::invalid(
            "state",
            format!(
                "{s:?}: expected one of {}",
                JobState::ALL.map(JobState::as_str).join(", ")
            ),
        )
    })
}

/// Delete a job that is not running (cancel an active one first, or let it finish). One
/// that has not finished counts as cancelled: its group moves on and its unique key is free.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = u64, Path, description = "Job id")),
    responses((status = 204, description = "Deleted; durable before this reply"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is active", body = Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<StatusCode> {
    require_on_job(&state, &who, id, Rights::Write).await?;
    state
        .store()
        .job_delete(JobDeleteParams { id: JobId(id) })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancel a job that has not finished; an active job's lease is revoked.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = u64, Path, description = "Job id")),
    responses((status = 200, description = "Cancelled; the job as it is now", body = JobView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already finished", body = Problem, content_type = "application/problem+json")))]
pub async fn cancel(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<JobView>> {
    require_on_job(&state, &who, id, Rights::Write).await?;
    state
        .store()
        .job_cancel(JobCancelParams { id: JobId(id) })
        .await?;
    reread(&state, id).await
}

/// Run a job again now: a dead or cancelled job with fresh attempts, a scheduled or failed
/// one without waiting further.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", params(("id" = u64, Path, description = "Job id")),
    responses((status = 200, description = "Waiting again; the job as it is now", body = JobView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Waiting, active or completed", body = Problem, content_type = "application/problem+json")))]
pub async fn retry(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<JobView>> {
    require_on_job(&state, &who, id, Rights::Write).await?;
    state
        .store()
        .job_retry(JobRetryParams { id: JobId(id) })
        .await?;
    reread(&state, id).await
}
