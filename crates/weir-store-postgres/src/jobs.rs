//! The job operations: enqueue, fetch, ack, fail, heartbeat, release, cancel, retry, purge.
//!
//! Every operation is one transaction. Every write re-checks the job's state and lease in
//! its `WHERE` clause, so a stale caller (a worker past its lease, a second server's
//! maintenance) changes nothing; what it asked for is then classified from the job as it is.

use crate::conv::{db, i, u};
use crate::Inner;
use deadpool_postgres::{GenericClient, Transaction};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use weir_core::{
    validate_new_job, Ack, BatchOutcome, Error, Fail, FetchedJob, JobId, JobState, NewJob, Order,
    Payload, QueueConfig, Rejection, Result,
};
use weir_store::JobFetchParams;

/// The lease of the jobs a CTE `c` (an `id` column) names, with `$3` the time; returns what
/// [`Inner::take`] reads. A new lease id is random and never the job's previous one. The
/// jobs are found as `id = ANY(ARRAY(…))`, through the primary key whatever the table's
/// statistics (see `by_id`), never by joining the CTE to a scan of the table; their state is
/// re-checked as `state + 0`, which no partial index's predicate matches (as `state = 1`,
/// the plan of a table analyzed while empty read all of `jobs_waiting` as a bitmap). Every
/// statement that finds jobs by id re-checks their state so: as `state = 2`, the rescue of
/// expired leases was planned as a bitmap of the whole of `jobs_leases` (every leased job's
/// entry, dead ones too, some 80,000 per tick in a burst) ANDed with the ids.
const LEASE: &str = "UPDATE {s}.jobs j SET state = 2, avail = false, attempt = j.attempt + 1, \
    lease_id = mod(j.lease_id + floor(random() * (9007199254740991::bigint - 1))::bigint, \
                   9007199254740991::bigint) + 1, \
    lease_deadline = $3 + j.timeout_ms, started_at = $3 \
    WHERE j.id = ANY(ARRAY(SELECT id FROM c)) AND j.state + 0 = 1 \
    RETURNING j.id, j.kind, j.payload, j.attempt, j.lease_id, j.lease_deadline, j.run_at, \
      j.rank, j.sort_cost";

/// How often one server promotes due jobs and rescues expired leases of the queues it
/// fetches from, at most, ms of the store's clock.
const TICK_MS: u64 = 10;

/// The oldest waiting job's ready time of queue `w.name` (a scalar subquery): the earliest
/// `run_at` of its first 256 waiting jobs by id, read from the `jobs_waiting` index
/// alone. Jobs become ready in about the order of their ids, so this is the oldest
/// unless more than that many older jobs were retried or delayed past a younger one.
pub(crate) const OLDEST_WAITING: &str = "(SELECT min(o.run_at) FROM (SELECT run_at \
    FROM {s}.jobs WHERE queue || '' = w.name AND state = 1 ORDER BY id + 0 LIMIT 256) o)";

/// Most errors kept per job; older ones are dropped (as the embedded engine).
const MAX_ERRORS_KEPT: usize = 32;

/// A group whose ready jobs must be re-derived: (queue, group key).
pub(crate) type GroupKey = (String, String);

/// The ready order of a waiting job: `(rank, sort_cost)`.
pub(crate) fn ready_key(cfg: &QueueConfig, run_at: u64, priority: i32, cost: u64) -> (i64, i64) {
    let epoch = run_at.checked_div(cfg.aging_ms).unwrap_or(0);
    (
        i(epoch) - i64::from(priority),
        if cfg.order == Order::SmallestCost {
            i(cost)
        } else {
            0
        },
    )
}

/// SQL for the rank of job `j` in queue row `q` once it is ready at `ready` (an expression).
pub(crate) fn rank_sql(ready: &str) -> String {
    format!("(CASE WHEN q.aging_ms > 0 THEN {ready} / q.aging_ms ELSE 0 END) - j.priority")
}

/// How many due jobs one promotion moves at most.
const PROMOTE_BATCH: usize = 5_000;

/// SQL selecting (and locking) the ids of the due scheduled and failed jobs (`run_at <= $1`)
/// of the queues named by the rows of `over` (a set-returning expression), earliest first
/// within each queue, `extra` filtering them. Each queue is a range of `jobs_due_by_queue`
/// read in order, so a backlog of due jobs is never sorted to move the first batch.
fn due_sql(over: &str, extra: &str) -> String {
    format!(
        "SELECT d.id FROM {over} AS n(name) CROSS JOIN LATERAL ( \
           SELECT id FROM {{s}}.jobs WHERE queue = n.name AND state IN (0, 4) \
             AND run_at <= $1 {extra} \
           ORDER BY run_at LIMIT {PROMOTE_BATCH} FOR UPDATE SKIP LOCKED) d \
         LIMIT {PROMOTE_BATCH}"
    )
}

