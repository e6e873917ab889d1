//! `weir queues ls|show|pause|resume|set|purge|rm|retry|clean`.

use crate::cli::QueuesCmd;
use crate::out::{self, CmdResult, Failure};
use weir_api::{QueueConfigPatch, QueueView};
use weir_client::Client;

pub async fn run(client: &Client, cmd: QueuesCmd, json: bool) -> CmdResult {
    match cmd {
        QueuesCmd::Ls => {
            let qs = client.queues().await?;
            if json {
                return out::json(&qs);
            }
            list(&qs);
            Ok(())
        }
        QueuesCmd::Show { name } => show(&client.queue(&name).await?, json),
        QueuesCmd::Pause { name } => show(&client.pause(&name).await?, json),
        QueuesCmd::Resume { name } => show(&client.resume(&name).await?, json),
        QueuesCmd::Set { name, settings } => {
            let patch = parse_settings(&settings)?;
            show(&client.configure(&name, &patch).await?, json)
        }
        QueuesCmd::Purge { name, yes } => {
            confirm(
                yes,
                &format!("purge deletes every unstarted job of {name:?}"),
            )?;
            let n = client.purge(&name).await?;
            counted(json, "deleted", n, "deleted {} jobs")
        }
        QueuesCmd::Rm { name, yes } => {
            confirm(
                yes,
                &format!("rm deletes queue {name:?} with every job, setting and aggregate"),
            )?;
            let n = client.delete_queue(&name).await?;
            counted(
                json,
                "deleted",
                n,
                &format!("deleted queue {name} and {{}} jobs"),
            )
        }
        QueuesCmd::Retry { name, state } => {
            let n = client.retry_jobs(&name, &state).await?;
            counted(json, "retried", n, &format!("{{}} {state} jobs wait again"))
        }
        QueuesCmd::Clean { name, state, yes } => {
            confirm(yes, &format!("clean deletes every {state} job of {name:?}"))?;
            let n = client.delete_jobs(&name, &state).await?;
            counted(json, "deleted", n, &format!("deleted {{}} {state} jobs"))
        }
    }
}

/// Refuses a destructive command without `--yes`, saying what it would do.
fn confirm(yes: bool, what: &str) -> CmdResult {
    if yes {
        Ok(())
    } else {
        Err(Failure::usage(format!("{what}; add --yes to confirm")))
    }
}

/// Prints a count: `{"<key>": n}` with `--json`, else `text` with `{}` replaced by `n`.
fn counted(json: bool, key: &str, n: u64, text: &str) -> CmdResult {
    if json {
        out::json(&serde_json::json!({ key: n }))
    } else {
        println!("{}", text.replace("{}", &n.to_string()));
        Ok(())
    }
}

/// The queue table `queues ls` and `stats` print.
pub fn list(qs: &[QueueView]) {
    let rows: Vec<Vec<String>> = qs.iter().map(row).collect();
    out::table(
        &[
            "queue", "waiting", "sched", "active", "failed", "done", "dead", "cancel", "oldest",
            "wait p99", "run p99",
        ],
        &rows,
    );
}

fn row(q: &QueueView) -> Vec<String> {
    let c = |k: &str| q.counts.get(k).copied().unwrap_or(0).to_string();
    let name = if q.paused {
        format!("{} (paused)", q.name)
    } else {
        q.name.clone()
    };
    vec![
        name,
        c("waiting"),
        c("scheduled"),
        c("active"),
        c("failed"),
        c("completed"),
        c("dead"),
        c("cancelled"),
        out::ms(Some(q.oldest_waiting_ms)),
        out::ms(q.wait_ms_p99),
        out::ms(q.run_ms_p99),
    ]
}

fn show(q: &QueueView, json: bool) -> CmdResult {
    if json {
        return out::json(q);
    }
    list(std::slice::from_ref(q));
    println!();
    let status = [
        ("breaker", q.breaker.clone()),
        (
            "starving",
            if q.starving { "yes" } else { "no" }.to_string(),
        ),
        (
            "rates (last minute)",
            format!(
                "+{:.1}/s enqueued, {:.1}/s completed, {:.1}/s failed",
                q.arrival_per_s, q.completed_per_s, q.failed_per_s
            ),
        ),
        (
            "advice",
            format!("{} workers: {}", q.recommended_workers, q.reason),
        ),
    ];
    for (k, v) in status.iter().chain(settings(&q.config).iter()) {
        println!("{k:<20} {v}");
    }
    Ok(())
}

