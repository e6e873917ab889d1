//! Weir's HTTP wire types: every request and reply body of the `/v1` API.
//!
//! The server and the Rust client both use these, so they cannot drift apart, and the
//! server's OpenAPI document is generated from their `ToSchema` derives. They are kept apart
//! from `weir-core`'s types on purpose: the engine's types may change shape freely, the wire
//! is a contract (`DESIGN.md`, "The HTTP contract").
//!
//! JSON documents a client supplies (payload, result, progress) travel as
//! [`RawValue`]: the server validates them as JSON and stores their text without building a
//! tree, and hands them back verbatim.
//!
//! Request types reject unknown fields, so a misspelt option (`delay` for `delay_ms`) is an
//! error rather than silently ignored.
//!
//! # Layout
//! - [`jobs`]: enqueue, fetch, ack, fail, heartbeat, job views and pages.
//! - [`queues`]: queue views and configuration patches.
//! - [`cache`]: the cache routes' bodies.
//! - [`cron`]: cron entries.
//! - [`problem`]: the `application/problem+json` error body and its stable types.

pub mod cache;
pub mod cron;
pub mod jobs;
pub mod problem;
pub mod queues;

pub use cache::*;
pub use cron::*;
pub use jobs::*;
pub use problem::{Problem, ProblemType, PROBLEM_CONTENT_TYPE};
pub use queues::*;

/// The body of `/health` and `/ready`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StatusBody {
    /// `ok` (`/health`); `ready`, `shutting down`, `store failed` or `store not answering`
    /// (`/ready`).
    pub status: String,
    /// Why the store failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
