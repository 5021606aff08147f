//! The general prompts of a run: the base model's answers to them, which the forgetting guard
//! scores every evaluation against and replay mixes into training.

use anyhow::{bail, Context};
use glmtune_engine::data::Record;
use glmtune_engine::generation::forgetting::{
    base_answers, general_probes, probe_prompts, ProbeAnswer,
};
use glmtune_engine::generation::{chat_prompt_ids, response_text};
use glmtune_engine::train::Example;
use glmtune_shared::train_job::TrainJob;

use super::examples;

/// `ratio × train.len()` (rounded) general examples for replay: the base model's own answers to
/// the probe prompts (self-distillation), cycled, with the run's source prefix and lengths.
pub(super) fn replay_examples(
    job: &TrainJob,
    tokenizer: &glmtune_engine::tokenizer::ChatGlmTokenizer,
    probes: &Probes,
    train_len: usize,
    ratio: f64,
) -> anyhow::Result<Vec<Example>> {
    let wanted = (ratio * train_len as f64).round() as usize;
    if wanted == 0 || probes.answers.is_empty() {
        return Ok(Vec::new());
    }
    let records: Vec<Record> = probes
        .answers
        .iter()
        .map(|answer| Record {
            prompt: probes.prompts[answer.prompt].clone(),
            response: response_text(
                tokenizer.family(),
                &tokenizer.decode(&answer.ids[answer.prompt_len..]),
            ),
            history: Vec::new(),
            messages: Vec::new(),
        })
        .collect();
    let examples = examples(job, &records, tokenizer, false)?;
    Ok(examples.iter().cycle().take(wanted).cloned().collect())
}

/// Greedy answers of new tokens the base model gives each probe prompt.
const PROBE_ANSWER_TOKENS: usize = 32;

/// The general prompts, and the base model's answers to them (a prompt it answered with nothing
/// has none).
pub(super) struct Probes {
    pub prompts: Vec<String>,
    pub answers: Vec<ProbeAnswer>,
}

/// The base model's answers to the general prompts (the run's file, else our default set), for
/// the forgetting guard and replay.
pub(super) fn probe_answers(
    job: &TrainJob,
    model: &glmtune_engine::model::ChatGlmModel,
    tokenizer: &glmtune_engine::tokenizer::ChatGlmTokenizer,
) -> anyhow::Result<Probes> {
    let prompts = match &job.probe_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the probe prompts {}", path.display()))?;
            let prompts = probe_prompts(&text);
            if prompts.is_empty() {
                bail!(
                    "{}: no probe prompt (one a line, # comments)",
                    path.display()
                );
            }
            prompts
        }
        None => general_probes(),
    };
    // Asked as the adapter's chats ask: after the run's source prefix, their system prompt (and
    // as the replay examples train).
    let system = job.settings.source_prefix.as_deref();
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|prompt| chat_prompt_ids(tokenizer, system, &[], prompt))
        .collect();
    let answers = base_answers(model, &ids, PROBE_ANSWER_TOKENS)?;
    eprintln!(
        "glmtune: the base model answered {} of {} general prompts",
        answers.len(),
        prompts.len()
    );
    Ok(Probes { prompts, answers })
}
