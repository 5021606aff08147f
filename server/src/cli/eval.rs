//! `glmtune eval`: generate for every validation record and score the answers, as
//! `ptuning/main.py --do_predict --predict_with_generate` does.
//!
//! Prompts follow the model family's own evaluation preprocessing
//! ([`eval_prompt_ids`]: ChatGLM-6B's and ChatGLM2's `preprocess_function_eval`, ChatGLM3's
//! `process_batch_eval` for the last answer), after `--source-prefix`, cut to `max_source_length`.
//! Generation stops at `max_source_length + max_target_length + 1` tokens in all, sampling with
//! top-p 0.7 and temperature 0.95 unless `--greedy`. References are the responses cut to
//! `max_target_length` tokens, as the official labels are.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use glmtune_engine::data::{eval_prompt_ids, PreprocessOptions};
use glmtune_engine::generation::{chat_format, generate, GenerationOptions};
use glmtune_engine::metrics::{exact_match, exact_match_rate, score_corpus};
use glmtune_shared::api::ScoreTable;

use super::data::DatasetArgs;
use super::model_args::ModelArgs;
use super::sampling_args::SamplingArgs;

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Records to answer (JSON lines or a JSON array).
    #[arg(long, value_name = "FILE")]
    validation_file: PathBuf,
    #[command(flatten)]
    dataset: DatasetArgs,
    #[arg(long, default_value_t = 64)]
    max_source_length: usize,
    #[arg(long, default_value_t = 64)]
    max_target_length: usize,
    /// Text put before every prompt, as in training (the official --source_prefix).
    #[arg(long, value_name = "TEXT", default_value = "")]
    source_prefix: String,
    /// Answer only the first N records (the official --max_predict_samples).
    #[arg(long, value_name = "N")]
    max_predict_samples: Option<usize>,
    /// Prompts generated together (left-padded).
    #[arg(long, default_value_t = 8)]
    per_device_eval_batch_size: usize,
    /// Decoding: sampling with top-p 0.7 and temperature 0.95 by default, as the official script.
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Where generated_predictions.jsonl is written.
    #[arg(long, value_name = "DIR")]
    output_dir: PathBuf,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if args.max_source_length < 3 || args.max_target_length < 3 {
        bail!("--max-source-length and --max-target-length must be at least 3");
    }
    let loaded = args.model.load()?;
    let (mut records, _) = args.dataset.read_usable(&args.validation_file)?;
    if let Some(limit) = args.max_predict_samples {
        records.truncate(limit.max(1));
    }
    let tokenizer = &loaded.tokenizer;
    let special = tokenizer.special_ids();
    let preprocess = PreprocessOptions {
        source_prefix: args.source_prefix.clone(),
        ..PreprocessOptions::new(args.max_source_length, args.max_target_length, false)
    };
    let prompts: Vec<Vec<u32>> = records
        .iter()
        .map(|record| eval_prompt_ids(record, tokenizer, &preprocess))
        .collect();
    let family = tokenizer.family();
    let references: Vec<String> = records
        .iter()
        .map(|record| {
            let mut ids = tokenizer.encode_plain(&record.response);
            ids.truncate(args.max_target_length - 2);
            tokenizer.decode(&ids).trim().to_owned()
        })
        .collect();
    let options = GenerationOptions {
        max_new_tokens: None,
        max_length: Some(args.max_source_length + args.max_target_length + 1),
        sampling: args.sampling.sampling_or(true),
        repetition_penalty: args.sampling.repetition_penalty,
        stop_at_eos: true,
        stop_ids: tokenizer.stop_ids(),
    };
    let mut predictions = Vec::with_capacity(records.len());
    for (batch_index, batch) in prompts
        .chunks(args.per_device_eval_batch_size.max(1))
        .enumerate()
    {
        let outputs = generate(
            &loaded.model,
            loaded.prefix.as_ref(),
            batch,
            &options,
            |_, _| ControlFlow::Continue(()),
        )?;
        for ids in outputs {
            let kept: Vec<u32> = ids
                .into_iter()
                .filter(|id| {
                    !options.stop_ids.contains(id) && *id != special.eos && *id != special.pad
                })
                .collect();
            let text = tokenizer.decode(&kept);
            predictions.push(chat_format(family).prediction_text(&text));
        }
        eprintln!(
            "glmtune: generated {}/{}",
            (batch_index * args.per_device_eval_batch_size + batch.len()).min(records.len()),
            records.len()
        );
    }
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("creating {}", args.output_dir.display()))?;
    let path = args
        .output_dir
        .join(glmtune_shared::run_layout::RunLayout::PREDICTIONS);
    let (mean, per_example, warnings) = score_corpus(&predictions, &references)?;
    for warning in warnings {
        eprintln!("glmtune: {warning}");
    }
    let table =
        |scores: &glmtune_engine::metrics::Scores, exact: f64| -> anyhow::Result<ScoreTable> {
            let mut table: ScoreTable = serde_json::from_value(serde_json::to_value(scores)?)?;
            table.insert("exact-match".into(), exact);
            Ok(table)
        };
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    for (((label, predict), record), scores) in references
        .iter()
        .zip(&predictions)
        .zip(&records)
        .zip(&per_example)
    {
        let exact = if exact_match(predict, label) {
            100.0
        } else {
            0.0
        };
        let line = glmtune_shared::api::Prediction {
            labels: label.clone(),
            predict: predict.clone(),
            prompt: Some(record.prompt.clone()),
            scores: Some(table(scores, exact)?),
        };
        writeln!(file, "{}", serde_json::to_string(&line)?)?;
    }
    let mean = table(&mean, exact_match_rate(&predictions, &references))?;
    println!("{}", serde_json::to_string(&mean)?);
    Ok(())
}
