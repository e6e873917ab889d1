//! The HTTP contract, route by route, through the router without sockets (`app()` with
//! `oneshot`): every route of DESIGN.md's contract, a table of bad input each answered with
//! its problem and no change, and token scopes. The real binary's own tests (a smoke test of
//! a long poll through the SDK, and the CLI's refusals) live in `crates/weir/tests/api.rs`.

#![allow(clippy::unwrap_used, clippy::type_complexity)]

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;
use weir_server::config::ServerConfig;
use weir_server::{app, AppState};
use weir_store::{EmbeddedOptions, EmbeddedStore, Store};

/// A server over a fresh embedded store in a temporary directory.
struct Fixture {
    _dir: tempfile::TempDir,
    router: Router,
}

async fn setup(config: ServerConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("data"), EmbeddedOptions::default()).unwrap();
    let cache = weir_cache::Cache::open(weir_cache::CacheConfig {
        dir: Some(dir.path().join("cache")),
        ..config.cache.clone()
    })
    .await
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    weir_server::apply_queue_settings(&*store, &config)
        .await
        .unwrap();
    let router = app(AppState::new(store, cache, config));
    Fixture { _dir: dir, router }
}

/// A client of the router, with or without a bearer token.
struct Http {
    router: Router,
    token: Option<String>,
}

impl Http {
    fn new(router: &Router) -> Self {
        Http {
            router: router.clone(),
            token: None,
        }
    }

    fn with_token(router: &Router, token: &str) -> Self {
        Http {
            token: Some(token.into()),
            ..Http::new(router)
        }
    }