/// SQL appending one attempt error to `j.errors`, keeping the newest [`MAX_ERRORS_KEPT`].
fn push_error_sql(message: &str, at: &str) -> String {
    format!(
        "(CASE WHEN jsonb_array_length(j.errors) >= {MAX_ERRORS_KEPT} THEN j.errors - 0 \
         ELSE j.errors END) || jsonb_build_array(jsonb_build_object('attempt', j.attempt, \
         'at_ms', {at}, 'message', {message}))"
    )
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

fn rejection(id: JobId, e: Error) -> Rejection {
    Rejection {
        id,
        reason: e.kind(),
        message: e.to_string(),
    }
}

/// Jobs finished by an operation that a unique key may point at: (queue, key, id, until).
#[derive(Default)]
struct UniqueReleases {
    queues: Vec<String>,
    keys: Vec<String>,
    ids: Vec<i64>,
    until: Vec<i64>,
}

impl UniqueReleases {
    fn add(&mut self, queue: &str, key: Option<String>, id: i64, until: i64) {
        if let Some(k) = key {
            self.queues.push(queue.to_string());
            self.keys.push(k);
            self.ids.push(id);
            self.until.push(until);
        }
    }

    /// A finished job's key deduplicates only until its window ends (at once without one).
    async fn apply(self, inner: &Inner, tx: &Transaction<'_>) -> Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let st = tx
            .prepare_cached(
                &inner.q("UPDATE {s}.unique_keys u SET live_until = v.until \
                 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) \
                      AS v(queue, key, id, until) \
                 WHERE u.queue = v.queue AND u.key = v.key AND u.job_id = v.id"),
            )
            .await
            .map_err(db)?;
        tx.execute(&st, &[&self.queues, &self.keys, &self.ids, &self.until])
            .await
            .map_err(db)?;
        Ok(())
    }
}

impl Inner {
    /// Re-derives the ready jobs of each group (in a fixed order, so that two transactions
    /// never take two groups' locks in opposite orders).
    pub(crate) async fn refresh_groups(
        &self,
        tx: &Transaction<'_>,
        groups: BTreeSet<GroupKey>,
    ) -> Result<()> {
        if groups.is_empty() {
            return Ok(());
        }
        let (qs, gs): (Vec<String>, Vec<String>) = groups.into_iter().unzip();
        let st = tx
            .prepare_cached(&self.q("SELECT {s}.refresh_group(t.q, t.g, q.group_limit) \
                 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(q, g, n) \
                 JOIN {s}.queues q ON q.name = t.q ORDER BY t.n"))
            .await
            .map_err(db)?;
        tx.query(&st, &[&qs, &gs]).await.map_err(db)?;
        Ok(())
    }

    /// Creates the rows of queues not seen before, with the default configuration.
    pub(crate) async fn ensure_queues(&self, tx: &Transaction<'_>, names: &[String]) -> Result<()> {
        let d = QueueConfig::default();
        let cols = crate::queues::QueueColumns::of(&d);
        let st = tx
            .prepare_cached(&self.q(
                "INSERT INTO {s}.queues (name, config, aging_ms, smallest_cost, group_limit, \
                    backoff_base_ms, backoff_cap_ms, delete_at_ack, has_breaker) \
                 SELECT n, $2, $3, $4, $5, $6, $7, $8, $9 FROM unnest($1::text[]) AS n \
                 ON CONFLICT (name) DO NOTHING",
            ))
            .await
            .map_err(db)?;
        tx.execute(&st, &cols.params(&names)).await.map_err(db)?;
        Ok(())
    }

    pub(crate) async fn insert_many(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        let now = self.now();
        self.check_batch("jobs", jobs.len())?;
        for job in jobs {
            validate_new_job(job, &self.limits, now)?;
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut names: Vec<String> = jobs.iter().map(|j| j.queue.clone()).collect();
        names.sort();
        names.dedup();
        let (ids, enqueued) = match self.insert_plain(jobs, &names, now).await? {
            Some(ids) => {
                let mut enqueued: HashMap<String, u64> = HashMap::new();
                for job in jobs {
                    *enqueued.entry(job.queue.clone()).or_default() += 1;
                }
                (ids, enqueued)
            }
            None => self.insert_in_tx(jobs, &names, now).await?,
        };
        {
            let mut agg = self.aggregates.lock();
            for (q, n) in enqueued {
                agg.bump(&q, now, |a| a.enqueued += n);
            }
        }
        self.work_arrived_in(names.iter().map(String::as_str));
        Ok(ids)
    }

    /// The common enqueue in one statement, one round trip and no transaction: jobs without
    /// a unique key or a group, into queues this server's copy of the settings knows and
    /// that set no `max_depth`. `None` when the batch is not of that kind.
    ///
    /// The statement creates a queue row that another server deleted meanwhile (as the
    /// transaction below does) and reads each queue's ordering settings from its row, so a
    /// job is ranked by the settings in force when it is written, not by this server's copy.
    async fn insert_plain(
        &self,
        jobs: &[NewJob],
        names: &[String],
        now: u64,
    ) -> Result<Option<Vec<JobId>>> {
        if jobs
            .iter()
            .any(|j| j.unique_key.is_some() || j.group.is_some())
        {
            return Ok(None);
        }
        let (configs, missing) = self.cached_split(names);
        if !missing.is_empty() || configs.values().any(|c| c.max_depth > 0) {
            return Ok(None);
        }
        let mut rows = InsertRows::default();
        for job in jobs {
            let cfg = configs.get(&job.queue).cloned().unwrap_or_default();
            rows.push(0, job, &cfg, now);
        }
        let defaults = crate::queues::QueueColumns::of(&QueueConfig::default());
        let client = self.client().await?;
        let st = client
            .prepare_cached(&self.q("WITH eq AS ( \
                   INSERT INTO {s}.queues (name, config, aging_ms, smallest_cost, group_limit, \
                     backoff_base_ms, backoff_cap_ms, delete_at_ack, has_breaker) \
                   SELECT n, $2, $3, $4, $5, $6, $7, $8, $9 FROM unnest($1::text[]) AS n \
                   ON CONFLICT (name) DO NOTHING), \
                 v AS ( \
                   SELECT nextval('{s}.jobs_id_seq') AS id, r.* \
                   FROM unnest($11::text[], $12::text[], $13::text[], $14::integer[], \
                     $15::bigint[], $16::integer[], $17::bigint[], $18::bigint[], $19::bigint[], \
                     $20::bigint[], $21::jsonb[]) WITH ORDINALITY \
                   AS r(queue, kind, payload, priority, cost, max_attempts, base, cap, timeout, \
                     run_at, tags, n)), \
                 ins AS ( \
                   INSERT INTO {s}.jobs (id, queue, kind, payload, state, avail, priority, \
                     cost, rank, sort_cost, max_attempts, backoff_base_ms, backoff_cap_ms, \
                     timeout_ms, created_at, run_at, unique_until, tags) \
                   SELECT v.id, v.queue, v.kind, v.payload, \
                     CASE WHEN v.run_at > $10 THEN 0 ELSE 1 END, v.run_at <= $10, \
                     v.priority, v.cost, \
                     (CASE WHEN coalesce(q.aging_ms, $3) > 0 \
                        THEN v.run_at / coalesce(q.aging_ms, $3) ELSE 0 END) - v.priority, \
                     CASE WHEN coalesce(q.smallest_cost, $4) THEN v.cost ELSE 0 END, \
                     v.max_attempts, v.base, v.cap, v.timeout, $10, v.run_at, 0, \
                     ARRAY(SELECT jsonb_array_elements_text(v.tags)) \
                   FROM v LEFT JOIN {s}.queues q ON q.name = v.queue) \
                 SELECT id FROM v ORDER BY n"))
            .await
            .map_err(db)?;
        let head = defaults.params(&names);
        let now_i = i(now);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = head.to_vec();
        params.extend([
            &now_i as &(dyn tokio_postgres::types::ToSql + Sync),
            &rows.queue,
            &rows.kind,
            &rows.payload,
            &rows.priority,
            &rows.cost,
            &rows.max_attempts,
            &rows.backoff_base,
            &rows.backoff_cap,
            &rows.timeout,
            &rows.run_at,
            &rows.tags,
        ]);
        let ids: Vec<JobId> = client
            .query(&st, &params)
            .await
            .map_err(db)?
            .iter()
            .map(|r| JobId(u(r.get(0))))
            .collect();
        if ids.len() != jobs.len() {
            return Err(Error::storage(format!(
                "an enqueue of {} jobs returned {} ids",
                jobs.len(),
                ids.len()
            )));
        }
        Ok(Some(ids))
    }

    /// The enqueue in one transaction: unique keys, groups, queues new to this server and
    /// queues with a depth limit. Returns the ids and the jobs written per queue (a live
    /// unique key's job is not written again).
    async fn insert_in_tx(
        &self,
        jobs: &[NewJob],
        names: &[String],
        now: u64,
    ) -> Result<(Vec<JobId>, HashMap<String, u64>)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        self.ensure_queues(&tx, names).await?;
        let configs = self.configs_in(&tx, names, false).await?;
        // Load shedding: lock the rows of queues with a depth limit (so two servers cannot
        // both admit the last places), count, and refuse the whole batch if it would not fit.
        let limited: Vec<String> = names
            .iter()
            .filter(|n| configs.get(*n).is_some_and(|c| c.max_depth > 0))
            .cloned()
            .collect();
        if !limited.is_empty() {
            let locked = self.configs_in(&tx, &limited, true).await?;
            let depths = self.depths(&tx, &limited).await?;
            for name in &limited {
                let max = locked.get(name).map_or(0, |c| c.max_depth);
                let adding = jobs.iter().filter(|j| &j.queue == name).count() as u64;
                let depth = depths.get(name).copied().unwrap_or(0);
                if max > 0 && depth + adding > max {
                    return Err(Error::Overloaded {
                        queue: name.clone(),
                        depth,
                        max_depth: max,
                        retry_after_ms: 1_000,
                    });
                }
            }
        }
        let st = tx
            .prepare_cached(
                &self.q("SELECT nextval('{s}.jobs_id_seq') FROM generate_series(1, $1::integer)"),
            )
            .await
            .map_err(db)?;
        let n = i32::try_from(jobs.len()).unwrap_or(i32::MAX);
        let fresh: Vec<i64> = tx
            .query(&st, &[&n])
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut rows = InsertRows::default();
        let mut ids = Vec::with_capacity(jobs.len());
        let mut groups = BTreeSet::new();
        let mut enqueued: HashMap<String, u64> = HashMap::new();
        for (job, id) in jobs.iter().zip(fresh) {
            if let Some(key) = &job.unique_key {
                if let Some(existing) = self.claim_unique(&tx, &job.queue, key, id, now).await? {
                    ids.push(JobId(u(existing)));
                    continue;
                }
            }
            let cfg = configs.get(&job.queue).cloned().unwrap_or_default();
            if let Some(g) = &job.group {
                groups.insert((job.queue.clone(), g.clone()));
            }
            *enqueued.entry(job.queue.clone()).or_default() += 1;
            rows.push(id, job, &cfg, now);
            ids.push(JobId(u(id)));
        }
        rows.insert(self, &tx, now).await?;
        self.refresh_groups(&tx, groups).await?;
        tx.commit().await.map_err(db)?;
        Ok((ids, enqueued))
    }

    /// Points `key` at job `id` unless a live job holds it; returns that job's id if one does.
    async fn claim_unique(
        &self,
        tx: &Transaction<'_>,
        queue: &str,
        key: &str,
        id: i64,
        now: u64,
    ) -> Result<Option<i64>> {
        let st = tx
            .prepare_cached(&self.q(
                "INSERT INTO {s}.unique_keys AS u (queue, key, job_id, live_until) \
                 VALUES ($1, $2, $3, 9223372036854775807) \
                 ON CONFLICT (queue, key) DO UPDATE SET job_id = EXCLUDED.job_id, \
                    live_until = EXCLUDED.live_until \
                 WHERE u.live_until <= $4 \
                 RETURNING job_id",
            ))
            .await
            .map_err(db)?;
        if tx
            .query_opt(&st, &[&queue, &key, &id, &i(now)])
            .await
            .map_err(db)?
            .is_some()
        {
            return Ok(None);
        }
        let st = tx
            .prepare_cached(
                &self.q("SELECT job_id FROM {s}.unique_keys WHERE queue = $1 AND key = $2"),
            )
            .await
            .map_err(db)?;
        let row = tx.query_one(&st, &[&queue, &key]).await.map_err(db)?;
        Ok(Some(row.get(0)))
    }

    /// Unfinished jobs per queue (what `max_depth` bounds).
    async fn depths(&self, tx: &Transaction<'_>, names: &[String]) -> Result<HashMap<String, u64>> {
        let st = tx
            .prepare_cached(
                &self.q("SELECT queue, sum(n)::bigint FROM {s}.state_counts \
                 WHERE queue = ANY($1) AND state IN (0, 1, 2, 4) GROUP BY queue"),
            )
            .await
            .map_err(db)?;
        Ok(tx
            .query(&st, &[&names])
            .await
            .map_err(db)?
            .iter()
            .map(|r| (r.get::<_, String>(0), u(r.get(1))))
            .collect())
    }

    pub(crate) async fn fetch(&self, p: JobFetchParams) -> Result<Vec<FetchedJob>> {
        let max = p.max.min(self.limits.max_batch);
        if max == 0 || p.queues.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + Duration::from_millis(p.wait_ms);
        let wakers: Vec<_> = p.queues.iter().map(|q| self.waker(q)).collect();
        loop {
            let mut woken: Vec<_> = std::iter::once(&self.wake)
                .chain(wakers.iter().map(|w| &**w))
                .map(|n| Box::pin(n.notified()))
                .collect();
            for w in &mut woken {
                w.as_mut().enable();
            }
            let (got, next_due) =
                crate::conv::with_retry(|| self.fetch_once(&p.queues, max)).await?;
            if !got.is_empty() || p.wait_ms == 0 {
                if got.len() >= max {
                    // A full batch: more may wait. Pass the wake-up on to the next poll.
                    for q in &p.queues {
                        self.wake_queue(q);
                    }
                }
                return Ok(got);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(got);
            }
            let mut nap = left.min(self.poll_interval);
            // A rate limit or a breaker may hold work back until a time; ask when, unless
            // this server's copy of the settings says none of these queues has one.
            let (known, unknown) = self.cached_split(&p.queues);
            let timed = !unknown.is_empty()
                || known.values().any(|c| {
                    c.rate_limit.is_some() || c.breaker.is_some() || c.group_rate_limit.is_some()
                });
            let token = if timed {
                self.next_token(&p.queues).await?
            } else {
                None
            };
            for due in next_due.into_iter().chain(token) {
                let until = Duration::from_millis(due.saturating_sub(self.now()));
                nap = nap.min(until.max(Duration::from_millis(5)));
            }
            let _ = tokio::time::timeout(nap, futures::future::select_all(woken)).await;
        }
    }

    /// One attempt at a fetch; with nothing handed out, also when the next scheduled job of
    /// these queues is due (ms since the epoch).
    ///
    /// Queues without a limit that counts across servers take the fast path: each queue's
    /// lease is one statement on its own (atomic by itself), one round trip, no lock but the
    /// jobs' rows. A limited queue's fetch is one transaction under its row's lock.
    async fn fetch_once(
        &self,
        queues: &[String],
        max: usize,
    ) -> Result<(Vec<FetchedJob>, Option<u64>)> {
        let now = self.now();
        let configs = self.configs_cached(queues).await?;
        let mut cands: Vec<(String, QueueConfig)> = Vec::with_capacity(queues.len());
        for name in queues {
            if let Some(c) = configs.get(name) {
                if !c.paused && !cands.iter().any(|(n, _)| n == name) {
                    cands.push((name.clone(), c.clone()));
                }
            }
        }
        if cands.is_empty() {
            return Ok((Vec::new(), None));
        }
        let names: Vec<String> = cands.iter().map(|(n, _)| n.clone()).collect();
        let ticked = self.tick_if_due(&names, now).await?;
        let limited = cands
            .iter()
            .any(|(_, c)| crate::flow::is_controlled(c) || c.group_rate_limit.is_some());
        let mut client = if limited {
            self.client().await?
        } else {
            self.lease_client().await?
        };
        let out = if limited {
            let tx = client.transaction().await.map_err(db)?;
            let out = self.fetch_in(&tx, cands, max, now, !ticked).await?;
            tx.commit().await.map_err(db)?;
            out
        } else {
            self.fetch_in(&client, cands, max, now, !ticked).await?
        };
        let next_due = if out.is_empty() {
            let st = client
                .prepare_cached(
                    &self.q("SELECT min(d.run_at) FROM unnest($1::text[]) AS n(name) \
                     CROSS JOIN LATERAL (SELECT run_at FROM {s}.jobs \
                       WHERE queue = n.name AND state IN (0, 4) ORDER BY run_at LIMIT 1) d"),
                )
                .await
                .map_err(db)?;
            client
                .query_one(&st, &[&names])
                .await
                .map_err(db)?
                .get::<_, Option<i64>>(0)
                .map(u)
        } else {
            None
        };
        drop(client);
        if !out.is_empty() {
            let mut agg = self.aggregates.lock();
            let mut local = self.local.lock();
            for t in &out {
                let wait = now.saturating_sub(t.ready_at);
                agg.bump(&t.job.queue, now, |a| {
                    a.started += 1;
                    a.wait_ms_sum += wait;
                });
                local
                    .entry(t.job.queue.clone())
                    .or_default()
                    .wait_ms
                    .observe(wait);
            }
        }
        Ok((out.into_iter().map(|t| t.job).collect(), next_due))
    }

    /// Promotes due jobs and rescues expired leases of `names` unless this server did so
    /// for all of them within the last [`TICK_MS`] (maintenance does it every second
    /// anyway; this keeps delayed jobs and lost leases prompt without a statement per fetch).
    /// Returns whether it ran.
    async fn tick_if_due(&self, names: &[String], now: u64) -> Result<bool> {
        let due = {
            let ticks = self.ticks.lock();
            names
                .iter()
                .any(|n| ticks.get(n).is_none_or(|&t| now < t || now - t >= TICK_MS))
        };
        if !due {
            return Ok(false);
        }
        {
            let mut ticks = self.ticks.lock();
            for n in names {
                ticks.insert(n.clone(), now);
            }
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let moved = self.tick(&tx, Some(names), now).await?;
        tx.commit().await.map_err(db)?;
        if moved > 0 {
            self.work_arrived_in(names.iter().map(String::as_str));
        }
        Ok(true)
    }

    /// Makes the due scheduled and failed jobs of `names` that have no group waiting.
    async fn promote_plain(
        &self,
        c: &impl GenericClient,
        names: &[String],
        now: u64,
    ) -> Result<()> {
        let st = c
            .prepare_cached(&self.q(&format!(
                "WITH due AS ({due}) \
                 UPDATE {{s}}.jobs j SET state = 1, avail = true, rank = {rank}, \
                   sort_cost = CASE WHEN q.smallest_cost THEN j.cost ELSE 0 END \
                 FROM {{s}}.queues q \
                 WHERE j.id = ANY(ARRAY(SELECT id FROM due)) AND q.name = j.queue",
                due = due_sql("unnest($2::text[])", "AND grp IS NULL"),
                rank = rank_sql("j.run_at"),
            )))
            .await
            .map_err(db)?;
        c.execute(&st, &[&i(now), &names]).await.map_err(db)?;
        Ok(())
    }

    /// The leases of one fetch over `cands`, on `c` (a transaction when a queue is limited);
    /// due jobs without a group are promoted first when `promote` (not when this fetch's
    /// tick just did it).
    async fn fetch_in(
        &self,
        c: &impl GenericClient,
        mut cands: Vec<(String, QueueConfig)>,
        max: usize,
        now: u64,
        promote: bool,
    ) -> Result<Vec<Taken>> {
        // Limits that count across servers: lock the limited queues' rows (every server's
        // fetch of them waits here), then see how much each may hand out.
        let mut limited: Vec<String> = cands
            .iter()
            .filter(|(_, c)| crate::flow::is_controlled(c))
            .map(|(n, _)| n.clone())
            .collect();
        limited.sort();
        let held = self.hold(c, &limited, now).await?;
        // Settings read under the lock win over this server's copy.
        for (name, cfg) in &mut cands {
            if let Some(h) = held.get(name) {
                *cfg = h.config.clone();
            }
        }
        cands.retain(|(_, cfg)| !cfg.paused);
        // Due jobs without a group become ready on the spot, so a delayed job runs at its
        // time to the millisecond; grouped ones wait for the next tick (their group's ready
        // set must be re-derived in a transaction).
        let names: Vec<String> = cands.iter().map(|(n, _)| n.clone()).collect();
        if promote {
            self.promote_plain(c, &names, now).await?;
        }
        let starving = self.starving(c, &cands, now).await?;
        let room: HashMap<String, usize> = held.iter().map(|(n, h)| (n.clone(), h.room)).collect();
        let allow = |name: &str| room.get(name).copied().unwrap_or(usize::MAX);
        let mut out: Vec<Taken> = Vec::with_capacity(max.min(256));
        let weighted = cands.iter().any(|(_, cfg)| cfg.weight > 0);
        if !weighted {
            for (name, cfg) in &cands {
                let n = (max - out.len()).min(allow(name));
                if n > 0 {
                    out.extend(self.take(c, name, cfg, n, now).await?);
                }
                if out.len() == max {
                    break;
                }
            }
        } else {
            // Shares in proportion to weight (unweighted queues count as 1, starving ones
            // four times); what a queue cannot use goes to the others, in the order given.
            let weight = |name: &str, cfg: &QueueConfig| {
                u64::from(cfg.weight.max(1)) * if starving.contains(name) { 4 } else { 1 }
            };
            let total: u64 = cands.iter().map(|(n, cfg)| weight(n, cfg)).sum();
            let mut left: Vec<usize> = cands.iter().map(|(n, _)| allow(n)).collect();
            let mut open: Vec<bool> = vec![true; cands.len()];
            for (k, (name, cfg)) in cands.iter().enumerate() {
                let share = (max as u64 * weight(name, cfg)).div_ceil(total) as usize;
                let n = share.min(max - out.len()).min(left[k]);
                if n == 0 {
                    continue;
                }
                let got = self.take(c, name, cfg, n, now).await?;
                open[k] = got.len() == n;
                left[k] -= got.len();
                out.extend(got);
            }
            for (k, (name, cfg)) in cands.iter().enumerate() {
                let n = (max - out.len()).min(left[k]);
                if !open[k] || n == 0 {
                    continue;
                }
                out.extend(self.take(c, name, cfg, n, now).await?);
            }
        }
        let mut taken: HashMap<String, usize> = HashMap::new();
        for t in &out {
            *taken.entry(t.job.queue.clone()).or_default() += 1;
        }
        self.release_held(c, held, &taken, now).await?;
        Ok(out)
    }

    /// Leases up to `n` ready jobs of one queue, in ready order; with a per-key rate limit,
    /// only as many of each key's jobs as it has tokens.
    async fn take(
        &self,
        tx: &impl GenericClient,
        queue: &str,
        cfg: &QueueConfig,
        n: usize,
        now: u64,
    ) -> Result<Vec<Taken>> {
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = match &cfg.group_rate_limit {
            None => {
                let st = tx
                    .prepare_cached(&self.q(&format!(
                        "WITH c AS ( \
                           SELECT id FROM {{s}}.jobs WHERE queue = $1 AND state = 1 AND avail \
                           ORDER BY rank, sort_cost, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                         {LEASE}"
                    )))
                    .await
                    .map_err(db)?;
                tx.query(&st, &[&queue, &limit, &i(now)])
                    .await
                    .map_err(db)?
            }
            Some(rl) => {
                // Candidates: jobs without a key, or of keys not throttled now; then as many
                // of each key as its tokens allow. A key's limiter row is read by a scalar
                // subquery, one primary-key probe per candidate: as `NOT EXISTS`, PostgreSQL
                // planned it as a hash of every limiter row, built on every fetch.
                let (_, tau) = weir_core::gcra(rl);
                let st = tx
                    .prepare_cached(&self.q("SELECT j.id, j.grp FROM {s}.jobs j \
                         WHERE j.queue = $1 AND j.state = 1 AND j.avail AND (j.grp IS NULL \
                           OR coalesce((SELECT r.tat_us FROM {s}.group_rates r \
                             WHERE r.queue = j.queue AND r.grp = j.grp), 0) <= $3) \
                         ORDER BY j.rank, j.sort_cost, j.id LIMIT $2 FOR UPDATE SKIP LOCKED"))
                    .await
                    .map_err(db)?;
                let over = limit.saturating_mul(4).saturating_add(16);
                let horizon = i(now.saturating_mul(1000).saturating_add(tau));
                let cands = tx
                    .query(&st, &[&queue, &over, &horizon])
                    .await
                    .map_err(db)?;
                let keys: Vec<String> = cands
                    .iter()
                    .filter_map(|r| r.get::<_, Option<String>>(1))
                    .collect();
                let tokens = self.group_tokens(tx, queue, &keys, rl, now).await?;
                let mut used: HashMap<String, usize> = HashMap::new();
                let mut ids: Vec<i64> = Vec::with_capacity(n);
                for r in &cands {
                    if ids.len() == n {
                        break;
                    }
                    match r.get::<_, Option<String>>(1) {
                        None => ids.push(r.get(0)),
                        Some(g) => {
                            let have = tokens.get(&g).copied().unwrap_or(0);
                            let u = used.entry(g).or_default();
                            if *u < have {
                                *u += 1;
                                ids.push(r.get(0));
                            }
                        }
                    }
                }
                self.use_group_tokens(tx, queue, &used, rl, now).await?;
                let st = tx
                    .prepare_cached(&self.q(&format!(
                        "WITH c AS (SELECT unnest($1::bigint[]) AS id, $2::text AS q) {LEASE}"
                    )))
                    .await
                    .map_err(db)?;
                tx.query(&st, &[&ids, &queue, &i(now)]).await.map_err(db)?
            }
        };
        let mut taken: Vec<(i64, i64, Taken)> = rows
            .iter()
            .map(|r| {
                let t = Taken {
                    job: FetchedJob {
                        id: JobId(u(r.get(0))),
                        queue: queue.to_string(),
                        kind: r.get(1),
                        payload: Payload::from_stored(r.get::<_, String>(2).into_boxed_str()),
                        attempt: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
                        lease_id: u(r.get(4)),
                        lease_deadline_ms: u(r.get(5)),
                    },
                    ready_at: u(r.get(6)),
                };
                (r.get(7), r.get(8), t)
            })
            .collect();
        taken.sort_by_key(|(rank, cost, t)| (*rank, *cost, t.job.id));
        Ok(taken.into_iter().map(|(_, _, t)| t).collect())
    }

    /// The queues of `cands` that configure `starvation_ms` and whose oldest waiting job has
    /// waited past it (their share of a weighted fetch counts four times).
    async fn starving(
        &self,
        tx: &impl GenericClient,
        cands: &[(String, QueueConfig)],
        now: u64,
    ) -> Result<BTreeSet<String>> {
        let watched: Vec<String> = cands
            .iter()
            .filter(|(_, c)| c.starvation_ms > 0 && c.weight > 0)
            .map(|(n, _)| n.clone())
            .collect();
        let mut out = BTreeSet::new();
        if watched.is_empty() {
            return Ok(out);
        }
        let st = tx
            .prepare_cached(&self.q(&format!(
                "SELECT w.name, {OLDEST_WAITING} \
                 FROM unnest($1::text[]) AS w(name)"
            )))
            .await
            .map_err(db)?;
        for r in tx.query(&st, &[&watched]).await.map_err(db)? {
            let name: String = r.get(0);
            let Some(oldest) = r.get::<_, Option<i64>>(1).map(u) else {
                continue;
            };
            let threshold = cands
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, c)| c.starvation_ms);
            if threshold > 0 && now.saturating_sub(oldest) >= threshold {
                out.insert(name);
            }
        }
        Ok(out)
    }

    /// Time-driven transitions of `queues` (all when `None`): due scheduled and failed jobs
    /// become waiting, expired leases count their attempt and return the job (or kill it).
    /// Returns how many jobs moved.
    pub(crate) async fn tick(
        &self,
        tx: &Transaction<'_>,
        queues: Option<&[String]>,
        now: u64,
    ) -> Result<u64> {
        // Two statements, not one with `$2 IS NULL OR …`: a generic plan of that could not
        // use the queue prefix of the lease index, and every fetch's tick scanned every
        // active job of every queue.
        let (filter, over) = if queues.is_some() {
            ("AND queue = ANY($2)", "unnest($2::text[])")
        } else {
            (
                "AND $2::text[] IS NULL",
                "(SELECT name FROM {s}.queues WHERE $2::text[] IS NULL)",
            )
        };
        let names: Option<Vec<String>> = queues.map(<[String]>::to_vec);
        let promote = tx
            .prepare_cached(&self.q(&format!(
                "WITH due AS ({due}) \
                 UPDATE {{s}}.jobs j SET state = 1, avail = (j.grp IS NULL), \
                   rank = {rank}, \
                   sort_cost = CASE WHEN q.smallest_cost THEN j.cost ELSE 0 END \
                 FROM {{s}}.queues q \
                 WHERE j.id = ANY(ARRAY(SELECT id FROM due)) AND q.name = j.queue \
                 RETURNING j.queue, j.grp",
                due = due_sql(over, ""),
                rank = rank_sql("j.run_at"),
            )))
            .await
            .map_err(db)?;
        let mut groups = BTreeSet::new();
        let promoted = tx.query(&promote, &[&i(now), &names]).await.map_err(db)?;
        for r in &promoted {
            if let Some(g) = r.get::<_, Option<String>>(1) {
                groups.insert((r.get::<_, String>(0), g));
            }
        }
        let expire = tx
            .prepare_cached(&self.q(&format!(
                "WITH gone AS ( \
                   SELECT id FROM {{s}}.jobs WHERE state = 2 AND lease_deadline <= $1 {filter} \
                   ORDER BY lease_deadline LIMIT 5000 FOR UPDATE SKIP LOCKED) \
                 UPDATE {{s}}.jobs j SET \
                   state = CASE WHEN j.attempt < j.max_attempts THEN 1 ELSE 5 END, \
                   avail = (j.attempt < j.max_attempts AND j.grp IS NULL), \
                   finished_at = CASE WHEN j.attempt < j.max_attempts THEN j.finished_at \
                                 ELSE $1 END, \
                   errors = {push} \
                 WHERE j.id = ANY(ARRAY(SELECT id FROM gone)) AND j.state + 0 = 2 \
                 RETURNING j.id, j.queue, j.grp, j.state, j.unique_key, j.unique_until",
                push = push_error_sql("'lease expired'", "$1"),
            )))
            .await
            .map_err(db)?;
        let expired = tx.query(&expire, &[&i(now), &names]).await.map_err(db)?;
        let mut releases = UniqueReleases::default();
        let mut calls: Vec<(String, bool, u64)> = Vec::new();
        {
            let mut agg = self.aggregates.lock();
            for (queue, dead) in failed_rows(&expired, &mut releases, &mut groups) {
                agg.bump(&queue, now, |a| {
                    a.failed += 1;
                    a.expired += 1;
                    a.dead += u64::from(dead);
                });
                calls.push((queue, true, 0));
            }
        }
        if !calls.is_empty() {
            let mut names: Vec<String> = calls.iter().map(|(q, _, _)| q.clone()).collect();
            names.sort();
            names.dedup();
            let configs = self.configs_cached_tx(tx, &names).await?;
            self.record_calls(tx, &calls, &configs, now).await?;
        }
        releases.apply(self, tx).await?;
        self.refresh_groups(tx, groups).await?;
        Ok((promoted.len() + expired.len()) as u64)
    }

    /// Why each of `asked` (id, lease) was not applied, from the jobs as they are now.
    async fn classify(
        &self,
        tx: &Transaction<'_>,
        asked: &[(JobId, u64)],
        now: u64,
    ) -> Result<Vec<Rejection>> {
        if asked.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = asked.iter().map(|(id, _)| i(id.0)).collect();
        let st = tx
            .prepare_cached(
                &self.q(
                    "SELECT id, state, lease_id, lease_deadline FROM {s}.jobs WHERE id = ANY($1)",
                ),
            )
            .await
            .map_err(db)?;
        let found: HashMap<u64, (i16, u64, u64)> = tx
            .query(&st, &[&ids])
            .await
            .map_err(db)?
            .iter()
            .map(|r| (u(r.get(0)), (r.get(1), u(r.get(2)), u(r.get(3)))))
            .collect();
        Ok(asked
            .iter()
            .map(|&(id, lease)| {
                let e = match found.get(&id.0) {
                    None => Error::JobNotFound(id),
                    Some(&(_, held, _)) if held != lease || lease == 0 => Error::LeaseMismatch(id),
                    Some(_) => Error::LeaseExpired(id),
                };
                let _ = now;
                rejection(id, e)
            })
            .collect())
    }

    fn check_doc(&self, field: &'static str, doc: Option<&Payload>) -> Result<()> {
        weir_core::check_document(field, doc, &self.limits)
    }

    fn check_batch(&self, field: &'static str, n: usize) -> Result<()> {
        weir_core::check_batch_size(field, n, &self.limits)
    }

    pub(crate) async fn ack_many(&self, acks: &[Ack]) -> Result<BatchOutcome> {
        self.check_batch("acks", acks.len())?;
        let now = self.now();
        let mut out = BatchOutcome::default();
        let (mut ids, mut leases, mut results) = (Vec::new(), Vec::new(), Vec::new());
        let mut seen = std::collections::HashSet::with_capacity(acks.len());
        for a in acks {
            if let Err(e) = self.check_doc("result", a.result.as_ref()) {
                out.rejected.push(rejection(a.id, e));
                continue;
            }
            if !seen.insert(a.id) {
                // A second ack of one job in one batch: the first one finished it.
                out.rejected
                    .push(rejection(a.id, Error::LeaseExpired(a.id)));
                continue;
            }
            ids.push(i(a.id.0));
            leases.push(i(a.lease_id));
            results.push(a.result.as_ref().map(|r| r.as_str().to_string()));
        }
        if ids.is_empty() {
            return Ok(out);
        }
        // The jobs are found through the primary key (`id = ANY`), and each one's lease and
        // result looked up in a JSON object keyed by id: no join with the batch, whose plan
        // (from the statistics of a table that was empty at its last ANALYZE) was a nested
        // loop over the whole batch for every job, quadratic, 40,000 -> 4,000 jobs/s.
        // The fast path: jobs without a group in queues without a breaker finish in one
        // statement (deleted at once where retention keeps no completed job), their unique
        // keys released in the same statement. The rest, and the refused, go through the
        // transaction below.
        let client = self.client().await?;
        let st = client
            .prepare_cached(
                &self.q("WITH del AS (DELETE FROM {s}.jobs j USING {s}.queues q \
                   WHERE j.id = ANY($2) AND j.lease_id = ($3::jsonb ->> j.id::text)::bigint \
                     AND j.lease_id <> 0 AND j.state + 0 = 2 \
                     AND j.lease_deadline > $1 AND j.grp IS NULL AND q.name = j.queue \
                     AND q.delete_at_ack AND NOT q.has_breaker \
                   RETURNING j.id, j.queue, j.unique_key, 0::bigint AS until, j.started_at), \
                 upd AS (UPDATE {s}.jobs j SET state = 3, avail = false, finished_at = $1, \
                     result = $4::jsonb ->> j.id::text \
                   FROM {s}.queues q \
                   WHERE j.id = ANY($2) AND j.lease_id = ($3::jsonb ->> j.id::text)::bigint \
                     AND j.lease_id <> 0 AND j.state + 0 = 2 \
                     AND j.lease_deadline > $1 AND j.grp IS NULL AND q.name = j.queue \
                     AND NOT q.delete_at_ack AND NOT q.has_breaker \
                   RETURNING j.id, j.queue, j.unique_key, j.unique_until AS until, \
                     j.started_at), \
                 done AS (SELECT * FROM del UNION ALL SELECT * FROM upd), \
                 uk AS (UPDATE {s}.unique_keys u SET live_until = d.until FROM done d \
                   WHERE d.unique_key IS NOT NULL AND u.queue = d.queue \
                     AND u.key = d.unique_key AND u.job_id = d.id) \
                 SELECT id, queue, started_at FROM done"),
            )
            .await
            .map_err(db)?;
        let (lease_of, result_of) = by_id(&ids, &leases, &results);
        let fast = client
            .query(&st, &[&i(now), &ids, &lease_of, &result_of])
            .await
            .map_err(db)?;
        drop(client);
        let mut runs: Vec<(String, u64)> = Vec::with_capacity(ids.len());
        let mut applied: BTreeSet<i64> = BTreeSet::new();
        for r in &fast {
            applied.insert(r.get(0));
            let started = r.get::<_, Option<i64>>(2).map_or(now, u);
            runs.push((r.get(1), now.saturating_sub(started)));
        }
        let mut frees_work = false;
        if applied.len() < ids.len() {
            let mut rest = (Vec::new(), Vec::new(), Vec::new());
            for ((id, lease), result) in ids.iter().zip(&leases).zip(&results) {
                if !applied.contains(id) {
                    rest.0.push(*id);
                    rest.1.push(*lease);
                    rest.2.push(result.clone());
                }
            }
            let slow =
                crate::conv::with_retry(|| self.ack_slow(&rest.0, &rest.1, &rest.2, now)).await?;
            out.rejected.extend(slow.rejected);
            runs.extend(slow.runs);
            frees_work = slow.frees_work;
        }
        out.applied = runs.len();
        {
            let mut names: Vec<&String> = runs.iter().map(|(q, _)| q).collect();
            names.sort();
            names.dedup();
            let cache = self.configs.lock();
            frees_work |= names
                .iter()
                .any(|n| cache.get(*n).is_some_and(|(c, _)| c.concurrency > 0));
        }
        let mut finished: Vec<String> = runs.iter().map(|(q, _)| q.clone()).collect();
        finished.sort();
        finished.dedup();
        {
            let mut agg = self.aggregates.lock();
            let mut local = self.local.lock();
            for (queue, run) in runs {
                agg.bump(&queue, now, |a| {
                    a.completed += 1;
                    a.run_ms_sum += run;
                    a.run_ms_max = a.run_ms_max.max(run);
                });
                local.entry(queue).or_default().run_ms.observe(run);
            }
        }
        if frees_work {
            self.work_arrived_in(finished.iter().map(String::as_str));
        }
        Ok(out)
    }

    /// The acks the fast path did not finish: grouped jobs, queues with a breaker, and the
    /// refused (classified here), in one transaction.
    async fn ack_slow(
        &self,
        ids: &[i64],
        leases: &[i64],
        results: &[Option<String>],
        now: u64,
    ) -> Result<AckedSlow> {
        let mut rejected = Vec::new();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let st = tx
            .prepare_cached(&self.q(
                "UPDATE {s}.jobs j SET state = 3, avail = false, finished_at = $1, \
                   result = $4::jsonb ->> j.id::text \
                 WHERE j.id = ANY($2) AND j.lease_id = ($3::jsonb ->> j.id::text)::bigint \
                   AND j.lease_id <> 0 AND j.state + 0 = 2 AND j.lease_deadline > $1 \
                 RETURNING j.id, j.queue, j.grp, j.unique_key, j.unique_until, j.started_at",
            ))
            .await
            .map_err(db)?;
        let (lease_of, result_of) = by_id(ids, leases, results);
        let done = tx
            .query(&st, &[&i(now), &ids, &lease_of, &result_of])
            .await
            .map_err(db)?;
        let applied: BTreeSet<i64> = done.iter().map(|r| r.get(0)).collect();
        let asked: Vec<(JobId, u64)> = ids
            .iter()
            .zip(leases)
            .filter(|(id, _)| !applied.contains(id))
            .map(|(&id, &l)| (JobId(u(id)), u(l)))
            .collect();
        rejected.extend(self.classify(&tx, &asked, now).await?);
        let mut names: Vec<String> = done.iter().map(|r| r.get::<_, String>(1)).collect();
        names.sort();
        names.dedup();
        let configs = self.configs_cached_tx(&tx, &names).await?;
        let mut releases = UniqueReleases::default();
        let mut groups = BTreeSet::new();
        let mut delete = Vec::new();
        let mut frees_work = false;
        let mut runs: Vec<(String, u64)> = Vec::with_capacity(done.len());
        for r in &done {
            let id: i64 = r.get(0);
            let queue: String = r.get(1);
            let cfg = configs.get(&queue).cloned().unwrap_or_default();
            if let Some(g) = r.get::<_, Option<String>>(2) {
                groups.insert((queue.clone(), g));
            }
            releases.add(&queue, r.get(3), id, r.get(4));
            let keep = cfg.retention;
            if keep.completed_max == 0 || keep.completed_ms == 0 {
                delete.push(id);
            }
            frees_work |= cfg.concurrency > 0;
            let started = r.get::<_, Option<i64>>(5).map_or(now, u);
            runs.push((queue, now.saturating_sub(started)));
        }
        frees_work |= !groups.is_empty();
        let calls: Vec<(String, bool, u64)> =
            runs.iter().map(|(q, r)| (q.clone(), false, *r)).collect();
        self.record_calls(&tx, &calls, &configs, now).await?;
        releases.apply(self, &tx).await?;
        if !delete.is_empty() {
            let st = tx
                .prepare_cached(&self.q("DELETE FROM {s}.jobs WHERE id = ANY($1)"))
                .await
                .map_err(db)?;
            tx.execute(&st, &[&delete]).await.map_err(db)?;
        }
        self.refresh_groups(&tx, groups).await?;
        tx.commit().await.map_err(db)?;
        Ok(AckedSlow {
            rejected,
            runs,
            frees_work,
        })
    }

    pub(crate) async fn fail_many(&self, fails: &[Fail]) -> Result<BatchOutcome> {
        self.check_batch("fails", fails.len())?;
        let now = self.now();
        let mut out = BatchOutcome::default();
        if fails.is_empty() {
            return Ok(out);
        }
        let max_message = self.limits.max_key_bytes.max(4096);
        let mut ids = Vec::with_capacity(fails.len());
        let mut leases = Vec::with_capacity(fails.len());
        let mut errors = Vec::with_capacity(fails.len());
        let mut retry = Vec::with_capacity(fails.len());
        let mut jitter = Vec::with_capacity(fails.len());
        for f in fails {
            let mut message = f.error.clone();
            truncate_utf8(&mut message, max_message);
            ids.push(i(f.id.0));
            leases.push(i(f.lease_id));
            errors.push(message);
            retry.push(f.retry);
            jitter.push(fastrand::f64());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // Full jitter: a delay uniform in [0, min(cap, base * 2^(attempt - 1))].
        // Each job's own fail is looked up by id in a JSON object (see `by_id`).
        let f = "($2::jsonb -> j.id::text)";
        let again = format!("({f} ->> 'retry')::boolean AND j.attempt < j.max_attempts");
        let st = tx
            .prepare_cached(&self.q(&format!(
                "UPDATE {{s}}.jobs j SET \
                   state = CASE WHEN {again} THEN 4 ELSE 5 END, \
                   run_at = CASE WHEN {again} THEN $1 + floor(({f} ->> 'jitter')::float8 * (1 + least( \
                       coalesce(j.backoff_cap_ms, q.backoff_cap_ms)::float8, \
                       coalesce(j.backoff_base_ms, q.backoff_base_ms)::float8 \
                         * power(2::float8, least(greatest(j.attempt - 1, 0), 62)))))::bigint \
                     ELSE j.run_at END, \
                   finished_at = CASE WHEN {again} THEN j.finished_at ELSE $1 END, \
                   avail = false, \
                   errors = {push} \
                 FROM {{s}}.queues q \
                 WHERE j.id = ANY($3) AND q.name = j.queue \
                   AND j.lease_id = ({f} ->> 'lease')::bigint AND j.lease_id <> 0 \
                   AND j.state + 0 = 2 AND j.lease_deadline > $1 \
                 RETURNING j.id, j.queue, j.grp, j.state, j.unique_key, j.unique_until",
                push = push_error_sql(&format!("({f} ->> 'err')"), "$1"),
            )))
            .await
            .map_err(db)?;
        let mut each = serde_json::Map::with_capacity(ids.len());
        for k in 0..ids.len() {
            each.insert(
                ids[k].to_string(),
                serde_json::json!({
                    "lease": leases[k],
                    "err": errors[k],
                    "retry": retry[k],
                    "jitter": jitter[k],
                }),
            );
        }
        let each = serde_json::Value::from(each);
        let done = tx.query(&st, &[&i(now), &each, &ids]).await.map_err(db)?;
        let applied: BTreeSet<i64> = done.iter().map(|r| r.get(0)).collect();
        let asked: Vec<(JobId, u64)> = ids
            .iter()
            .zip(&leases)
            .filter(|(id, _)| !applied.contains(id))
            .map(|(&id, &l)| (JobId(u(id)), u(l)))
            .collect();
        out.rejected.extend(self.classify(&tx, &asked, now).await?);
        let mut releases = UniqueReleases::default();
        let mut groups = BTreeSet::new();
        let outcomes = failed_rows(&done, &mut releases, &mut groups);
        let frees_work = !groups.is_empty() || !done.is_empty();
        let mut names: Vec<String> = outcomes.iter().map(|(q, _)| q.clone()).collect();
        names.sort();
        names.dedup();
        let configs = self.configs_cached_tx(&tx, &names).await?;
        let calls: Vec<(String, bool, u64)> =
            outcomes.iter().map(|(q, _)| (q.clone(), true, 0)).collect();
        self.record_calls(&tx, &calls, &configs, now).await?;
        releases.apply(self, &tx).await?;
        self.refresh_groups(&tx, groups).await?;
        tx.commit().await.map_err(db)?;
        out.applied = done.len();
        {
            let mut agg = self.aggregates.lock();
            for (queue, dead) in &outcomes {
                agg.bump(queue, now, |a| {
                    a.failed += 1;
                    a.dead += u64::from(*dead);
                });
            }
        }
        if frees_work {
            self.work_arrived_in(names.iter().map(String::as_str));
        }
        Ok(out)
    }

    pub(crate) async fn heartbeat(&self, p: weir_store::JobHeartbeatParams) -> Result<u64> {
        let now = self.now();
        self.check_doc("progress", p.progress.as_ref())?;
        let client = self.client().await?;
        let st = client
            .prepare_cached(&self.q(
                "UPDATE {s}.jobs SET lease_deadline = greatest(lease_deadline, $1 + timeout_ms), \
                   progress = coalesce($4, progress) \
                 WHERE id = $2 AND lease_id = $3 AND $3 <> 0 AND state + 0 = 2 \
                   AND lease_deadline > $1 \
                 RETURNING lease_deadline",
            ))
            .await
            .map_err(db)?;
        let progress = p.progress.map(|d| d.as_str().to_string());
        let row = client
            .query_opt(&st, &[&i(now), &i(p.id.0), &i(p.lease_id), &progress])
            .await
            .map_err(db)?;
        match row {
            Some(r) => Ok(u(r.get(0))),
            None => Err(self.lease_error(&client, p.id, p.lease_id).await?),
        }
    }

    /// Why a single-job lease operation was refused.
    async fn lease_error(
        &self,
        client: &deadpool_postgres::Client,
        id: JobId,
        lease: u64,
    ) -> Result<Error> {
        let st = client
            .prepare_cached(&self.q("SELECT lease_id FROM {s}.jobs WHERE id = $1"))
            .await
            .map_err(db)?;
        Ok(
            match client.query_opt(&st, &[&i(id.0)]).await.map_err(db)? {
                None => Error::JobNotFound(id),
                Some(r) if u(r.get(0)) != lease || lease == 0 => Error::LeaseMismatch(id),
                Some(_) => Error::LeaseExpired(id),
            },
        )
    }

    pub(crate) async fn release(&self, id: JobId, lease: u64) -> Result<()> {
        let now = self.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let st = tx
            .prepare_cached(&self.q(&format!(
                "UPDATE {{s}}.jobs j SET state = 1, attempt = greatest(j.attempt - 1, 0), \
                   run_at = $1, avail = (j.grp IS NULL), rank = {rank}, \
                   sort_cost = CASE WHEN q.smallest_cost THEN j.cost ELSE 0 END \
                 FROM {{s}}.queues q \
                 WHERE q.name = j.queue AND j.id = $2 AND j.lease_id = $3 AND $3 <> 0 \
                   AND j.state + 0 = 2 AND j.lease_deadline > $1 \
                 RETURNING j.queue, j.grp",
                rank = rank_sql("$1"),
            )))
            .await
            .map_err(db)?;
        let row = tx
            .query_opt(&st, &[&i(now), &i(id.0), &i(lease)])
            .await
            .map_err(db)?;
        let Some(row) = row else {
            drop(tx);
            return Err(self.lease_error(&client, id, lease).await?);
        };
        let queue: String = row.get(0);
        if let Some(g) = row.get::<_, Option<String>>(1) {
            self.refresh_groups(&tx, BTreeSet::from([(queue.clone(), g)]))
                .await?;
        }
        tx.commit().await.map_err(db)?;
        self.work_arrived_in([queue.as_str()]);
        Ok(())
    }

    pub(crate) async fn cancel(&self, id: JobId) -> Result<()> {
        let now = self.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let st = tx
            .prepare_cached(&self.q(
                "UPDATE {s}.jobs SET state = 6, avail = false, finished_at = $1 \
                 WHERE id = $2 AND state NOT IN (3, 5, 6) \
                 RETURNING queue, grp, unique_key, unique_until, state",
            ))
            .await
            .map_err(db)?;
        let Some(row) = tx.query_opt(&st, &[&i(now), &i(id.0)]).await.map_err(db)? else {
            return Err(self.state_error(&tx, id, "cancel").await?);
        };
        let queue: String = row.get(0);
        let mut releases = UniqueReleases::default();
        releases.add(&queue, row.get(2), i(id.0), row.get(3));
        releases.apply(self, &tx).await?;
        if let Some(g) = row.get::<_, Option<String>>(1) {
            self.refresh_groups(&tx, BTreeSet::from([(queue.clone(), g)]))
                .await?;
        }
        tx.commit().await.map_err(db)?;
        self.aggregates
            .lock()
            .bump(&queue, now, |a| a.cancelled += 1);
        self.work_arrived_in([queue.as_str()]);
        Ok(())
    }

    /// The error for an operation `op` refused by the job's state (or its absence).
    async fn state_error(
        &self,
        tx: &Transaction<'_>,
        id: JobId,
        op: &'static str,
    ) -> Result<Error> {
        let st = tx
            .prepare_cached(&self.q("SELECT state FROM {s}.jobs WHERE id = $1"))
            .await
            .map_err(db)?;
        Ok(match tx.query_opt(&st, &[&i(id.0)]).await.map_err(db)? {
            None => Error::JobNotFound(id),
            Some(r) => Error::InvalidState {
                id,
                op,
                state: crate::conv::state_of(r.get(0)).as_str(),
            },
        })
    }

    pub(crate) async fn retry(&self, id: JobId) -> Result<()> {
        let now = self.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let st = tx
            .prepare_cached(
                &self.q(
                    "SELECT state, queue, grp, unique_key FROM {s}.jobs WHERE id = $1 FOR UPDATE",
                ),
            )
            .await
            .map_err(db)?;
        let Some(row) = tx.query_opt(&st, &[&i(id.0)]).await.map_err(db)? else {
            return Err(Error::JobNotFound(id));
        };
        let state = crate::conv::state_of(row.get(0));
        let queue: String = row.get(1);
        let fresh = match state {
            JobState::Dead | JobState::Cancelled => true,
            JobState::Scheduled | JobState::Failed => false,
            other => {
                return Err(Error::InvalidState {
                    id,
                    op: "retry",
                    state: other.as_str(),
                })
            }
        };
        let st = tx
            .prepare_cached(&self.q(&format!(
                "UPDATE {{s}}.jobs j SET state = 1, run_at = $1, avail = (j.grp IS NULL), \
                   attempt = CASE WHEN $3 THEN 0 ELSE j.attempt END, \
                   finished_at = CASE WHEN $3 THEN NULL ELSE j.finished_at END, \
                   rank = {rank}, sort_cost = CASE WHEN q.smallest_cost THEN j.cost ELSE 0 END \
                 FROM {{s}}.queues q WHERE q.name = j.queue AND j.id = $2",
                rank = rank_sql("$1"),
            )))
            .await
            .map_err(db)?;
        tx.execute(&st, &[&i(now), &i(id.0), &fresh])
            .await
            .map_err(db)?;
        if let (true, Some(key)) = (fresh, row.get::<_, Option<String>>(3)) {
            // The key points at this job again unless another live job took it meanwhile.
            let st = tx
                .prepare_cached(&self.q(
                    "INSERT INTO {s}.unique_keys AS u (queue, key, job_id, live_until) \
                     VALUES ($1, $2, $3, 9223372036854775807) \
                     ON CONFLICT (queue, key) DO UPDATE SET job_id = EXCLUDED.job_id, \
                        live_until = EXCLUDED.live_until \
                     WHERE u.job_id = EXCLUDED.job_id OR u.live_until <= $4",
                ))
                .await
                .map_err(db)?;
            tx.execute(&st, &[&queue, &key, &i(id.0), &i(now)])
                .await
                .map_err(db)?;
        }
        if let Some(g) = row.get::<_, Option<String>>(2) {
            self.refresh_groups(&tx, BTreeSet::from([(queue.clone(), g)]))
                .await?;
        }
        tx.commit().await.map_err(db)?;
        self.work_arrived_in([queue.as_str()]);
        Ok(())
    }

    /// Deletes one job that is not running (one unfinished is counted as cancelled).
    pub(crate) async fn delete(&self, id: JobId) -> Result<()> {
        let now = self.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let st = tx
            .prepare_cached(&self.q("DELETE FROM {s}.jobs WHERE id = $1 AND state <> 2 \
                 RETURNING queue, grp, unique_key, state"))
            .await
            .map_err(db)?;
        let Some(row) = tx.query_opt(&st, &[&i(id.0)]).await.map_err(db)? else {
            return Err(self.state_error(&tx, id, "delete").await?);
        };
        let queue: String = row.get(0);
        let mut releases = UniqueReleases::default();
        releases.add(&queue, row.get(2), i(id.0), 0);
        releases.apply(self, &tx).await?;
        if let Some(g) = row.get::<_, Option<String>>(1) {
            self.refresh_groups(&tx, BTreeSet::from([(queue.clone(), g)]))
                .await?;
        }
        tx.commit().await.map_err(db)?;
        let state = crate::conv::state_of(row.get(3));
        if !state.is_terminal() {
            self.aggregates
                .lock()
                .bump(&queue, now, |a| a.cancelled += 1);
            self.work_arrived_in([queue.as_str()]);
        }
        Ok(())
    }

    /// Deletes a queue with all its jobs, keys, rate state and aggregates, unless a job of it
    /// is active. The queue's row is locked first, so a fetch on another server (which locks
    /// it for a controlled queue, and otherwise leases by `UPDATE`, which waits on the jobs'
    /// row locks) cannot start one of its jobs meanwhile.
    pub(crate) async fn delete_queue(&self, name: &str) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let st = tx
            .prepare_cached(&self.q("SELECT 1 FROM {s}.queues WHERE name = $1 FOR UPDATE"))
            .await
            .map_err(db)?;
        if tx.query_opt(&st, &[&name]).await.map_err(db)?.is_none() {
            return Err(Error::QueueNotFound(name.to_string()));
        }
        let st = tx
            .prepare_cached(&self.q(
                "WITH gone AS (DELETE FROM {s}.jobs WHERE (queue = $1 AND ( \
                   state = 2 OR state IN (3, 5, 6))) \
                   OR (queue || '' = $1 AND (state = 1 OR state IN (0, 4))) \
                   RETURNING state) \
                 SELECT count(*) FILTER (WHERE state = 2), count(*) FROM gone",
            ))
            .await
            .map_err(db)?;
        let row = tx.query_one(&st, &[&name]).await.map_err(db)?;
        let (active, deleted): (i64, i64) = (row.get(0), row.get(1));
        if active > 0 {
            // Rolls the deletion back.
            return Err(Error::QueueBusy {
                queue: name.to_string(),
                active: active as u64,
            });
        }
        for table in ["unique_keys", "group_rates", "aggregates"] {
            tx.execute(
                &self.q(&format!("DELETE FROM {{s}}.{table} WHERE queue = $1")),
                &[&name],
            )
            .await
            .map_err(db)?;
        }
        tx.execute(&self.q("DELETE FROM {s}.queues WHERE name = $1"), &[&name])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.configs.lock().remove(name);
        self.aggregates.lock().forget(name);
        Ok(deleted as u64)
    }

    pub(crate) async fn purge(&self, name: &str) -> Result<u64> {
        let now = self.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let st = tx
            .prepare_cached(&self.q(
                "DELETE FROM {s}.jobs WHERE (queue || '' = $1 AND state = 1) \
                   OR (queue || '' = $1 AND state IN (0, 4)) \
                 RETURNING id, grp, unique_key",
            ))
            .await
            .map_err(db)?;
        let gone = tx.query(&st, &[&name]).await.map_err(db)?;
        let mut releases = UniqueReleases::default();
        let mut groups = BTreeSet::new();
        for r in &gone {
            releases.add(name, r.get(2), r.get(0), 0);
            if let Some(g) = r.get::<_, Option<String>>(1) {
                groups.insert((name.to_string(), g));
            }
        }
        releases.apply(self, &tx).await?;
        self.refresh_groups(&tx, groups).await?;
        tx.commit().await.map_err(db)?;
        let n = gone.len() as u64;
        if n > 0 {
            self.aggregates.lock().bump(name, now, |a| a.cancelled += n);
        }
        Ok(n)
    }
}

