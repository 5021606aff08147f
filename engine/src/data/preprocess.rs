//! Training features exactly as THUDM's own fine-tuning code builds them, for the tokenizer's
//! generation:
//!
//! - ChatGLM3: `process_batch` of `finetune_demo/finetune_hf.py` over the conversation
//!   ([`Record::conversation`]): `[gMASK] sop`, every message as `build_single_message`, `</s>`;
//!   labels are the ids of assistant messages shifted one place right (so the role token after an
//!   assistant message and the final `</s>` are learned, the `<|assistant|>` token is not); both
//!   cut at `max_source_length + max_target_length + 1`, not padded (batches pad on the left);
//! - ChatGLM2: `preprocess_function_train` of its `ptuning/main.py`: the prompt is always the
//!   `[Round i]\n\n问：…\n\n答：` template (after `source_prefix`),
//!   `a = tokenizer(prompt)` cut to `max_source_length` (`[gMASK] sop` kept),
//!   `b = encode(answer)[:max_target_length]`, `input_ids = a + b + [</s>]`, labels the same
//!   with `a` as pad, padded to `max_source_length + max_target_length + 1`, pad labels -100;
//! - ChatGLM-6B, `preprocess_function_train` of its `ptuning/main.py`:
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
use crate::generation::chat::build_prompt_glm2;
use crate::generation::Turn;
use crate::tokenizer::{ChatGlmTokenizer, Family, Role};

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

/// Features of one record for the tokenizer's generation. `options` should pass
/// [`PreprocessOptions::validate`]: smaller lengths do not panic but cannot match Python, whose
/// slices then count from the end.
pub fn preprocess_record(
    record: &Record,
    tokenizer: &ChatGlmTokenizer,
    options: &PreprocessOptions,
) -> Features {
    match tokenizer.family() {
        Family::ChatGlm => preprocess_glm(record, tokenizer, options),
        Family::ChatGlm2 => preprocess_glm2(record, tokenizer, options),
        Family::ChatGlm3 => preprocess_glm3(record, tokenizer, options),
    }
}

