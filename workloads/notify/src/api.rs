//! The HTTP API. Every error is `application/problem+json` with a stable `type`
//! (`urn:weir-notify:problem:<name>`) and, for bad input, the JSON path of the field; a
//! refused request changes nothing.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/trigger` | run a workflow for a subscriber, a list (≤ 1,000) or a topic; `Idempotency-Key` honoured |
//! | `GET /v1/triggers/{id}` | a trigger and its messages' counts by status |
//! | `POST /v1/subscribers`, `GET /v1/subscribers` | upsert many (≤ 10,000), page |
//! | `PUT/GET/DELETE /v1/subscribers/{id}` | one subscriber |
//! | `GET/PATCH /v1/subscribers/{id}/preferences` | preferences (a patch merges) |
//! | `GET /v1/topics`, `PUT/GET/DELETE /v1/topics/{key}` | topics |
//! | `GET/POST /v1/topics/{key}/subscribers`, `POST .../subscribers/remove` | members |
//! | `GET /v1/workflows`, `PUT/GET/DELETE /v1/workflows/{id}` | workflows (those of the config file are read-only) |
//! | `GET /v1/messages/{id}` | a message, its deliveries and activity trail |
//! | `GET /v1/activity` | messages newest first, by workflow, subscriber, status, channel, trigger |
//! | `GET /v1/stats` | daily aggregates per workflow, channel, provider and outcome |
//! | `GET /v1/providers` | providers and their breakers |
//! | `POST /v1/redrive` | sends the dead-letter queue's deliveries again (all, or one provider's) |
//! | `GET /health`, `GET /ready` | liveness; readiness (Weir reachable) |

use crate::model::{check_id, Channel, Invalid, Preferences, Subscriber, Topic};
use crate::pipeline::{now_ms, Notify};
use crate::store::{ActivityFilter, Idempotency, MsgId, Recipients, Status, StoreError, Trigger};
use crate::workflow::{Class, Workflow, WorkflowDef};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The API's state.
#[derive(Clone)]
pub struct Api {
    /// The pipeline.
    pub notify: Arc<Notify>,
    /// The bearer token, if one is required.
    pub token: Option<Arc<str>>,
    /// Largest request body, bytes.
    pub max_body: usize,
}

/// An API error: a status, a stable type, a title and the detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    field: Option<String>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            detail: detail.into(),
            field: None,
            headers: Vec::new(),
        }
    }

    fn invalid(e: Invalid) -> ApiError {
        ApiError {
            field: Some(e.field.clone()),
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-input",
                e.to_string(),
            )
        }
    }

    fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", what)
    }

    fn unavailable(e: impl std::fmt::Display) -> ApiError {
        let mut a = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{e}; nothing was accepted, retry later"),
        );
        a.headers
            .push((header::RETRY_AFTER, HeaderValue::from_static("1")));
        a
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage-unavailable",
            "the store failed; retry later",
        )
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::invalid(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.kind.replace('-', " ");
        let mut body = json!({
            "type": format!("urn:weir-notify:problem:{}", self.kind),
            "title": title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(f) = self.field {
            body["field"] = Value::String(f);
        }
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        for (k, v) in self.headers {
            r.headers_mut().insert(k, v);
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body: declared as JSON, within the size limit, of the right shape (the error
/// names the JSON path of the first bad field).
pub struct Body<T>(pub T, pub bytes::Bytes);

impl<T: DeserializeOwned> FromRequest<Api> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Api) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default();
            let essence = ct.split(';').next().unwrap_or_default().trim();
            if !essence.eq_ignore_ascii_case("application/json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "send application/json",
                ));
            }
        }
        let bytes = axum::body::to_bytes(req.into_body(), state.max_body)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    format!("the body is over {} bytes", state.max_body),
                )
            })?;
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                format!("the body is not JSON: {e}"),
            ));
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) => Ok(Body(v, bytes)),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                let inner = inner
                    .split(" at line ")
                    .next()
                    .unwrap_or(&inner)
                    .to_string();
                Err(ApiError::invalid(Invalid::new(
                    if path == "." { String::new() } else { path },
                    inner,
                )))
            }
        }
    }
}

