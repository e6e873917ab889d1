//! `weir stats`: the queue table, redrawn every interval with the server's rates.

use crate::cli::StatsArgs;
use crate::out::{self, CmdResult, Failure};
use std::io::IsTerminal;
use std::time::Duration;
use weir_client::Client;

pub async fn run(client: &Client, a: StatsArgs, json: bool) -> CmdResult {
    if a.interval_ms == 0 {
        return Err(Failure::usage("--interval-ms must be at least 1"));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(a.interval_ms));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let qs = client.queues().await?;
        if json {
            // One line per refresh, so that a pipe reads one document per line.
            out::json_line(&qs)?;
        } else {
            if !a.once && std::io::stdout().is_terminal() {
                // Clear the screen and home the cursor, then redraw.
                print!("\x1b[2J\x1b[H");
            }
            crate::cmd::queues::list(&qs);
            // The server's own meters (the last minute), not differences of the retained
            // counts, which stand still once retention caps a queue.
            let rates: Vec<String> = qs
                .iter()
                .filter(|q| {
                    q.arrival_per_s > 0.0 || q.completed_per_s > 0.0 || q.failed_per_s > 0.0
                })
                .map(|q| {
                    format!(
                        "{} +{:.1}/s done {:.1}/s failed {:.1}/s",
                        q.name, q.arrival_per_s, q.completed_per_s, q.failed_per_s
                    )
                })
                .collect();
            if !rates.is_empty() {
                println!("\nlast minute: {}", rates.join("; "));
            }
        }
        if a.once {
            return Ok(());
        }
    }
}
