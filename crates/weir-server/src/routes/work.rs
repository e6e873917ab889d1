//! What workers call: fetch (long poll), ack, fail, heartbeat.

use super::{check_batch, require_on_job};
use crate::auth::Principal;
use crate::config::Rights;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use weir_api::{
    AckRequest, BatchReply, FailRequest, FetchReply, FetchRequest, HeartbeatReply,
    HeartbeatRequest, Problem, ReleaseRequest,
};
use weir_core::config::check_queue_name;
use weir_core::{BatchOutcome, JobId, Payload};
use weir_store::{
    JobAckManyParams, JobFailManyParams, JobFetchParams, JobHeartbeatParams, JobReleaseParams,
};

/// Lease up to `max` ready jobs; with `wait_ms`, wait that long for work when none is ready
/// (the request returns the moment a job arrives).
#[utoipa::path(post, path = "/v1/fetch", tag = "work", request_body = FetchRequest,
    responses((status = 200, description = "Leased jobs (empty when none arrived in time)", body = FetchReply),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn fetch(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<FetchRequest>,
) -> ApiResult<Json<FetchReply>> {
    if req.queues.is_empty() {
        return Err(ApiError::invalid("queues", "name at least one queue"));
    }
    for q in &req.queues {
        check_queue_name(q)?;
        who.require(q, Rights::Write)?;
    }
    check_batch(&state, "max", req.max)?;
    let max_wait = state.config().max_wait_ms;
    if req.wait_ms > max_wait {
        return Err(ApiError::invalid(
            "wait_ms",
            format!("must be at most {max_wait} ms, got {}", req.wait_ms),
        ));
    }
    let shutdown = state.shutdown_token();
    let names = req.queues.clone();
    let params = JobFetchParams {
        queues: req.queues,
        max: req.max,
        wait_ms: req.wait_ms,
        worker: req.worker,
    };
    let _waiting = Waiting::new(&state);
    let jobs = tokio::select! {
        r = state.store().job_fetch(params) => r,
        // A server going down answers long polls at once; nothing was leased.
        () = shutdown.cancelled() => Ok(Vec::new()),
    };
    let jobs = jobs?;
    let next_token_in_ms = if jobs.is_empty() {
        let now = state.store().clock().now_ms();
        state
            .store()
            .job_fetch_next_token(&names)
            .await?
            .map(|at| at.saturating_sub(now))
    } else {
        None
    };
    Ok(Json(FetchReply {
        jobs: jobs.into_iter().map(Into::into).collect(),
        next_token_in_ms,
    }))
}

/// Give a lease back without counting the attempt: the job is waiting again at once, with
/// no backoff (for a worker shutting down mid-job).
#[utoipa::path(post, path = "/v1/jobs/{id}/release", tag = "work", request_body = ReleaseRequest,
    params(("id" = u64, Path, description = "Job id")),
    responses((status = 200, description = "Waiting again; the job as it is now", body = weir_api::JobView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The lease is gone", body = Problem, content_type = "application/problem+json")))]
pub async fn release(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<u64>,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> ApiResult<Json<weir_api::JobView>> {
    require_on_job(&state, &who, id, Rights::Write).await?;
    state
        .store()
        .job_release(JobReleaseParams {
            id: JobId(id),
            lease_id: req.lease_id,
        })
        .await?;
    super::reread(&state, id).await
}

/// Counts a fetch in `weir_fetch_waiting` while it lives, also when the client goes away
/// and the handler is dropped mid-wait.
struct Waiting(prometheus::IntGauge);

impl Waiting {
    fn new(state: &AppState) -> Self {
        let g = state.http_metrics().fetch_waiting.clone();
        g.inc();
        Waiting(g)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn reply(out: BatchOutcome) -> Json<BatchReply> {
    Json(BatchReply {
        acked: out.applied,
        failed: None,
        rejected: out.rejected.into_iter().map(Into::into).collect(),
    })
}

/// Complete jobs under their leases. Each refused item changes nothing and is listed with
/// its reason; the others apply. Durable before the reply.
#[utoipa::path(post, path = "/v1/ack", tag = "work", request_body = AckRequest,
    responses((status = 200, body = BatchReply),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn ack(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<AckRequest>,
) -> ApiResult<Json<BatchReply>> {
    check_batch(&state, "acks", req.acks.len())?;
    for a in &req.acks {
        require_on_job(&state, &who, a.id, Rights::Write).await?;
    }
    let acks = req.acks.into_iter().map(Into::into).collect();
    let out = state
        .store()
        .job_ack_many(JobAckManyParams { acks })
        .await?;
    Ok(reply(out))
}

/// Report failed attempts: retried with backoff while attempts are left (unless
/// `retry: false`), then dead. Same reply shape as ack. Durable before the reply.
#[utoipa::path(post, path = "/v1/fail", tag = "work", request_body = FailRequest,
    responses((status = 200, body = BatchReply),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn fail(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<FailRequest>,
) -> ApiResult<Json<BatchReply>> {
    check_batch(&state, "fails", req.fails.len())?;
    for f in &req.fails {
        require_on_job(&state, &who, f.id, Rights::Write).await?;
    }
    let fails = req.fails.into_iter().map(Into::into).collect();
    let out = state
        .store()
        .job_fail_many(JobFailManyParams { fails })
        .await?;
    let mut r = reply(out);
    r.0.failed = Some(r.0.acked);
    Ok(r)
}

/// Extend a live lease by the job's timeout, optionally recording progress.
#[utoipa::path(post, path = "/v1/jobs/{id}/heartbeat", tag = "work", request_body = HeartbeatRequest,
    params(("id" = u64, Path, description = "Job id")),
    responses((status = 200, body = HeartbeatReply),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The lease is gone (expired, or not this job's)", body = Problem, content_type = "application/problem+json")))]
pub async fn heartbeat(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<u64>,
    ApiJson(req): ApiJson<HeartbeatRequest>,
) -> ApiResult<Json<HeartbeatReply>> {
    require_on_job(&state, &who, id, Rights::Write).await?;
    let deadline = state
        .store()
        .job_heartbeat(JobHeartbeatParams {
            id: JobId(id),
            lease_id: req.lease_id,
            progress: req.progress.map(Payload::from_raw),
        })
        .await?;
    Ok(Json(HeartbeatReply {
        lease_deadline_ms: deadline,
    }))
}
