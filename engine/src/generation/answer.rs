//! One chat answer, the same for the server, `glmtune chat` and the browser: the sampling loop on
//! a backend (candle on the CPU, or wgpu), each new id turned into text incrementally
//! ([`Detokenizer`]), cleaned up as the generation's `chat()` does ([`Cleanup`]), cut at the
//! request's stop sequences, and handed out as soon as no later token can change it. The cost of a
//! streamed token does not grow with the answer (`cargo bench --bench streaming`).

use std::ops::ControlFlow;

use super::chat::chat_format;
use super::cleanup::Cleanup;
use super::detokenize::Detokenizer;
use super::generate::{generate, run_ready};
use super::text::partial_match_len;
use super::GenerationOptions;
use crate::error::Result;
use crate::model::{ChatGlmModel, PrefixEncoder};
use crate::tokenizer::{ChatGlmTokenizer, Family};

/// A model an answer can be generated on: candle's (here) or the wgpu one (`gpu::decode`).
// The futures are driven on one thread (the caller's, or a browser worker's), so no `Send` bound
// is asked of them.
#[allow(async_fn_in_trait)]
pub trait Backend {
    fn eos_token_id(&self) -> u32;

    /// `generation::generate` for one prompt: its new ids, `on_token` seeing each as chosen.
    async fn generate_one(
        &self,
        prefix: Option<&PrefixEncoder>,
        prompt: &[u32],
        options: &GenerationOptions,
        on_token: impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Vec<u32>>;
}

impl Backend for ChatGlmModel {
    fn eos_token_id(&self) -> u32 {
        self.config().eos_token_id
    }

    async fn generate_one(
        &self,
        prefix: Option<&PrefixEncoder>,
        prompt: &[u32],
        options: &GenerationOptions,
        mut on_token: impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Vec<u32>> {
        let prompts = [prompt.to_vec()];
        let mut outputs = generate(self, prefix, &prompts, options, |_, id| on_token(id))?;
        Ok(outputs.pop().unwrap_or_default())
    }
}

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model ended it, or a stop sequence did.
    Stop,
    /// The token budget ran out.
    Length,
    /// The caller stopped it (`on_text` broke).
    Cancelled,
}

impl Finish {
    /// The OpenAI `finish_reason` (a cancelled answer reports `length`: it was cut short).
    pub fn openai(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length | Finish::Cancelled => "length",
        }
    }
}

/// A finished answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The whole answer as `chat()` returns it, cut at the first stop sequence.
    pub text: String,
    pub finish: Finish,
    /// New tokens generated, a stop token included.
    pub completion_tokens: usize,
}

/// The text side of an answer in progress: ids in, cleaned text out.
pub struct AnswerStream<'t> {
    tokenizer: &'t ChatGlmTokenizer,
    family: Family,
    detokenizer: Detokenizer<'t>,
    cleanup: Cleanup,
    stops: StopSequences,
    /// Everything handed out so far.
    sent: String,
}

impl<'t> AnswerStream<'t> {
    pub fn new(tokenizer: &'t ChatGlmTokenizer, stops: &[String]) -> Self {
        let family = tokenizer.family();
        Self {
            tokenizer,
            family,
            detokenizer: Detokenizer::new(tokenizer),
            cleanup: Cleanup::new(chat_format(family).cleanup()),
            stops: StopSequences::new(stops),
            sent: String::new(),
        }
    }

    /// Takes a generated id (not a stop id); returns the text to hand out now, if any.
    pub fn push(&mut self, id: u32) -> Option<String> {
        let raw = self.detokenizer.push(id)?;
        let clean = self.cleanup.push(&raw);
        let out = self.stops.push(&clean);
        self.sent.push_str(&out);
        (!out.is_empty()).then_some(out)
    }

    /// Whether a stop sequence has appeared (nothing after it is handed out).
    pub fn stopped(&self) -> bool {
        self.stops.found
    }