/// The router.
pub fn app(api: Api) -> Router {
    Router::new()
        .route("/v1/trigger", post(trigger))
        .route("/v1/triggers/{id}", get(trigger_get))
        .route(
            "/v1/subscribers",
            post(subscribers_upsert).get(subscribers_list),
        )
        .route(
            "/v1/subscribers/{id}",
            get(subscriber_get)
                .put(subscriber_put)
                .delete(subscriber_delete),
        )
        .route(
            "/v1/subscribers/{id}/preferences",
            get(preferences_get)
                .patch(preferences_patch)
                .put(preferences_patch),
        )
        .route("/v1/topics", get(topics_list))
        .route(
            "/v1/topics/{key}",
            get(topic_get).put(topic_put).delete(topic_delete),
        )
        .route(
            "/v1/topics/{key}/subscribers",
            get(members_list).post(members_add),
        )
        .route("/v1/topics/{key}/subscribers/remove", post(members_remove))
        .route("/v1/workflows", get(workflows_list))
        .route(
            "/v1/workflows/{id}",
            get(workflow_get).put(workflow_put).delete(workflow_delete),
        )
        .route("/v1/messages/{id}", get(message_get))
        .route("/v1/activity", get(activity))
        .route("/v1/stats", get(stats))
        .route("/v1/providers", get(providers))
        .route("/v1/redrive", post(redrive))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(api.clone(), auth))
        .with_state(api)
}

async fn auth(State(api): State<Api>, req: Request, next: axum::middleware::Next) -> Response {
    use subtle::ConstantTimeEq;
    let open = matches!(req.uri().path(), "/health" | "/ready");
    if let (Some(token), false) = (&api.token, open) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            let mut e = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required",
            );
            e.headers
                .push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            return e.into_response();
        }
    }
    next.run(req).await
}

fn path_id(field: &str, id: &str) -> ApiResult<()> {
    check_id(field, id).map_err(ApiError::invalid)
}

// --- triggers ------------------------------------------------------------------------------

/// `POST /v1/trigger`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// The workflow.
    pub workflow: String,
    /// A subscriber id, a list of them, or `{"topic": KEY}`.
    pub to: Recipients,
    /// The event's data, seen by templates as `payload`.
    #[serde(default)]
    pub payload: Value,
    /// Overrides the workflow's class.
    #[serde(default)]
    pub class: Option<Class>,
}

const MAX_LISTED: usize = 1_000;
const MAX_PAYLOAD: usize = 64 * 1024;
/// How long an idempotency key's first request may stay in flight before a repeat may take
/// it over (the first one's process died).
const IN_FLIGHT_MS: u64 = 30_000;