/// The prompt as the generation's preprocessing renders it (`source_prefix` included), for
/// showing; ChatGLM3's conversation is shown with its role tags.
pub fn rendered_prompt(
    record: &Record,
    tokenizer: &ChatGlmTokenizer,
    options: &PreprocessOptions,
) -> String {
    match tokenizer.family() {
        Family::ChatGlm => format!(
            "{}{}",
            options.source_prefix,
            render_prompt(record, options.use_history)
        ),
        Family::ChatGlm2 => format!("{}{}", options.source_prefix, glm2_prompt(record)),
        Family::ChatGlm3 => {
            let conversation = record.conversation();
            let shown = conversation.len().saturating_sub(1);
            conversation[..shown]
                .iter()
                .map(|m| format!("<|{}|>\n{}", m.role.as_str(), m.content))
                .chain(std::iter::once("<|assistant|>".to_owned()))
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

fn glm2_prompt(record: &Record) -> String {
    let history: Vec<Turn> = record
        .history
        .iter()
        .map(|(query, response)| Turn {
            query: query.clone(),
            response: response.clone(),
        })
        .collect();
    build_prompt_glm2(&record.prompt, &history)
}

/// ChatGLM2's `preprocess_function_train`.
fn preprocess_glm2(
    record: &Record,
    tokenizer: &ChatGlmTokenizer,
    options: &PreprocessOptions,
) -> Features {
    let special = tokenizer.special_ids();
    let prompt = format!("{}{}", options.source_prefix, glm2_prompt(record));
    let text = tokenizer.encode_plain(&prompt);
    let answer = tokenizer.encode_plain(&record.response);
    // `encode(…, truncation=True, max_length=n)` keeps room for the two prefix tokens.
    let prompt_limit = options.max_source_length.saturating_sub(2);
    let answer_limit = options.max_target_length;
    let mut input_ids = tokenizer.prefix_ids();
    input_ids.extend(text.iter().take(prompt_limit));
    let context_length = input_ids.len();
    input_ids.extend(answer.iter().take(answer_limit));
    input_ids.push(special.eos);
    let pad = i64::from(special.pad);
    let mut labels = vec![pad; context_length];
    labels.extend(input_ids[context_length..].iter().map(|&id| i64::from(id)));
    let len = options.max_source_length + options.max_target_length + 1;
    input_ids.resize(len, special.pad);
    labels.resize(len, pad);
    if options.ignore_pad_token_for_loss {
        for label in labels.iter_mut().filter(|l| **l == pad) {
            *label = IGNORE_INDEX;
        }
    }
    Features {
        input_ids,
        labels,
        prompt_tokens: text.len(),
        answer_tokens: answer.len(),
        prompt_limit,
        prompt_cut: text.len().saturating_sub(prompt_limit),
        answer_limit,
        answer_cut: answer.len().saturating_sub(answer_limit),
    }
}

/// The record's conversation, with `source_prefix` (when set) as a leading system message.
fn glm3_conversation(
    record: &Record,
    options: &PreprocessOptions,
) -> Vec<crate::generation::ChatMessage> {
    let mut conversation = record.conversation();
    if !options.source_prefix.is_empty() {
        conversation.insert(
            0,
            crate::generation::ChatMessage {
                role: Role::System,
                content: options.source_prefix.clone(),
            },
        );
    }
    conversation
}

/// ChatGLM3's `process_batch` for one conversation (`source_prefix` becomes a leading system
/// message when set, as a system prompt).
fn preprocess_glm3(
    record: &Record,
    tokenizer: &ChatGlmTokenizer,
    options: &PreprocessOptions,
) -> Features {
    let conversation = glm3_conversation(record, options);
    let mut input_ids = tokenizer.prefix_ids();
    let mut learned = vec![false; input_ids.len()];
    let mut last_answer_start = input_ids.len();
    for message in &conversation {
        let ids = tokenizer
            .single_message(message.role, "", &message.content)
            .unwrap_or_default();
        let is_answer = !matches!(message.role, Role::System | Role::User);
        if message.role == Role::Assistant {
            last_answer_start = input_ids.len();
        }
        learned.extend(std::iter::repeat_n(is_answer, ids.len()));
        input_ids.extend(ids);
    }
    input_ids.push(tokenizer.special_ids().eos);
    // A token is a label when the token before it belongs to an answer.
    let mut labels: Vec<i64> = Vec::with_capacity(input_ids.len());
    labels.push(IGNORE_INDEX);
    for (id, &before) in input_ids[1..].iter().zip(&learned) {
        labels.push(if before { i64::from(*id) } else { IGNORE_INDEX });
    }
    let total = input_ids.len();
    let limit = options.max_source_length + options.max_target_length + 1;
    input_ids.truncate(limit);
    labels.truncate(limit);
    // The whole conversation shares one budget, cut from the end: the last answer loses tokens
    // first, then what comes before it.
    let prompt_tokens = last_answer_start;
    let answer_tokens = total - last_answer_start;
    let cut = total.saturating_sub(limit);
    let answer_cut = cut.min(answer_tokens);
    Features {
        input_ids,
        labels,
        prompt_tokens,
        answer_tokens,
        prompt_limit: limit,
        prompt_cut: cut - answer_cut,
        answer_limit: limit,
        answer_cut,
    }
}

/// ChatGLM-6B's `preprocess_function_train`.
fn preprocess_glm(
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
    let prompt_limit = options.max_source_length.saturating_sub(1);
    let answer_limit = options.max_target_length.saturating_sub(2);
    Features {
        input_ids,
        labels,
        prompt_tokens,
        answer_tokens,
        prompt_limit,
        prompt_cut: prompt_tokens.saturating_sub(prompt_limit),
        answer_limit,
        answer_cut: answer_tokens.saturating_sub(answer_limit),
    }
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
    let special = tokenizer.special_ids();
    match tokenizer.family() {
        Family::ChatGlm => {
            let prompt = format!(
                "{}{}",
                options.source_prefix,
                render_prompt(record, !record.history.is_empty())
            );
            let mut ids = tokenizer.encode_plain(&prompt);
            ids.truncate(options.max_source_length.saturating_sub(2));
            ids.extend([special.gmask, special.bos]);
            ids
        }
        Family::ChatGlm2 => {
            let prompt = format!("{}{}", options.source_prefix, glm2_prompt(record));
            let mut ids = tokenizer.prefix_ids();
            ids.extend(
                tokenizer
                    .encode_plain(&prompt)
                    .into_iter()
                    .take(options.max_source_length.saturating_sub(2)),
            );
            ids
        }
        Family::ChatGlm3 => {
            let conversation = glm3_conversation(record, options);
            let last_answer = conversation
                .iter()
                .rposition(|m| m.role == Role::Assistant)
                .unwrap_or(conversation.len());
            let mut ids = tokenizer.prefix_ids();
            for message in &conversation[..last_answer] {
                ids.extend(
                    tokenizer
                        .single_message(message.role, "", &message.content)
                        .unwrap_or_default(),
                );
            }
            ids.truncate(options.max_source_length);
            ids.extend(tokenizer.role_id(Role::Assistant));
            ids
        }
    }
}
