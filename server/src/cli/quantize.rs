//! `glmtune quantize`: an official checkpoint folder as one block-quantized GGUF file (q8_0 or
//! q4_0 linear layers), with its config and tokenizer, ready for `generate`, `chat`, `serve` and the
//! browser. Prints what was written as JSON.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use glmtune_engine::quant::{quantize_checkpoint, Bits, EmbeddingFormat};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EmbeddingsArg {
    Q8,
    F16,
}

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Checkpoint folder in the Hugging Face layout.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Bits per weight of the linear layers: 8 (q8_0) or 4 (q4_0).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["8", "4"]))]
    bits: String,
    /// Storage of the word embeddings and the output layer tied to them.
    #[arg(long, value_enum, default_value_t = EmbeddingsArg::Q8)]
    embeddings: EmbeddingsArg,
    /// Folder to write model.gguf, config.json and the tokenizer into (made if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    if args.out.canonicalize().ok() == args.model.canonicalize().ok() && args.out.exists() {
        bail!("--out must not be the --model folder: the quantized copy goes beside the original");
    }
    let bits = if args.bits == "8" {
        Bits::Eight
    } else {
        Bits::Four
    };
    let embeddings = match args.embeddings {
        EmbeddingsArg::Q8 => EmbeddingFormat::Q8,
        EmbeddingsArg::F16 => EmbeddingFormat::F16,
    };
    let (report, _) = quantize_checkpoint(&args.model, &args.out, bits, embeddings)
        .with_context(|| format!("quantizing {}", args.model.display()))?;
    eprintln!("{report}");
    let tensors: serde_json::Map<String, serde_json::Value> = report
        .tensors
        .iter()
        .map(|(format, n)| (format.clone(), (*n).into()))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "path": report.path,
            "tensors": tensors,
            "f32_bytes": report.f32_bytes,
            "file_bytes": report.file_bytes,
        })
    );
    Ok(())
}
