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

/// Regression: `weir … | head` panicked with "failed printing to stdout: Broken pipe" and
/// exit 101. A closed pipe now ends the command quietly, as it ends Unix tools.
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    assert!(weir(&server.base, &["push", "q", "k"], None)
        .status
        .success());
    for args in [
        &["queues", "ls"][..],
        &["jobs", "ls"],
        &["--json", "jobs", "ls"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("--server")
            .arg(&server.base)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the command writes anything.
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(o.status.code(), Some(101), "{args:?}: {o:?}");
        assert!(err.is_empty(), "{args:?}: nothing on stderr, got {err}");
    }
}

/// Regression: `weir push` to a queue at its max_depth waited forever and said nothing.
#[test]
fn a_full_queue_is_reported_and_push_gives_up_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let s = server.base.as_str();
    assert!(weir(s, &["queues", "set", "full", "max_depth=1"], None)
        .status
        .success());
    assert!(weir(s, &["push", "full", "k"], None).status.success());
    let o = weir(s, &["push", "full", "k", "--timeout", "1s"], None);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("queue full") && err.contains("retrying in"),
        "{err}"
    );
    assert!(err.contains("gave up (--timeout 1s)"), "{err}");
    let o = weir(s, &["push", "full", "k", "--timeout", "0"], None);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let o = weir(s, &["--json", "queues", "show", "full"], None);
    let q: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        q["counts"]["waiting"], 1,
        "the refused pushes changed nothing: {q}"
    );
    one_line_exit_2(
        &weir(s, &["push", "full", "k", "--timeout", "soon"], None),
        "bad timeout",
    );
    // --delay takes a duration.
    let o = weir(s, &["--json", "push", "later", "k", "--delay", "5m"], None);
    assert!(o.status.success(), "{o:?}");
    let id = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["ids"][0]
        .as_u64()
        .unwrap();
    let o = weir(s, &["--json", "jobs", "show", &id.to_string()], None);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["state"], "scheduled", "{j}");
    let wait = j["run_at_ms"].as_u64().unwrap() - j["created_at_ms"].as_u64().unwrap();
    assert_eq!(wait, 300_000, "{j}");
}

/// `queues show` prints every flow control in words; `set breaker=on|off` works; the
/// pagination hint keeps the filters; `stats` writes no terminal codes into a pipe and
/// `--json stats` writes one line per refresh.
#[test]
fn queue_settings_read_back_and_output_suits_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let s = server.base.as_str();
    let o = weir(
        s,
        &[
            "queues",
            "set",
            "load",
            "concurrency=7",
            "rate_limit=50/1000/10",
            "group_rate_limit=3",
            "max_depth=900",
            "breaker=on",
        ],
        None,
    );
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "concurrency          7",
        "rate_limit           50 per 1000 ms, bursts of 10",
        "group_rate_limit     3 per 1000 ms, bursts of 3",
        "max_depth            900 jobs",
        "breaker              closed",
        "cooldown",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    let o = weir(s, &["queues", "set", "load", "breaker=off"], None);
    assert!(String::from_utf8_lossy(&o.stdout).contains("breaker              none"));

    for _ in 0..3 {
        assert!(weir(s, &["push", "load", "k"], None).status.success());
    }
    let o = weir(s, &["jobs", "ls", "--queue", "load", "--limit", "2"], None);
    let text = String::from_utf8_lossy(&o.stdout);
    let hint = text.lines().last().unwrap();
    assert!(
        hint.starts_with("more: weir jobs ls --queue load --limit 2 --cursor "),
        "{hint}"
    );

    let o = weir(s, &["--json", "stats", "--once"], None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v.as_array().is_some_and(|a| !a.is_empty()), "{v}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--server", s, "stats", "--interval-ms", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = Vec::new();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    while first.iter().filter(|&&b| b == b'\n').count() < 12 {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut reader, &mut line).unwrap() == 0 {
            break;
        }
        first.extend_from_slice(line.as_bytes());
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.len() > 20, "{}", String::from_utf8_lossy(&first));
    assert!(
        !first.contains(&0x1b),
        "{:?}",
        String::from_utf8_lossy(&first)
    );
}

