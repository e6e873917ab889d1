//! Weir's storage layer.
//!
//! The [`Store`] trait is internal: the server and the worker SDK use it, users talk to the
//! server. Each backend is its own module, named for what it is, and every backend passes the
//! same conformance suite.
//!
//! # Layout
//! - [`store`]: the trait and one params struct per operation.
//! - [`embedded`]: the default backend, the engine in memory made durable in fjall with
//!   group commit.
//! - [`conformance`] (feature `conformance`): the suite every backend runs.

pub mod embedded;
pub mod store;

#[cfg(feature = "conformance")]
pub mod conformance;

#[cfg(feature = "fault-injection")]
pub use embedded::Fault;
pub use embedded::{
    DiskUsage, Durability, EmbeddedOptions, EmbeddedStore, RecoveryReport, MAX_JOURNAL_BYTES,
};
pub use store::*;
