//! The real `weir-notify serve`, killed with SIGKILL while a digest is with its provider:
//! after a restart the digest is neither lost nor delivered twice, and every acknowledged
//! trigger's event is in it.

use notify::stub::{self, Fault};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The server process, killed (SIGKILL) when dropped, so that a failing test leaves none.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(config: &std::path::Path, data: &std::path::Path, port: u16) -> Server {
    Server(
        Command::new(env!("CARGO_BIN_EXE_weir-notify"))
            .args(["serve", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("NOTIFY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("weir-notify starts"),
    )
}

async fn wait_up(http: &reqwest::Client, base: &str) {
    for _ in 0..500 {
        if let Ok(r) = http.get(format!("{base}/ready")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("weir-notify never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_send_neither_loses_nor_duplicates_a_digest() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let provider = stub::http(listener).expect("stub");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("notify.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[providers]]
id = "mail"
type = "sendgrid"
url = "{}"
timeout = "2s"

[[workflows]]
id = "comments"
[[workflows.steps]]
type = "digest"
window = "1s"
[[workflows.steps]]
type = "email"
template.en = {{ subject = "{{{{ digest.count }}}} new comments", body = "{{% for e in digest.events %}}{{{{ e.n }}}};{{% endfor %}}" }}
"#,
            provider.url
        ),
    )
    .expect("config");
    let data = dir.path().join("data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let child = serve(&config, &data, port);
    wait_up(&http, &base).await;
    let r = http
        .put(format!("{base}/v1/subscribers/u"))
        .json(&json!({"email": "u@example.com"}))
        .send()
        .await
        .expect("subscriber");
    assert_eq!(r.status(), 200);
    // The provider takes the digest and stalls before answering: the worker is mid-send.
    provider
        .state
        .fault_next(1, Fault::AcceptThenStall { ms: 30_000 });
    for n in 0..100 {
        let r = http
            .post(format!("{base}/v1/trigger"))
            .json(&json!({"workflow": "comments", "to": "u", "payload": {"n": n}}))
            .send()
            .await
            .expect("trigger");
        assert_eq!(r.status(), 202, "trigger {n} acknowledged");
    }
    assert!(
        provider
            .state
            .wait_for(Duration::from_secs(20), |a| !a.is_empty())
            .await,
        "the digest reached the provider"
    );
    drop(child); // SIGKILL

    let child = serve(&config, &data, port);
    wait_up(&http, &base).await;
    // The killed worker's job is delivered again (at once, or when its lease expires) and the
    // message ends sent: the call whose answer was lost is made again under the same key, or
    // found done.
    let key = provider
        .state
        .accepted()
        .keys()
        .next()
        .expect("key")
        .clone();
    let msg = key.split('/').next().expect("message id").to_string();
    let mut status = String::new();
    for _ in 0..1_800 {
        let m: serde_json::Value = http
            .get(format!("{base}/v1/messages/{msg}"))
            .send()
            .await
            .expect("message")
            .json()
            .await
            .expect("json");
        status = m["status"].as_str().unwrap_or("").to_string();
        if status == "sent" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "sent", "the digest was delivered after the restart");
    let got = provider.state.accepted();
    assert_eq!(got.len(), 1, "one digest, not two: {got:?}");
    let one = got.values().next().expect("the digest");
    assert!(
        one.times <= 2,
        "at most the lost call was repeated, under the same key"
    );
    assert_eq!(one.subject.as_deref(), Some("100 new comments"));
    let mut ns: Vec<u32> = one
        .body
        .split(';')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().expect("n"))
        .collect();
    ns.sort();
    assert_eq!(ns, (0..100).collect::<Vec<_>>(), "every acknowledged event");
    // Nothing else comes, and the message says sent.
    assert!(
        !provider
            .state
            .wait_for(Duration::from_secs(2), |a| a.len() > 1)
            .await
    );
    drop(child);
}