async fn trigger(
    State(api): State<Api>,
    headers: HeaderMap,
    Body(body, raw): Body<TriggerBody>,
) -> ApiResult<Response> {
    let n = &api.notify;
    let reg = n.registry();
    let Some(wf) = reg.workflows.get(&body.workflow).cloned() else {
        return Err(ApiError::invalid(Invalid::new(
            "workflow",
            format!("no workflow {:?}", body.workflow),
        )));
    };
    let subs: Option<Vec<String>> = match &body.to {
        Recipients::One(s) => {
            path_id("to", s)?;
            Some(vec![s.clone()])
        }
        Recipients::Many(v) => {
            if v.is_empty() || v.len() > MAX_LISTED {
                return Err(ApiError::invalid(Invalid::new(
                    "to",
                    format!("1 to {MAX_LISTED} subscriber ids, or {{\"topic\": KEY}}"),
                )));
            }
            for (i, s) in v.iter().enumerate() {
                path_id(&format!("to[{i}]"), s)?;
            }
            let mut v = v.clone();
            v.sort();
            v.dedup();
            Some(v)
        }
        Recipients::Topic { topic } => {
            path_id("to.topic", topic)?;
            if n.store.topic(topic)?.is_none() {
                return Err(ApiError::invalid(Invalid::new(
                    "to.topic",
                    format!("no topic {topic:?}"),
                )));
            }
            None
        }
    };
    if serde_json::to_vec(&body.payload)
        .map(|v| v.len())
        .unwrap_or(0)
        > MAX_PAYLOAD
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("payload is over {MAX_PAYLOAD} bytes"),
        ));
    }
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().unwrap_or("");
            if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiError::invalid(Invalid::new(
                    "Idempotency-Key",
                    "1 to 255 visible ASCII characters",
                )));
            }
            Some(k.to_string())
        }
    };
    let now = now_ms();
    let fp = crate::store::fnv1a(raw.iter().copied());
    let mut id = n.store.next_trigger_id(now);
    if let Some(k) = &key {
        let claim = Idempotency {
            trigger: id,
            fingerprint: fp,
            at_ms: now,
            reply: None,
        };
        if let Some(prev) = n.store.claim_idempotency(k, &claim)? {
            if prev.fingerprint != fp {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "this Idempotency-Key was used with another request body",
                ));
            }
            if let Some(reply) = prev.reply {
                let mut r = (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    reply,
                )
                    .into_response();
                r.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return Ok(r);
            }
            if now.saturating_sub(prev.at_ms) < IN_FLIGHT_MS {
                let mut e = ApiError::new(
                    StatusCode::CONFLICT,
                    "in-flight",
                    "the first request with this Idempotency-Key is still being processed",
                );
                e.headers
                    .push((header::RETRY_AFTER, HeaderValue::from_static("1")));
                return Err(e);
            }
            // The first request's process died mid-way: take it over, same trigger id (its
            // messages and jobs are keyed by it, so nothing is made twice).
            id = prev.trigger;
            n.store
                .finish_idempotency(k, &Idempotency { at_ms: now, ..prev })?;
        }
    }
    let class = body.class.unwrap_or(wf.def.class);
    let mut t = match n.store.trigger(id)? {
        Some(t) => t,
        None => Trigger {
            id,
            workflow: wf.def.id.clone(),
            to: body.to.clone(),
            payload: body.payload.clone(),
            class,
            created_ms: now,
            messages: 0,
            fanned_out: false,
            idempotency_key: key.clone(),
        },
    };
    n.store.put_trigger(&t)?;
    let result = match &subs {
        Some(list) => n.start_messages(&t, list, 0, true).await.map(Some),
        None => {
            let Recipients::Topic { topic } = &body.to else {
                unreachable!("no list means a topic")
            };
            n.start_fanout(&t, topic).await.map(|_| None)
        }
    };
    let ids = match result {
        Ok(ids) => ids,
        Err(e) => {
            // Accepted by nobody: the key stays claimed by this trigger id, so a retry takes
            // it over at once and makes nothing twice.
            if let Some(k) = &key {
                let _ = n.store.finish_idempotency(
                    k,
                    &Idempotency {
                        trigger: id,
                        fingerprint: fp,
                        at_ms: 0,
                        reply: None,
                    },
                );
            }
            return Err(ApiError::unavailable(format!("Weir: {}", e.message)));
        }
    };
    if let Some(list) = &ids {
        t.messages = list.len() as u32;
        t.fanned_out = true;
        n.store.put_trigger(&t)?;
    }
    let reply = json!({
        "id": id.to_string(),
        "workflow": t.workflow,
        "class": class,
        "status": "accepted",
        "messages": ids.map(|v| v.iter().map(|m| m.to_string()).collect::<Vec<_>>()),
    })
    .to_string();
    if let Some(k) = &key {
        n.store.finish_idempotency(
            k,
            &Idempotency {
                trigger: id,
                fingerprint: fp,
                at_ms: now,
                reply: Some(reply.clone()),
            },
        )?;
    }
    n.store.persist()?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        reply,
    )
        .into_response())
}

async fn trigger_get(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let Ok(id) = id.parse::<u64>() else {
        return Err(ApiError::not_found("no such trigger"));
    };
    let Some(t) = api.notify.store.trigger(id)? else {
        return Err(ApiError::not_found("no such trigger"));
    };
    let f = ActivityFilter {
        trigger: Some(id),
        ..Default::default()
    };
    let page = api
        .notify
        .store
        .activity_feed(&f, None, crate::store::SCAN_LIMIT)?;
    let mut counts = std::collections::BTreeMap::<&str, u64>::new();
    for m in &page.items {
        *counts.entry(m.status.as_str()).or_default() += 1;
    }
    Ok(Json(json!({
        "id": t.id.to_string(),
        "workflow": t.workflow,
        "to": t.to,
        "payload": t.payload,
        "class": t.class,
        "created_ms": t.created_ms,
        "messages": t.messages,
        "fanned_out": t.fanned_out,
        "statuses": counts,
        "statuses_complete": page.next_cursor.is_none(),
    })))
}

