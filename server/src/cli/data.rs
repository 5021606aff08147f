//! `glmtune data`: training datasets, read and preprocessed as THUDM's `ptuning/main.py` does.
//!
//! `glmtune data inspect FILE --model DIR` reads the records, tokenizes them as training would
//! and prints counts, token-length statistics, truncation and one rendered example;
//! `glmtune data augment` makes a new version of a dataset (`augment`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use glmtune::dataset::format_of;
use glmtune_engine::data::{inspect, read_records, PreprocessOptions, ReadReport, Record};
use glmtune_shared::api::{ReadOptions, RecordFormat};

use super::model_args::load_tokenizer;

#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Summarise a training file: record counts, token lengths, truncation, one example.
    Inspect(InspectArgs),
    /// Make a new version of a dataset with new prompts by rule (word deletion, swap,
    /// insertion, punctuation), near-duplicates and validation leaks dropped.
    Augment(super::augment::AugmentArgs),
    /// Make a new dataset with a teacher behind an OpenAI-compatible endpoint: its answers to
    /// the prompts (distillation), or rewordings of them.
    Teach(Box<super::teach::TeachArgs>),
}

/// How to read a dataset's records: shared by `data inspect`, `train` and `eval`.
#[derive(Debug, Clone, Args)]
pub struct DatasetArgs {
    /// Column holding the prompt (the official --prompt_column).
    #[arg(long, value_name = "NAME")]
    pub prompt_column: Option<String>,
    /// Column holding the response (the official --response_column).
    #[arg(long, value_name = "NAME")]
    pub response_column: Option<String>,
    /// Column holding earlier [query, answer] turns (the official --history_column); with it
    /// every prompt gets the `[Round i]` template.
    #[arg(long, value_name = "NAME")]
    pub history_column: Option<String>,
    /// Record layout: auto (detected from the first record's keys, or the columns given),
    /// columns (the official prompt/response/history columns), alpaca
    /// (instruction/input/output/history) or messages (OpenAI `messages`, ShareGPT
    /// `conversations`).
    #[arg(long, default_value = "auto", value_parser = parse_format)]
    pub format: RecordFormat,
    /// Skip unusable records and list them, instead of stopping at the first.
    #[arg(long)]
    pub skip_invalid: bool,
}

fn parse_format(text: &str) -> Result<RecordFormat, String> {
    text.parse()
}

impl DatasetArgs {
    /// The flags as the shared options (what a training job and a stored dataset hold).
    pub fn options(&self) -> ReadOptions {
        ReadOptions {
            format: self.format,
            prompt_column: self.prompt_column.clone(),
            response_column: self.response_column.clone(),
            history_column: self.history_column.clone(),
        }
    }

    /// Reads `path` as these flags say (see [`read_usable`]).
    pub fn read_usable(&self, path: &Path) -> anyhow::Result<(Vec<Record>, ReadReport)> {
        read_usable(&self.options(), self.skip_invalid, path)
    }
}

/// Reads `path` as `options` say, lists every skipped record on stderr, and refuses a file with
/// no usable record.
pub fn read_usable(
    options: &ReadOptions,
    skip_invalid: bool,
    path: &Path,
) -> anyhow::Result<(Vec<Record>, ReadReport)> {
    let format = format_of(options).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (records, report) = read_records(path, &format, skip_invalid)
        .with_context(|| format!("reading {}", path.display()))?;
    for issue in report.skipped_invalid.iter().chain(&report.skipped_empty) {
        eprintln!("glmtune: skipped {issue}");
    }
    if records.is_empty() {
        bail!("{}: no usable records", path.display());
    }
    Ok((records, report))
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The dataset: JSON lines, or one JSON array.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Checkpoint folder holding ice_text.model (and tokenizer_config.json).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Longest prompt, in tokens, with [gMASK] (the official --max_source_length).
    #[arg(long, value_name = "S", default_value_t = 1024)]
    pub max_source_length: usize,
    /// Longest answer, in tokens, with <sop> and <eop> (the official --max_target_length).
    #[arg(long, value_name = "T", default_value_t = 128)]
    pub max_target_length: usize,
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Text put before every prompt (the official --source_prefix).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub source_prefix: String,
}

pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Inspect(args) => run_inspect(args),
        DataCommand::Augment(args) => super::augment::run(args),
        DataCommand::Teach(args) => super::teach::run(*args),
    }
}

fn run_inspect(args: InspectArgs) -> anyhow::Result<()> {
    let format = format_of(&args.dataset.options()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tokenizer = load_tokenizer(&args.model)?;
    let (records, report) = read_records(&args.file, &format, args.dataset.skip_invalid)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let options = PreprocessOptions {
        max_source_length: args.max_source_length,
        max_target_length: args.max_target_length,
        use_history: report.history_column,
        source_prefix: args.source_prefix,
        ..PreprocessOptions::default()
    };
    let summary = inspect(&records, &report, &tokenizer, &options)?;
    print!("{summary}");
    Ok(())
}
