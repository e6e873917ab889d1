//! HTTP providers, each shaped like the real API it stands for, so that pointing `url` at
//! the real service (with its credential in `token_env`) is all a deployment changes:
//!
//! | type | call | batch |
//! |---|---|---|
//! | `sendgrid` | `POST {url}/v3/mail/send`, `Authorization: Bearer` | `personalizations`, up to 1,000 |
//! | `twilio` | `POST {url}/2010-04-01/Accounts/{account}/Messages.json` (form), basic auth | one |
//! | `fcm` | `POST {url}/fcm/send`, `Authorization: key=` | `registration_ids`, up to 500, per distinct content |
//! | `slack` | `POST {url}/api/chat.postMessage`, `Authorization: Bearer` | one |
//!
//! Each call carries an `Idempotency-Key` header made of its deliveries' keys, and each
//! recipient its own key in the body where the API has a place for it (SendGrid's
//! `custom_args`, FCM's `data`), so a call repeated after a crash can be recognised.

use super::{clip, Call, CallResult, ItemResult, Kind, Outgoing, ProviderConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// SendGrid's `POST /v3/mail/send` body: one personalization per recipient, the text and
/// HTML as substitutions of one shared content (how SendGrid sends many distinct messages
/// in one call).
#[derive(serde::Serialize)]
struct SendgridMail<'a> {
    personalizations: Vec<Personalization<'a>>,
    from: Address<'a>,
    content: &'static [ContentPart],
}

#[derive(serde::Serialize)]
struct Personalization<'a> {
    to: [Address<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    custom_args: CustomArgs<'a>,
    substitutions: Substitutions<'a>,
}

#[derive(serde::Serialize)]
struct Address<'a> {
    email: &'a str,
}

#[derive(serde::Serialize)]
struct CustomArgs<'a> {
    weir_key: &'a str,
}

#[derive(serde::Serialize)]
struct Substitutions<'a> {
    #[serde(rename = "-body-")]
    body: &'a str,
    #[serde(rename = "-html-")]
    html: &'a str,
}

#[derive(serde::Serialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: &'static str,
    value: &'static str,
}

/// An HTTP provider's client.
pub struct Http {
    client: reqwest::Client,
    token: Option<String>,
    base: String,
}