/// Every setting of a queue, in words, with the key `queues set` takes for it.
fn settings(c: &weir_core::QueueConfig) -> Vec<(&'static str, String)> {
    let unlimited = |n: u64, unit: &str| {
        if n == 0 {
            "unlimited".to_string()
        } else {
            format!("{n}{unit}")
        }
    };
    let off = |n: u64, unit: &str| {
        if n == 0 {
            "off".to_string()
        } else {
            format!("{n}{unit}")
        }
    };
    let rate = |r: &Option<weir_core::RateLimit>| match r {
        None => "none".to_string(),
        Some(r) => format!(
            "{} per {} ms, bursts of {} ({}/{}/{})",
            r.limit, r.period_ms, r.burst, r.limit, r.period_ms, r.burst
        ),
    };
    let breaker = match &c.breaker {
        None => "none".to_string(),
        Some(b) => format!(
            "opens at {:.0} % failures over {} ms (after {} calls){}{}; cooldown {} ms, then {} probes",
            b.failure_rate * 100.0,
            b.window_ms,
            b.min_calls,
            if b.consecutive_failures > 0 {
                format!(" or {} failures in a row", b.consecutive_failures)
            } else {
                String::new()
            },
            if b.slow_call_ms > 0 {
                format!(", calls over {} ms count as failures", b.slow_call_ms)
            } else {
                String::new()
            },
            b.cooldown_ms,
            b.half_open_probes
        ),
    };
    vec![
        ("paused", c.paused.to_string()),
        ("order", c.order.to_string()),
        ("aging_ms", off(c.aging_ms, " ms")),
        ("concurrency", unlimited(c.concurrency.into(), "")),
        ("group_concurrency", c.group_concurrency.to_string()),
        ("rate_limit", rate(&c.rate_limit)),
        ("group_rate_limit", rate(&c.group_rate_limit)),
        ("breaker", breaker),
        ("max_depth", unlimited(c.max_depth, " jobs")),
        ("weight", off(c.weight.into(), "")),
        ("starvation_ms", off(c.starvation_ms, " ms")),
        ("drain_window_ms", format!("{} ms", c.drain_window_ms)),
        ("max_attempts", c.max_attempts.to_string()),
        ("timeout_ms", format!("{} ms", c.timeout_ms)),
        (
            "backoff",
            format!("{}..{} ms", c.backoff.base_ms, c.backoff.cap_ms),
        ),
        (
            "retention",
            format!(
                "completed {} ms / {} jobs, dead {} ms / {} jobs",
                c.retention.completed_ms,
                c.retention.completed_max,
                c.retention.dead_ms,
                c.retention.dead_max
            ),
        ),
    ]
}

/// Parses `key=value` settings into a patch. The keys are the patch's own (`PUT
/// /v1/queues/{q}` takes the same), dotted for nested ones (`retention.dead_max=3`,
/// `breaker.consecutive_failures=5`), so serde checks them and names the known ones: there is
/// no second list of settings here. Two shorthands read better on a command line:
/// `rate_limit=LIMIT[/PERIOD_MS[/BURST]]` (also `group_rate_limit`; 0 removes it) and
/// `backoff=BASE_MS..CAP_MS`, and `breaker=on|off`.
pub fn parse_settings(settings: &[String]) -> Result<QueueConfigPatch, Failure> {
    let mut root = serde_json::Map::new();
    for s in settings {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("{s:?}: expected key=value")))?;
        let value = match shorthand(k, v)? {
            Some(v) => v,
            None => scalar(v),
        };
        insert_path(&mut root, k, value)?;
    }
    serde_json::from_value(serde_json::Value::Object(root))
        .map_err(|e| Failure::usage(format!("settings: {e}")))
}

/// A value as JSON when it reads as a number, boolean or null; otherwise as text.
fn scalar(v: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(v)
        .ok()
        .filter(|x| !x.is_object() && !x.is_array() && !x.is_string())
        .unwrap_or_else(|| serde_json::Value::String(v.to_string()))
}

