//! The cache through the real server: the HTTP contract, bad input, two servers sharing
//! Redis, and `weir cache`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn prefix() -> String {
    format!("weir-e2e:{:016x}:", fastrand::u64(..))
}

struct Http {
    c: reqwest::Client,
    base: String,
}

impl Http {
    fn new(s: &Server) -> Self {
        Http {
            c: reqwest::Client::new(),
            base: s.base.clone(),
        }
    }

    async fn put(&self, path: &str, body: &'static [u8]) -> (StatusCode, Value) {
        let r = self
            .c
            .put(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .unwrap();
        split(r).await
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.c
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        split(
            self.c
                .post(format!("{}{path}", self.base))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        split(
            self.c
                .delete(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

async fn split(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = r.bytes().await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        assert_eq!(ct.as_deref(), Some("application/problem+json"), "{v}");
    }
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_contract_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let p = prefix();
    let s = Server::start(
        dir.path(),
        &[],
        &[
            ("WEIR_CACHE_REDIS_URL", "redis://127.0.0.1:6379/0"),
            ("WEIR_CACHE_REDIS_PREFIX", &p),
        ],
    );
    let h = Http::new(&s);
    let (st, _) = h
        .put(
            "/v1/cache/plans/pr-1?ttl_ms=60000&tags=repo:a,pr&deps=src",
            b"graph-1",
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // Options as headers.
    let r =
        h.c.put(format!("{}/v1/cache/plans/summary", s.base))
            .header("weir-ttl-ms", "60000")
            .header("weir-deps", "pr-1")
            .body("sum")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = h.get("/v1/cache/plans/pr-1").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["weir-cache-tier"], "memory");
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(&r.bytes().await.unwrap()[..], b"graph-1");
    // Keys with slashes travel percent-encoded; keys named like the action routes work.
    assert_eq!(
        h.put("/v1/cache/plans/a%2Fb%20c", b"x").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        &h.get("/v1/cache/plans/a%2Fb%20c")
            .await
            .bytes()
            .await
            .unwrap()[..],
        b"x"
    );
    assert_eq!(
        h.put("/v1/cache/plans/invalidate", b"inv").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        &h.get("/v1/cache/plans/invalidate")
            .await
            .bytes()
            .await
            .unwrap()[..],
        b"inv"
    );
    assert_eq!(
        h.delete("/v1/cache/plans/invalidate").await.1,
        json!({"removed": 1})
    );
    // Delete cascades to dependents.
    let (st, v) = h.delete("/v1/cache/plans/src").await;
    assert_eq!(
        (st, v),
        (StatusCode::OK, json!({"removed": 2})),
        "pr-1 and summary depend on src"
    );
    let (st, v) = split(h.get("/v1/cache/plans/summary").await).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["type"], "urn:weir:problem:cache-miss");
    // Tags.
    for k in ["a", "b", "c"] {
        let tags = if k == "c" { "other" } else { "team:1" };
        h.put(&format!("/v1/cache/scores/{k}?tags={tags}"), b"1")
            .await;
    }
    let (st, v) = h
        .post("/v1/cache/scores/invalidate", json!({"tags": ["team:1"]}))
        .await;
    assert_eq!((st, v), (StatusCode::OK, json!({"removed": 2})));
    assert_eq!(h.get("/v1/cache/scores/c").await.status(), StatusCode::OK);
    // Version bump.
    let (st, v) = h.post("/v1/cache/scores/bump", json!(null)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["version"], 1);
    assert_eq!(
        h.get("/v1/cache/scores/c").await.status(),
        StatusCode::NOT_FOUND
    );
    // Figures, over the API and in /metrics.
    let (st, stats) = split(h.get("/v1/cache").await).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(stats["redis_up"], true);
    assert!(stats["memory"]["hits"].as_u64().unwrap() >= 3, "{stats}");
    assert!(
        stats["redis"]["invalidations"].as_u64().unwrap() >= 4,
        "{stats}"
    );
    let metrics = h.get("/metrics").await.text().await.unwrap();
    for line in [
        "weir_cache_hits_total{tier=\"memory\"}",
        "weir_cache_bytes{tier=\"disk\"}",
        "weir_cache_redis_up 1",
        "weir_cache_coalesced_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
    let (st, v) = h.post("/v1/cache/prune", json!({"max_bytes": 0})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["bytes_left"], 0, "{v}");
    let spec = h.get("/v1/openapi.json").await.text().await.unwrap();
    assert!(spec.contains("/v1/cache/{ns}/invalidate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cache_input_gets_a_4xx_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &[],
        &[
            ("WEIR_CACHE_NAMESPACES", "[\"plans\",\"scores\"]"),
            ("WEIR_CACHE_MAX_VALUE_BYTES", "1000"),
        ],
    );
    let h = Http::new(&s);
    let long = "k".repeat(2000);
    let tags: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    let big: &'static [u8] = Box::leak(vec![1u8; 1001].into_boxed_slice());
    let cases: Vec<(String, &'static [u8], u16, &str)> = vec![
        ("/v1/cache/plans/".into(), b"v", 422, "invalid-input"),
        (
            format!("/v1/cache/plans/{long}"),
            b"v",
            422,
            "invalid-input",
        ),
        ("/v1/cache/plans/k".into(), big, 413, "payload-too-large"),
        (
            "/v1/cache/plans/k?ttl_ms=0".into(),
            b"v",
            422,
            "invalid-input",
        ),
        (
            "/v1/cache/plans/k?ttl_ms=soon".into(),
            b"v",
            422,
            "invalid-input",
        ),
        (
            "/v1/cache/plans/k?ttl_ms=99999999999999999".into(),
            b"v",
            422,
            "invalid-input",
        ),
        (
            "/v1/cache/plans/k?colour=red".into(),
            b"v",
            422,
            "invalid-input",
        ),
        (
            format!("/v1/cache/plans/k?tags={}", tags.join(",")),
            b"v",
            422,
            "invalid-input",
        ),
        ("/v1/cache/other/k".into(), b"v", 404, "namespace-not-found"),
        ("/v1/cache/bad%20ns/k".into(), b"v", 422, "invalid-input"),
    ];
    for (path, body, status, kind) in &cases {
        let (st, v) = h.put(path, body).await;
        assert_eq!(st.as_u16(), *status, "{path:.60}: {v}");
        assert_eq!(v["type"], format!("urn:weir:problem:{kind}"), "{path:.60}");
    }
    for (body, field) in [
        (json!({}), "keys"),
        (json!({"keys": [""]}), "key"),
        (json!({"tags": ["a"], "colour": 1}), "body"),
    ] {
        let (st, v) = h.post("/v1/cache/plans/invalidate", body.clone()).await;
        assert_eq!(st.as_u16(), 422, "{body}: {v}");
        assert!(
            v["field"].as_str().unwrap_or_default().contains(field) || field == "body",
            "{v}"
        );
    }
    assert_eq!(
        h.post("/v1/cache/other/bump", json!(null)).await.0.as_u16(),
        404
    );
    // Nothing was written anywhere, and no version moved.
    let (_, stats) = split(h.get("/v1/cache").await).await;
    for tier in ["memory", "disk", "redis"] {
        assert_eq!(stats[tier]["writes"], 0, "{tier}: {stats}");
    }
    assert_eq!(
        h.get("/v1/cache/plans/k").await.status(),
        StatusCode::NOT_FOUND
    );
}

/// Polls `key` on `h` until it misses; returns how long that took.
async fn until_gone(h: &Http, path: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if h.get(path).await.status() == StatusCode::NOT_FOUND {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{path} still served after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_on_one_server_is_gone_on_the_other_within_100ms() {
    let p = prefix();
    let env = [
        ("WEIR_CACHE_REDIS_URL", "redis://127.0.0.1:6379/0"),
        ("WEIR_CACHE_REDIS_PREFIX", p.as_str()),
    ];
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start(d1.path(), &[], &env);
    let b = Server::start(d2.path(), &[], &env);
    let (ha, hb) = (Http::new(&a), Http::new(&b));
    // B reads A's entries through Redis and keeps them in its memory and disk.
    ha.put("/v1/cache/feed/u1?tags=user:1", b"feed-1").await;
    ha.put("/v1/cache/feed/u1-summary?deps=u1", b"sum-1").await;
    ha.put("/v1/cache/feed/u2?tags=user:2", b"feed-2").await;
    for k in ["u1", "u1-summary", "u2"] {
        let r = hb.get(&format!("/v1/cache/feed/{k}")).await;
        assert_eq!(r.headers()["weir-cache-tier"], "redis", "{k}");
        let r = hb.get(&format!("/v1/cache/feed/{k}")).await;
        assert_eq!(r.headers()["weir-cache-tier"], "memory", "{k} promoted");
    }
    let limit = Duration::from_millis(100);
    let (st, v) = ha
        .post("/v1/cache/feed/invalidate", json!({"tags": ["user:1"]}))
        .await;
    assert_eq!((st, v), (StatusCode::OK, json!({"removed": 2})));
    let took = until_gone(&hb, "/v1/cache/feed/u1-summary", limit).await;
    assert_eq!(
        hb.get("/v1/cache/feed/u1").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(hb.get("/v1/cache/feed/u2").await.status(), StatusCode::OK);
    eprintln!("tag invalidation reached the other server in {took:?}");
    // A bump on B retires A's copies.
    ha.get("/v1/cache/feed/u2").await;
    assert_eq!(
        hb.post("/v1/cache/feed/bump", json!(null)).await.0,
        StatusCode::OK
    );
    let took = until_gone(&ha, "/v1/cache/feed/u2", limit).await;
    eprintln!("bump reached the other server in {took:?}");
}

fn weir(args: &[&str], server: &Server, stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.args(["--server", &server.base])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

#[test]
fn weir_cache_drives_the_cache_from_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[], &[]);
    let ok = |o: &std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    ok(&weir(
        &[
            "cache", "set", "cfg", "app", "--ttl", "15m", "--tag", "deploy",
        ],
        &s,
        Some("{\"a\":1}"),
    ));
    ok(&weir(
        &["cache", "set", "cfg", "derived", "v2", "--dep", "app"],
        &s,
        None,
    ));
    assert_eq!(
        ok(&weir(&["cache", "get", "cfg", "app"], &s, None)),
        "{\"a\":1}"
    );
    let miss = weir(&["cache", "get", "cfg", "nope"], &s, None);
    assert_eq!(miss.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&miss.stderr).contains("miss"));
    let out = ok(&weir(
        &["--json", "cache", "invalidate", "cfg", "--tag", "deploy"],
        &s,
        None,
    ));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["removed"], 2);
    let out = ok(&weir(&["cache", "bump", "cfg"], &s, None));
    assert!(out.contains("version 1"), "{out}");
    let out = ok(&weir(&["cache", "stats"], &s, None));
    assert!(out.contains("memory") && out.contains("hit ratio"), "{out}");
    // Bad input: exit 2, one line.
    for args in [
        vec!["cache", "set", "cfg", "k", "v", "--ttl", "soon"],
        vec!["cache", "set", "bad ns", "k", "v"],
        vec!["cache", "invalidate", "cfg"],
        vec!["cache", "prune", "--max-size", "lots"],
    ] {
        let o = weir(&args, &s, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stderr).trim().lines().count(),
            1,
            "{args:?}"
        );
    }
    // Prune a folder directly, without the server.
    ok(&weir(
        &["cache", "set", "cfg", "big", &"x".repeat(5000)],
        &s,
        None,
    ));
    let folder = dir.path().join("cache");
    // The running server holds its folder: pruning it from outside is refused.
    let live = weir(
        &[
            "cache",
            "prune",
            "--dir",
            folder.to_str().unwrap(),
            "--max-size",
            "100B",
        ],
        &s,
        None,
    );
    assert_eq!(live.status.code(), Some(1), "{live:?}");
    assert!(String::from_utf8_lossy(&live.stderr).contains("in use by another process"));
    let mut s = s;
    assert!(s.terminate().success());
    let out = ok(&weir(
        &[
            "--json",
            "cache",
            "prune",
            "--dir",
            folder.to_str().unwrap(),
            "--max-size",
            "100B",
        ],
        &s,
        None,
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["files"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["bytes_left"], 0, "{v}");
    let o = weir(&["cache", "prune", "--dir", "/nonexistent/weir"], &s, None);
    assert_eq!(o.status.code(), Some(2));
}
