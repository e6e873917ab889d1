//! `weir cron ls|set|rm`.

use crate::cli::CronCmd;
use crate::out::{self, CmdResult, Failure};
use serde_json::value::RawValue;
use weir_api::{CronBody, CronView, Missed, NewJobBody};
use weir_client::Client;

pub async fn run(client: &Client, cmd: CronCmd, json: bool) -> CmdResult {
    match cmd {
        CronCmd::Ls => {
            let all = client.cron_list().await?;
            if json {
                return out::json(&all);
            }
            let rows: Vec<Vec<String>> = all.iter().map(row).collect();
            out::table(
                &[
                    "name", "schedule", "zone", "queue", "kind", "missed", "last", "next",
                ],
                &rows,
            );
            Ok(())
        }
        CronCmd::Set {
            name,
            schedule,
            queue,
            kind,
            payload,
            timezone,
            missed,
            priority,
            max_attempts,
        } => {
            let payload = RawValue::from_string(payload.unwrap_or_else(|| "{}".into()))
                .map_err(|e| Failure::usage(format!("PAYLOAD is not JSON: {e}")))?;
            let missed = match missed.as_str() {
                "skip" => Missed::Skip,
                "run_once" => Missed::RunOnce,
                other => {
                    return Err(Failure::usage(format!(
                        "--missed {other:?}: expected skip or run_once"
                    )))
                }
            };
            let mut job = NewJobBody::new(queue, kind, payload);
            job.priority = priority;
            job.max_attempts = max_attempts;
            let body = CronBody {
                schedule,
                timezone,
                job,
                missed,
            };
            let v = client.cron_set(&name, &body).await?;
            if json {
                return out::json(&v);
            }
            println!("{} next at {}", v.name, when(v.next_tick_ms));
            Ok(())
        }
        CronCmd::Rm { name } => {
            client.cron_delete(&name).await?;
            if json {
                out::json(&serde_json::json!({ "deleted": name }))
            } else {
                println!("removed {name}");
                Ok(())
            }
        }
    }
}

fn row(c: &CronView) -> Vec<String> {
    vec![
        c.name.clone(),
        c.schedule.clone(),
        c.timezone.clone(),
        c.job.queue.clone(),
        c.job.kind.clone(),
        match c.missed {
            Missed::Skip => "skip".into(),
            Missed::RunOnce => "run_once".into(),
        },
        when(Some(c.last_tick_ms)),
        when(c.next_tick_ms),
    ]
}

/// A time as RFC 3339 in UTC, to the second.
fn when(ms: Option<u64>) -> String {
    match ms.and_then(|m| chrono::DateTime::from_timestamp_millis(m as i64)) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "-".into(),
    }
}
