//! `weir queues ls|show|pause|resume|set|purge`.

use crate::cli::QueuesCmd;
use crate::out::{self, CmdResult, Failure};
use weir_api::{BackoffBody, QueueConfigPatch, QueueView, RetentionPatch};
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
            if !yes {
                return Err(Failure::usage(format!(
                    "purge deletes every unstarted job of {name:?}; add --yes to confirm"
                )));
            }
            let n = client.purge(&name).await?;
            if json {
                out::json(&serde_json::json!({ "deleted": n }))
            } else {
                println!("deleted {n} jobs");
                Ok(())
            }
        }
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
    let c = &q.config;
    println!(
        "\norder {}  aging {} ms  max_attempts {}  timeout {} ms  backoff {}..{} ms",
        c.order, c.aging_ms, c.max_attempts, c.timeout_ms, c.backoff.base_ms, c.backoff.cap_ms
    );
    println!(
        "retention: completed {} ms / {} jobs, dead {} ms / {} jobs",
        c.retention.completed_ms,
        c.retention.completed_max,
        c.retention.dead_ms,
        c.retention.dead_max
    );
    Ok(())
}

fn small(v: u64) -> Result<u32, Failure> {
    u32::try_from(v).map_err(|_| Failure::usage(format!("{v} is too large")))
}

/// Parses `key=value` settings into a patch.
pub fn parse_settings(settings: &[String]) -> Result<QueueConfigPatch, Failure> {
    let mut p = QueueConfigPatch::default();
    let mut retention = RetentionPatch::default();
    let mut touched_retention = false;
    for s in settings {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("{s:?}: expected key=value")))?;
        let num = |v: &str| -> Result<u64, Failure> {
            v.parse()
                .map_err(|_| Failure::usage(format!("{k}: {v:?} is not a whole number")))
        };
        match k {
            "order" => {
                p.order = Some(
                    serde_json::from_value(serde_json::Value::String(v.into())).map_err(|_| {
                        Failure::usage(format!("order: {v:?}: expected fifo or smallest_cost"))
                    })?,
                )
            }
            "aging_ms" => p.aging_ms = Some(num(v)?),
            "max_attempts" => {
                p.max_attempts = Some(
                    u32::try_from(num(v)?)
                        .map_err(|_| Failure::usage("max_attempts: too large"))?,
                )
            }
            "timeout_ms" => p.timeout_ms = Some(num(v)?),
            "concurrency" => p.concurrency = Some(small(num(v)?)?),
            "group_concurrency" => p.group_concurrency = Some(small(num(v)?)?),
            "weight" => p.weight = Some(small(num(v)?)?),
            "max_depth" => p.max_depth = Some(num(v)?),
            "starvation_ms" => p.starvation_ms = Some(num(v)?),
            "drain_window_ms" => p.drain_window_ms = Some(num(v)?),
            "rate_limit" | "group_rate_limit" => {
                // LIMIT[/PERIOD_MS[/BURST]], or 0 to remove
                let mut parts = v.split('/');
                let limit = small(num(parts.next().unwrap_or("0"))?)?;
                let period_ms = parts.next().map(num).transpose()?.unwrap_or(1000);
                let burst = parts.next().map(|b| num(b).and_then(small)).transpose()?;
                let body = weir_api::RateLimitBody {
                    limit,
                    period_ms,
                    burst,
                };
                if k == "rate_limit" {
                    p.rate_limit = Some(body);
                } else {
                    p.group_rate_limit = Some(body);
                }
            }
            "backoff" => {
                let (b, c) = v.split_once("..").ok_or_else(|| {
                    Failure::usage("backoff: expected BASE_MS..CAP_MS, e.g. 1000..60000")
                })?;
                p.backoff = Some(BackoffBody {
                    base_ms: num(b)?,
                    cap_ms: num(c)?,
                });
            }
            "paused" => {
                p.paused = Some(v.parse().map_err(|_| {
                    Failure::usage(format!("paused: {v:?}: expected true or false"))
                })?)
            }
            "retention.completed_ms" => {
                touched_retention = true;
                retention.completed_ms = Some(num(v)?);
            }
            "retention.completed_max" => {
                touched_retention = true;
                retention.completed_max = Some(num(v)?);
            }
            "retention.dead_ms" => {
                touched_retention = true;
                retention.dead_ms = Some(num(v)?);
            }
            "retention.dead_max" => {
                touched_retention = true;
                retention.dead_max = Some(num(v)?);
            }
            other => {
                return Err(Failure::usage(format!(
                    "unknown setting {other:?} (known: order, aging_ms, max_attempts, \
                     timeout_ms, backoff, paused, concurrency, group_concurrency, weight, \
                     max_depth, starvation_ms, drain_window_ms, rate_limit, group_rate_limit, retention.completed_ms, \
                     retention.completed_max, retention.dead_ms, retention.dead_max)"
                )))
            }
        }
    }
    if touched_retention {
        p.retention = Some(retention);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for bad in [
            &["order=random"][..],
            &["nope=1"],
            &["max_attempts=x"],
            &["timeout_ms"],
            &["backoff=5"],
        ] {
            assert!(matches!(s(bad), Err(Failure::Usage(_))), "{bad:?}");
        }
    }
}
