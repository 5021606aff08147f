//! `/v1/fine_tuning/jobs`: a job is a run. OpenAI's hyper-parameters map onto P-Tuning v2's
//! (`n_epochs` → epochs, `batch_size` → per-device batch, `learning_rate_multiplier` × 2e-2), and
//! P-Tuning v2 settings are accepted by their flag names (`pre_seq_len`, `learning_rate`, ...).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use glmtune_shared::api::{CreateRun, Run, RunSettings, RunState};
use glmtune_shared::openai::{
    CreateFineTuningJob, FineTuningError, FineTuningJob, FineTuningJobCheckpoint,
    FineTuningJobEvent, Page,
};
use serde::Deserialize;

use crate::serve::api::run_files::list_checkpoints;
use crate::serve::api::runs::{self, cancel_run, create_run};
use crate::serve::auth::Caller;
use crate::serve::{ApiError, AppState};

/// The official learning rate, which `learning_rate_multiplier` scales.
const BASE_LEARNING_RATE: f64 = 2e-2;

fn job_of(run: Run) -> FineTuningJob {
    let mut hyperparameters = serde_json::to_value(&run.settings).unwrap_or_default();
    let s = &run.settings;
    if let Some(object) = hyperparameters.as_object_mut() {
        object.insert(
            "n_epochs".into(),
            s.num_train_epochs
                .map_or(serde_json::json!("auto"), |e| serde_json::json!(e)),
        );
        object.insert(
            "batch_size".into(),
            serde_json::json!(
                s.per_device_train_batch_size.unwrap_or(1)
                    * s.gradient_accumulation_steps.unwrap_or(1)
            ),
        );
        object.insert(
            "learning_rate_multiplier".into(),
            serde_json::json!(s.learning_rate.unwrap_or(BASE_LEARNING_RATE) / BASE_LEARNING_RATE),
        );
    }
    FineTuningJob {
        object: "fine_tuning.job".into(),
        created_at: run.created_at,
        finished_at: run.finished_at.filter(|_| run.state.is_final()),
        model: run.model,
        fine_tuned_model: run.fine_tuned_model,
        organization_id: "glmtune".into(),
        status: run.state.as_str().into(),
        training_file: run.train_dataset,
        validation_file: run.validation_dataset,
        hyperparameters,
        result_files: Vec::new(),
        trained_tokens: (run.state == RunState::Succeeded).then_some(run.trained_tokens),
        error: run
            .error
            .filter(|_| run.state == RunState::Failed)
            .map(|message| FineTuningError {
                code: "training_failed".into(),
                message,
                param: None,
            }),
        seed: s.seed.unwrap_or(42),
        id: run.id,
    }
}

/// OpenAI's hyper-parameters and ours, as run settings over the `quick` preset's schedule
/// unless `preset` says otherwise.
fn settings_of(request: &CreateFineTuningJob) -> Result<(Option<String>, RunSettings), ApiError> {
    let mut ours = serde_json::Map::new();
    let mut preset = None;
    for (key, value) in &request.hyperparameters {
        let auto = value.as_str() == Some("auto");
        match key.as_str() {
            _ if auto => {}
            "preset" => preset = value.as_str().map(str::to_owned),
            "n_epochs" => {
                ours.insert("num_train_epochs".into(), value.clone());
            }
            "batch_size" => {
                ours.insert("per_device_train_batch_size".into(), value.clone());
                ours.insert("gradient_accumulation_steps".into(), serde_json::json!(1));
            }
            "learning_rate_multiplier" => {
                let multiplier = value.as_f64().ok_or_else(|| {
                    ApiError::invalid("hyperparameters.learning_rate_multiplier: must be a number")
                })?;
                ours.insert(
                    "learning_rate".into(),
                    serde_json::json!(multiplier * BASE_LEARNING_RATE),
                );
            }
            _ => {
                ours.insert(key.clone(), value.clone());
            }
        }
    }
    if let Some(seed) = request.seed {
        ours.insert("seed".into(), serde_json::json!(seed));
    }
    let settings: RunSettings = serde_json::from_value(serde_json::Value::Object(ours))
        .map_err(|e| ApiError::invalid(format!("hyperparameters: {e}")))?;
    Ok((preset, settings))
}

