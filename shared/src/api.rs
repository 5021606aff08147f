//! The dashboard API under `/api/v1`: users and keys, models, datasets, runs and their events,
//! chats. Times are Unix seconds.
//!
//! Past 500 lines on purpose: the whole dashboard contract in one file, by resource, so that it
//! reads beside the route table.

use serde::{Deserialize, Serialize};

/// What a user or an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A training worker's key (`glmtune worker`): it leases runs, reports on and uploads for
    /// its own leases, and reads nothing else. Below every other role, and outside their order:
    /// it may not even read.
    Worker,
    /// Read-only.
    Viewer,
    /// Creates datasets, runs and chats; changes its own.
    Member,
    /// Everything, users included.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "worker" => Some(Role::Worker),
            "viewer" => Some(Role::Viewer),
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub created_at: i64,
}

/// `GET /api/v1/auth/me`: who the caller is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    /// The signed-in user; `None` for an API key made by `glmtune token create`, or `--no-auth`.
    pub user: Option<User>,
    pub role: Role,
    /// Who owns what the caller creates: the user's id, else the key's id, else `local`.
    pub principal: String,
    /// The session's CSRF token (sent back as `X-CSRF-Token` on changes), for a browser.
    pub csrf_token: Option<String>,
}

impl Me {
    /// The name to show: the user's, else the principal.
    pub fn name(&self) -> &str {
        self.user
            .as_ref()
            .map_or(self.principal.as_str(), |u| u.username.as_str())
    }
}

/// `GET /api/v1/auth/status`: what a signed-out browser needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthStatus {
    /// No user exists yet: the first one is made with the setup token.
    pub setup_needed: bool,
    pub no_auth: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// First-run setup: the one-time token printed at start makes the first admin.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetupRequest {
    pub setup_token: String,
    pub username: String,
    pub password: String,
}

/// A signed-in browser session. Requests that change anything send `csrf_token` back in the
/// `X-CSRF-Token` header.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    pub user: User,
    pub csrf_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUser {
    pub username: String,
    pub password: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateApiKey {
    pub name: String,
    /// At most the creator's own role; the creator's role when absent.
    #[serde(default)]
    pub role: Option<Role>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    pub user_id: Option<String>,
    pub created_at: i64,
}

/// A new key: the secret is shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedApiKey {
    pub key: ApiKey,
    pub secret: String,
}

/// A base checkpoint folder on the server's disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelInfo {
    pub name: String,
    pub path: String,
    /// A fixed adapter served with the model (`--model NAME=DIR:ADAPTER`).
    pub adapter: Option<String>,
    /// The generation, as its tokenizer and config tell it: "ChatGLM-6B", "ChatGLM2-6B" or
    /// "ChatGLM3-6B".
    #[serde(default = "default_family")]
    pub family: String,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_attention_heads: usize,
    pub vocab_size: usize,
    pub created_at: i64,
}

fn default_family() -> String {
    "ChatGLM-6B".into()
}

/// A file in a model's folder, downloadable from `/api/v1/models/{name}/files/{file}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelFile {
    pub name: String,
    pub bytes: u64,
    /// Last modification, seconds since the Unix epoch (0 when unknown): browsers key cached
    /// copies by it.
    #[serde(default)]
    pub modified: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterModel {
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub adapter: Option<String>,
}

/// How a dataset's records are laid out (the flags of `glmtune data`, `train` and `eval`; a
/// dataset's stored options; a training job's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadOptions {
    #[serde(default)]
    pub format: RecordFormat,
    #[serde(default)]
    pub prompt_column: Option<String>,
    #[serde(default)]
    pub response_column: Option<String>,
    #[serde(default)]
    pub history_column: Option<String>,
}

/// A dataset's record layout by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    /// Detected from the first record's keys (or the columns given).
    #[default]
    Auto,
    /// The official prompt/response/history columns.
    Columns,
    /// instruction / input / output / history.
    Alpaca,
    /// OpenAI `messages` (role/content) or ShareGPT `conversations` (from/value).
    Messages,
}

