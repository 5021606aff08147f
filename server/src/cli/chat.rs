//! `glmtune chat`: an interactive conversation with history, streamed as it is generated.
//!
//! Type a message and press Enter; `clear` forgets the history, `exit` (or end of input) quits.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;

use clap::Args;
use glmtune_engine::generation::{answer_blocking, chat_prompt_ids, GenerationOptions, Turn};

use super::model_args::ModelArgs;
use super::sampling_args::SamplingArgs;

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt plus answer length limit in tokens, as the official `chat(max_length=…)`.
    #[arg(long, default_value_t = 2048)]
    max_length: usize,
    /// Decoding: sampling with top-p 0.7 and temperature 0.95 by default, as the official chat.
    #[command(flatten)]
    sampling: SamplingArgs,
}

pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    let loaded = args.model.load()?;
    let mut history: Vec<Turn> = Vec::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "glmtune chat — type a message; `clear` resets the history, `exit` quits."
    )?;
    let mut seed_offset = 0u64;
    loop {
        write!(stdout, "\n用户：")?;
        stdout.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            writeln!(stdout)?;
            return Ok(());
        }
        let query = line.trim();
        match query {
            "" => continue,
            "exit" | "quit" | "stop" => return Ok(()),
            "clear" => {
                history.clear();
                writeln!(stdout, "(history cleared)")?;
                continue;
            }
            _ => {}
        }
        let prompt = chat_prompt_ids(&loaded.tokenizer, None, &history, query);
        let mut sampling = args.sampling.sampling_or(true);
        if let glmtune_engine::generation::Sampling::Sample { seed, .. } = &mut sampling {
            *seed = seed.wrapping_add(seed_offset);
            seed_offset += 1;
        }
        let options = GenerationOptions {
            max_new_tokens: None,
            max_length: Some(args.max_length),
            sampling,
            repetition_penalty: args.sampling.repetition_penalty,
            stop_at_eos: true,
            stop_ids: Vec::new(),
        };
        write!(stdout, "\nChatGLM：")?;
        stdout.flush()?;
        let result = answer_blocking(
            &loaded.model,
            &loaded.tokenizer,
            loaded.prefix.as_ref(),
            &prompt,
            &options,
            &[],
            |text| {
                let _ = write!(stdout, "{text}").and_then(|_| stdout.flush());
                ControlFlow::Continue(())
            },
        );
        let response = match result {
            Ok(answer) => answer.text,
            Err(error) => {
                writeln!(stdout, "\n(generation failed: {error})")?;
                continue;
            }
        };
        writeln!(stdout)?;
        history.push(Turn {
            query: query.to_owned(),
            response,
        });
    }
}
