//! ChatGLM-6B, `preprocess_function_train` of its `ptuning/main.py`:
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

use super::{Features, PreprocessOptions, Preprocessing, IGNORE_INDEX};
use crate::data::records::Record;
use crate::tokenizer::ChatGlmTokenizer;

pub(super) struct ChatGlm;

impl Preprocessing for ChatGlm {
    fn features(
        &self,
        record: &Record,
        tokenizer: &ChatGlmTokenizer,
        options: &PreprocessOptions,
    ) -> Features {
        preprocess(record, tokenizer, options)
    }

    fn sequence_length(&self, options: &PreprocessOptions) -> usize {
        options.max_seq_length()
    }

    fn history_template(&self) -> bool {
        true
    }

    fn rendered_prompt(&self, record: &Record, options: &PreprocessOptions) -> String {
        format!(
            "{}{}",
            options.source_prefix,
            render_prompt(record, options.use_history)
        )
    }

    /// `encode(prefix + prompt)[:max_source_length - 2] + [gMASK] <sop>` (the `[Round]` template
    /// only with history, as `preprocess_function_eval`).
    fn eval_prompt_ids(
        &self,
        record: &Record,
        tokenizer: &ChatGlmTokenizer,
        options: &PreprocessOptions,
    ) -> Vec<u32> {
        let special = tokenizer.special_ids();
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

/// ChatGLM-6B's `preprocess_function_train`.
fn preprocess(
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
