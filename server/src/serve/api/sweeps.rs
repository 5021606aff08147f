//! Hyperparameter sweeps: create one (its trials are runs, checked as any run is), list them with
//! their leaderboards, cancel, resume, and promote a trial to answer as the sweep's chat model.
//! The task in `serve::sweeps` moves them on.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_shared::api::{CreateRun, List, RunState};
use glmtune_shared::sweep::{CreateSweep, Promote, Sweep, SweepState, TrialOf};
use glmtune_shared::train_job::defaults;

use super::presets::resolve_settings;
use super::runs::prepare_run;
use crate::db::runs::fine_tuned_name;
use crate::db::{new_id, now};
use crate::serve::auth::Caller;
use crate::serve::sweeps::{stop_trials, tick, with_leaderboard};
use crate::serve::{ApiError, AppState};
use crate::sweep::trial_settings;

#[utoipa::path(
    post,
    path = "/api/v1/sweeps",
    summary = "Start a hyperparameter sweep: one run a trial",
    request_body = CreateSweep,
    responses((status = 201, body = Sweep))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateSweep>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    request.check().map_err(ApiError::invalid)?;
    let base = resolve_settings(request.preset.as_deref(), &request.settings)?;
    let id = new_id("sweep-");
    let created_at = now();
    // Held from the datasets' checks to the trials' insertion (see `runs::create_run`).
    let _references = state.blobs.references().await;
    let mut trials = Vec::new();
    for (i, settings) in trial_settings(&base, &request.space, &request.search)
        .into_iter()
        .enumerate()
    {
        let number = i as i64 + 1;
        let in_trial = |e: ApiError| e.context(&format!("trial {number}"));
        request
            .metric
            .check_scored(&settings)
            .map_err(|e| in_trial(ApiError::invalid(e)))?;
        if let Some(halving) = &request.halving {
            let first = halving.rungs.iter().min().copied().unwrap_or(0);
            let eval_steps = settings.eval_steps.unwrap_or(defaults::EVAL_STEPS);
            if settings.max_steps.unwrap_or(u64::MAX) > first && eval_steps > first {
                return Err(in_trial(ApiError::invalid(format!(
                    "halving.rungs: the first rung (step {first}) comes before the first \
                     evaluation (settings.eval_steps {eval_steps}); trials are ranked by it"
                ))));
            }
        }
        let mut run = prepare_run(
            &state,
            &caller,
            CreateRun {
                model: request.model.clone(),
                train_dataset: request.train_dataset.clone(),
                validation_dataset: Some(request.validation_dataset.clone()),
                preset: None,
                settings,
                init_run: None,
                teacher_run: None,
            },
        )
        .await
        .map_err(in_trial)?;
        run.state = RunState::Paused;
        run.created_at = created_at;
        run.sweep = Some(TrialOf {
            sweep_id: id.clone(),
            trial: number,
            pause_at: None,
            stopped_at: None,
        });
        trials.push(run);
    }
    let sweep = Sweep {
        chat_model: fine_tuned_name(&request.model, &id),
        id,
        request,
        state: SweepState::Running,
        error: None,
        owner_id: Some(caller.principal.clone()),
        promoted_run: None,
        created_at,
        finished_at: None,
        trials: Vec::new(),
    };
    state.db.insert_sweep(&sweep, &trials).await?;
    drop(_references);
    tick(&state).await?;
    let sweep = with_leaderboard(&state, find(&state, &sweep.id).await?).await?;
    Ok((StatusCode::CREATED, Json(sweep)).into_response())
}

async fn find(state: &AppState, id: &str) -> Result<Sweep, ApiError> {
    state
        .db
        .sweep(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("sweep {id} does not exist")))
}

/// A sweep the caller may change.
async fn owned(state: &AppState, caller: &Caller, id: &str) -> Result<Sweep, ApiError> {
    let sweep = find(state, id).await?;
    caller.check_owner(sweep.owner_id.as_deref(), &format!("sweep {id}"))?;
    Ok(sweep)
}

