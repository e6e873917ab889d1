//! The embedded backend runs the whole conformance suite, one test per case, in both
//! durability modes (`cargo test -p weir-store --test embedded_conformance fsync::`).

use std::sync::Arc;
use weir_core::ManualClock;
use weir_store::{Durability, EmbeddedOptions, EmbeddedStore};

/// A fresh store in a temporary directory (kept alive beside it) reading `clock`.
fn open(durability: Durability, clock: ManualClock) -> (EmbeddedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedOptions {
            durability,
            clock: Arc::new(clock),
            seed: Some(7),
            maintenance_every: None,
            ..Default::default()
        },
    )
    .expect("open");
    (store, dir)
}

mod fsync {
    use super::*;
    weir_store::conformance_tests!(|clock| async move { open(Durability::Fsync, clock) });
}

mod os {
    use super::*;
    weir_store::conformance_tests!(|clock| async move { open(Durability::Os, clock) });
}
