//! What the PostgreSQL test files share: the database they use and fresh schema names.

use std::sync::atomic::{AtomicU32, Ordering};

/// The local database (`TEST_WEIR_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`).
pub fn url() -> String {
    std::env::var("TEST_WEIR_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema name no other test, run or process uses, starting with `prefix`.
pub fn fresh_schema(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}
