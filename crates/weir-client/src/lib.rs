//! The Rust client for Weir's HTTP API, and a worker pool.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use weir_client::{Client, WorkerBuilder, Concurrency};
//! use weir_api::NewJobBody;
//! use serde_json::value::to_raw_value;
//!
//! let client = Client::new("http://127.0.0.1:7420")?;
//! client.enqueue(vec![NewJobBody::new("emails", "welcome", to_raw_value(&serde_json::json!({"to": "a@b.c"}))?)]).await?;
//!
//! let worker = WorkerBuilder::new(client, &["emails"])
//!     .concurrency(Concurrency::Fixed(16))
//!     .handle("welcome", |job| async move {
//!         let p: serde_json::Value = job.payload()?;
//!         Ok(Some(serde_json::json!({ "sent_to": p["to"] })))
//!     })
//!     .build();
//! let stop = tokio_util::sync::CancellationToken::new();
//! worker.run(stop).await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`client`]: [`Client`], one method per route.
//! - [`worker`]: [`Worker`], handlers per kind, batching, heartbeats, graceful shutdown.

pub mod client;
pub mod worker;

pub use client::{overloaded_wait, Client, ClientError, ClientResult};
pub use worker::{
    available_memory, Concurrency, HandlerError, HandlerResult, JobContext, Worker, WorkerBuilder,
    WorkerReport,
};
