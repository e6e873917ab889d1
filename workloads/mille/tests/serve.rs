//! `mille serve` end to end: the real binary with its embedded Weir, webhooks signed as GitHub
//! signs them, and a stub of GitHub's comment API started here. A signed webhook gets its
//! comment posted; a second one for the same PR updates that comment; a bad signature is
//! refused and enqueues nothing; ten plans of different sizes are rendered smallest first; a
//! GitHub failing five times in a row opens the breaker, and the comment is posted once it
//! recovers. Several mille servers share one Weir server (`--weir`: each renders webhooks the
//! others took) or one Redis (`--redis`: each shows renderings the others made).

#![allow(clippy::unwrap_used)]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "webhook-secret-for-tests";

/// GitHub's issue comments, as far as mille uses them.
#[derive(Default)]
struct Stub {
    comments: Mutex<Vec<(u64, u64, String)>>, // (id, pr, body)
    /// PR numbers in the order their comment was first written or last updated.
    writes: Mutex<Vec<u64>>,
    /// Answer this many writes with 503 first.
    fail: AtomicUsize,
    failed: AtomicUsize,
    /// While set, writes wait until it is cleared.
    hold: Mutex<bool>,
}

type S = State<Arc<Stub>>;

async fn list(State(s): S, Path((_o, _r, pr)): Path<(String, String, u64)>) -> Json<Value> {
    let c = s.comments.lock().unwrap();
    Json(json!(c
        .iter()
        .filter(|(_, p, _)| *p == pr)
        .map(|(id, _, body)| json!({"id": id, "body": body}))
        .collect::<Vec<_>>()))
}

async fn gate(s: &Stub) -> Result<(), StatusCode> {
    while *s.hold.lock().unwrap() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if s.fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        s.failed.fetch_add(1, Ordering::SeqCst);
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(())
}

async fn create(
    State(s): S,
    Path((_o, _r, pr)): Path<(String, String, u64)>,
    Json(b): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    gate(&s).await?;
    let mut c = s.comments.lock().unwrap();
    let id = 1000 + c.len() as u64;
    c.push((id, pr, b["body"].as_str().unwrap().to_string()));
    s.writes.lock().unwrap().push(pr);
    Ok(Json(json!({"id": id})))
}

async fn update(
    State(s): S,
    Path((_o, _r, id)): Path<(String, String, u64)>,
    Json(b): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    gate(&s).await?;
    let mut c = s.comments.lock().unwrap();
    let entry = c
        .iter_mut()
        .find(|(i, _, _)| *i == id)
        .ok_or(StatusCode::NOT_FOUND)?;
    entry.2 = b["body"].as_str().unwrap().to_string();
    let pr = entry.1;
    s.writes.lock().unwrap().push(pr);
    Ok(Json(json!({"id": id})))
}

async fn start_stub() -> (String, Arc<Stub>) {
    let stub = Arc::new(Stub::default());
    let app = Router::new()
        .route("/repos/{o}/{r}/issues/{n}/comments", get(list).post(create))
        .route("/repos/{o}/{r}/issues/comments/{id}", patch(update))
        .with_state(stub.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), stub)
}

struct Mille {
    child: Child,
    base: String,
    weir: String,
    _dir: tempfile::TempDir,
}