/// Regression: server logs kept ANSI colour codes when written to a file.
#[test]
fn server_logs_in_a_file_are_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("weir.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .env("WEIR_CACHE_DIR", dir.path().join("cache"))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("API:") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut reader, &mut line).unwrap() > 0);
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(dir.path().join("weir.log")).unwrap();
    assert!(text.contains("INFO"), "the server logged at info: {text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

/// `weir --help` names every command; `serve --help` lists no client-only flag.
#[test]
fn help_names_every_command_and_only_the_flags_that_apply() {
    let help = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let top = help(&["--help"]);
    let about = top.lines().next().unwrap();
    for cmd in [
        "push", "jobs", "queues", "cache", "stats", "bench", "migrate",
    ] {
        assert!(about.contains(cmd), "{cmd} in {about}");
    }
    let serve = help(&["serve", "--help"]);
    for flag in ["--server", "--token", "--json"] {
        assert!(!serve.contains(flag), "{flag} in\n{serve}");
    }
    assert!(help(&["jobs", "ls", "--help"]).contains("--server"));
}

/// `weir jobs rm`, `weir queues retry|clean|rm`: the CLI side of deletion and bulk actions,
/// with `--yes` required for what cannot be undone.
#[test]
fn deletion_and_bulk_actions_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let s = server.base.as_str();
    let ids: Vec<u64> = (0..3)
        .map(|_| {
            let o = weir(s, &["push", "tmp", "k", "--max-attempts", "1"], None);
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        })
        .collect();
    let o = weir(s, &["jobs", "rm", &ids[0].to_string()], None);
    assert!(o.status.success(), "{o:?}");
    let o = weir(s, &["jobs", "show", &ids[0].to_string()], None);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a deleted job is not found: {o:?}"
    );
    one_line_exit_2(&weir(s, &["queues", "rm", "tmp"], None), "rm without --yes");
    one_line_exit_2(
        &weir(
            s,
            &["queues", "clean", "tmp", "--state", "waiting", "--yes"],
            None,
        ),
        "clean of a state that is not finished",
    );
    let o = weir(s, &["--json", "queues", "retry", "tmp"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["retried"], 0, "no dead job yet: {v}");
    let o = weir(s, &["--json", "queues", "rm", "tmp", "--yes"], None);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["deleted"], 2, "{v}");
    let o = weir(s, &["queues", "show", "tmp"], None);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    one_line_exit_2(
        &weir(s, &["queues", "rm", "tmp", "--yes"], None),
        "rm of a queue gone",
    );
}

/// Regression (issue 16): two servers on one machine shared `~/.cache/weir` by default. The
/// default disk tier is now under the server's data directory, and a folder that another
/// server holds is refused at start with a reason.
#[test]
fn each_server_has_its_own_cache_folder() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |data: &str, cache: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join(data))
            .env("HOME", dir.path())
            .env_remove("XDG_CACHE_HOME")
            .env_remove("WEIR_CACHE_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(c) = cache {
            cmd.env("WEIR_CACHE_DIR", c);
        }
        let mut child = cmd.spawn().unwrap();
        let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut reader, &mut line).unwrap() == 0 {
                break;
            }
            text += &line;
            if line.contains("Stop with") {
                break;
            }
        }
        (child, text)
    };
    let (mut a, text) = serve("a", None);
    let own = dir.path().join("a").join("cache");
    assert!(text.contains(&own.display().to_string()), "{text}");
    assert!(
        own.join("v1").is_dir(),
        "the disk tier is under the data directory"
    );
    assert!(
        !dir.path().join(".cache").join("weir").exists(),
        "not in ~/.cache"
    );
    // A second server pointed at the first one's folder is refused, saying why.
    let (b, _) = serve("b", Some(&own));
    let o = b.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    let _ = a.kill();
    let _ = a.wait();
}
