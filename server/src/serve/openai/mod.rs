//! The OpenAI-compatible API under `/v1`: models, chat completions, files and fine-tuning jobs,
//! shaped so that the official `openai` client works unchanged.

mod chat;
mod files;
mod fine_tuning;

use axum::extract::DefaultBodyLimit;

use crate::serve::auth::Need::{Read, Write};
use crate::serve::routes::{route, Route};

/// The OpenAI API's routes, with who may call each.
pub fn routes(max_upload_bytes: u64) -> Vec<Route> {
    let upload_limit =
        DefaultBodyLimit::max(usize::try_from(max_upload_bytes).unwrap_or(usize::MAX));
    vec![
        route!(Read, chat::list_models),
        // Asking for an answer changes nothing another caller sees.
        route!(Read, chat::chat_completions),
        route!(Read, files::list),
        route!(Write, files::upload).map(|handler| handler.layer(upload_limit)),
        route!(Read, files::get_one),
        route!(Write, files::delete),
        route!(Read, files::content),
        route!(Read, fine_tuning::list),
        route!(Write, fine_tuning::create),
        route!(Read, fine_tuning::get_one),
        route!(Read, fine_tuning::events),
        route!(Read, fine_tuning::checkpoints),
        route!(Write, fine_tuning::cancel),
    ]
}
