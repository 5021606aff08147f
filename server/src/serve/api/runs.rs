//! Training runs: create (hyper-parameters over a preset), list, cancel, resume. What a run
//! leaves is served by `run_files`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_shared::api::{CreateRun, List, Run, RunSettings, RunState};

use super::presets::resolve_settings;
use crate::db::{new_id, now};
use crate::serve::auth::Caller;
use crate::serve::{ApiError, AppState};

/// The most a run may ask for, from the server's `--run-max-*` flags: a member must not be able to
/// tie up the machine's memory or its training queue for good. They bind admins too; an admin who
/// needs more restarts the server with larger bounds.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    pub pre_seq_len: u64,
    /// Per-device batch size × gradient accumulation steps.
    pub batch: u64,
    /// `max_source_length` and `max_target_length`, each.
    pub length: u64,
    pub steps: u64,
    pub epochs: f64,
}

impl RunLimits {
    /// Checks a run's resolved settings, naming the setting and the flag that bounds it.
    pub fn check(&self, s: &RunSettings) -> Result<(), ApiError> {
        let over = |setting: &str, value: String, bound: String, flag: &str| {
            ApiError::invalid(format!(
                "settings.{setting}: {value} is more than this server allows ({bound}, its --{flag})"
            ))
        };
        let counts = [
            (
                "pre_seq_len",
                s.pre_seq_len,
                self.pre_seq_len,
                "run-max-pre-seq-len",
            ),
            ("max_steps", s.max_steps, self.steps, "run-max-steps"),
            // One forward holds this many sequences' activations.
            (
                "forward_batch_size",
                s.forward_batch_size,
                self.batch,
                "run-max-batch",
            ),
            (
                "max_source_length",
                s.max_source_length,
                self.length,
                "run-max-length",
            ),
            (
                "max_target_length",
                s.max_target_length,
                self.length,
                "run-max-length",
            ),
        ];
        for (setting, value, bound, flag) in counts {
            if let Some(value) = value.filter(|&v| v > bound) {
                return Err(over(setting, value.to_string(), bound.to_string(), flag));
            }
        }
        let batch = s.per_device_train_batch_size.unwrap_or(1);
        let accumulation = s.gradient_accumulation_steps.unwrap_or(1);
        let product = batch.saturating_mul(accumulation);
        if product > self.batch {
            return Err(over(
                "per_device_train_batch_size × gradient_accumulation_steps",
                format!("{batch} × {accumulation} = {product}"),
                self.batch.to_string(),
                "run-max-batch",
            ));
        }
        // Epochs count only where they decide the length (no max_steps), as in training.
        if s.max_steps.is_none() {
            if let Some(epochs) = s.num_train_epochs.filter(|&e| e > self.epochs) {
                return Err(over(
                    "num_train_epochs",
                    epochs.to_string(),
                    self.epochs.to_string(),
                    "run-max-epochs",
                ));
            }
        }
        Ok(())
    }
}

/// Checks and queues a run (shared with `/v1/fine_tuning/jobs`).
pub async fn create_run(
    state: &AppState,
    caller: &Caller,
    request: CreateRun,
) -> Result<Run, ApiError> {
    // Held from the datasets' checks to the run's insertion, so that a dataset deleted meanwhile
    // is not named by the run (see `datasets::delete`).
    let _references = state.blobs.references().await;
    let run = prepare_run(state, caller, request).await?;
    state.db.insert_run(&run).await?;
    state.supervisor.wake();
    Ok(run)
}

/// Checks a run's request and makes the queued run it asks for (not stored yet). The caller
/// holds the blob references lock until the run is stored.
pub async fn prepare_run(
    state: &AppState,
    caller: &Caller,
    request: CreateRun,
) -> Result<Run, ApiError> {
    if state.db.model(&request.model).await?.is_none() {
        return Err(ApiError::invalid(format!(
            "model: {:?} is not a registered base model",
            request.model
        )));
    }
    let train = state
        .db
        .dataset(&request.train_dataset)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "train_dataset: {} does not exist",
                request.train_dataset
            ))
        })?;
    if let Some(id) = &request.validation_dataset {
        let validation =
            state.db.dataset(id).await?.ok_or_else(|| {
                ApiError::invalid(format!("validation_dataset: {id} does not exist"))
            })?;
        if validation.read_options != train.read_options {
            return Err(ApiError::invalid(format!(
                "validation_dataset: {id} is in format {} but the training data is in format {}; runs read both alike",
                validation.format, train.format
            )));
        }
    }
    if let Some(init) = &request.init_run {
        let run = state.db.run(init).await?;
        if !run.is_some_and(|r| r.state == RunState::Succeeded && r.model == request.model) {
            return Err(ApiError::invalid(format!(
                "init_run: {init} is not a succeeded run on model {}",
                request.model
            )));
        }
    }
    if let Some(teacher) = &request.teacher_run {
        let run = state.db.run(teacher).await?;
        if !run.is_some_and(|r| r.state == RunState::Succeeded && r.model == request.model) {
            return Err(ApiError::invalid(format!(
                "teacher_run: {teacher} is not a succeeded run on model {}",
                request.model
            )));
        }
    }
    let mut settings = resolve_settings(request.preset.as_deref(), &request.settings)?;
    state.settings.run_limits.check(&settings)?;
    if request.validation_dataset.is_none() {
        for (field, asked) in [
            (
                "early_stopping_patience",
                settings.early_stopping_patience.is_some(),
            ),
            (
                "load_best_model_at_end",
                settings.load_best_model_at_end == Some(true),
            ),
            ("forgetting_guard", settings.forgetting_guard == Some(true)),
        ] {
            if asked {
                return Err(ApiError::invalid(format!(
                    "settings.{field}: needs a validation_dataset (it acts at its evaluations)"
                )));
            }
        }
    }
    if request.validation_dataset.is_some() && settings.eval_samples.is_none() {
        settings.eval_samples = Some(20);
    }
    let run = Run {
        id: new_id("ftjob-"),
        model: request.model,
        train_dataset: request.train_dataset,
        validation_dataset: request.validation_dataset,
        // Bounded by --run-max-steps; never wrapped into a negative count either way.
        max_steps: settings
            .max_steps
            .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
        settings,
        init_run: request.init_run,
        teacher_run: request.teacher_run,
        state: RunState::Queued,
        error: None,
        owner_id: Some(caller.principal.clone()),
        attempts: 0,
        step: 0,
        trained_tokens: 0,
        created_at: now(),
        started_at: None,
        finished_at: None,
        fine_tuned_model: None,
        sweep: None,
        worker: None,
    };
    Ok(run)
}