// --- subscribers ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribersBody {
    subscribers: Vec<Subscriber>,
}

async fn subscribers_upsert(
    State(api): State<Api>,
    Body(b, _): Body<SubscribersBody>,
) -> ApiResult<Json<Value>> {
    if b.subscribers.is_empty() || b.subscribers.len() > 10_000 {
        return Err(ApiError::invalid(Invalid::new(
            "subscribers",
            "1 to 10000 subscribers",
        )));
    }
    for (i, s) in b.subscribers.iter().enumerate() {
        s.validate()
            .map_err(|e| ApiError::invalid(e.under(&format!("subscribers[{i}]"))))?;
    }
    let store = api.notify.store.clone();
    let n = b.subscribers.len();
    tokio::task::spawn_blocking(move || store.put_subscribers(&b.subscribers))
        .await
        .map_err(ApiError::unavailable)??;
    Ok(Json(json!({"upserted": n})))
}

#[derive(Deserialize)]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

fn limit(q: Option<usize>) -> ApiResult<usize> {
    match q {
        None => Ok(100),
        Some(n) if (1..=1_000).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(Invalid::new("limit", "from 1 to 1000"))),
    }
}

async fn subscribers_list(
    State(api): State<Api>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    let page = api
        .notify
        .store
        .subscribers(q.cursor.as_deref(), limit(q.limit)?)?;
    Ok(Json(json!(page)))
}

async fn subscriber_get(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> ApiResult<Json<Subscriber>> {
    path_id("id", &id)?;
    api.notify
        .store
        .subscriber(&id)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no subscriber {id:?}")))
}

async fn subscriber_put(
    State(api): State<Api>,
    Path(id): Path<String>,
    Body(mut s, _): Body<SubscriberPut>,
) -> ApiResult<Json<Subscriber>> {
    path_id("id", &id)?;
    if let Some(given) = &s.id {
        if given != &id {
            return Err(ApiError::invalid(Invalid::new(
                "id",
                "differs from the id in the path",
            )));
        }
    }
    s.id = Some(id);
    let s: Subscriber = s.into();
    s.validate()?;
    api.notify.store.put_subscribers(std::slice::from_ref(&s))?;
    Ok(Json(s))
}

/// A subscriber in a `PUT`, whose id may be left to the path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriberPut {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    push_tokens: Vec<String>,
    #[serde(default)]
    chat: Option<String>,
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    data: serde_json::Map<String, Value>,
}

impl From<SubscriberPut> for Subscriber {
    fn from(s: SubscriberPut) -> Self {
        Subscriber {
            id: s.id.unwrap_or_default(),
            email: s.email,
            phone: s.phone,
            push_tokens: s.push_tokens,
            chat: s.chat,
            locale: s.locale,
            data: s.data,
        }
    }
}

async fn subscriber_delete(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    path_id("id", &id)?;
    if api.notify.store.delete_subscriber(&id)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no subscriber {id:?}")))
    }
}

async fn preferences_get(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> ApiResult<Json<Preferences>> {
    path_id("id", &id)?;
    if api.notify.store.subscriber(&id)?.is_none() {
        return Err(ApiError::not_found(format!("no subscriber {id:?}")));
    }
    Ok(Json(api.notify.store.preferences(&id)?))
}

async fn preferences_patch(
    State(api): State<Api>,
    Path(id): Path<String>,
    Body(p, _): Body<Preferences>,
) -> ApiResult<Json<Preferences>> {
    path_id("id", &id)?;
    p.validate()?;
    if api.notify.store.subscriber(&id)?.is_none() {
        return Err(ApiError::not_found(format!("no subscriber {id:?}")));
    }
    Ok(Json(api.notify.store.update_preferences(&id, p)?))
}

// --- topics --------------------------------------------------------------------------------

async fn topics_list(State(api): State<Api>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({"topics": api.notify.store.topics()?})))
}

async fn topic_get(State(api): State<Api>, Path(key): Path<String>) -> ApiResult<Json<Topic>> {
    path_id("key", &key)?;
    api.notify
        .store
        .topic(&key)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no topic {key:?}")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TopicPut {
    #[serde(default)]
    name: Option<String>,
}

