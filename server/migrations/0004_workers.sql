-- Training workers on other machines (`glmtune worker`): who registered them, what they can train.
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    principal TEXT NOT NULL,
    devices TEXT NOT NULL,
    models TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    UNIQUE (principal, name)
);
-- A run's lease: the worker holding it (kept after, as the worker that trained it), until when
-- (Unix milliseconds), on which of its devices. `log_mark` says which rows of the trainer's log
-- became events: step * 32 + a bit per kind of row told at that step.
ALTER TABLE runs ADD COLUMN worker_id TEXT;
ALTER TABLE runs ADD COLUMN lease_id TEXT;
ALTER TABLE runs ADD COLUMN lease_expires_ms BIGINT;
ALTER TABLE runs ADD COLUMN lease_device TEXT;
-- A run a server trains itself: that server (`HOST:PID:NONCE`), its lease renewed while it runs, so
-- that servers sharing the database leave each other's runs alone and requeue a dead one's.
ALTER TABLE runs ADD COLUMN lease_server TEXT;
ALTER TABLE runs ADD COLUMN log_mark BIGINT NOT NULL DEFAULT 0;
-- Lines of the trainer's standard error the lease's worker has had told (its batches count them).
ALTER TABLE runs ADD COLUMN lease_notes BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX runs_by_lease ON runs (lease_id);
