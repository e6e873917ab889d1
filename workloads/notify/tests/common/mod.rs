//! A weir-notify in this process (embedded Weir in a temp folder, the API on a loopback
//! port) with stub providers, for the pipeline tests.

#![allow(dead_code)]

use notify::api::{self, Api};
use notify::stub::{self, Stub};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

pub struct Harness {
    pub url: String,
    pub http: reqwest::Client,
    pub notify: Arc<notify::pipeline::Notify>,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub dir: tempfile::TempDir,
}

/// Stub providers: two HTTP stubs (a primary and a backup) and an SMTP stub.
pub struct Stubs {
    pub a: Stub,
    pub b: Stub,
    pub smtp: Stub,
}

pub async fn stubs() -> Stubs {
    let l = || async {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
    };
    Stubs {
        a: stub::http(l().await).expect("stub a"),
        b: stub::http(l().await).expect("stub b"),
        smtp: stub::smtp(l().await).expect("smtp stub"),
    }
}

/// Starts weir-notify with the config file `toml` (`{A}`, `{B}`, `{SMTP}` replaced by the
/// stubs' URLs).
pub async fn start(toml: &str, s: &Stubs) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    start_in(toml, s, dir).await
}

pub async fn start_in(toml: &str, s: &Stubs, dir: tempfile::TempDir) -> Harness {
    start_on(toml, s, dir, None).await
}

/// Starts weir-notify on the Weir server at `weir` (an embedded one when `None`).
pub async fn start_on(
    toml: &str,
    s: &Stubs,
    dir: tempfile::TempDir,
    weir: Option<String>,
) -> Harness {
    let text = toml
        .replace("{A}", &s.a.url)
        .replace("{B}", &s.b.url)
        .replace("{SMTP}", &s.smtp.url);
    let file = notify::config::parse(&text).expect("config parses");
    let settings = file.pipeline.settings().expect("settings");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = notify::start(
        notify::Options {
            data_dir: dir.path().to_path_buf(),
            weir,
            providers: file.providers,
            workflows: file.workflows,
            settings,
            run_concurrency: 4,
            send_concurrency: 16,
            workers: true,
            retention_ms: notify::DEFAULT_RETENTION_MS,
            archive_dir: dir.path().join("archive"),
        },
        shutdown.clone(),
    )
    .await
    .expect("weir-notify starts");
    let app = api::app(Api {
        notify: running.notify.clone(),
        token: None,
        max_body: 4 << 20,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Harness {
        url,
        http: reqwest::Client::new(),
        notify: running.notify,
        shutdown,
        dir,
    }
}

impl Harness {
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .put(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("request");
        read(r).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("request");
        read(r).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .patch(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("request");
        read(r).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("request");
        read(r).await
    }

    pub async fn subscriber(&self, id: &str, body: Value) {
        let (s, v) = self.put(&format!("/v1/subscribers/{id}"), body).await;
        assert_eq!(s, 200, "{v}");
    }

    /// Triggers `workflow` for `to`; returns the message ids.
    pub async fn trigger(&self, workflow: &str, to: Value, payload: Value) -> Vec<String> {
        let (s, v) = self
            .post(
                "/v1/trigger",
                serde_json::json!({"workflow": workflow, "to": to, "payload": payload}),
            )
            .await;
        assert_eq!(s, 202, "{v}");
        v["messages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls a message until `pred` holds (the pipeline has no push channel to the test);
    /// panics after `secs`.
    pub async fn wait_message(&self, id: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let (s, v) = self.get(&format!("/v1/messages/{id}")).await;
            if s == 200 && pred(&v) {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("message {id} never got there: {v:#}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_status(&self, id: &str, status: &str, secs: u64) -> Value {
        self.wait_message(id, secs, |v| v["status"] == status).await
    }
}

async fn read(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if s >= 400 {
        assert_eq!(ct, "application/problem+json", "errors are problems: {v}");
    }
    (s, v)
}

/// Event kinds of a message's activity trail, in order.
pub fn kinds(m: &Value) -> Vec<String> {
    m["activity"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["kind"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
