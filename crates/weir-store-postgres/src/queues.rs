//! Queues and reads: configuration (atomic updates under the queue row's lock, a short-lived
//! per-server copy for the hot paths), statistics, job pages and aggregates.

use crate::conv::{db, i, job_of, u, JOB_COLUMNS};
use crate::Inner;
use deadpool_postgres::Transaction;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;
use weir_core::{
    advise, config::check_queue_name, AdvisorInput, Aggregate, AggregateRecord, Error, Job,
    JobFilter, JobId, JobPage, JobState, Order, QueueConfig, QueueStats, Result,
};
use weir_store::{AggregateListParams, MaintenanceReport};

/// A configuration as the queue row stores it: the JSON the API reads, and the settings SQL
/// itself needs beside it.
pub(crate) struct QueueColumns {
    pub(crate) config: serde_json::Value,
    pub(crate) aging_ms: i64,
    pub(crate) smallest_cost: bool,
    pub(crate) group_limit: i32,
    pub(crate) backoff_base_ms: i64,
    pub(crate) backoff_cap_ms: i64,
    pub(crate) delete_at_ack: bool,
    pub(crate) has_breaker: bool,
}

impl QueueColumns {
    /// `$2` onwards of the statements that write a queue row (`$1` is the name or names),
    /// in the order `config, aging_ms, smallest_cost, group_limit, backoff_base_ms,
    /// backoff_cap_ms, delete_at_ack, has_breaker`.
    pub(crate) fn params<'a>(
        &'a self,
        first: &'a (dyn tokio_postgres::types::ToSql + Sync),
    ) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 9] {
        [
            first,
            &self.config,
            &self.aging_ms,
            &self.smallest_cost,
            &self.group_limit,
            &self.backoff_base_ms,
            &self.backoff_cap_ms,
            &self.delete_at_ack,
            &self.has_breaker,
        ]
    }

    pub(crate) fn of(c: &QueueConfig) -> Self {
        QueueColumns {
            config: serde_json::to_value(c).unwrap_or(serde_json::Value::Null),
            aging_ms: i(c.aging_ms),
            smallest_cost: c.order == Order::SmallestCost,
            group_limit: i32::try_from(c.group_concurrency.max(1)).unwrap_or(i32::MAX),
            backoff_base_ms: i(c.backoff.base_ms),
            backoff_cap_ms: i(c.backoff.cap_ms),
            delete_at_ack: c.retention.completed_max == 0 || c.retention.completed_ms == 0,
            has_breaker: c.breaker.is_some(),
        }
    }
}

