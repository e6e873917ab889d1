//! The server's settings: one TOML file, every key overridable by a `WEIR_*` environment
//! variable (`WEIR_LISTEN`, `WEIR_DATA_DIR`, `WEIR_MAX_BATCH`, ...; `WEIR_TOKENS` takes a
//! list such as `[{name="ci", token="s3cret", rights="write", queues=["ci."]}]`).
//!
//! Layering (later wins): built-in defaults, the file, the environment, then whatever the
//! caller sets (the CLI's flags). [figment](https://docs.rs/figment) does the merging.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default listen address: loopback only, a port no common service uses.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";

/// The backends `store` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded store in `data_dir`.
    Embedded,
    /// PostgreSQL at the URL `store` gives.
    Postgres,
}

/// Everything the server can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Where jobs live: `embedded` (the default: files in `data_dir`, no other service) or a
    /// PostgreSQL URL, `postgres://USER[:PASSWORD]@HOST:PORT/DB`, that several servers share.
    pub store: String,
    /// The PostgreSQL schema holding this deployment's tables (created and migrated on
    /// start), so that several deployments, or tests, share one database.
    pub store_schema: String,
    /// Connections this server opens to PostgreSQL at most for its statements (it opens
    /// half as many again for lease grants, and one for LISTEN).
    pub store_pool_size: usize,
    /// How often an idle long poll on PostgreSQL looks for work on its own, ms. Wake-ups
    /// come through LISTEN/NOTIFY first; this bounds what a lost notification costs.
    pub store_poll_ms: u64,
    /// Where the embedded store keeps its files.
    pub data_dir: PathBuf,
    /// `fsync` (default: an acknowledged write survives power loss) or `os` (survives
    /// `kill -9`, not a machine crash).
    pub durability: String,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Largest payload, result or progress document, bytes.
    pub max_payload_bytes: usize,
    /// Most jobs in one enqueue, fetch, ack or fail.
    pub max_batch: usize,
    /// Longest long-poll wait a fetch may ask for, ms.
    pub max_wait_ms: u64,
    /// Memory budget for the jobs held, bytes; enqueues past it get 429 (0: unlimited).
    pub max_memory_bytes: u64,
    /// Deepest nesting of arrays and objects in a payload, result or progress (0: unlimited).
    pub max_payload_depth: usize,
    /// Longest an ordinary request may take, body included, before it is answered with a
    /// 503 `timeout` problem, ms. A long-polling fetch may take its `wait_ms` on top.
    pub request_timeout_ms: u64,
    /// Replies at least this large are gzipped for clients that accept it.
    pub gzip_min_bytes: u16,
    /// On SIGTERM/SIGINT: how long in-flight requests may take to finish, ms.
    pub shutdown_grace_ms: u64,
    /// Log filter (`info`, `weir_server=debug`, ...); `RUST_LOG` wins when set.
    pub log: String,
    /// `text` or `json` logs.
    pub log_format: String,
    /// Bearer tokens. With none, the API is open and the server only listens on loopback.
    pub tokens: Vec<TokenConfig>,
    /// Queue settings applied at start, by queue name, in the shape `PUT /v1/queues/{q}`
    /// takes (`[queues.emails] concurrency = 10`); only the keys named change.
    pub queues: std::collections::BTreeMap<String, weir_api::QueueConfigPatch>,
    /// Cron entries set at start (`[[cron]]`, each a `name` and the body `PUT
    /// /v1/cron/{name}` takes); an entry already stored keeps its last tick.
    pub cron: Vec<CronConfig>,
    /// The tiered cache (`[cache]`; `WEIR_CACHE_REDIS_URL`, `WEIR_CACHE_DIR`, ...).
    pub cache: weir_cache::CacheConfig,
}

/// One `[[cron]]` entry of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronConfig {
    /// The entry's name.
    pub name: String,
    /// Its cron expression (seconds optional).
    pub schedule: String,
    /// Its time zone (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// The job, as `POST /v1/jobs` takes it.
    pub job: weir_api::NewJobBody,
    /// `skip` (default) or `run_once`.
    #[serde(default)]
    pub missed: weir_api::Missed,
}

impl ServerConfig {
    /// The limits jobs are checked against.
    pub fn limits(&self) -> weir_core::Limits {
        weir_core::Limits {
            max_payload_bytes: self.max_payload_bytes,
            max_batch: self.max_batch,
            max_memory_bytes: self.max_memory_bytes,
            max_payload_depth: self.max_payload_depth,
            ..weir_core::Limits::default()
        }
    }
}

impl PartialEq for CronConfig {
    /// Equal when they serialise alike (a job's payload is raw JSON text).
    fn eq(&self, other: &Self) -> bool {
        serde_json::to_string(self).ok() == serde_json::to_string(other).ok()
    }
}

