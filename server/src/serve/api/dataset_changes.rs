//! A version's new records beside the parent records they were made from: what the dashboard's
//! diff view shows for augmented and taught versions alike. Each new record names its parent in
//! its `provenance` ([`RecordOrigin`]); the parent's records are numbered as they were read when
//! the version was made (usable records, in file order).

use axum::extract::{Path, Query, State};
use axum::Json;
use glmtune_shared::api::{RecordOrigin, VersionChange, VersionChanges};
use serde::Deserialize;

use super::datasets::{find, preview_record, validate};
use crate::serve::{ApiError, AppState};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ChangesQuery {
    /// The most changes returned (default 50, at most 1000).
    limit: Option<u64>,
}

/// A line of a version's file: only its provenance is read here (the records are read by the
/// dataset's reader).
#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    provenance: Option<RecordOrigin>,
}

#[utoipa::path(
    get,
    path = "/api/v1/datasets/{id}/changes",
    summary = "A version's new records, each beside the parent record it was made from",
    params(ChangesQuery),
    responses((status = 200, body = VersionChanges))
)]
pub async fn changes(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ChangesQuery>,
) -> Result<Json<VersionChanges>, ApiError> {
    let limit = query.limit.unwrap_or(50).min(1000) as usize;
    let version = find(&state, &id).await?;
    let parent = match &version.parent_id {
        Some(parent) => Some(find(&state, parent).await?),
        None => None,
    };
    let blobs = state.blobs.clone();
    let changes = tokio::task::spawn_blocking(move || {
        let parent_records = match &parent {
            Some(parent) => {
                validate(
                    &blobs.path(&parent.sha256),
                    &parent.name,
                    &parent.read_options,
                    None,
                )?
                .records
            }
            None => Vec::new(),
        };
        let mut changes = changes_of(
            &blobs.path(&version.sha256),
            &version.name,
            &version.read_options,
            &parent_records,
            limit,
        )?;
        changes.parent_id = parent.map(|p| p.id);
        Ok::<_, ApiError>(changes)
    })
    .await
    .map_err(|e| ApiError::invalid(e.to_string()))??;
    Ok(Json(changes))
}

/// The new records of the version file at `path` (read with `options`), each beside its record
/// of `parent_records`; the first `limit` of them (blocking).
pub(crate) fn changes_of(
    path: &std::path::Path,
    name: &str,
    options: &glmtune_shared::api::ReadOptions,
    parent_records: &[glmtune_engine::data::Record],
    limit: usize,
) -> Result<VersionChanges, ApiError> {
    let records = validate(path, name, options, None)?.records;
    let text = std::fs::read_to_string(path)?;
    let origins: Vec<Option<RecordOrigin>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Line>(l).map_or(None, |l| l.provenance))
        .collect();
    // A version is written by this server, one record a line: its lines are its records.
    if origins.len() != records.len() {
        return Err(ApiError::invalid(format!(
            "{name}: not a version of one record a line ({} lines, {} records)",
            origins.len(),
            records.len()
        )));
    }
    let mut out = VersionChanges {
        parent_id: None,
        total: 0,
        changes: Vec::new(),
    };
    for (n, (record, origin)) in records.iter().zip(origins).enumerate() {
        let Some(origin) = origin else { continue };
        out.total += 1;
        if out.changes.len() < limit {
            // A document's passage is no record of the parent's.
            let before = origin
                .document
                .is_none()
                .then(|| parent_records.get((origin.parent as usize).checked_sub(1)?))
                .flatten()
                .map(preview_record);
            out.changes.push(VersionChange {
                record: n as u64 + 1,
                origin,
                before,
                after: preview_record(record),
            });
        }
    }
    Ok(out)
}
