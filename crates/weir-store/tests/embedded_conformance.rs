//! The embedded backend runs the whole conformance suite, in both durability modes.

use std::sync::Arc;
use weir_store::{conformance, Durability, EmbeddedOptions, EmbeddedStore};

async fn suite(durability: Durability) {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_all(|clock| {
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
        dirs.lock().expect("lock").push(dir);
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fsync() {
    suite(Durability::Fsync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_os() {
    suite(Durability::Os).await;
}
