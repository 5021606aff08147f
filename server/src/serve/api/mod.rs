//! The dashboard's own API under `/api/v1`.

mod account;
pub mod chats;
pub mod datasets;
mod models;
mod presets;
pub mod run_files;
pub mod runs;

use axum::extract::DefaultBodyLimit;

use crate::serve::auth::Need::{Admin, Public, Read, Write};
use crate::serve::events;
use crate::serve::routes::Route;

/// The dashboard API's routes, with who may call each.
pub fn routes(max_upload_bytes: u64) -> Vec<Route> {
    let upload_limit =
        DefaultBodyLimit::max(usize::try_from(max_upload_bytes).unwrap_or(usize::MAX));
    vec![
        Route::get(
            "/api/v1/auth/status",
            "Whether first-run setup is needed",
            Public,
            account::status,
        ),
        Route::post(
            "/api/v1/auth/setup",
            "Create the first admin with the setup token",
            Public,
            account::setup,
        ),
        Route::post(
            "/api/v1/auth/login",
            "Sign in; sets the session cookie",
            Public,
            account::login,
        ),
        // Signing out changes nothing another caller sees.
        Route::post("/api/v1/auth/logout", "Sign out", Read, account::logout),
        Route::get("/api/v1/auth/me", "The caller", Read, account::me),
        Route::get("/api/v1/users", "List users", Admin, account::list_users),
        Route::post(
            "/api/v1/users",
            "Create a user",
            Admin,
            account::create_user,
        ),
        Route::delete(
            "/api/v1/users/{id}",
            "Delete a user",
            Admin,
            account::delete_user,
        ),
        Route::get("/api/v1/keys", "List API keys", Read, account::list_keys),
        Route::post(
            "/api/v1/keys",
            "Create an API key (the secret is shown once)",
            Write,
            account::create_key,
        ),
        Route::delete(
            "/api/v1/keys/{id}",
            "Revoke an API key",
            Write,
            account::revoke_key,
        ),
        Route::get("/api/v1/models", "List base models", Read, models::list),
        Route::post(
            "/api/v1/models",
            "Register a checkpoint folder on the server",
            Admin,
            models::register,
        ),
        Route::get(
            "/api/v1/models/{name}/files",
            "The files of a model's folder",
            Read,
            models::files,
        ),
        Route::get(
            "/api/v1/models/{name}/files/{file}",
            "One file of a model's folder (range requests)",
            Read,
            models::file,
        ),
        Route::get("/api/v1/datasets", "List datasets", Read, datasets::list),
        Route::post(
            "/api/v1/datasets",
            "Upload a dataset (the body is the file)",
            Write,
            datasets::upload,
        )
        .map(|handler| handler.layer(upload_limit)),
        Route::get(
            "/api/v1/datasets/{id}",
            "A dataset with statistics and preview",
            Read,
            datasets::get_one,
        ),
        Route::delete(
            "/api/v1/datasets/{id}",
            "Delete a dataset no run uses",
            Write,
            datasets::delete,
        ),
        Route::get(
            "/api/v1/datasets/{id}/content",
            "The stored file",
            Read,
            datasets::content,
        ),
        Route::post(
            "/api/v1/datasets/{id}/split",
            "Split into train and validation datasets",
            Write,
            datasets::split,
        ),
        Route::get(
            "/api/v1/presets",
            "Run presets and domain templates",
            Read,
            presets::list,
        ),
        Route::get("/api/v1/runs", "List runs", Read, runs::list),
        Route::post("/api/v1/runs", "Queue a training run", Write, runs::create),
        Route::get("/api/v1/runs/{id}", "A run", Read, runs::get_one),
        Route::post(
            "/api/v1/runs/{id}/cancel",
            "Cancel a queued or running run",
            Write,
            runs::cancel,
        ),
        Route::post(
            "/api/v1/runs/{id}/resume",
            "Resume a failed or cancelled run from its last checkpoint",
            Write,
            runs::resume,
        ),
        Route::get(
            "/api/v1/runs/{id}/logs",
            "The trainer's output",
            Read,
            run_files::logs,
        ),
        Route::get(
            "/api/v1/runs/{id}/events",
            "Progress as Server-Sent Events (Last-Event-ID replays)",
            Read,
            events::stream,
        ),
        Route::get(
            "/api/v1/runs/{id}/events.json",
            "Progress events as JSON",
            Read,
            events::list,
        ),
        Route::get(
            "/api/v1/runs/{id}/checkpoints",
            "Saved checkpoints",
            Read,
            run_files::checkpoints,
        ),
        Route::get(
            "/api/v1/runs/{id}/evaluation",
            "BLEU/ROUGE and sample predictions",
            Read,
            run_files::evaluation,
        ),
        Route::get(
            "/api/v1/runs/{id}/adapter",
            "The adapter as a zip in the official layout",
            Read,
            run_files::adapter,
        ),
        Route::get(
            "/api/v1/runs/{id}/adapter/{file}",
            "One file of the adapter",
            Read,
            run_files::adapter_file,
        ),
        Route::get("/api/v1/chats", "The caller's chats", Read, chats::list),
        Route::post(
            "/api/v1/chats",
            "Start a chat with a model or a run's adapter",
            Write,
            chats::create,
        ),
        Route::get(
            "/api/v1/chats/{id}",
            "A chat with its messages",
            Read,
            chats::get_one,
        ),
        Route::delete("/api/v1/chats/{id}", "Delete a chat", Write, chats::delete),
        Route::post(
            "/api/v1/chats/{id}/messages",
            "Ask; the answer is stored (streamed with stream: true)",
            Write,
            chats::post_message,
        ),
    ]
}