/// Failed attempts as an `UPDATE … RETURNING id, queue, grp, state, unique_key,
/// unique_until` gave them (fails and expired leases): the unique keys the dead ones release
/// and the groups to refresh go into `releases` and `groups`; returns (queue, dead) per job.
fn failed_rows(
    rows: &[tokio_postgres::Row],
    releases: &mut UniqueReleases,
    groups: &mut BTreeSet<GroupKey>,
) -> Vec<(String, bool)> {
    rows.iter()
        .map(|r| {
            let queue: String = r.get(1);
            if let Some(g) = r.get::<_, Option<String>>(2) {
                groups.insert((queue.clone(), g));
            }
            let dead = r.get::<_, i16>(3) == JobState::Dead as i16;
            if dead {
                releases.add(&queue, r.get(4), r.get(0), r.get(5));
            }
            (queue, dead)
        })
        .collect()
}

/// The leases and results of a batch as JSON objects keyed by job id, for statements that
/// look each job's own up (`$3::jsonb ->> j.id::text`) instead of joining the batch.
fn by_id(
    ids: &[i64],
    leases: &[i64],
    results: &[Option<String>],
) -> (serde_json::Value, serde_json::Value) {
    let mut lease_of = serde_json::Map::with_capacity(ids.len());
    let mut result_of = serde_json::Map::new();
    for ((id, lease), result) in ids.iter().zip(leases).zip(results) {
        lease_of.insert(id.to_string(), serde_json::Value::from(*lease));
        if let Some(r) = result {
            result_of.insert(id.to_string(), serde_json::Value::String(r.clone()));
        }
    }
    (lease_of.into(), result_of.into())
}

