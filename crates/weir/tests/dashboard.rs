//! The dashboard in a real browser: headless Chromium loads `/` from the real binary, runs
//! the page's JavaScript against the API, and the rendered DOM must show each queue's counts,
//! its pause and the cache tiers, with no refresh error.
//!
//! Needs Chromium (`chromium`, or the path in `CHROMIUM_BIN`). Without one the test says so
//! and passes, so that `cargo test` works on a machine with only a Rust toolchain; CI installs
//! Chromium and sets `REQUIRE_BROWSER_TEST=1`, which turns a missing browser into a failure.
//! (Not `WEIR_*` names: the server refuses `WEIR_*` variables it does not know, and it
//! inherits the test's environment.)

#![allow(clippy::unwrap_used)]

mod common;

use common::{raw, Server};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir_api::{AckItem, FailItem, NewJobBody};

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CHROMIUM_BIN") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// The DOM after the page has run for `budget_ms` of virtual time, whitespace between tags
/// removed so rows read as one string.
fn rendered_dom(browser: &PathBuf, url: &str, budget_ms: u64) -> String {
    let profile = tempfile::tempdir().unwrap();
    // The flags a sandboxed, offline machine needs: no sandbox (root), no GPU, and none of
    // Chromium's background connections, which this network refuses.
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut squeezed = String::with_capacity(dom.len());
    let mut pending_space = String::new();
    let mut after_tag = false;
    for ch in dom.chars() {
        if ch.is_whitespace() {
            pending_space.push(ch);
            continue;
        }
        if !(after_tag && ch == '<') {
            squeezed.push_str(&pending_space);
        }
        pending_space.clear();
        squeezed.push(ch);
        after_tag = ch == '>';
    }
    squeezed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_queues_and_cache_in_a_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("REQUIRE_BROWSER_TEST").is_err(),
            "REQUIRE_BROWSER_TEST is set but no Chromium was found (set CHROMIUM_BIN)"
        );
        eprintln!("skipped: no Chromium on PATH (install chromium or set CHROMIUM_BIN)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let c = server.client();
    let job = |q: &str| NewJobBody::new(q, "t", raw(serde_json::json!({})));

    // mail: 3 jobs, one of them running. reports: one completed, one dead, then paused.
    c.enqueue((0..3).map(|_| job("mail")).collect())
        .await
        .unwrap();
    let running = c.fetch(&["mail".into()], 1, 0, "w").await.unwrap();
    assert_eq!(running.len(), 1);
    c.enqueue((0..2).map(|_| job("reports")).collect())
        .await
        .unwrap();
    let got = c.fetch(&["reports".into()], 2, 0, "w").await.unwrap();
    assert_eq!(got.len(), 2);
    let ack = AckItem {
        id: got[0].id,
        lease_id: got[0].lease_id,
        result: None,
    };
    assert_eq!(c.ack(vec![ack]).await.unwrap().acked, 1);
    let fail = FailItem {
        id: got[1].id,
        lease_id: got[1].lease_id,
        error: "no".into(),
        retry: false,
    };
    assert_eq!(c.fail(vec![fail]).await.unwrap().acked, 1);
    c.pause("reports").await.unwrap();
    c.cache_set("pages", "home", b"<html>".to_vec(), None, &[], &[])
        .await
        .unwrap();
    assert!(c.cache_get("pages", "home").await.unwrap().is_some());

    let url = format!("{}/", server.base);
    let dom = tokio::task::spawn_blocking(move || rendered_dom(&browser, &url, 5_000))
        .await
        .unwrap();
    let row = |cells: &[&str]| {
        cells
            .iter()
            .map(|c| format!("<td>{c}</td>"))
            .collect::<String>()
    };
    // queue, waiting, scheduled, active, failed, completed, dead, cancelled
    let mail = format!("<tr>{}", row(&["mail", "2", "0", "1", "0", "0", "0", "0"]));
    assert!(dom.contains(&mail), "no mail row {mail} in:\n{dom}");
    let reports = format!(
        "<tr><td>reports <span class=\"paused\">paused</span></td>{}",
        row(&["0", "0", "0", "0", "1", "1", "0"])
    );
    assert!(
        dom.contains(&reports),
        "no reports row {reports} in:\n{dom}"
    );
    assert!(!dom.contains("loading…"), "a table never filled in:\n{dom}");
    assert!(
        dom.contains("<div id=\"error\" class=\"err\"></div>"),
        "the page reported an error:\n{dom}"
    );
    // The cache table: one hit in the memory tier (100 %), Redis off here.
    assert!(
        dom.contains("<tr><td>memory</td><td>100.0 %</td><td>1</td><td>0</td>"),
        "no memory-tier row in:\n{dom}"
    );
    assert!(dom.contains("<tr><td>redis</td><td colspan=\"8\">off</td></tr>"));
    assert!(
        dom.contains("<canvas id=\"chart\""),
        "the throughput chart is gone"
    );
}
