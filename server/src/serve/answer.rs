//! One answer from a served model: the ChatGLM prompt from a query and its history, generation
//! with streaming text, stop sequences and the finish reason. Both chat APIs use it.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use glmtune_engine::generation::{
    answer_blocking, chat_prompt_ids, GenerationOptions, Sampling, Turn,
};

use crate::serve::error::ApiError;
use crate::serve::metrics::Metrics;
use crate::serve::registry::Served;

/// `chat(max_length=2048)`: prompt and answer together.
const OFFICIAL_MAX_LENGTH: usize = 2048;

/// What one chat request may ask for (`--max-new-tokens`, `--max-prompt-tokens`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_new_tokens: usize,
    pub max_prompt_tokens: usize,
}

/// What to answer and how.
pub struct Question {
    /// Text put before the rendered prompt, as `--source-prefix` in training; `None`: the served
    /// model's own (a run's source prefix, or nothing).
    pub system: Option<String>,
    pub query: String,
    pub history: Vec<Turn>,
    pub options: GenerationOptions,
    pub stops: Vec<String>,
}

impl Question {
    /// The official `chat()` sampling (top-p 0.7, temperature 0.95) unless told otherwise;
    /// temperature 0 decodes greedily.
    pub fn sampling(temperature: Option<f32>, top_p: Option<f32>, seed: Option<u64>) -> Sampling {
        match temperature {
            Some(t) if t <= 0.0 => Sampling::Greedy,
            temperature => Sampling::Sample {
                temperature: temperature.unwrap_or(0.95),
                top_p: top_p.unwrap_or(0.7),
                top_k: 0,
                seed: seed.unwrap_or_else(|| crate::db::now() as u64),
            },
        }
    }

    /// The generation options of a request, `max_tokens` refused past the server's limit.
    pub fn options(
        max_tokens: Option<usize>,
        sampling: Sampling,
        limits: &Limits,
    ) -> Result<GenerationOptions, ApiError> {
        if let Some(n) = max_tokens.filter(|&n| n > limits.max_new_tokens) {
            return Err(ApiError::invalid(format!(
                "max_tokens: {n} is more than this server allows ({}, its --max-new-tokens)",
                limits.max_new_tokens
            )));
        }
        // Without max_tokens, the official chat()'s max_length of 2048 (prompt included), within
        // the server's limit.
        let (max_new_tokens, max_length) = match max_tokens {
            Some(n) => (Some(n), None),
            None if limits.max_new_tokens >= OFFICIAL_MAX_LENGTH => {
                (None, Some(OFFICIAL_MAX_LENGTH))
            }
            None => (Some(limits.max_new_tokens), None),
        };
        Ok(GenerationOptions {
            max_new_tokens,
            max_length,
            sampling,
            repetition_penalty: 1.0,
            stop_at_eos: true,
            stop_ids: Vec::new(),
        })
    }

    /// The model input for this question: the served model's chat format, with the question's
    /// system prompt or the model's own.
    fn prompt(&self, served: &Served) -> Vec<u32> {
        let system = self.system.as_deref().or(served.source_prefix.as_deref());
        chat_prompt_ids(&served.base.tokenizer, system, &self.history, &self.query)
    }

    /// The question with its prompt rendered once, refused when longer than `limits` allow,
    /// before any generation.
    pub fn check(self, served: &Served, limits: &Limits) -> Result<Checked, ApiError> {
        let prompt = self.prompt(served);
        let tokens = prompt.len();
        if tokens > limits.max_prompt_tokens {
            return Err(ApiError::invalid(format!(
                "messages: the prompt is {tokens} tokens, more than this server accepts ({}, its --max-prompt-tokens)",
                limits.max_prompt_tokens
            )));
        }
        Ok(Checked {
            question: self,
            prompt,
        })
    }
}

/// A question whose prompt fits the server's limits: what [`answer`] takes.
pub struct Checked {
    question: Question,
    /// The model input, in the served model's chat format.
    prompt: Vec<u32>,
}

pub struct Answer {
    pub text: String,
    /// `stop` (end of answer or a stop sequence) or `length`.
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Seconds spent generating (the model's own time, queueing excluded).
    pub model_seconds: f64,
}

/// Set when the request that wanted an answer is gone (its handler was dropped, e.g. by the
/// request timeout): generation stops at the next token instead of running on for nobody.
#[derive(Default)]
struct Abandoned(Arc<AtomicBool>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The whole answer, generated off the async threads; dropping the future stops generation.
pub async fn answer_whole(
    served: Served,
    metrics: Arc<Metrics>,
    question: Checked,
) -> Result<Answer, ApiError> {
    let abandoned = Abandoned::default();
    let gone = abandoned.0.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        answer(&served, &metrics, &question, |_| {
            !gone.load(Ordering::Relaxed)
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    drop(abandoned);
    outcome
}

/// Generates the answer (blocking), calling `on_text` with each new piece; `on_text` returning
/// false (a closed connection) stops generation.
pub fn answer(
    served: &Served,
    metrics: &Metrics,
    checked: &Checked,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Answer, ApiError> {
    let base = &served.base;
    let (question, prompt) = (&checked.question, &checked.prompt);
    let started = std::time::Instant::now();
    let on_text = |text: &str| {
        if on_text(text) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    };
    let (tokenizer, prefix) = (&base.tokenizer, served.prefix.as_deref());
    let (options, stops) = (&question.options, &question.stops);
    let answer = match &base.batcher {
        // The CPU: decoded together with every other chat of this model.
        Some(batcher) => {
            answer_blocking(batcher, tokenizer, prefix, prompt, options, stops, on_text)?
        }
        None => {
            let _turn = base.turn.lock();
            answer_blocking(
                &*base.model,
                tokenizer,
                prefix,
                prompt,
                options,
                stops,
                on_text,
            )?
        }
    };
    let elapsed = started.elapsed();
    metrics.observe_generation(answer.completion_tokens, elapsed);
    Ok(Answer {
        text: answer.text,
        finish_reason: answer.finish.openai(),
        prompt_tokens: prompt.len(),
        completion_tokens: answer.completion_tokens,
        model_seconds: elapsed.as_secs_f64(),
    })
}