    /// The final text, from the whole decoded answer (once), and the part of it not handed out
    /// yet. Should the final text not extend what was handed out (a decoder can rewrite text
    /// already shown), what follows the common beginning is handed out, so no text is lost.
    pub fn finish(self) -> (String, Option<String>) {
        let decoded = self.tokenizer.decode(self.detokenizer.ids());
        let whole = chat_format(self.family).response_text(&decoded);
        let text = self.stops.cut(&whole).to_owned();
        let rest = super::text::unshown(&self.sent, &text);
        (text, rest)
    }
}

/// A request's stop sequences over the cleaned text: text that may be the start of one is held
/// back, and nothing from the first one on is handed out.
struct StopSequences {
    stops: Vec<String>,
    /// The cleaned text not handed out yet.
    held: String,
    found: bool,
}

impl StopSequences {
    fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
            found: false,
        }
    }

    fn push(&mut self, text: &str) -> String {
        if self.found {
            return String::new();
        }
        self.held.push_str(text);
        // Text handed out never holds the start of a stop sequence, so a match lies in `held`.
        if let Some(at) = self.first(&self.held) {
            self.found = true;
            let out = self.held[..at].to_owned();
            self.held.clear();
            return out;
        }
        let keep = partial_match_len(&self.held, self.stops.iter().map(String::as_str));
        self.held.drain(..self.held.len() - keep).collect()
    }

    /// Where the first stop sequence in `text` starts.
    fn first(&self, text: &str) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
    }

    /// `text` up to its first stop sequence.
    fn cut<'a>(&self, text: &'a str) -> &'a str {
        &text[..self.first(text).unwrap_or(text.len())]
    }
}

/// Answers `prompt` (ids in the generation's chat format, `chat::chat_prompt_ids`): generates
/// on `backend` until a stop id, a stop sequence, the budget, or `on_text` breaking, calling
/// `on_text` with each piece of text as it is settled.
pub async fn answer(
    backend: &impl Backend,
    tokenizer: &ChatGlmTokenizer,
    prefix: Option<&PrefixEncoder>,
    prompt: &[u32],
    options: &GenerationOptions,
    stops: &[String],
    mut on_text: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<Answer> {
    let options = GenerationOptions {
        stop_ids: tokenizer.stop_ids(),
        ..options.clone()
    };
    let eos = backend.eos_token_id();
    let mut stream = AnswerStream::new(tokenizer, stops);
    let mut ended_by_model = false;
    let mut cancelled = false;
    let on_token = |id: u32| {
        if options.is_stop(id, eos) {
            ended_by_model = true;
            return ControlFlow::Continue(());
        }
        if let Some(text) = stream.push(id) {
            if on_text(&text).is_break() {
                cancelled = true;
                return ControlFlow::Break(());
            }
        }
        if stream.stopped() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let ids = backend
        .generate_one(prefix, prompt, &options, on_token)
        .await?;
    let stopped = stream.stopped();
    let (text, rest) = stream.finish();
    if let Some(rest) = rest {
        let _ = on_text(&rest);
    }
    let finish = if ended_by_model || stopped {
        Finish::Stop
    } else if cancelled {
        Finish::Cancelled
    } else {
        Finish::Length
    };
    Ok(Answer {
        text,
        finish,
        completion_tokens: ids.len(),
    })
}

/// [`answer`] on the CPU, on the calling thread.
pub fn answer_blocking(
    model: &impl Backend,
    tokenizer: &ChatGlmTokenizer,
    prefix: Option<&PrefixEncoder>,
    prompt: &[u32],
    options: &GenerationOptions,
    stops: &[String],
    on_text: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<Answer> {
    run_ready(answer(
        model, tokenizer, prefix, prompt, options, stops, on_text,
    ))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_sequences_hold_back_their_start_and_cut_at_the_earliest() {
        let mut stops = StopSequences::new(&["b".into(), "cd".into(), String::new()]);
        assert_eq!(stops.push("a"), "a");
        assert_eq!(stops.push("xc"), "x");
        assert_eq!(stops.push("e"), "ce");
        assert_eq!(stops.push("zcdb"), "z");
        assert!(stops.found);
        assert_eq!(stops.push("more"), "");
        assert_eq!(stops.cut("abcde"), "a");
        assert_eq!(stops.cut("xyz"), "xyz");
    }
}
