//! Stand-ins for the providers, for tests and benchmarks (and for trying workflows out before
//! a provider account exists): an HTTP server that answers SendGrid's, Twilio's, FCM's and
//! Slack's calls, and an SMTP server, both recording what they accept and deduplicating by
//! the deliveries' keys as providers with idempotency keys do. Faults are injectable, in
//! process ([`StubState::set_fault`]) or over HTTP (`PUT /_stub/fault`): 5xx answers, 429 with
//! `Retry-After`, hangs (timeouts) and slow answers.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use foldhash::HashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// What the stub does with the next calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Fault {
    /// Accept.
    #[default]
    Ok,
    /// Answer this status (SMTP: a 451 for 5xx statuses, transient; 550 for 4xx, permanent).
    Status {
        /// The HTTP status.
        code: u16,
    },
    /// Answer 429 with `Retry-After: secs`.
    RateLimit {
        /// Seconds.
        secs: u64,
    },
    /// Never answer (the caller times out).
    Hang,
    /// Answer after this long.
    Slow {
        /// Milliseconds.
        ms: u64,
    },
    /// Accept the deliveries at once, answer after this long (a provider that took a call
    /// whose answer the caller never saw, if the caller dies meanwhile).
    AcceptThenStall {
        /// Milliseconds.
        ms: u64,
    },
}

/// One accepted delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accepted {
    /// The address.
    pub to: String,
    /// The subject or title, if any.
    pub subject: Option<String>,
    /// The text.
    pub body: String,
    /// How many times it was sent (over 1: a duplicate the key caught).
    pub times: u32,
    /// When it was first accepted, ms since the epoch.
    pub at_ms: u64,
}

/// A stub's shared state.
#[derive(Default)]
pub struct StubState {
    fault: Mutex<Fault>,
    /// Faults to apply to the next calls, before `fault` (one each).
    queue: Mutex<std::collections::VecDeque<Fault>>,
    accepted: Mutex<HashMap<String, Accepted>>,
    /// Keys only: what each delivery said is not kept (for benchmarks, where a real
    /// provider's memory is not the machine's; deduplication and counts still hold).
    pub keys_only: std::sync::atomic::AtomicBool,
    /// Distinct deliveries accepted per trigger (the part of the key before `-`).
    per_trigger: Mutex<HashMap<u64, usize>>,
    /// Set by `AcceptThenStall` for the call in progress.
    stall: Mutex<u64>,
    /// Calls received (each batch call counts once).
    pub calls: AtomicU64,
    /// Deliveries accepted, duplicates included.
    pub deliveries: AtomicU64,
    /// Calls answered with a fault.
    pub faulted: AtomicU64,
    changed: tokio::sync::Notify,
}

impl StubState {
    /// Sets the fault for every following call.
    pub fn set_fault(&self, f: Fault) {
        *self.fault.lock() = f;
    }

    /// Applies `f` to the next `n` calls only.
    pub fn fault_next(&self, n: usize, f: Fault) {
        let mut q = self.queue.lock();
        for _ in 0..n {
            q.push_back(f.clone());
        }
    }

    fn next_fault(&self) -> Fault {
        if let Some(f) = self.queue.lock().pop_front() {
            return f;
        }
        self.fault.lock().clone()
    }

    /// Every accepted delivery, by key.
    pub fn accepted(&self) -> HashMap<String, Accepted> {
        self.accepted.lock().clone()
    }

    /// Distinct deliveries accepted of the messages of one trigger (keys `TRIGGER-N/...`).
    pub fn count_trigger(&self, trigger: u64) -> usize {
        self.per_trigger.lock().get(&trigger).copied().unwrap_or(0)
    }

    /// Distinct deliveries accepted.
    pub fn distinct(&self) -> usize {
        self.accepted.lock().len()
    }

