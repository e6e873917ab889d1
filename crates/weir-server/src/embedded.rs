//! A Weir server inside another program: the embedded store and Weir's cache in one folder,
//! served on a loopback port of its own, for a product built on Weir (the reference
//! workloads) that runs with no other service by default and talks to this Weir through the
//! same client SDK it would use for a remote one.

use crate::config::ServerConfig;
use crate::AppState;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

/// A running embedded Weir.
pub struct Embedded {
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The server's task: it ends once `shutdown` completes and in-flight requests finish.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Opens Weir's data in `dir` (the store in `dir/weir`, the cache in `dir/weir-cache`) and
/// serves it on a loopback port until `shutdown` completes.
pub async fn start(
    dir: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Embedded, String> {
    let store =
        weir_store::EmbeddedStore::open(dir.join("weir"), weir_store::EmbeddedOptions::default())
            .map_err(|e| format!("cannot open the embedded Weir: {e}"))?;
    let cache = weir_cache::Cache::open(weir_cache::CacheConfig {
        dir: Some(dir.join("weir-cache")),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot open Weir's cache: {e}"))?;
    let state = AppState::new(Arc::new(store), cache, ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen for the embedded Weir: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let task = tokio::spawn(crate::serve(state, listener, shutdown));
    Ok(Embedded {
        url: format!("http://{addr}"),
        task,
    })
}

/// The Weir a program built on Weir uses: the server at `given`, else an embedded one in
/// `dir` (see [`start`]), whose task is returned so the caller can wait for it to end.
pub async fn given_or_start(
    given: Option<&str>,
    dir: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(String, Option<tokio::task::JoinHandle<std::io::Result<()>>>), String> {
    match given {
        Some(u) => Ok((u.to_string(), None)),
        None => {
            let e = start(dir, shutdown).await?;
            Ok((e.url, Some(e.task)))
        }
    }
}
