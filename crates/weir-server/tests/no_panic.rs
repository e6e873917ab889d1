//! No request can make the server fail: random bodies, built from the API's own field
//! names with values of every type and extreme sizes, sent to every route through the
//! router (no sockets), always get a 2xx or a 4xx problem, never a 5xx.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use tower::ServiceExt;
use weir_server::config::ServerConfig;
use weir_server::{app, AppState};
use weir_store::{Durability, EmbeddedOptions, EmbeddedStore, Store};

const FIELDS: &[&str] = &[
    "jobs",
    "keys",
    "max_bytes",
    "older_than_ms",
    "queue",
    "queues",
    "kind",
    "payload",
    "priority",
    "cost",
    "delay_ms",
    "run_at",
    "max_attempts",
    "backoff",
    "base_ms",
    "cap_ms",
    "timeout_ms",
    "unique_key",
    "group",
    "tags",
    "max",
    "wait_ms",
    "worker",
    "acks",
    "fails",
    "id",
    "lease_id",
    "result",
    "error",
    "retry",
    "progress",
    "order",
    "aging_ms",
    "retention",
    "completed_max",
    "paused",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(i64::MAX),
            Just(i64::MIN),
            any::<i64>(),
            0i64..5
        ]
        .prop_map(|n| json!(n)),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
        prop_oneof![
            Just("q".to_string()),
            Just(String::new()),
            "[a-z ]{0,8}",
            Just("x".repeat(600))
        ]
        .prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn route() -> impl Strategy<Value = (Method, String)> {
    let id = prop_oneof![
        Just("1".to_string()),
        Just("18446744073709551615".into()),
        Just("-1".into()),
        Just("x".into())
    ];
    let q = prop_oneof![
        Just("q".to_string()),
        Just("no%20pe".into()),
        Just("%FF".into())
    ];
    prop_oneof![
        Just((Method::POST, "/v1/jobs".to_string())),
        Just((Method::POST, "/v1/fetch".to_string())),
        Just((Method::POST, "/v1/ack".to_string())),
        Just((Method::POST, "/v1/fail".to_string())),
        id.clone()
            .prop_map(|i| (Method::POST, format!("/v1/jobs/{i}/heartbeat"))),
        id.clone()
            .prop_map(|i| (Method::POST, format!("/v1/jobs/{i}/cancel"))),
        id.clone()
            .prop_map(|i| (Method::POST, format!("/v1/jobs/{i}/retry"))),
        id.prop_map(|i| (Method::GET, format!("/v1/jobs/{i}"))),
        q.clone()
            .prop_map(|n| (Method::PUT, format!("/v1/queues/{n}"))),
        q.clone()
            .prop_map(|n| (Method::POST, format!("/v1/queues/{n}/purge"))),
        q.prop_map(|n| (Method::GET, format!("/v1/queues/{n}"))),
        "[a-z=&%0-9]{0,20}".prop_map(|s| (Method::GET, format!("/v1/jobs?{s}"))),
        cache_route(),
    ]
}

/// Cache routes with odd namespaces, keys (percent-escapes, control bytes, 2,000
/// characters) and PUT options.
fn cache_route() -> impl Strategy<Value = (Method, String)> {
    let ns = prop_oneof![
        Just("ns".to_string()),
        Just("no%20pe".into()),
        Just("%FF".into()),
        Just("n".repeat(70))
    ];
    let key = prop_oneof![
        Just("k".to_string()),
        Just("a%2Fb".into()),
        Just("%00%0A".into()),
        Just("%FF%FE".into()),
        Just("k".repeat(2000)),
        Just("invalidate".into()),
    ];
    let opts = "[a-z_=&,%0-9]{0,24}";
    let method = prop::sample::select(vec![Method::GET, Method::PUT, Method::DELETE]);
    prop_oneof![
        (method, ns.clone(), key, opts)
            .prop_map(|(m, n, k, o)| (m, format!("/v1/cache/{n}/{k}?{o}"))),
        ns.clone()
            .prop_map(|n| (Method::POST, format!("/v1/cache/{n}/invalidate"))),
        ns.prop_map(|n| (Method::POST, format!("/v1/cache/{n}/bump"))),
        Just((Method::POST, "/v1/cache/prune".to_string())),
        Just((Method::GET, "/v1/cache".to_string())),
    ]
}

#[test]
fn random_requests_never_get_a_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedOptions {
            durability: Durability::Os,
            ..Default::default()
        },
    )
    .unwrap();
    let config = ServerConfig {
        max_wait_ms: 20,
        ..Default::default()
    };
    let shared: Arc<dyn Store> = Arc::new(store);
    let cache = rt
        .block_on(weir_cache::Cache::open(weir_cache::CacheConfig {
            dir: Some(dir.path().join("cache")),
            ..Default::default()
        }))
        .unwrap();
    let router = app(AppState::new(shared, cache, config));
    // Some real jobs, so ids sometimes match something.
    rt.block_on(async {
        let body = json!({"jobs":[{"queue":"q","kind":"k","payload":{}},{"queue":"q","kind":"k","payload":1}]});
        let req = Request::post("/v1/jobs")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        assert_eq!(router.clone().oneshot(req).await.unwrap().status(), 201);
    });
    let cfg = ProptestConfig {
        cases: 600,
        ..ProptestConfig::default()
    };
    proptest!(cfg, |((method, path) in route(), body in body())| {
        let resp = rt.block_on(async {
            let req = Request::builder()
                .method(method.clone())
                .uri(&path)
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .unwrap();
            router.clone().oneshot(req).await.unwrap()
        });
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_string());
        let bytes = rt.block_on(resp.into_body().collect()).unwrap().to_bytes();
        prop_assert!(
            status.as_u16() < 500,
            "{method} {path} {:?} -> {status}: {:?}",
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&bytes)
        );
        if status.is_client_error() {
            prop_assert_eq!(ct.as_deref(), Some("application/problem+json"), "{} {}", method, path);
            let p: weir_api::Problem = serde_json::from_slice(&bytes).unwrap();
            prop_assert!(p.kind().is_some(), "unknown problem type {}", p.type_);
        }
    });
}
