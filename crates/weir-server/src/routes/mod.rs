//! The API's handlers, one module per area, and the OpenAPI document built from their
//! annotations.

pub mod cache;
pub mod cron;
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
        jobs::delete,
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
        queues::delete,
        queues::retry_jobs,
        queues::delete_jobs,
        cron::list,
        cron::show,
        cron::put,
        cron::delete,
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
    components(schemas(weir_api::Problem, weir_api::StatusBody)),
    modifiers(&BearerAuth, &CommonResponses),
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

/// What every operation can answer besides its own replies, added to each so that the
/// document is complete without repeating them on every handler: 401 and 403 wherever a
/// token is needed, 415 wherever a body is read, 503 when the store does not answer in time,
/// and 429 where load shedding refuses work. Also makes operation ids unique and readable
/// for generated clients (`jobs_list`, `queues_list`).
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, Response};
        let problem = |what: &str| {
            Response::builder()
                .description(what)
                .content(
                    "application/problem+json",
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                ("get", item.get.as_mut()),
                ("put", item.put.as_mut()),
                ("post", item.post.as_mut()),
                ("delete", item.delete.as_mut()),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let tag = op
                    .tags
                    .as_ref()
                    .and_then(|t| t.first())
                    .cloned()
                    .unwrap_or_default();
                if let Some(id) = &op.operation_id {
                    if !tag.is_empty() && !id.starts_with(&format!("{tag}_")) {
                        op.operation_id = Some(format!("{tag}_{id}"));
                    }
                }
                let open = op.security.as_ref().is_some_and(|s| s.is_empty());
                let r = &mut op.responses.responses;
                let mut add = |code: &str, what: &str| {
                    r.entry(code.to_string())
                        .or_insert_with(|| problem(what).into());
                };
                if !open {
                    add("401", "No token, or a token the server does not know");
                    add(
                        "403",
                        "The token may not do this on this queue or namespace",
                    );
                }
                if op.request_body.is_some() {
                    add("415", "The body is not application/json");
                    add("413", "The body is over the server's limit");
                }
                if path.starts_with("/v1/") {
                    add(
                        "503",
                        "The store did not answer in time (request_timeout_ms) or is failing",
                    );
                }
                if path == "/v1/jobs" && method == "post" {
                    add(
                        "429",
                        "A queue is at its max_depth: nothing was enqueued; retry after the \
                         Retry-After header",
                    );
                }
            }
        }
    }
}

/// The OpenAPI document as served. A default beside a reference to an object schema
/// (`QueueConfig`'s nested settings, from its `#[serde(default)]`) is valid but trips client
/// generators, and the replies carry every field anyway: those defaults are dropped here.
pub fn document() -> serde_json::Value {
    let mut v = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    drop_defaults_beside_refs(&mut v);
    v
}

/// Removes `default` from every schema that is a `$ref`, `oneOf` or `allOf`.
fn drop_defaults_beside_refs(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if ["$ref", "oneOf", "allOf"]
                .iter()
                .any(|k| map.contains_key(*k))
            {
                map.remove("default");
            }
            map.values_mut().for_each(drop_defaults_beside_refs);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_defaults_beside_refs),
        _ => {}
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
