//! The PostgreSQL backend (SPEC §10), for deployments of several nodes on one database.
//! So far its schema: migrations of its own in `schema/postgres/`, applied by
//! [`migrate`]; the façade's traits on PostgreSQL follow (issue 14).

use tokio_postgres::Client;

use super::StoreError;

/// Migrations, applied in order; `schema_migrations` records each one applied.
/// DO NOT CHANGE one once released: add a new numbered file instead.
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "init",
    include_str!("../../schema/postgres/0001_init.sql"),
)];

/// The advisory lock that serialises migrations when several nodes start at once
/// (the bytes of "vellum m", as a number; any constant would do, it must not change).
const MIGRATION_LOCK: i64 = 0x7665_6c6c_756d_206d;

fn backend(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(format!("postgresql: {e}"))
}

/// Brings the database's schema up to date in one transaction (all or nothing), holding an
/// advisory lock so that nodes starting together migrate once. Returns how many
/// migrations ran. A database migrated by a newer Vellum is refused, as SQLite's is.
pub async fn migrate(client: &mut Client) -> Result<usize, StoreError> {
    let tx = client.transaction().await.map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER     PRIMARY KEY,
             name       TEXT        NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(backend)?;
    let done: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(backend)?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if done > known {
        return Err(StoreError::Backend(format!(
            "the database's schema is at version {done}, newer than this Vellum's {known}: \
             upgrade Vellum"
        )));
    }
    let mut ran = 0;
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > done) {
        tx.batch_execute(sql).await.map_err(backend)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(backend)?;
        ran += 1;
    }
    tx.commit().await.map_err(backend)?;
    Ok(ran)
}
