//! The one error shape every endpoint answers with.

use serde::{Deserialize, Serialize};

/// `{"error": {"code", "message", "details"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, machine-readable: `not_found`, `invalid_request`, `internal`, …
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// The `details` of an upload refused for bad records: each bad record (the first ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvalidRecords {
    pub invalid_records: Vec<RecordIssue>,
}

/// One problem with one record of an upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordIssue {
    /// `line 3`, `element 2 (line 7)`, …
    pub location: String,
    /// The line in the file, when known.
    #[serde(default)]
    pub line: Option<u64>,
    /// A path into the record (`history[1][0]`), when a field is at fault.
    #[serde(default)]
    pub field: Option<String>,
    pub message: String,
}
