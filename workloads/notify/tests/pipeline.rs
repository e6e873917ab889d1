//! The pipeline end to end, against stub providers with injected faults: rendering,
//! preferences, failover and recovery, 429s, digests, throttles, branches, delays,
//! idempotent triggers, the dead-letter queue and redrive.

mod common;

use common::{kinds, start, start_on, stubs};
use notify::stub::Fault;
use serde_json::json;
use std::time::Duration;

const EMAIL: &str = r#"
[pipeline]
retry_base = "20ms"
retry_cap = "100ms"
send_attempts = 3

[[providers]]
id = "primary"
type = "sendgrid"
url = "{A}"
timeout = "500ms"
breaker = { failures = 2, cooldown = "700ms" }

[[providers]]
id = "backup"
type = "sendgrid"
url = "{B}"
priority = 1

[[workflows]]
id = "welcome"
class = "transactional"
[[workflows.steps]]
type = "email"
template.en = { subject = "Welcome {{ subscriber.data.name }}", body = "Hi {{ subscriber.data.name }}, order {{ payload.order }}", html = "<p>{{ payload.note }}</p>" }
template.fr = { subject = "Bienvenue {{ subscriber.data.name }}", body = "Bonjour {{ subscriber.data.name }}" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_email_reaches_the_provider_rendered_in_the_subscribers_locale() {
    let s = stubs().await;
    let h = start(EMAIL, &s).await;
    h.subscriber(
        "ana",
        json!({"email": "ana@example.com", "locale": "fr-CA", "data": {"name": "Ana"}}),
    )
    .await;
    h.subscriber(
        "bo",
        json!({"email": "bo@example.com", "data": {"name": "Bo"}}),
    )
    .await;
    let ids = h
        .trigger(
            "welcome",
            json!(["ana", "bo"]),
            json!({"order": 42, "note": "<img src=x onerror=alert(1)>"}),
        )
        .await;
    assert_eq!(ids.len(), 2);
    for id in &ids {
        h.wait_status(id, "sent", 10).await;
    }
    let got = s.a.state.accepted();
    let mut subjects: Vec<_> = got
        .values()
        .map(|a| a.subject.clone().unwrap_or_default())
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        ["Bienvenue Ana", "Welcome Bo"],
        "fr-CA falls back to fr"
    );
    let bo = got
        .values()
        .find(|a| a.to == "bo@example.com")
        .expect("bo's email");
    assert_eq!(bo.body, "Hi Bo, order 42");
    let m = h.wait_status(&ids[1], "sent", 1).await;
    let html = m["deliveries"][0]["content"]["html"]
        .as_str()
        .expect("html kept");
    assert_eq!(
        html, "<p>&lt;img src=x onerror=alert(1)&gt;</p>",
        "payloads are escaped in HTML"
    );
    let k = kinds(&m);
    assert_eq!(k.first().map(String::as_str), Some("triggered"));
    assert!(
        k.contains(&"queued".to_string()) && k.contains(&"sent".to_string()),
        "{k:?}"
    );
    assert_eq!(
        s.b.state.distinct(),
        0,
        "the backup is not used while the primary works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_fail_over_when_the_primary_breaker_opens_and_come_back_once_it_recovers() {
    let s = stubs().await;
    let h = start(EMAIL, &s).await;
    for i in 0..8 {
        h.subscriber(
            &format!("u{i}"),
            json!({"email": format!("u{i}@example.com")}),
        )
        .await;
    }
    s.a.state.set_fault(Fault::Status { code: 503 });
    let mut first = Vec::new();
    for i in 0..4 {
        let ids = h
            .trigger("welcome", json!(format!("u{i}")), json!({}))
            .await;
        let m = h.wait_status(&ids[0], "sent", 10).await;
        first.push(m);
    }
    assert_eq!(s.b.state.distinct(), 4, "every message reached the backup");
    assert_eq!(s.a.state.distinct(), 0);
    assert!(
        s.a.state.faulted.load(std::sync::atomic::Ordering::Relaxed) <= 2,
        "once the breaker opened, no more calls went to the failing primary"
    );
    assert!(
        kinds(&first[0]).contains(&"failover".to_string()),
        "{:?}",
        kinds(&first[0])
    );
    assert_eq!(first[3]["deliveries"][0]["provider"], "backup");
    let (_, p) = h.get("/v1/providers").await;
    assert_eq!(p["providers"][0]["breaker"]["state"], "open", "{p}");

    // The primary recovers; after the cooldown a probe goes to it, succeeds, and traffic
    // comes back.
    s.a.state.set_fault(Fault::Ok);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, p) = h.get("/v1/providers").await;
        if p["providers"][0]["breaker"]["state"] == "half_open" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the breaker never half-opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 4..8 {
        let ids = h
            .trigger("welcome", json!(format!("u{i}")), json!({}))
            .await;
        let m = h.wait_status(&ids[0], "sent", 10).await;
        assert_eq!(m["deliveries"][0]["provider"], "primary", "{m:#}");
    }
    assert_eq!(s.a.state.distinct(), 4);
    let (_, p) = h.get("/v1/providers").await;
    assert_eq!(p["providers"][0]["breaker"]["state"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_retry_after_not_treated_as_final() {
    let s = stubs().await;
    let h = start(EMAIL, &s).await;
    h.subscriber("u", json!({"email": "u@example.com"})).await;
    s.a.state.fault_next(2, Fault::RateLimit { secs: 1 });
    let started = std::time::Instant::now();
    let ids = h.trigger("welcome", json!("u"), json!({})).await;
    let m = h.wait_status(&ids[0], "sent", 15).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "two Retry-After: 1 waits honoured, took {waited:?}"
    );
    assert_eq!(
        m["deliveries"][0]["provider"], "primary",
        "a 429 is not a failover"
    );
    assert_eq!(
        kinds(&m).iter().filter(|k| *k == "deferred").count(),
        2,
        "{:?}",
        kinds(&m)
    );
    assert_eq!(s.b.state.distinct(), 0);
    let (_, p) = h.get("/v1/providers").await;
    assert_eq!(
        p["providers"][0]["breaker"]["state"], "closed",
        "429s do not open the breaker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opted_out_subscriber_gets_nothing_and_the_activity_says_why() {
    let s = stubs().await;
    let h = start(EMAIL, &s).await;
    h.subscriber("out", json!({"email": "out@example.com"}))
        .await;
    let (st, p) = h
        .patch(
            "/v1/subscribers/out/preferences",
            json!({"workflows": {"welcome": {"channels": {"email": false}}}}),
        )
        .await;
    assert_eq!(st, 200, "{p}");
    let ids = h.trigger("welcome", json!("out"), json!({})).await;
    let m = h.wait_status(&ids[0], "skipped", 10).await;
    let why = m["activity"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["kind"] == "skipped"))
        .map(|e| e["detail"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    assert_eq!(why, "the subscriber turned email off for workflow welcome");
    assert_eq!(
        s.a.state.calls.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_trigger_sent_twice_runs_once() {
    let s = stubs().await;
    let h = start(EMAIL, &s).await;
    h.subscriber("u", json!({"email": "u@example.com"})).await;
    let body = json!({"workflow": "welcome", "to": "u", "payload": {"order": 1}});
    let send = |b: serde_json::Value| {
        h.http
            .post(format!("{}/v1/trigger", h.url))
            .header("Idempotency-Key", "order-1-welcome")
            .json(&b)
            .send()
    };
    let first = send(body.clone()).await.expect("first");
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.expect("json");
    let again = send(body.clone()).await.expect("again");
    assert_eq!(again.status(), 200);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let again: serde_json::Value = again.json().await.expect("json");
    assert_eq!(first, again, "the repeat returns the first result");
    let other = send(json!({"workflow": "welcome", "to": "u", "payload": {"order": 2}}))
        .await
        .expect("other");
    assert_eq!(other.status(), 422, "one key, another body");
    let id = first["messages"][0].as_str().expect("id");
    h.wait_status(id, "sent", 10).await;
    assert!(s
        .a
        .state
        .wait_for(Duration::from_millis(300), |a| a.len() > 1)
        .await
        .eq(&false));
    assert_eq!(s.a.state.distinct(), 1, "one message sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_out_of_attempts_is_dead_until_redriven() {
    let s = stubs().await;
    let h = start(EMAIL, &s).await;
    h.subscriber("u", json!({"email": "u@example.com"})).await;
    s.a.state.set_fault(Fault::Status { code: 500 });
    s.b.state.set_fault(Fault::Status { code: 502 });
    let ids = h.trigger("welcome", json!("u"), json!({})).await;
    let m = h.wait_status(&ids[0], "dead", 20).await;
    assert!(kinds(&m).contains(&"dead".to_string()), "{:?}", kinds(&m));
    s.a.state.set_fault(Fault::Ok);
    s.b.state.set_fault(Fault::Ok);
    let (st, r) = h.post("/v1/redrive", json!({})).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["redriven_deliveries"], 1, "{r}");
    let m = h.wait_status(&ids[0], "sent", 20).await;
    assert_eq!(s.a.state.distinct() + s.b.state.distinct(), 1, "{m:#}");
}

const DIGEST: &str = r#"
[[providers]]
id = "mail"
type = "sendgrid"
url = "{A}"

[[workflows]]
id = "comments"
[[workflows.steps]]
type = "digest"
window = "1500ms"
key = "{{ payload.post }}"
[[workflows.steps]]
type = "email"
template.en = { subject = "{{ digest.count }} new comments", body = "{% for e in digest.events %}{{ e.n }};{% endfor %}" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_of_100_events_is_sent_once_with_every_event() {
    let s = stubs().await;
    let h = start(DIGEST, &s).await;
    h.subscriber("u", json!({"email": "u@example.com"})).await;
    // 100 events at once, from many tasks, as concurrent webhooks would send them.
    let mut tasks = Vec::new();
    for n in 0..100 {
        let http = h.http.clone();
        let url = h.url.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{url}/v1/trigger"))
                .json(
                    &json!({"workflow": "comments", "to": "u", "payload": {"post": "p1", "n": n}}),
                )
                .send()
                .await
                .expect("trigger");
            assert_eq!(r.status(), 202);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert!(
        s.a.state
            .wait_for(Duration::from_secs(15), |a| !a.is_empty())
            .await,
        "the digest was sent"
    );
    // Nothing more comes: the other 99 runs ended in the digest.
    assert!(
        !s.a.state
            .wait_for(Duration::from_millis(1_000), |a| a.len() > 1)
            .await
    );
    let got = s.a.state.accepted();
    assert_eq!(got.len(), 1);
    let one = got.values().next().expect("one");
    assert_eq!(one.times, 1, "sent once");
    assert_eq!(one.subject.as_deref(), Some("100 new comments"));
    let mut ns: Vec<u32> = one
        .body
        .split(';')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().expect("n"))
        .collect();
    ns.sort();
    assert_eq!(ns, (0..100).collect::<Vec<_>>(), "every event is in it");
    let (_, feed) = h
        .get("/v1/activity?workflow=comments&status=digested&limit=1000")
        .await;
    assert_eq!(feed["items"].as_array().map(Vec::len), Some(99));
}

const FLOW: &str = r#"
[[providers]]
id = "sms"
type = "twilio"
url = "{A}"
account = "AC123"
from = "+15550000000"

[[providers]]
id = "mail"
type = "smtp"
url = "{SMTP}"
from = "Acme <no-reply@acme.test>"

[[workflows]]
id = "alert"
[[workflows.steps]]
type = "throttle"
limit = 2
window = "1h"
[[workflows.steps]]
type = "branch"
if = "subscriber.data.plan == 'pro'"
then = [ { type = "sms", template.en = { body = "PRO alert: {{ payload.what }}" } } ]
else = [ { type = "delay", for = "300ms" }, { type = "email", template.en = { subject = "Alert", body = "{{ payload.what }}" } } ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_delays_throttles_sms_and_smtp() {
    let s = stubs().await;
    let h = start(FLOW, &s).await;
    h.subscriber(
        "pro",
        json!({"phone": "+15551234567", "data": {"plan": "pro"}}),
    )
    .await;
    h.subscriber(
        "free",
        json!({"email": "free@example.com", "data": {"plan": "free"}}),
    )
    .await;
    let pro = h
        .trigger("alert", json!("pro"), json!({"what": "disk"}))
        .await;
    let free = h
        .trigger("alert", json!("free"), json!({"what": "cpu"}))
        .await;
    let m = h.wait_status(&pro[0], "sent", 10).await;
    assert_eq!(m["deliveries"][0]["channel"], "sms");
    let m = h.wait_status(&free[0], "sent", 10).await;
    assert_eq!(m["deliveries"][0]["channel"], "email");
    assert!(kinds(&m).contains(&"delayed".to_string()));
    let sms = s.a.state.accepted();
    assert_eq!(
        sms.values().next().map(|a| a.body.as_str()),
        Some("PRO alert: disk")
    );
    let mail = s.smtp.state.accepted();
    let one = mail.values().next().expect("an email over SMTP");
    assert_eq!(one.to, "free@example.com");
    assert_eq!(one.subject.as_deref(), Some("Alert"));
    // The throttle: two alerts an hour per subscriber.
    let second = h
        .trigger("alert", json!("pro"), json!({"what": "mem"}))
        .await;
    h.wait_status(&second[0], "sent", 10).await;
    let third = h
        .trigger("alert", json!("pro"), json!({"what": "net"}))
        .await;
    h.wait_status(&third[0], "throttled", 10).await;
    assert_eq!(s.a.state.distinct(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_field_named_and_changes_nothing() {
    let s = stubs().await;
    let h = start(EMAIL, &s).await;
    let (st, v) = h
        .put("/v1/subscribers/u1", json!({"email": "not an address"}))
        .await;
    assert_eq!((st, v["field"].as_str()), (422, Some("email")));
    assert_eq!(h.get("/v1/subscribers/u1").await.0, 404, "nothing stored");
    let (st, v) = h
        .post("/v1/trigger", json!({"workflow": "nope", "to": "u1"}))
        .await;
    assert_eq!((st, v["field"].as_str()), (422, Some("workflow")));
    let (st, v) = h
        .post(
            "/v1/trigger",
            json!({"workflow": "welcome", "to": {"topic": "none"}}),
        )
        .await;
    assert_eq!((st, v["field"].as_str()), (422, Some("to.topic")));
    let (st, v) = h
        .post(
            "/v1/trigger",
            json!({"workflow": "welcome", "to": ["ok", "bad id"]}),
        )
        .await;
    assert_eq!((st, v["field"].as_str()), (422, Some("to[1]")));
    let (st, v) = h
        .put("/v1/workflows/w2", json!({"id": "w2", "steps": [{"type": "email", "template": {"en": {"subject": "{{ x", "body": "b"}}}]}))
        .await;
    assert_eq!(
        (st, v["field"].as_str()),
        (422, Some("steps[0].template.en.subject")),
        "{v}"
    );
    assert_eq!(h.get("/v1/workflows/w2").await.0, 404);
    let (st, _) = h
        .put(
            "/v1/workflows/welcome",
            json!({"id": "welcome", "steps": []}),
        )
        .await;
    assert_eq!(st, 409, "file workflows are read-only");
    let r = h
        .http
        .post(format!("{}/v1/trigger", h.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let (_, feed) = h.get("/v1/activity").await;
    assert_eq!(
        feed["items"].as_array().map(Vec::len),
        Some(0),
        "no message was made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_fans_out_to_every_member_in_pages() {
    let s = stubs().await;
    let toml = EMAIL.replace("[pipeline]", "[pipeline]\nrun_batch = 7");
    let h = start(&toml, &s).await;
    let subs: Vec<_> = (0..50)
        .map(|i| json!({"id": format!("m{i:02}"), "email": format!("m{i}@example.com")}))
        .collect();
    let (st, _) = h
        .post("/v1/subscribers", json!({"subscribers": subs}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        h.put("/v1/topics/news", json!({"name": "News"})).await.0,
        200
    );
    let ids: Vec<_> = (0..50).map(|i| format!("m{i:02}")).collect();
    assert_eq!(
        h.post("/v1/topics/news/subscribers", json!({"subscribers": ids}))
            .await
            .0,
        200
    );
    let (st, v) = h
        .post(
            "/v1/trigger",
            json!({"workflow": "welcome", "to": {"topic": "news"}}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    assert!(
        s.a.state
            .wait_for(Duration::from_secs(20), |a| a.len() == 50)
            .await,
        "all 50 sent"
    );
    let tid = v["id"].as_str().expect("trigger id");
    let (_, t) = h.get(&format!("/v1/triggers/{tid}")).await;
    assert_eq!(t["messages"], 50, "{t}");
    assert_eq!(t["fanned_out"], true);
}

const PRIORITY: &str = r#"
[pipeline]
run_batch = 500
send_batch = 100

[[providers]]
id = "mail"
type = "sendgrid"
url = "{A}"
batch = 100
concurrency = 4

[[workflows]]
id = "newsletter"
[[workflows.steps]]
type = "email"
template.en = { subject = "News", body = "Issue {{ payload.issue }}" }

[[workflows]]
id = "password-reset"
class = "transactional"
critical = true
[[workflows.steps]]
type = "email"
template.en = { subject = "Reset", body = "Code {{ payload.code }}" }
"#;

/// Head-of-line blocking (Novu's password resets stuck behind marketing sends): a
/// transactional message triggered while a bulk send drains overtakes every queued bulk
/// delivery. What may still go ahead of it is only what was already in flight: the
/// provider's 4 concurrent calls of 100 plus the jobs the workers had fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_overtakes_a_bulk_send_in_progress() {
    let s = stubs().await;
    let h = start(PRIORITY, &s).await;
    let bulk = 20_000;
    let subs: Vec<_> = (0..bulk)
        .map(|i| json!({"id": format!("b{i:05}"), "email": format!("b{i}@example.com")}))
        .collect();
    for chunk in subs.chunks(10_000) {
        assert_eq!(
            h.post("/v1/subscribers", json!({"subscribers": chunk}))
                .await
                .0,
            200
        );
        let ids: Vec<_> = chunk.iter().map(|s| s["id"].clone()).collect();
        assert_eq!(h.put("/v1/topics/all", json!({})).await.0, 200);
        assert_eq!(
            h.post("/v1/topics/all/subscribers", json!({"subscribers": ids}))
                .await
                .0,
            200
        );
    }
    h.subscriber("alice", json!({"email": "alice@example.com"}))
        .await;
    s.a.state.set_fault(Fault::Slow { ms: 25 });
    let (st, v) = h
        .post(
            "/v1/trigger",
            json!({"workflow": "newsletter", "to": {"topic": "all"}, "payload": {"issue": 1}}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    assert!(
        s.a.state
            .wait_for(Duration::from_secs(60), |a| a.len() >= 2_000)
            .await,
        "the bulk send is under way"
    );
    let ids = h
        .trigger("password-reset", json!("alice"), json!({"code": 1234}))
        .await;
    let key = format!("{}/0/0", ids[0]);
    let before = s.a.state.distinct();
    assert!(
        s.a.state
            .wait_for(Duration::from_secs(60), |a| a.contains_key(&key))
            .await,
        "the reset was delivered"
    );
    let ahead = s.a.state.distinct() - 1 - before;
    assert!(
        before + ahead + 1 < bulk + 1,
        "the reset did not wait for the bulk send to finish"
    );
    assert!(
        ahead <= 2_000,
        "{ahead} bulk deliveries went ahead of the reset; at most the in-flight ones may"
    );
}

const CHANNELS: &str = r#"
[[providers]]
id = "mail"
type = "sendgrid"
url = "{A}"

[[providers]]
id = "sms"
type = "twilio"
url = "{B}"
account = "AC1"

[[workflows]]
id = "order"
[[workflows.steps]]
type = "email"
template.en = { subject = "Order", body = "confirmed" }
[[workflows.steps]]
type = "sms"
template.en = { body = "confirmed" }
[[workflows.steps]]
type = "delay"
for = "100ms"
[[workflows.steps]]
type = "email"
template.en = { subject = "Shipped", body = "on its way" }
"#;

/// Regression: a message's email and SMS sends ran as two jobs at once and each wrote the
/// whole message back, so one delivery's "sent" was lost; and a send finishing during a
/// delay step settled the message, so the run after the delay never went on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_and_a_delay_keep_every_delivery_of_a_message() {
    let s = stubs().await;
    let h = start(CHANNELS, &s).await;
    for i in 0..20 {
        h.subscriber(
            &format!("c{i}"),
            json!({"email": format!("c{i}@example.com"), "phone": "+15551234567"}),
        )
        .await;
    }
    // The SMS provider answers after the delay step has begun.
    s.b.state.set_fault(Fault::Slow { ms: 150 });
    let ids = h
        .trigger(
            "order",
            json!((0..20).map(|i| format!("c{i}")).collect::<Vec<_>>()),
            json!({}),
        )
        .await;
    for id in &ids {
        let m = h
            .wait_message(id, 20, |v| v["status"] == "sent" || v["status"] == "failed")
            .await;
        let st: Vec<_> = m["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .map(|d| d["status"].clone())
            .collect();
        assert_eq!(st, [json!("sent"), json!("sent"), json!("sent")], "{m:#}");
    }
    assert_eq!(s.a.state.distinct(), 40);
    assert_eq!(s.b.state.distinct(), 20);
}

const LIMITED: &str = r#"
[[providers]]
id = "sms"
type = "twilio"
url = "{A}"
account = "AC1"
rate_limit = { limit = 5, period = "1s", burst = 5 }

[[workflows]]
id = "ping"
[[workflows.steps]]
type = "sms"
template.en = { body = "ping {{ payload.n }}" }
"#;

/// A provider's rate limit is Weir's, on its queue: 15 messages at 5 calls a second (bursts
/// of 5) take at least two seconds, and no second holds more than the burst plus the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_rate_limit_holds() {
    let s = stubs().await;
    let h = start(LIMITED, &s).await;
    let subs: Vec<String> = (0..15).map(|i| format!("p{i:02}")).collect();
    for id in &subs {
        h.subscriber(id, json!({"phone": "+15551230000"})).await;
    }
    h.trigger("ping", json!(subs), json!({"n": 1})).await;
    assert!(
        s.a.state
            .wait_for(Duration::from_secs(30), |a| a.len() == 15)
            .await,
        "all 15 sent"
    );
    let mut at: Vec<u64> = s.a.state.accepted().values().map(|a| a.at_ms).collect();
    at.sort();
    let span = at[14] - at[0];
    assert!(
        span >= 1_800,
        "15 calls at 5/s (burst 5) took only {span} ms"
    );
    for (i, &t) in at.iter().enumerate() {
        let in_window = at[i..].iter().take_while(|&&u| u < t + 1_000).count();
        assert!(
            in_window <= 10,
            "{in_window} calls within one second from {t}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_while_the_first_is_in_flight_gets_409_and_stats_count_outcomes() {
    let s = stubs().await;
    let h = start(EMAIL, &s).await;
    h.subscriber("u", json!({"email": "u@example.com"})).await;
    let body = json!({"workflow": "welcome", "to": "u"});
    let fp = {
        // What the API fingerprints: the body's bytes as sent.
        let bytes = serde_json::to_vec(&body).expect("json");
        notify::store::fnv1a(bytes)
    };
    // A first request is in flight (claimed, no reply yet).
    let claim = notify::store::Idempotency {
        trigger: 1,
        fingerprint: fp,
        at_ms: notify::pipeline::now_ms(),
        reply: None,
    };
    assert!(h
        .notify
        .store
        .claim_idempotency("k1", &claim)
        .expect("claim")
        .is_none());
    let r = h
        .http
        .post(format!("{}/v1/trigger", h.url))
        .header("Idempotency-Key", "k1")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // Sends are counted in the day's aggregates.
    for _ in 0..3 {
        let ids = h.trigger("welcome", json!("u"), json!({})).await;
        h.wait_status(&ids[0], "sent", 10).await;
    }
    let (st, v) = h.get("/v1/stats?workflow=welcome").await;
    assert_eq!(st, 200, "{v}");
    let sent: u64 = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["outcome"] == "sent" && r["provider"] == "primary" && r["channel"] == "email")
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(sent, 3, "{v}");
    // The activity feed pages with a cursor.
    let (_, p1) = h.get("/v1/activity?subscriber=u&limit=2").await;
    assert_eq!(p1["items"].as_array().map(Vec::len), Some(2));
    let cursor = p1["next_cursor"].as_str().expect("a cursor").to_string();
    let (_, p2) = h
        .get(&format!(
            "/v1/activity?subscriber=u&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(p2["items"].as_array().map(Vec::len), Some(1));
    assert!(p2.get("next_cursor").is_none(), "{p2}");
    assert_eq!(h.get("/v1/stats?from=2026-13-01").await.0, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployments_with_their_own_queue_prefix_share_one_weir() {
    let weir_dir = tempfile::tempdir().expect("tempdir");
    let weir = weir_server::embedded::start(weir_dir.path(), std::future::pending())
        .await
        .expect("a Weir server")
        .url;
    let (sa, sb) = (stubs().await, stubs().await);
    let with_prefix = |p: &str| {
        EMAIL.replace(
            "[pipeline]\n",
            &format!("[pipeline]\nqueue_prefix = \"{p}\"\n"),
        )
    };
    let dir = || tempfile::tempdir().expect("tempdir");
    let a = start_on(&with_prefix("tenant-a"), &sa, dir(), Some(weir.clone())).await;
    let b = start_on(&with_prefix("tenant-b"), &sb, dir(), Some(weir.clone())).await;
    for h in [&a, &b] {
        for i in 0..5 {
            h.subscriber(
                &format!("u{i}"),
                json!({"email": format!("u{i}@example.com")}),
            )
            .await;
        }
    }
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push((
            "a",
            a.trigger("welcome", json!(format!("u{i}")), json!({}))
                .await,
        ));
        ids.push((
            "b",
            b.trigger("welcome", json!(format!("u{i}")), json!({}))
                .await,
        ));
    }
    // Each deployment's messages are sent by its own workers, to its own providers: the other
    // deployment's workers never took its jobs (they would not find the messages).
    for (who, m) in &ids {
        let h = if *who == "a" { &a } else { &b };
        h.wait_status(&m[0], "sent", 20).await;
    }
    assert_eq!(sa.a.state.distinct() + sa.b.state.distinct(), 5);
    assert_eq!(sb.a.state.distinct() + sb.b.state.distinct(), 5);
    let client = weir_client::Client::new(&weir).expect("client");
    let queues: Vec<String> = client
        .queues()
        .await
        .expect("queues")
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert!(queues.iter().any(|q| q == "tenant-a.run.tx"), "{queues:?}");
    assert!(
        queues.iter().any(|q| q.starts_with("tenant-b.send.")),
        "{queues:?}"
    );
    assert!(
        !queues.iter().any(|q| q.starts_with("notify.")),
        "{queues:?}"
    );
}