    /// Waits until `pred` holds over the accepted deliveries, or `timeout` passes; returns
    /// whether it held.
    pub async fn wait_for(
        &self,
        timeout: std::time::Duration,
        pred: impl Fn(&HashMap<String, Accepted>) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if pred(&self.accepted.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return pred(&self.accepted.lock());
            }
        }
    }

    fn accept(&self, key: &str, to: &str, subject: Option<&str>, body: &str) {
        self.accept_all([(key, to, subject, body)]);
    }

    /// Records a call's deliveries (key, address, subject, text) under one lock.
    fn accept_all<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>, &'a str)>,
    ) {
        let now = crate::pipeline::now_ms();
        let keep = !self.keys_only.load(Ordering::Relaxed);
        let text = |s: &str| if keep { s.to_string() } else { String::new() };
        {
            let mut a = self.accepted.lock();
            let mut per = self.per_trigger.lock();
            for (key, to, subject, body) in items {
                self.deliveries.fetch_add(1, Ordering::Relaxed);
                if let Some(x) = a.get_mut(key) {
                    x.times += 1;
                    continue;
                }
                a.insert(
                    key.to_string(),
                    Accepted {
                        to: text(to),
                        subject: subject.filter(|_| keep).map(str::to_string),
                        body: text(body),
                        times: 1,
                        at_ms: now,
                    },
                );
                let trigger = key.split_once('-').and_then(|(t, _)| t.parse::<u64>().ok());
                if let Some(t) = trigger {
                    *per.entry(t).or_default() += 1;
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Applies the current fault: `Some(response)` to answer with instead of accepting.
    async fn fault(&self) -> Option<Response> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let f = self.next_fault();
        let r = match f {
            Fault::Ok => return None,
            Fault::AcceptThenStall { ms } => {
                *self.stall.lock() = ms;
                return None;
            }
            Fault::Slow { ms } => {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                return None;
            }
            Fault::Hang => {
                tokio::time::sleep(std::time::Duration::from_secs(3_600)).await;
                StatusCode::GATEWAY_TIMEOUT.into_response()
            }
            Fault::Status { code } => {
                let s = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (s, Json(json!({"errors": [{"message": "injected fault"}]}))).into_response()
            }
            Fault::RateLimit { secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                Json(json!({"errors": [{"message": "rate limited"}]})),
            )
                .into_response(),
        };
        self.faulted.fetch_add(1, Ordering::Relaxed);
        Some(r)
    }
}

/// A running stub.
pub struct Stub {
    /// Its base URL (HTTP) or `smtp://127.0.0.1:PORT`.
    pub url: String,
    /// What it saw.
    pub state: Arc<StubState>,
}

/// Starts the HTTP stub on `listener`.
pub fn http(listener: tokio::net::TcpListener) -> std::io::Result<Stub> {
    let addr = listener.local_addr()?;
    let state = Arc::new(StubState::default());
    let app = Router::new()
        .route("/v3/mail/send", post(sendgrid))
        .route("/2010-04-01/Accounts/{sid}/Messages.json", post(twilio))
        .route("/fcm/send", post(fcm))
        .route("/api/chat.postMessage", post(slack))
        .route("/_stub/fault", put(set_fault))
        .route("/_stub/stats", get(stats))
        .with_state(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Stub {
        url: format!("http://{addr}"),
        state,
    })
}

async fn set_fault(State(s): State<Arc<StubState>>, Json(f): Json<Fault>) -> StatusCode {
    s.set_fault(f);
    StatusCode::NO_CONTENT
}

async fn stats(State(s): State<Arc<StubState>>) -> Json<Value> {
    let dups = s.accepted.lock().values().filter(|a| a.times > 1).count();
    Json(json!({
        "calls": s.calls.load(Ordering::Relaxed),
        "deliveries": s.deliveries.load(Ordering::Relaxed),
        "distinct": s.distinct(),
        "duplicates": dups,
        "faulted": s.faulted.load(Ordering::Relaxed),
    }))
}

/// The part of SendGrid's mail body the stub reads (borrowed where the JSON has no escapes).
#[derive(Deserialize)]
struct SendgridBody<'a> {
    #[serde(borrow)]
    personalizations: Option<Vec<SgPersonalization<'a>>>,
}

#[derive(Deserialize)]
struct SgPersonalization<'a> {
    #[serde(borrow, default)]
    to: Vec<SgAddress<'a>>,
    #[serde(borrow, default)]
    subject: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    custom_args: Option<SgArgs<'a>>,
    #[serde(borrow, default)]
    substitutions: Option<SgSubstitutions<'a>>,
}