impl CronConfig {
    /// The body `PUT /v1/cron/{name}` would take.
    pub fn body(&self) -> weir_api::CronBody {
        weir_api::CronBody {
            schedule: self.schedule.clone(),
            timezone: self.timezone.clone().unwrap_or_else(|| "UTC".into()),
            job: self.job.clone(),
            missed: self.missed,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.to_string(),
            store: "embedded".to_string(),
            store_schema: "weir".to_string(),
            store_pool_size: 16,
            store_poll_ms: 250,
            data_dir: PathBuf::from("weir-data"),
            durability: "fsync".to_string(),
            max_body_bytes: 16 << 20,
            max_payload_bytes: 1 << 20,
            max_batch: 10_000,
            max_wait_ms: 60_000,
            max_memory_bytes: 0,
            max_payload_depth: weir_core::Limits::default().max_payload_depth,
            request_timeout_ms: 30_000,
            gzip_min_bytes: 1024,
            shutdown_grace_ms: 10_000,
            log: "info,fjall=warn,lsm_tree=warn".to_string(),
            log_format: "text".to_string(),
            tokens: Vec::new(),
            queues: std::collections::BTreeMap::new(),
            cron: Vec::new(),
            cache: weir_cache::CacheConfig::default(),
        }
    }
}

/// What a token may do. Each right includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rights {
    /// Read jobs, queues and metrics.
    Read,
    /// Also enqueue, fetch, ack, fail, heartbeat, cancel and retry.
    Write,
    /// Also configure, pause, resume and purge queues.
    Admin,
}

/// One bearer token and its scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs (never the token itself).
    pub name: String,
    /// The secret, sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// What it may do.
    pub rights: Rights,
    /// Queue-name prefixes it covers; `[""]` (the default) covers every queue.
    #[serde(default = "all_queues")]
    pub queues: Vec<String>,
}

