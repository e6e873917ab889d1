//! `weir jobs ls|show|retry|cancel|rm`.

use crate::cli::JobsCmd;
use crate::out::{self, CmdResult};
use weir_api::JobView;
use weir_client::Client;

pub async fn run(client: &Client, cmd: JobsCmd, json: bool) -> CmdResult {
    match cmd {
        JobsCmd::Ls {
            queue,
            state,
            kind,
            tag,
            limit,
            cursor,
        } => {
            let page = client
                .jobs_matching(
                    queue.as_deref(),
                    state.as_deref(),
                    kind.as_deref(),
                    tag.as_deref(),
                    cursor,
                    limit,
                )
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
                let filters = [
                    ("queue", queue.as_deref()),
                    ("state", state.as_deref()),
                    ("kind", kind.as_deref()),
                    ("tag", tag.as_deref()),
                ];
                println!("more: {}", next_page(&filters, limit, c));
            }
            Ok(())
        }
        JobsCmd::Show { id } => show(&client.job(id).await?, json),
        JobsCmd::Retry { id } => show(&client.retry(id).await?, json),
        JobsCmd::Cancel { id } => show(&client.cancel(id).await?, json),
        JobsCmd::Rm { id } => {
            client.delete_job(id).await?;
            if json {
                out::json(&serde_json::json!({ "deleted": id }))
            } else {
                println!("deleted job {id}");
                Ok(())
            }
        }
    }
}

/// The command that prints the next page: the same filters and limit, after `cursor`.
fn next_page(filters: &[(&str, Option<&str>)], limit: usize, cursor: u64) -> String {
    let mut cmd = String::from("weir jobs ls");
    for (flag, value) in filters {
        if let Some(v) = value {
            cmd += &format!(" --{flag} {}", shell_word(v));
        }
    }
    cmd += &format!(" --limit {limit} --cursor {cursor}");
    cmd
}

/// `s` quoted for a POSIX shell when it holds anything but safe characters.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the hint printed `weir jobs ls --cursor N`, dropping the filters.
    #[test]
    fn the_next_page_hint_keeps_the_filters() {
        assert_eq!(
            next_page(&[("queue", Some("load")), ("state", Some("dead"))], 2, 41),
            "weir jobs ls --queue load --state dead --limit 2 --cursor 41"
        );
        assert_eq!(
            next_page(&[("queue", None)], 50, 7),
            "weir jobs ls --limit 50 --cursor 7"
        );
        assert_eq!(
            next_page(
                &[("queue", Some("it's")), ("kind", Some("send mail"))],
                1,
                1
            ),
            r"weir jobs ls --queue 'it'\''s' --kind 'send mail' --limit 1 --cursor 1"
        );
    }
}
