//! Flow control across servers. Each limit is enforced inside the transaction that hands out
//! or finishes jobs, on state every server shares:
//!
//! - a queue's concurrency limit, rate limit (GCRA) and circuit breaker: the queue's row,
//!   locked `FOR UPDATE` by every fetch of that queue and by acks and fails that feed its
//!   breaker; the rate limiter's arrival time and the breaker's window are the engine's own
//!   [`SharedFlow`], stored as JSON in `queues.flow`, so both backends run one
//!   implementation of each algorithm;
//! - per-key rate limits: one row per (queue, key) in `group_rates`, locked for the keys a
//!   fetch hands out;
//! - `max_depth`: the queue's row, locked by enqueues to a limited queue, and a count.
//!
//! Only queues that configure a limit pay for its lock; an unlimited queue's fetch takes no
//! lock beyond its jobs' rows (`SKIP LOCKED`).

use crate::conv::{db, i, u};
use crate::Inner;
use deadpool_postgres::{GenericClient, Transaction};
use std::collections::HashMap;
use weir_core::{gcra, gcra_allowance, QueueConfig, RateLimit, Result, SharedFlow};

/// One limited queue as a fetch sees it under its row lock.
pub(crate) struct Held {
    pub(crate) config: QueueConfig,
    pub(crate) flow: SharedFlow,
    before: SharedFlow,
    /// How many more jobs it may hand out in this fetch.
    pub(crate) room: usize,
}

/// Whether a queue's fetch must lock its row: it has a limit that counts across servers.
pub(crate) fn is_controlled(c: &QueueConfig) -> bool {
    c.concurrency > 0 || c.rate_limit.is_some() || c.breaker.is_some()
}