/// What the transactional part of an ack did.
struct AckedSlow {
    rejected: Vec<Rejection>,
    runs: Vec<(String, u64)>,
    frees_work: bool,
}

/// A leased job with the time it became ready (for its wait).
struct Taken {
    job: FetchedJob,
    ready_at: u64,
}

/// The columns of a batch insert, one array per column (one `INSERT … SELECT unnest(…)`).
#[derive(Default)]
struct InsertRows {
    id: Vec<i64>,
    queue: Vec<String>,
    kind: Vec<String>,
    payload: Vec<String>,
    state: Vec<i16>,
    avail: Vec<bool>,
    priority: Vec<i32>,
    cost: Vec<i64>,
    rank: Vec<i64>,
    sort_cost: Vec<i64>,
    max_attempts: Vec<i32>,
    backoff_base: Vec<Option<i64>>,
    backoff_cap: Vec<Option<i64>>,
    timeout: Vec<i64>,
    run_at: Vec<i64>,
    unique_key: Vec<Option<String>>,
    unique_until: Vec<i64>,
    grp: Vec<Option<String>>,
    tags: Vec<serde_json::Value>,
}

impl InsertRows {
    fn push(&mut self, id: i64, job: &NewJob, cfg: &QueueConfig, now: u64) {
        let run_at = match (job.delay_ms, job.run_at_ms) {
            (Some(d), _) => now.saturating_add(d),
            (None, Some(at)) => at.max(now),
            (None, None) => now,
        };
        let state = if run_at > now {
            JobState::Scheduled
        } else {
            JobState::Waiting
        };
        let (rank, sort_cost) = ready_key(cfg, run_at, job.priority, job.cost);
        self.id.push(id);
        self.state.push(state as i16);
        self.avail
            .push(state == JobState::Waiting && job.group.is_none());
        self.priority.push(job.priority);
        self.cost.push(i(job.cost));
        self.rank.push(rank);
        self.sort_cost.push(sort_cost);
        self.max_attempts
            .push(i32::try_from(job.max_attempts.unwrap_or(cfg.max_attempts)).unwrap_or(i32::MAX));
        self.backoff_base.push(job.backoff.map(|b| i(b.base_ms)));
        self.backoff_cap.push(job.backoff.map(|b| i(b.cap_ms)));
        self.timeout
            .push(i(job.timeout_ms.unwrap_or(cfg.timeout_ms)));
        self.run_at.push(i(run_at));
        self.unique_until
            .push(match (&job.unique_key, job.unique_window_ms) {
                (Some(_), Some(w)) => i(now.saturating_add(w)),
                _ => 0,
            });
        self.unique_key.push(job.unique_key.clone());
        self.grp.push(job.group.clone());
        self.tags.push(serde_json::Value::from(job.tags.clone()));
        self.queue.push(job.queue.clone());
        self.kind.push(job.kind.clone());
        self.payload.push(job.payload.as_str().to_string());
    }