impl Drop for Mille {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mille(github: &str, extra: &[&str]) -> Mille {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mille"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--secret",
            SECRET,
            "--github-api",
            github,
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let urls: Vec<String> = line
        .split_whitespace()
        .filter(|w| w.starts_with("http://"))
        .map(|w| w.trim_end_matches(',').to_string())
        .collect();
    assert_eq!(urls.len(), 2, "mille's address and its Weir's in {line:?}");
    Mille {
        child,
        base: urls[0].clone(),
        weir: urls[1].clone(),
        _dir: dir,
    }
}

fn event(pr: u64, plan: &Value) -> Vec<u8> {
    json!({
        "action": "synchronize",
        "repository": {"full_name": "acme/infra"},
        "pull_request": {"number": pr},
        "plan": plan,
    })
    .to_string()
    .into_bytes()
}

async fn send(m: &Mille, body: Vec<u8>, signature: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/webhook", m.base))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn signed(m: &Mille, pr: u64, plan: &Value) -> (StatusCode, Value) {
    let body = event(pr, plan);
    let sig = mille::serve::sign(SECRET, &body);
    send(m, body, &sig).await
}

/// Waits for `cond` on the stub: the comments are what is under test.
async fn until(what: &str, secs: u64, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_is_commented_then_updated_and_a_bad_one_refused() {
    let (github, stub) = start_stub().await;
    let m = start_mille(&github, &["--workers", "2"]);

    // A bad signature: 401, and nothing reaches GitHub.
    let body = event(7, &mille::synth::plan(10, 2, 200));
    let (status, p) = send(&m, body.clone(), "sha256=00").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{p}");
    let (status, _) = send(&m, body, &mille::serve::sign("another secret", b"x")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, v) = signed(&m, 1, &mille::synth::plan(30, 3, 200)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["resources"], 30);
    until("the comment", 20, || {
        stub.comments.lock().unwrap().len() == 1
    })
    .await;
    let first = stub.comments.lock().unwrap()[0].2.clone();
    assert!(first.starts_with(mille::serve::MARKER), "{first}");
    assert!(first.contains("### Terraform plan:"), "{first}");
    let r: Value = reqwest::get(format!("{}/prs/acme/infra/1", m.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["resources"], 30, "{r}");

    // A second push to the same PR updates the same comment.
    let (status, _) = signed(&m, 1, &mille::synth::plan(8, 1, 200)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    until("the update", 20, || stub.writes.lock().unwrap().len() == 2).await;
    let c = stub.comments.lock().unwrap().clone();
    assert_eq!(c.len(), 1, "updated, not added: {c:?}");
    assert_ne!(c[0].2, first);
    assert!(
        stub.writes.lock().unwrap().iter().all(|&pr| pr == 1),
        "PR 7 was never rendered"
    );
    let missing = reqwest::get(format!("{}/prs/acme/infra/7", m.base))
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    // A big plan (3,000 changes, 6 MB of JSON): over axum's default body limit, taken.
    let (status, v) = signed(&m, 2, &mille::synth::plan(3000, 20, 2000)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    until("the big plan's comment", 60, || {
        stub.comments
            .lock()
            .unwrap()
            .iter()
            .any(|(_, pr, _)| *pr == 2)
    })
    .await;
    // Not a plan: 422, nothing enqueued.
    let body = json!({"repository": {"full_name": "acme/infra"}, "pull_request": {"number": 9}, "plan": {"format_version": "9.0"}}).to_string().into_bytes();
    let sig = mille::serve::sign(SECRET, &body);
    let (status, p) = send(&m, body, &sig).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_plans_are_rendered_smallest_first() {
    let (github, stub) = start_stub().await;
    let m = start_mille(&github, &["--workers", "1"]);
    // The first render is held at GitHub until all ten are queued, so the order of the other
    // nine is the queue's.
    *stub.hold.lock().unwrap() = true;
    let sizes = [500u64, 40, 900, 10, 300, 70, 20, 800, 150, 60];
    for (pr, &n) in sizes.iter().enumerate() {
        let (status, _) = signed(&m, pr as u64 + 1, &mille::synth::plan(n as usize, 4, 100)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    *stub.hold.lock().unwrap() = false;
    until("ten comments", 60, || {
        stub.writes.lock().unwrap().len() == 10
    })
    .await;
    let order: Vec<u64> = stub
        .writes
        .lock()
        .unwrap()
        .iter()
        .map(|&pr| sizes[pr as usize - 1])
        .collect();
    let mut rest = order[1..].to_vec();
    rest.sort_unstable();
    assert_eq!(
        &order[1..],
        &rest[..],
        "after the first, smallest first: {order:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_github_opens_the_breaker_and_the_comment_lands_once_it_recovers() {
    let (github, stub) = start_stub().await;
    let m = start_mille(
        &github,
        &["--workers", "1", "--breaker-cooldown-ms", "1500"],
    );
    stub.fail.store(5, Ordering::SeqCst);
    let (status, _) = signed(&m, 3, &mille::synth::plan(20, 2, 100)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The queue's breaker opens after the fifth failure in a row (Weir's own view of it).
    let queue = format!("{}/v1/queues/{}", m.weir, mille::serve::QUEUE);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let q: Value = reqwest::get(&queue).await.unwrap().json().await.unwrap();
        if q["breaker"] == "open" {
            assert!(
                stub.comments.lock().unwrap().is_empty(),
                "nothing posted while open"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the breaker never opened: {q}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until("the comment after recovery", 60, || {
        stub.comments.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(
        stub.failed.load(Ordering::SeqCst),
        5,
        "five failures, then a success"
    );
    assert_eq!(stub.comments.lock().unwrap()[0].1, 3);
}

/// A Weir server of the test's own (embedded store), as a team would run one for several
/// mille servers.
async fn start_weir(dir: &std::path::Path) -> String {
    weir_server::embedded::start(dir, std::future::pending())
        .await
        .unwrap()
        .url
}

fn comments_per_pr(stub: &Stub) -> std::collections::BTreeMap<u64, usize> {
    let mut out = std::collections::BTreeMap::new();
    for (_, pr, _) in stub.comments.lock().unwrap().iter() {
        *out.entry(*pr).or_insert(0) += 1;
    }
    out
}

/// Two mille servers on one Weir server (`--weir`, no Redis): a job enqueued by one is
/// rendered by the other, whose own disk never saw the plan (plans wait in Weir's cache),
/// and each PR gets one comment whichever server took its webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mille_servers_sharing_a_weir_render_each_others_webhooks() {
    let (github, stub) = start_stub().await;
    let weir_dir = tempfile::tempdir().unwrap();
    let weir = start_weir(weir_dir.path()).await;
    let client = weir_client::Client::new(&weir).unwrap();
    let a = start_mille(&github, &["--weir", &weir, "--workers", "1"]);
    assert_eq!(a.weir, weir);
    // While the queue is paused, A takes three webhooks, then goes away for good.
    client.pause(mille::serve::QUEUE).await.unwrap();
    for pr in 1..=3 {
        let (status, v) = signed(&a, pr, &mille::synth::plan(20 * pr as usize, 2, 200)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    }
    drop(a);
    // B renders them: the plans were never on its disk.
    let b = start_mille(&github, &["--weir", &weir, "--workers", "1"]);
    client.resume(mille::serve::QUEUE).await.unwrap();
    until("A's three PRs commented by B", 30, || {
        comments_per_pr(&stub).len() == 3
    })
    .await;
    let r: Value = reqwest::get(format!("{}/prs/acme/infra/2", b.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["resources"], 40, "{r}");
    // With both up, webhooks to either are rendered once each.
    let c = start_mille(&github, &["--weir", &weir, "--workers", "1"]);
    for pr in 4..=9 {
        let to = if pr % 2 == 0 { &b } else { &c };
        let (status, _) = signed(to, pr, &mille::synth::plan(10 + pr as usize, 2, 200)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    until("nine PRs commented", 30, || {
        comments_per_pr(&stub).len() == 9
    })
    .await;
    assert!(
        comments_per_pr(&stub).values().all(|&n| n == 1),
        "one comment per PR: {:?}",
        comments_per_pr(&stub)
    );
    assert_eq!(
        stub.writes.lock().unwrap().len(),
        9,
        "each PR rendered once"
    );
    // Any server answers for any PR.
    for m in [&b, &c] {
        let r = reqwest::get(format!("{}/prs/acme/infra/5", m.base))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
}

/// Two mille servers, each with its own embedded Weir, sharing Redis (`--redis`): a PR
/// rendered by one is shown by the other; a third with another prefix sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mille_servers_sharing_redis_show_each_others_renderings() {
    let (github, stub) = start_stub().await;
    let prefix = format!("mille-test-{:016x}", fastrand::u64(..));
    let redis = "redis://127.0.0.1:6379/0";
    let a = start_mille(
        &github,
        &[
            "--redis",
            redis,
            "--redis-prefix",
            &prefix,
            "--workers",
            "1",
        ],
    );
    let b = start_mille(
        &github,
        &[
            "--redis",
            redis,
            "--redis-prefix",
            &prefix,
            "--workers",
            "1",
        ],
    );
    let (status, _) = signed(&a, 11, &mille::synth::plan(25, 2, 200)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    until("the comment", 30, || {
        stub.comments.lock().unwrap().len() == 1
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown: Value = loop {
        let r = reqwest::get(format!("{}/prs/acme/infra/11", b.base))
            .await
            .unwrap();
        if r.status().as_u16() == 200 {
            break r.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "B never showed A's rendering");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(shown["resources"], 25, "{shown}");
    let other = start_mille(
        &github,
        &[
            "--redis",
            redis,
            "--redis-prefix",
            &format!("{prefix}-other"),
            "--workers",
            "1",
        ],
    );
    let r = reqwest::get(format!("{}/prs/acme/infra/11", other.base))
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "another prefix is another deployment"
    );
}
