//! Training features exactly as `preprocess_function_train` in THUDM's `ptuning/main.py`
//! builds them:
//!
//! 1. with a history column configured, the prompt is rendered as
//!    `[Round 0]\n问：{q0}\n答：{a0}\n` … `[Round n]\n问：{query}\n答：` — **even when the
//!    record's history is empty** (the train function tests `history_column is None`, unlike
//!    the eval function, which also falls back to the bare query on an empty history);
//!    without one the prompt is the query itself; then `source_prefix` goes in front;
//! 2. `a = encode(prompt, add_special_tokens=False)[:max_source_length - 1]`,
//!    `b = encode(answer, add_special_tokens=False)[:max_target_length - 2]`;
//! 3. `input_ids = build_inputs_with_special_tokens(a, b) = a + [gMASK, <sop>] + b + [<eop>]`;
//! 4. `context_length = input_ids.index(<sop>)` (the first `<sop>`: a prompt that spells
//!    `<sop>` moves it, as in Python); `labels = [-100] * context_length +
//!    input_ids[context_length:]`, so `<sop>` itself is a label;
//! 5. both padded to `max_source_length + max_target_length`, `input_ids` with `<pad>` and
//!    `labels` with `<pad>` too, then with `ignore_pad_token_for_loss` (default on) every
//!    label equal to the pad id becomes -100.

use super::records::Record;
use super::DataError;
use crate::tokenizer::ChatGlmTokenizer;

/// The label value the loss ignores.
pub const IGNORE_INDEX: i64 = -100;

/// The official `DataTrainingArguments` that shape the training features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreprocessOptions {
    /// `--max_source_length` (official default 1024); must be at least 1.
    pub max_source_length: usize,
    /// `--max_target_length` (official default 128); must be at least 2.
    pub max_target_length: usize,
    /// Whether a history column is configured (`--history_column`): renders the `[Round i]`
    /// template; see [`ReadReport::history_column`](super::ReadReport::history_column).
    pub use_history: bool,
    /// `--source_prefix`, put before the rendered prompt.
    pub source_prefix: String,
    /// `--ignore_pad_token_for_loss` (official default true).
    pub ignore_pad_token_for_loss: bool,
}

impl Default for PreprocessOptions {
    fn default() -> Self {
        Self {
            max_source_length: 1024,
            max_target_length: 128,
            use_history: false,
            source_prefix: String::new(),
            ignore_pad_token_for_loss: true,
        }
    }
}

impl PreprocessOptions {
    pub fn new(max_source_length: usize, max_target_length: usize, use_history: bool) -> Self {
        Self {
            max_source_length,
            max_target_length,
            use_history,
            ..Self::default()
        }
    }

    /// Every feature is this long: `max_source_length + max_target_length`.
    pub fn max_seq_length(&self) -> usize {
        self.max_source_length + self.max_target_length
    }

    /// Rejects lengths for which the official slicing (`[:n - 1]`, `[:n - 2]`) would count from
    /// the end instead of truncating.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.max_source_length < 1 {
            return Err(DataError::Options(
                "max_source_length must be at least 1".into(),
            ));
        }
        if self.max_target_length < 2 {
            return Err(DataError::Options(
                "max_target_length must be at least 2".into(),
            ));
        }
        Ok(())
    }
}

/// One training example, padded to [`PreprocessOptions::max_seq_length`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
    /// Tokens of the rendered prompt (prefix and history included) before truncation.
    pub prompt_tokens: usize,
    /// Tokens of the answer before truncation.
    pub answer_tokens: usize,
}

impl Features {
    /// Prompt tokens cut off by `max_source_length - 1`.
    pub fn prompt_cut(&self, options: &PreprocessOptions) -> usize {
        self.prompt_tokens
            .saturating_sub(options.max_source_length.saturating_sub(1))
    }

    /// Answer tokens cut off by `max_target_length - 2`.
    pub fn answer_cut(&self, options: &PreprocessOptions) -> usize {
        self.answer_tokens
            .saturating_sub(options.max_target_length.saturating_sub(2))
    }
}

/// The prompt text the model sees, before `source_prefix`.
pub fn render_prompt(record: &Record, use_history: bool) -> String {
    if !use_history {
        return record.prompt.clone();
    }
    let mut prompt = String::new();
    for (i, (query, answer)) in record.history.iter().enumerate() {
        prompt.push_str(&format!("[Round {i}]\n问：{query}\n答：{answer}\n"));
    }
    prompt.push_str(&format!(
        "[Round {}]\n问：{}\n答：",
        record.history.len(),
        record.prompt
    ));
    prompt
}

/// Features of every record, in order (one per record: the official skip of empty prompts or
/// responses already happened in [`read_records`](super::read_records)).
pub fn preprocess_train(
    records: &[Record],
    tokenizer: &ChatGlmTokenizer,
    options: &PreprocessOptions,
) -> Result<Vec<Features>, DataError> {
    options.validate()?;
    Ok(records
        .iter()
        .map(|r| preprocess_record(r, tokenizer, options))
        .collect())
}

/// Features of one record. `options` should pass [`PreprocessOptions::validate`]: smaller
/// lengths do not panic but cannot match Python, whose slices then count from the end.
pub fn preprocess_record(
    record: &Record,
    tokenizer: &ChatGlmTokenizer,
    options: &PreprocessOptions,
) -> Features {
    let special = tokenizer.special_ids();
    let prompt = format!(
        "{}{}",
        options.source_prefix,
        render_prompt(record, options.use_history)
    );
    let mut a = tokenizer.encode_plain(&prompt);
    let mut b = tokenizer.encode_plain(&record.response);
    let (prompt_tokens, answer_tokens) = (a.len(), b.len());
    a.truncate(options.max_source_length.saturating_sub(1));
    b.truncate(options.max_target_length.saturating_sub(2));

    let mut input_ids = a;
    input_ids.extend([special.gmask, special.bos]);
    input_ids.extend(b);
    input_ids.push(special.eos);

    // `<sop>` was just pushed, so the search cannot fail; the fallback only keeps this total.
    let context_length = input_ids
        .iter()
        .position(|&id| id == special.bos)
        .unwrap_or(input_ids.len());
    let mut labels: Vec<i64> = vec![IGNORE_INDEX; context_length];
    labels.extend(input_ids[context_length..].iter().map(|&id| i64::from(id)));

    let len = options.max_seq_length();
    input_ids.resize(len, special.pad);
    labels.resize(len, i64::from(special.pad));
    if options.ignore_pad_token_for_loss {
        for label in &mut labels {
            if *label == i64::from(special.pad) {
                *label = IGNORE_INDEX;
            }
        }
    }
    Features {
        input_ids,
        labels,
        prompt_tokens,
        answer_tokens,
    }
}
