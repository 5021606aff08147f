//! `glmtune generate`: continue one prompt, streaming the text or printing JSON.

use std::io::Write;

use clap::Args;
use glmtune_engine::generation::{generate, Flow, GenerationOptions, TextStream};

use super::model_args::{upload_to_gpu, BackendArg, ModelArgs};
use super::sampling_args::SamplingArgs;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt, encoded as the official `tokenizer(TEXT)` ([gMASK] <sop> appended).
    #[arg(long)]
    prompt: String,
    /// New tokens at most.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Prompt plus new tokens at most (the official `max_length`); replaces --max-new-tokens.
    #[arg(long, conflicts_with = "max_new_tokens")]
    max_length: Option<usize>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print one JSON object {"ids": [...], "text": "..."} instead of streaming.
    #[arg(long)]
    json: bool,
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    backend: BackendArg,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let loaded = args.model.load()?;
    let prompt = loaded.tokenizer.encode(&args.prompt);
    let options = GenerationOptions {
        max_new_tokens: if args.max_length.is_some() {
            None
        } else {
            Some(args.max_new_tokens)
        },
        max_length: args.max_length,
        sampling: args.sampling.sampling(),
        repetition_penalty: args.sampling.repetition_penalty,
        stop_at_eos: true,
    };
    let eos = loaded.model.config().eos_token_id;
    let mut stream = TextStream::new();
    let mut new_ids = Vec::new();
    let mut stdout = std::io::stdout().lock();
    let mut on_token = |id| {
        if !args.json && id != eos {
            new_ids.push(id);
            if let Some(chunk) = stream.next_chunk(&loaded.tokenizer.decode(&new_ids)) {
                // A closed stdout (e.g. `| head`) ends generation instead of failing it.
                if write!(stdout, "{chunk}")
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    };
    let prefix = loaded.prefix.as_ref();
    let ids = match args.backend {
        BackendArg::Cpu => generate(&loaded.model, prefix, &[prompt], &options, |_, id| {
            on_token(id)
        })?
        .into_iter()
        .next()
        .unwrap_or_default(),
        BackendArg::Wgpu => {
            let gpu = upload_to_gpu(&loaded.model)?;
            pollster::block_on(gpu.generate(prefix, &prompt, &options, on_token))?
        }
    };
    if args.json {
        let text = loaded.tokenizer.decode(&ids);
        writeln!(
            stdout,
            "{}",
            serde_json::json!({ "ids": ids, "text": text })
        )?;
    } else {
        if let Some(chunk) = stream.finish(&loaded.tokenizer.decode(&new_ids)) {
            write!(stdout, "{chunk}")?;
        }
        writeln!(stdout)?;
    }
    Ok(())
}
