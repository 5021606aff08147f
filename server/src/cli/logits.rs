//! `glmtune logits`: the logits of a whole sequence, saved as safetensors.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use glmtune_engine::generation::sequence_logits;

use super::model_args::{check_backend, upload_to_gpu, BackendArg, ModelArgs};

#[derive(Debug, Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated token ids, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    ids: Vec<u32>,
    /// Output safetensors file; it holds one f32 tensor `logits` of shape [seq, vocab].
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    backend: BackendArg,
}

pub fn run(args: LogitsArgs) -> anyhow::Result<()> {
    check_backend(args.backend, &args.model)?;
    let (model, prefix) = args.model.load_weights()?;
    let logits = match args.backend {
        BackendArg::Cpu => sequence_logits(&model, prefix.as_ref(), &args.ids)?,
        BackendArg::Wgpu => {
            let gpu = upload_to_gpu(&model)?;
            pollster::block_on(gpu.sequence_logits(prefix.as_ref(), &args.ids))?
        }
    };
    let tensors = HashMap::from([("logits".to_owned(), logits)]);
    candle_core::safetensors::save(&tensors, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}
