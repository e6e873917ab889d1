//! `weir jobs ls|show|retry|cancel`.

use crate::cli::JobsCmd;
use crate::out::{self, CmdResult};
use weir_api::JobView;
use weir_client::Client;

pub async fn run(client: &Client, cmd: JobsCmd, json: bool) -> CmdResult {
    match cmd {
        JobsCmd::Ls {
            queue,
            state,
            limit,
            cursor,
        } => {
            let page = client
                .jobs(queue.as_deref(), state.as_deref(), cursor, limit)
                .await?;
            if json {
                return out::json(&page);
            }
            let rows: Vec<Vec<String>> = page
                .jobs
                .iter()
                .map(|j| {
                    vec![
                        j.id.to_string(),
                        j.queue.clone(),
                        j.kind.clone(),
                        j.state.clone(),
                        format!("{}/{}", j.attempt, j.max_attempts),
                        j.priority.to_string(),
                        j.group.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            out::table(
                &[
                    "id", "queue", "kind", "state", "attempts", "priority", "group",
                ],
                &rows,
            );
            if let Some(c) = page.next_cursor {
                println!("more: weir jobs ls --cursor {c}");
            }
            Ok(())
        }
        JobsCmd::Show { id } => show(&client.job(id).await?, json),
        JobsCmd::Retry { id } => show(&client.retry(id).await?, json),
        JobsCmd::Cancel { id } => show(&client.cancel(id).await?, json),
    }
}

fn show(j: &JobView, json: bool) -> CmdResult {
    if json {
        return out::json(j);
    }
    println!(
        "job {}  {}  queue {}  kind {}",
        j.id, j.state, j.queue, j.kind
    );
    println!(
        "attempt {}/{}  priority {}  cost {}  timeout {} ms",
        j.attempt, j.max_attempts, j.priority, j.cost, j.timeout_ms
    );
    if let Some(g) = &j.group {
        println!("group {g}");
    }
    if let Some(k) = &j.unique_key {
        println!("unique key {k}");
    }
    println!("payload  {}", j.payload.get());
    if let Some(r) = &j.result {
        println!("result   {}", r.get());
    }
    if let Some(p) = &j.progress {
        println!("progress {}", p.get());
    }
    for e in &j.errors {
        println!("error (attempt {}): {}", e.attempt, e.message);
    }
    Ok(())
}
