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
    /// A question about each passage of the request's `documents`, and its answer from the
    /// passage: new records beside the dataset's own.
    Questions,
}

impl TeachTask {
    pub fn as_str(self) -> &'static str {
        match self {
            TeachTask::Answer => "answer",
            TeachTask::Paraphrase => "paraphrase",
            TeachTask::Backtranslate => "backtranslate",
            TeachTask::Rewrite => "rewrite",
            TeachTask::Questions => "questions",
        }
    }

    /// What the teacher is asked first, `{prompt}` standing for the record's prompt (or the
    /// passage), `{response}` for its answer; a request's `template` replaces it.
    pub fn default_template(self) -> &'static str {
        match self {
            TeachTask::Answer => "{prompt}",
            TeachTask::Paraphrase => {
                "请换一种说法改写下面的问题，意思不变，只输出改写后的问题：\n{prompt}"
            }
            TeachTask::Backtranslate => {
                "Translate into English. Output the translation only:\n{prompt}"
            }
            TeachTask::Rewrite => "请用专业、准确、简洁的语气改写下面问题的回答，意思不变，只输出改写后的回答。\n问题：{prompt}\n回答：{response}",
            TeachTask::Questions => "根据下面的资料提出一个问题，只输出问题：\n{prompt}",
        }
    }

    /// The second question of a two-step task, `{first}` standing for the first answer and
    /// `{prompt}` for the record's prompt (or the passage); a request's `then_template` replaces it.
    pub fn then_template(self) -> Option<&'static str> {
        match self {
            TeachTask::Answer | TeachTask::Paraphrase | TeachTask::Rewrite => None,
            TeachTask::Backtranslate => Some("把下面的英文翻译成中文，只输出译文：\n{first}"),
            TeachTask::Questions => Some("根据资料回答问题。\n资料：{prompt}\n问题：{first}"),
        }
    }

    /// Whether the task makes new prompts: the version then holds the parent's records and the
    /// new ones, near-duplicates and validation leaks dropped. The others give the parent's
    /// prompts new answers: the version holds those alone.
    pub fn makes_prompts(self) -> bool {
        matches!(
            self,
            TeachTask::Paraphrase | TeachTask::Backtranslate | TeachTask::Questions
        )
    }
}

/// What the teacher is asked to pick the best of a prompt's answers with (`keep: judge`),
/// `{prompt}` the prompt, `{answers}` the answers numbered from 1; a request's `judge_template`
/// replaces it.
pub const JUDGE_TEMPLATE: &str =
    "下面是同一个问题的几个回答。哪一个最好？只输出它的编号。\n问题：{prompt}\n{answers}";

/// Which of a prompt's sampled answers become records (`--keep`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TeachKeep {
    /// Every sample is a record.
    #[default]
    All,
    /// The one closest to the record's own answer (ROUGE-L).
    Rouge,
    /// The one the teacher judges best.
    Judge,
}

impl TeachKeep {
    pub fn as_str(self) -> &'static str {
        match self {
            TeachKeep::All => "all",
            TeachKeep::Rouge => "rouge",
            TeachKeep::Judge => "judge",
        }
    }
}

/// A text or Markdown document to ask questions about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TeachDocument {
    /// Its file name (`.md` or `.txt`).
    pub name: String,
    pub text: String,
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
    /// With `answer` and several `samples`: which answer of a prompt's is kept.
    #[serde(default)]
    pub keep: TeachKeep,
    /// The documents of `questions` (and only of it).
    #[serde(default)]
    pub documents: Vec<TeachDocument>,
    /// A new prompt like one of this dataset's prompts is dropped (it would leak).
    #[serde(default)]
    pub validation_dataset: Option<String>,
    /// The character-3-gram similarity (MinHash) at which two prompts are the same.
    #[serde(default = "threshold")]
    pub threshold: f64,
    /// The second question of `backtranslate` and `questions` (default: the task's own).
    #[serde(default)]
    pub then_template: Option<String>,
    /// What picks the best answer with `keep: judge` (default: [`JUDGE_TEMPLATE`]).
    #[serde(default)]
    pub judge_template: Option<String>,
    /// A preview: only the first this many records (or passages) are asked, and what they make
    /// is shown with the job (`preview`), not stored as a version.
    #[serde(default)]
    pub preview: Option<u64>,
}

fn threshold() -> f64 {
    0.9
}

/// What `glmtune data teach` prints when it ends, and keeps beside its output while it runs
/// (`OUT.report.json`): the server's teaching jobs show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TeachReport {
    /// Records (or passages) asked about.
    pub parent_records: u64,
    /// Answers the job's journal held before this run (an interrupted job's).
    pub already_done: u64,
    /// Answers this run added to the journal.
    pub written: u64,
    /// New records in the output, once it is made.
    pub kept: u64,
    pub dropped_duplicates: u64,
    pub dropped_leaking: u64,
    /// The parent's own records at the head of the output (tasks that make prompts).
    pub parent_included: u64,
    /// Over every run of the job, not only this one.
    pub retries: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Whether the output is made (every question answered).
    pub finished: bool,
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
    /// Answers in so far (the job's journal).
    #[serde(default)]
    pub written: i64,
    /// Tokens, retries and what was dropped, as the job's command last reported them.
    #[serde(default)]
    pub report: Option<TeachReport>,
    /// A preview job's new records beside their parent records, once it succeeded.
    #[serde(default)]
    pub preview: Option<crate::api::VersionChanges>,
    pub owner_id: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}
