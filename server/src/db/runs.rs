//! Training runs, their queue and their event log. A run's state only moves through the
//! transitions written here, each one conditional on the state it leaves, so two servers or a
//! late cancel cannot both win.

use glmtune_shared::api::{Run, RunEvent, RunSettings, RunState};
use glmtune_shared::run_event::{RunEventData, StateChange};
use glmtune_shared::sweep::TrialOf;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{last_seq_locked, now, now_ms, Db, DbError, DbResult};

fn corrupt(column: &'static str, message: impl Into<String>) -> DbError {
    DbError::Corrupt {
        table: "runs",
        column,
        message: message.into(),
    }
}

pub(super) fn run_of(row: &AnyRow) -> DbResult<Run> {
    let state: String = row.try_get("state")?;
    let state = RunState::parse(&state).ok_or_else(|| corrupt("state", state.clone()))?;
    let settings: String = row.try_get("settings")?;
    let settings: RunSettings =
        serde_json::from_str(&settings).map_err(|e| corrupt("settings", e.to_string()))?;
    let id: String = row.try_get("id")?;
    let model: String = row.try_get("model")?;
    let fine_tuned_model = (state == RunState::Succeeded).then(|| fine_tuned_name(&model, &id));
    Ok(Run {
        model,
        train_dataset: row.try_get("train_dataset")?,
        validation_dataset: row.try_get("validation_dataset")?,
        settings,
        init_run: row.try_get("init_run")?,
        teacher_run: row.try_get("teacher_run")?,
        state,
        error: row.try_get("error")?,
        owner_id: row.try_get("owner_id")?,
        attempts: row.try_get("attempts")?,
        step: row.try_get("step")?,
        max_steps: row.try_get("max_steps")?,
        trained_tokens: row.try_get("trained_tokens")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        fine_tuned_model,
        sweep: trial_of(row)?,
        worker: row.try_get("worker_id")?,
        id,
    })
}

/// Where a run's training has got to, as its log says.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub step: i64,
    pub max_steps: i64,
    pub trained_tokens: i64,
}

fn trial_of(row: &AnyRow) -> DbResult<Option<TrialOf>> {
    let sweep_id: Option<String> = row.try_get("sweep_id")?;
    let Some(sweep_id) = sweep_id else {
        return Ok(None);
    };
    let trial: Option<i64> = row.try_get("sweep_trial")?;
    Ok(Some(TrialOf {
        sweep_id,
        trial: trial.ok_or_else(|| corrupt("sweep_trial", "a sweep's run without its number"))?,
        pause_at: row.try_get("pause_at")?,
        stopped_at: row.try_get("stopped_at")?,
    }))
}

/// The model name a succeeded run answers to in chat completions.
pub fn fine_tuned_name(model: &str, run_id: &str) -> String {
    format!("ft:{model}:{run_id}")
}

/// The run id inside a fine-tuned model name.
pub fn run_of_fine_tuned(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("ft:")?;
    rest.rsplit_once(':').map(|(_, run)| run)
}