/// The sweep as it stands now, with its leaderboard.
async fn answer(state: &AppState, id: &str) -> Result<Json<Sweep>, ApiError> {
    Ok(Json(with_leaderboard(state, find(state, id).await?).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/sweeps",
    summary = "List sweeps, each with its leaderboard",
    responses((status = 200, body = List<Sweep>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<List<Sweep>>, ApiError> {
    let mut data = Vec::new();
    for sweep in state.db.sweeps().await? {
        data.push(with_leaderboard(&state, sweep).await?);
    }
    Ok(Json(List { data }))
}

#[utoipa::path(
    get,
    path = "/api/v1/sweeps/{id}",
    summary = "A sweep and its leaderboard (best first)",
    responses((status = 200, body = Sweep))
)]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Sweep>, ApiError> {
    answer(&state, &id).await
}

#[utoipa::path(
    post,
    path = "/api/v1/sweeps/{id}/cancel",
    summary = "Cancel a running sweep and its trials that have not ended",
    responses((status = 200, body = Sweep))
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Sweep>, ApiError> {
    let sweep = owned(&state, &caller, &id).await?;
    if !state
        .db
        .sweep_transition(&id, SweepState::Running, SweepState::Cancelled, None)
        .await?
    {
        return Err(ApiError::conflict(format!(
            "sweep {id} is already {}",
            sweep.state.as_str()
        )));
    }
    stop_trials(&state, &state.db.sweep_trials(&id).await?).await?;
    state.supervisor.events.notify_waiters();
    answer(&state, &id).await
}

#[utoipa::path(
    post,
    path = "/api/v1/sweeps/{id}/resume",
    summary = "Resume a cancelled or failed sweep: its unfinished trials go on from their checkpoints",
    responses((status = 200, body = Sweep))
)]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Sweep>, ApiError> {
    let sweep = owned(&state, &caller, &id).await?;
    if !matches!(sweep.state, SweepState::Cancelled | SweepState::Failed) {
        return Err(ApiError::conflict(format!(
            "sweep {id} is {}; only cancelled or failed sweeps resume",
            sweep.state.as_str()
        )));
    }
    // Trials that ended without finishing (cancelled with the sweep, or failed) wait for their
    // turn again; those the halving stopped stay stopped.
    for run in state.db.sweep_trials(&id).await? {
        let stopped = run.sweep.as_ref().is_some_and(|t| t.stopped_at.is_some());
        if matches!(run.state, RunState::Cancelled | RunState::Failed) && !stopped {
            state
                .db
                .transition(
                    &run.id,
                    run.state,
                    RunState::Paused,
                    None,
                    "its sweep resumed: waiting for its turn",
                )
                .await?;
        }
    }
    state
        .db
        .sweep_transition(&id, sweep.state, SweepState::Running, None)
        .await?;
    tick(&state).await?;
    answer(&state, &id).await
}

#[utoipa::path(
    post,
    path = "/api/v1/sweeps/{id}/promote",
    summary = "Make a trial's adapter (by default the best's) the one the sweep's chat model answers with",
    request_body = Promote,
    responses((status = 200, body = Sweep))
)]
pub async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<Promote>, JsonRejection>,
) -> Result<Json<Sweep>, ApiError> {
    let Json(request) = body?;
    let sweep = owned(&state, &caller, &id).await?;
    let sweep = with_leaderboard(&state, sweep).await?;
    let chosen = match request.trial {
        Some(number) => sweep
            .trials
            .iter()
            .find(|t| t.trial == number)
            .ok_or_else(|| ApiError::invalid(format!("trial: sweep {id} has no trial {number}")))?,
        // The leaderboard's best with an adapter.
        None => sweep
            .trials
            .iter()
            .find(|t| t.run_state == RunState::Succeeded && t.metric.is_some())
            .ok_or_else(|| {
                ApiError::conflict(format!("sweep {id} has no finished trial to promote yet"))
            })?,
    };
    if chosen.run_state != RunState::Succeeded {
        return Err(ApiError::conflict(format!(
            "trial {} is {}: only a trial that trained to its end has an adapter to promote",
            chosen.trial,
            chosen.run_state.as_str()
        )));
    }
    state.db.promote(&id, &chosen.run_id).await?;
    answer(&state, &id).await
}
