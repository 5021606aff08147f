//! The server's sweeps, moved on by one task: each running sweep's trials are runs, made paused
//! with the sweep; the task follows [`plan`] (the halving `glmtune sweep` follows too) from the
//! trials' logs and states, giving paused trials their turn in the queue (at most `parallelism`
//! at once, each to its next rung or its end), stopping those the halving leaves behind, and
//! ending the sweep once every trial has ended. It keeps nothing in memory: after a restart it
//! picks up where the database and the logs say the sweep stands.

use std::sync::atomic::Ordering;
use std::time::Duration;

use glmtune_shared::api::{BestMetric, Run, RunState};
use glmtune_shared::sweep::{Sweep, SweepState, SweepTrial};

use crate::db::DbResult;
use crate::run_folder::read_log;
use crate::serve::AppState;
use crate::sweep::{plan, TrialStatus};

/// How often the task looks when no run event wakes it.
const TICK: Duration = Duration::from_secs(1);

/// Starts the task that moves every running sweep on, until the server stops.
pub fn start(state: AppState) {
    tokio::spawn(async move {
        while !state.supervisor.stopping.load(Ordering::SeqCst) {
            if let Err(error) = tick(&state).await {
                tracing::error!("sweeps: {error}");
            }
            // Run events (a trial paused, ended, failed) are what the sweeps wait for.
            let _ = tokio::time::timeout(TICK, state.supervisor.events.notified()).await;
        }
    });
}

/// One move at a time: the background task and a request's own move (a sweep just created or
/// resumed) each count the trials in the queue before adding to it, and two at once both found
/// room for `parallelism` more (seen: 4 trials queued with a parallelism of 2).
static MOVING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Moves every running sweep on by what its trials did since.
pub async fn tick(state: &AppState) -> DbResult<()> {
    let _moving = MOVING.lock().await;
    for sweep in state.db.sweeps_in_state(SweepState::Running).await? {
        advance(state, &sweep).await?;
    }
    Ok(())
}

/// A trial's status as the halving sees it: its log, and whether it left the sweep.
fn status_of(state: &AppState, run: &Run, metric: BestMetric) -> TrialStatus {
    let mut status =
        TrialStatus::of_log(&read_log(&state.run_layout(&run.id).trainer_log()), metric);
    let stopped_by_sweep = run.sweep.as_ref().is_some_and(|t| t.stopped_at.is_some());
    status.dropped =
        run.state == RunState::Failed || (run.state == RunState::Cancelled && !stopped_by_sweep);
    status
}

async fn advance(state: &AppState, sweep: &Sweep) -> DbResult<()> {
    let request = &sweep.request;
    let trials = state.db.sweep_trials(&sweep.id).await?;
    let settings: Vec<_> = trials.iter().map(|run| run.settings.clone()).collect();
    let status: Vec<_> = trials
        .iter()
        .map(|run| status_of(state, run, request.metric))
        .collect();
    let plan = match plan(&settings, request.halving.as_ref(), request.metric, &status) {
        Ok(plan) => plan,
        Err(error) => {
            let message = format!("sweep {}: {error}", sweep.id);
            tracing::warn!("{message}");
            if state
                .db
                .sweep_transition(
                    &sweep.id,
                    SweepState::Running,
                    SweepState::Failed,
                    Some(&message),
                )
                .await?
            {
                stop_trials(state, &trials).await?;
            }
            return Ok(());
        }
    };
    for (run, stopped) in trials.iter().zip(&plan.stopped) {
        if let Some(rung) = stopped {
            if matches!(run.state, RunState::Paused | RunState::Queued) {
                let rung = i64::try_from(*rung).unwrap_or(i64::MAX);
                state.db.stop_trial(&run.id, run.state, rung).await?;
            }
        }
    }
    let active = trials
        .iter()
        .filter(|run| matches!(run.state, RunState::Queued | RunState::Running))
        .count();
    let mut free = usize::try_from(request.parallelism)
        .unwrap_or(usize::MAX)
        .saturating_sub(active);
    let mut queued = false;
    for &(i, until) in &plan.next {
        if free == 0 {
            break;
        }
        if trials[i].state == RunState::Paused {
            let until = until.map(|step| i64::try_from(step).unwrap_or(i64::MAX));
            if state.db.queue_trial(&trials[i].id, until).await? {
                free -= 1;
                queued = true;
            }
        }
    }
    if queued {
        state.supervisor.wake();
    }
    let ended = trials.iter().all(|run| run.state.is_final());
    if plan.next.is_empty() && ended {
        state
            .db
            .sweep_transition(&sweep.id, SweepState::Running, SweepState::Succeeded, None)
            .await?;
    }
    if queued || ended {
        state.supervisor.events.notify_waiters();
    }
    Ok(())
}

/// Cancels a sweep's trials that have not ended (a cancelled or failed sweep).
pub async fn stop_trials(state: &AppState, trials: &[Run]) -> DbResult<()> {
    for run in trials {
        match run.state {
            RunState::Queued | RunState::Paused => {
                state
                    .db
                    .transition(
                        &run.id,
                        run.state,
                        RunState::Cancelled,
                        None,
                        "its sweep ended",
                    )
                    .await?;
            }
            RunState::Running => state.db.request_cancel(&run.id).await?,
            _ => {}
        }
    }
    state.supervisor.wake();
    Ok(())
}

/// The sweep with its leaderboard: each trial's best evaluation by the sweep's metric (as its
/// run chose its best checkpoint), best first; trials not evaluated yet last, by number.
pub async fn with_leaderboard(state: &AppState, mut sweep: Sweep) -> DbResult<Sweep> {
    let metric = sweep.request.metric;
    let trials = state.db.sweep_trials(&sweep.id).await?;
    let mut board: Vec<SweepTrial> = trials
        .into_iter()
        .map(|run| {
            let status = status_of(state, &run, metric);
            let best = status.best(metric);
            let place = run.sweep.clone();
            SweepTrial {
                trial: place.as_ref().map_or(0, |t| t.trial),
                run_id: run.id,
                run_state: run.state,
                settings: run.settings,
                stopped_at: place.and_then(|t| t.stopped_at),
                metric: best.map(|(_, value)| value),
                metric_step: best.map(|(step, _)| i64::try_from(step).unwrap_or(i64::MAX)),
                steps: i64::try_from(status.steps).unwrap_or(i64::MAX),
                trained_tokens: run.trained_tokens,
            }
        })
        .collect();
    board.sort_by(|a, b| match (a.metric, b.metric) {
        (Some(x), Some(y)) => metric.order(x, y).then(a.trial.cmp(&b.trial)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.trial.cmp(&b.trial),
    });
    sweep.trials = board;
    Ok(sweep)
}
