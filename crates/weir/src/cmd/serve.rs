//! `weir serve`: settings from defaults, `--config`, `WEIR_*` and flags; open the embedded
//! store; serve until SIGTERM or SIGINT; shut down cleanly and exit 0.

use crate::cli::ServeArgs;
use crate::out::{CmdResult, Failure};
use figment::providers::Serialized;
use figment::Figment;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;
use weir_core::Limits;
use weir_server::config::{ServerConfig, StoreKind};
use weir_server::AppState;
use weir_store::{Durability, EmbeddedOptions, EmbeddedStore, Store};
use weir_store_postgres::{redact_url, validate_schema_name, PostgresOptions, PostgresStore};

pub async fn run(a: ServeArgs) -> CmdResult {
    let mut overrides = Figment::new();
    if let Some(v) = a.listen {
        overrides = overrides.merge(Serialized::default("listen", v));
    }
    if let Some(v) = a.data_dir {
        overrides = overrides.merge(Serialized::default("data_dir", v));
    }
    if let Some(v) = a.store {
        overrides = overrides.merge(Serialized::default("store", v));
    }
    if let Some(v) = a.store_schema {
        overrides = overrides.merge(Serialized::default("store_schema", v));
    }
    if let Some(v) = a.durability {
        overrides = overrides.merge(Serialized::default("durability", v));
    }
    let config = ServerConfig::load(a.config.as_deref(), overrides)
        .map_err(|e| Failure::usage(e.to_string()))?;
    init_logs(&config);

    let durability: Durability = config
        .durability
        .parse()
        .map_err(|e: weir_core::Error| Failure::usage(e.to_string()))?;
    let limits = config.limits();
    let addr = config
        .listen_addr()
        .map_err(|e| Failure::usage(e.to_string()))?;
    // Bind before opening the store: a taken port fails fast, before any recovery work.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Runtime(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let opened = open_store(&config, durability, limits).await?;
    // The disk tier belongs to this server: under its data directory unless configured, so
    // two servers on one machine never share (and prune) one folder.
    let mut config = config;
    if config.cache.dir.is_none() {
        config.cache.dir = Some(config.data_dir.join("cache"));
    }
    let cache = weir_cache::Cache::open(config.cache.clone())
        .await
        .map_err(|e| Failure::Runtime(format!("cannot open the cache: {e}")))?;
    let cache_line = describe_cache(&config.cache);
    let auth = if config.tokens.is_empty() {
        "open (loopback only; configure tokens to require auth)".to_string()
    } else {
        format!("{} bearer token(s)", config.tokens.len())
    };
    println!(
        "weir {} serving\n  API:        http://{local}/v1  (OpenAPI: http://{local}/v1/openapi.json)\n  \
         dashboard:  http://{local}/\n  metrics:    http://{local}/metrics\n  {}\n  \
         cache:      {cache_line}\n  auth:       {auth}\nStop with Ctrl-C or SIGTERM.",
        env!("CARGO_PKG_VERSION"),
        opened.line,
    );
    weir_server::apply_queue_settings(&*opened.store, &config)
        .await
        .map_err(|e| Failure::usage(format!("queue settings: {e}")))?;
    let state = AppState::new(opened.store, cache, config);
    let served = weir_server::serve(state, listener, shutdown_signal()).await;
    // Dropping the last handles closes the embedded store: the committer writes what is
    // pending (blocking work, so off the runtime's threads).
    if let Some(embedded) = opened.embedded {
        let flush = tokio::task::spawn_blocking(move || drop(embedded));
        let _ = flush.await;
    }
    served.map_err(|e| Failure::Runtime(format!("server failed: {e}")))?;
    println!("weir: stopped cleanly");
    Ok(())
}

/// The store `config` names, and the banner's line for it.
struct Opened {
    store: Arc<dyn Store>,
    /// The embedded store's own handle, closed last on shutdown.
    embedded: Option<EmbeddedStore>,
    line: String,
}

async fn open_store(
    config: &ServerConfig,
    durability: Durability,
    limits: Limits,
) -> Result<Opened, Failure> {
    if config.store_kind() == Some(StoreKind::Postgres) {
        validate_schema_name(&config.store_schema).map_err(|e| Failure::usage(e.to_string()))?;
        let url = config.store.trim().to_string();
        let store = PostgresStore::open(PostgresOptions {
            schema: config.store_schema.clone(),
            limits,
            pool_size: config.store_pool_size,
            poll_interval: std::time::Duration::from_millis(config.store_poll_ms),
            ..PostgresOptions::new(url.clone())
        })
        .await
        .map_err(|e| match e {
            weir_core::Error::Invalid { .. } => Failure::usage(e.to_string()),
            e => Failure::Runtime(format!("cannot open the store {}: {e}", redact_url(&url))),
        })?;
        let line = format!(
            "store:      postgres {} (schema {}, up to {} connections)",
            redact_url(&url),
            config.store_schema,
            config.store_pool_size
        );
        return Ok(Opened {
            store: Arc::new(store),
            embedded: None,
            line,
        });
    }
    let dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || {
        EmbeddedStore::open(
            &dir,
            EmbeddedOptions {
                durability,
                limits,
                ..Default::default()
            },
        )
    })
    .await
    .map_err(|e| Failure::Runtime(e.to_string()))?
    .map_err(|e| {
        Failure::Runtime(format!(
            "cannot open the store in {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let rec = store.recovery();
    let line = format!(
        "data:       {} ({} jobs recovered in {} ms, durability {})",
        config.data_dir.display(),
        rec.jobs,
        rec.elapsed_ms,
        config.durability,
    );
    Ok(Opened {
        store: Arc::new(store.clone()),
        embedded: Some(store),
        line,
    })
}

fn init_logs(config: &ServerConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if config.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn describe_cache(c: &weir_cache::CacheConfig) -> String {
    let mib = |b: u64| format!("{} MiB", b >> 20);
    let disk = match c.disk_dir() {
        Some(d) if c.disk_max_bytes > 0 => {
            format!("disk {} ({})", d.display(), mib(c.disk_max_bytes))
        }
        _ => "disk off".to_string(),
    };
    let redis = match &c.redis_url {
        Some(u) => format!("redis {}", redact(u)),
        None => "redis off".to_string(),
    };
    format!("memory {}, {disk}, {redis}", mib(c.memory_max_bytes))
}

/// `redis://user:secret@host` without the secret.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
