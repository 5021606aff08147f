//! Training features exactly as THUDM's own fine-tuning code builds them, one file per generation
//! (`chatglm.rs`: ChatGLM-6B's `ptuning/main.py`; `chatglm2.rs`: ChatGLM2's; `chatglm3.rs`:
//! ChatGLM3's `finetune_hf.py`), each with the prompt its evaluation generates from.
//! [`preprocessing`] is the one place that maps a [`Family`] to its rules.

mod chatglm;
mod chatglm2;
mod chatglm3;

pub use chatglm::render_prompt;

use super::records::Record;
use super::DataError;
use crate::tokenizer::{ChatGlmTokenizer, Family};

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
    /// Prompt tokens the generation's rule keeps at most (ChatGLM-6B: `max_source_length - 1`).
    pub prompt_limit: usize,
    /// Prompt tokens cut off.
    pub prompt_cut: usize,
    /// Answer tokens the rule keeps at most (ChatGLM-6B: `max_target_length - 2`).
    pub answer_limit: usize,
    /// Answer tokens cut off.
    pub answer_cut: usize,
}

/// How a generation's fine-tuning code turns records into model inputs.
pub trait Preprocessing: Send + Sync {
    /// Features of one record (`options` as [`PreprocessOptions::validate`] accepts).
    fn features(
        &self,
        record: &Record,
        tokenizer: &ChatGlmTokenizer,
        options: &PreprocessOptions,
    ) -> Features;

    /// The prompt as the preprocessing renders it (`source_prefix` included), for showing.
    fn rendered_prompt(&self, record: &Record, options: &PreprocessOptions) -> String;

    /// Tokens in every example (padded; ChatGLM3's are cut to it, not padded).
    fn sequence_length(&self, options: &PreprocessOptions) -> usize {
        options.max_seq_length() + 1
    }

    /// Whether `--history_column` changes the prompt (ChatGLM-6B's `[Round i]` template; later
    /// generations always use their chat format).
    fn history_template(&self) -> bool {
        false
    }

    /// The prompt ids the generation's evaluation generates from.
    fn eval_prompt_ids(
        &self,
        record: &Record,
        tokenizer: &ChatGlmTokenizer,
        options: &PreprocessOptions,
    ) -> Vec<u32>;
}

/// The rules of `family`.
pub fn preprocessing(family: Family) -> &'static dyn Preprocessing {
    match family {
        Family::ChatGlm => &chatglm::ChatGlm,
        Family::ChatGlm2 => &chatglm2::ChatGlm2,
        Family::ChatGlm3 => &chatglm3::ChatGlm3,
    }
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

/// Features of one record for the tokenizer's generation. `options` should pass
/// [`PreprocessOptions::validate`]: smaller lengths do not panic but cannot match Python, whose
/// slices then count from the end.
pub fn preprocess_record(
    record: &Record,
    tokenizer: &ChatGlmTokenizer,
    options: &PreprocessOptions,
) -> Features {
    preprocessing(tokenizer.family()).features(record, tokenizer, options)
}

/// The prompt as the generation's preprocessing renders it (`source_prefix` included), for
/// showing; ChatGLM3's conversation is shown with its role tags.
pub fn rendered_prompt(
    record: &Record,
    tokenizer: &ChatGlmTokenizer,
    options: &PreprocessOptions,
) -> String {
    preprocessing(tokenizer.family()).rendered_prompt(record, options)
}

/// The prompt ids the family's evaluation generates from (the official `preprocess_function_eval`
/// of ChatGLM-6B and ChatGLM2, and `process_batch_eval` of ChatGLM3 for the record's last answer):
/// ChatGLM-6B `encode(prefix + prompt)[:max_source_length - 2] + [gMASK] <sop>` (the `[Round]`
/// template only with history); ChatGLM2 `[gMASK] sop` + the `[Round]` prompt, cut to
/// `max_source_length`; ChatGLM3 the conversation before the last answer cut to
/// `max_source_length`, then `<|assistant|>`.
pub fn eval_prompt_ids(
    record: &Record,
    tokenizer: &ChatGlmTokenizer,
    options: &PreprocessOptions,
) -> Vec<u32> {
    preprocessing(tokenizer.family()).eval_prompt_ids(record, tokenizer, options)
}
