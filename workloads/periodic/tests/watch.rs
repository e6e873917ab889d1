//! `periodic watch`: a real process watching a folder the test edits. A new file holding a
//! renamed copy of existing code adds a pattern and is reported as sharing code with the
//! original; an edit of an imported module reaches the files that import it; the index file
//! catches up for the other commands once edits settle.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SHAPES: &str = "def area(shape, scale):\n    total = 0\n    for part in shape.parts:\n        if part.visible:\n            total += part.width * part.height * scale\n        else:\n            print('hidden', part.name)\n    return total\n";
const RENAMED: &str = "def volume(body, factor):\n    acc = 5\n    for p in body.pieces:\n        if p.shown:\n            acc += p.w * p.h * factor\n        else:\n            print('gone', p.label)\n    return acc\n";

struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watch {
    /// The next change line that satisfies `ok`, within `secs`.
    fn until(&self, what: &str, secs: u64, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{what}: no such change within {secs} s"));
            let v: Value = serde_json::from_str(&line).unwrap();
            if ok(&v) {
                return v;
            }
        }
    }
}

#[test]
fn watch_reports_new_patterns_shared_code_and_dependents_as_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("shapes.py"), SHAPES).unwrap();
    std::fs::write(
        root.join("helpers.py"),
        "def helper(x):\n    return x + 1\n",
    )
    .unwrap();
    std::fs::write(
        root.join("app.py"),
        "from helpers import helper\n\nprint(helper(2))\n",
    )
    .unwrap();
    std::fs::write(root.join("tool.py"), "import app\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_periodic"))
        .args(["watch", root.to_str().unwrap(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let w = Watch { child, lines: rx };
    w.until("watching", 60, |v| v.get("watching").is_some());

    // A renamed copy appears: one more pattern, sharing code with the original.
    std::fs::write(root.join("volume.py"), RENAMED).unwrap();
    let c = w.until("the copy", 30, |v| {
        v["file"] == "volume.py" && v["patterns_added"].as_u64().unwrap_or(0) >= 1
    });
    assert!(
        c["clones_with"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "shapes.py"),
        "{c}"
    );
    assert!(c["ms"].as_f64().is_some());

    // An imported module changes: what imports it (directly and through app.py) is named.
    std::fs::write(
        root.join("helpers.py"),
        "def helper(x):\n    return x + 2\n",
    )
    .unwrap();
    let c = w.until("the dependency", 30, |v| v["file"] == "helpers.py");
    let deps: Vec<&str> = c["dependents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(deps, ["app.py", "tool.py"], "{c}");

    // The copy is removed again: its pattern goes.
    std::fs::remove_file(root.join("volume.py")).unwrap();
    let c = w.until("the removal", 30, |v| {
        v["file"] == "volume.py" && v["what"] == "removed"
    });
    assert!(c["patterns_removed"].as_u64().unwrap() >= 1, "{c}");

    // Once edits settle the index file catches up (watch says when it has written it):
    // `periodic patterns` lists the copy.
    std::fs::write(root.join("volume.py"), RENAMED).unwrap();
    w.until("the copy again", 30, |v| {
        v["file"] == "volume.py" && v["what"] != "removed"
    });
    w.until("the index written", 30, |v| v.get("written").is_some());
    let o = Command::new(env!("CARGO_BIN_EXE_periodic"))
        .args([
            "patterns",
            "--index",
            root.to_str().unwrap(),
            "--json",
            "--kind",
            "function",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("volume.py"), "{text}");
}