impl RecordFormat {
    pub const ALL: [RecordFormat; 4] = [
        RecordFormat::Auto,
        RecordFormat::Columns,
        RecordFormat::Alpaca,
        RecordFormat::Messages,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordFormat::Auto => "auto",
            RecordFormat::Columns => "columns",
            RecordFormat::Alpaca => "alpaca",
            RecordFormat::Messages => "messages",
        }
    }
}

impl std::fmt::Display for RecordFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RecordFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RecordFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == text)
            .ok_or_else(|| format!("unknown format {text:?} (auto, columns, alpaca, messages)"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Dataset {
    pub id: String,
    pub name: String,
    /// SHA-256 of the stored bytes: the content address.
    pub sha256: String,
    pub bytes: i64,
    /// The format detected (or given).
    pub format: String,
    pub read_options: ReadOptions,
    pub records: i64,
    pub skipped_empty: i64,
    pub purpose: String,
    pub owner_id: Option<String>,
    pub created_at: i64,
    /// Token statistics against a model's tokenizer, when one was named.
    pub stats: Option<serde_json::Value>,
    /// The first records, as read.
    pub preview: Vec<PreviewRecord>,
    /// The dataset this one is a version of, and how it was made from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation: Option<Derivation>,
}

/// How a dataset was made from its parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Derivation {
    /// One part of a split (`train` or `validation`).
    Split {
        part: String,
        validation_fraction: f64,
        seed: u64,
    },
    /// Made by a teacher (`POST /api/v1/datasets/{id}/teach`).
    Teach {
        /// Boxed: the request (documents and templates) is much larger than the other variants.
        request: Box<crate::teach::TeachRequest>,
        teacher: String,
        records: i64,
        /// What the job reported at its end: new records kept, dropped, tokens.
        #[serde(default)]
        report: Option<crate::teach::TeachReport>,
    },
    /// The parent's records and new ones made by rule.
    Augment {
        request: AugmentRequest,
        new_records: i64,
        dropped_duplicates: i64,
        dropped_leaking: i64,
    },
}

/// Where a version's new record came from: the fields every augmentation writes in a record's
/// `provenance` (by rule: `glmtune data augment`; by a teacher: `glmtune data teach`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordOrigin {
    /// The parent record's number (from 1), or the passage's for questions about documents.
    pub parent: u64,
    /// `delete`, …, `teacher_answer`, `teacher_paraphrase`, …
    pub method: String,
    /// Which of the parent's copies (from 1).
    pub copy: u64,
    /// The document of a passage (questions about documents).
    #[serde(default)]
    pub document: Option<String>,
}

/// One new record of a version beside what it was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionChange {
    /// Its number (from 1) in the version.
    pub record: u64,
    pub origin: RecordOrigin,
    /// The parent's record it was made from (none for a document's passage).
    pub before: Option<PreviewRecord>,
    pub after: PreviewRecord,
}

/// `GET /api/v1/datasets/{id}/changes`: a version's new records, each beside its parent record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionChanges {
    pub parent_id: Option<String>,
    /// New records in the version.
    pub total: u64,
    /// The first `limit` of them.
    pub changes: Vec<VersionChange>,
}

/// `POST /api/v1/datasets/{id}/augment`: new prompts by rule (`glmtune data augment`'s options).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AugmentRequest {
    /// `delete`, `swap`, `insert`, `punctuation` (empty: all).
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default = "one_copy")]
    pub copies: u64,
    #[serde(default = "tenth")]
    pub rate: f64,
    #[serde(default = "seed_42")]
    pub seed: u64,
    /// MinHash similarity of character 3-grams at which two prompts are the same.
    #[serde(default = "nine_tenths")]
    pub threshold: f64,
    /// New prompts like one of its prompts are dropped (they would leak).
    #[serde(default)]
    pub validation_dataset: Option<String>,
}