impl Db {
    pub async fn insert_run(&self, run: &Run) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_run_in(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn run(&self, id: &str) -> DbResult<Option<Run>> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_of).transpose()
    }

    pub async fn runs(&self) -> DbResult<Vec<Run>> {
        let rows = sqlx::query("SELECT * FROM runs ORDER BY created_at DESC, id DESC")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_of).collect()
    }

    pub async fn runs_in_state(&self, state: RunState) -> DbResult<Vec<Run>> {
        let rows = sqlx::query("SELECT * FROM runs WHERE state = $1 ORDER BY created_at, id")
            .bind(state.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_of).collect()
    }

    /// Runs that train or validate on a dataset.
    pub async fn runs_using_dataset(&self, dataset: &str) -> DbResult<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM runs WHERE train_dataset = $1 OR validation_dataset = $1",
        )
        .bind(dataset)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    pub async fn count_runs_by_state(&self) -> DbResult<Vec<(RunState, i64)>> {
        let mut counts = Vec::new();
        for state in RunState::ALL {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM runs WHERE state = $1")
                .bind(state.as_str())
                .fetch_one(&self.pool)
                .await?;
            counts.push((state, row.try_get("n")?));
        }
        Ok(counts)
    }

    /// Moves a run from `from` to `to` with an event; false when it was not in `from`.
    pub async fn transition(
        &self,
        id: &str,
        from: RunState,
        to: RunState,
        error: Option<&str>,
        message: &str,
    ) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        let moved = transition_in(&mut tx, id, from, to, error, message, None).await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// Asks the supervisor to stop a running run.
    pub async fn request_cancel(&self, id: &str) -> DbResult<()> {
        sqlx::query("UPDATE runs SET cancel_requested = 1 WHERE id = $1 AND state = 'running'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn cancel_requested(&self, id: &str) -> DbResult<bool> {
        let row = sqlx::query("SELECT cancel_requested FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<i64, _>("cancel_requested")? != 0,
            None => false,
        })
    }

    /// A batch of a run's log turned into events, and the progress they bring, in one
    /// transaction: a server killed between the two would otherwise restart behind events it
    /// has already told, and tell the resumed run's steps twice.
    pub async fn record_log(
        &self,
        run_id: &str,
        events: &[(String, RunEventData)],
        progress: Option<Progress>,
    ) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        for (message, data) in events {
            append_event_in(&mut tx, run_id, message, data).await?;
        }
        if let Some(progress) = progress {
            set_progress_in(&mut tx, run_id, progress).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn append_event(
        &self,
        run_id: &str,
        message: &str,
        data: &RunEventData,
    ) -> DbResult<i64> {
        let mut tx = self.pool.begin().await?;
        let seq = append_event_in(&mut tx, run_id, message, data).await?;
        tx.commit().await?;
        Ok(seq)
    }

    pub async fn events_after(&self, run_id: &str, after: i64) -> DbResult<Vec<RunEvent>> {
        let rows = sqlx::query(
            "SELECT * FROM run_events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT 1000",
        )
        .bind(run_id)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let data: String = row.try_get("data")?;
                Ok(RunEvent {
                    id: row.try_get("seq")?,
                    kind: row.try_get("kind")?,
                    message: row.try_get("message")?,
                    data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }
}

/// Inserts a run (in its state, a sweep's trial with its place) and its first event.
pub(super) async fn insert_run_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    run: &Run,
) -> DbResult<()> {
    let settings =
        serde_json::to_string(&run.settings).map_err(|e| corrupt("settings", e.to_string()))?;
    let sweep = run.sweep.as_ref();
    sqlx::query(
        "INSERT INTO runs (id, model, train_dataset, validation_dataset, settings, init_run, state, error, owner_id, attempts, step, max_steps, trained_tokens, cancel_requested, created_at, sweep_id, sweep_trial, pause_at, stopped_at, teacher_run) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, 0, 0, $9, 0, 0, $10, $11, $12, $13, NULL, $14)",
    )
    .bind(&run.id)
    .bind(&run.model)
    .bind(&run.train_dataset)
    .bind(run.validation_dataset.clone())
    .bind(settings)
    .bind(run.init_run.clone())
    .bind(run.state.as_str())
    .bind(run.owner_id.clone())
    .bind(run.max_steps)
    .bind(run.created_at)
    .bind(sweep.map(|s| s.sweep_id.clone()))
    .bind(sweep.map(|s| s.trial))
    .bind(sweep.and_then(|s| s.pause_at))
    .bind(run.teacher_run.clone())
    .execute(&mut **tx)
    .await?;
    let message = match run.state {
        RunState::Paused => "waiting for its sweep to give it a turn",
        _ => "queued",
    };
    append_event_in(tx, &run.id, message, &state_change(run.state, None)).await?;
    Ok(())
}

/// Moves a run from `from` to `to` with its events, in `tx`; false when it was not in `from`
/// (or, with `lease`, when that lease is not held and unexpired). Leaving `running` ends the
/// run's lease; a run the server itself starts is nobody's lease.
pub(super) async fn transition_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    from: RunState,
    to: RunState,
    error: Option<&str>,
    message: &str,
    lease: Option<&str>,
) -> DbResult<bool> {
    let now = now();
    let (set, mut next) = match to {
        RunState::Running => (
            "state = $1, error = $2, attempts = attempts + 1, started_at = $3, finished_at = NULL, cancel_requested = 0, worker_id = NULL",
            4,
        ),
        RunState::Queued | RunState::Paused => ("state = $1, error = $2, finished_at = NULL, cancel_requested = 0", 3),
        _ => ("state = $1, error = $2, finished_at = $3", 4),
    };
    let mut sql = format!(
        "UPDATE runs SET {set}, lease_id = NULL, lease_expires_ms = NULL, lease_server = NULL WHERE id = ${next} AND state = ${}",
        next + 1
    );
    next += 2;
    if lease.is_some() {
        sql.push_str(&format!(
            " AND lease_id = ${next} AND lease_expires_ms >= ${}",
            next + 1
        ));
    }
    let mut query = sqlx::query(&sql)
        .bind(to.as_str())
        .bind(error.map(str::to_owned));
    if !matches!(to, RunState::Queued | RunState::Paused) {
        query = query.bind(now);
    }
    query = query.bind(id).bind(from.as_str());
    if let Some(lease) = lease {
        query = query.bind(lease).bind(now_ms());
    }
    let moved = query.execute(&mut **tx).await?.rows_affected();
    if moved == 1 {
        // A failure is told twice: why (an `error` event), then the state it moved to.
        let why = error.filter(|_| to == RunState::Failed);
        if let Some(why) = why {
            append_event_in(tx, id, message, &state_change(to, Some(why))).await?;
        }
        let message = if why.is_some() { to.as_str() } else { message };
        append_event_in(tx, id, message, &state_change(to, None)).await?;
    }
    Ok(moved == 1)
}

