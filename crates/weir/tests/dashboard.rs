//! The dashboard in a real browser, driven the way an operator uses it: headless Chromium
//! loads `/` from the real binary (tokens configured), and through the DevTools protocol the
//! test types the token into the sign-in form, clicks a queue's Pause button on the
//! overview, opens a dead job and clicks Retry, opens a queue and reads its charts' axes,
//! and checks that a kind, payload and error written as HTML (`<img src=x onerror=…>`) stay
//! text. Clicks and typing are real input events at the element's place on the page.
//! Screenshots of each page go to `target/test-artifacts/dashboard/`.
//!
//! Needs Chromium (`chromium`, or the path in `CHROMIUM_BIN`). Without one the test says so
//! and passes, so that `cargo test` works on a machine with only a Rust toolchain; CI installs
//! Chromium and sets `REQUIRE_BROWSER_TEST=1`, which turns a missing browser into a failure.
//! (Not `WEIR_*` names: the server refuses `WEIR_*` variables it does not know, and it
//! inherits the test's environment.)

#![allow(clippy::unwrap_used)]

mod common;

use common::{raw, Server};
use serde_json::json;
use std::path::PathBuf;
use weir_api::{AckItem, CronBody, FailItem, Missed, NewJobBody};

const TOKEN: &str = "dashboard-test-token-0123456789";
const XSS_KIND: &str = "<img src=x onerror=\"window.__xss='kind'\">";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_pauses_a_queue_retries_a_dead_job_and_reads_the_charts() {
    let Some(bin) = weir_browser::required() else {
        return;
    };
    let shots =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts/dashboard");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.toml");
    std::fs::write(
        &cfg,
        format!("[[tokens]]\nname = \"ops\"\ntoken = \"{TOKEN}\"\nrights = \"admin\"\n"),
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
        &[],
    );
    let c = server.client().with_token(TOKEN);
    let job = |q: &str, kind: &str| NewJobBody::new(q, kind, raw(json!({"n": 1})));

    // mail: 3 jobs, one running. reports: one completed, one dead with an error written as
    // HTML, and one whose kind and payload are HTML.
    c.enqueue((0..3).map(|_| job("mail", "send")).collect())
        .await
        .unwrap();
    assert_eq!(c.fetch(&["mail".into()], 1, 0, "w").await.unwrap().len(), 1);
    let ids = c
        .enqueue(vec![job("reports", "daily"), job("reports", "daily")])
        .await
        .unwrap();
    let got = c.fetch(&["reports".into()], 2, 0, "w").await.unwrap();
    let ack = AckItem {
        id: got[0].id,
        lease_id: got[0].lease_id,
        result: None,
    };
    assert_eq!(c.ack(vec![ack]).await.unwrap().acked, 1);
    let dead = got[1].id;
    let fail = FailItem {
        id: dead,
        lease_id: got[1].lease_id,
        error: "<img src=x onerror=\"window.__xss='error'\"> upstream 503".into(),
        retry: false,
    };
    assert_eq!(c.fail(vec![fail]).await.unwrap().failed, Some(1));
    assert!(ids.contains(&dead));
    let xss = c
        .enqueue(vec![NewJobBody::new(
            "reports",
            XSS_KIND,
            raw(json!({"html": "<script>window.__xss='payload'</script>"})),
        )])
        .await
        .unwrap()[0];
    c.cron_set(
        "nightly",
        &CronBody {
            schedule: "0 3 * * *".into(),
            timezone: "Europe/Paris".into(),
            job: job("reports", "daily"),
            missed: Missed::Skip,
        },
    )
    .await
    .unwrap();

    // The page is sent with a strict Content-Security-Policy.
    let page = reqwest::get(format!("{}/", server.base)).await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");

    let base = server.base.clone();
    let client = c.clone();
    let shots = shots.clone();
    tokio::task::spawn_blocking(move || {
        let mut b = weir_browser::Browser::launch(&bin);
        b.goto(&format!("{base}/"));
        // Tokens are configured: the page asks for one instead of failing.
        b.wait_until("the sign-in form", "!document.getElementById('signin').hidden");
        b.screenshot(&shots, "signin");
        b.type_into("#token", TOKEN);
        b.click("#signin button[type=submit]");
        b.wait_until("the queues table", "document.querySelector('tr[data-queue=\"mail\"]')");
        let cells = b.eval(
            "[...document.querySelectorAll('tr[data-queue=\"mail\"] td')].slice(1, 8).map(t => t.textContent)",
        );
        assert_eq!(cells, json!(["2", "0", "1", "0", "0", "0", "0"]), "mail's counts");
        b.screenshot(&shots, "overview");

        // Pause a queue from the overview.
        b.click("#pause-mail");
        b.wait_until(
            "mail shown paused",
            "document.querySelector('tr[data-queue=\"mail\"] .paused') && document.querySelector('#resume-mail')",
        );

        // A dead job's page: its error as text; Retry puts it back to waiting.
        b.goto(&format!("{base}/#/jobs/{dead}"));
        b.wait_until("the job page", &format!("document.querySelector('main h2') && document.querySelector('main h2').textContent === 'Job {dead}'"));
        let error = b.eval("document.querySelector('table.errors td.text').textContent");
        assert!(error.as_str().unwrap().starts_with("<img src=x onerror="), "{error}");
        b.screenshot(&shots, "job");
        b.click("#retry");
        b.wait_until("the job waiting again", "document.querySelector('td.state').textContent === 'waiting'");

        // A job whose kind and payload are HTML: shown as text, nothing ran.
        b.goto(&format!("{base}/#/jobs/{xss}"));
        b.wait_until("the HTML job's page", &format!("document.querySelector('main h2') && document.querySelector('main h2').textContent === 'Job {xss}'"));
        assert!(b.eval("document.body.innerText").as_str().unwrap().contains(XSS_KIND));
        assert!(b.eval("document.getElementById('payload').textContent").as_str().unwrap().contains("<script>"));
        assert_eq!(b.eval("document.querySelectorAll('main img, main script').length"), json!(0));
        assert_eq!(b.eval("window.__xss === undefined"), json!(true), "no injected script ran");

        // A queue's page: every chart drawn with a titled unit, y ticks and time labels.
        b.goto(&format!("{base}/#/queues/reports"));
        b.wait_until("the queue's charts", "document.querySelectorAll('svg.chart').length === 5");
        b.wait_until("a second sample", "document.querySelector('#chart-rates polyline') && document.querySelector('#chart-rates polyline').getAttribute('points').split(' ').length >= 2");
        for id in ["chart-rates", "chart-wait", "chart-run", "chart-depth", "chart-breaker"] {
            let axes = b.eval(&format!(
                "(() => {{ const c = document.getElementById('{id}'); return [
                    c.querySelector('.title').textContent,
                    c.querySelectorAll('text.ytick').length,
                    [...c.querySelectorAll('text.xtick')].map(t => t.textContent),
                    c.querySelector('.xlabel').textContent]; }})()"
            ));
            assert!(axes[0].as_str().unwrap().contains('('), "{id}: a unit in {axes}");
            assert_eq!(axes[1], 5, "{id}: y ticks {axes}");
            let xs = axes[2].as_array().unwrap();
            assert_eq!(xs.len(), 3, "{id}: {axes}");
            assert!(xs.iter().all(|t| t.as_str().unwrap().len() == 8), "{id}: HH:MM:SS labels {axes}");
            assert_eq!(axes[3], "time (UTC)");
        }
        let settings = b.eval("document.querySelector('table.kv').innerText");
        for want in ["concurrency", "rate limit", "circuit breaker", "max depth", "retention"] {
            assert!(settings.as_str().unwrap().contains(want), "{want} in {settings}");
        }
        b.screenshot(&shots, "queue");

        // The cron view, with the next run.
        b.goto(&format!("{base}/#/cron"));
        b.wait_until("the cron table", "document.querySelector('tr[data-cron=\"nightly\"]')");
        let row = b.eval("document.querySelector('tr[data-cron=\"nightly\"]').innerText");
        assert!(row.as_str().unwrap().contains("Europe/Paris") && row.as_str().unwrap().contains("UTC"), "{row}");
        b.screenshot(&shots, "cron");
        b.goto(&format!("{base}/#/cache"));
        b.wait_until("the cache table", "document.querySelector('table.cache tbody tr')");
        b.screenshot(&shots, "cache");
        assert_eq!(b.eval("document.getElementById('error').textContent"), json!(""));
    })
    .await
    .unwrap();

    // What the clicks did, as the API sees it.
    assert!(
        client.queue("mail").await.unwrap().paused,
        "paused from the overview"
    );
    assert_eq!(
        client.job(dead).await.unwrap().state,
        "waiting",
        "retried from its page"
    );
}
