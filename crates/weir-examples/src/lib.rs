//! Runnable examples of Weir as a library; see `examples/`:
//!
//! - `quickstart`: the engine on its embedded store, in process, with no server
//!   (`cargo run --release -p weir-examples --example quickstart`);
//! - `worker`: a Rust worker pool against a running `weir serve`
//!   (`cargo run --release -p weir-examples --example worker`).
//!
//! This crate has no dev-dependencies, so running an example builds only what it uses.
