//! The conformance suite on PostgreSQL: one test per case, each in a schema of its own on
//! the local database (`TEST_WEIR_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`),
//! dropped afterwards. Multi-handle cases open a second store on the same schema, as a
//! second server would.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use weir_core::ManualClock;
use weir_store::conformance::Fixture;
use weir_store_postgres::{PostgresOptions, PostgresStore};

fn url() -> String {
    std::env::var("TEST_WEIR_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema name no other test, run or process uses.
fn fresh_schema() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}

struct Pg {
    first: PostgresStore,
    second: PostgresStore,
    schema: String,
}

impl Fixture for Pg {
    type S = PostgresStore;
    fn store(&self) -> &PostgresStore {
        &self.first
    }
    fn second(&self) -> Result<&PostgresStore, &'static str> {
        Ok(&self.second)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        weir_store_postgres::drop_schema_blocking(&url(), &self.schema);
    }
}

async fn open(clock: ManualClock) -> Pg {
    let schema = fresh_schema();
    let opts = |clock: ManualClock| PostgresOptions {
        schema: schema.clone(),
        clock: Arc::new(clock),
        pool_size: 4,
        maintenance_every: None,
        ..PostgresOptions::new(url())
    };
    let first = PostgresStore::open(opts(clock.clone())).await.unwrap();
    let second = PostgresStore::open(opts(clock)).await.unwrap();
    Pg {
        first,
        second,
        schema,
    }
}

weir_store::conformance_tests!(open);