/// Records where a run's training has got to, in `tx`.
pub(super) async fn set_progress_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    run_id: &str,
    progress: Progress,
) -> DbResult<()> {
    sqlx::query("UPDATE runs SET step = $1, max_steps = $2, trained_tokens = $3 WHERE id = $4")
        .bind(progress.step)
        .bind(progress.max_steps)
        .bind(progress.trained_tokens)
        .bind(run_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The PostgreSQL channel every new run event is announced on (its payload: the run's id).
pub const EVENTS_CHANNEL: &str = "glmtune_run_events";

fn state_change(state: RunState, error: Option<&str>) -> RunEventData {
    RunEventData::State(StateChange {
        state,
        error: error.map(str::to_owned),
    })
}

pub(super) async fn append_event_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    run_id: &str,
    message: &str,
    data: &RunEventData,
) -> DbResult<i64> {
    let seq = last_seq_locked(tx, "runs", "run_events", "run_id", run_id).await? + 1;
    sqlx::query(
        "INSERT INTO run_events (run_id, seq, kind, message, data, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(run_id)
    .bind(seq)
    .bind(data.kind())
    .bind(message)
    .bind(data.to_value().to_string())
    .bind(now())
    .execute(&mut **tx)
    .await?;
    // Servers sharing a PostgreSQL database hear of the event at once (`serve::listen`): a
    // stream on one follows a run another server or a worker reports to. Sent at commit.
    if tx.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(run_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fine_tuned_names_round_trip() {
        let name = fine_tuned_name("tiny", "ftjob-abc");
        assert_eq!(name, "ft:tiny:ftjob-abc");
        assert_eq!(run_of_fine_tuned(&name), Some("ftjob-abc"));
        assert_eq!(run_of_fine_tuned("tiny"), None);
    }
}