#[utoipa::path(
    post,
    path = "/v1/fine_tuning/jobs",
    summary = "OpenAI: create a fine-tuning job",
    request_body = CreateFineTuningJob,
    responses((status = 200, body = FineTuningJob))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateFineTuningJob>, JsonRejection>,
) -> Result<Json<FineTuningJob>, ApiError> {
    let Json(request) = body?;
    let (preset, settings) = settings_of(&request)?;
    let run = create_run(
        &state,
        &caller,
        CreateRun {
            model: request.model,
            train_dataset: request.training_file,
            validation_dataset: request.validation_file,
            preset: Some(preset.unwrap_or_else(|| "quick".into())),
            settings,
            init_run: None,
            teacher_run: None,
        },
    )
    .await?;
    Ok(Json(job_of(run)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Items after the one with this id.
    after: Option<String>,
    /// How many items at most (20 by default, 1 to 1000).
    limit: Option<usize>,
}

/// Newest first, from after the item with id `after`.
fn page<T>(items: Vec<T>, paging: &Paging, id: impl Fn(&T) -> &str) -> Page<T> {
    let start = paging
        .after
        .as_deref()
        .and_then(|after| items.iter().position(|i| id(i) == after).map(|p| p + 1))
        .unwrap_or(0);
    let limit = paging.limit.unwrap_or(20).clamp(1, 1000);
    let has_more = items.len() > start + limit;
    let data = items.into_iter().skip(start).take(limit).collect();
    Page {
        object: "list".into(),
        data,
        has_more,
    }
}

#[utoipa::path(
    get,
    path = "/v1/fine_tuning/jobs",
    summary = "OpenAI: list fine-tuning jobs",
    params(Paging),
    responses((status = 200, body = Page<FineTuningJob>))
)]
pub async fn list(
    State(state): State<AppState>,
    Query(paging): Query<Paging>,
) -> Result<Json<Page<FineTuningJob>>, ApiError> {
    let jobs = state.db.runs().await?.into_iter().map(job_of).collect();
    Ok(Json(page(jobs, &paging, |j: &FineTuningJob| &j.id)))
}

#[utoipa::path(
    get,
    path = "/v1/fine_tuning/jobs/{id}",
    summary = "OpenAI: a fine-tuning job",
    responses((status = 200, body = FineTuningJob))
)]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<FineTuningJob>, ApiError> {
    Ok(Json(job_of(runs::find(&state, &id).await?)))
}

#[utoipa::path(
    get,
    path = "/v1/fine_tuning/jobs/{id}/events",
    summary = "OpenAI: a job's events",
    params(Paging),
    responses((status = 200, body = Page<FineTuningJobEvent>))
)]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Json<Page<FineTuningJobEvent>>, ApiError> {
    runs::find(&state, &id).await?;
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let batch = state.db.events_after(&id, after).await?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        all.extend(batch);
    }
    let events: Vec<FineTuningJobEvent> = all
        .into_iter()
        .rev()
        .map(|event| FineTuningJobEvent {
            id: format!("ftevent-{id}-{}", event.id),
            object: "fine_tuning.job.event".into(),
            created_at: event.created_at,
            level: match event.kind.as_str() {
                "error" => "error",
                "warning" | "stall" => "warn",
                _ => "info",
            }
            .into(),
            message: event.message,
            kind: if event.kind == "metrics" {
                "metrics"
            } else {
                "message"
            }
            .into(),
            data: event.data,
        })
        .collect();
    Ok(Json(page(events, &paging, |e: &FineTuningJobEvent| &e.id)))
}

#[utoipa::path(
    get,
    path = "/v1/fine_tuning/jobs/{id}/checkpoints",
    summary = "OpenAI: a job's checkpoints",
    params(Paging),
    responses((status = 200, body = Page<FineTuningJobCheckpoint>))
)]
pub async fn checkpoints(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Json<Page<FineTuningJobCheckpoint>>, ApiError> {
    let run = runs::find(&state, &id).await?;
    let checkpoints: Vec<FineTuningJobCheckpoint> = list_checkpoints(&state, &id)
        .into_iter()
        .rev()
        .map(|c| FineTuningJobCheckpoint {
            id: format!("ftckpt-{id}-{}", c.step),
            object: "fine_tuning.job.checkpoint".into(),
            created_at: c.created_at,
            fine_tuned_model_checkpoint: format!("ft:{}:{id}:ckpt-step-{}", run.model, c.step),
            fine_tuning_job_id: id.clone(),
            step_number: c.step,
            metrics: serde_json::json!({ "step": c.step }),
        })
        .collect();
    Ok(Json(page(
        checkpoints,
        &paging,
        |c: &FineTuningJobCheckpoint| &c.id,
    )))
}

#[utoipa::path(
    post,
    path = "/v1/fine_tuning/jobs/{id}/cancel",
    summary = "OpenAI: cancel a job",
    responses((status = 200, body = FineTuningJob))
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<FineTuningJob>, ApiError> {
    Ok(Json(job_of(cancel_run(&state, &caller, &id).await?)))
}
