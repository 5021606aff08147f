//! `glmtune fidelity`: how closely a student answers as its teacher — a distilled prefix on a
//! quantized base against the tuned adapter on the full-precision one, say. The teacher answers
//! each prompt greedily; at every token of those answers the two next-token distributions are
//! compared: the mean KL(teacher ‖ student), the change in the answers' log-likelihood, and the
//! share of positions where both would pick the same token (greedy agreement). One JSON object.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::quantized::GgmlDType;
use clap::Args;
use glmtune_engine::generation::chat_prompt_ids;
use glmtune_engine::generation::forgetting::{
    answers, divergence, general_probes, probe_prompts, Side,
};
use glmtune_engine::model::PrefixEncoder;

use super::model_args::{load_tokenizer, ModelArgs};

#[derive(Debug, Args)]
pub struct FidelityArgs {
    /// The student: `--model DIR [--adapter DIR]`.
    #[command(flatten)]
    student: ModelArgs,
    /// Quantize the student's linear layers as training's --quantization-bit does.
    #[arg(long, value_parser = clap::value_parser!(u8).range(4..=8))]
    quantization_bit: Option<u8>,
    /// The teacher's base folder (default: the student's --model, unquantized).
    #[arg(long, value_name = "DIR")]
    teacher_model: Option<PathBuf>,
    /// The teacher's adapter (none: its base alone).
    #[arg(long, value_name = "DIR")]
    teacher_adapter: Option<PathBuf>,
    /// Prompts, one a line (`#` comments); default: our general prompts.
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// Put before every prompt (the adapters' --source-prefix).
    #[arg(long, value_name = "TEXT", default_value = "")]
    source_prefix: String,
    /// Tokens the teacher answers each prompt with, at most.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
}

/// What `glmtune fidelity` prints.
#[derive(Debug, serde::Serialize)]
struct Report {
    /// Mean KL(teacher ‖ student) over the answers' tokens, nats.
    kl: f64,
    logprob_delta: f64,
    greedy_agreement: f64,
    tokens: usize,
    prompts: usize,
}

pub fn run(args: FidelityArgs) -> anyhow::Result<()> {
    let (student, student_prefix) = args.student.load_weights()?;
    let student = match args.quantization_bit {
        Some(4) => student.quantized_layers(GgmlDType::Q4_0)?,
        Some(8) => student.quantized_layers(GgmlDType::Q8_0)?,
        Some(bits) => anyhow::bail!("--quantization-bit {bits}: give 4 or 8"),
        None => student,
    };
    let teacher_dir = args.teacher_model.as_ref().unwrap_or(&args.student.model);
    let teacher = ModelArgs {
        model: teacher_dir.clone(),
        adapter: None,
        ..args.student.clone()
    };
    let (teacher, _) = teacher.load_weights()?;
    let teacher_prefix = match &args.teacher_adapter {
        Some(dir) => Some(
            PrefixEncoder::load_adapter(dir, teacher.config(), student.device())
                .with_context(|| format!("loading adapter {}", dir.display()))?,
        ),
        None => None,
    };
    let tokenizer = load_tokenizer(teacher_dir)?;
    let prompts = match &args.prompt_file {
        Some(path) => probe_prompts(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        ),
        None => general_probes(),
    };
    if prompts.is_empty() {
        anyhow::bail!("no prompts to compare on");
    }
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| chat_prompt_ids(&tokenizer, None, &[], &format!("{}{p}", args.source_prefix)))
        .collect();
    let teacher = Side {
        model: &teacher,
        prefix: teacher_prefix.as_ref(),
    };
    let answered = answers(teacher, &ids, args.max_new_tokens)?;
    let d = divergence(
        teacher,
        Side {
            model: &student,
            prefix: student_prefix.as_ref(),
        },
        &answered,
    )?;
    let report = Report {
        kl: d.kl,
        logprob_delta: d.logprob_delta,
        greedy_agreement: d.agreement,
        tokens: d.tokens,
        prompts: answered.len(),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
