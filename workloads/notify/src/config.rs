//! The configuration file (`weir-notify.toml`): where to listen and keep data, which Weir to
//! use, the providers, and workflows kept in version control. Every key is optional but the
//! providers a workflow's channels need; a bad file is refused at start with the path of the
//! first bad key.

use crate::model::Invalid;
use crate::pipeline::Settings;
use crate::providers::ProviderConfig;
use crate::workflow::WorkflowDef;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on (default `127.0.0.1:7430`).
    pub listen: Option<String>,
    /// Data folder (default `./weir-notify-data`).
    pub data_dir: Option<PathBuf>,
    /// A Weir server's URL; without it an embedded Weir runs in the data folder.
    pub weir: Option<String>,
    /// The environment variable holding the API's bearer token. Without a token the server
    /// listens on loopback addresses only.
    pub token_env: Option<String>,
    /// Pipeline jobs run at once (default: 2 per core).
    pub run_concurrency: Option<usize>,
    /// Send jobs run at once (default 64).
    pub send_concurrency: Option<usize>,
    /// How long messages and their activity are kept before they are archived and deleted
    /// (default 180 days). Daily aggregates are kept.
    pub retention: Option<crate::workflow::Millis>,
    /// Where archives go (default `DATA_DIR/archive`).
    pub archive_dir: Option<PathBuf>,
    /// Pipeline tuning.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Providers.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Workflows.
    #[serde(default)]
    pub workflows: Vec<WorkflowDef>,
}

/// `[pipeline]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The first part of every Weir queue name (default `notify`): several weir-notify
    /// deployments (each with its own data folder) can share one Weir server, each with a
    /// prefix of its own.
    pub queue_prefix: Option<String>,
    /// Messages per run job (default 500).
    pub run_batch: Option<usize>,
    /// Deliveries per send job (default 500).
    pub send_batch: Option<usize>,
    /// Attempts before a delivery goes to the dead-letter queue (default 8).
    pub send_attempts: Option<u32>,
    /// First retry delay (default 1 s).
    pub retry_base: Option<crate::workflow::Millis>,
    /// Longest retry delay (default 5 min).
    pub retry_cap: Option<crate::workflow::Millis>,
}

impl PipelineConfig {
    /// The settings, defaults filled in.
    pub fn settings(&self) -> Result<Settings, Invalid> {
        let d = Settings::default();
        let s = Settings {
            queue_prefix: self.queue_prefix.clone().unwrap_or(d.queue_prefix),
            run_batch: self.run_batch.unwrap_or(d.run_batch),
            send_batch: self.send_batch.unwrap_or(d.send_batch),
            send_attempts: self.send_attempts.unwrap_or(d.send_attempts),
            retry_base_ms: self.retry_base.map(|m| m.0).unwrap_or(d.retry_base_ms),
            retry_cap_ms: self.retry_cap.map(|m| m.0).unwrap_or(d.retry_cap_ms),
            max_deferrals: d.max_deferrals,
        };
        let p = &s.queue_prefix;
        if p.is_empty()
            || p.len() > 64
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        {
            return Err(Invalid::new(
                "pipeline.queue_prefix",
                "1 to 64 characters of A-Z a-z 0-9 _ - . :",
            ));
        }
        if !(1..=5_000).contains(&s.run_batch) {
            return Err(Invalid::new("pipeline.run_batch", "from 1 to 5000"));
        }
        if !(1..=5_000).contains(&s.send_batch) {
            return Err(Invalid::new("pipeline.send_batch", "from 1 to 5000"));
        }
        if !(1..=100).contains(&s.send_attempts) {
            return Err(Invalid::new("pipeline.send_attempts", "from 1 to 100"));
        }
        Ok(s)
    }
}

/// Reads the file at `path`.
pub fn read(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a config file's text.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| {
        let msg = e.message().to_string();
        match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: {msg}")
            }
            None => msg,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_prefix_is_checked_and_names_every_queue() {
        let prefix = |p: &str| PipelineConfig {
            queue_prefix: Some(p.to_string()),
            ..Default::default()
        };
        assert_eq!(
            prefix("tenant-a").settings().expect("ok").queue_prefix,
            "tenant-a"
        );
        assert_eq!(
            PipelineConfig::default()
                .settings()
                .expect("default")
                .queue_prefix,
            "notify"
        );
        for bad in ["", "has space", "sl/ash", &"x".repeat(65)] {
            let e = prefix(bad).settings().expect_err(bad);
            assert_eq!(e.field, "pipeline.queue_prefix", "{bad:?}");
        }
    }

    #[test]
    fn a_full_file_parses() {
        let c = parse(
            r#"
listen = "127.0.0.1:7431"
[pipeline]
retry_base = "2s"

[[providers]]
id = "sendgrid"
type = "sendgrid"
url = "http://127.0.0.1:9"
rate_limit = { limit = 100, period = "1s" }

[[workflows]]
id = "welcome"
class = "transactional"
[[workflows.steps]]
type = "email"
template.en = { subject = "Hi", body = "Hello {{ subscriber.id }}" }
"#,
        )
        .expect("parses");
        assert_eq!(c.providers[0].rate_limit.map(|r| r.limit), Some(100));
        assert_eq!(c.workflows[0].steps.len(), 1);
        assert_eq!(
            c.pipeline.settings().expect("settings").retry_base_ms,
            2_000
        );
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_line() {
        let e = parse("listen = \"x\"\nlisen = 3\n").expect_err("refused");
        assert!(e.starts_with("line 2:"), "{e}");
    }
}
