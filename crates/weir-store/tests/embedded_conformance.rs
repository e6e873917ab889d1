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

/// Two clones of one embedded store as the "two handles" of the multi-server cases. A clone
/// shares the one engine, so this checks the cases themselves (their assertions hold for a
/// correct store), not sharing across processes, which a backend with shared storage tests.
struct Clones {
    store: EmbeddedStore,
    second: EmbeddedStore,
    _dir: tempfile::TempDir,
}

impl weir_store::conformance::Fixture for Clones {
    type S = EmbeddedStore;
    fn store(&self) -> &EmbeddedStore {
        &self.store
    }
    fn second(&self) -> Result<&EmbeddedStore, &'static str> {
        Ok(&self.second)
    }
}

mod clones {
    use super::*;
    weir_store::conformance_tests!(|clock| async move {
        let (store, dir) = open(Durability::Os, clock);
        Clones {
            second: store.clone(),
            store,
            _dir: dir,
        }
    });
}
