//! `/v1/cache/...`: the tiered cache over HTTP. Values travel as raw bytes; a `PUT` takes
//! `ttl_ms`, `tags` and `deps` (comma-separated) from the query string or from the
//! `weir-ttl-ms`, `weir-tags` and `weir-deps` headers. Namespaces share the tokens' prefix
//! scopes with queues: reading needs `read`, writing and invalidating `write`, pruning
//! `admin` on every name.

use crate::auth::Principal;
use crate::config::Rights;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use weir_api::{
    CacheBumpReply, CacheInvalidateBody, CachePruneBody, CachePruneReply, CacheRemovedReply,
    CacheStatsView, CacheTierView, Problem, ProblemType,
};
use weir_cache::{SetOptions, TierStats};

/// `PUT`'s options in the query string.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    /// Time to live, ms (default: the server's `cache.default_ttl_ms`).
    pub ttl_ms: Option<u64>,
    /// Tags, comma-separated.
    pub tags: Option<String>,
    /// Keys this entry depends on, comma-separated.
    pub deps: Option<String>,
}

fn list(s: Option<&str>) -> Vec<String> {
    s.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> ApiResult<Option<&'a str>> {
    h.get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::invalid(name, format!("header {name} is not text")))
        })
        .transpose()
}

/// The entry's value.
#[utoipa::path(get, path = "/v1/cache/{ns}/{key}", tag = "cache",
    params(("ns" = String, Path, description = "Namespace"), ("key" = String, Path, description = "Key (percent-encoded)")),
    responses((status = 200, description = "The value; `weir-cache-tier` says which tier had it, `weir-cache-expires-ms` when it expires", content_type = "application/octet-stream"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    ApiPath((ns, key)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    read(&state, &who, &ns, &key).await
}

async fn read(state: &AppState, who: &Principal, ns: &str, key: &str) -> ApiResult<Response> {
    who.require(ns, Rights::Read)?;
    let Some(hit) = state.cache().get(ns, key).await? else {
        return Err(ApiError::new(
            ProblemType::CacheMiss,
            format!("no live entry under {key:?} in {ns:?}"),
        ));
    };
    let mut resp = hit.value.into_response();
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("weir-cache-tier", HeaderValue::from_static(hit.tier.name()));
    h.insert("weir-cache-expires-ms", HeaderValue::from(hit.expires_ms));
    Ok(resp)
}

/// Stores the body under the key in every tier.
#[utoipa::path(put, path = "/v1/cache/{ns}/{key}", tag = "cache",
    params(("ns" = String, Path, description = "Namespace"), ("key" = String, Path, description = "Key (percent-encoded)"), PutQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The value"),
    responses((status = 204, description = "Stored"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn put(
    State(state): State<AppState>,
    who: Principal,
    ApiPath((ns, key)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<PutQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    write(&state, &who, &ns, &key, q, &headers, body).await
}

async fn write(
    state: &AppState,
    who: &Principal,
    ns: &str,
    key: &str,
    q: PutQuery,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    who.require(ns, Rights::Write)?;
    let value = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ProblemType::PayloadTooLarge, r.body_text())
        } else {
            ApiError::invalid("body", r.body_text())
        }
    })?;
    let ttl_ms = match (q.ttl_ms, header(headers, "weir-ttl-ms")?) {
        (Some(t), _) => Some(t),
        (None, Some(h)) => Some(h.trim().parse().map_err(|_| {
            ApiError::invalid("ttl_ms", format!("weir-ttl-ms {h:?} is not a whole number"))
        })?),
        (None, None) => None,
    };
    let opts = SetOptions {
        ttl_ms,
        tags: list(q.tags.as_deref().or(header(headers, "weir-tags")?)),
        deps: list(q.deps.as_deref().or(header(headers, "weir-deps")?)),
    };
    state.cache().set(ns, key, value, &opts).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes the key and, transitively, what depends on it, from every tier and instance.
#[utoipa::path(delete, path = "/v1/cache/{ns}/{key}", tag = "cache",
    params(("ns" = String, Path, description = "Namespace"), ("key" = String, Path, description = "Key (percent-encoded)")),
    responses((status = 200, body = CacheRemovedReply)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    ApiPath((ns, key)): ApiPath<(String, String)>,
) -> ApiResult<Json<CacheRemovedReply>> {
    remove(&state, &who, &ns, &key).await
}

async fn remove(
    state: &AppState,
    who: &Principal,
    ns: &str,
    key: &str,
) -> ApiResult<Json<CacheRemovedReply>> {
    who.require(ns, Rights::Write)?;
    let removed = state.cache().delete(ns, key).await?;
    Ok(Json(CacheRemovedReply { removed }))
}

/// Removes keys, every entry carrying a tag, and their dependents, from every tier and
/// instance.
#[utoipa::path(post, path = "/v1/cache/{ns}/invalidate", tag = "cache", request_body = CacheInvalidateBody,
    params(("ns" = String, Path, description = "Namespace")),
    responses((status = 200, body = CacheRemovedReply),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn invalidate(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(ns): ApiPath<String>,
    ApiJson(body): ApiJson<CacheInvalidateBody>,
) -> ApiResult<Json<CacheRemovedReply>> {
    who.require(&ns, Rights::Write)?;
    if body.keys.is_empty() && body.tags.is_empty() {
        return Err(ApiError::invalid(
            "keys",
            "name at least one key or tag to invalidate",
        ));
    }
    crate::routes::check_batch(&state, "keys", body.keys.len().max(1))?;
    crate::routes::check_batch(&state, "tags", body.tags.len().max(1))?;
    let removed = state
        .cache()
        .invalidate(&ns, &body.keys, &body.tags)
        .await?;
    Ok(Json(CacheRemovedReply { removed }))
}

/// Retires every entry of the namespace at once, in every tier and instance.
#[utoipa::path(post, path = "/v1/cache/{ns}/bump", tag = "cache",
    params(("ns" = String, Path, description = "Namespace")),
    responses((status = 200, body = CacheBumpReply)))]
pub async fn bump(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(ns): ApiPath<String>,
) -> ApiResult<Json<CacheBumpReply>> {
    who.require(&ns, Rights::Write)?;
    let version = state.cache().bump(&ns).await?;
    Ok(Json(CacheBumpReply {
        namespace: ns,
        version,
    }))
}

macro_rules! named_key {
    ($key:literal, $get:ident, $put:ident, $delete:ident) => {
        /// The key named like the action route, read.
        pub async fn $get(
            State(state): State<AppState>,
            who: Principal,
            ApiPath(ns): ApiPath<String>,
        ) -> ApiResult<Response> {
            read(&state, &who, &ns, $key).await
        }

        /// The key named like the action route, written.
        pub async fn $put(
            State(state): State<AppState>,
            who: Principal,
            ApiPath(ns): ApiPath<String>,
            ApiQuery(q): ApiQuery<PutQuery>,
            headers: HeaderMap,
            body: Result<Bytes, BytesRejection>,
        ) -> ApiResult<StatusCode> {
            write(&state, &who, &ns, $key, q, &headers, body).await
        }

        /// The key named like the action route, deleted.
        pub async fn $delete(
            State(state): State<AppState>,
            who: Principal,
            ApiPath(ns): ApiPath<String>,
        ) -> ApiResult<Json<CacheRemovedReply>> {
            remove(&state, &who, &ns, $key).await
        }
    };
}

/// `/v1/cache/{ns}/` with nothing after the slash: a key left empty, said so (rather than
/// "no route").
pub async fn empty_key() -> ApiError {
    ApiError::invalid("key", "invalid key: must not be empty")
}

named_key!(
    "invalidate",
    get_invalidate,
    put_invalidate,
    delete_invalidate
);
named_key!("bump", get_bump, put_bump, delete_bump);

/// Every tier's figures.
#[utoipa::path(get, path = "/v1/cache", tag = "cache",
    responses((status = 200, body = CacheStatsView)))]
