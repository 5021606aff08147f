//! A dataset file checked in the browser before anything is uploaded: the engine's own record
//! reader and P-Tuning preprocessing with the model's tokenizer (downloaded once per model), so
//! the bad records and the token-length statistics shown are those the server will find.

use std::path::Path;
use std::sync::Arc;

use glmtune_engine::data::{check_dataset, parse_records, DatasetFormat, TokenStats, Unusable};
use glmtune_engine::tokenizer::{self, ChatGlmTokenizer};

use crate::api::{self, Failure};

/// Files above this size are left to the server: a tab's memory is the limit, not the format.
pub const MAX_LOCAL_BYTES: f64 = 64.0 * 1024.0 * 1024.0;

/// How many bad records are listed, as the server does.
const MAX_LISTED: usize = 50;

/// What reading a valid file found.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub format: String,
    pub records: usize,
    pub skipped_empty: usize,
    /// With a tokenizer: the lengths against the truncation limits.
    pub stats: Option<TokenStats>,
}

/// Downloads a registered model's tokenizer files and builds the tokenizer.
pub async fn tokenizer(model: &str) -> Result<Arc<ChatGlmTokenizer>, Failure> {
    let base = format!("/api/v1/models/{}/files", api::encode(model));
    let optional = |name: &'static str| {
        let url = format!("{base}/{name}");
        async move {
            match api::get_bytes(&url).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(failure) if failure.status == 404 => Ok(None),
                Err(failure) => Err(failure),
            }
        }
    };
    // ChatGLM-6B's vocabulary, else ChatGLM2/3's.
    let vocabulary = match optional(tokenizer::MODEL_FILE).await? {
        Some(bytes) => bytes,
        None => api::get_bytes(&format!("{base}/{}", tokenizer::GLM2_MODEL_FILE)).await?,
    };
    let text = |bytes: Option<Vec<u8>>| bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
    let config = text(optional(tokenizer::CONFIG_FILE).await?);
    let python = text(optional(tokenizer::PYTHON_TOKENIZER_FILE).await?);
    ChatGlmTokenizer::from_files(&vocabulary, config.as_deref(), python.as_deref())
        .map(Arc::new)
        .map_err(|e| Failure::local(format!("the tokenizer of {model}: {e}")))
}

/// Reads `bytes` (the file `name`) as the server will, listing every bad record by line and
/// field in the failure's details, and measures it when a tokenizer is given.
pub fn check(
    bytes: &[u8],
    name: &str,
    tokenizer: Option<&ChatGlmTokenizer>,
    max_source_length: usize,
    max_target_length: usize,
) -> Result<Checked, Failure> {
    let (records, report) = parse_records(bytes, Path::new(name), &DatasetFormat::Auto, true)
        .map_err(|e| Failure::local(e.to_string()))?;
    let measure = tokenizer.map(|t| (t, max_source_length, max_target_length));
    let stats = check_dataset(&records, &report, measure).map_err(|unusable| Failure {
        status: 0,
        message: format!("{name}: {unusable}. Fix the file and choose it again."),
        details: match &unusable {
            Unusable::Invalid(issues) => serde_json::json!({
                "invalid_records": &issues[..issues.len().min(MAX_LISTED)]
            }),
            _ => serde_json::Value::Null,
        },
    })?;
    Ok(Checked {
        format: report.format.to_string(),
        records: records.len(),
        skipped_empty: report.skipped_empty.len(),
        stats,
    })
}
