//! The OpenAI-compatible API under `/v1`: models, chat completions, files and fine-tuning jobs,
//! shaped so that the official `openai` client works unchanged.

mod chat;
mod files;
mod fine_tuning;

use axum::extract::DefaultBodyLimit;

use crate::serve::auth::Need::{Read, Write};
use crate::serve::routes::Route;

/// The OpenAI API's routes, with who may call each.
pub fn routes(max_upload_bytes: u64) -> Vec<Route> {
    let upload_limit =
        DefaultBodyLimit::max(usize::try_from(max_upload_bytes).unwrap_or(usize::MAX));
    vec![
        Route::get(
            "/v1/models",
            "OpenAI: models and fine-tuned models",
            Read,
            chat::list_models,
        ),
        // Asking for an answer changes nothing another caller sees.
        Route::post(
            "/v1/chat/completions",
            "OpenAI: chat completion (streaming or not)",
            Read,
            chat::chat_completions,
        ),
        Route::get("/v1/files", "OpenAI: list files", Read, files::list),
        Route::post(
            "/v1/files",
            "OpenAI: upload a fine-tuning file (multipart)",
            Write,
            files::upload,
        )
        .map(|handler| handler.layer(upload_limit)),
        Route::get("/v1/files/{id}", "OpenAI: a file", Read, files::get_one),
        Route::delete(
            "/v1/files/{id}",
            "OpenAI: delete a file",
            Write,
            files::delete,
        ),
        Route::get(
            "/v1/files/{id}/content",
            "OpenAI: a file's bytes",
            Read,
            files::content,
        ),
        Route::get(
            "/v1/fine_tuning/jobs",
            "OpenAI: list fine-tuning jobs",
            Read,
            fine_tuning::list,
        ),
        Route::post(
            "/v1/fine_tuning/jobs",
            "OpenAI: create a fine-tuning job",
            Write,
            fine_tuning::create,
        ),
        Route::get(
            "/v1/fine_tuning/jobs/{id}",
            "OpenAI: a fine-tuning job",
            Read,
            fine_tuning::get_one,
        ),
        Route::get(
            "/v1/fine_tuning/jobs/{id}/events",
            "OpenAI: a job's events",
            Read,
            fine_tuning::events,
        ),
        Route::get(
            "/v1/fine_tuning/jobs/{id}/checkpoints",
            "OpenAI: a job's checkpoints",
            Read,
            fine_tuning::checkpoints,
        ),
        Route::post(
            "/v1/fine_tuning/jobs/{id}/cancel",
            "OpenAI: cancel a job",
            Write,
            fine_tuning::cancel,
        ),
    ]
}