#[derive(Deserialize)]
struct SgAddress<'a> {
    #[serde(borrow)]
    email: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct SgArgs<'a> {
    #[serde(borrow, default)]
    weir_key: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct SgSubstitutions<'a> {
    #[serde(rename = "-body-", borrow, default)]
    body: Option<std::borrow::Cow<'a, str>>,
}

async fn sendgrid(State(s): State<Arc<StubState>>, body: axum::body::Bytes) -> Response {
    if let Some(r) = s.fault().await {
        return r;
    }
    let bad = |m: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"errors": [{"message": m}]})),
        )
            .into_response()
    };
    let Ok(mail) = serde_json::from_slice::<SendgridBody<'_>>(&body) else {
        return bad("the body is not a mail/send request");
    };
    let Some(ps) = mail.personalizations else {
        return bad("personalizations");
    };
    if ps.is_empty() || ps.len() > 1_000 {
        return bad("1 to 1000 personalizations");
    }
    s.accept_all(ps.iter().map(|p| {
        let to = p.to.first().map(|a| a.email.as_ref()).unwrap_or("");
        let key = p
            .custom_args
            .as_ref()
            .and_then(|c| c.weir_key.as_deref())
            .unwrap_or(to);
        let text = p
            .substitutions
            .as_ref()
            .and_then(|x| x.body.as_deref())
            .unwrap_or("");
        (key, to, p.subject.as_deref(), text)
    }));
    let id = format!("sg-{}", s.calls.load(Ordering::Relaxed));
    let stall = std::mem::take(&mut *s.stall.lock());
    if stall > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(stall)).await;
    }
    (StatusCode::ACCEPTED, [("x-message-id", id)]).into_response()
}

async fn twilio(
    State(s): State<Arc<StubState>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    axum::extract::Form(form): axum::extract::Form<HashMap<String, String>>,
) -> Response {
    if let Some(r) = s.fault().await {
        return r;
    }
    let to = form.get("To").cloned().unwrap_or_default();
    if !to.starts_with('+') {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": 21211, "message": "invalid 'To' phone number"})),
        )
            .into_response();
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(&to)
        .to_string();
    s.accept(
        &key,
        &to,
        None,
        form.get("Body").map(String::as_str).unwrap_or(""),
    );
    (
        StatusCode::CREATED,
        Json(json!({"sid": format!("SM{}", s.calls.load(Ordering::Relaxed)), "account_sid": sid, "status": "queued"})),
    )
        .into_response()
}