fn all_queues() -> Vec<String> {
    vec![String::new()]
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file or the environment could not be read or parsed.
    #[error("{0}")]
    Load(String),
    /// A value is out of range or inconsistent.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl ServerConfig {
    /// Defaults, then `file` (when given; it must exist), then `WEIR_*` variables, then
    /// `overrides` (already-serialized keys, e.g. from CLI flags), then validation.
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(ServerConfig::default()));
        if let Some(f) = file {
            if !f.is_file() {
                return Err(ConfigError::Load(format!(
                    "config file {} not found",
                    f.display()
                )));
            }
            fig = fig.merge(Toml::file(f));
        }
        let cfg: ServerConfig = fig
            .merge(Env::prefixed("WEIR_").map(|k| {
                // WEIR_CACHE_REDIS_URL names cache.redis_url: the cache's keys are nested.
                let k = k.as_str().to_ascii_lowercase();
                match k.strip_prefix("cache_") {
                    Some(rest) => format!("cache.{rest}").into(),
                    None => k.into(),
                }
            }))
            .merge(overrides)
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Which backend `store` names, or `None` if it names none.
    pub fn store_kind(&self) -> Option<StoreKind> {
        let s = self.store.trim();
        if s.is_empty() || s == "embedded" {
            Some(StoreKind::Embedded)
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Some(StoreKind::Postgres)
        } else {
            None
        }
    }

    /// Checks ranges and the loopback rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        let addr = self.listen_addr()?;
        if self.store_kind().is_none() {
            return bad(
                "store",
                "must be `embedded` or a PostgreSQL URL (postgres://USER@HOST:PORT/DB)",
            );
        }
        if self.store_pool_size == 0 || self.store_pool_size > 1000 {
            return bad("store_pool_size", "must be 1..=1000");
        }
        if !(5..=60_000).contains(&self.store_poll_ms) {
            return bad("store_poll_ms", "must be 5..=60000");
        }
        if self.tokens.is_empty() && !addr.ip().is_loopback() {
            return bad(
                "listen",
                "no token is configured, so the server only listens on a loopback address \
                 (configure tokens to listen on other addresses)",
            );
        }
        if !matches!(self.durability.as_str(), "fsync" | "os") {
            return bad("durability", "expected fsync or os");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad("log_format", "expected text or json");
        }
        if self.max_batch == 0 {
            return bad("max_batch", "must be at least 1");
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms", "must be at least 1");
        }
        if self.max_payload_bytes == 0 || self.max_body_bytes < self.max_payload_bytes {
            return bad(
                "max_body_bytes",
                "must be at least max_payload_bytes, which must be at least 1",
            );
        }
        for (name, patch) in &self.queues {
            let mut c = weir_core::QueueConfig::default();
            patch.apply(&mut c);
            weir_core::config::check_queue_name(name)
                .and_then(|()| c.validate(&weir_core::Limits::default()))
                .map_err(|e| ConfigError::Invalid {
                    key: "queues",
                    reason: format!("{name}: {e}"),
                })?;
        }
        self.cache.validate().map_err(|e| ConfigError::Invalid {
            key: "cache",
            reason: e.to_string(),
        })?;
        for t in &self.tokens {
            if t.token.len() < 16 {
                return bad("tokens", "every token must be at least 16 characters");
            }
            if t.queues.is_empty() {
                return bad("tokens", "a token's queues must list at least one prefix");
            }
        }
        Ok(())
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| ConfigError::Invalid {
            key: "listen",
            reason: format!("{:?} is not an IP:port address", self.listen),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(rights: Rights) -> TokenConfig {
        TokenConfig {
            name: "t".into(),
            token: "0123456789abcdef".into(),
            rights,
            queues: all_queues(),
        }
    }

    #[test]
    fn without_tokens_only_loopback_is_allowed() {
        let mut c = ServerConfig {
            listen: "0.0.0.0:7420".into(),
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid { key: "listen", .. })
        ));
        c.tokens.push(token(Rights::Admin));
        assert!(c.validate().is_ok());
        let c = ServerConfig {
            listen: "[::1]:7420".into(),
            ..Default::default()
        };
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        let c = ServerConfig {
            durability: "sometimes".into(),
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "durability",
                ..
            })
        ));
        let mut c = ServerConfig::default();
        c.tokens.push(TokenConfig {
            token: "short".into(),
            ..token(Rights::Read)
        });
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid { key: "tokens", .. })
        ));
    }

    #[test]
    fn file_then_overrides_layer() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("weir.toml");
        std::fs::write(
            &f,
            "max_batch = 7\nlisten = \"127.0.0.1:9999\"\n[[tokens]]\nname = \"ci\"\n\
             token = \"0123456789abcdef\"\nrights = \"write\"\nqueues = [\"ci.\"]\n",
        )
        .unwrap();
        let c = ServerConfig::load(
            Some(&f),
            Figment::new().merge(Serialized::default("listen", "127.0.0.1:9000")),
        )
        .unwrap();
        assert_eq!(c.max_batch, 7);
        assert_eq!(c.listen, "127.0.0.1:9000", "overrides beat the file");
        assert_eq!(c.tokens[0].rights, Rights::Write);
        assert_eq!(c.tokens[0].queues, vec!["ci.".to_string()]);
        std::fs::write(
            &f,
            "[queues.emails]\nconcurrency = 10\nrate_limit = { limit = 50 }\n\n[queues.bad]\nmax_attempts = 0\n",
        )
        .unwrap();
        let bad = ServerConfig::load(Some(&f), Figment::new());
        assert!(
            matches!(&bad, Err(ConfigError::Invalid { key: "queues", reason }) if reason.contains("bad")),
            "{bad:?}"
        );
        std::fs::write(
            &f,
            "[queues.emails]\nconcurrency = 10\nrate_limit = { limit = 50 }\n",
        )
        .unwrap();
        let c = ServerConfig::load(Some(&f), Figment::new()).unwrap();
        assert_eq!(c.queues["emails"].concurrency, Some(10));
        let missing = ServerConfig::load(Some(&dir.path().join("nope.toml")), Figment::new());
        assert!(matches!(missing, Err(ConfigError::Load(_))));
        std::fs::write(
            &f,
            "[cache]\nmemory_max_bytes = 1000\nnamespaces = [\"scores\"]\n",
        )
        .unwrap();
        let c = ServerConfig::load(
            Some(&f),
            Figment::new().merge(Serialized::default(
                "cache.redis_url",
                "redis://127.0.0.1:6379/0",
            )),
        )
        .unwrap();
        assert_eq!(c.cache.memory_max_bytes, 1000);
        assert_eq!(c.cache.namespaces, vec!["scores".to_string()]);
        assert_eq!(
            c.cache.redis_url.as_deref(),
            Some("redis://127.0.0.1:6379/0")
        );
        std::fs::write(&f, "[cache]\nredis_url = \"http://nope\"\n").unwrap();
        let bad = ServerConfig::load(Some(&f), Figment::new());
        assert!(
            matches!(&bad, Err(ConfigError::Invalid { key: "cache", .. })),
            "{bad:?}"
        );
        std::fs::write(&f, "max_bach = 7\n").unwrap();
        let typo = ServerConfig::load(Some(&f), Figment::new());
        assert!(
            matches!(&typo, Err(ConfigError::Load(m)) if m.contains("max_bach")),
            "{typo:?}"
        );
    }
}
