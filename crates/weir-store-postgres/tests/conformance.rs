//! The conformance suite on PostgreSQL: one test per case, each in a schema of its own on
//! the local database (`TEST_WEIR_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`),
//! dropped afterwards. Multi-handle cases open a second store on the same schema, as a
//! second server would.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::url;
use std::sync::Arc;
use weir_core::ManualClock;
use weir_store::conformance::Fixture;
use weir_store_postgres::{PostgresOptions, PostgresStore};

fn fresh_schema() -> String {
    common::fresh_schema("t")
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
