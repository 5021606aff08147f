//! Hyperparameter sweeps: the request and its state; each trial is a run of `runs` naming its
//! sweep, made with the sweep (paused until its turn). As for runs, every change of state is
//! conditional on the state it leaves.

use glmtune_shared::api::{Run, RunState};
use glmtune_shared::sweep::{CreateSweep, Sweep, SweepState};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::runs::{fine_tuned_name, insert_run_in, run_of};
use super::{now, Db, DbError, DbResult};

fn corrupt(column: &'static str, message: impl Into<String>) -> DbError {
    DbError::Corrupt {
        table: "sweeps",
        column,
        message: message.into(),
    }
}

/// A sweep as stored: its trials are read apart ([`Db::sweep_trials`]).
fn sweep_of(row: &AnyRow) -> DbResult<Sweep> {
    let state: String = row.try_get("state")?;
    let state = SweepState::parse(&state).ok_or_else(|| corrupt("state", state.clone()))?;
    let request: String = row.try_get("request")?;
    let request: CreateSweep =
        serde_json::from_str(&request).map_err(|e| corrupt("request", e.to_string()))?;
    let id: String = row.try_get("id")?;
    Ok(Sweep {
        chat_model: fine_tuned_name(&request.model, &id),
        id,
        request,
        state,
        error: row.try_get("error")?,
        owner_id: row.try_get("owner_id")?,
        promoted_run: row.try_get("promoted_run")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        trials: Vec::new(),
    })
}

impl Db {
    /// Stores a sweep and its trial runs at once.
    pub async fn insert_sweep(&self, sweep: &Sweep, trials: &[Run]) -> DbResult<()> {
        let request =
            serde_json::to_string(&sweep.request).map_err(|e| corrupt("request", e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sweeps (id, request, state, error, owner_id, promoted_run, created_at, finished_at) \
             VALUES ($1, $2, $3, NULL, $4, NULL, $5, NULL)",
        )
        .bind(&sweep.id)
        .bind(request)
        .bind(sweep.state.as_str())
        .bind(sweep.owner_id.clone())
        .bind(sweep.created_at)
        .execute(&mut *tx)
        .await?;
        for run in trials {
            insert_run_in(&mut tx, run).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn sweep(&self, id: &str) -> DbResult<Option<Sweep>> {
        let row = sqlx::query("SELECT * FROM sweeps WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(sweep_of).transpose()
    }

    /// Every sweep, newest first.
    pub async fn sweeps(&self) -> DbResult<Vec<Sweep>> {
        let rows = sqlx::query("SELECT * FROM sweeps ORDER BY created_at DESC, id DESC")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(sweep_of).collect()
    }

    pub async fn sweeps_in_state(&self, state: SweepState) -> DbResult<Vec<Sweep>> {
        let rows = sqlx::query("SELECT * FROM sweeps WHERE state = $1 ORDER BY created_at, id")
            .bind(state.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(sweep_of).collect()
    }

    /// A sweep's trial runs, by their number.
    pub async fn sweep_trials(&self, id: &str) -> DbResult<Vec<Run>> {
        let rows = sqlx::query("SELECT * FROM runs WHERE sweep_id = $1 ORDER BY sweep_trial")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_of).collect()
    }

    /// Moves a sweep from `from` to `to`; false when it was not in `from`.
    pub async fn sweep_transition(
        &self,
        id: &str,
        from: SweepState,
        to: SweepState,
        error: Option<&str>,
    ) -> DbResult<bool> {
        let finished_at = (to != SweepState::Running).then(now);
        let moved = sqlx::query(
            "UPDATE sweeps SET state = $1, error = $2, finished_at = $3 WHERE id = $4 AND state = $5",
        )
        .bind(to.as_str())
        .bind(error.map(str::to_owned))
        .bind(finished_at)
        .bind(id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(moved == 1)
    }

    /// Makes `run` the trial that answers as the sweep's chat model.
    pub async fn promote(&self, id: &str, run: &str) -> DbResult<()> {
        sqlx::query("UPDATE sweeps SET promoted_run = $1 WHERE id = $2")
            .bind(run)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Gives a paused trial its turn: queued, to pause again at `pause_at` (`None`: its end).
    pub async fn queue_trial(&self, run: &str, pause_at: Option<i64>) -> DbResult<bool> {
        sqlx::query("UPDATE runs SET pause_at = $1 WHERE id = $2 AND state = 'paused'")
            .bind(pause_at)
            .bind(run)
            .execute(&self.pool)
            .await?;
        let message = match pause_at {
            Some(step) => format!("the sweep gives it a turn: training to step {step}"),
            None => "the sweep gives it a turn: training to its end".to_owned(),
        };
        self.transition(run, RunState::Paused, RunState::Queued, None, &message)
            .await
    }

    /// Stops a trial that successive halving left behind at `rung` (it keeps its checkpoint).
    pub async fn stop_trial(&self, run: &str, from: RunState, rung: i64) -> DbResult<bool> {
        sqlx::query("UPDATE runs SET stopped_at = $1 WHERE id = $2 AND state = $3")
            .bind(rung)
            .bind(run)
            .bind(from.as_str())
            .execute(&self.pool)
            .await?;
        self.transition(
            run,
            from,
            RunState::Cancelled,
            None,
            &format!("stopped by the sweep's successive halving at step {rung}"),
        )
        .await
    }
}
