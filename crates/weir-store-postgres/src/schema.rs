//! Versioned migrations. Each server runs them on open, under a transaction-scoped advisory
//! lock keyed by the schema, so several servers starting at once apply each migration once
//! and the rest wait and find it done. A schema migrated by a newer Weir is refused rather
//! than used with the wrong assumptions.

use crate::conv::db;
use weir_core::{Error, Result};

/// The migrations, in order: `(version, SQL)`, `{s}` standing for the quoted schema.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_jobs.sql")),
    (2, include_str!("../migrations/0002_group_rates.sql")),
    (3, include_str!("../migrations/0003_cron.sql")),
    (4, include_str!("../migrations/0004_state_counts.sql")),
    (
        5,
        include_str!("../migrations/0005_maintenance_indexes.sql"),
    ),
    (6, include_str!("../migrations/0006_due_by_queue.sql")),
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Checks a schema name: 1 to 40 characters of `a-z`, `0-9` and `_`, not starting with a
/// digit (it also names the NOTIFY channel, whose limit is 63 bytes).
pub fn validate_schema_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
        && !name.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "store_schema",
            format!(
                "{name:?} is not a schema name: use 1 to 40 of a-z, 0-9 and _, \
                 not starting with a digit or pg_"
            ),
        ))
    }
}

/// The schema as an SQL identifier.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// Creates `schema` if needed and applies every migration it lacks; returns the versions
/// applied now (empty when it was up to date). What `weir migrate` runs.
pub async fn migrate(client: &mut tokio_postgres::Client, schema: &str) -> Result<Vec<i32>> {
    validate_schema_name(schema)?;
    let s = quote(schema);
    let tx = client.transaction().await.map_err(db)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&format!("weir-migrate:{schema}")],
    )
    .await
    .map_err(db)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await
    .map_err(db)?;
    let rows = tx
        .query(
            &format!("SELECT version FROM {s}.schema_migrations ORDER BY version"),
            &[],
        )
        .await
        .map_err(db)?;
    let have: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    if let Some(&newest) = have.last() {
        if newest > SCHEMA_VERSION {
            return Err(Error::storage(format!(
                "schema {schema} is at version {newest}, newer than this Weir knows \
                 ({SCHEMA_VERSION}): upgrade Weir, or use another store_schema"
            )));
        }
    }
    let mut applied = Vec::new();
    for &(version, sql) in MIGRATIONS {
        if have.contains(&version) {
            continue;
        }
        tx.batch_execute(&sql.replace("{s}", &s))
            .await
            .map_err(|e| Error::storage(format!("migration {version} failed: {}", full(&e))))?;
        tx.execute(
            &format!("INSERT INTO {s}.schema_migrations (version) VALUES ($1)"),
            &[&version],
        )
        .await
        .map_err(db)?;
        applied.push(version);
    }
    tx.commit().await.map_err(db)?;
    Ok(applied)
}

/// Drops `schema` and everything in it, if it exists: what tests do with the schema they
/// made, from a `Drop` (it connects on a thread and a runtime of its own, so it works
/// whatever runtime the caller is in, or none). Errors are ignored: a schema that could
/// not be dropped is left behind, named after its test.
pub fn drop_schema_blocking(url: &str, schema: &str) {
    if validate_schema_name(schema).is_err() {
        return;
    }
    let (url, s) = (url.to_string(), quote(schema));
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                    .await;
            }
        });
    })
    .join();
}

fn full(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_that_could_inject_sql_are_refused() {
        for bad in [
            "",
            "Weir",
            "a-b",
            "a\"; DROP TABLE x; --",
            "1abc",
            "pg_temp",
            &"x".repeat(41),
        ] {
            assert!(validate_schema_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["weir", "weir_test_1", "_x"] {
            validate_schema_name(good).unwrap();
        }
    }
}
