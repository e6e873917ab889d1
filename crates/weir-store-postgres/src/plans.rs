//! The plans PostgreSQL makes of every statement this backend sends, pinned by a test.
//!
//! Each statement is prepared once per connection and then runs on a generic plan, made
//! without the parameters' values and, on a fresh database, without statistics. A plan
//! that reads the jobs table whole is fine on the test's few rows and ruinous on a queue of
//! millions: the lease planned as a full scan of the waiting index once cost one server
//! three fifths of its throughput, and nothing failed. So the test runs the whole
//! conformance suite with every statement text recorded (by [`seen`], called from
//! `Inner::q`), then asks PostgreSQL for each one's generic plan on a fresh schema and
//! refuses any that scans a table growing with the jobs without an index condition.

use parking_lot::Mutex;
use std::collections::BTreeSet;

static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Records `sql` (a statement template, schema as `{s}`) as sent.
pub(crate) fn seen(sql: &str) {
    let mut seen = SEEN.lock();
    if !seen.contains(sql) {
        seen.insert(sql.to_string());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::SEEN;
    use crate::{drop_schema_blocking, PostgresOptions, PostgresStore};
    use serde_json::Value;
    use std::sync::Arc;
    use tokio_postgres::{Client, NoTls, SimpleQueryMessage};
    use weir_core::{Ack, Fail, ManualClock, NewJob, Payload};
    use weir_store::conformance::{Fixture, T0};
    use weir_store::{
        JobAckManyParams, JobCancelParams, JobFailManyParams, JobFetchParams, JobInsertManyParams,
        Store,
    };

    /// Tables that grow with the jobs: a statement may touch them only through an index.
    const GROWING: &[&str] = &crate::background::GROWING_TABLES;

    /// Why statement `template` may read a growing table whole, if it may.
    fn allowed(template: &str) -> Option<&'static str> {
        if template.contains("SET rank = ") {
            Some(
                "re-ranks every waiting job of one queue when its order changes: visiting the \
                 queue's jobs is the work, and the planner reads the table when it expects the \
                 queue to be much of it",
            )
        } else if template.starts_with("DELETE FROM {s}.")
            && template.ends_with(" WHERE queue = $1")
        {
            Some("deletes every row of one queue (a queue deleted): as above")
        } else if template.contains("WHERE j.id = ANY(ARRAY((SELECT id FROM") {
            Some(
                "a queue's listing of every state sorts what the union returned: at most seven \
                 pages of ids, each read from its own index in order",
            )
        } else if template.contains("j.state = 2 ORDER BY j.id LIMIT")
            || template.contains("WHERE state = 2 AND lease_deadline <= $1")
        {
            Some(
                "active jobs (the listing of every queue's, the rescue of expired leases) are \
                 read whole from `jobs_leases` and sorted: there are as many as there are \
                 workers, not as many as jobs",
            )
        } else if template.starts_with("DELETE FROM {s}.group_rates WHERE ctid") {
            Some(
                "limiter rows whose time has passed: after each pass the table holds only keys \
                 used within their burst window, and an index on tat_us would make every \
                 hand-out's update of it a non-HOT one",
            )
        } else {
            None
        }
    }

    fn url() -> String {
        std::env::var("TEST_WEIR_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    fn fresh_schema() -> String {
        format!("plans_{}_{}", std::process::id(), fastrand::u32(..))
    }

    struct Pg {
        first: PostgresStore,
        second: PostgresStore,
        schema: String,
    }

    impl Fixture for Pg {
        type S = PostgresStore;
        fn store(&self) -> &PostgresStore {
            &self.first
        }
        fn second(&self) -> Result<&PostgresStore, &'static str> {
            Ok(&self.second)
        }
    }

    impl Drop for Pg {
        fn drop(&mut self) {
            drop_schema_blocking(&url(), &self.schema);
        }
    }

    fn options(schema: &str, clock: ManualClock) -> PostgresOptions {
        PostgresOptions {
            schema: schema.to_string(),
            clock: Arc::new(clock),
            pool_size: 4,
            maintenance_every: None,
            ..PostgresOptions::new(url())
        }
    }

    async fn open(clock: ManualClock) -> Pg {
        let schema = fresh_schema();
        let first = PostgresStore::open(options(&schema, clock.clone()))
            .await
            .unwrap();
        let second = PostgresStore::open(options(&schema, clock)).await.unwrap();
        Pg {
            first,
            second,
            schema,
        }
    }

    /// The growing table `index` belongs to (its name starts with the table's).
    fn table_of(index: &str) -> Option<&'static str> {
        GROWING
            .iter()
            .copied()
            .filter(|t| index.strip_prefix(t).is_some_and(|r| r.starts_with('_')))
            .max_by_key(|t| t.len())
    }

    /// The growing tables scanned in `node`'s subtree.
    fn scans(node: &Value, out: &mut Vec<String>) {
        let table = node["Relation Name"]
            .as_str()
            .filter(|r| GROWING.contains(r))
            .or_else(|| node["Index Name"].as_str().and_then(table_of));
        if let Some(t) = table {
            out.push(t.to_string());
        }
        for c in node["Plans"].as_array().into_iter().flatten() {
            scans(c, out);
        }
    }

    /// What is wrong with one plan node and those under it: a sequential scan of a growing
    /// table, an index scan of one with nothing to seek on (a read of the whole index, or of
    /// a partial index whose predicate the statement implies), or every matching row of one
    /// read and sorted to return the first few (a `Sort` under a `Limit`, where an index
    /// gives the order).
    fn faults(node: &Value, under_limit: bool, out: &mut Vec<String>) {
        let kind = node["Node Type"].as_str().unwrap_or("");
        let index = node["Index Name"].as_str().unwrap_or("");
        let rel = node["Relation Name"]
            .as_str()
            .filter(|r| GROWING.contains(r))
            .or_else(|| table_of(index));
        if let Some(rel) = rel {
            match kind {
                "Seq Scan" => out.push(format!("a sequential scan of {rel}")),
                "Index Scan" | "Index Only Scan" | "Bitmap Index Scan"
                    if node.get("Index Cond").is_none() =>
                {
                    out.push(format!("a scan of all of {index} on {rel}"));
                }
                _ => {}
            }
        }
        if kind == "Sort" && under_limit {
            let mut sorted = Vec::new();
            scans(node, &mut sorted);
            if let Some(t) = sorted.first() {
                out.push(format!("every matching row of {t} sorted for a LIMIT"));
            }
        }
        // A row lock passes the limit on; anything else between them ends it.
        let limit = kind == "Limit" || (under_limit && kind == "LockRows");
        for c in node["Plans"].as_array().into_iter().flatten() {
            faults(c, limit, out);
        }
    }

    /// Statement text as one line, for the failure message.
    fn one_line(sql: &str) -> String {
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Fills `store` as a deployment an hour in: waiting, running, completed, dead,
    /// cancelled, scheduled, grouped and unique jobs in two queues, some 100,000 rows.
    async fn populate(store: &PostgresStore) {
        let payload = Payload::json(&serde_json::json!({ "n": 1 })).unwrap();
        let job = |queue: &str| NewJob::new(queue, "k", payload.clone());
        for batch in 0..80u64 {
            let jobs = (0..1_000u64)
                .map(|n| {
                    let mut j = job(if n % 2 == 0 { "a" } else { "b" });
                    match batch % 4 {
                        1 => j.delay_ms = Some(3_600_000),
                        2 => j.unique_key = Some(format!("u{batch}-{n}")),
                        3 => j.group = Some(format!("g{}", n % 50)),
                        _ => {}
                    }
                    j
                })
                .collect();
            store
                .job_insert_many(JobInsertManyParams { jobs })
                .await
                .unwrap();
        }
        for round in 0..20 {
            let got = store
                .job_fetch(JobFetchParams {
                    queues: vec!["a".into(), "b".into()],
                    max: 1_000,
                    wait_ms: 0,
                    worker: "w".into(),
                })
                .await
                .unwrap();
            match round % 4 {
                0 | 2 => {
                    let acks = got.iter().map(Ack::of).collect();
                    store.job_ack_many(JobAckManyParams { acks }).await.unwrap();
                }
                1 => {
                    let fails = got
                        .iter()
                        .map(|j| Fail {
                            id: j.id,
                            lease_id: j.lease_id,
                            error: "boom".into(),
                            retry: false,
                        })
                        .collect();
                    store
                        .job_fail_many(JobFailManyParams { fails })
                        .await
                        .unwrap();
                }
                _ => {
                    for j in got.iter().take(300) {
                        store
                            .job_cancel(JobCancelParams { id: j.id })
                            .await
                            .unwrap();
                    }
                }
            }
        }
    }

    /// A year of hourly aggregates of twenty queues, and 20,000 keys under a per-key rate
    /// limit, written directly (the store writes them over hours).
    async fn fill_side_tables(db: &Client, schema: &str) {
        db.batch_execute(&format!(
            "INSERT INTO \"{schema}\".aggregates (queue, hour_ms) \
               SELECT 'q' || q, h::bigint * 3600000 FROM generate_series(1, 20) q, \
                 generate_series(1, 8760) h ON CONFLICT DO NOTHING; \
             INSERT INTO \"{schema}\".group_rates (queue, grp, tat_us) \
               SELECT 'a', 'k' || k, k FROM generate_series(1, 20000) k"
        ))
        .await
        .unwrap();
    }

    /// The faults of every statement's generic plan on `schema`, as PostgreSQL plans it now.
    async fn explain_all(db: &Client, schema: &str, statements: &[String]) -> Vec<String> {
        // The session as the store's connections set it up (`SESSION`).
        db.batch_execute(&format!(
            "DEALLOCATE ALL; SET plan_cache_mode = force_generic_plan; {}",
            crate::SESSION
        ))
        .await
        .unwrap();
        let quoted = format!("\"{schema}\"");
        let mut wrong = Vec::new();
        for (n, template) in statements.iter().enumerate() {
            let sql = template.replace("{s}", &quoted);
            db.batch_execute(&format!("PREPARE p{n} AS {sql}"))
                .await
                .unwrap_or_else(|e| panic!("PREPARE failed ({e}): {}", one_line(template)));
            let params: i64 = db
                .query_one(
                    "SELECT cardinality(parameter_types)::bigint FROM pg_prepared_statements \
                     WHERE name = $1",
                    &[&format!("p{n}")],
                )
                .await
                .unwrap()
                .get(0);
            let args = vec!["NULL"; usize::try_from(params).unwrap()].join(", ");
            let args = if args.is_empty() {
                String::new()
            } else {
                format!("({args})")
            };
            let answer = db
                .simple_query(&format!("EXPLAIN (FORMAT JSON) EXECUTE p{n}{args}"))
                .await
                .unwrap();
            let text = answer
                .iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                    _ => None,
                })
                .expect("EXPLAIN answers with a row");
            let plan: Value = serde_json::from_str(&text).unwrap();
            let mut found = Vec::new();
            faults(&plan[0]["Plan"], false, &mut found);
            if allowed(template).is_none() {
                for f in found {
                    wrong.push(format!("{f}: {}\n{text}", one_line(template)));
                }
            }
        }
        wrong
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_statement_reads_a_growing_table_whole_on_its_generic_plan() {
        weir_store::conformance_run_all!(open).await;
        let statements: Vec<String> = SEEN.lock().iter().cloned().collect();
        let touching = statements.iter().filter(|s| s.contains("{s}.jobs")).count();
        // The suite reaches the hot paths: the lease, the ack, promotion, expiry, listings.
        assert!(
            touching >= 30,
            "the suite sent only {touching} statements on jobs"
        );

        // A schema as a deployment's first hour leaves it: some 100,000 jobs written by the
        // store itself, never analyzed (autovacuum off for it, so that no analyze lands in
        // the middle), then analyzed.
        let schema = fresh_schema();
        let store = PostgresStore::open(options(&schema, ManualClock::new(T0)))
            .await
            .unwrap();
        let (db, conn) = tokio_postgres::connect(&url(), NoTls).await.unwrap();
        tokio::spawn(conn);
        for t in GROWING {
            db.batch_execute(&format!(
                "ALTER TABLE \"{schema}\".{t} SET (autovacuum_enabled = false)"
            ))
            .await
            .unwrap();
        }
        populate(&store).await;
        fill_side_tables(&db, &schema).await;
        let mut wrong = explain_all(&db, &schema, &statements).await;
        let tables: Vec<String> = GROWING
            .iter()
            .map(|t| format!("\"{schema}\".{t}"))
            .collect();
        db.batch_execute(&format!("ANALYZE {}", tables.join(", ")))
            .await
            .unwrap();
        for w in explain_all(&db, &schema, &statements).await {
            wrong.push(format!("(analyzed) {w}"));
        }
        // The queues drained and vacuumed (as autovacuum does once a burst is done): the
        // tables are truncated to no pages and the statistics say they are empty. A server's
        // connections plan their statements again now (the vacuum invalidates their cached
        // plans), and a generic plan made now is kept through the next burst, until the
        // next analyze: so it must not read the table whole either.
        for t in GROWING {
            db.batch_execute(&format!("DELETE FROM \"{schema}\".{t}"))
                .await
                .unwrap();
            db.batch_execute(&format!("VACUUM (ANALYZE) \"{schema}\".{t}"))
                .await
                .unwrap();
        }
        // Sequential scans are off (`SESSION`); what else the planner picks on tables it
        // believes empty lasts until the leader analyzes them, within a second of the burst
        // (`refresh_statistics`, tested in tests/postgres_only.rs).
        for w in explain_all(&db, &schema, &statements).await {
            if w.starts_with("a sequential scan") {
                wrong.push(format!("(drained and vacuumed) {w}"));
            }
        }
        // Then the next burst arrives.
        populate(&store).await;
        fill_side_tables(&db, &schema).await;
        for w in explain_all(&db, &schema, &statements).await {
            wrong.push(format!("(analyzed empty, then filled) {w}"));
        }
        drop(store);
        drop_schema_blocking(&url(), &schema);
        assert!(
            wrong.is_empty(),
            "{} plans of {} statements read a growing table whole:\n{}",
            wrong.len(),
            statements.len(),
            wrong.join("\n")
        );
    }
}
