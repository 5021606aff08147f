//! ChatGLM2: `preprocess_function_train` of its `ptuning/main.py`: the prompt is always the
//!   `[Round i]\n\n问：…\n\n答：` template (after `source_prefix`),
//!   `a = tokenizer(prompt)` cut to `max_source_length` (`[gMASK] sop` kept),
//!   `b = encode(answer)[:max_target_length]`, `input_ids = a + b + [</s>]`, labels the same
//!   with `a` as pad, padded to `max_source_length + max_target_length + 1`, pad labels -100;

use super::{Features, PreprocessOptions, Preprocessing, IGNORE_INDEX};
use crate::data::records::Record;
use crate::generation::chat::build_prompt_glm2;
use crate::generation::Turn;
use crate::tokenizer::ChatGlmTokenizer;

pub(super) struct ChatGlm2;

impl Preprocessing for ChatGlm2 {
    fn features(
        &self,
        record: &Record,
        tokenizer: &ChatGlmTokenizer,
        options: &PreprocessOptions,
    ) -> Features {
        preprocess(record, tokenizer, options)
    }

    fn rendered_prompt(&self, record: &Record, options: &PreprocessOptions) -> String {
        format!("{}{}", options.source_prefix, prompt(record))
    }

    /// `[gMASK] sop` + the `[Round]` prompt, cut to `max_source_length`.
    fn eval_prompt_ids(
        &self,
        record: &Record,
        tokenizer: &ChatGlmTokenizer,
        options: &PreprocessOptions,
    ) -> Vec<u32> {
        let prompt = self.rendered_prompt(record, options);
        let mut ids = tokenizer.prefix_ids();
        ids.extend(
            tokenizer
                .encode_plain(&prompt)
                .into_iter()
                .take(options.max_source_length.saturating_sub(2)),
        );
        ids
    }
}

fn prompt(record: &Record) -> String {
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
fn preprocess(
    record: &Record,
    tokenizer: &ChatGlmTokenizer,
    options: &PreprocessOptions,
) -> Features {
    let special = tokenizer.special_ids();
    let prompt = format!("{}{}", options.source_prefix, prompt(record));
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
