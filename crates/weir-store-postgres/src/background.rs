//! What runs beside the requests: the LISTEN connection that wakes this server's long polls
//! when another server enqueues, the task that sends this server's NOTIFYs (outside any
//! insert transaction, coalesced), the maintenance leader, and the buffer of hourly counts.
//!
//! Aggregates are counted in memory and added to their rows once a second (and before every
//! read of them), so no hot transaction updates a shared counter row; a server killed with
//! `kill -9` loses at most its last second of counts, never a job.

use crate::conv::{db, i};
use crate::Inner;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use weir_core::{Aggregate, Result};
use weir_store::MaintenanceReport;

/// How long the NOTIFY sender waits after a request for others to join it: the delay a
/// long poll on another server sees on top of the NOTIFY itself.
const NOTIFY_GATHER: Duration = Duration::from_millis(3);

/// How often the maintenance leader enforces retention.
const RETENTION_EVERY: Duration = Duration::from_secs(10);

/// How long a maintenance leader holds its role without renewing it, ms.
const LEADER_TTL_MS: u64 = 10_000;

/// The tables that grow with the work, whose statistics the leader keeps up with
/// ([`Inner::refresh_statistics`]).
pub(crate) const GROWING_TABLES: [&str; 4] = ["jobs", "unique_keys", "group_rates", "aggregates"];

/// Fewer live rows than this never make the leader analyze a table: plans of so small a
/// table cost little whatever they are.
const ANALYZE_MIN_ROWS: i64 = 1_000;

/// Hourly counts not yet added to their rows: (queue, hour) → counts.
#[derive(Default)]
pub(crate) struct AggregateBuffer {
    pending: HashMap<(String, u64), Aggregate>,
}

impl AggregateBuffer {
    pub(crate) fn bump(&mut self, queue: &str, now: u64, f: impl FnOnce(&mut Aggregate)) {
        let hour = now - now % weir_core::aggregate::HOUR_MS;
        let key = (queue.to_string(), hour);
        f(self.pending.entry(key).or_default());
    }

    /// Forgets every count of a deleted queue.
    pub(crate) fn forget(&mut self, queue: &str) {
        self.pending.retain(|(q, _), _| q != queue);
    }
}

/// The background tasks; aborted when the last handle on the store goes.
pub(crate) struct Tasks {
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for h in &self.handles {
            h.abort();
        }
    }
}

impl Tasks {
    pub(crate) async fn start(inner: &Arc<Inner>, maintenance_every: Option<Duration>) -> Tasks {
        let mut handles = Vec::new();
        let weak = Arc::downgrade(inner);
        handles.push(tokio::spawn(listen(weak.clone())));
        handles.push(tokio::spawn(send_notifies(weak.clone())));
        handles.push(tokio::spawn(flush_every_second(weak.clone())));
        if let Some(every) = maintenance_every {
            handles.push(tokio::spawn(lead_maintenance(weak, every)));
        }
        Tasks { handles }
    }
}

