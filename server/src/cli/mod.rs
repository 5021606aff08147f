//! Command-line interface: argument types and the dispatch to each subcommand.

mod augment;
mod bench;
mod chat;
pub mod config_file;
mod data;
mod encode;
mod eval;
mod fidelity;
mod generate;
mod logits;
pub mod model_args;
mod quantize;
mod sampling_args;
mod score;
mod sweep;
mod teach;
mod token;
mod train;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "glmtune",
    version,
    about = "ChatGLM-6B with P-Tuning v2: tokenize, generate, chat, train"
)]
pub struct Cli {
    /// CPU threads for the model's kernels, on every command (`serve`'s generations, and the
    /// training runs it starts, inherit it); default: the physical cores.
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<std::num::NonZeroUsize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the token ids of TEXT as the official tokenizer gives them, as JSON.
    Encode(encode::EncodeArgs),
    /// Write the logits of a token sequence to a safetensors file.
    Logits(logits::LogitsArgs),
    /// Generate a continuation of a prompt, streaming the text.
    Generate(generate::GenerateArgs),
    /// Chat interactively, with history and streaming.
    Chat(chat::ChatArgs),
    /// Inspect training datasets.
    Data(data::DataArgs),
    /// Serve the dashboard API, training runs and the OpenAI-compatible API.
    Serve(glmtune::serve::ServeArgs),
    /// Answer every validation record and score the answers (BLEU-4, ROUGE).
    Eval(Box<eval::EvalArgs>),
    /// Write a block-quantized (q8_0 / q4_0) copy of a checkpoint folder.
    Quantize(quantize::QuantizeArgs),
    /// Score predictions against references: BLEU-4 and ROUGE-1/2/L as ptuning/main.py.
    Score(score::ScoreArgs),
    /// Create API keys for `glmtune serve`.
    Token(token::TokenArgs),
    /// Measure training speed and memory at a real model shape (random weights), as JSON.
    Bench(bench::BenchArgs),
    /// Train a P-Tuning v2 prefix on a frozen model (the official ptuning/main.py recipe).
    #[command(args_override_self = true)]
    Train(Box<train::TrainArgs>),
    /// Sweep hyperparameters: a grid or random search of trials (each a run folder), the worse
    /// ones stopped by successive halving, and a leaderboard.
    Sweep(sweep::SweepArgs),
    /// Train a server's queued runs on this machine: lease, train, report, upload, again.
    Worker(glmtune::worker::WorkerArgs),
    /// How closely a student (a distilled prefix, a quantized base) answers as its teacher: KL
    /// and greedy agreement on the teacher's answers, as JSON.
    Fidelity(fidelity::FidelityArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    use_threads(cli.threads);
    match cli.command {
        Command::Encode(args) => encode::run(args),
        Command::Logits(args) => logits::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Data(args) => data::run(args),
        Command::Eval(args) => eval::run(*args),
        Command::Serve(args) => Ok(glmtune::serve::run(args)?),
        Command::Quantize(args) => quantize::run(args),
        Command::Score(args) => score::run(args),
        Command::Token(args) => token::run(args),
        Command::Train(args) => train::run(*args),
        Command::Sweep(args) => sweep::run(args),
        Command::Fidelity(args) => fidelity::run(args),
        Command::Worker(args) => Ok(glmtune::worker::run(args)?),
    }
}

/// Sets the threads every CPU pool uses (candle's barrier pool, rayon's, ours) before any of
/// them starts: `--threads`, else `RAYON_NUM_THREADS`, else the physical cores. The variable is
/// what the pools read, and what a training run started by `serve` inherits.
fn use_threads(threads: Option<std::num::NonZeroUsize>) {
    let threads = threads.map_or_else(candle_core::utils::get_num_threads, usize::from);
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
}

/// Help and version go to stdout with success; every other parse failure is one line on stderr
/// and exit code 2.
pub fn report_usage_error(error: clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = error.render().to_string();
            let mut lines = rendered.lines();
            let first = lines.next().unwrap_or("invalid arguments");
            let mut message = first.strip_prefix("error: ").unwrap_or(first).to_owned();
            // "the following required arguments were not provided:" lists them below.
            if message.ends_with(':') {
                let listed: Vec<&str> = lines
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::trim)
                    .collect();
                message = format!("{message} {}", listed.join(", "));
            }
            eprintln!("glmtune: {message} (see --help)");
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}
