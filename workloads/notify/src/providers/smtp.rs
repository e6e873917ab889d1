//! Email over SMTP with lettre's pooled async transport: `smtp://` (plain, for a local relay),
//! `smtp+starttls://` (STARTTLS, port 587) or `smtps://` (implicit TLS, port 465). Each message
//! carries its delivery key as its `Message-ID`, so a message re-sent after a crash can be
//! recognised downstream. SMTP reply classes decide: 5xx refuses the message for good, 4xx
//! and connection failures are transient (fail over, retry).

use super::{clip, Call, CallResult, ItemResult, Outgoing, ProviderConfig};
use lettre::message::{header::ContentType, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// An SMTP provider's transport.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    /// A pooled transport for `c.url`.
    pub fn new(c: &ProviderConfig, token: Option<String>) -> Result<Smtp, String> {
        let (scheme, rest) = c.url.split_once("://").ok_or("url: smtp://host:port")?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| format!("url: bad port {p:?}"))?,
                ),
            ),
            None => (rest, None),
        };
        let builder = match scheme {
            "smtp" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            "smtps" => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| format!("url: {e}"))?,
            "smtp+starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| format!("url: {e}"))?,
            other => return Err(format!("url: unknown scheme {other}")),
        };
        let mut builder = builder
            .timeout(Some(std::time::Duration::from_millis(c.timeout.0)))
            .pool_config(PoolConfig::new().max_size(c.concurrency.max(1)));
        if let Some(p) = port {
            builder = builder.port(p);
        }
        if let Some(t) = token {
            let (user, pass) = t.split_once(':').unwrap_or(("", t.as_str()));
            builder = builder.credentials(Credentials::new(user.to_string(), pass.to_string()));
        }
        let from = c
            .from
            .as_deref()
            .unwrap_or("weir-notify <notify@localhost>")
            .parse::<Mailbox>()
            .map_err(|e| format!("from: {e}"))?;
        Ok(Smtp {
            transport: builder.build(),
            from,
        })
    }

    /// Sends each item as one message, concurrently over the pool. The call is transient if
    /// every message failed transiently (the server is down); per-message refusals are
    /// that message's own.
    pub async fn send(&self, items: &[Outgoing]) -> Call {
        let sends = items.iter().map(|o| self.one(o));
        let results = futures::future::join_all(sends).await;
        let mut out = Vec::with_capacity(results.len());
        let mut transient = 0;
        let mut last = String::new();
        let mut code = None;
        for r in results {
            match r {
                Ok((c, text)) => {
                    code = Some(c);
                    last = text;
                    out.push(ItemResult::Accepted(None));
                }
                Err((c, text, permanent)) => {
                    code = c.or(code);
                    last = text.clone();
                    if permanent {
                        out.push(ItemResult::Rejected(text));
                    } else {
                        transient += 1;
                        out.push(ItemResult::Rejected(text));
                    }
                }
            }
        }
        let result = if transient > 0 && transient == items.len() {
            CallResult::Transient
        } else {
            CallResult::Accepted(out)
        };
        Call {
            result,
            status: code,
            response: clip(last),
            elapsed_ms: 0,
        }
    }

    async fn one(&self, o: &Outgoing) -> Result<(u16, String), (Option<u16>, String, bool)> {
        let to: Mailbox =
            o.to.parse()
                .map_err(|e| (None, format!("bad address: {e}"), true))?;
        let b = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(o.content.subject.clone().unwrap_or_default())
            .message_id(Some(format!("<{}@weir-notify>", o.key.replace('/', "."))));
        let m = match &o.content.html {
            Some(h) => b.multipart(MultiPart::alternative_plain_html(
                o.content.body.clone(),
                h.clone(),
            )),
            None => b
                .header(ContentType::TEXT_PLAIN)
                .body(o.content.body.clone()),
        }
        .map_err(|e| (None, format!("cannot build the message: {e}"), true))?;
        match self.transport.send(m).await {
            Ok(r) => {
                let code = r.code().to_string().parse().unwrap_or(250);
                Ok((code, r.message().collect::<Vec<_>>().join(" ")))
            }
            Err(e) => {
                let code = e.status().and_then(|c| c.to_string().parse().ok());
                Err((code, e.to_string(), e.is_permanent()))
            }
        }
    }
}
