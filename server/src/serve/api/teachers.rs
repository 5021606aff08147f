//! Teachers (register once; the key sealed, never shown again) and teaching jobs: a dataset's new
//! version made by a teacher, run by `serve::teach_jobs`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_shared::api::List;
use glmtune_shared::teach::{
    CreateTeacher, TeachJob, TeachJobState, TeachKeep, TeachRequest, TeachTask, Teacher,
};

use super::datasets::find as find_dataset;
use crate::db::{new_id, now};
use crate::serve::auth::Caller;
use crate::serve::{secrets, teach_jobs, ApiError, AppState};

#[utoipa::path(
    post,
    path = "/api/v1/teachers",
    summary = "Register a teacher behind an OpenAI-compatible endpoint (its key is never shown again)",
    request_body = CreateTeacher,
    responses((status = 201, body = Teacher))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateTeacher>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    if request.name.trim().is_empty() || request.model.trim().is_empty() {
        return Err(ApiError::invalid("name, model: must not be empty"));
    }
    if !(request.base_url.starts_with("http://") || request.base_url.starts_with("https://")) {
        return Err(ApiError::invalid(
            "base_url: give an http:// or https:// URL up to /v1",
        ));
    }
    if request.key.is_some() && request.key_env.is_some() {
        return Err(ApiError::invalid("key, key_env: give one or the other"));
    }
    if !(1..=64).contains(&request.concurrency) {
        return Err(ApiError::invalid("concurrency: give 1 to 64"));
    }
    let sealed = match &request.key {
        Some(key) => Some(secrets::seal(&state.settings.data_dir, key)?),
        None => None,
    };
    let teacher = Teacher {
        id: new_id("teacher-"),
        name: request.name,
        base_url: request.base_url.trim_end_matches('/').to_owned(),
        model: request.model,
        has_key: sealed.is_some(),
        key_env: request.key_env,
        concurrency: request.concurrency,
        requests_per_minute: request.requests_per_minute,
        owner_id: Some(caller.principal.clone()),
        created_at: now(),
    };
    state.db.insert_teacher(&teacher, sealed.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(teacher)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/teachers",
    summary = "List teachers (never their keys)",
    responses((status = 200, body = List<Teacher>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<List<Teacher>>, ApiError> {
    Ok(Json(List {
        data: state.db.teachers().await?,
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/teachers/{id}",
    summary = "Forget a teacher and its key",
    responses((status = 204))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (teacher, _) = state
        .db
        .teacher(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("teacher {id} does not exist")))?;
    caller.check_owner(teacher.owner_id.as_deref(), &format!("teacher {id}"))?;
    state.db.delete_teacher(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/v1/datasets/{id}/teach",
    summary = "Queue a teaching job: a new version of the dataset made by a teacher",
    request_body = TeachRequest,
    responses((status = 202, body = TeachJob))
)]
pub async fn teach(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<TeachRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    find_dataset(&state, &id).await?;
    if state.db.teacher(&request.teacher).await?.is_none() {
        return Err(ApiError::invalid(format!(
            "teacher: {} is not a registered teacher",
            request.teacher
        )));
    }
    if !(1..=16).contains(&request.samples) || !(1..=8192).contains(&request.max_tokens) {
        return Err(ApiError::invalid("samples: 1 to 16; max_tokens: 1 to 8192"));
    }
    if request
        .template
        .as_ref()
        .is_some_and(|t| !t.contains("{prompt}"))
    {
        return Err(ApiError::invalid("template: it must hold {prompt}"));
    }
    if request.keep != TeachKeep::All && (request.task != TeachTask::Answer || request.samples < 2)
    {
        return Err(ApiError::invalid(
            "keep: picks one of several samples' answers of the task answer",
        ));
    }
    if !(0.0..=1.0).contains(&request.threshold) {
        return Err(ApiError::invalid("threshold: a number from 0 to 1"));
    }
    check_documents(&request)?;
    check_templates(&request)?;
    if let Some(validation) = &request.validation_dataset {
        find_dataset(&state, validation)
            .await
            .map_err(|e| e.context("validation_dataset"))?;
    }
    let job = TeachJob {
        id: new_id("teach-"),
        dataset_id: id,
        request,
        state: TeachJobState::Queued,
        error: None,
        made_dataset: None,
        written: 0,
        report: None,
        preview: None,
        owner_id: Some(caller.principal.clone()),
        created_at: now(),
        finished_at: None,
    };
    state.db.insert_teach_job(&job).await?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/teach-jobs/{id}",
    summary = "A teaching job: where it stands, records written, the dataset it made",
    responses((status = 200, body = TeachJob))
)]
pub async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TeachJob>, ApiError> {
    let mut job = state
        .db
        .teach_job(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("teaching job {id} does not exist")))?;
    job.written = teach_jobs::written(&state.settings.data_dir, &job.id);
    job.report = teach_jobs::report(&state.settings.data_dir, &job.id);
    if job.request.preview.is_some() && job.state == TeachJobState::Succeeded {
        job.preview = Some(teach_jobs::preview(&state, &job).await?);
    }
    Ok(Json(job))
}

/// The second question's and the judge's templates go with the tasks that ask them, each with
/// its placeholder; a preview asks 1 to 100 records.
fn check_templates(request: &TeachRequest) -> Result<(), ApiError> {
    match (&request.then_template, request.task.then_template()) {
        (Some(_), None) => {
            return Err(ApiError::invalid(
                "then_template: only backtranslate and questions ask a second question",
            ))
        }
        (Some(then), Some(_)) if !then.contains("{first}") => {
            return Err(ApiError::invalid(
                "then_template: it must hold {first}, where the first answer goes",
            ))
        }
        _ => {}
    }
    if let Some(judge) = &request.judge_template {
        if request.keep != TeachKeep::Judge || !judge.contains("{answers}") {
            return Err(ApiError::invalid(
                "judge_template: goes with keep judge, and must hold {answers}",
            ));
        }
    }
    if request.preview.is_some_and(|n| !(1..=100).contains(&n)) {
        return Err(ApiError::invalid("preview: 1 to 100 records"));
    }
    Ok(())
}

/// The most a job's documents may hold together.
const MAX_DOCUMENT_BYTES: usize = 8 << 20;

/// `questions` asks about documents, and only it takes them; each a `.md` or `.txt` file name
/// (no folder: they are written into the job's own).
fn check_documents(request: &TeachRequest) -> Result<(), ApiError> {
    let questions = request.task == TeachTask::Questions;
    if questions == request.documents.is_empty() {
        return Err(ApiError::invalid(if questions {
            "documents: questions needs at least one document"
        } else {
            "documents: only the task questions takes documents"
        }));
    }
    let mut names = std::collections::HashSet::new();
    for (i, document) in request.documents.iter().enumerate() {
        let name = &document.name;
        let plain = !name.starts_with('.')
            && !name.contains(['/', '\\'])
            && (name.ends_with(".md") || name.ends_with(".txt"));
        if !plain || !names.insert(name) {
            return Err(ApiError::invalid(format!(
                "documents[{i}].name: {name:?} must be a file name ending .md or .txt, once"
            )));
        }
        if document.text.trim().is_empty() {
            return Err(ApiError::invalid(format!(
                "documents[{i}].text: {name} is empty"
            )));
        }
    }
    if request
        .documents
        .iter()
        .map(|d| d.text.len())
        .sum::<usize>()
        > MAX_DOCUMENT_BYTES
    {
        return Err(ApiError::invalid(format!(
            "documents: more than {} MiB together",
            MAX_DOCUMENT_BYTES >> 20
        )));
    }
    Ok(())
}