    async fn send(&self, mut req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        if let Some(t) = &self.token {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes.to_vec())
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        self.send(req).await
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (s, _, b) = self
            .raw(
                method,
                path,
                body.map(|v| v.to_string().into_bytes()),
                Some("application/json"),
            )
            .await;
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    /// Everything a client can observe of the server's jobs and queues.
    async fn snapshot(&self) -> Value {
        let (_, queues) = self.call(Method::GET, "/v1/queues", None).await;
        let (_, jobs) = self.call(Method::GET, "/v1/jobs?limit=1000", None).await;
        let mut queues = queues;
        // Latency percentiles move with reads, not with state; leave them out.
        if let Some(list) = queues["queues"].as_array_mut() {
            for q in list {
                for k in [
                    "wait_ms_p50",
                    "wait_ms_p99",
                    "run_ms_p50",
                    "run_ms_p99",
                    "oldest_waiting_ms",
                ] {
                    q.as_object_mut().map(|o| o.remove(k));
                }
            }
        }
        json!({ "queues": queues, "jobs": jobs })
    }
}

fn job(queue: &str, n: u64) -> Value {
    json!({ "queue": queue, "kind": "test", "payload": { "n": n } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_contract() {
    let fx = setup(ServerConfig::default()).await;
    let h = Http::new(&fx.router);

    // Enqueue: 201 with ids; a live unique key returns the first id.
    let (s, r) = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({ "jobs": [job("mail", 1), job("mail", 2),
                { "queue": "mail", "kind": "test", "payload": {"n": 3}, "unique_key": "u1" }] })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let ids: Vec<u64> = serde_json::from_value(r["ids"].clone()).unwrap();
    assert_eq!(ids.len(), 3);
    let (_, again) = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({ "jobs": [{ "queue": "mail", "kind": "test", "payload": {}, "unique_key": "u1" }] })),
        )
        .await;
    assert_eq!(
        again["ids"][0], ids[2],
        "a live unique key returns the existing id"
    );

    // Fetch under a lease, heartbeat with progress, ack with a result.
    let (s, f) = h
        .call(
            Method::POST,
            "/v1/fetch",
            Some(json!({ "queues": ["mail"], "max": 2, "worker": "t" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let got = f["jobs"].as_array().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["payload"], json!({ "n": 1 }));
    assert_eq!(got[0]["attempt"], 1);
    let (id0, lease0) = (
        got[0]["id"].as_u64().unwrap(),
        got[0]["lease_id"].as_u64().unwrap(),
    );
    let (id1, lease1) = (
        got[1]["id"].as_u64().unwrap(),
        got[1]["lease_id"].as_u64().unwrap(),
    );
    let (s, hb) = h
        .call(
            Method::POST,
            &format!("/v1/jobs/{id0}/heartbeat"),
            Some(json!({ "lease_id": lease0, "progress": { "pct": 50 } })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        hb["lease_deadline_ms"].as_u64().unwrap() >= got[0]["lease_deadline_ms"].as_u64().unwrap()
    );
    let (s, a) = h
        .call(
            Method::POST,
            "/v1/ack",
            Some(
                json!({ "acks": [{ "id": id0, "lease_id": lease0, "result": { "sent": true } },
                                  { "id": id1, "lease_id": lease1 + 1 }] }),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(a["acked"], 1);
    assert_eq!(a["rejected"][0]["id"], id1);
    assert_eq!(a["rejected"][0]["reason"], "lease-mismatch");
    let (_, j0) = h.call(Method::GET, &format!("/v1/jobs/{id0}"), None).await;
    assert_eq!(j0["state"], "completed");
    assert_eq!(j0["result"], json!({ "sent": true }));
    assert_eq!(j0["progress"], json!({ "pct": 50 }));

    // Fail without retry: dead at once, with the error kept; retry brings it back.
    let (_, f) = h
        .call(
            Method::POST,
            "/v1/fail",
            Some(json!({ "fails": [{ "id": id1, "lease_id": lease1, "error": "smtp down", "retry": false }] })),
        )
        .await;
    assert_eq!(f["acked"], 1);
    let (_, j1) = h.call(Method::GET, &format!("/v1/jobs/{id1}"), None).await;
    assert_eq!(j1["state"], "dead");
    assert_eq!(j1["errors"][0]["message"], "smtp down");
    let (s, j1) = h
        .call(Method::POST, &format!("/v1/jobs/{id1}/retry"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j1["state"], "waiting");

    // Cancel a waiting job; a second cancel is a conflict.
    let (s, c) = h
        .call(Method::POST, &format!("/v1/jobs/{}/cancel", ids[2]), None)
        .await;
    assert_eq!(
        (s, c["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (s, c) = h
        .call(Method::POST, &format!("/v1/jobs/{}/cancel", ids[2]), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(c["type"], "urn:weir:problem:invalid-state");

    // Listing with filters and a cursor.
    let more: Vec<Value> = (10..25).map(|n| job("list", n)).collect();
    h.call(Method::POST, "/v1/jobs", Some(json!({ "jobs": more })))
        .await;
    let mut seen = Vec::new();
    let mut cursor: Option<u64> = None;
    loop {
        let path = match cursor {
            Some(c) => format!("/v1/jobs?queue=list&state=waiting&limit=4&cursor={c}"),
            None => "/v1/jobs?queue=list&state=waiting&limit=4".to_string(),
        };
        let (s, page) = h.call(Method::GET, &path, None).await;
        assert_eq!(s, StatusCode::OK);
        for j in page["jobs"].as_array().unwrap() {
            seen.push(j["payload"]["n"].as_u64().unwrap());
        }
        match page["next_cursor"].as_u64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, (10..25).collect::<Vec<_>>());

    // Queue admin: configure, pause/resume, counts, purge.
    let (s, q) = h
        .call(
            Method::PUT,
            "/v1/queues/list",
            Some(json!({ "order": "smallest_cost", "retention": { "completed_max": 10 } })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert_eq!(q["config"]["order"], "smallest_cost");
    assert_eq!(q["config"]["retention"]["completed_max"], 10);
    assert_eq!(
        q["config"]["max_attempts"], 25,
        "keys not named keep their values"
    );
    let (_, q) = h.call(Method::POST, "/v1/queues/list/pause", None).await;
    assert_eq!(q["paused"], true);
    let (_, f) = h
        .call(
            Method::POST,
            "/v1/fetch",
            Some(json!({ "queues": ["list"], "max": 5 })),
        )
        .await;
    assert_eq!(
        f["jobs"].as_array().unwrap().len(),
        0,
        "a paused queue hands out nothing"
    );
    let (_, q) = h.call(Method::POST, "/v1/queues/list/resume", None).await;
    assert_eq!(q["paused"], false);
    assert_eq!(q["counts"]["waiting"], 15);
    assert!(q["oldest_waiting_ms"].is_u64());
    let (_, qs) = h.call(Method::GET, "/v1/queues", None).await;
    let names: Vec<&str> = qs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["mail", "list"]);
    let (s, p) = h.call(Method::POST, "/v1/queues/list/purge", None).await;
    assert_eq!((s, p["deleted"].as_u64()), (StatusCode::OK, Some(15)));

    // System routes.
    let (s, _) = h.call(Method::GET, "/health", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.call(Method::GET, "/ready", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, doc) = h.call(Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/v1/jobs",
        "/v1/fetch",
        "/v1/ack",
        "/v1/fail",
        "/v1/jobs/{id}/heartbeat",
        "/v1/queues/{name}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
    let (s, _, body) = h.raw(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    for needle in [
        "weir_queue_jobs{queue=\"mail\",state=\"completed\"} 1",
        "weir_jobs_enqueued_total{queue=\"list\"} 15",
        "weir_jobs_dead_total{queue=\"mail\"} 1",
        "weir_job_wait_seconds_count{queue=\"mail\"}",
        "weir_queue_oldest_waiting_seconds{queue=\"mail\"}",
        "weir_http_requests_total{method=\"POST\",route=\"/v1/jobs\",status=\"201\"}",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}");
    }
    // The store's group commit: every durable call above went through at least one commit,
    // and each commit wrote at least one record.
    let counter = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
    };
    let commits = counter("weir_store_commits_total").expect("commits in /metrics");
    let written = counter("weir_store_records_written_total").expect("records in /metrics");
    assert!(
        commits > 0 && written >= commits,
        "{commits} commits, {written} records"
    );
    assert!(counter("weir_store_records_cancelled_total").is_some());
    let (s, _, page) = h.raw(Method::GET, "/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let page = String::from_utf8_lossy(&page);
    assert!(page.contains("<title>Weir</title>"));
    assert!(page.contains(r#"<script src="/dashboard/app.js" defer></script>"#));
    let (s, headers, script) = h.raw(Method::GET, "/dashboard/app.js", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    let script = String::from_utf8_lossy(&script);
    assert!(
        script.contains(r#"api("GET", "/v1/cache")"#),
        "the dashboard shows the cache tiers"
    );
    assert!(
        !script.contains("innerHTML") && !script.contains("insertAdjacentHTML"),
        "the page never renders client data as HTML"
    );
    let (s, headers, _) = h.raw(Method::GET, "/dashboard/app.css", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));

    // Large replies are gzipped for clients that ask.
    let req = Request::get("/v1/openapi.json")
        .header("accept-encoding", "gzip")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = h.send(req).await;
    assert_eq!(
        headers.get("content-encoding").map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_problem_and_changes_nothing() {
    let fx = setup(ServerConfig {
        max_body_bytes: 2_097_152,
        ..ServerConfig::default()
    })
    .await;
    let h = Http::new(&fx.router);
    let (_, r) = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({ "jobs": [job("q", 1), job("q", 2)] })),
        )
        .await;
    let waiting = r["ids"][1].as_u64().unwrap();
    let (_, f) = h
        .call(
            Method::POST,
            "/v1/fetch",
            Some(json!({ "queues": ["q"], "max": 1 })),
        )
        .await;
    let active = f["jobs"][0]["id"].as_u64().unwrap();
    let lease = f["jobs"][0]["lease_id"].as_u64().unwrap();

    let big_payload = format!(
        r#"{{"jobs":[{{"queue":"q","kind":"k","payload":"{}"}}]}}"#,
        "x".repeat(1_100_000)
    );
    let huge_body = format!(
        r#"{{"jobs":[{{"queue":"q","kind":"k","payload":"{}"}}]}}"#,
        "x".repeat(3_000_000)
    );
    let j = |v: Value| Some(v.to_string().into_bytes());
    let cases: Vec<(
        &str,
        Method,
        String,
        Option<Vec<u8>>,
        Option<&str>,
        u16,
        &str,
    )> = vec![
        (
            "malformed JSON",
            Method::POST,
            "/v1/jobs".into(),
            Some(b"{\"jobs\":[".to_vec()),
            Some("application/json"),
            400,
            "malformed-json",
        ),
        (
            "not JSON at all",
            Method::POST,
            "/v1/jobs".into(),
            Some(b"hello".to_vec()),
            None,
            400,
            "malformed-json",
        ),
        (
            "wrong content type",
            Method::POST,
            "/v1/jobs".into(),
            j(json!({"jobs":[job("q",3)]})),
            Some("text/plain"),
            415,
            "unsupported-media-type",
        ),
        (
            "missing payload",
            Method::POST,
            "/v1/jobs".into(),
            j(json!({"jobs":[{"queue":"q","kind":"k"}]})),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "wrong type",
            Method::POST,
            "/v1/jobs".into(),
            j(json!({"jobs":[{"queue":"q","kind":"k","payload":{},"priority":"high"}]})),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "unknown field",
            Method::POST,
            "/v1/jobs".into(),
            j(json!({"jobs":[{"queue":"q","kind":"k","payload":{},"delay":5}]})),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "empty batch",
            Method::POST,
            "/v1/jobs".into(),
            j(json!({"jobs":[]})),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "bad queue name",
            Method::POST,
            "/v1/jobs".into(),
            j(json!({"jobs":[job("has space",1)]})),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "absurd delay",
            Method::POST,
            "/v1/jobs".into(),
            j(
                json!({"jobs":[{"queue":"q","kind":"k","payload":{},"delay_ms":1_000_000_000_000_000u64}]}),
            ),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "negative delay",
            Method::POST,
            "/v1/jobs".into(),
            j(json!({"jobs":[{"queue":"q","kind":"k","payload":{},"delay_ms":-5}]})),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "zero timeout",
            Method::POST,
            "/v1/jobs".into(),
            j(json!({"jobs":[{"queue":"q","kind":"k","payload":{},"timeout_ms":0}]})),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "one bad job refuses the batch",
            Method::POST,
            "/v1/jobs".into(),
            j(json!({"jobs":[job("q",7), {"queue":"q","kind":"","payload":{}}]})),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "oversized payload",
            Method::POST,
            "/v1/jobs".into(),
            Some(big_payload.into_bytes()),
            Some("application/json"),
            413,
            "payload-too-large",
        ),
        (
            "oversized body",
            Method::POST,
            "/v1/jobs".into(),
            Some(huge_body.into_bytes()),
            Some("application/json"),
            413,
            "payload-too-large",
        ),
        (
            "fetch without queues",
            Method::POST,
            "/v1/fetch".into(),
            j(json!({"queues":[],"max":1})),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "fetch max 0",
            Method::POST,
            "/v1/fetch".into(),
            j(json!({"queues":["q"],"max":0})),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "fetch wait too long",
            Method::POST,
            "/v1/fetch".into(),
            j(json!({"queues":["q"],"max":1,"wait_ms":3_600_000})),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "ack missing lease",
            Method::POST,
            "/v1/ack".into(),
            j(json!({"acks":[{"id":active}]})),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "heartbeat stale lease",
            Method::POST,
            format!("/v1/jobs/{active}/heartbeat"),
            j(json!({"lease_id": lease ^ 1})),
            Some("application/json"),
            409,
            "lease-mismatch",
        ),
        (
            "heartbeat unknown job",
            Method::POST,
            "/v1/jobs/999999/heartbeat".into(),
            j(json!({"lease_id": 1})),
            Some("application/json"),
            404,
            "job-not-found",
        ),
        (
            "unknown job",
            Method::GET,
            "/v1/jobs/999999".into(),
            None,
            None,
            404,
            "job-not-found",
        ),
        (
            "job id not a number",
            Method::GET,
            "/v1/jobs/abc".into(),
            None,
            None,
            422,
            "invalid-input",
        ),
        (
            "unknown state filter",
            Method::GET,
            "/v1/jobs?state=sleeping".into(),
            None,
            None,
            422,
            "invalid-input",
        ),
        (
            "limit out of range",
            Method::GET,
            "/v1/jobs?limit=0".into(),
            None,
            None,
            422,
            "invalid-input",
        ),
        (
            "unknown queue",
            Method::GET,
            "/v1/queues/nope".into(),
            None,
            None,
            404,
            "queue-not-found",
        ),
        (
            "purge unknown queue",
            Method::POST,
            "/v1/queues/nope/purge".into(),
            None,
            None,
            404,
            "queue-not-found",
        ),
        (
            "bad queue config",
            Method::PUT,
            "/v1/queues/q".into(),
            j(json!({"max_attempts":0})),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "unknown queue setting",
            Method::PUT,
            "/v1/queues/q".into(),
            j(json!({"max_atempts":3})),
            Some("application/json"),
            422,
            "invalid-input",
        ),
        (
            "retry a waiting job",
            Method::POST,
            format!("/v1/jobs/{waiting}/retry"),
            None,
            None,
            409,
            "invalid-state",
        ),
        (
            "cancel unknown job",
            Method::POST,
            "/v1/jobs/999999/cancel".into(),
            None,
            None,
            404,
            "job-not-found",
        ),
        (
            "no such route",
            Method::GET,
            "/v2/jobs".into(),
            None,
            None,
            404,
            "not-found",
        ),
        (
            "wrong method",
            Method::DELETE,
            "/v1/jobs".into(),
            None,
            None,
            405,
            "method-not-allowed",
        ),
    ];
    let before = h.snapshot().await;
    for (name, method, path, body, ct, status, slug) in cases {
        let (s, headers, b) = h.raw(method, &path, body, ct).await;
        assert_eq!(
            s.as_u16(),
            status,
            "{name}: {}",
            String::from_utf8_lossy(&b[..b.len().min(300)])
        );
        assert_eq!(
            headers.get("content-type").map(|v| v.to_str().unwrap()),
            Some("application/problem+json"),
            "{name}"
        );
        let p: weir_api::Problem = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            p.type_,
            format!("urn:weir:problem:{slug}"),
            "{name}: {}",
            p.detail
        );
        assert_eq!(p.status, status, "{name}");
        assert!(!p.detail.is_empty(), "{name}");
        assert_eq!(h.snapshot().await, before, "{name} changed something");
    }
    // A stale ack inside a batch is refused item by item and changes nothing either.
    let (_, r) = h
        .call(
            Method::POST,
            "/v1/ack",
            Some(json!({ "acks": [{ "id": active, "lease_id": lease ^ 1 }] })),
        )
        .await;
    assert_eq!(
        (r["acked"].as_u64(), r["rejected"][0]["reason"].as_str()),
        (Some(0), Some("lease-mismatch"))
    );
    assert_eq!(h.snapshot().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_scoped_by_queue_prefix_and_right() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.toml");
    std::fs::write(
        &cfg,
        r#"
[[tokens]]
name = "admin"
token = "admin-0123456789abcdef"
rights = "admin"

[[tokens]]
name = "ci"
token = "ci-0123456789abcdef"
rights = "write"
queues = ["ci."]

[[tokens]]
name = "viewer"
token = "viewer-0123456789abcdef"
rights = "read"
"#,
    )
    .unwrap();
    let config = ServerConfig::load(Some(&cfg), figment::Figment::new()).unwrap();
    let fx = setup(config).await;
    let anon = Http::new(&fx.router);
    let admin = Http::with_token(&fx.router, "admin-0123456789abcdef");
    let ci = Http::with_token(&fx.router, "ci-0123456789abcdef");
    let viewer = Http::with_token(&fx.router, "viewer-0123456789abcdef");
    let wrong = Http::with_token(&fx.router, "admin-0123456789abcdeX");
    let body = |q: &str| Some(json!({ "jobs": [job(q, 1)] }));

    let expect = |r: (StatusCode, Value), status: u16, slug: &str| {
        assert_eq!(r.0.as_u16(), status, "{}", r.1);
        if !slug.is_empty() {
            assert_eq!(r.1["type"], format!("urn:weir:problem:{slug}"));
        }
    };
    expect(
        anon.call(Method::POST, "/v1/jobs", body("ci.build")).await,
        401,
        "unauthorized",
    );
    expect(
        wrong.call(Method::POST, "/v1/jobs", body("ci.build")).await,
        401,
        "unauthorized",
    );
    expect(
        viewer
            .call(Method::POST, "/v1/jobs", body("ci.build"))
            .await,
        403,
        "forbidden",
    );
    expect(
        ci.call(Method::POST, "/v1/jobs", body("prod.deploy")).await,
        403,
        "forbidden",
    );
    expect(
        ci.call(Method::POST, "/v1/jobs", body("ci.build")).await,
        201,
        "",
    );
    expect(
        admin
            .call(Method::POST, "/v1/jobs", body("prod.deploy"))
            .await,
        201,
        "",
    );
    expect(
        ci.call(
            Method::POST,
            "/v1/fetch",
            Some(json!({"queues":["prod.deploy"]})),
        )
        .await,
        403,
        "forbidden",
    );
    expect(
        ci.call(Method::POST, "/v1/queues/ci.build/pause", None)
            .await,
        403,
        "forbidden",
    );
    expect(
        admin
            .call(Method::POST, "/v1/queues/ci.build/pause", None)
            .await,
        200,
        "",
    );
    expect(
        ci.call(Method::GET, "/v1/jobs", None).await,
        403,
        "forbidden",
    );
    expect(
        ci.call(Method::GET, "/v1/jobs?queue=ci.build", None).await,
        200,
        "",
    );
    expect(viewer.call(Method::GET, "/v1/jobs", None).await, 200, "");
    // A job in a queue outside the scope cannot be read, cancelled or acked.
    let (_, page) = admin
        .call(Method::GET, "/v1/jobs?queue=prod.deploy", None)
        .await;
    let prod = page["jobs"][0]["id"].as_u64().unwrap();
    expect(
        ci.call(Method::GET, &format!("/v1/jobs/{prod}"), None)
            .await,
        403,
        "forbidden",
    );
    expect(
        ci.call(Method::POST, &format!("/v1/jobs/{prod}/cancel"), None)
            .await,
        403,
        "forbidden",
    );
    expect(
        ci.call(
            Method::POST,
            "/v1/ack",
            Some(json!({"acks":[{"id":prod,"lease_id":1}]})),
        )
        .await,
        403,
        "forbidden",
    );
    // Listing queues shows only those in scope.
    let (_, qs) = ci.call(Method::GET, "/v1/queues", None).await;
    let names: Vec<&str> = qs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["ci.build"]);
    // Health stays open; metrics need a token.
    expect(anon.call(Method::GET, "/health", None).await, 200, "");
    let (s, _, _) = anon.raw(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = viewer.raw(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
}
