//! Cron through the real binary: an entry set with `weir cron set` ticks every second, the
//! server is killed with SIGKILL and restarted on the same data, and every tick was
//! enqueued exactly once (its unique key `cron:<name>:<tick>` appears once), before and
//! after the restart.

#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

fn weir(base: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("--server")
        .arg(base)
        .args(args)
        .output()
        .unwrap()
}

/// The ticks of the jobs in queue `ticks`, failing on a tick enqueued twice.
async fn ticks(c: &weir_client::Client) -> Vec<u64> {
    let page = c.jobs(Some("ticks"), None, None, 1000).await.unwrap();
    let mut seen = BTreeSet::new();
    for j in &page.jobs {
        let key = j.unique_key.as_deref().unwrap();
        let tick: u64 = key.strip_prefix("cron:tick:").unwrap().parse().unwrap();
        assert!(seen.insert(tick), "tick {tick} enqueued twice");
        assert_eq!(tick % 1000, 0, "ticks are whole seconds");
    }
    seen.into_iter().collect()
}

async fn wait_for_ticks(c: &weir_client::Client, n: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = ticks(c).await;
        if t.len() >= n {
            return t;
        }
        assert!(Instant::now() < deadline, "only {} ticks: {t:?}", t.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_is_enqueued_once_across_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[], &[]);
    let o = weir(
        &server.base,
        &[
            "cron",
            "set",
            "tick",
            "* * * * * *",
            "ticks",
            "t",
            r#"{"n":1}"#,
        ],
    );
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("tick next at "));
    let before = wait_for_ticks(&server.client(), 3).await;

    server.kill9();
    let server = Server::start(dir.path(), &[], &[]);
    let c = server.client();
    let after = wait_for_ticks(&c, before.len() + 3).await;
    assert!(
        after.starts_with(&before),
        "the ticks before the kill survived it"
    );
    let o = weir(&server.base, &["--json", "cron", "ls"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["name"], "tick", "{v}");
    let last = v[0]["last_tick_ms"].as_u64().unwrap();
    assert!(last >= *after.last().unwrap(), "{v}");
    // Removing the entry stops it.
    assert!(weir(&server.base, &["cron", "rm", "tick"]).status.success());
    let o = weir(&server.base, &["cron", "rm", "tick"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = weir(&server.base, &["cron", "set", "x", "never", "q", "k"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("schedule"),
        "{o:?}"
    );
}
