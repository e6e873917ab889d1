//! Cron entries on an injected clock: a tick is enqueued once (also when two schedulers
//! race for it), missed ticks are skipped or run once as the entry says, schedules read in
//! their time zone, and bad definitions are refused with a problem that names the field.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::call;
use serde_json::{json, Value};
use std::sync::Arc;
use weir_core::{JobFilter, ManualClock};
use weir_server::config::ServerConfig;
use weir_server::cron::{self, Schedule};
use weir_server::{app, AppState};
use weir_store::{EmbeddedOptions, EmbeddedStore, Store};

/// 2026-12-01T00:00:10Z: ten seconds past a minute.
const START: u64 = 1_796_083_210_000;
const MINUTE: u64 = 60_000;

struct Fixture {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    store: Arc<dyn Store>,
    router: axum::Router,
}

async fn setup() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(
            dir.path().join("data"),
            EmbeddedOptions {
                clock: Arc::new(clock.clone()),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let cache = weir_cache::Cache::open(weir_cache::CacheConfig {
        dir: Some(dir.path().join("cache")),
        ..Default::default()
    })
    .await
    .unwrap();
    let router = app(AppState::new(store.clone(), cache, ServerConfig::default()));
    Fixture {
        _dir: dir,
        clock,
        store,
        router,
    }
}

fn entry(schedule: &str, missed: &str) -> Value {
    json!({
        "schedule": schedule,
        "job": {"queue": "reports", "kind": "daily", "payload": {"n": 1}},
        "missed": missed,
    })
}

async fn jobs(store: &dyn Store) -> Vec<weir_core::Job> {
    store
        .job_list(JobFilter {
            queue: Some("reports".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs
}

#[tokio::test]
async fn each_tick_is_enqueued_once_even_when_two_schedulers_race() {
    let fx = setup().await;
    let (status, v) = call(
        &fx.router,
        Method::PUT,
        "/v1/cron/every-minute",
        Some(entry("* * * * *", "skip")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let first_tick = START - 10_000 + MINUTE;
    assert_eq!(v["next_tick_ms"], first_tick, "{v}");
    assert_eq!(v["timezone"], "UTC");

    // Before the tick: nothing.
    let r = cron::pass(&*fx.store, START + 1_000).await.unwrap();
    assert!(r.enqueued.is_empty() && r.skipped.is_empty(), "{r:?}");
    assert_eq!(r.next_tick_ms, Some(first_tick));

    // At the tick, two schedulers (two servers, or one repeating its pass after a crash
    // between enqueue and claim) race: one job.
    fx.clock.set(first_tick + 200);
    let (a, b) = tokio::join!(
        cron::pass(&*fx.store, first_tick + 200),
        cron::pass(&*fx.store, first_tick + 200)
    );
    let claimed = a.unwrap().enqueued.len() + b.unwrap().enqueued.len();
    assert_eq!(claimed, 1, "one scheduler claims the tick");
    let got = jobs(&*fx.store).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].unique_key.as_deref(),
        Some(&*format!("cron:every-minute:{first_tick}"))
    );
    assert!(got[0].tags.iter().any(|t| t == "cron"));
    // A pass again at the same time enqueues nothing more.
    assert!(cron::pass(&*fx.store, first_tick + 300)
        .await
        .unwrap()
        .enqueued
        .is_empty());
    let (_, v) = call(&fx.router, Method::GET, "/v1/cron/every-minute", None).await;
    assert_eq!(v["last_tick_ms"], first_tick, "{v}");
    assert_eq!(v["next_tick_ms"], first_tick + MINUTE, "{v}");

    // The next tick, a little late but on time.
    fx.clock.set(first_tick + MINUTE + 3_000);
    let r = cron::pass(&*fx.store, first_tick + MINUTE + 3_000)
        .await
        .unwrap();
    assert_eq!(
        r.enqueued,
        vec![("every-minute".to_string(), first_tick + MINUTE)]
    );
    assert_eq!(jobs(&*fx.store).await.len(), 2);
}

#[tokio::test]
async fn missed_ticks_are_skipped_or_run_once_as_the_entry_says() {
    let fx = setup().await;
    for (name, missed) in [("skipper", "skip"), ("catcher", "run_once")] {
        let (status, v) = call(
            &fx.router,
            Method::PUT,
            &format!("/v1/cron/{name}"),
            Some(entry("* * * * *", missed)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    // No server ran for ten minutes.
    let now = START + 10 * MINUTE;
    fx.clock.set(now);
    let latest = START - 10_000 + 10 * MINUTE;
    let r = cron::pass(&*fx.store, now).await.unwrap();
    assert_eq!(r.skipped, vec![("skipper".to_string(), latest)], "{r:?}");
    assert_eq!(r.enqueued, vec![("catcher".to_string(), latest)], "{r:?}");
    let got = jobs(&*fx.store).await;
    assert_eq!(
        got.len(),
        1,
        "ten missed ticks, one job for run_once, none for skip: {got:?}"
    );
    assert_eq!(
        got[0].unique_key.as_deref(),
        Some(&*format!("cron:catcher:{latest}"))
    );
    // Both go on from there on time.
    let next = latest + MINUTE;
    fx.clock.set(next + 100);
    let r = cron::pass(&*fx.store, next + 100).await.unwrap();
    assert_eq!(r.enqueued.len(), 2, "{r:?}");
    // Replacing an entry keeps its last tick: no replay.
    let (_, v) = call(
        &fx.router,
        Method::PUT,
        "/v1/cron/skipper",
        Some(entry("*/2 * * * *", "run_once")),
    )
    .await;
    assert_eq!(v["last_tick_ms"], next, "{v}");
    assert!(cron::pass(&*fx.store, next + 200)
        .await
        .unwrap()
        .enqueued
        .is_empty());
    // Deleting stops it; its jobs stay.
    let (status, _) = call(&fx.router, Method::DELETE, "/v1/cron/skipper", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, v) = call(&fx.router, Method::GET, "/v1/cron", None).await;
    let names: Vec<&str> = v["cron"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["catcher"]);
    assert_eq!(jobs(&*fx.store).await.len(), 3);
}

#[test]
fn schedules_read_in_their_time_zone_with_optional_seconds() {
    // 2026-12-01T00:00:00Z; Paris is UTC+1 in winter.
    let midnight = 1_796_083_200_000;
    let paris = Schedule::parse("0 9 * * *", "Europe/Paris").unwrap();
    assert_eq!(paris.next_after(midnight), Some(midnight + 8 * 3_600_000));
    let utc = Schedule::parse("0 9 * * *", "UTC").unwrap();
    assert_eq!(utc.next_after(midnight), Some(midnight + 9 * 3_600_000));
    let every5s = Schedule::parse("*/5 * * * * *", "UTC").unwrap();
    assert_eq!(every5s.next_after(midnight + 1), Some(midnight + 5_000));
    assert_eq!(
        every5s.latest_at_or_before(midnight + 7_000),
        Some(midnight + 5_000)
    );
    // Summer: UTC+2.
    let july = 1_782_864_000_000; // 2026-07-01T00:00:00Z
    assert_eq!(paris.next_after(july), Some(july + 7 * 3_600_000));
}

#[tokio::test]
async fn bad_definitions_are_refused_and_change_nothing() {
    let fx = setup().await;
    let cases = [
        (entry("every day", "skip"), "schedule"),
        (entry("61 * * * *", "skip"), "schedule"),
        (
            json!({"schedule": "* * * * *", "timezone": "Mars/Olympus", "job": {"queue": "q", "kind": "k", "payload": 1}}),
            "timezone",
        ),
        (
            json!({"schedule": "* * * * *", "job": {"queue": "bad name", "kind": "k", "payload": 1}}),
            "job.queue",
        ),
        (
            json!({"schedule": "* * * * *", "job": {"queue": "q", "kind": "k", "payload": 1, "delay_ms": 5}}),
            "job.delay_ms",
        ),
        (
            json!({"schedule": "* * * * *", "job": {"queue": "q", "kind": "k", "payload": 1}, "missed": "sometimes"}),
            "missed",
        ),
        (
            json!({"schedule": "* * * * *", "job": {"queue": "q", "kind": "k", "payload": 1}, "every": 5}),
            "every",
        ),
    ];
    for (body, field) in cases {
        let (status, p) = call(
            &fx.router,
            Method::PUT,
            "/v1/cron/nightly",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {p}");
        assert_eq!(p["field"], field, "{body}: {p}");
    }
    let (status, p) = call(
        &fx.router,
        Method::PUT,
        "/v1/cron/bad%20name",
        Some(entry("* * * * *", "skip")),
    )
    .await;
    assert_eq!(
        (status, p["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("name")),
        "{p}"
    );
    assert!(
        fx.store.cron_list().await.unwrap().is_empty(),
        "nothing stored"
    );
    let (status, _) = call(&fx.router, Method::GET, "/v1/cron/nightly", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&fx.router, Method::DELETE, "/v1/cron/nightly", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
