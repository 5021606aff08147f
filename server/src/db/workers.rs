//! Training workers and their leases. The queue is the `runs` table: a lease takes the oldest
//! queued run a worker can serve (with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so that servers
//! sharing the database hand each run to one worker), and every later call about it is
//! conditional on the lease still being held and unexpired, so a run never trains twice at once
//! and a late worker changes nothing.

use glmtune_shared::api::{Run, RunState};
use glmtune_shared::run_event::RunEventData;
use glmtune_shared::worker::{Worker, WorkerDevice, WorkerModel, WorkerRegistration};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::runs::{append_event_in, run_of, set_progress_in, transition_in, Progress};
use super::{new_id, now, now_ms, Db, DbError, DbResult};

fn corrupt(column: &'static str, message: impl Into<String>) -> DbError {
    DbError::Corrupt {
        table: "workers",
        column,
        message: message.into(),
    }
}

fn json_column<T: serde::de::DeserializeOwned>(row: &AnyRow, column: &'static str) -> DbResult<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| corrupt(column, e.to_string()))
}

/// A registered worker and the key that registered it.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    pub worker: Worker,
    pub principal: String,
}

fn worker_of(row: &AnyRow) -> DbResult<WorkerRow> {
    let devices: Vec<WorkerDevice> = json_column(row, "devices")?;
    let models: Vec<WorkerModel> = json_column(row, "models")?;
    Ok(WorkerRow {
        worker: Worker {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            devices,
            models,
            registered_at: row.try_get("registered_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
            runs: Vec::new(),
        },
        principal: row.try_get("principal")?,
    })
}

/// A run under lease, as a call about the lease finds it.
#[derive(Debug, Clone)]
pub struct Leased {
    pub run: Run,
    pub lease_id: String,
    pub expires_ms: i64,
    pub device: String,
    /// Which rows of the trainer's log became events (see `serve::log_events::LogMark`).
    pub log_mark: i64,
    /// Lines of the trainer's standard error told in this lease.
    pub notes: i64,
}

fn leased_of(row: &AnyRow) -> DbResult<Leased> {
    Ok(Leased {
        run: run_of(row)?,
        lease_id: row.try_get("lease_id")?,
        expires_ms: row.try_get("lease_expires_ms")?,
        device: row.try_get("lease_device")?,
        log_mark: row.try_get("log_mark")?,
        notes: row.try_get("lease_notes")?,
    })
}

/// A lease that ran out, and the run it held (now queued again).
#[derive(Debug, Clone)]
pub struct Expired {
    pub run_id: String,
    /// `worker NAME` or `the server HOST:PID:NONCE`.
    pub holder: String,
}

impl Db {
    /// Registers a worker, or updates the one this key registered under the same name.
    pub async fn register_worker(
        &self,
        principal: &str,
        registration: &WorkerRegistration,
    ) -> DbResult<WorkerRow> {
        let devices = serde_json::to_string(&registration.devices)
            .map_err(|e| corrupt("devices", e.to_string()))?;
        let models = serde_json::to_string(&registration.models)
            .map_err(|e| corrupt("models", e.to_string()))?;
        let now = now();
        sqlx::query(
            "INSERT INTO workers (id, name, principal, devices, models, registered_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (principal, name) DO UPDATE SET devices = $4, models = $5, last_seen_at = $6",
        )
        .bind(new_id("worker-"))
        .bind(&registration.name)
        .bind(principal)
        .bind(devices)
        .bind(models)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT * FROM workers WHERE principal = $1 AND name = $2")
            .bind(principal)
            .bind(&registration.name)
            .fetch_one(&self.pool)
            .await?;
        worker_of(&row)
    }

    pub async fn worker(&self, id: &str) -> DbResult<Option<WorkerRow>> {
        let row = sqlx::query("SELECT * FROM workers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(worker_of).transpose()
    }

    /// Every worker, each with the runs it holds leases on now.
    pub async fn workers(&self) -> DbResult<Vec<Worker>> {
        let rows = sqlx::query("SELECT * FROM workers ORDER BY name, id")
            .fetch_all(&self.pool)
            .await?;
        let leases = sqlx::query(
            "SELECT id, worker_id FROM runs WHERE lease_id IS NOT NULL ORDER BY started_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut workers = Vec::new();
        for row in &rows {
            let mut worker = worker_of(row)?.worker;
            for lease in &leases {
                if lease.try_get::<Option<String>, _>("worker_id")?.as_deref()
                    == Some(worker.id.as_str())
                {
                    worker.runs.push(lease.try_get("id")?);
                }
            }
            workers.push(worker);
        }
        Ok(workers)
    }

    /// Leases the oldest queued run on one of `models` to `worker` for `ttl_ms`. Runs that
    /// start from or learn from another run's adapter stay with the server, which has those.
    pub async fn lease_run(
        &self,
        worker: &Worker,
        device: &str,
        models: &[String],
        ttl_ms: i64,
    ) -> DbResult<Option<Leased>> {
        if models.is_empty() {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        let places: Vec<String> = (0..models.len()).map(|i| format!("${}", i + 1)).collect();
        let mut sql = format!(
            "SELECT id FROM runs WHERE state = 'queued' AND init_run IS NULL AND teacher_run IS NULL \
             AND model IN ({}) ORDER BY created_at, id LIMIT 1",
            places.join(", ")
        );
        if self.postgres {
            sql.push_str(" FOR UPDATE SKIP LOCKED");
        }
        let mut query = sqlx::query(&sql);
        for model in models {
            query = query.bind(model);
        }
        let Some(row) = query.fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let run_id: String = row.try_get("id")?;
        let message = format!("running on worker {} ({device})", worker.name);
        if !transition_in(
            &mut tx,
            &run_id,
            RunState::Queued,
            RunState::Running,
            None,
            &message,
            None,
        )
        .await?
        {
            return Ok(None);
        }
        let lease_id = new_id("lease-");
        sqlx::query(
            "UPDATE runs SET worker_id = $1, lease_id = $2, lease_expires_ms = $3, lease_device = $4, lease_notes = 0 WHERE id = $5",
        )
        .bind(&worker.id)
        .bind(&lease_id)
        .bind(now_ms() + ttl_ms)
        .bind(device)
        .bind(&run_id)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(&run_id)
            .fetch_one(&mut *tx)
            .await?;
        let leased = leased_of(&row)?;
        tx.commit().await?;
        Ok(Some(leased))
    }

    /// The run `lease` holds, while it is held and unexpired.
    pub async fn leased(&self, lease: &str) -> DbResult<Option<Leased>> {
        let row = sqlx::query(
            "SELECT * FROM runs WHERE lease_id = $1 AND worker_id IS NOT NULL AND state = 'running' AND lease_expires_ms >= $2",
        )
        .bind(lease)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(leased_of).transpose()
    }

    /// Moves the lease's expiry on; `None` when it is no longer held.
    pub async fn heartbeat(&self, lease: &str, ttl_ms: i64) -> DbResult<Option<i64>> {
        let now = now_ms();
        let expires = now + ttl_ms;
        let moved = sqlx::query(
            "UPDATE runs SET lease_expires_ms = $1 WHERE lease_id = $2 AND state = 'running' AND lease_expires_ms >= $3",
        )
        .bind(expires)
        .bind(lease)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok((moved == 1).then_some(expires))
    }

    /// A worker was heard from.
    pub async fn worker_seen(&self, id: &str) -> DbResult<()> {
        sqlx::query("UPDATE workers SET last_seen_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A batch of the leased run's log turned into events, with the progress it brings and the
    /// new mark, in one transaction; false (nothing written) when the lease is no longer held or
    /// another call moved the mark first.
    pub async fn record_leased_log(
        &self,
        leased: &Leased,
        events: &[(String, RunEventData)],
        progress: Option<Progress>,
        mark: i64,
        notes: i64,
    ) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE runs SET log_mark = $1, lease_notes = $2 WHERE lease_id = $3 AND state = 'running' \
             AND lease_expires_ms >= $4 AND log_mark = $5 AND lease_notes = $6",
        )
        .bind(mark)
        .bind(notes)
        .bind(&leased.lease_id)
        .bind(now_ms())
        .bind(leased.log_mark)
        .bind(leased.notes)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            return Ok(false);
        }
        let id = &leased.run.id;
        for (message, data) in events {
            append_event_in(&mut tx, id, message, data).await?;
        }
        if let Some(progress) = progress {
            set_progress_in(&mut tx, id, progress).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Sets the mark a run's log is told from (a lease of a run the server trained before).
    pub async fn set_log_mark(&self, run_id: &str, mark: i64) -> DbResult<()> {
        sqlx::query("UPDATE runs SET log_mark = $1 WHERE id = $2 AND log_mark < $1")
            .bind(mark)
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a lease with the run's outcome (after `events`, its evaluation's scores): once, by
    /// its holder, before it expires; nothing is written when it is refused.
    pub async fn complete_lease(
        &self,
        lease: &str,
        run_id: &str,
        to: RunState,
        error: Option<&str>,
        message: &str,
        events: &[(String, RunEventData)],
    ) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        for (event_message, data) in events {
            append_event_in(&mut tx, run_id, event_message, data).await?;
        }
        let moved = transition_in(
            &mut tx,
            run_id,
            RunState::Running,
            to,
            error,
            message,
            Some(lease),
        )
        .await?;
        // Refused (the lease is not held): the events go with the rolled-back transaction.
        if moved {
            tx.commit().await?;
        }
        Ok(moved)
    }

    /// Puts the runs of leases that ran out back in the queue, to resume from their last
    /// uploaded checkpoint; and ends the leases of runs cancelled while leased.
    pub async fn expire_leases(&self) -> DbResult<Vec<Expired>> {
        let rows = sqlx::query(
            "SELECT runs.id AS run_id, runs.lease_id AS lease_id, runs.cancel_requested AS cancel, \
             runs.lease_server AS server, workers.name AS worker \
             FROM runs LEFT JOIN workers ON workers.id = runs.worker_id \
             WHERE runs.state = 'running' AND runs.lease_id IS NOT NULL \
             AND (runs.lease_expires_ms < $1 OR (runs.cancel_requested = 1 AND runs.worker_id IS NOT NULL))",
        )
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        let mut expired = Vec::new();
        for row in rows {
            let run_id: String = row.try_get("run_id")?;
            let lease: String = row.try_get("lease_id")?;
            let worker: Option<String> = row.try_get("worker")?;
            let server: Option<String> = row.try_get("server")?;
            let cancel = row.try_get::<i64, _>("cancel")? != 0 && worker.is_some();
            // Who held it: a worker by its name, or a server (one that died or lost the database).
            let holder = match (&worker, &server) {
                (Some(worker), _) => format!("worker {worker}"),
                (None, Some(server)) => format!("the server {server}"),
                (None, None) => "its holder".to_owned(),
            };
            let (to, message) = if cancel {
                (RunState::Cancelled, "cancelled".to_owned())
            } else {
                (
                    RunState::Queued,
                    format!(
                        "{holder} stopped heartbeating: the run resumes from its last checkpoint"
                    ),
                )
            };
            let mut tx = self.pool.begin().await?;
            // Conditional on the same lease: a heartbeat that came in since keeps it.
            let mut sql = "SELECT id FROM runs WHERE id = $1 AND lease_id = $2 AND state = 'running' AND (lease_expires_ms < $3 OR (cancel_requested = 1 AND worker_id IS NOT NULL))".to_owned();
            if self.postgres {
                sql.push_str(" FOR UPDATE");
            }
            let held = sqlx::query(&sql)
                .bind(&run_id)
                .bind(&lease)
                .bind(now_ms())
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if held
                && transition_in(
                    &mut tx,
                    &run_id,
                    RunState::Running,
                    to,
                    None,
                    &message,
                    None,
                )
                .await?
            {
                expired.push(Expired { run_id, holder });
            }
            tx.commit().await?;
        }
        Ok(expired)
    }
}
