//! End-to-end tests of the HTTP contract against the real `weir serve` binary.

#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod common;

use common::{raw, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use weir_api::{AckItem, FailItem, NewJobBody};

struct Http {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Http {
    fn new(base: &str) -> Self {
        Http {
            // No connection reuse: after refusing an oversized body the server closes the
            // connection without reading the rest, which a pooled connection would trip on.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            base: base.to_string(),
            token: None,
        }
    }

    fn with_token(base: &str, token: &str) -> Self {
        Http {
            token: Some(token.into()),
            ..Http::new(base)
        }
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.bytes().await.unwrap().to_vec())
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
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let h = Http::new(&server.base);

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
    assert!(
        page.contains("fetch(\"/v1/cache\""),
        "the dashboard shows the cache tiers"
    );

    // Large replies are gzipped for clients that ask.
    let gz = reqwest::Client::builder().gzip(false).build().unwrap();
    let resp = gz
        .get(format!("{}/v1/openapi.json", server.base))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_problem_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[("WEIR_MAX_BODY_BYTES", "2097152")]);
    let h = Http::new(&server.base);
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
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()], &[]);
    let anon = Http::new(&server.base);
    let admin = Http::with_token(&server.base, "admin-0123456789abcdef");
    let ci = Http::with_token(&server.base, "ci-0123456789abcdef");
    let viewer = Http::with_token(&server.base, "viewer-0123456789abcdef");
    let wrong = Http::with_token(&server.base, "admin-0123456789abcdeX");
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

#[test]
fn without_tokens_a_public_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_at_once_when_a_job_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let client = server.client();
    let waiter = {
        let c = client.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let jobs = c
                .fetch(&["wake".to_string()], 1, 20_000, "t")
                .await
                .unwrap();
            (jobs, t.elapsed())
        })
    };
    // Wait until the server reports the fetch as waiting (a signal, not a guess).
    let h = Http::new(&server.base);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, m) = h.raw(Method::GET, "/metrics", None, None).await;
        if String::from_utf8_lossy(&m).contains("weir_fetch_waiting 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the fetch never started waiting");
        tokio::task::yield_now().await;
    }
    let sent = Instant::now();
    client
        .enqueue(vec![NewJobBody::new("wake", "k", raw(json!({"hello": 1})))])
        .await
        .unwrap();
    let (jobs, _) = waiter.await.unwrap();
    let woke_after = sent.elapsed();
    assert_eq!(jobs.len(), 1);
    // Below the store's 1 s fallback nap: woken by the enqueue, not by looking again.
    assert!(
        woke_after < Duration::from_millis(500),
        "woken {woke_after:?} after the enqueue"
    );
    // The worker completes it through the SDK's client calls.
    let r = client
        .ack(vec![AckItem {
            id: jobs[0].id,
            lease_id: jobs[0].lease_id,
            result: None,
        }])
        .await
        .unwrap();
    assert_eq!(r.acked, 1);
    let r = client
        .fail(vec![FailItem {
            id: jobs[0].id,
            lease_id: jobs[0].lease_id,
            error: "late".into(),
            retry: true,
        }])
        .await
        .unwrap();
    assert!(
        matches!(
            r.rejected[0].reason.as_str(),
            "lease-expired" | "lease-mismatch"
        ),
        "a completed job's lease is gone: {:?}",
        r.rejected[0]
    );
}