/// SQL selecting the ids of queue `$1`'s oldest finished jobs in `states` beyond the newest
/// `$2` of them, at most 10,000. How many there are beyond the count comes from
/// `state_counts` (exact in the statement's snapshot), so the jobs kept are never read;
/// those to delete are read oldest first from `jobs_finished`, each state's range in order
/// and several states merged, never sorted. Each branch of the union says its own order:
/// without it, PostgreSQL (15) plans the union's order as a sort of both ranges whole.
fn oldest_beyond_count(states: &[u8]) -> String {
    let ranges = states
        .iter()
        .map(|st| {
            format!(
                "(SELECT id, finished_at FROM {{s}}.jobs WHERE queue = $1 AND state = {st} \
                  ORDER BY finished_at, id)"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let listed = in_list(states);
    format!(
        "SELECT f.id FROM ({ranges}) f ORDER BY f.finished_at, f.id \
         LIMIT least(10000, greatest(0, (SELECT coalesce(sum(c.n), 0)::bigint \
           FROM {{s}}.state_counts c WHERE c.queue = $1 AND c.state IN ({listed})) - $2::bigint))"
    )
}

/// `states` as the list of an SQL `IN (…)`: literals, so that a plan can prove a partial
/// index's predicate from them.
fn in_list(states: &[u8]) -> String {
    states
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn config_of(v: serde_json::Value) -> Result<QueueConfig> {
    serde_json::from_value(v)
        .map_err(|e| Error::storage(format!("a stored queue configuration does not parse: {e}")))
}

impl Inner {
    /// The configurations of `names` as the transaction sees them (`lock`: and locks the
    /// rows until it ends). Unknown queues are absent.
    pub(crate) async fn configs_in(
        &self,
        tx: &Transaction<'_>,
        names: &[String],
        lock: bool,
    ) -> Result<HashMap<String, QueueConfig>> {
        let sql = if lock {
            "SELECT name, config FROM {s}.queues WHERE name = ANY($1) ORDER BY name FOR UPDATE"
        } else {
            "SELECT name, config FROM {s}.queues WHERE name = ANY($1)"
        };
        let st = tx.prepare_cached(&self.q(sql)).await.map_err(db)?;
        let mut out = HashMap::new();
        for r in tx.query(&st, &[&names]).await.map_err(db)? {
            out.insert(r.get::<_, String>(0), config_of(r.get(1))?);
        }
        if !lock {
            self.remember(&out);
        }
        Ok(out)
    }

    fn remember(&self, configs: &HashMap<String, QueueConfig>) {
        let now = Instant::now();
        let mut cache = self.configs.lock();
        for (n, c) in configs {
            cache.insert(n.clone(), (c.clone(), now));
        }
    }

    /// Of `names`, the configurations this server's copy holds younger than
    /// [`crate::CONFIG_TTL`], and the names it must read.
    pub(crate) fn cached_split(
        &self,
        names: &[String],
    ) -> (HashMap<String, QueueConfig>, Vec<String>) {
        let mut out = HashMap::with_capacity(names.len());
        let mut missing = Vec::new();
        let cache = self.configs.lock();
        for n in names {
            match cache.get(n) {
                Some((c, at)) if at.elapsed() < crate::CONFIG_TTL => {
                    out.insert(n.clone(), c.clone());
                }
                _ => missing.push(n.clone()),
            }
        }
        (out, missing)
    }

    /// The configurations of `names`, from this server's copy when it is fresh, else read
    /// (one query for all that are missing or stale).
    pub(crate) async fn configs_cached(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, QueueConfig>> {
        let (mut out, missing) = self.cached_split(names);
        if !missing.is_empty() {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db)?;
            out.extend(self.configs_in(&tx, &missing, false).await?);
            tx.commit().await.map_err(db)?;
        }
        Ok(out)
    }

    /// [`Self::configs_cached`] inside a transaction (no second connection is taken).
    pub(crate) async fn configs_cached_tx(
        &self,
        tx: &Transaction<'_>,
        names: &[String],
    ) -> Result<HashMap<String, QueueConfig>> {
        let (mut out, missing) = self.cached_split(names);
        if !missing.is_empty() {
            out.extend(self.configs_in(tx, &missing, false).await?);
        }
        Ok(out)
    }

    /// Applies `change` to a queue's configuration under its row lock (creating the queue
    /// over the defaults); a result that does not validate changes nothing.
    pub(crate) async fn config_update(
        &self,
        name: &str,
        change: impl Fn(&mut QueueConfig) + Send,
    ) -> Result<QueueConfig> {
        check_queue_name(name)?;
        let names = vec![name.to_string()];
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        self.ensure_queues(&tx, &names).await?;
        let old = self
            .configs_in(&tx, &names, true)
            .await?
            .remove(name)
            .unwrap_or_default();
        let mut new = old.clone();
        change(&mut new);
        new.validate(&self.limits)?;
        let cols = QueueColumns::of(&new);
        let st = tx
            .prepare_cached(&self.q(
                "UPDATE {s}.queues SET config = $2, aging_ms = $3, smallest_cost = $4, \
                   group_limit = $5, backoff_base_ms = $6, backoff_cap_ms = $7, \
                   delete_at_ack = $8, has_breaker = $9 WHERE name = $1",
            ))
            .await
            .map_err(db)?;
        tx.execute(&st, &cols.params(&name)).await.map_err(db)?;
        if old.aging_ms != new.aging_ms || old.order != new.order {
            // The ready order of waiting jobs follows the new settings.
            let st = tx
                .prepare_cached(&self.q(&format!(
                    "UPDATE {{s}}.jobs j SET rank = {rank}, \
                       sort_cost = CASE WHEN q.smallest_cost THEN j.cost ELSE 0 END \
                     FROM {{s}}.queues q WHERE q.name = j.queue AND j.queue = $1 AND j.state = 1",
                    rank = crate::jobs::rank_sql("j.run_at"),
                )))
                .await
                .map_err(db)?;
            tx.execute(&st, &[&name]).await.map_err(db)?;
        }
        if old.group_concurrency.max(1) != new.group_concurrency.max(1) {
            let st = tx
                .prepare_cached(&self.q("SELECT DISTINCT grp FROM {s}.jobs \
                     WHERE queue = $1 AND grp IS NOT NULL AND state IN (0, 1, 2, 4)"))
                .await
                .map_err(db)?;
            let groups: BTreeSet<(String, String)> = tx
                .query(&st, &[&name])
                .await
                .map_err(db)?
                .iter()
                .map(|r| (name.to_string(), r.get::<_, String>(0)))
                .collect();
            self.refresh_groups(&tx, groups).await?;
        }
        tx.commit().await.map_err(db)?;
        self.configs
            .lock()
            .insert(name.to_string(), (new.clone(), Instant::now()));
        self.work_arrived_in([name]);
        Ok(new)
    }

    pub(crate) async fn config_get(&self, name: &str) -> Result<Option<QueueConfig>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(&self.q("SELECT config FROM {s}.queues WHERE name = $1"))
            .await
            .map_err(db)?;
        match client.query_opt(&st, &[&name]).await.map_err(db)? {
            Some(r) => Ok(Some(config_of(r.get(0))?)),
            None => Ok(None),
        }
    }

    pub(crate) async fn queue_list(&self) -> Result<Vec<String>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(&self.q("SELECT name FROM {s}.queues ORDER BY name"))
            .await
            .map_err(db)?;
        Ok(client
            .query(&st, &[])
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub(crate) async fn queue_stats(&self, name: &str) -> Result<Option<QueueStats>> {
        let now = self.now();
        let Some(config) = self.config_get(name).await? else {
            return Ok(None);
        };
        let client = self.client().await?;
        let st = client
            .prepare_cached(&self.q(
                "SELECT state, sum(n)::bigint FROM {s}.state_counts WHERE queue = $1 \
                   GROUP BY state",
            ))
            .await
            .map_err(db)?;
        let mut counts = [0u64; 7];
        for r in client.query(&st, &[&name]).await.map_err(db)? {
            let state = crate::conv::state_of(r.get(0));
            counts[state as usize] = u(r.get(1));
        }
        let st = client
            .prepare_cached(&self.q(&format!(
                "SELECT {} FROM (SELECT $1::text AS name) w",
                crate::jobs::OLDEST_WAITING
            )))
            .await
            .map_err(db)?;
        let oldest: Option<i64> = client.query_one(&st, &[&name]).await.map_err(db)?.get(0);
        let oldest_waiting_ms = oldest.map_or(0, |t| now.saturating_sub(u(t)));
        let st = client
            .prepare_cached(&self.q("SELECT flow FROM {s}.queues WHERE name = $1"))
            .await
            .map_err(db)?;
        let flow: weir_core::SharedFlow = client
            .query_opt(&st, &[&name])
            .await
            .map_err(db)?
            .and_then(|r| r.get::<_, Option<serde_json::Value>>(0))
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let (wait_ms, run_ms) = {
            let local = self.local.lock();
            local
                .get(name)
                .map(|l| (l.wait_ms.clone(), l.run_ms.clone()))
                .unwrap_or_default()
        };
        drop(client);
        // Rates over the current hour's aggregates of every server (at least a minute).
        let hour = now - now % weir_core::aggregate::HOUR_MS;
        let this_hour = self
            .aggregate_list(AggregateListParams {
                queue: Some(name.to_string()),
                from_ms: hour,
                to_ms: hour + 1,
            })
            .await?
            .pop()
            .map(|r| r.counts)
            .unwrap_or_default();
        let secs = ((now - hour) as f64 / 1000.0).max(60.0);
        let count = |s: JobState| counts[s as usize];
        let input = AdvisorInput {
            backlog: count(JobState::Waiting),
            active: count(JobState::Active),
            arrival_per_s: this_hour.enqueued as f64 / secs,
            completed_per_s: this_hour.completed as f64 / secs,
            failed_per_s: this_hour.failed as f64 / secs,
            mean_run_ms: (this_hour.completed > 0)
                .then(|| this_hour.run_ms_sum as f64 / this_hour.completed as f64),
            wait_p95_ms: wait_ms.quantile_upper_bound(0.95),
            drain_window_ms: config.drain_window_ms,
        };
        Ok(Some(QueueStats {
            name: name.to_string(),
            counts: JobState::ALL
                .iter()
                .map(|st| (st.as_str(), counts[*st as usize]))
                .collect(),
            oldest_waiting_ms,
            starving: config.starvation_ms > 0 && oldest_waiting_ms >= config.starvation_ms,
            breaker: if config.breaker.is_some() {
                flow.breaker.name()
            } else {
                "off"
            },
            config,
            wait_ms,
            run_ms,
            arrival_per_s: input.arrival_per_s,
            completed_per_s: input.completed_per_s,
            failed_per_s: input.failed_per_s,
            advice: advise(&input),
        }))
    }

    pub(crate) async fn get(&self, id: JobId) -> Result<Option<Job>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(&self.q(&format!(
                "SELECT {JOB_COLUMNS} FROM {{s}}.jobs j JOIN {{s}}.queues q ON q.name = j.queue \
                 WHERE j.id = $1"
            )))
            .await
            .map_err(db)?;
        Ok(client
            .query_opt(&st, &[&i(id.0)])
            .await
            .map_err(db)?
            .map(|r| job_of(&r)))
    }

    pub(crate) async fn list(&self, f: JobFilter) -> Result<JobPage> {
        let limit = if f.limit == 0 { 100 } else { f.limit.min(1000) };
        let after = i(f.after.map_or(0, |a| a.0));
        let n = i64::try_from(limit + 1).unwrap_or(1001);
        let queue = f.queue.filter(|q| !q.is_empty());
        // Each state is written as a literal, so that the plan (a prepared statement's
        // generic one too) reads the partial index that holds the jobs of that state; those
        // order by `id + 0` (see migration 4).
        let select = format!(
            "SELECT {JOB_COLUMNS} FROM {{s}}.jobs j JOIN {{s}}.queues q ON q.name = j.queue"
        );
        // Waiting, scheduled and failed jobs are listed from `jobs_waiting` and
        // `jobs_pending`, which key on `queue || ''` (see migrations 4 and 5).
        let on_queue = |state: JobState| match state {
            JobState::Waiting | JobState::Scheduled | JobState::Failed => "queue || '' = $3",
            _ => "queue = $3",
        };
        let sql = match (&queue, f.state) {
            (Some(_), Some(state)) => format!(
                "{select} WHERE j.id + 0 > $1 AND j.{} AND j.state = {} \
                 ORDER BY j.id + 0 LIMIT $2",
                on_queue(state),
                state as i16
            ),
            (Some(_), None) => {
                let each: Vec<String> = JobState::ALL
                    .iter()
                    .map(|st| {
                        format!(
                            "(SELECT id FROM {{s}}.jobs WHERE {} AND state = {} \
                             AND id + 0 > $1 ORDER BY id + 0 LIMIT $2)",
                            on_queue(*st),
                            *st as i16
                        )
                    })
                    .collect();
                // By `id = ANY(ARRAY(…))`: through the primary key, never a walk of it
                // in id order filtered by the union (the plan PostgreSQL prefers once it
                // has statistics, which reads every job of every queue before a small one's).
                format!(
                    "{select} WHERE j.id = ANY(ARRAY({})) ORDER BY j.id LIMIT $2",
                    each.join(" UNION ALL ")
                )
            }
            (None, Some(state)) => format!(
                "{select} WHERE j.id > $1 AND j.state = {} ORDER BY j.id LIMIT $2",
                state as i16
            ),
            (None, None) => format!("{select} WHERE j.id > $1 ORDER BY j.id LIMIT $2"),
        };
        let client = self.client().await?;
        let st = client.prepare_cached(&self.q(&sql)).await.map_err(db)?;
        let rows = match &queue {
            Some(q) => client.query(&st, &[&after, &n, q]).await,
            None => client.query(&st, &[&after, &n]).await,
        }
        .map_err(db)?;
        let mut jobs: Vec<Job> = rows.iter().map(job_of).collect();
        let more = jobs.len() > limit;
        jobs.truncate(limit);
        Ok(JobPage {
            next_cursor: if more {
                jobs.last().map(|j| j.id)
            } else {
                None
            },
            jobs,
        })
    }

    pub(crate) async fn aggregate_list(
        &self,
        p: AggregateListParams,
    ) -> Result<Vec<AggregateRecord>> {
        self.flush_aggregates().await?;
        let from = p.from_ms - p.from_ms % weir_core::aggregate::HOUR_MS;
        let client = self.client().await?;
        // One queue's hours from the primary key, every queue's from `aggregates_hour`.
        let columns = "SELECT queue, hour_ms, enqueued, started, completed, failed, expired, \
            dead, cancelled, run_ms_sum, run_ms_max, wait_ms_sum FROM {s}.aggregates \
            WHERE hour_ms >= $1 AND hour_ms < $2";
        let rows = match &p.queue {
            Some(q) => {
                let sql = format!("{columns} AND queue = $3 ORDER BY hour_ms");
                let st = client.prepare_cached(&self.q(&sql)).await.map_err(db)?;
                client.query(&st, &[&i(from), &i(p.to_ms), q]).await
            }
            None => {
                let sql = format!("{columns} ORDER BY queue, hour_ms");
                let st = client.prepare_cached(&self.q(&sql)).await.map_err(db)?;
                client.query(&st, &[&i(from), &i(p.to_ms)]).await
            }
        }
        .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| AggregateRecord {
                queue: r.get(0),
                hour_ms: u(r.get(1)),
                counts: Aggregate {
                    enqueued: u(r.get(2)),
                    started: u(r.get(3)),
                    completed: u(r.get(4)),
                    failed: u(r.get(5)),
                    expired: u(r.get(6)),
                    dead: u(r.get(7)),
                    cancelled: u(r.get(8)),
                    run_ms_sum: u(r.get(9)),
                    run_ms_max: u(r.get(10)),
                    wait_ms_sum: u(r.get(11)),
                },
            })
            .collect())
    }

    /// Retention of every queue: finished jobs past their age, and the oldest beyond each
    /// queue's count, in batches; then unique keys that no longer deduplicate.
    pub(crate) async fn retention(&self, now: u64) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        let client = self.client().await?;
        let st = client
            .prepare_cached(&self.q("SELECT name, config FROM {s}.queues"))
            .await
            .map_err(db)?;
        let queues = client.query(&st, &[]).await.map_err(db)?;
        // The states are literals in the statements, so that every plan reads the partial
        // index of finished jobs (a parameter there cannot prove its predicate). The jobs
        // are deleted as `id = ANY(ARRAY(…))`, through the primary key, never by joining the
        // batch to a scan of the table; their unique keys go in the same statement.
        let delete = |pick: &str| {
            format!(
                "WITH gone AS (DELETE FROM {{s}}.jobs WHERE id = ANY(ARRAY({pick})) \
                   RETURNING id, unique_key), \
                 keys AS (DELETE FROM {{s}}.unique_keys u WHERE u.queue = $1 \
                   AND u.key = ANY(ARRAY(SELECT unique_key FROM gone \
                                         WHERE unique_key IS NOT NULL)) \
                   AND u.job_id = ANY(ARRAY(SELECT id FROM gone))) \
                 SELECT count(*) FROM gone"
            )
        };
        let mut by_age = Vec::new();
        let mut by_count = Vec::new();
        for states in [&[3u8][..], &[5, 6]] {
            let listed = in_list(states);
            by_age.push(
                client
                    .prepare_cached(&self.q(&delete(&format!(
                        "SELECT id FROM {{s}}.jobs WHERE queue = $1 AND state IN ({listed}) \
                           AND finished_at <= $2 LIMIT 10000"
                    ))))
                    .await
                    .map_err(db)?,
            );
            by_count.push(
                client
                    .prepare_cached(&self.q(&delete(&oldest_beyond_count(states))))
                    .await
                    .map_err(db)?,
            );
        }
        for r in &queues {
            let name: String = r.get(0);
            let cfg = config_of(r.get(1))?;
            let keep = cfg.retention;
            let kinds = [
                (keep.completed_ms, keep.completed_max),
                (keep.dead_ms, keep.dead_max),
            ];
            for (k, (max_age, max_count)) in kinds.into_iter().enumerate() {
                let cutoff = i(now.saturating_sub(max_age));
                loop {
                    let n: i64 = client
                        .query_one(&by_age[k], &[&name, &cutoff])
                        .await
                        .map_err(db)?
                        .get(0);
                    report.deleted += usize::try_from(n).unwrap_or(0);
                    if n < 10_000 {
                        break;
                    }
                }
                loop {
                    let n: i64 = client
                        .query_one(&by_count[k], &[&name, &i(max_count)])
                        .await
                        .map_err(db)?
                        .get(0);
                    report.deleted += usize::try_from(n).unwrap_or(0);
                    if n < 10_000 {
                        break;
                    }
                }
            }
        }
        // Counts by state: the rows of backends that are gone fold into `pid = 0`, and
        // other backends' zeros go. Rows a transaction holds are skipped (next time), so maintenance never
        // waits for, or deadlocks with, a transaction writing its own counts.
        let st = client
            .prepare_cached(&self.q(
                "WITH gone AS (DELETE FROM {s}.state_counts WHERE ctid IN ( \
                   SELECT c.ctid FROM {s}.state_counts c \
                    WHERE c.pid <> 0 AND (c.n = 0 OR NOT EXISTS ( \
                            SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.pid)) \
                   FOR UPDATE SKIP LOCKED) \
                   RETURNING queue, state, n) \
                 INSERT INTO {s}.state_counts AS c (queue, state, pid, n) \
                 SELECT queue, state, 0, sum(n) FROM gone GROUP BY queue, state \
                 HAVING sum(n) <> 0 ORDER BY queue, state \
                 ON CONFLICT (queue, state, pid) DO UPDATE SET n = c.n + EXCLUDED.n",
            ))
            .await
            .map_err(db)?;
        client.execute(&st, &[]).await.map_err(db)?;
        // Unique keys past their window, and per-key rate limiter rows whose time has
        // passed (equal to a fresh row: a key absent starts with its whole burst), in
        // batches of rows nobody holds: a fetch that holds a limiter row keeps it, and one
        // that finds its row just deleted hands out none of that key's jobs this time.
        let batched = [
            "DELETE FROM {s}.unique_keys WHERE ctid = ANY(ARRAY( \
               SELECT ctid FROM {s}.unique_keys WHERE live_until <= $1 \
               LIMIT 10000 FOR UPDATE SKIP LOCKED))",
            "DELETE FROM {s}.group_rates WHERE ctid = ANY(ARRAY( \
               SELECT ctid FROM {s}.group_rates WHERE tat_us <= $1::bigint * 1000 \
               LIMIT 10000 FOR UPDATE SKIP LOCKED))",
        ];
        for sql in batched {
            let st = client.prepare_cached(&self.q(sql)).await.map_err(db)?;
            while client.execute(&st, &[&i(now)]).await.map_err(db)? == 10_000 {}
        }
        Ok(report)
    }
}