#[utoipa::path(
    post,
    path = "/api/v1/runs",
    summary = "Queue a training run",
    request_body = CreateRun,
    responses((status = 201, body = Run))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateRun>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let run = create_run(&state, &caller, request).await?;
    Ok((StatusCode::CREATED, Json(run)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/runs",
    summary = "List runs",
    responses((status = 200, body = List<Run>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<List<Run>>, ApiError> {
    Ok(Json(List {
        data: state.db.runs().await?,
    }))
}

pub async fn find(state: &AppState, id: &str) -> Result<Run, ApiError> {
    state
        .db
        .run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id} does not exist")))
}

#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    summary = "A run",
    responses((status = 200, body = Run))
)]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Run>, ApiError> {
    Ok(Json(find(&state, &id).await?))
}

/// Cancels a queued or running run (shared with `/v1/fine_tuning/jobs/{id}/cancel`).
pub async fn cancel_run(state: &AppState, caller: &Caller, id: &str) -> Result<Run, ApiError> {
    let run = find(state, id).await?;
    caller.check_owner(run.owner_id.as_deref(), &format!("run {id}"))?;
    match run.state {
        RunState::Queued | RunState::Paused => {
            state
                .db
                .transition(id, run.state, RunState::Cancelled, None, "cancelled")
                .await?;
        }
        RunState::Running => {
            state.db.request_cancel(id).await?;
            state.supervisor.wake();
            // The supervisor stops the child within a tick or two.
            for _ in 0..100 {
                if find(state, id).await?.state != RunState::Running {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        final_state => {
            return Err(ApiError::conflict(format!(
                "run {id} is already {}",
                final_state.as_str()
            )))
        }
    }
    state.supervisor.events.notify_waiters();
    find(state, id).await
}

#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/cancel",
    summary = "Cancel a queued, running or paused run",
    responses((status = 200, body = Run))
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Run>, ApiError> {
    Ok(Json(cancel_run(&state, &caller, &id).await?))
}

/// Puts a failed or cancelled run back in the queue; it continues from its last checkpoint.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/resume",
    summary = "Resume a failed or cancelled run from its last checkpoint",
    responses((status = 200, body = Run))
)]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Run>, ApiError> {
    let run = find(&state, &id).await?;
    caller.check_owner(run.owner_id.as_deref(), &format!("run {id}"))?;
    if let Some(trial) = &run.sweep {
        return Err(ApiError::conflict(format!(
            "run {id} is trial {} of sweep {}: its sweep decides when it trains (resume the sweep)",
            trial.trial, trial.sweep_id
        )));
    }
    if !matches!(run.state, RunState::Failed | RunState::Cancelled) {
        return Err(ApiError::conflict(format!(
            "run {id} is {}; only failed or cancelled runs resume",
            run.state.as_str()
        )));
    }
    state
        .db
        .transition(
            &id,
            run.state,
            RunState::Queued,
            None,
            "resumed: queued again",
        )
        .await?;
    state.supervisor.wake();
    Ok(Json(find(&state, &id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RunLimits = RunLimits {
        pre_seq_len: 512,
        batch: 256,
        length: 2048,
        steps: 100_000,
        epochs: 100.0,
    };

    fn refusal(settings: RunSettings) -> String {
        LIMITS
            .check(&settings)
            .expect_err("over the bounds")
            .to_string()
    }

    #[test]
    fn run_bounds_name_the_setting_and_the_flag() {
        let message = refusal(RunSettings {
            pre_seq_len: Some(1_000_000),
            ..RunSettings::default()
        });
        assert!(
            message.contains("settings.pre_seq_len: 1000000"),
            "{message}"
        );
        assert!(
            message.contains("512, its --run-max-pre-seq-len"),
            "{message}"
        );
        let message = refusal(RunSettings {
            per_device_train_batch_size: Some(64),
            gradient_accumulation_steps: Some(u64::MAX),
            ..RunSettings::default()
        });
        assert!(message.contains("--run-max-batch"), "{message}");
        let message = refusal(RunSettings {
            max_target_length: Some(4096),
            ..RunSettings::default()
        });
        assert!(message.contains("settings.max_target_length"), "{message}");
        let message = refusal(RunSettings {
            num_train_epochs: Some(1e9),
            ..RunSettings::default()
        });
        assert!(message.contains("--run-max-epochs"), "{message}");
        assert!(refusal(RunSettings {
            max_steps: Some(100_001),
            ..RunSettings::default()
        })
        .contains("--run-max-steps"));
        // Every preset fits the defaults.
        for preset in super::super::presets::presets() {
            let settings = resolve_settings(Some(&preset.name), &RunSettings::default()).unwrap();
            LIMITS.check(&settings).unwrap();
        }
    }
}