    async fn insert(self, inner: &Inner, tx: &Transaction<'_>, now: u64) -> Result<()> {
        if self.id.is_empty() {
            return Ok(());
        }
        let st = tx
            .prepare_cached(&inner.q(
                "INSERT INTO {s}.jobs (id, queue, kind, payload, state, avail, priority, cost, \
                   rank, sort_cost, max_attempts, backoff_base_ms, backoff_cap_ms, timeout_ms, \
                   created_at, run_at, unique_key, unique_until, grp, tags) \
                 SELECT r.id, r.queue, r.kind, r.payload, r.state, r.avail, r.priority, r.cost, \
                   r.rank, r.sort_cost, r.max_attempts, r.base, r.cap, r.timeout, $1, r.run_at, \
                   r.ukey, r.until, r.grp, \
                   ARRAY(SELECT jsonb_array_elements_text(r.tags)) \
                 FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::smallint[], \
                   $7::bool[], $8::integer[], $9::bigint[], $10::bigint[], $11::bigint[], \
                   $12::integer[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], \
                   $17::text[], $18::bigint[], $19::text[], $20::jsonb[]) \
                 AS r(id, queue, kind, payload, state, avail, priority, cost, rank, sort_cost, \
                   max_attempts, base, cap, timeout, run_at, ukey, until, grp, tags)",
            ))
            .await
            .map_err(db)?;
        tx.execute(
            &st,
            &[
                &i(now),
                &self.id,
                &self.queue,
                &self.kind,
                &self.payload,
                &self.state,
                &self.avail,
                &self.priority,
                &self.cost,
                &self.rank,
                &self.sort_cost,
                &self.max_attempts,
                &self.backoff_base,
                &self.backoff_cap,
                &self.timeout,
                &self.run_at,
                &self.unique_key,
                &self.unique_until,
                &self.grp,
                &self.tags,
            ],
        )
        .await
        .map_err(db)?;
        Ok(())
    }
}
