//! ChatGLM3: `process_batch` of `finetune_demo/finetune_hf.py` over the conversation
//!   ([`Record::conversation`]): `[gMASK] sop`, every message as `build_single_message`, `</s>`;
//!   labels are the ids of assistant messages shifted one place right (so the role token after an
//!   assistant message and the final `</s>` are learned, the `<|assistant|>` token is not); both
//!   cut at `max_source_length + max_target_length + 1`, not padded (batches pad on the left);

use super::{Features, PreprocessOptions, Preprocessing, IGNORE_INDEX};
use crate::data::records::Record;
use crate::generation::ChatMessage;
use crate::tokenizer::ChatGlmTokenizer;
use crate::tokenizer::Role;

pub(super) struct ChatGlm3;

impl Preprocessing for ChatGlm3 {
    fn features(
        &self,
        record: &Record,
        tokenizer: &ChatGlmTokenizer,
        options: &PreprocessOptions,
    ) -> Features {
        preprocess(record, tokenizer, options)
    }

    /// The conversation with its role tags.
    fn rendered_prompt(&self, record: &Record, _options: &PreprocessOptions) -> String {
        let conversation = record.conversation();
        let shown = conversation.len().saturating_sub(1);
        conversation[..shown]
            .iter()
            .map(|m| format!("<|{}|>\n{}", m.role.as_str(), m.content))
            .chain(std::iter::once("<|assistant|>".to_owned()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `process_batch_eval` for the record's last answer: the conversation before it cut to
    /// `max_source_length`, then `<|assistant|>`.
    fn eval_prompt_ids(
        &self,
        record: &Record,
        tokenizer: &ChatGlmTokenizer,
        options: &PreprocessOptions,
    ) -> Vec<u32> {
        let conversation = conversation(record, options);
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

/// The record's conversation, with `source_prefix` (when set) as a leading system message.
fn conversation(record: &Record, options: &PreprocessOptions) -> Vec<ChatMessage> {
    let mut conversation = record.conversation();
    if !options.source_prefix.is_empty() {
        conversation.insert(
            0,
            ChatMessage {
                role: Role::System,
                content: options.source_prefix.clone(),
            },
        );
    }
    conversation
}

/// ChatGLM3's `process_batch` for one conversation (`source_prefix` becomes a leading system
/// message when set, as a system prompt).
fn preprocess(
    record: &Record,
    tokenizer: &ChatGlmTokenizer,
    options: &PreprocessOptions,
) -> Features {
    let conversation = conversation(record, options);
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