/// What an augmentation would make (`POST /api/v1/datasets/{id}/augment/preview`), nothing saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AugmentPreview {
    pub new_records: i64,
    pub dropped_duplicates: i64,
    pub dropped_leaking: i64,
    /// A few new prompts of each method, beside the prompt each was made from.
    pub examples: Vec<AugmentExample>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AugmentExample {
    pub method: String,
    pub from: String,
    pub to: String,
}

fn one_copy() -> u64 {
    1
}
fn tenth() -> f64 {
    0.1
}
fn seed_42() -> u64 {
    42
}
fn nine_tenths() -> f64 {
    0.9
}

/// A record of a dataset's preview, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreviewRecord {
    pub prompt: String,
    pub response: String,
    /// Earlier turns, `[query, response]` each.
    #[serde(default)]
    pub history: Vec<[String; 2]>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SplitRequest {
    /// Share of records that go to validation, in (0, 1).
    pub validation_fraction: f64,
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SplitResponse {
    pub train: Dataset,
    pub validation: Dataset,
}

pub use crate::run_settings::{BestMetric, OptimName, Precision, QuantizationBit, RunSettings};

/// Settings a run can start from (`/api/v1/presets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Preset {
    pub name: String,
    pub label: String,
    pub description: String,
    pub settings: RunSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateRun {
    pub model: String,
    pub train_dataset: String,
    #[serde(default)]
    pub validation_dataset: Option<String>,
    /// `official` (ptuning/train.sh) or `quick`; settings override it.
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub settings: RunSettings,
    /// Start from an earlier run's adapter.
    #[serde(default)]
    pub init_run: Option<String>,
    /// Distil the prefix from a succeeded run of the same model: its adapter on the base loaded
    /// unquantized is the teacher (with `settings.quantization_bit`, the student's base is
    /// quantized: a tuned model taught to a 4-bit one).
    #[serde(default)]
    pub teacher_run: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Queued,
    Running,
    /// Waiting at a step its sweep chose (a halving rung), or for its sweep to give it a turn.
    Paused,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    pub const ALL: [RunState; 6] = [
        RunState::Queued,
        RunState::Running,
        RunState::Paused,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Run {
    pub id: String,
    pub model: String,
    pub train_dataset: String,
    pub validation_dataset: Option<String>,
    /// The settings the run trains with, preset applied.
    pub settings: RunSettings,
    pub init_run: Option<String>,
    /// The run it is distilled from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_run: Option<String>,
    pub state: RunState,
    pub error: Option<String>,
    pub owner_id: Option<String>,
    /// Times the run was started (more than one after a resume).
    pub attempts: i64,
    pub step: i64,
    pub max_steps: Option<i64>,
    pub trained_tokens: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The name to chat with once the run succeeded (`ft:MODEL:RUN`).
    pub fine_tuned_model: Option<String>,
    /// The sweep it is a trial of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<crate::sweep::TrialOf>,
    /// The worker (`glmtune worker`) that trains it or trained it last; `None`: this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl Run {
    /// The step a sweep's trial pauses at (its rung), for `glmtune train --stop-after-step`.
    pub fn pause_step(&self) -> Option<u64> {
        let at = self.sweep.as_ref()?.pause_at?;
        u64::try_from(at).ok()
    }
}

/// One entry of a run's progress stream; `id` orders them and is the SSE event id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunEvent {
    pub id: i64,
    /// `metrics`, `info`, `warning`, `error`, `state` or `stall`.
    pub kind: String,
    pub message: String,
    pub data: serde_json::Value,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Checkpoint {
    pub step: i64,
    pub name: String,
    pub created_at: i64,
    /// The last training loss logged at or before the checkpoint's step.
    #[serde(default)]
    pub loss: Option<f64>,
    /// The validation loss of the last evaluation at or before the checkpoint's step, and that step.
    #[serde(default)]
    pub eval_loss: Option<f64>,
    #[serde(default)]
    pub eval_step: Option<i64>,
    /// That evaluation's forgetting guard: the KL from the base on general prompts (nats a token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgetting_kl: Option<f64>,
}

/// BLEU/ROUGE of a finished run on its validation set, with some predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Evaluation {
    // Inline: a component would be named after the map type, not the table.
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub scores: ScoreTable,
    pub samples: Vec<Prediction>,
}

/// BLEU-4 and ROUGE-1/2/L (×100) by their official names (`bleu-4`, `rouge-1`…), and
/// `exact-match` (the share of answers equal to their label, ×100), as `glmtune eval` writes
/// them to `scores.json`.
pub type ScoreTable = std::collections::BTreeMap<String, f64>;

/// One line of `generated_predictions.jsonl`, in the official script's names: the reference answer
/// and the generated one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Prediction {
    pub labels: String,
    pub predict: String,
    /// The record's prompt (ours, beside the official two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// This pair's scores: BLEU-4 and ROUGE-1/2/L as the official code scores a pair, and
    /// `exact-match` (100 or 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<ScoreTable>,
}

impl Prediction {
    /// How well the pair scored, for ordering the worst first: its ROUGE-L, then BLEU-4.
    pub fn rank(&self) -> Option<(f64, f64)> {
        let scores = self.scores.as_ref()?;
        Some((*scores.get("rouge-l")?, *scores.get("bleu-4")?))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateChat {
    pub model: String,
    /// A succeeded run whose adapter answers.
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    /// Put before every prompt; unset: the run's `source_prefix` (nothing for a base model).
    #[serde(default)]
    pub system: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Chat {
    pub id: String,
    pub model: String,
    pub run_id: Option<String>,
    pub title: String,
    /// The system prompt set when the chat was made (`None`: the model's own default).
    #[serde(default)]
    pub system: Option<String>,
    pub owner_id: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMessageRecord {
    pub role: String,
    pub content: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatWithMessages {
    pub chat: Chat,
    pub messages: Vec<ChatMessageRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PostMessage {
    pub content: String,
    /// Stream the answer as server-sent events (`delta` events, then `done`).
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub seed: Option<u64>,
}

/// A JSON list with its items under `data`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct List<T> {
    pub data: Vec<T>,
}

/// Items in tree order: each root (no parent, or a parent not among them) followed by its
/// versions, depth first, siblings in their given order; `(depth, index)` each. The datasets page
/// lists a dataset's versions under it this way.
pub fn tree_order<T>(
    items: &[T],
    id: impl Fn(&T) -> &str,
    parent: impl Fn(&T) -> Option<&str>,
) -> Vec<(usize, usize)> {
    let known: std::collections::HashSet<&str> = items.iter().map(&id).collect();
    let mut out = Vec::with_capacity(items.len());
    // Depth first with an explicit stack (children pushed in reverse to come out in order).
    let mut stack: Vec<(usize, usize)> = (0..items.len())
        .rev()
        .filter(|&i| parent(&items[i]).is_none_or(|p| !known.contains(p)))
        .map(|i| (0, i))
        .collect();
    let mut placed = vec![false; items.len()];
    while let Some((depth, i)) = stack.pop() {
        // A cycle (corrupt parents) cannot loop: each item is placed once.
        if std::mem::replace(&mut placed[i], true) {
            continue;
        }
        out.push((depth, i));
        let me = id(&items[i]);
        stack.extend(
            (0..items.len())
                .rev()
                .filter(|&c| parent(&items[c]) == Some(me))
                .map(|c| (depth + 1, c)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::tree_order;

    #[test]
    fn versions_follow_their_parent_depth_first() {
        // (id, parent): b and d are versions of a, c of b; e's parent is not listed.
        let items = [
            ("c", Some("b")),
            ("a", None),
            ("b", Some("a")),
            ("e", Some("gone")),
            ("d", Some("a")),
        ];
        let order = tree_order(&items, |t| t.0, |t| t.1);
        let named: Vec<(usize, &str)> = order.iter().map(|&(d, i)| (d, items[i].0)).collect();
        assert_eq!(named, [(0, "a"), (1, "b"), (2, "c"), (1, "d"), (0, "e")]);
    }
}
