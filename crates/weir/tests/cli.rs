//! The `weir` command line against a real server: output, `--json`, and exit codes
//! (2 with one line for bad usage, 1 when the server cannot be reached).

#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn weir(server: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("--server")
        .arg(server)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn one_line_exit_2(o: &Output, what: &str) {
    assert_eq!(o.status.code(), Some(2), "{what}: {o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{what}: one line, got {err}");
    assert!(err.starts_with("weir: "), "{what}: {err}");
}

#[test]
fn push_jobs_queues_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let s = server.base.as_str();

    let o = weir(
        s,
        &[
            "push",
            "mail",
            "welcome",
            r#"{"to":"a@b.c"}"#,
            "--priority",
            "3",
        ],
        None,
    );
    assert!(o.status.success(), "{o:?}");
    let id: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();

    // NDJSON from stdin: a bad line refuses everything before anything is sent.
    let bad = "{\"queue\":\"bulk\",\"kind\":\"k\",\"payload\":1}\nnot json\n";
    one_line_exit_2(&weir(s, &["push", "--file", "-"], Some(bad)), "bad NDJSON");
    let good: String = (0..250)
        .map(|n| format!("{{\"queue\":\"bulk\",\"kind\":\"k\",\"payload\":{{\"n\":{n}}}}}\n"))
        .collect();
    let o = weir(
        s,
        &["--json", "push", "--file", "-", "--batch", "100"],
        Some(&good),
    );
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["enqueued"], 250);

    let o = weir(s, &["--json", "queues", "show", "bulk"], None);
    let q: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        q["counts"]["waiting"], 250,
        "only the good file was enqueued"
    );

    let o = weir(s, &["--json", "jobs", "show", &id.to_string()], None);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (j["queue"].as_str(), j["priority"].as_i64()),
        (Some("mail"), Some(3))
    );
    let o = weir(s, &["jobs", "cancel", &id.to_string()], None);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("cancelled"),
        "{o:?}"
    );
    let o = weir(s, &["--json", "jobs", "retry", &id.to_string()], None);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["state"], "waiting");

    let o = weir(
        s,
        &[
            "queues",
            "set",
            "bulk",
            "max_attempts=3",
            "order=smallest_cost",
        ],
        None,
    );
    assert!(o.status.success(), "{o:?}");
    let o = weir(s, &["--json", "queues", "pause", "bulk"], None);
    let q: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (q["paused"].as_bool(), q["config"]["max_attempts"].as_u64()),
        (Some(true), Some(3))
    );
    let o = weir(s, &["queues", "ls"], None);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("bulk (paused)") && table.contains("250"),
        "{table}"
    );
    let o = weir(s, &["stats", "--once"], None);
    assert!(String::from_utf8_lossy(&o.stdout).contains("mail"), "{o:?}");
    let o = weir(
        s,
        &["--json", "jobs", "ls", "--queue", "bulk", "--limit", "10"],
        None,
    );
    let page: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 10);
    assert!(page["next_cursor"].is_u64());
    let o = weir(s, &["--json", "queues", "purge", "bulk", "--yes"], None);
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(p["deleted"], 250);

    // Bad usage, and input the server refuses: exit 2, one line.
    one_line_exit_2(&weir(s, &["jobs", "show", "999999"], None), "unknown job");
    one_line_exit_2(&weir(s, &["jobs", "show", "abc"], None), "non-numeric id");
    one_line_exit_2(&weir(s, &["push", "bad name", "k"], None), "bad queue name");
    one_line_exit_2(&weir(s, &["push", "q", "k", "{oops"], None), "bad payload");
    one_line_exit_2(
        &weir(s, &["queues", "set", "q", "nope=1"], None),
        "unknown setting",
    );
    one_line_exit_2(
        &weir(s, &["queues", "purge", "mail"], None),
        "purge without --yes",
    );
    one_line_exit_2(&weir(s, &["frobnicate"], None), "unknown command");
    one_line_exit_2(&weir("ftp://x", &["queues", "ls"], None), "bad server URL");
    // Nobody listening: exit 1.
    let o = weir("http://127.0.0.1:9", &["queues", "ls"], None);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
}

/// `weir bench --json` runs every job through the real server and reports what
/// bench/peers/run.sh reads; with the queue keeping no completed jobs nothing is left behind.
#[test]
fn bench_reports_rates_latency_and_the_rate_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let s = server.base.as_str();
    let o = weir(
        s,
        &["queues", "set", "bench", "retention.completed_max=0"],
        None,
    );
    assert!(o.status.success(), "{o:?}");
    let o = weir(
        s,
        &[
            "--json",
            "bench",
            "--jobs",
            "2000",
            "--payload-bytes",
            "100",
            "--rate",
            "400",
            "--seconds",
            "1",
        ],
        None,
    );
    assert!(o.status.success(), "{o:?}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["jobs"], 2000);
    let enqueue = r["enqueue_jobs_per_s"].as_f64().unwrap();
    let e2e = r["end_to_end_jobs_per_s"].as_f64().unwrap();
    assert!(enqueue > 0.0 && e2e > 0.0 && e2e <= enqueue * 1.0001, "{r}");
    let l = &r["latency"];
    assert_eq!(l["jobs"], 400, "every job of the steady run measured: {l}");
    let held = l["held_jobs_per_s"].as_f64().unwrap();
    assert!(held > 0.0 && held <= 400.0 * 1.05, "held {held}");
    let (p50, p99) = (l["p50_ms"].as_f64().unwrap(), l["p99_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{l}");

    let o = weir(s, &["--json", "queues", "show", "bench"], None);
    assert!(o.status.success(), "{o:?}");
    let q: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for state in ["waiting", "active", "completed"] {
        assert_eq!(q["counts"][state].as_u64(), Some(0), "{state}: {q}");
    }
}
