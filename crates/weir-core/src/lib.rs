//! The Weir queue engine: job types, the job state machine and the scheduler.
//!
//! Everything here is pure: no I/O, no threads, no system clock. A store (see the
//! `weir-store` crate) wraps an [`Engine`], persists the changes it reports, and rebuilds it
//! on open. Because time is a parameter and randomness is seeded, every sequence of calls
//! gives the same result on every run, which is what the property tests rely on.
//!
//! # Layout
//! - [`job`]: ids, states, what clients submit ([`NewJob`]) and read back ([`Job`]).
//! - [`config`]: per-queue configuration and engine-wide limits.
//! - [`engine`]: the [`Engine`] itself: state machine, indexes, fetch order, aging, groups,
//!   unique keys, leases, retention.
//! - [`record`]: the shapes a store persists.
//! - [`aggregate`]: hourly counts that outlive deleted jobs.
//! - [`advisor`]: the scaling advisor.
//! - [`clock`]: the injected clock.
//! - [`histogram`]: per-queue wait and run time histograms.
//! - [`error`]: the shared error type.

pub mod advisor;
pub mod aggregate;
pub mod clock;
pub mod config;
pub mod engine;
pub mod error;
pub mod histogram;
pub mod job;
pub mod record;
pub mod units;

pub use advisor::{advise, Advice, AdvisorInput};
pub use aggregate::{Aggregate, AggregateRecord};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{BreakerConfig, ConfigPatch, Limits, Order, QueueConfig, RateLimit, Retention};
pub use engine::maintenance::RetentionReport;
pub use engine::{
    check_batch_size, check_document, gcra, gcra_allowance, validate_new_job, Breaker, Change,
    Engine, FlowEvent, JobFilter, JobPage, QueueStats, Restore, SharedFlow,
};
pub use error::{Error, Result};
pub use histogram::LatencyHistogram;
pub use job::{
    Ack, AttemptError, Backoff, BatchOutcome, Fail, FetchedJob, Job, JobId, JobState, NewJob,
    Payload, Rejection,
};
