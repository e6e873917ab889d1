//! Providers: the outside services a message leaves through, one or more per channel, in
//! priority order. Each has a circuit breaker of its own, a timeout per call, an optional
//! rate limit (Weir's, on the provider's queue: see [`crate::pipeline`]) and a batch size:
//! the real APIs' batch endpoints (SendGrid's personalizations, FCM's multicast) take many
//! recipients per call.
//!
//! A call's outcome decides what happens next ([`CallResult`]): accepted; refused for good
//! (a 4xx: the address is bad; the message fails, no retry); transient (a 5xx, a timeout, a
//! refused connection: the breaker counts it and the message fails over to the next provider);
//! or rate limited (a 429: retried on the same provider after its `Retry-After`, which is
//! honoured, not treated as final).
//!
//! # Layout
//! - [`breaker`]: the per-provider circuit breaker.
//! - [`http`]: SendGrid-, Twilio-, FCM- and Slack-shaped HTTP APIs.
//! - [`smtp`]: email over SMTP (lettre).

pub mod breaker;
pub mod http;
pub mod smtp;

use crate::model::{check_id, Channel, Invalid};
use crate::workflow::Millis;
use breaker::Breaker;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Email over SMTP (`smtp://host:port`, `smtp+starttls://`, `smtps://`).
    Smtp,
    /// Email over SendGrid's v3 mail-send API (personalizations: up to 1,000 per call).
    Sendgrid,
    /// SMS over Twilio's Messages API (one per call).
    Twilio,
    /// Push over FCM's multicast API (`registration_ids`: up to 500 per call).
    Fcm,
    /// Chat over Slack's `chat.postMessage` (one per call).
    Slack,
}

impl Kind {
    fn channel(self) -> Channel {
        match self {
            Kind::Smtp | Kind::Sendgrid => Channel::Email,
            Kind::Twilio => Channel::Sms,
            Kind::Fcm => Channel::Push,
            Kind::Slack => Channel::Chat,
        }
    }

    /// The most recipients one call takes.
    pub fn max_batch(self) -> usize {
        match self {
            Kind::Sendgrid => 1_000,
            Kind::Fcm => 500,
            Kind::Smtp | Kind::Twilio | Kind::Slack => 1,
        }
    }
}

/// A rate limit: `limit` calls per `period`, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Calls per period.
    pub limit: u32,
    /// The period (default 1 s).
    #[serde(default = "one_second")]
    pub period: Millis,
    /// Calls allowed at once after a quiet spell (default `limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

fn one_second() -> Millis {
    Millis(1_000)
}

/// When a provider's breaker opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed calls that open it (default 5).
    #[serde(default = "five")]
    pub failures: u32,
    /// How long it stays open before one probe call is let through (default 30 s).
    #[serde(default = "thirty_seconds")]
    pub cooldown: Millis,
}

fn five() -> u32 {
    5
}

fn thirty_seconds() -> Millis {
    Millis(30_000)
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: five(),
            cooldown: thirty_seconds(),
        }
    }
}

/// One provider as the config file declares it (`[[providers]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Its id (`sendgrid`, `ses-backup`); its Weir queue is `{queue_prefix}.send.<id>`.
    pub id: String,
    /// The API it speaks.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Its channel (default: the one its type serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// Where it listens: `http(s)://host[:port][/base]`, or for SMTP `smtp://host:port`.
    pub url: String,
    /// Lower goes first within its channel (default 0; ties by order in the file).
    #[serde(default)]
    pub priority: u32,
    /// The sender: an email address (`Acme <no-reply@acme.test>`), a phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The account (Twilio's account SID, FCM's project).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The environment variable holding its credential (a bearer token; Twilio
    /// `SID:TOKEN`). The credential itself is never written in the file, logged or shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Recipients per call (default and most: what its API takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// Calls per period across every weir-notify process (Weir's rate limit on its queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Calls in flight at once across every process (default 32).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// One call's time limit (default 10 s).
    #[serde(default = "ten_seconds")]
    pub timeout: Millis,
    /// Its breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
}

fn default_concurrency() -> u32 {
    32
}

fn ten_seconds() -> Millis {
    Millis(10_000)
}

impl ProviderConfig {
    /// Its channel.
    pub fn channel(&self) -> Channel {
        self.channel.unwrap_or(self.kind.channel())
    }

    /// Recipients per call.
    pub fn batch(&self) -> usize {
        self.batch
            .unwrap_or(self.kind.max_batch())
            .clamp(1, self.kind.max_batch())
    }

    /// Checks the fields; the error names the first bad one.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_id("id", &self.id)?;
        if self.channel() != self.kind.channel() {
            return Err(Invalid::new(
                "channel",
                format!("a {:?} provider sends {}", self.kind, self.kind.channel()),
            ));
        }
        let scheme_ok = match self.kind {
            Kind::Smtp => ["smtp://", "smtps://", "smtp+starttls://"]
                .iter()
                .any(|s| self.url.starts_with(s)),
            _ => self.url.starts_with("http://") || self.url.starts_with("https://"),
        };
        if !scheme_ok {
            let want = if self.kind == Kind::Smtp {
                "smtp://host:port, smtps://host:port or smtp+starttls://host:port"
            } else {
                "http://... or https://..."
            };
            return Err(Invalid::new("url", want));
        }
        if let Some(b) = self.batch {
            if b == 0 || b > self.kind.max_batch() {
                return Err(Invalid::new(
                    "batch",
                    format!("from 1 to {} for this type", self.kind.max_batch()),
                ));
            }
        }
        if let Some(r) = &self.rate_limit {
            if r.limit == 0 || r.period.0 == 0 {
                return Err(Invalid::new("rate_limit", "limit and period above 0"));
            }
        }
        if self.concurrency == 0 {
            return Err(Invalid::new("concurrency", "at least 1"));
        }
        if self.timeout.0 == 0 {
            return Err(Invalid::new("timeout", "above 0"));
        }
        if self.breaker.failures == 0 {
            return Err(Invalid::new("breaker.failures", "at least 1"));
        }
        if self.kind == Kind::Twilio && self.account.is_none() {
            return Err(Invalid::new("account", "Twilio needs its account SID"));
        }
        if let Some(env) = &self.token_env {
            if std::env::var_os(env).is_none() {
                return Err(Invalid::new(
                    "token_env",
                    format!("the environment variable {env} is not set"),
                ));
            }
        }
        Ok(())
    }
}