pub async fn stats(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<CacheStatsView>> {
    who.require_all(Rights::Read)?;
    Ok(Json(stats_view(&state.cache().stats())))
}

/// The wire view of the cache's figures.
pub fn stats_view(s: &weir_cache::CacheStats) -> CacheStatsView {
    fn tier(t: &TierStats) -> CacheTierView {
        CacheTierView {
            enabled: t.enabled,
            hits: t.hits,
            misses: t.misses,
            hit_ratio: t.hit_ratio(),
            evictions: t.evictions,
            invalidations: t.invalidations,
            writes: t.writes,
            errors: t.errors,
            bytes: t.bytes,
            entries: t.entries,
        }
    }
    CacheStatsView {
        memory: tier(&s.memory),
        disk: tier(&s.disk),
        redis: tier(&s.redis),
        redis_up: s.redis_up,
        redis_outages: s.redis_outages,
        coalesced: s.coalesced,
        computations: s.computations,
        resyncs: s.resyncs,
    }
}

/// Prunes the disk tier: expired files, files unused for `older_than_ms`, then least
/// recently used files down to `max_bytes`.
#[utoipa::path(post, path = "/v1/cache/prune", tag = "cache", request_body = CachePruneBody,
    responses((status = 200, body = CachePruneReply)))]
pub async fn prune(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<CachePruneBody>,
) -> ApiResult<Json<CachePruneReply>> {
    who.require_all(Rights::Admin)?;
    let r = state
        .cache()
        .prune(body.max_bytes, body.older_than_ms)
        .await
        .unwrap_or_default();
    Ok(Json(CachePruneReply {
        files: r.files,
        bytes: r.bytes,
        files_left: r.files_left,
        bytes_left: r.bytes_left,
    }))
}