fn flow_of(v: Option<serde_json::Value>) -> SharedFlow {
    v.and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

impl Inner {
    /// Locks the rows of `names` in name order (so two transactions never wait on each
    /// other's rows the other way round); returns each one's settings and shared state.
    async fn lock_flows(
        &self,
        tx: &impl GenericClient,
        names: &[String],
    ) -> Result<Vec<(String, QueueConfig, SharedFlow)>> {
        let st = tx
            .prepare_cached(&self.q(
                "SELECT name, config, flow FROM {s}.queues WHERE name = ANY($1) \
                 ORDER BY name FOR UPDATE",
            ))
            .await
            .map_err(db)?;
        Ok(tx
            .query(&st, &[&names])
            .await
            .map_err(db)?
            .iter()
            .map(|r| {
                let config: QueueConfig = serde_json::from_value(r.get(1)).unwrap_or_default();
                (r.get(0), config, flow_of(r.get(2)))
            })
            .collect())
    }

    /// Locks the rows of `names` (in name order) and works out how many jobs each may hand
    /// out now: its concurrency room, its rate limit's tokens and its breaker's allowance.
    pub(crate) async fn hold(
        &self,
        tx: &impl GenericClient,
        names: &[String],
        now: u64,
    ) -> Result<HashMap<String, Held>> {
        let mut held = HashMap::new();
        if names.is_empty() {
            return Ok(held);
        }
        let rows = self.lock_flows(tx, names).await?;
        let st = tx
            .prepare_cached(&self.q("SELECT queue, count(*) FROM {s}.jobs \
                 WHERE queue = ANY($1) AND state = 2 GROUP BY queue"))
            .await
            .map_err(db)?;
        let active: HashMap<String, u64> = tx
            .query(&st, &[&names])
            .await
            .map_err(db)?
            .iter()
            .map(|r| (r.get::<_, String>(0), u(r.get(1))))
            .collect();
        for (name, config, mut flow) in rows {
            let before = flow.clone();
            let mut room = usize::MAX;
            if config.concurrency > 0 {
                let running = active.get(&name).copied().unwrap_or(0);
                room = usize::try_from(u64::from(config.concurrency).saturating_sub(running))
                    .unwrap_or(usize::MAX);
            }
            room =
                room.min(flow.allowance(config.rate_limit.as_ref(), config.breaker.as_ref(), now));
            held.insert(
                name,
                Held {
                    config,
                    flow,
                    before,
                    room,
                },
            );
        }
        Ok(held)
    }

    /// Uses what each held queue handed out (`taken`), and writes back the state that
    /// changed.
    pub(crate) async fn release_held(
        &self,
        tx: &impl GenericClient,
        held: HashMap<String, Held>,
        taken: &HashMap<String, usize>,
        now: u64,
    ) -> Result<()> {
        for (name, mut h) in held {
            let n = taken.get(&name).copied().unwrap_or(0);
            h.flow.consume(h.config.rate_limit.as_ref(), n, now);
            self.store_flow(tx, &name, &h.before, &h.flow).await?;
        }
        Ok(())
    }

    async fn store_flow(
        &self,
        tx: &impl GenericClient,
        name: &str,
        before: &SharedFlow,
        after: &SharedFlow,
    ) -> Result<()> {
        if before == after {
            return Ok(());
        }
        if before.breaker.name() != after.breaker.name() {
            tracing::info!(
                queue = name,
                state = after.breaker.name(),
                "circuit breaker"
            );
        }
        let st = tx
            .prepare_cached(&self.q("UPDATE {s}.queues SET flow = $2 WHERE name = $1"))
            .await
            .map_err(db)?;
        let v = serde_json::to_value(after).unwrap_or(serde_json::Value::Null);
        tx.execute(&st, &[&name, &v]).await.map_err(db)?;
        Ok(())
    }

    /// Feeds finished calls to the breakers of their queues: `(queue, failed, run_ms)`, for
    /// queues whose (cached) configuration has a breaker. Locks those queues' rows.
    pub(crate) async fn record_calls(
        &self,
        tx: &Transaction<'_>,
        calls: &[(String, bool, u64)],
        configs: &HashMap<String, QueueConfig>,
        now: u64,
    ) -> Result<()> {
        let mut names: Vec<String> = calls
            .iter()
            .filter(|(q, _, _)| configs.get(q).is_some_and(|c| c.breaker.is_some()))
            .map(|(q, _, _)| q.clone())
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        names.sort();
        names.dedup();
        for (name, config, before) in self.lock_flows(tx, &names).await? {
            let Some(b) = config.breaker else { continue };
            let mut flow = before.clone();
            for (_, failed, run_ms) in calls.iter().filter(|(q, _, _)| *q == name) {
                let slow = !failed && b.slow_call_ms > 0 && *run_ms > b.slow_call_ms;
                flow.record_call(&b, *failed, slow, now);
            }
            self.store_flow(tx, &name, &before, &flow).await?;
        }
        Ok(())
    }

    /// When one of `queues`, with waiting work that its rate limit or breaker holds back,
    /// may next hand out a job.
    pub(crate) async fn next_token(&self, queues: &[String]) -> Result<Option<u64>> {
        let now = self.now();
        let client = self.client().await?;
        let st = client
            .prepare_cached(&self.q(
                "SELECT q.name, q.config, q.flow FROM {s}.queues q WHERE q.name = ANY($1) \
                 AND EXISTS (SELECT 1 FROM {s}.jobs j WHERE j.queue = q.name AND j.state = 1 \
                             AND j.avail)",
            ))
            .await
            .map_err(db)?;
        let names = queues.to_vec();
        let mut due: Option<u64> = None;
        for r in client.query(&st, &[&names]).await.map_err(db)? {
            let config: QueueConfig = serde_json::from_value(r.get(1)).unwrap_or_default();
            if config.paused {
                continue;
            }
            let flow = flow_of(r.get(2));
            if let Some(t) = flow.next_token_at(config.rate_limit.as_ref(), now) {
                due = Some(due.map_or(t, |d| d.min(t)));
            }
        }
        Ok(due)
    }

    /// Per-key rate limits: of `groups` (the keys of candidate jobs, in ready order, with
    /// repeats), how many jobs each key may start now. Locks the keys' limiter rows.
    pub(crate) async fn group_tokens(
        &self,
        tx: &impl GenericClient,
        queue: &str,
        keys: &[String],
        rl: &RateLimit,
        now: u64,
    ) -> Result<HashMap<String, usize>> {
        let mut distinct: Vec<String> = keys.to_vec();
        distinct.sort();
        distinct.dedup();
        let st = tx
            .prepare_cached(&self.q("INSERT INTO {s}.group_rates (queue, grp, tat_us) \
                 SELECT $1, g, 0 FROM unnest($2::text[]) AS g ON CONFLICT DO NOTHING"))
            .await
            .map_err(db)?;
        tx.execute(&st, &[&queue, &distinct]).await.map_err(db)?;
        let st = tx
            .prepare_cached(&self.q(
                "SELECT grp, tat_us FROM {s}.group_rates WHERE queue = $1 AND grp = ANY($2) \
                 ORDER BY grp FOR UPDATE",
            ))
            .await
            .map_err(db)?;
        Ok(tx
            .query(&st, &[&queue, &distinct])
            .await
            .map_err(db)?
            .iter()
            .map(|r| (r.get::<_, String>(0), gcra_allowance(u(r.get(1)), rl, now)))
            .collect())
    }

    /// Uses one token per job handed out of each key.
    pub(crate) async fn use_group_tokens(
        &self,
        tx: &impl GenericClient,
        queue: &str,
        used: &HashMap<String, usize>,
        rl: &RateLimit,
        now: u64,
    ) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        let (t, _) = gcra(rl);
        let (keys, counts): (Vec<String>, Vec<i64>) =
            used.iter().map(|(k, n)| (k.clone(), i(*n as u64))).unzip();
        let st = tx
            .prepare_cached(&self.q(
                "UPDATE {s}.group_rates r SET tat_us = greatest(r.tat_us, $3) + $4 * v.n \
                 FROM unnest($2::text[], $5::bigint[]) AS v(g, n) \
                 WHERE r.queue = $1 AND r.grp = v.g",
            ))
            .await
            .map_err(db)?;
        tx.execute(
            &st,
            &[&queue, &keys, &i(now.saturating_mul(1000)), &i(t), &counts],
        )
        .await
        .map_err(db)?;
        Ok(())
    }
}