/// One message for one address, as a provider call carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// Unique per delivery (`{message}/{pc}/{n}`): sent to the provider as its idempotency
    /// key, so a call repeated after a crash is not delivered twice by providers that honour it.
    pub key: String,
    /// The address.
    pub to: String,
    /// What it says (shared with the delivery it was rendered for, not copied).
    #[serde(flatten)]
    pub content: std::sync::Arc<crate::store::Content>,
}

/// What one recipient of an accepted call got.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemResult {
    /// Accepted, with the provider's id for it if it gave one.
    Accepted(Option<String>),
    /// Refused for good (FCM's `InvalidRegistration`, a bad address).
    Rejected(String),
}

/// How a call went.
#[derive(Debug, Clone, PartialEq)]
pub enum CallResult {
    /// The provider took the call; one result per recipient, in order.
    Accepted(Vec<ItemResult>),
    /// The provider refused the whole call for good (a 4xx other than 401/403/408/429).
    Rejected,
    /// A 5xx, a timeout, a connection failure, a 401/403 (a credential problem another
    /// provider may not have): count it against the breaker and fail over.
    Transient,
    /// A 429: try this provider again after this long.
    RateLimited(u64),
}

/// A call's outcome with what the activity trail records of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// How it went.
    pub result: CallResult,
    /// The HTTP status or SMTP reply code, when there was one.
    pub status: Option<u16>,
    /// The start of the answer, or the error, at most 512 bytes.
    pub response: String,
    /// How long it took.
    pub elapsed_ms: u64,
}

/// Clips `s` to at most 512 bytes on a character boundary.
pub fn clip(mut s: String) -> String {
    if s.len() > 512 {
        let mut end = 512;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A ready provider: its config, credential, client and breaker.
pub struct Provider {
    /// Its config.
    pub config: ProviderConfig,
    /// Its breaker.
    pub breaker: Breaker,
    client: Client,
}

enum Client {
    Http(http::Http),
    Smtp(smtp::Smtp),
}

impl Provider {
    /// Builds a provider from its (validated) config.
    pub fn new(config: ProviderConfig) -> Result<Provider, String> {
        let token = config
            .token_env
            .as_ref()
            .and_then(|e| std::env::var(e).ok());
        let client = match config.kind {
            Kind::Smtp => Client::Smtp(smtp::Smtp::new(&config, token)?),
            _ => Client::Http(http::Http::new(&config, token)?),
        };
        Ok(Provider {
            breaker: Breaker::new(config.breaker),
            config,
            client,
        })
    }

    /// Sends `items` in one call (at most [`ProviderConfig::batch`] of them; SMTP sends one
    /// message per item over its pooled connections).
    pub async fn send(&self, items: &[Outgoing]) -> Call {
        let started = std::time::Instant::now();
        let timeout = std::time::Duration::from_millis(self.config.timeout.0);
        let call = match &self.client {
            Client::Http(h) => tokio::time::timeout(timeout, h.send(&self.config, items)).await,
            Client::Smtp(s) => tokio::time::timeout(timeout, s.send(items)).await,
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match call {
            Ok(mut c) => {
                c.elapsed_ms = elapsed_ms;
                c
            }
            Err(_) => Call {
                result: CallResult::Transient,
                status: None,
                response: format!("timed out after {} ms", self.config.timeout.0),
                elapsed_ms,
            },
        }
    }
}

/// Every provider, by channel in priority order.
pub struct Providers {
    all: Vec<Arc<Provider>>,
}

impl Providers {
    /// Builds them from configs (validated, ids unique).
    pub fn new(configs: Vec<ProviderConfig>) -> Result<Providers, Invalid> {
        let mut all = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, c) in configs.into_iter().enumerate() {
            let field = format!("providers[{i}]");
            c.validate().map_err(|e| e.under(&field))?;
            if !seen.insert(c.id.clone()) {
                return Err(Invalid::new(format!("{field}.id"), "ids must be unique"));
            }
            let p = Provider::new(c).map_err(|e| Invalid::new(&field, e))?;
            all.push(Arc::new(p));
        }
        // Stable: ties keep their order in the file.
        all.sort_by_key(|p| (p.config.channel(), p.config.priority));
        Ok(Providers { all })
    }

    /// The provider `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<Provider>> {
        self.all.iter().find(|p| p.config.id == id)
    }

    /// The providers of `channel`, best first.
    pub fn of(&self, channel: Channel) -> impl Iterator<Item = &Arc<Provider>> {
        self.all
            .iter()
            .filter(move |p| p.config.channel() == channel)
    }

    /// Every provider.
    pub fn all(&self) -> &[Arc<Provider>] {
        &self.all
    }

    /// The provider a delivery on `channel` should use now: the best whose breaker lets a
    /// call through, among those not in `tried`.
    pub fn route(&self, channel: Channel, tried: &[String], now: u64) -> Option<&Arc<Provider>> {
        self.of(channel)
            .filter(|p| !tried.contains(&p.config.id))
            .find(|p| p.breaker.would_allow(now))
    }
}
