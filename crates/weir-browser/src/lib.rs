//! A small driver of headless Chromium over the DevTools protocol, for the browser tests of
//! the dashboard and of mille's `graph.html`: launch, navigate, evaluate, wait for a condition
//! of the page, click and type with real input events, and take screenshots. Written here
//! rather than taken from a crate because the tests need a dozen calls and the crates that
//! wrap the protocol pull in far more than that (and a browser download).
//!
//! Test support: it panics with a clear message on anything unexpected.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use base64::Engine as _;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The browser to use, or why there is none: `None` skips the test (saying so) unless
/// `REQUIRE_BROWSER_TEST` is set, which CI does and which then fails it.
pub fn required() -> Option<PathBuf> {
    match chromium() {
        Some(b) => Some(b),
        None => {
            assert!(
                std::env::var("REQUIRE_BROWSER_TEST").is_err(),
                "REQUIRE_BROWSER_TEST is set but no Chromium was found (set CHROMIUM_BIN)"
            );
            eprintln!("skipped: no Chromium on PATH (install chromium or set CHROMIUM_BIN)");
            None
        }
    }
}

/// The Chromium to drive: `CHROMIUM_BIN`, else `chromium`, `chromium-browser` or
/// `google-chrome` on `PATH`.
pub fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CHROMIUM_BIN") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// A headless Chromium with one page, driven over the DevTools protocol.
pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    errors: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn launch(bin: &PathBuf) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        // The flags a sandboxed, offline machine needs: no sandbox (root), no GPU, and none
        // of Chromium's background connections, which this network refuses.
        let mut child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium printed its DevTools address");
        let (ws, _) = tungstenite::connect(url.as_str()).unwrap();
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 1,
            errors: Vec::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b
    }

    /// Sends one command (to the page once attached) and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            let Message::Text(text) = self.ws.read().unwrap() else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            // Uncaught exceptions and console.error calls of the page, kept for errors().
            match v["method"].as_str() {
                Some("Runtime.exceptionThrown") => self
                    .errors
                    .push(v["params"]["exceptionDetails"].to_string()),
                Some("Runtime.consoleAPICalled") if v["params"]["type"] == "error" => {
                    self.errors.push(v["params"]["args"].to_string())
                }
                _ => {}
            }
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "awaitPromise": true, "returnByValue": true}),
        );
        assert!(r["exceptionDetails"].is_null(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `js` is true in the page: the page's own state is the signal.
    pub fn wait_until(&mut self, what: &str, js: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        // Until the page has loaded, its elements are not there yet: that is "not yet".
        let probe =
            format!("(() => {{ try {{ return !!({js}); }} catch (_) {{ return false; }} }})()");
        while self.eval(&probe) != json!(true) {
            if Instant::now() > deadline {
                let body = self.eval("document.body.innerText");
                panic!("{what}: not within 20 s; the page says:\n{body}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// A real click: mouse down and up at the middle of the element.
    pub fn click(&mut self, selector: &str) {
        self.wait_until(
            &format!("{selector} on the page"),
            &format!("document.querySelector({selector:?})"),
        );
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector:?}); e.scrollIntoView({{block: 'center'}});
               const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Clicks into a field and types `text` into it.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector);
        self.call("Input.insertText", json!({"text": text}));
    }

    /// The page's uncaught exceptions and `console.error` calls seen so far.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Saves a PNG of the page as `<dir>/<name>.png`.
    pub fn screenshot(&mut self, dir: &Path, name: &str) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
