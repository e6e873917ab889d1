//! Regression tests of the server's hardening (issue 14), through the router without
//! sockets: atomic queue configuration, readiness of a broken store, request deadlines, and
//! the payload nesting limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use common::call;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use weir_core::{
    AggregateRecord, BatchOutcome, Clock, FetchedJob, Job, JobFilter, JobId, JobPage, QueueConfig,
    QueueStats, Result,
};
use weir_server::config::ServerConfig;
use weir_server::{app, AppState};
use weir_store::*;

struct Fixture {
    _dir: tempfile::TempDir,
    store: EmbeddedStore,
    router: Router,
}

async fn setup(
    config: ServerConfig,
    wrap: impl FnOnce(EmbeddedStore) -> Arc<dyn Store>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(
        dir.path().join("data"),
        EmbeddedOptions {
            durability: Durability::Os,
            ..Default::default()
        },
    )
    .unwrap();
    let cache = weir_cache::Cache::open(weir_cache::CacheConfig {
        dir: Some(dir.path().join("cache")),
        ..Default::default()
    })
    .await
    .unwrap();
    let router = app(AppState::new(wrap(store.clone()), cache, config));
    Fixture {
        _dir: dir,
        store,
        router,
    }
}

/// A store whose `queue_stats` waits until two callers are in it at once: a read that takes a
/// network round trip, as it does on PostgreSQL, stretched so that two requests interleave
/// there every time. Everything else goes straight to the embedded store.
struct RoundTripReads {
    inner: EmbeddedStore,
    barrier: tokio::sync::Barrier,
}

#[async_trait]
impl Store for RoundTripReads {
    async fn job_insert_many(&self, p: JobInsertManyParams) -> Result<Vec<JobId>> {
        self.inner.job_insert_many(p).await
    }
    async fn job_fetch(&self, p: JobFetchParams) -> Result<Vec<FetchedJob>> {
        self.inner.job_fetch(p).await
    }
    async fn job_fetch_next_token(&self, queues: &[String]) -> Result<Option<u64>> {
        self.inner.job_fetch_next_token(queues).await
    }
    async fn job_heartbeat(&self, p: JobHeartbeatParams) -> Result<u64> {
        self.inner.job_heartbeat(p).await
    }
    async fn job_ack_many(&self, p: JobAckManyParams) -> Result<BatchOutcome> {
        self.inner.job_ack_many(p).await
    }
    async fn job_fail_many(&self, p: JobFailManyParams) -> Result<BatchOutcome> {
        self.inner.job_fail_many(p).await
    }
    async fn job_release(&self, p: JobReleaseParams) -> Result<()> {
        self.inner.job_release(p).await
    }
    async fn job_cancel(&self, p: JobCancelParams) -> Result<()> {
        self.inner.job_cancel(p).await
    }
    async fn job_retry(&self, p: JobRetryParams) -> Result<()> {
        self.inner.job_retry(p).await
    }
    async fn job_delete(&self, p: JobDeleteParams) -> Result<()> {
        self.inner.job_delete(p).await
    }
    async fn job_get(&self, id: JobId) -> Result<Option<Job>> {
        self.inner.job_get(id).await
    }
    async fn job_list(&self, p: JobFilter) -> Result<JobPage> {
        self.inner.job_list(p).await
    }
    async fn queue_config_set(&self, p: QueueConfigSetParams) -> Result<()> {
        self.inner.queue_config_set(p).await
    }
    async fn queue_config_update(&self, p: QueueConfigUpdateParams) -> Result<QueueConfig> {
        self.inner.queue_config_update(p).await
    }
    async fn queue_config_get(&self, name: &str) -> Result<Option<QueueConfig>> {
        self.inner.queue_config_get(name).await
    }
    async fn queue_purge(&self, p: QueuePurgeParams) -> Result<u64> {
        self.inner.queue_purge(p).await
    }
    async fn queue_delete(&self, p: QueueDeleteParams) -> Result<u64> {
        self.inner.queue_delete(p).await
    }
    async fn cron_put(&self, r: CronRecord) -> Result<CronRecord> {
        self.inner.cron_put(r).await
    }
    async fn cron_delete(&self, name: &str) -> Result<bool> {
        self.inner.cron_delete(name).await
    }
    async fn cron_list(&self) -> Result<Vec<CronRecord>> {
        self.inner.cron_list().await
    }
    async fn cron_advance(&self, name: &str, from_ms: u64, to_ms: u64) -> Result<bool> {
        self.inner.cron_advance(name, from_ms, to_ms).await
    }
    async fn queue_list(&self) -> Result<Vec<String>> {
        self.inner.queue_list().await
    }
    async fn queue_stats(&self, name: &str) -> Result<Option<QueueStats>> {
        let read = self.inner.queue_stats(name).await;
        self.barrier.wait().await;
        read
    }
    async fn aggregate_list(&self, p: AggregateListParams) -> Result<Vec<AggregateRecord>> {
        self.inner.aggregate_list(p).await
    }
    async fn maintenance_run(&self) -> Result<MaintenanceReport> {
        self.inner.maintenance_run().await
    }
    async fn health(&self) -> Result<()> {
        self.inner.health().await
    }
    fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock()
    }
}

