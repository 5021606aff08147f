//! Teachers behind OpenAI-compatible endpoints, kept by the server (`/api/v1/teachers`), and the
//! jobs that make a dataset's new version with one (`POST /api/v1/datasets/{id}/teach`): the
//! server runs `glmtune data teach` for them, which resumes after a restart.

use serde::{Deserialize, Serialize};

/// A teacher to register. The key is stored encrypted (or named by an environment variable the
/// server reads) and never shown again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTeacher {
    pub name: String,
    /// Up to `/v1` (`https://api.example.com/v1`, or this server's own).
    pub base_url: String,
    pub model: String,
    #[serde(default)]
    pub key: Option<String>,
    /// An environment variable of the server that holds the key, instead of `key`.
    #[serde(default)]
    pub key_env: Option<String>,
    /// Questions in flight at once.
    #[serde(default = "four")]
    pub concurrency: u64,
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
}

fn four() -> u64 {
    4
}

/// A registered teacher, as every answer shows it: never its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Teacher {
    pub id: String,
    pub name: String,
    pub base_url: String,
    pub model: String,
    /// Whether a key is stored (encrypted).
    pub has_key: bool,
    pub key_env: Option<String>,
    pub concurrency: u64,
    pub requests_per_minute: Option<u64>,
    pub owner_id: Option<String>,
    pub created_at: i64,
}

/// What a teacher makes of a dataset (`glmtune data teach --task`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TeachTask {
    Answer,
    Paraphrase,
    Backtranslate,
    /// The answers rewritten in the domain's style.
    Rewrite,
}

impl TeachTask {
    pub fn as_str(self) -> &'static str {
        match self {
            TeachTask::Answer => "answer",
            TeachTask::Paraphrase => "paraphrase",
            TeachTask::Backtranslate => "backtranslate",
            TeachTask::Rewrite => "rewrite",
        }
    }
}

/// `POST /api/v1/datasets/{id}/teach`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TeachRequest {
    pub teacher: String,
    pub task: TeachTask,
    #[serde(default = "one")]
    pub samples: u64,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default = "max_tokens")]
    pub max_tokens: u64,
}

fn one() -> u64 {
    1
}

fn max_tokens() -> u64 {
    256
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TeachJobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl TeachJobState {
    pub const ALL: [TeachJobState; 4] = [
        TeachJobState::Queued,
        TeachJobState::Running,
        TeachJobState::Succeeded,
        TeachJobState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TeachJobState::Queued => "queued",
            TeachJobState::Running => "running",
            TeachJobState::Succeeded => "succeeded",
            TeachJobState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        TeachJobState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A teaching job: its request, where it stands, and the dataset it made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TeachJob {
    pub id: String,
    pub dataset_id: String,
    pub request: TeachRequest,
    pub state: TeachJobState,
    pub error: Option<String>,
    /// The new version, once it succeeded.
    pub made_dataset: Option<String>,
    /// Records written so far (the job's file).
    #[serde(default)]
    pub written: i64,
    pub owner_id: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}
