//! `weir stats`: the queue table, redrawn every interval with completion rates.

use crate::cli::StatsArgs;
use crate::out::{self, CmdResult, Failure};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use weir_client::Client;

pub async fn run(client: &Client, a: StatsArgs, json: bool) -> CmdResult {
    if a.interval_ms == 0 {
        return Err(Failure::usage("--interval-ms must be at least 1"));
    }
    let mut last: HashMap<String, (u64, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(a.interval_ms));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let qs = client.queues().await?;
        if json {
            out::json(&qs)?;
        } else {
            if !a.once {
                // Clear the screen and home the cursor, then redraw.
                print!("\x1b[2J\x1b[H");
            }
            crate::cmd::queues::list(&qs);
            let now = Instant::now();
            let mut rates = Vec::new();
            for q in &qs {
                let done = ["completed", "dead", "cancelled"]
                    .iter()
                    .map(|k| q.counts.get(*k).copied().unwrap_or(0))
                    .sum::<u64>();
                if let Some((prev, at)) = last.insert(q.name.clone(), (done, now)) {
                    let secs = now.duration_since(at).as_secs_f64().max(1e-9);
                    rates.push(format!(
                        "{} {:.0}/s",
                        q.name,
                        done.saturating_sub(prev) as f64 / secs
                    ));
                }
            }
            if !rates.is_empty() {
                println!("\nfinished per second: {}", rates.join(", "));
            }
        }
        if a.once {
            return Ok(());
        }
    }
}