impl Http {
    /// A client with a connection pool for this provider.
    pub fn new(c: &ProviderConfig, token: Option<String>) -> Result<Http, String> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(c.concurrency as usize)
            .connect_timeout(std::time::Duration::from_millis(c.timeout.0.min(5_000)))
            .timeout(std::time::Duration::from_millis(c.timeout.0))
            .user_agent(concat!("weir-notify/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Http {
            client,
            token,
            base: c.url.trim_end_matches('/').to_string(),
        })
    }

    /// Makes one call with `items` (all of one content for FCM; see [`fcm_groups`]).
    pub async fn send(&self, c: &ProviderConfig, items: &[Outgoing]) -> Call {
        let idem = idempotency_key(items);
        let req = match c.kind {
            Kind::Sendgrid => {
                let body = SendgridMail {
                    personalizations: items
                        .iter()
                        .map(|o| Personalization {
                            to: [Address { email: &o.to }],
                            subject: o.content.subject.as_deref(),
                            custom_args: CustomArgs { weir_key: &o.key },
                            substitutions: Substitutions {
                                body: &o.content.body,
                                html: o.content.html.as_deref().unwrap_or(""),
                            },
                        })
                        .collect(),
                    from: Address {
                        email: c.from.as_deref().unwrap_or(""),
                    },
                    content: if items.iter().any(|o| o.content.html.is_some()) {
                        &[
                            ContentPart {
                                kind: "text/plain",
                                value: "-body-",
                            },
                            ContentPart {
                                kind: "text/html",
                                value: "-html-",
                            },
                        ]
                    } else {
                        &[ContentPart {
                            kind: "text/plain",
                            value: "-body-",
                        }]
                    },
                };
                self.bearer(self.client.post(format!("{}/v3/mail/send", self.base)))
                    .json(&body)
            }
            Kind::Twilio => {
                let o = &items[0];
                let account = c.account.clone().unwrap_or_default();
                let form = [
                    ("To", o.to.as_str()),
                    ("From", c.from.as_deref().unwrap_or("")),
                    ("Body", o.content.body.as_str()),
                ];
                let mut r = self
                    .client
                    .post(format!(
                        "{}/2010-04-01/Accounts/{account}/Messages.json",
                        self.base
                    ))
                    .form(&form);
                if let Some(t) = &self.token {
                    let (user, pass) = t.split_once(':').unwrap_or((account.as_str(), t));
                    r = r.basic_auth(user, Some(pass));
                }
                r
            }
            Kind::Fcm => {
                let tokens: Vec<&str> = items.iter().map(|o| o.to.as_str()).collect();
                let keys: Vec<&str> = items.iter().map(|o| o.key.as_str()).collect();
                let o = &items[0];
                let body = json!({
                    "registration_ids": tokens,
                    "notification": {"title": o.content.title, "body": o.content.body},
                    "data": {"weir_keys": keys.join(",")},
                });
                let mut r = self
                    .client
                    .post(format!("{}/fcm/send", self.base))
                    .json(&body);
                if let Some(t) = &self.token {
                    r = r.header("Authorization", format!("key={t}"));
                }
                r
            }
            Kind::Slack => {
                let o = &items[0];
                let body = json!({"channel": o.to, "text": o.content.body});
                self.bearer(
                    self.client
                        .post(format!("{}/api/chat.postMessage", self.base)),
                )
                .json(&body)
            }
            Kind::Smtp => {
                return Call {
                    result: CallResult::Rejected,
                    status: None,
                    response: "an SMTP provider has no HTTP client".into(),
                    elapsed_ms: 0,
                }
            }
        };
        let resp = match req.header("Idempotency-Key", idem).send().await {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                return Call {
                    result: CallResult::Transient,
                    status: None,
                    response: clip(format!("{what}: {}", without_url(&e))),
                    elapsed_ms: 0,
                };
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(retry_after_ms);
        let header_id = resp
            .headers()
            .get("x-message-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                return Call {
                    result: CallResult::Transient,
                    status: Some(status.as_u16()),
                    response: clip(format!("reading the answer: {}", without_url(&e))),
                    elapsed_ms: 0,
                }
            }
        };
        let result = classify(c.kind, status, retry_after, header_id, &text, items.len());
        Call {
            result,
            status: Some(status.as_u16()),
            response: clip(text),
            elapsed_ms: 0,
        }
    }

    fn bearer(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }
}

/// A reqwest error's message without the URL, which may carry a credential in its query.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<provider>");
    }
    s
}

/// The call's `Idempotency-Key`: the first key and a hash of them all (a header of 1,000
/// keys would be too long).
fn idempotency_key(items: &[Outgoing]) -> String {
    let h = crate::store::fnv1a(items.iter().flat_map(|o| o.key.bytes().chain([0])));
    let first = items.first().map(|o| o.key.as_str()).unwrap_or("");
    format!("{first}+{}-{h:016x}", items.len())
}

/// `Retry-After` in ms: seconds, or an HTTP date; capped at one hour, 1 s if unreadable.
pub fn retry_after_ms(v: &str) -> u64 {
    let v = v.trim();
    let ms = if let Ok(s) = v.parse::<f64>() {
        (s.max(0.0) * 1000.0) as u64
    } else if let Ok(t) = httpdate::parse_http_date(v) {
        t.duration_since(std::time::SystemTime::now())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    } else {
        1_000
    };
    ms.min(3_600_000)
}