async fn topic_put(
    State(api): State<Api>,
    Path(key): Path<String>,
    Body(b, _): Body<TopicPut>,
) -> ApiResult<Json<Topic>> {
    path_id("key", &key)?;
    if b.name.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(ApiError::invalid(Invalid::new("name", "at most 256 bytes")));
    }
    let t = Topic { key, name: b.name };
    api.notify.store.put_topic(&t)?;
    Ok(Json(t))
}

async fn topic_delete(State(api): State<Api>, Path(key): Path<String>) -> ApiResult<StatusCode> {
    path_id("key", &key)?;
    if api.notify.store.delete_topic(&key)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no topic {key:?}")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersBody {
    subscribers: Vec<String>,
}

async fn members_change(api: &Api, key: &str, b: MembersBody, add: bool) -> ApiResult<Json<Value>> {
    path_id("key", key)?;
    if api.notify.store.topic(key)?.is_none() {
        return Err(ApiError::not_found(format!("no topic {key:?}")));
    }
    if b.subscribers.is_empty() || b.subscribers.len() > 10_000 {
        return Err(ApiError::invalid(Invalid::new(
            "subscribers",
            "1 to 10000 subscriber ids",
        )));
    }
    for (i, s) in b.subscribers.iter().enumerate() {
        path_id(&format!("subscribers[{i}]"), s)?;
    }
    let store = api.notify.store.clone();
    let key2 = key.to_string();
    let n = b.subscribers.len();
    tokio::task::spawn_blocking(move || store.set_members(&key2, &b.subscribers, add))
        .await
        .map_err(ApiError::unavailable)??;
    Ok(Json(json!({ if add { "added" } else { "removed" }: n })))
}

async fn members_add(
    State(api): State<Api>,
    Path(key): Path<String>,
    Body(b, _): Body<MembersBody>,
) -> ApiResult<Json<Value>> {
    members_change(&api, &key, b, true).await
}

async fn members_remove(
    State(api): State<Api>,
    Path(key): Path<String>,
    Body(b, _): Body<MembersBody>,
) -> ApiResult<Json<Value>> {
    members_change(&api, &key, b, false).await
}

async fn members_list(
    State(api): State<Api>,
    Path(key): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    path_id("key", &key)?;
    if api.notify.store.topic(&key)?.is_none() {
        return Err(ApiError::not_found(format!("no topic {key:?}")));
    }
    let n = limit(q.limit)?;
    let mut items = api.notify.store.members(&key, q.cursor.as_deref(), n + 1)?;
    let next = if items.len() > n {
        items.truncate(n);
        items.last().cloned()
    } else {
        None
    };
    Ok(Json(json!({"items": items, "next_cursor": next})))
}

// --- workflows -----------------------------------------------------------------------------

async fn workflows_list(State(api): State<Api>) -> ApiResult<Json<Value>> {
    let reg = api.notify.registry();
    let list: Vec<Value> = reg
        .workflows
        .values()
        .map(|w| {
            json!({
                "id": w.def.id,
                "name": w.def.name,
                "class": w.def.class,
                "critical": w.def.critical,
                "steps": w.def.steps.len(),
                "source": if reg.from_file.contains(&w.def.id) { "file" } else { "api" },
            })
        })
        .collect();
    Ok(Json(json!({"workflows": list})))
}

async fn workflow_get(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkflowDef>> {
    path_id("id", &id)?;
    api.notify
        .registry()
        .workflows
        .get(&id)
        .map(|w| Json(w.def.clone()))
        .ok_or_else(|| ApiError::not_found(format!("no workflow {id:?}")))
}

fn file_owned(api: &Api, id: &str) -> ApiResult<()> {
    if api.notify.registry().from_file.contains(id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "defined-in-config-file",
            format!("workflow {id:?} is defined in the config file; change it there"),
        ));
    }
    Ok(())
}

/// Recompiles the registry from the file's workflows and the store's.
fn reload(api: &Api) -> ApiResult<()> {
    let reg = api.notify.registry();
    let file: Vec<WorkflowDef> = reg
        .workflows
        .values()
        .filter(|w| reg.from_file.contains(&w.def.id))
        .map(|w| w.def.clone())
        .collect();
    let saved = api.notify.store.workflows()?;
    let new = crate::registry(&file, saved).map_err(ApiError::invalid)?;
    api.notify.set_registry(new);
    Ok(())
}