/// Regression: `PUT /v1/queues/{q}` read the configuration, patched it and wrote it back
/// across two awaits, so of two concurrent PUTs naming different keys one was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_queue_puts_never_lose_a_key() {
    let fx = setup(ServerConfig::default(), |s| {
        Arc::new(RoundTripReads {
            inner: s,
            barrier: tokio::sync::Barrier::new(2),
        })
    })
    .await;
    for round in 1..=20u32 {
        let (a, b) = tokio::join!(
            call(
                &fx.router,
                Method::PUT,
                "/v1/queues/q",
                Some(json!({"concurrency": round}))
            ),
            call(
                &fx.router,
                Method::PUT,
                "/v1/queues/q",
                Some(json!({"weight": round}))
            ),
        );
        assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK), "{a:?} {b:?}");
        let c = fx.store.queue_config_get("q").await.unwrap().unwrap();
        assert_eq!(
            (c.concurrency, c.weight),
            (round, round),
            "round {round}: one PUT's key was lost"
        );
    }
}

/// Regression: `/ready` only listed queues, which a store broken by a failed write still
/// does: it said ready while every write was refused.
#[tokio::test]
async fn ready_says_not_ready_once_the_store_is_broken() {
    let fx = setup(ServerConfig::default(), |s| Arc::new(s)).await;
    assert_eq!(
        call(&fx.router, Method::GET, "/ready", None).await.0,
        StatusCode::OK
    );
    fx.store.inject(Fault::FailNextCommit);
    let body = json!({"jobs":[{"queue":"q","kind":"k","payload":1}]});
    let (status, p) = call(&fx.router, Method::POST, "/v1/jobs", Some(body)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    assert_eq!(p["type"], "urn:weir:problem:storage-unavailable");
    let (status, r) = call(&fx.router, Method::GET, "/ready", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{r}");
    assert_eq!(r["status"], "store failed");
    assert!(r["detail"].as_str().unwrap().contains("reopened"), "{r}");
}

/// Regression: ordinary routes had no deadline. A client that sends half a body and stalls
/// held its connection and task for good; now it gets a 503 `timeout` problem.
#[tokio::test]
async fn a_stalled_request_body_times_out_with_a_problem() {
    let fx = setup(
        ServerConfig {
            request_timeout_ms: 200,
            ..Default::default()
        },
        |s| Arc::new(s),
    )
    .await;
    let first: std::io::Result<bytes::Bytes> = Ok(bytes::Bytes::from_static(b"{\"jobs\":["));
    let stalled =
        futures::StreamExt::chain(futures::stream::iter([first]), futures::stream::pending());
    let req = Request::post("/v1/jobs")
        .header("content-type", "application/json")
        .body(Body::from_stream(stalled))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), fx.router.clone().oneshot(req))
        .await
        .expect("answered, not left hanging")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let p: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(p["type"], "urn:weir:problem:timeout");
    // A long poll may take its wait on top of the deadline.
    let started = Instant::now();
    let (status, got) = call(
        &fx.router,
        Method::POST,
        "/v1/fetch",
        Some(json!({"queues":["idle"],"max":1,"wait_ms":400})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["jobs"], json!([]));
    assert!(started.elapsed() >= Duration::from_millis(400));
}

/// Regression: a payload nested 200,000 levels deep was accepted (and handed to workers whose
/// parsers overflow on it). It gets a 422 naming the limit, and nothing is enqueued.
#[tokio::test]
async fn a_deeply_nested_payload_gets_a_422() {
    let fx = setup(ServerConfig::default(), |s| Arc::new(s)).await;
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let body = format!(r#"{{"jobs":[{{"queue":"q","kind":"k","payload":{deep}}}]}}"#);
    let req = Request::post("/v1/jobs")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = fx.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let p: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(p["type"], "urn:weir:problem:invalid-input");
    assert_eq!(p["field"], "payload");
    assert!(p["detail"].as_str().unwrap().contains("128"), "{p}");
    let page = fx.store.job_list(JobFilter::default()).await.unwrap();
    assert!(page.jobs.is_empty(), "nothing was enqueued");
}

/// Regression (issue 16): pausing, resuming or purging a queue that does not exist (a typo:
/// `weir queues resume emials`) answered 200 and created a phantom queue. Now 404, and no
/// queue appears; `PUT` still creates one.
#[tokio::test]
async fn admin_calls_on_an_unknown_queue_are_404_and_create_nothing() {
    let fx = setup(ServerConfig::default(), |s| Arc::new(s)).await;
    for action in ["pause", "resume", "purge"] {
        let (status, p) = call(
            &fx.router,
            Method::POST,
            &format!("/v1/queues/emials/{action}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action}: {p}");
        assert_eq!(p["type"], "urn:weir:problem:queue-not-found");
    }
    assert!(
        fx.store.queue_list().await.unwrap().is_empty(),
        "no phantom queue"
    );
    let (status, _) = call(
        &fx.router,
        Method::PUT,
        "/v1/queues/emails",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = call(&fx.router, Method::POST, "/v1/queues/emails/pause", None).await;
    assert_eq!((status, v["paused"].clone()), (StatusCode::OK, json!(true)));
}

/// Regression (issue 16): `POST /v1/fail` answered `{"acked": 1}`. It now says `failed`, and
/// keeps `acked` for clients written before.
#[tokio::test]
async fn a_fail_reply_counts_what_failed() {
    let fx = setup(ServerConfig::default(), |s| Arc::new(s)).await;
    let body = json!({"jobs":[{"queue":"q","kind":"k","payload":1}]});
    assert_eq!(
        call(&fx.router, Method::POST, "/v1/jobs", Some(body))
            .await
            .0,
        StatusCode::CREATED
    );
    let (_, got) = call(
        &fx.router,
        Method::POST,
        "/v1/fetch",
        Some(json!({"queues":["q"],"max":1})),
    )
    .await;
    let j = &got["jobs"][0];
    let fail = json!({"fails":[{"id": j["id"], "lease_id": j["lease_id"], "error": "no"}]});
    let (status, r) = call(&fx.router, Method::POST, "/v1/fail", Some(fail)).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        (r["failed"].clone(), r["acked"].clone()),
        (json!(1), json!(1))
    );
    let ack = json!({"acks":[{"id": j["id"], "lease_id": j["lease_id"]}]});
    let (_, r) = call(&fx.router, Method::POST, "/v1/ack", Some(ack)).await;
    assert!(
        r.get("failed").is_none(),
        "an ack reply has no `failed`: {r}"
    );
}

/// Issue 16: `DELETE /v1/jobs/{id}` and `DELETE /v1/queues/{q}`, and the bulk actions the
/// dashboard offers (retry every dead job, delete finished jobs by state). Refusals change
/// nothing.
#[tokio::test]
async fn jobs_and_queues_are_deleted_and_bulk_actions_apply_to_one_state() {
    let fx = setup(ServerConfig::default(), |s| Arc::new(s)).await;
    let r = &fx.router;
    let jobs: Vec<Value> = (0..6)
        .map(|n| json!({"queue":"mail","kind":"k","payload":n,"max_attempts":1}))
        .collect();
    let (status, got) = call(r, Method::POST, "/v1/jobs", Some(json!({ "jobs": jobs }))).await;
    assert_eq!(status, StatusCode::CREATED, "{got}");
    let ids: Vec<u64> = got["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // Four run: two die, one completes, one stays active.
    let (_, got) = call(
        r,
        Method::POST,
        "/v1/fetch",
        Some(json!({"queues":["mail"],"max":4})),
    )
    .await;
    let leased: Vec<&Value> = got["jobs"].as_array().unwrap().iter().collect();
    let item = |j: &Value| json!({"id": j["id"], "lease_id": j["lease_id"], "error": "no"});
    let fails = json!({"fails": [item(leased[0]), item(leased[1])]});
    assert_eq!(
        call(r, Method::POST, "/v1/fail", Some(fails)).await.1["failed"],
        2
    );
    let ack = json!({"acks": [{"id": leased[2]["id"], "lease_id": leased[2]["lease_id"]}]});
    assert_eq!(
        call(r, Method::POST, "/v1/ack", Some(ack)).await.1["acked"],
        1
    );
    let active = leased[3]["id"].as_u64().unwrap();

    let (status, p) = call(r, Method::DELETE, &format!("/v1/jobs/{active}"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert_eq!(p["type"], "urn:weir:problem:invalid-state");
    let (status, p) = call(r, Method::DELETE, "/v1/queues/mail", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert_eq!(p["type"], "urn:weir:problem:queue-busy");
    assert!(p["detail"].as_str().unwrap().contains("1 active"), "{p}");

    let (status, p) = call(r, Method::POST, "/v1/queues/mail/retry?state=waiting", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    let (status, p) = call(r, Method::DELETE, "/v1/queues/mail/jobs", None).await;
    assert_eq!(
        (status, p["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("state"))
    );
    let (status, v) = call(r, Method::POST, "/v1/queues/mail/retry", None).await;
    assert_eq!(
        (status, v["jobs"].clone()),
        (StatusCode::OK, json!(2)),
        "{v}"
    );
    let (_, v) = call(r, Method::GET, "/v1/queues/mail", None).await;
    assert_eq!(v["counts"]["dead"], 0);
    assert_eq!(
        v["counts"]["waiting"], 4,
        "two waiting and two retried: {v}"
    );
    let (status, v) = call(
        r,
        Method::DELETE,
        "/v1/queues/mail/jobs?state=completed",
        None,
    )
    .await;
    assert_eq!(
        (status, v["jobs"].clone()),
        (StatusCode::OK, json!(1)),
        "{v}"
    );

    let waiting = ids.iter().copied().find(|&id| id != active).unwrap();
    let (status, _) = call(r, Method::DELETE, &format!("/v1/jobs/{waiting}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(r, Method::GET, &format!("/v1/jobs/{waiting}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, p) = call(r, Method::DELETE, &format!("/v1/jobs/{waiting}"), None).await;
    assert_eq!(
        (status, p["type"].clone()),
        (
            StatusCode::NOT_FOUND,
            json!("urn:weir:problem:job-not-found")
        )
    );

    // Once the active job finishes, the queue goes with everything in it.
    let ack = json!({"acks": [{"id": active, "lease_id": leased[3]["lease_id"]}]});
    assert_eq!(
        call(r, Method::POST, "/v1/ack", Some(ack)).await.1["acked"],
        1
    );
    let (status, v) = call(r, Method::DELETE, "/v1/queues/mail", None).await;
    assert_eq!(
        (status, v["deleted"].clone()),
        (StatusCode::OK, json!(4)),
        "{v}"
    );
    let (status, _) = call(r, Method::GET, "/v1/queues/mail", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, v) = call(r, Method::GET, "/v1/queues", None).await;
    assert!(v["queues"].as_array().unwrap().is_empty(), "{v}");
    let (status, _) = call(r, Method::DELETE, "/v1/queues/mail", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Issue 16: the job list filters by kind and tag as well as queue and state, and its
/// cursor walks every match.
#[tokio::test]
async fn jobs_are_listed_by_kind_and_tag_page_by_page() {
    let fx = setup(ServerConfig::default(), |s| Arc::new(s)).await;
    let r = &fx.router;
    let jobs: Vec<Value> = (0..30)
        .map(|n| {
            json!({"queue": "mix", "kind": if n % 3 == 0 { "a" } else { "b" }, "payload": n,
                   "tags": if n % 5 == 0 { vec!["vip"] } else { vec![] }})
        })
        .collect();
    let (status, _) = call(r, Method::POST, "/v1/jobs", Some(json!({ "jobs": jobs }))).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut seen = Vec::new();
    let mut url = "/v1/jobs?queue=mix&kind=a&limit=4".to_string();
    loop {
        let (status, page) = call(r, Method::GET, &url, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let got = page["jobs"].as_array().unwrap();
        assert!(got.len() <= 4);
        for j in got {
            assert_eq!(j["kind"], "a", "{j}");
            seen.push(j["payload"].as_u64().unwrap());
        }
        match page["next_cursor"].as_u64() {
            Some(c) => url = format!("/v1/jobs?queue=mix&kind=a&limit=4&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, (0..30).filter(|n| n % 3 == 0).collect::<Vec<u64>>());
    let (_, page) = call(r, Method::GET, "/v1/jobs?queue=mix&tag=vip&kind=a", None).await;
    let got: Vec<u64> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["payload"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![0, 15], "kind a and tag vip");
    assert!(page["next_cursor"].is_null());
}