async fn fcm(State(s): State<Arc<StubState>>, Json(body): Json<Value>) -> Response {
    if let Some(r) = s.fault().await {
        return r;
    }
    let tokens: Vec<&str> = body["registration_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let keys: Vec<&str> = body["data"]["weir_keys"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .collect();
    let title = body["notification"]["title"].as_str();
    let text = body["notification"]["body"].as_str().unwrap_or("");
    let mut results = Vec::new();
    let mut failure = 0;
    for (i, t) in tokens.iter().enumerate() {
        if t.starts_with("bad") {
            failure += 1;
            results.push(json!({"error": "NotRegistered"}));
            continue;
        }
        s.accept(keys.get(i).copied().unwrap_or(t), t, title, text);
        results.push(json!({"message_id": format!("0:{}", s.deliveries.load(Ordering::Relaxed))}));
    }
    Json(json!({"success": tokens.len() - failure, "failure": failure, "results": results}))
        .into_response()
}

async fn slack(
    State(s): State<Arc<StubState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = s.fault().await {
        return r;
    }
    let channel = body["channel"].as_str().unwrap_or("");
    if channel.is_empty() {
        return Json(json!({"ok": false, "error": "channel_not_found"})).into_response();
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(channel)
        .to_string();
    s.accept(&key, channel, None, body["text"].as_str().unwrap_or(""));
    Json(json!({"ok": true, "channel": channel, "ts": format!("{}.0001", crate::pipeline::now_ms() / 1000)}))
        .into_response()
}

/// Starts the SMTP stub on `listener`: enough of RFC 5321 for lettre (EHLO, MAIL, RCPT,
/// DATA, RSET, NOOP, QUIT). A message's key is its `Message-ID`.
pub fn smtp(listener: tokio::net::TcpListener) -> std::io::Result<Stub> {
    let addr = listener.local_addr()?;
    let state = Arc::new(StubState::default());
    let s = state.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let _ = smtp_session(sock, s).await;
            });
        }
    });
    Ok(Stub {
        url: format!("smtp://{addr}"),
        state,
    })
}

async fn smtp_session(sock: tokio::net::TcpStream, s: Arc<StubState>) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 stub ESMTP ready\r\n").await?;
    let mut line = String::new();
    let mut to = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        if cmd.starts_with("EHLO") {
            w.write_all(b"250-stub\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                .await?;
        } else if cmd.starts_with("HELO")
            || cmd.starts_with("MAIL")
            || cmd.starts_with("RSET")
            || cmd.starts_with("NOOP")
        {
            w.write_all(b"250 OK\r\n").await?;
        } else if cmd.starts_with("RCPT") {
            to = line.trim_end()[8..]
                .trim()
                .trim_matches(['<', '>'])
                .to_string();
            w.write_all(b"250 OK\r\n").await?;
        } else if cmd.starts_with("DATA") {
            w.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(&line);
            }
            s.calls.fetch_add(1, Ordering::Relaxed);
            match s.next_fault() {
                Fault::Status { code } if code >= 500 => {
                    s.faulted.fetch_add(1, Ordering::Relaxed);
                    w.write_all(b"451 4.3.0 injected transient failure\r\n")
                        .await?;
                }
                Fault::Status { .. } => {
                    s.faulted.fetch_add(1, Ordering::Relaxed);
                    w.write_all(b"550 5.1.1 injected permanent failure\r\n")
                        .await?;
                }
                Fault::RateLimit { .. } => {
                    s.faulted.fetch_add(1, Ordering::Relaxed);
                    w.write_all(b"421 4.7.0 too many messages, slow down\r\n")
                        .await?;
                    return Ok(());
                }
                Fault::Hang => {
                    tokio::time::sleep(std::time::Duration::from_secs(3_600)).await;
                }
                f => {
                    if let Fault::Slow { ms } | Fault::AcceptThenStall { ms } = f {
                        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    }
                    let header = |name: &str| {
                        data.lines()
                            .find(|l| {
                                l.len() > name.len() && l[..name.len()].eq_ignore_ascii_case(name)
                            })
                            .map(|l| l[name.len()..].trim().to_string())
                    };
                    let key = header("Message-ID:").unwrap_or_else(|| to.clone());
                    let key = key
                        .trim_matches(['<', '>'])
                        .trim_end_matches("@weir-notify")
                        .to_string();
                    let subject = header("Subject:");
                    let body = data.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
                    s.accept(&key, &to, subject.as_deref(), &body);
                    w.write_all(b"250 2.0.0 queued\r\n").await?;
                }
            }
        } else if cmd.starts_with("QUIT") {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            w.write_all(b"502 5.5.2 not implemented\r\n").await?;
        }
    }
}