/// Holds a LISTEN session (reconnecting with backoff when it drops) and wakes this
/// server's long polls on every notification of the schema's channel.
async fn listen(weak: Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let url = inner.url.clone();
        let channel = inner.channel.clone();
        drop(inner);
        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let pump = tokio::spawn(async move {
                    let mut stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(msg) = stream.next().await {
                        match msg {
                            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_string()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN \"{channel}\""))
                    .await
                    .is_ok()
                {
                    backoff = Duration::from_millis(100);
                    // Anything enqueued while the session was down: look now.
                    if let Some(inner) = weak.upgrade() {
                        inner.wake.notify_waiters();
                    }
                    while let Some(payload) = rx.recv().await {
                        let Some(inner) = weak.upgrade() else { return };
                        let mut words = payload.split(' ').peekable();
                        if let Some(mark) = words.next_if(|w| w.starts_with('@')) {
                            if mark == inner.instance {
                                continue; // our own: its long polls were woken when sent
                            }
                        }
                        let payload: Vec<&str> = words.collect();
                        if payload.is_empty() || payload.contains(&"*") {
                            inner.wake.notify_waiters();
                        } else {
                            for q in payload {
                                inner.wake_queue(q);
                            }
                        }
                    }
                }
                pump.abort();
            }
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; long polls fall back to polling");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Sends one NOTIFY per request, coalescing the requests made while one is in flight, so a
/// burst of enqueues costs one notification and no insert transaction ever holds the
/// NOTIFY queue's lock.
async fn send_notifies(weak: Weak<Inner>) {
    loop {
        let request = {
            let Some(inner) = weak.upgrade() else { return };
            // Wait without holding the store alive.
            let inner2 = inner.clone();
            drop(inner);
            async move { inner2.notify_request.notified().await }
        };
        request.await;
        // Let a burst of enqueues gather: one NOTIFY per NOTIFY_GATHER at most, instead of
        // one per round trip (each is a transaction that takes the notification queue's lock).
        tokio::time::sleep(NOTIFY_GATHER).await;
        let Some(inner) = weak.upgrade() else { return };
        let queues = std::mem::take(&mut *inner.pending_notify.lock());
        if queues.is_empty() {
            continue;
        }
        // This server's mark, then the queues with work, space-separated (names hold no
        // spaces); `*` when too many for a NOTIFY payload (8,000 bytes) or when any queue
        // may have work.
        let mut payload = queues.into_iter().collect::<Vec<_>>().join(" ");
        if payload.len() > 7_000 {
            payload = "*".to_string();
        }
        let payload = format!("{} {payload}", inner.instance);
        let sent = async {
            let client = inner.client().await?;
            client
                .execute("SELECT pg_notify($1, $2)", &[&inner.channel, &payload])
                .await
                .map_err(db)?;
            Ok::<_, weir_core::Error>(())
        };
        if let Err(e) = sent.await {
            tracing::debug!(error = %e, "NOTIFY not sent; other servers' long polls will poll");
        }
    }
}

async fn flush_every_second(weak: Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(inner) = weak.upgrade() else { return };
        if let Err(e) = inner.flush_aggregates().await {
            tracing::debug!(error = %e, "aggregates not flushed; retrying in a second");
        }
    }
}

/// Every `every`, takes or renews the leader row; the holder runs maintenance. A server that
/// loses the row (it stalled past the TTL) stops at its next round: every maintenance write
/// re-checks the job's state, so a stale leader's last pass changes nothing it should not.
async fn lead_maintenance(weak: Weak<Inner>, every: Duration) {
    let me = format!("{}-{:016x}", std::process::id(), fastrand::u64(..));
    let mut last_retention: Option<Instant> = None;
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = weak.upgrade() else { return };
        match inner.try_lead(&me).await {
            Ok(true) => {
                let retention = last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY);
                if retention {
                    last_retention = Some(Instant::now());
                }
                if let Err(e) = inner.maintain_pass(retention).await {
                    tracing::warn!(error = %e, "maintenance pass failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "maintenance leader election failed"),
        }
    }
}

impl Inner {
    /// Takes the maintenance role if it is free or expired, or renews it if held; returns
    /// whether this server holds it now.
    pub(crate) async fn try_lead(&self, me: &str) -> Result<bool> {
        let now = self.now();
        let client = self.client().await?;
        let st = client
            .prepare_cached(&self.q(
                "INSERT INTO {s}.leader AS l (role, holder, term, expires_at) \
                 VALUES ('maintenance', $1, 1, $2::bigint + $3::bigint) \
                 ON CONFLICT (role) DO UPDATE SET holder = EXCLUDED.holder, \
                   term = l.term + CASE WHEN l.holder = EXCLUDED.holder THEN 0 ELSE 1 END, \
                   expires_at = EXCLUDED.expires_at \
                 WHERE l.holder = EXCLUDED.holder OR l.expires_at <= $2::bigint \
                 RETURNING term",
            ))
            .await
            .map_err(db)?;
        Ok(client
            .query_opt(&st, &[&me, &i(now), &i(LEADER_TTL_MS)])
            .await
            .map_err(db)?
            .is_some())
    }

    /// One maintenance pass over every queue: due jobs promoted, expired leases rescued,
    /// retention enforced, aggregates flushed.
    pub(crate) async fn maintain(&self) -> Result<MaintenanceReport> {
        let report = self.maintain_pass(true).await?;
        self.flush_aggregates().await?;
        Ok(report)
    }

    /// One maintenance pass of the leader: due jobs promoted, expired leases rescued, and
    /// retention only when `retention` (the leader runs it every [`RETENTION_EVERY`], not
    /// every second: it reads every queue's settings and each of its deletes scans, while
    /// promotions and rescues must stay prompt). Aggregates are not flushed here: every
    /// server flushes its own buffer each second (`flush_every_second`).
    pub(crate) async fn maintain_pass(&self, retention: bool) -> Result<MaintenanceReport> {
        let now = self.now();
        let moved = {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db)?;
            let n = self.tick(&tx, None, now).await?;
            tx.commit().await.map_err(db)?;
            n
        };
        if moved > 0 {
            self.work_arrived();
        }
        // Plans are an optimisation: a failed analyze must not hold up retention.
        if let Err(e) = self.refresh_statistics().await {
            tracing::warn!(error = %e, "statistics of the job tables not refreshed");
        }
        if retention {
            self.retention(now).await
        } else {
            Ok(MaintenanceReport::default())
        }
    }

    /// Analyzes each growing table that holds more than twice the rows its statistics say
    /// (and at least [`ANALYZE_MIN_ROWS`]), as soon as the leader sees it, not when
    /// autovacuum's next round comes (a minute by default).
    ///
    /// Why: once a drained queue's table is vacuumed, its statistics say it is empty, and
    /// on an empty table every plan costs about nothing, so the planner picks among them
    /// by chance; the vacuum makes every connection plan its statements again, and a
    /// generic plan made then is kept for the whole next burst. `SESSION` rules out
    /// sequential scans, but not a read of a whole partial index (the lease walked all of
    /// `jobs_waiting` and sorted it). An `ANALYZE` makes every connection plan again, on
    /// the rows that are there. The live rows come from the statistics system's running
    /// counts (`n_live_tup` of `pg_stat_user_tables`, read for these four tables alone, not
    /// through the view, which computes a row for every table of the database; current
    /// within a second); `SKIP_LOCKED`
    /// skips a table autovacuum is working on rather than wait for it.
    pub(crate) async fn refresh_statistics(&self) -> Result<Vec<String>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(
                "SELECT c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = ANY($2) \
                   AND pg_stat_get_live_tuples(c.oid) >= $3 \
                   AND pg_stat_get_live_tuples(c.oid) > 2 * greatest(c.reltuples, 0) \
                 ORDER BY 1",
            )
            .await
            .map_err(db)?;
        let tables: Vec<String> = client
            .query(
                &st,
                &[&self.schema, &&GROWING_TABLES[..], &ANALYZE_MIN_ROWS],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for t in &tables {
            tracing::debug!(table = %t, "statistics behind the table's size; analyzing");
            client
                .batch_execute(&format!("ANALYZE (SKIP_LOCKED) {}.{t}", self.s))
                .await
                .map_err(db)?;
        }
        Ok(tables)
    }

    /// Adds the buffered counts to their rows (they go back into the buffer if that fails).
    pub(crate) async fn flush_aggregates(&self) -> Result<()> {
        let pending = std::mem::take(&mut self.aggregates.lock().pending);
        if pending.is_empty() {
            return Ok(());
        }
        let result = self.write_aggregates(&pending).await;
        if result.is_err() {
            let mut buf = self.aggregates.lock();
            for (k, a) in pending {
                buf.pending.entry(k).or_default().merge(&a);
            }
        }
        result
    }

    async fn write_aggregates(&self, pending: &HashMap<(String, u64), Aggregate>) -> Result<()> {
        let mut cols: [Vec<i64>; 11] = Default::default();
        let mut queues = Vec::with_capacity(pending.len());
        let mut keys: Vec<&(String, u64)> = pending.keys().collect();
        keys.sort();
        for k in keys {
            let a = &pending[k];
            queues.push(k.0.clone());
            for (col, v) in cols.iter_mut().zip([
                k.1,
                a.enqueued,
                a.started,
                a.completed,
                a.failed,
                a.expired,
                a.dead,
                a.cancelled,
                a.run_ms_sum,
                a.run_ms_max,
                a.wait_ms_sum,
            ]) {
                col.push(i(v));
            }
        }
        let client = self.client().await?;
        let st = client
            .prepare_cached(&self.q(
                "INSERT INTO {s}.aggregates AS g (queue, hour_ms, enqueued, started, completed, \
                   failed, expired, dead, cancelled, run_ms_sum, run_ms_max, wait_ms_sum) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], \
                   $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], \
                   $10::bigint[], $11::bigint[], $12::bigint[]) \
                 ON CONFLICT (queue, hour_ms) DO UPDATE SET \
                   enqueued = g.enqueued + EXCLUDED.enqueued, \
                   started = g.started + EXCLUDED.started, \
                   completed = g.completed + EXCLUDED.completed, \
                   failed = g.failed + EXCLUDED.failed, \
                   expired = g.expired + EXCLUDED.expired, \
                   dead = g.dead + EXCLUDED.dead, \
                   cancelled = g.cancelled + EXCLUDED.cancelled, \
                   run_ms_sum = g.run_ms_sum + EXCLUDED.run_ms_sum, \
                   run_ms_max = greatest(g.run_ms_max, EXCLUDED.run_ms_max), \
                   wait_ms_sum = g.wait_ms_sum + EXCLUDED.wait_ms_sum",
            ))
            .await
            .map_err(db)?;
        let [hour, enq, started, completed, failed, expired, dead, cancelled, run_sum, run_max, wait_sum] =
            &cols;
        client
            .execute(
                &st,
                &[
                    &queues, hour, enq, started, completed, failed, expired, dead, cancelled,
                    run_sum, run_max, wait_sum,
                ],
            )
            .await
            .map_err(db)?;
        Ok(())
    }
}
