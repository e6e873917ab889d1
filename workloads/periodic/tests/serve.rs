//! `periodic serve` and `periodic push`, real processes: a repository pushed to a server with
//! four shards is indexed by its Weir worker pool; renamed copies spread over several shards
//! are one pattern and one clone group of the team's view, found by a snippet too; a cached
//! answer about a file is dropped when a file it imports changes, and only then; a second
//! push sends only what changed, deletions included; bad pushes are refused and change
//! nothing.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_periodic"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "4",
            "--workers",
            "2",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    Server {
        child,
        base,
        _dir: dir,
    }
}

fn push(repo: &std::path::Path, s: &Server) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_periodic"))
        .args([
            "push",
            repo.to_str().unwrap(),
            "--server",
            &s.base,
            "--wait",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn get(s: &Server, path: &str) -> (u16, String, Value) {
    let r = reqwest::blocking::get(format!("{}{path}", s.base)).unwrap();
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("periodic-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, cache, r.json().unwrap_or(Value::Null))
}

const FUNCTION: &str = "pub fn NAME(items: &[Item], tax: f64) -> f64 {\n    let mut sum = 0.0;\n    for item in items {\n        if item.quantity > 0 {\n            sum += item.price * item.quantity as f64;\n        } else {\n            log::warn!(\"empty {}\", item.name);\n        }\n    }\n    let discount = if sum > 100.0 { sum * 0.05 } else { 0.0 };\n    (sum - discount) * (1.0 + tax)\n}\n";

#[test]
fn a_pushed_repository_is_indexed_across_shards_and_cached_answers_follow_its_imports() {
    let s = start();
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    std::fs::create_dir_all(r.join("src")).unwrap();
    for i in 0..5 {
        let name = format!("total_{i}");
        std::fs::write(
            r.join(format!("src/copy{i}.rs")),
            FUNCTION.replace("NAME", &name),
        )
        .unwrap();
    }
    std::fs::write(r.join("helpers.py"), "def helper(x):\n    return x + 1\n").unwrap();
    std::fs::write(
        r.join("app.py"),
        "from helpers import helper\n\nprint(helper(2))\n",
    )
    .unwrap();
    std::fs::write(r.join("other.py"), "print('alone')\n").unwrap();
    let p = push(r, &s);
    assert_eq!(p["files"], 8);
    assert_eq!(p["sent"], 8);

    // The copies are one pattern of the team's view, though they live in several shards.
    let (status, _, v) = get(&s, "/v1/patterns?kind=function");
    assert_eq!(status, 200, "{v}");
    let pats = v["patterns"].as_array().unwrap();
    assert_eq!(pats.len(), 1, "{v}");
    assert_eq!(pats[0]["count"], 5);
    let shards: BTreeSet<u64> = (0..5)
        .map(|i| {
            get(&s, &format!("/v1/files/src/copy{i}.rs")).2["shard"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        shards.len() > 1,
        "the copies are spread over shards: {shards:?}"
    );
    let (_, _, c) = get(&s, "/v1/clones");
    let groups = c["clones"].as_array().unwrap();
    assert!(
        groups.iter().any(|g| g.as_array().unwrap().len() == 5),
        "one clone group of five: {c}"
    );
    let m: Value = reqwest::blocking::Client::new()
        .post(format!("{}/v1/match", s.base))
        .json(&serde_json::json!({"snippet": FUNCTION.replace("NAME", "mine"), "lang": "rust"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let exact = m["matches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["exact"] == true)
        .count();
    assert_eq!(exact, 5, "{m}");

    // Answers about files are cached (memory first) ...
    assert_eq!(get(&s, "/v1/files/app.py").1, "miss");
    let (_, hit, app) = get(&s, "/v1/files/app.py");
    assert!(hit.starts_with("hit"), "{hit}");
    assert_eq!(app["imports"], serde_json::json!(["helpers.py"]));
    assert_eq!(get(&s, "/v1/files/other.py").1, "miss");
    assert!(get(&s, "/v1/files/other.py").1.starts_with("hit"));
    // ... and a change to a file drops the answers about what imports it, only those.
    std::fs::write(r.join("helpers.py"), "def helper(x):\n    return x + 2\n").unwrap();
    let p = push(r, &s);
    assert_eq!(p["sent"], 1, "only the changed file is sent: {p}");
    assert_eq!(p["unchanged"], 7);
    let (_, cache, again) = get(&s, "/v1/files/app.py");
    assert_eq!(cache, "miss", "app.py imports helpers.py");
    assert!(again["generation"].as_u64() > app["generation"].as_u64());
    assert!(
        get(&s, "/v1/files/other.py").1.starts_with("hit"),
        "other.py is untouched"
    );

    // A deleted copy leaves the pattern.
    std::fs::remove_file(r.join("src/copy4.rs")).unwrap();
    let p = push(r, &s);
    assert_eq!(p["deleted"], 1);
    let (_, _, v) = get(&s, "/v1/patterns?kind=function");
    assert_eq!(v["patterns"][0]["count"], 4, "{v}");

    // Bad input: problem+json, nothing changed.
    let before = get(&s, "/v1/status").2;
    let client = reqwest::blocking::Client::new();
    for body in [
        serde_json::json!({"files": [{"path": "../escape.rs", "content": "fn x() {}"}]}),
        serde_json::json!({"files": [{"path": "notes.txt", "content": "hi"}]}),
        serde_json::json!({"files": [{"path": "a.rs"}]}),
        serde_json::json!({"nope": 1}),
    ] {
        let r = client
            .post(format!("{}/v1/files", s.base))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 422, "{body}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
    }
    assert_eq!(get(&s, "/v1/status").2, before);
    assert_eq!(get(&s, "/v1/patterns?kind=bogus").0, 422);
    assert_eq!(get(&s, "/v1/files/not/there.rs").0, 404);
}
