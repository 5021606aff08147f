//! The schema: the files of `server/migrations/`, embedded in the binary and applied in order at
//! start by sqlx's migrator, which records them in `_sqlx_migrations` and refuses a database whose
//! applied files have changed since. One folder serves both backends: the SQL is the dialect they
//! both speak (see `db`). Add a file, never edit one.
//!
//! Databases made before this recorded their versions in `schema_migrations`, written by a loop
//! of our own over the same SQL. The files keep those version numbers, so adopting such a database
//! is marking its versions applied in sqlx's table; nothing runs twice, no row is touched.
//! `schema_migrations` is left as it was, for a binary from before to still start on it.

use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::{AnyConnection, Connection, Row};

use super::{Db, DbError, DbResult};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

pub async fn run(db: &Db) -> DbResult<()> {
    let mut connection = db.pool.acquire().await?;
    // The migrator's own lock (advisory on PostgreSQL; on SQLite writers take turns anyway), so
    // that two servers starting at once on an old database adopt it one after the other.
    connection.lock().await?;
    let adopted = adopt_old_versions(&mut connection).await;
    connection.unlock().await?;
    adopted?;
    // That lock is a no-op on SQLite: two servers starting at once on a new file may both find a
    // migration unapplied, and the second's (rolled back whole, as SQLite's DDL is transactional)
    // fails on what the first made. Again, it finds the first's applied and skips them.
    let mut tries = 0;
    loop {
        match MIGRATOR.run(&mut *connection).await {
            Err(MigrateError::Execute(_) | MigrateError::ExecuteMigration(..)) if tries < 3 => {
                tries += 1;
            }
            done => return Ok(done?),
        }
    }
}

/// Marks the versions an old database lists in `schema_migrations` applied in `_sqlx_migrations`,
/// with the checksums of the files that hold the same SQL.
async fn adopt_old_versions(connection: &mut AnyConnection) -> DbResult<()> {
    let exists = if connection.backend_name() == "SQLite" {
        "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    } else {
        "SELECT COUNT(*) AS n FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
    };
    let found: i64 = sqlx::query(exists)
        .fetch_one(&mut *connection)
        .await?
        .try_get("n")?;
    if found == 0 {
        return Ok(());
    }
    connection.ensure_migrations_table().await?;
    let versions: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(&mut *connection)
        .await?
        .iter()
        .map(|row| row.try_get("version"))
        .collect::<Result<_, _>>()?;
    let mut tx = connection.begin().await?;
    for version in versions {
        let migration = MIGRATOR
            .iter()
            .find(|m| m.version == version)
            .ok_or_else(|| DbError::Corrupt {
                table: "schema_migrations",
                column: "version",
                message: format!("version {version} is newer than this glmtune"),
            })?;
        // Already there when the database was adopted before (the old table stays).
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, $2, TRUE, $3, 0) ON CONFLICT (version) DO NOTHING",
        )
        .bind(version)
        .bind(migration.description.to_string())
        .bind(migration.checksum.to_vec())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
#[path = "migrations_tests.rs"]
mod tests;
