//! `glmtune encode`: token ids as the official tokenizer gives them.

use std::path::PathBuf;

use clap::Args;

use super::model_args::load_tokenizer;

#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Checkpoint folder holding ice_text.model (and tokenizer_config.json).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The text to encode.
    text: String,
}

pub fn run(args: EncodeArgs) -> anyhow::Result<()> {
    let tokenizer = load_tokenizer(&args.model)?;
    let output = serde_json::json!({
        "ids": tokenizer.encode(&args.text),
        "plain_ids": tokenizer.encode_plain(&args.text),
    });
    println!("{output}");
    Ok(())
}
