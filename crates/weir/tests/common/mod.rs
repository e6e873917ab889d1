//! Starts the real `weir` binary on an ephemeral port for end-to-end tests.

#![allow(dead_code)]

pub mod pg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub dir: PathBuf,
}

impl Server {
    /// `weir serve --listen 127.0.0.1:0 --data-dir dir` with extra args and environment;
    /// returns once the server printed its address.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .env("WEIR_CACHE_DIR", dir.join("cache"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn weir serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.trim().strip_prefix("API:") {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(url.trim_end_matches("/v1").to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!("weir serve did not print its address: {:?}", child.wait());
            }
        };
        Server {
            child: Some(child),
            base,
            dir: dir.to_path_buf(),
        }
    }

    pub fn client(&self) -> weir_client::Client {
        weir_client::Client::new(&self.base).expect("client")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill -TERM");
        assert!(ok.success());
        child.wait().expect("wait")
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A payload document.
pub fn raw(v: serde_json::Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(&v).expect("json")
}

/// The most of `starts` (sorted) within any window just under a second (950 ms: a little
/// slack for the moment a job is handed out versus the moment its handler starts).
pub fn most_within_a_second(starts: &[Instant]) -> usize {
    starts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            starts[i..]
                .iter()
                .take_while(|b| b.duration_since(*a) < Duration::from_millis(950))
                .count()
        })
        .max()
        .unwrap_or(0)
}