async fn workflow_put(
    State(api): State<Api>,
    Path(id): Path<String>,
    Body(def, _): Body<WorkflowDef>,
) -> ApiResult<Json<WorkflowDef>> {
    path_id("id", &id)?;
    if def.id != id {
        return Err(ApiError::invalid(Invalid::new(
            "id",
            "differs from the id in the path",
        )));
    }
    file_owned(&api, &id)?;
    // Compile first: a workflow that does not compile is refused and nothing is stored.
    Workflow::compile(def.clone(), &crate::render::check_syntax)?;
    for ch in channels_of(&def) {
        if api.notify.providers.of(ch).next().is_none() {
            return Err(ApiError::invalid(Invalid::new(
                "steps",
                format!("no {ch} provider is configured"),
            )));
        }
    }
    api.notify.store.put_workflow(&def)?;
    reload(&api)?;
    Ok(Json(def))
}

fn channels_of(def: &WorkflowDef) -> Vec<Channel> {
    fn walk(steps: &[crate::workflow::Step], out: &mut Vec<Channel>) {
        use crate::workflow::Step;
        for s in steps {
            match s {
                Step::Email(_) => out.push(Channel::Email),
                Step::Sms(_) => out.push(Channel::Sms),
                Step::Push(_) => out.push(Channel::Push),
                Step::Chat(_) => out.push(Channel::Chat),
                Step::Branch {
                    then, otherwise, ..
                } => {
                    walk(then, out);
                    walk(otherwise, out);
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(&def.steps, &mut out);
    out.sort();
    out.dedup();
    out
}

async fn workflow_delete(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    path_id("id", &id)?;
    file_owned(&api, &id)?;
    if !api.notify.store.delete_workflow(&id)? {
        return Err(ApiError::not_found(format!("no workflow {id:?}")));
    }
    reload(&api)?;
    Ok(StatusCode::NO_CONTENT)
}

// --- messages, activity, stats ---------------------------------------------------------------

async fn message_get(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let Some(mid) = MsgId::parse(&id) else {
        return Err(ApiError::not_found("no such message"));
    };
    let Some(mut m) = api.notify.store.message(mid)? else {
        return Err(ApiError::not_found("no such message"));
    };
    let activity = api.notify.store.activity(mid)?;
    m.trail = Vec::new();
    let mut v = json!(m);
    v["activity"] = json!(activity);
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityQuery {
    workflow: Option<String>,
    subscriber: Option<String>,
    status: Option<String>,
    channel: Option<String>,
    trigger: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn activity(
    State(api): State<Api>,
    Query(q): Query<ActivityQuery>,
) -> ApiResult<Json<Value>> {
    let status = match &q.status {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::invalid(Invalid::new(
                "status",
                "queued, running, delayed, digesting, digested, throttled, skipped, sending, sent, failed or dead",
            ))
        })?),
    };
    let channel = match &q.channel {
        None => None,
        Some(c) => Some(Channel::parse(c).ok_or_else(|| {
            ApiError::invalid(Invalid::new("channel", "email, sms, push or chat"))
        })?),
    };
    let trigger = match &q.trigger {
        None => None,
        Some(t) => Some(
            t.parse::<u64>()
                .map_err(|_| ApiError::invalid(Invalid::new("trigger", "a trigger id")))?,
        ),
    };
    let cursor = match &q.cursor {
        None => None,
        Some(c) => Some(MsgId::parse(c).ok_or_else(|| {
            ApiError::invalid(Invalid::new("cursor", "the next_cursor of a previous page"))
        })?),
    };
    let f = ActivityFilter {
        workflow: q.workflow,
        subscriber: q.subscriber,
        status,
        trigger,
        channel,
    };
    let page = api
        .notify
        .store
        .activity_feed(&f, cursor, limit(q.limit)?)?;
    Ok(Json(json!(page)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    from: Option<String>,
    to: Option<String>,
    workflow: Option<String>,
}

/// Days since the epoch of `YYYY-MM-DD`.
fn day_of(field: &str, s: &str) -> ApiResult<u32> {
    let bad = || ApiError::invalid(Invalid::new(field, "a date YYYY-MM-DD"));
    let mut it = s.split('-');
    let (Some(y), Some(m), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    let (y, m, d): (i64, i64, i64) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) as u32)
}

/// `YYYY-MM-DD` of days since the epoch.
pub fn date_of(days: u32) -> String {
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

async fn stats(State(api): State<Api>, Query(q): Query<StatsQuery>) -> ApiResult<Json<Value>> {
    let today = (now_ms() / 86_400_000) as u32;
    let to = match &q.to {
        Some(s) => day_of("to", s)?,
        None => today,
    };
    let from = match &q.from {
        Some(s) => day_of("from", s)?,
        None => to.saturating_sub(29),
    };
    if from > to {
        return Err(ApiError::invalid(Invalid::new("from", "on or before `to`")));
    }
    api.notify.store.flush_stats()?;
    let rows: Vec<Value> = api
        .notify
        .store
        .stats(from, to)?
        .into_iter()
        .filter(|(k, _)| q.workflow.as_ref().is_none_or(|w| &k.workflow == w))
        .map(|(k, n)| {
            json!({
                "date": date_of(k.day),
                "workflow": k.workflow,
                "channel": k.channel,
                "provider": k.provider,
                "outcome": k.outcome,
                "count": n,
            })
        })
        .collect();
    Ok(Json(
        json!({"from": date_of(from), "to": date_of(to), "rows": rows}),
    ))
}

async fn providers(State(api): State<Api>) -> Json<Value> {
    let now = now_ms();
    let list: Vec<Value> = api
        .notify
        .providers
        .all()
        .iter()
        .map(|p| {
            let c = &p.config;
            json!({
                "id": c.id,
                "type": c.kind,
                "channel": c.channel(),
                "priority": c.priority,
                "batch": c.batch(),
                "rate_limit": c.rate_limit,
                "concurrency": c.concurrency,
                "timeout_ms": c.timeout.0,
                "queue": api.notify.send_queue(c),
                "breaker": {"state": p.breaker.state(now), "opens": p.breaker.opens()},
            })
        })
        .collect();
    Json(json!({"providers": list}))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    #[serde(default)]
    provider: Option<String>,
}

async fn redrive(State(api): State<Api>, Body(b, _): Body<RedriveBody>) -> ApiResult<Json<Value>> {
    let n = &api.notify;
    if let Some(p) = &b.provider {
        if n.providers.get(p).is_none() {
            return Err(ApiError::invalid(Invalid::new(
                "provider",
                format!("no provider {p:?}"),
            )));
        }
    }
    let deliveries = n
        .redrive(b.provider.as_deref())
        .await
        .map_err(|e| ApiError::unavailable(format!("redrive: {}", e.message)))?;
    // Jobs Weir itself gave up on (a storage failure on their last attempt): run again.
    let mut total = 0u64;
    let mut per = serde_json::Map::new();
    for p in n.providers.all() {
        if b.provider.as_ref().is_some_and(|x| x != &p.config.id) {
            continue;
        }
        let c = n
            .weir
            .retry_jobs(&n.send_queue(&p.config), "dead")
            .await
            .map_err(|e| ApiError::unavailable(format!("Weir: {e}")))?;
        total += c;
        per.insert(p.config.id.clone(), json!(c));
    }
    Ok(Json(
        json!({"redriven_deliveries": deliveries, "redriven_jobs": total, "by_provider": per}),
    ))
}

async fn ready(State(api): State<Api>) -> Response {
    if api.notify.weir.ready().await {
        Json(json!({"status": "ready"})).into_response()
    } else {
        ApiError::unavailable("Weir is not ready").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::{date_of, day_of};

    #[test]
    fn dates_round_trip() {
        for s in ["1970-01-01", "2026-12-02", "2028-02-29", "2100-03-01"] {
            let d = day_of("from", s).expect("a date");
            assert_eq!(date_of(d), s);
        }
        assert_eq!(day_of("from", "1970-01-02").expect("date"), 1);
        assert!(day_of("from", "2026-13-01").is_err());
        assert!(day_of("from", "yesterday").is_err());
    }
}
