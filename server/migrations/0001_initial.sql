-- The first schema: users, sessions and API keys, models, datasets, runs and their events, chats.
-- Written in the SQL that SQLite and PostgreSQL both speak (TEXT and BIGINT columns).
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