fn classify(
    kind: Kind,
    status: StatusCode,
    retry_after: Option<u64>,
    header_id: Option<String>,
    text: &str,
    n: usize,
) -> CallResult {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return CallResult::RateLimited(retry_after.unwrap_or(1_000));
    }
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
    {
        return CallResult::Transient;
    }
    if !status.is_success() {
        return CallResult::Rejected;
    }
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    match kind {
        Kind::Fcm => {
            // Per-token results, in the order of registration_ids.
            let results = body["results"].as_array();
            let items = (0..n)
                .map(|i| match results.and_then(|r| r.get(i)) {
                    Some(r) if r["error"].is_string() => {
                        ItemResult::Rejected(r["error"].as_str().unwrap_or("").to_string())
                    }
                    Some(r) => ItemResult::Accepted(r["message_id"].as_str().map(str::to_string)),
                    None => ItemResult::Accepted(None),
                })
                .collect();
            CallResult::Accepted(items)
        }
        Kind::Slack => {
            if body["ok"] == Value::Bool(false) {
                let err = body["error"].as_str().unwrap_or("not ok");
                if err == "ratelimited" {
                    return CallResult::RateLimited(retry_after.unwrap_or(1_000));
                }
                return CallResult::Accepted(vec![ItemResult::Rejected(err.to_string())]);
            }
            let ts = body["ts"].as_str().map(str::to_string);
            CallResult::Accepted(vec![ItemResult::Accepted(ts)])
        }
        Kind::Twilio => {
            let sid = body["sid"].as_str().map(str::to_string);
            CallResult::Accepted(vec![ItemResult::Accepted(sid)])
        }
        Kind::Sendgrid | Kind::Smtp => {
            CallResult::Accepted(vec![ItemResult::Accepted(header_id); n])
        }
    }
}

/// Splits a batch for FCM's multicast, which sends one content to many tokens: consecutive
/// runs of items with the same title and body, at most `max` each.
pub fn fcm_groups(items: &[Outgoing], max: usize) -> Vec<&[Outgoing]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=items.len() {
        let cut = i == items.len()
            || i - start == max
            || items[i].content.title != items[start].content.title
            || items[i].content.body != items[start].content.body;
        if cut {
            out.push(&items[start..i]);
            start = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        assert_eq!(retry_after_ms("2"), 2_000);
        assert_eq!(retry_after_ms("0.5"), 500);
        assert_eq!(retry_after_ms("999999"), 3_600_000);
        assert_eq!(retry_after_ms("soon"), 1_000);
        let past = httpdate::fmt_http_date(std::time::SystemTime::UNIX_EPOCH);
        assert_eq!(retry_after_ms(&past), 0);
    }

    #[test]
    fn statuses_decide_failover_retry_or_failure() {
        let c = |s: u16| {
            classify(
                Kind::Sendgrid,
                StatusCode::from_u16(s).expect("status"),
                Some(3_000),
                None,
                "",
                2,
            )
        };
        assert_eq!(c(503), CallResult::Transient);
        assert_eq!(c(401), CallResult::Transient);
        assert_eq!(c(429), CallResult::RateLimited(3_000));
        assert_eq!(c(400), CallResult::Rejected);
        assert_eq!(
            c(202),
            CallResult::Accepted(vec![ItemResult::Accepted(None); 2])
        );
    }

    #[test]
    fn fcm_results_are_per_token() {
        let text = r#"{"success":1,"failure":1,"results":[{"message_id":"m1"},{"error":"NotRegistered"}]}"#;
        let r = classify(Kind::Fcm, StatusCode::OK, None, None, text, 2);
        assert_eq!(
            r,
            CallResult::Accepted(vec![
                ItemResult::Accepted(Some("m1".into())),
                ItemResult::Rejected("NotRegistered".into())
            ])
        );
    }

    #[test]
    fn fcm_batches_split_where_the_content_changes() {
        let o = |b: &str| Outgoing {
            key: b.into(),
            to: "t".into(),
            content: std::sync::Arc::new(crate::store::Content {
                subject: None,
                title: Some("t".into()),
                body: b.into(),
                html: None,
            }),
        };
        let items = vec![o("a"), o("a"), o("b"), o("a")];
        let g = fcm_groups(&items, 500);
        assert_eq!(g.iter().map(|g| g.len()).collect::<Vec<_>>(), [2, 1, 1]);
        let g = fcm_groups(&items[..2], 1);
        assert_eq!(g.len(), 2);
    }
}
