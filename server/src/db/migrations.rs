//! Schema versions, applied in order at start inside one transaction each. Append, never edit.

use super::{now, Db, DbResult};

const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    role TEXT NOT NULL,
    user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    adapter TEXT,
    summary TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE datasets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    format TEXT NOT NULL,
    read_options TEXT NOT NULL,
    records BIGINT NOT NULL,
    skipped_empty BIGINT NOT NULL,
    purpose TEXT NOT NULL,
    owner_id TEXT,
    stats TEXT,
    preview TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    train_dataset TEXT NOT NULL,
    validation_dataset TEXT,
    settings TEXT NOT NULL,
    init_run TEXT,
    state TEXT NOT NULL,
    error TEXT,
    owner_id TEXT,
    attempts BIGINT NOT NULL,
    step BIGINT NOT NULL,
    max_steps BIGINT,
    trained_tokens BIGINT NOT NULL,
    cancel_requested BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX runs_by_state ON runs (state, created_at);
CREATE TABLE run_events (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE chats (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    run_id TEXT,
    title TEXT NOT NULL,
    owner_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE chat_messages (
    chat_id TEXT NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (chat_id, seq)
);
"#,
    ),
    (
        2,
        r#"
ALTER TABLE chats ADD COLUMN system TEXT;
"#,
    ),
];

pub async fn run(db: &Db) -> DbResult<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&db.pool)
    .await?;
    for (version, sql) in MIGRATIONS {
        let mut tx = db.pool.begin().await?;
        // Two servers starting at once: the loser's insert conflicts and its transaction rolls
        // back, so a migration is applied once.
        let claimed = sqlx::query(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING",
        )
        .bind(*version)
        .bind(now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            tx.rollback().await?;
            continue;
        }
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}
