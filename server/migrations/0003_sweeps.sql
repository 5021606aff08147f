-- Hyperparameter sweeps: the request, its state and the trial chats use; each trial is a run.
-- Dataset versions: the parent and how a dataset was made from it.
ALTER TABLE datasets ADD COLUMN parent_id TEXT;
ALTER TABLE datasets ADD COLUMN derivation TEXT;
CREATE TABLE sweeps (
    id TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    owner_id TEXT,
    promoted_run TEXT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
-- A trial run: its sweep and number, the step it pauses at, the rung the halving stopped it at.
ALTER TABLE runs ADD COLUMN sweep_id TEXT;
ALTER TABLE runs ADD COLUMN sweep_trial BIGINT;
ALTER TABLE runs ADD COLUMN pause_at BIGINT;
ALTER TABLE runs ADD COLUMN stopped_at BIGINT;
CREATE INDEX runs_by_sweep ON runs (sweep_id, sweep_trial);
-- A distillation run's teacher: a succeeded run whose adapter (on the same base) it learns from.
ALTER TABLE runs ADD COLUMN teacher_run TEXT;
-- Teachers behind OpenAI-compatible endpoints (the key sealed with the data folder's secret, or
-- the name of an environment variable), and the jobs that make a dataset's version with one.
CREATE TABLE teachers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    base_url TEXT NOT NULL,
    model TEXT NOT NULL,
    sealed_key TEXT,
    key_env TEXT,
    concurrency BIGINT NOT NULL,
    requests_per_minute BIGINT,
    owner_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE teach_jobs (
    id TEXT PRIMARY KEY,
    dataset_id TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    made_dataset TEXT,
    owner_id TEXT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
