//! `weir migrate`: create or upgrade the PostgreSQL schema and exit. Servers do the same on
//! start (safely, several at once); this is for deployments that migrate before they roll out.

use crate::cli::MigrateArgs;
use crate::out::{CmdResult, Failure};
use std::str::FromStr;
use weir_store_postgres::{redact_url, validate_schema_name, SCHEMA_VERSION};

pub async fn run(a: MigrateArgs, json: bool) -> CmdResult {
    if !(a.store.starts_with("postgres://") || a.store.starts_with("postgresql://")) {
        return Err(Failure::usage(format!(
            "--store {:?} is not a PostgreSQL URL (postgres://USER@HOST:PORT/DB)",
            redact_url(&a.store)
        )));
    }
    validate_schema_name(&a.store_schema).map_err(|e| Failure::usage(e.to_string()))?;
    let mut pg = tokio_postgres::Config::from_str(&a.store)
        .map_err(|e| Failure::usage(format!("--store is not a PostgreSQL URL: {e}")))?;
    pg.connect_timeout(std::time::Duration::from_secs(10));
    pg.application_name("weir migrate");
    let (mut client, conn) = pg.connect(tokio_postgres::NoTls).await.map_err(|e| {
        Failure::Runtime(format!("cannot connect to {}: {e}", redact_url(&a.store)))
    })?;
    let conn = tokio::spawn(conn);
    let applied = weir_store_postgres::migrate(&mut client, &a.store_schema)
        .await
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    drop(client);
    let _ = conn.await;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "schema": a.store_schema,
                "version": SCHEMA_VERSION,
                "applied": applied,
            })
        );
    } else if applied.is_empty() {
        println!(
            "schema {} is up to date (version {SCHEMA_VERSION})",
            a.store_schema
        );
    } else {
        println!(
            "schema {}: applied migration(s) {:?}; now at version {SCHEMA_VERSION}",
            a.store_schema, applied
        );
    }
    Ok(())
}
