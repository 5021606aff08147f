//! The dashboard's own API under `/api/v1`.

mod account;
pub mod chats;
mod dataset_augment;
pub(crate) mod dataset_changes;
mod dataset_split;
pub mod datasets;
mod leases;
mod models;
mod presets;
pub mod run_files;
pub mod runs;
mod sweeps;
mod teachers;
mod workers;

use axum::extract::DefaultBodyLimit;

use crate::serve::auth::Need::{Admin, Public, Read, Worker, Write};
use crate::serve::events;
use crate::serve::routes::{route, Route};

/// The dashboard API's routes, with who may call each.
pub fn routes(max_upload_bytes: u64) -> Vec<Route> {
    let upload_limit =
        DefaultBodyLimit::max(usize::try_from(max_upload_bytes).unwrap_or(usize::MAX));
    vec![
        route!(Public, account::status),
        route!(Public, account::setup),
        route!(Public, account::login),
        // Signing out changes nothing another caller sees.
        route!(Read, account::logout),
        route!(Read, account::me),
        route!(Admin, account::list_users),
        route!(Admin, account::create_user),
        route!(Admin, account::delete_user),
        route!(Read, account::list_keys),
        route!(Write, account::create_key),
        route!(Write, account::revoke_key),
        route!(Read, models::list),
        route!(Admin, models::register),
        route!(Read, models::files),
        route!(Read, models::file),
        route!(Read, datasets::list),
        route!(Write, datasets::upload).map(|handler| handler.layer(upload_limit)),
        route!(Read, datasets::get_one),
        route!(Write, datasets::delete),
        route!(Read, datasets::content),
        route!(Read, dataset_changes::changes),
        route!(Write, dataset_split::split),
        route!(Write, dataset_augment::augment),
        route!(Write, dataset_augment::preview),
        route!(Write, teachers::teach),
        route!(Read, teachers::get_job),
        route!(Read, teachers::list),
        route!(Write, teachers::create),
        route!(Write, teachers::delete),
        route!(Read, presets::list),
        route!(Read, runs::list),
        route!(Write, runs::create),
        route!(Read, runs::get_one),
        route!(Write, runs::cancel),
        route!(Write, runs::resume),
        route!(Read, sweeps::list),
        route!(Write, sweeps::create),
        route!(Read, sweeps::get_one),
        route!(Write, sweeps::cancel),
        route!(Write, sweeps::resume),
        route!(Write, sweeps::promote),
        route!(Read, run_files::logs),
        route!(Read, events::stream),
        route!(Read, events::list),
        route!(Read, run_files::checkpoints),
        route!(Read, run_files::evaluation),
        route!(Read, run_files::adapter),
        route!(Read, run_files::adapter_file),
        route!(Read, chats::list),
        route!(Write, chats::create),
        route!(Read, chats::get_one),
        route!(Write, chats::delete),
        route!(Write, chats::post_message),
        route!(Read, workers::list),
        route!(Worker, workers::register),
        route!(Worker, workers::lease),
        route!(Worker, leases::heartbeat),
        route!(Worker, leases::log),
        route!(Worker, leases::dataset),
        route!(Worker, leases::file),
        route!(Worker, leases::upload_state),
        route!(Worker, leases::upload)
            .map(|handler| handler.layer(DefaultBodyLimit::max(leases::CHUNK_LIMIT))),
        route!(Worker, leases::commit),
        route!(Worker, leases::complete),
    ]
}
