//! The server's database: SQLite (WAL, under the data folder) by default, PostgreSQL for teams.
//! One SQL dialect serves both: `$N` placeholders, `TEXT`/`BIGINT` columns, ids made here.

pub mod chats;
pub mod datasets;
mod migrations;
pub mod models;
pub mod runs;
mod server_leases;
pub mod sweeps;
pub mod teachers;
pub mod users;
pub mod workers;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database {url}: {message}")]
    Connect { url: String, message: String },
    #[error("database row {table}.{column}: {message}")]
    Corrupt {
        table: &'static str,
        column: &'static str,
        message: String,
    },
}

pub type DbResult<T> = Result<T, DbError>;

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    /// PostgreSQL (else SQLite): the queue's lease takes its row with `FOR UPDATE SKIP LOCKED`.
    pub postgres: bool,
}

/// The embedded default: `DATA_DIR/glmtune.db`.
pub fn default_url(data_dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("glmtune.db").display()
    )
}

impl Db {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> DbResult<Db> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(DbError::Connect {
                url: redact(url),
                message: "expected sqlite://PATH or postgres://…".into(),
            });
        }
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| DbError::Connect {
                url: redact(url),
                message: e.to_string(),
            })?
            .log_statements(log::LevelFilter::Off);
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL lets readers go on while one writer commits; the busy timeout lets
                        // `glmtune token create` write while a server runs.
                        sqlx::query("PRAGMA journal_mode=WAL")
                            .execute(&mut *connection)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout=10000")
                            .execute(&mut *connection)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys=ON")
                            .execute(&mut *connection)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| DbError::Connect {
                url: redact(url),
                message: e.to_string(),
            })?;
        let db = Db {
            pool,
            postgres: !sqlite,
        };
        migrations::run(&db).await?;
        Ok(db)
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The last `seq` of `child` rows under a parent (0 for none), with the parent's row locked for
/// the rest of the transaction: a row lock on PostgreSQL, the write lock on SQLite. Writers of
/// the same parent take turns, so `last + 1` is free to insert.
async fn last_seq_locked(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    parent: &'static str,
    child: &'static str,
    parent_column: &'static str,
    id: &str,
) -> DbResult<i64> {
    sqlx::query(&format!("UPDATE {parent} SET id = id WHERE id = $1"))
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query(&format!(
        "SELECT COALESCE(MAX(seq), 0) AS last FROM {child} WHERE {parent_column} = $1"
    ))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(sqlx::Row::try_get(&row, "last")?)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix milliseconds: leases expire at this grain.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A new id: `prefix` and 24 random hex digits.
pub fn new_id(prefix: &str) -> String {
    let bytes: [u8; 12] = rand::rng().random();
    format!("{prefix}{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("postgres://me:secret@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(redact("postgres://me@db/x"), "postgres://me@db/x");
        assert_eq!(redact("sqlite:///a.db"), "sqlite:///a.db");
    }

    #[test]
    fn ids_are_distinct_and_prefixed() {
        let (a, b) = (new_id("run-"), new_id("run-"));
        assert!(a.starts_with("run-") && a.len() == 28);
        assert_ne!(a, b);
    }
}
