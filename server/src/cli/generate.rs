//! `glmtune generate`: continue one prompt, streaming the text or printing JSON. With `--chat`
//! the prompt is the user's message in the model family's own chat format (`--history` gives
//! the conversation before it).

use std::io::Write;
use std::ops::ControlFlow;

use clap::Args;
use glmtune_engine::generation::detokenize::Detokenizer;
use glmtune_engine::generation::{chat_ids, generate, ChatMessage, GenerationOptions};
use glmtune_engine::tokenizer::Role;

use super::model_args::{check_backend, upload_to_gpu, BackendArg, ModelArgs};
use super::sampling_args::SamplingArgs;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt, encoded as the official `tokenizer(TEXT)` (ChatGLM-6B appends [gMASK] <sop>,
    /// ChatGLM2/3 put [gMASK] sop first). With --chat, the user's message.
    #[arg(long)]
    prompt: String,
    /// Build the model's own chat prompt around --prompt: ChatGLM3's role tokens
    /// (`build_chat_input`), ChatGLM2's and ChatGLM-6B's `[Round i]` format.
    #[arg(long)]
    chat: bool,
    /// With --chat, the conversation so far as a JSON list of {"role", "content"} messages
    /// (roles system, user, assistant, observation).
    #[arg(long, requires = "chat")]
    history: Option<String>,
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
    check_backend(args.backend, &args.model)?;
    let loaded = args.model.load()?;
    let prompt = if args.chat {
        let mut messages: Vec<ChatMessage> = match &args.history {
            Some(json) => serde_json::from_str(json).map_err(|e| {
                anyhow::anyhow!(
                    "--history: expected a JSON list of {{\"role\", \"content\"}} messages (roles system, user, assistant, observation): {e}"
                )
            })?,
            None => Vec::new(),
        };
        messages.push(ChatMessage {
            role: Role::User,
            content: args.prompt.clone(),
        });
        chat_ids(&loaded.tokenizer, &messages).map_err(|e| anyhow::anyhow!("--history: {e}"))?
    } else {
        loaded.tokenizer.encode(&args.prompt)
    };
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
        stop_ids: loaded.tokenizer.stop_ids(),
    };
    let eos = loaded.model.config().eos_token_id;
    // Each id's text from a short window of the latest ids, not everything so far.
    let mut stream = Detokenizer::new(&loaded.tokenizer);
    let mut stdout = std::io::stdout().lock();
    let mut on_token = |id| {
        if !args.json && !options.is_stop(id, eos) {
            if let Some(chunk) = stream.push(id) {
                // A closed stdout (e.g. `| head`) ends generation instead of failing it.
                if write!(stdout, "{chunk}")
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
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
        if let Some(chunk) = stream.finish() {
            write!(stdout, "{chunk}")?;
        }
        writeln!(stdout)?;
    }
    Ok(())
}