/// The command line's shorthands, as the JSON the patch takes.
fn shorthand(k: &str, v: &str) -> Result<Option<serde_json::Value>, Failure> {
    let num = |x: &str| -> Result<u64, Failure> {
        x.parse()
            .map_err(|_| Failure::usage(format!("{k}: {x:?} is not a whole number")))
    };
    Ok(match k {
        "rate_limit" | "group_rate_limit" => {
            let mut parts = v.split('/');
            let limit = num(parts.next().unwrap_or("0"))?;
            let mut body = serde_json::json!({ "limit": limit });
            if let Some(period) = parts.next() {
                body["period_ms"] = num(period)?.into();
            }
            if let Some(burst) = parts.next() {
                body["burst"] = num(burst)?.into();
            }
            Some(body)
        }
        "breaker" => match v {
            "on" | "true" => Some(serde_json::json!({ "enabled": true })),
            "off" | "false" | "none" => Some(serde_json::json!({ "enabled": false })),
            _ => {
                return Err(Failure::usage(format!(
                    "breaker: {v:?}: expected on or off (set its keys as \
                     breaker.consecutive_failures=5, breaker.cooldown_ms=30000, ...)"
                )))
            }
        },
        "backoff" => {
            let (b, c) = v.split_once("..").ok_or_else(|| {
                Failure::usage("backoff: expected BASE_MS..CAP_MS, e.g. 1000..60000")
            })?;
            Some(serde_json::json!({ "base_ms": num(b)?, "cap_ms": num(c)? }))
        }
        _ => None,
    })
}

/// Sets `value` at dotted path `key` of `root`.
fn insert_path(
    root: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
    value: serde_json::Value,
) -> Result<(), Failure> {
    let mut parts = key.split('.').peekable();
    let mut at = root;
    while let Some(part) = parts.next() {
        if part.is_empty() {
            return Err(Failure::usage(format!("{key:?}: empty key")));
        }
        if parts.peek().is_none() {
            at.insert(part.to_string(), value);
            return Ok(());
        }
        let next = at
            .entry(part.to_string())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        at = next
            .as_object_mut()
            .ok_or_else(|| Failure::usage(format!("{key:?}: {part} is not a group of settings")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::BackoffBody;

    #[test]
    fn settings_parse_into_a_patch() {
        let s = |v: &[&str]| parse_settings(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        let p = s(&[
            "order=smallest_cost",
            "max_attempts=5",
            "backoff=10..500",
            "retention.dead_max=3",
        ])
        .map_err(|f| f.message().to_string())
        .unwrap_or_else(|m| panic!("{m}"));
        assert_eq!(p.max_attempts, Some(5));
        assert_eq!(
            p.backoff,
            Some(BackoffBody {
                base_ms: 10,
                cap_ms: 500
            })
        );
        assert_eq!(p.retention.and_then(|r| r.dead_max), Some(3));
        assert!(p.order.is_some());
        // Nested keys of the patch work without a list of their own here.
        let p = s(&[
            "breaker.consecutive_failures=5",
            "rate_limit=50/1000/10",
            "paused=true",
        ])
        .map_err(|f| f.message().to_string())
        .unwrap_or_else(|m| panic!("{m}"));
        assert_eq!(p.breaker.and_then(|b| b.consecutive_failures), Some(5));
        assert_eq!(
            p.rate_limit.map(|r| (r.limit, r.period_ms, r.burst)),
            Some((50, 1000, Some(10)))
        );
        assert_eq!(p.paused, Some(true));
        // Regression: `breaker=...` was refused though the docs say the CLI sets it.
        let off = s(&["breaker=off"]).map_err(|f| f.message().to_string());
        assert_eq!(
            off.ok()
                .and_then(|p| p.breaker)
                .map(|b| b.apply(Some(Default::default()))),
            Some(None)
        );
        let on = s(&["breaker=on"]).map_err(|f| f.message().to_string());
        assert!(on
            .ok()
            .and_then(|p| p.breaker)
            .and_then(|b| b.apply(None))
            .is_some());
        for bad in [
            &["order=random"][..],
            &["nope=1"],
            &["max_attempts=x"],
            &["timeout_ms"],
            &["backoff=5"],
            &["breaker=maybe"],
            &["concurrency=99999999999"],
            &["retention=3", "retention.dead_max=1"],
        ] {
            assert!(matches!(s(bad), Err(Failure::Usage(_))), "{bad:?}");
        }
    }
}
