//! `weir push`: one job from arguments, or many from an NDJSON file or stdin.
//!
//! Every line is parsed before anything is sent, so a bad line changes nothing; then the
//! jobs go in batches with a progress bar.

use crate::cli::PushArgs;
use crate::out::{self, CmdResult, Failure};
use crate::units::parse_duration_ms;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::value::RawValue;
use std::io::{BufRead, IsTerminal};
use std::time::{Duration, Instant};
use weir_api::NewJobBody;
use weir_client::{Client, ClientError};

/// `--timeout` as a duration.
fn patience(timeout: &str) -> Result<Duration, Failure> {
    Ok(Duration::from_millis(parse_duration_ms(timeout)?))
}

/// Enqueues a batch, waiting while its queue is full (429) for up to `patience` and saying so
/// on stderr each time (unless `--json`, whose caller reads only stdout).
async fn enqueue(
    client: &Client,
    jobs: Vec<NewJobBody>,
    patience: Duration,
    json: bool,
) -> Result<Vec<u64>, Failure> {
    let started = Instant::now();
    let result = client
        .enqueue_patiently_with(jobs, patience, |wait, why| {
            if !json {
                let reason = match why {
                    ClientError::Problem(p) => p.detail.clone(),
                    other => other.to_string(),
                };
                eprintln!(
                    "weir: queue full ({reason}); retrying in {:.1} s",
                    wait.as_secs_f64()
                );
            }
        })
        .await;
    match result {
        Ok(ids) => Ok(ids),
        Err(e) if weir_client::overloaded_wait(&e, 0).is_some() => Err(Failure::Runtime(format!(
            "queue still full after {:.0} s, gave up (--timeout {}); nothing of this batch was \
             enqueued",
            started.elapsed().as_secs_f64(),
            humantime_ms(patience)
        ))),
        Err(e) => Err(e.into()),
    }
}

/// `90000` ms as `90s`, for messages that echo a flag back.
fn humantime_ms(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

pub async fn run(client: &Client, a: PushArgs, json: bool) -> CmdResult {
    match a.file.clone() {
        Some(path) => many(client, &a, &path, json).await,
        None => one(client, a, json).await,
    }
}

async fn one(client: &Client, a: PushArgs, json: bool) -> CmdResult {
    let (Some(queue), Some(kind)) = (a.queue, a.kind) else {
        return Err(Failure::usage(
            "push needs QUEUE KIND [PAYLOAD], or --file FILE (- for stdin)",
        ));
    };
    let text = a.payload.unwrap_or_else(|| "{}".to_string());
    let payload = RawValue::from_string(text)
        .map_err(|e| Failure::usage(format!("PAYLOAD is not JSON: {e}")))?;
    let mut job = NewJobBody::new(queue, kind, payload);
    job.priority = a.priority;
    job.delay_ms = match &a.delay {
        Some(d) => Some(parse_duration_ms(d)?),
        None => a.delay_ms,
    };
    job.group = a.group;
    job.unique_key = a.unique_key;
    job.max_attempts = a.max_attempts;
    job.cost = a.cost;
    let patience = patience(&a.timeout)?;
    let ids = enqueue(client, vec![job], patience, json).await?;
    if json {
        out::json(&serde_json::json!({ "ids": ids }))
    } else {
        println!("{}", ids.first().copied().unwrap_or_default());
        Ok(())
    }
}

async fn many(client: &Client, a: &PushArgs, path: &std::path::Path, json: bool) -> CmdResult {
    if a.batch == 0 {
        return Err(Failure::usage("--batch must be at least 1"));
    }
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(path)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut jobs = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Failure::usage(format!("line {}: {e}", n + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let job: NewJobBody = serde_json::from_str(&line)
            .map_err(|e| Failure::usage(format!("line {}: {e}", n + 1)))?;
        jobs.push(job);
    }
    let patience = patience(&a.timeout)?;
    let total = jobs.len() as u64;
    let bar = if json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} jobs  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut ids = Vec::with_capacity(jobs.len());
    let mut rest = jobs.into_iter().peekable();
    while rest.peek().is_some() {
        let batch: Vec<NewJobBody> = rest.by_ref().take(a.batch).collect();
        let n = batch.len() as u64;
        // A queue at its max_depth answers 429: wait as told and send the same batch again
        // (a refused batch enqueued nothing, so this cannot duplicate).
        match enqueue(client, batch, patience, json).await {
            Ok(got) => ids.extend(got),
            Err(e) => {
                bar.abandon();
                let f = e;
                return Err(match f {
                    Failure::Usage(m) => Failure::Usage(format!(
                        "{m} (the {} jobs before this batch were enqueued)",
                        ids.len()
                    )),
                    other => other,
                });
            }
        }
        bar.inc(n);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if json {
        out::json(&serde_json::json!({ "enqueued": ids.len(), "seconds": secs, "ids": ids }))
    } else {
        println!(
            "enqueued {} jobs in {:.2} s ({:.0} jobs/s)",
            ids.len(),
            secs,
            ids.len() as f64 / secs.max(1e-9)
        );
        Ok(())
    }
}
