//! A Rust worker for a running `weir serve`: handles `welcome` jobs of queue `emails` until
//! Ctrl-C, then finishes what it is running and exits, printing what it did.
//!
//! `cargo run --release -p weir-examples --example worker [-- SERVER]`
//!
//! Its dependencies (see this crate's Cargo.toml): `weir-client`, `tokio` (features
//! `rt-multi-thread`, `macros`, `signal`), `tokio-util`, `serde_json`, `anyhow`.

use tokio_util::sync::CancellationToken;
use weir_client::{Client, WorkerBuilder};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:7420".to_string());
    let worker = WorkerBuilder::new(Client::new(&server)?, &["emails"])
        .handle("welcome", |job| async move {
            let p: serde_json::Value = job.payload()?;
            Ok(Some(serde_json::json!({ "sent_to": p["to"] })))
        })
        .build();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    println!("working queue emails on {server}; Ctrl-C stops");
    let report = worker.run(shutdown).await;
    println!(
        "completed {}, failed {}, given back {}",
        report.completed, report.failed, report.given_back
    );
    Ok(())
}
