//! The schema on a new database, and the adoption of one made before `sqlx::migrate!` (by the
//! loop that recorded its versions in `schema_migrations`), on SQLite and, where
//! `GLMTUNE_TEST_POSTGRES` names a cluster, on PostgreSQL.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection, Row};

use super::MIGRATOR;
use crate::db::Db;

/// A database of its own for each test: a SQLite file, or a new PostgreSQL database.
async fn fresh_url(name: &str, postgres: bool) -> Option<String> {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let unique = format!(
        "glmtune_{name}_{}_{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::any::install_default_drivers();
    if !postgres {
        // A folder of its own, as a server's data folder: the WAL and shared-memory files sit
        // beside the database.
        let dir = std::env::temp_dir().join(unique);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        return Some(crate::db::default_url(&dir));
    }
    // Skipped without a cluster: `cargo test` alone has none.
    let base = std::env::var("GLMTUNE_TEST_POSTGRES").ok()?;
    let mut connection = sqlx::AnyConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {unique}"))
        .execute(&mut connection)
        .await
        .unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    Some(format!("{server}/{unique}"))
}

/// What the binary before `sqlx::migrate!` did: its own version table, each migration's
/// statements one by one, its version recorded.
async fn migrate_the_old_way(pool: &AnyPool, up_to: i64) {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(pool)
    .await
    .unwrap();
    for migration in MIGRATOR.iter().filter(|m| m.version <= up_to) {
        let sql: String = migration
            .sql
            .lines()
            .filter(|line| !line.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement).execute(pool).await.unwrap();
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)")
            .bind(migration.version)
            .execute(pool)
            .await
            .unwrap();
    }
}

/// The versions recorded as applied, and those that succeeded (the Any driver reads no booleans
/// from SQLite: the column is a filter).
async fn applied(db: &Db) -> (Vec<i64>, Vec<i64>) {
    let mut lists = Vec::new();
    for filter in ["", "WHERE success"] {
        let sql = format!("SELECT version FROM _sqlx_migrations {filter} ORDER BY version");
        let rows = sqlx::query(&sql).fetch_all(&db.pool).await.unwrap();
        lists.push(rows.iter().map(|row| row.get("version")).collect());
    }
    let succeeded = lists.pop().unwrap();
    (lists.pop().unwrap(), succeeded)
}

fn every_version() -> (Vec<i64>, Vec<i64>) {
    let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    (versions.clone(), versions)
}

/// The latest schema is usable: a chat with a system prompt (the second migration) is stored,
/// a sweep's trial is read back with its place (the third), and a worker registers and the run
/// reads back as nobody's lease (the fourth).
async fn check_latest_schema(db: &Db) {
    sqlx::query(
        "INSERT INTO chats (id, model, title, system, created_at) VALUES ($1, 'm', 't', 's', 0)",
    )
    .bind(crate::db::new_id("chat-"))
    .execute(&db.pool)
    .await
    .unwrap();
    let id = crate::db::new_id("ftjob-");
    sqlx::query(
        "INSERT INTO runs (id, model, train_dataset, settings, state, attempts, step, trained_tokens, cancel_requested, created_at, sweep_id, sweep_trial, pause_at) \
         VALUES ($1, 'm', 'd', '{}', 'paused', 0, 0, 0, 0, 0, 's', 2, 8)",
    )
    .bind(&id)
    .execute(&db.pool)
    .await
    .unwrap();
    let run = db.run(&id).await.unwrap().unwrap();
    let trial = run.sweep.unwrap();
    assert_eq!(
        (trial.trial, trial.pause_at, trial.stopped_at),
        (2, Some(8), None)
    );
    assert_eq!(run.worker, None);
    let registration = glmtune_shared::worker::WorkerRegistration {
        name: "box".into(),
        devices: vec![glmtune_shared::worker::WorkerDevice {
            device: "cuda:0".into(),
            memory_bytes: Some(1 << 30),
        }],
        models: Vec::new(),
    };
    let worker = db.register_worker("key-1", &registration).await.unwrap();
    // Registering again under the same key and name updates that worker.
    let again = db.register_worker("key-1", &registration).await.unwrap();
    assert_eq!(worker.worker.id, again.worker.id);
    assert_eq!(db.workers().await.unwrap()[0].devices, registration.devices);
}

async fn new_database(postgres: bool) {
    let Some(url) = fresh_url("new", postgres).await else {
        return;
    };
    let db = Db::open(&url).await.unwrap();
    assert_eq!(applied(&db).await, every_version());
    check_latest_schema(&db).await;
    // A second start applies nothing.
    db.pool.close().await;
    let db = Db::open(&url).await.unwrap();
    assert_eq!(applied(&db).await, every_version());
}

/// A database the old binary made, at `up_to`, keeps its rows; the migrations it lacks are
/// applied, the others are not run again.
async fn old_database(postgres: bool, up_to: i64) {
    let Some(url) = fresh_url("old", postgres).await else {
        return;
    };
    let pool = AnyPoolOptions::new().connect(&url).await.unwrap();
    migrate_the_old_way(&pool, up_to).await;
    sqlx::query(
        "INSERT INTO users (id, username, password_hash, role, created_at) VALUES ('u1', 'ann', 'h', 'admin', 7)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    for _start in 0..2 {
        let db = Db::open(&url).await.unwrap();
        assert_eq!(applied(&db).await, every_version());
        let user = sqlx::query("SELECT username, created_at FROM users WHERE id = 'u1'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(user.get::<String, _>("username"), "ann");
        assert_eq!(user.get::<i64, _>("created_at"), 7);
        check_latest_schema(&db).await;
        db.pool.close().await;
    }
}

#[tokio::test]
async fn sqlite_new_database() {
    new_database(false).await;
}

#[tokio::test]
async fn sqlite_old_database_is_adopted() {
    old_database(false, 1).await;
    old_database(false, 2).await;
}

#[tokio::test]
async fn postgres_new_database() {
    new_database(true).await;
}

#[tokio::test]
async fn postgres_old_database_is_adopted() {
    old_database(true, 1).await;
    old_database(true, 2).await;
}

/// Two servers starting at once on a new database both start, with the schema applied once.
async fn concurrent_starts(postgres: bool) {
    let Some(url) = fresh_url("concurrent", postgres).await else {
        return;
    };
    let (a, b) = tokio::join!(Db::open(&url), Db::open(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(applied(&a).await, every_version());
    check_latest_schema(&b).await;
}

#[tokio::test]
async fn sqlite_concurrent_starts() {
    concurrent_starts(false).await;
}

#[tokio::test]
async fn postgres_concurrent_starts() {
    concurrent_starts(true).await;
}
