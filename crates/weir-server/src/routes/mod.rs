//! The API's handlers, one module per area, and the OpenAPI document built from their
//! annotations.

pub mod cache;
pub mod jobs;
pub mod queues;
pub mod system;
pub mod work;

use crate::auth::Principal;
use crate::config::Rights;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use utoipa::OpenApi;
use weir_api::ProblemType;
use weir_core::JobId;

/// The OpenAPI document, generated from the handlers and the wire types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weir",
        description = "Durable job queues: enqueue, fetch under a lease, ack or fail. \
                       Errors are application/problem+json with a stable `type`."
    ),
    paths(
        jobs::enqueue,
        jobs::list,
        jobs::show,
        jobs::cancel,
        jobs::retry,
        work::fetch,
        work::ack,
        work::fail,
        work::heartbeat,
        work::release,
        queues::list,
        queues::show,
        queues::configure,
        queues::pause,
        queues::resume,
        queues::purge,
        cache::get,
        cache::put,
        cache::delete,
        cache::invalidate,
        cache::bump,
        cache::stats,
        cache::prune,
        system::health,
        system::ready,
        system::metrics,
    ),
    components(schemas(weir_api::Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Checks `need` on the queue of job `id`. Only looks the job up when auth is on; a job
/// that does not exist passes, so the operation itself reports it as not found.
pub(crate) async fn require_on_job(
    state: &AppState,
    who: &Principal,
    id: u64,
    need: Rights,
) -> ApiResult<()> {
    if !who.is_scoped() {
        return Ok(());
    }
    if let Some(job) = state.store().job_get(JobId(id)).await? {
        who.require(&job.queue, need)?;
    }
    Ok(())
}

/// Refuses a batch over the configured size, or an empty one.
pub(crate) fn check_batch(state: &AppState, field: &str, n: usize) -> ApiResult<()> {
    let max = state.config().max_batch;
    if n == 0 || n > max {
        return Err(ApiError::invalid(
            field,
            format!("{field} must hold 1 to {max} items, got {n}"),
        ));
    }
    Ok(())
}

/// Job `id` as it is now, after an operation on it.
pub(crate) async fn reread(state: &AppState, id: u64) -> ApiResult<axum::Json<weir_api::JobView>> {
    state
        .store()
        .job_get(JobId(id))
        .await?
        .map(|j| axum::Json(j.into()))
        .ok_or_else(|| job_not_found(id))
}

/// A 404 for job `id`.
pub(crate) fn job_not_found(id: u64) -> ApiError {
    ApiError::new(ProblemType::JobNotFound, format!("job {id} not found"))
}
