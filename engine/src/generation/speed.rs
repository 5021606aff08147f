//! Generation speed against this machine's limit. Decoding one token reads every weight of the
//! blocks and the output layer once (an embedding row is only gathered), so decode tokens/s can be
//! at most the memory read bandwidth ÷ those bytes. `glmtune bench generate` and
//! `cargo bench --bench inference` measure both in one process and report the fraction reached.

use std::ops::ControlFlow;
use std::str::FromStr;
use std::time::Instant;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};

use super::{generate, GenerationOptions, Sampling};
use crate::config::ChatGlmConfig;
use crate::error::{EngineError, Result};
use crate::model::ChatGlmModel;

/// How a benchmark model's weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 5] = [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::Bf16,
        WeightFormat::Q8_0,
        WeightFormat::Q4_0,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::Q8_0 => "q8_0",
            WeightFormat::Q4_0 => "q4_0",
        }
    }

    /// The dtype of the model's dense tensors, and the block format of its linear layers.
    pub fn storage(self) -> (DType, Option<GgmlDType>) {
        match self {
            WeightFormat::F32 => (DType::F32, None),
            WeightFormat::F16 => (DType::F16, None),
            WeightFormat::Bf16 => (DType::BF16, None),
            WeightFormat::Q8_0 => (DType::F32, Some(GgmlDType::Q8_0)),
            WeightFormat::Q4_0 => (DType::F32, Some(GgmlDType::Q4_0)),
        }
    }

    /// `model` (loaded in [`WeightFormat::storage`]'s dtype) in this format: block-quantized ones
    /// get the linear layers in the format and the embeddings in q8_0, as `glmtune quantize`
    /// writes them.
    pub fn store(self, model: ChatGlmModel) -> Result<ChatGlmModel> {
        match self.storage().1 {
            Some(format) => model.quantized(format, GgmlDType::Q8_0),
            None => Ok(model),
        }
    }

    /// A model of random weights in this format, drawn layer by layer (no dense copy of a large
    /// quantized model is ever made).
    pub fn random_model(self, config: &ChatGlmConfig, seed: u64) -> Result<ChatGlmModel> {
        let (dtype, quantized) = self.storage();
        let model =
            ChatGlmModel::random_with(config.clone(), dtype, quantized, &Device::Cpu, seed)?;
        self.store(model)
    }
}

impl FromStr for WeightFormat {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        WeightFormat::ALL
            .into_iter()
            .find(|w| w.as_str() == text)
            .ok_or_else(|| format!("unknown weight format {text:?}: f32, f16, bf16, q8_0 or q4_0"))
    }
}

/// Bytes of weights one decode step reads: every block's matrices and biases, the norms, and the
/// output layer.
pub fn weight_bytes_per_token(model: &ChatGlmModel) -> u64 {
    let tensor = |t: &candle_core::Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
    let linear =
        |l: &crate::model::weights::Linear| l.weight.bytes() + l.bias.as_ref().map_or(0, tensor);
    let norm = |n: &crate::model::norm::Norm| tensor(&n.weight) + n.bias.as_ref().map_or(0, tensor);
    let blocks: u64 = model
        .blocks
        .iter()
        .map(|b| {
            norm(&b.input_layernorm)
                + linear(&b.query_key_value)
                + linear(&b.dense)
                + norm(&b.post_attention_layernorm)
                + linear(&b.dense_h_to_4h)
                + linear(&b.dense_4h_to_h)
        })
        .sum();
    blocks + model.final_layernorm.as_ref().map_or(0, norm) + linear(&model.lm_head)
}

/// Bytes of keys and values one decode step reads from the cache, on average over a generation
/// of `new_tokens` after `prompt_tokens`: every layer's keys and values of every earlier position
/// (ChatGLM2/3's multi-query attention caches 2 key/value heads where ChatGLM-6B caches 32).
pub fn cache_bytes_per_token(model: &ChatGlmModel, prompt_tokens: usize, new_tokens: usize) -> u64 {
    let config = model.config();
    let per_position = 2
        * config.num_layers
        * config.kv_heads()
        * config.head_dim()
        * model.dtype().size_in_bytes();
    // Step i (1 ≤ i < new_tokens) reads prompt + i positions.
    let steps = new_tokens.saturating_sub(1).max(1) as u64;
    let positions: u64 = (1..new_tokens.max(2) as u64)
        .map(|i| prompt_tokens as u64 + i)
        .sum();
    per_position as u64 * positions / steps
}

/// Bytes per second of a read of `bytes` (larger than the caches), split over `threads` threads:
/// the best of three passes.
///
/// Each thread reads its part as four streams with software prefetch: a single sequential stream
/// per core leaves the memory idle part of the time (15 % less on this machine), and the kernels
/// read several streams, so the bound would understate what a decode can reach.
pub fn read_bandwidth(bytes: usize, threads: usize) -> f64 {
    let words = (bytes / 8).max(1);
    // Written, so the pages are really there before the timed reads.
    let data: Vec<u64> = (0..words as u64).collect();
    let threads = threads.max(1);
    let chunk = words.div_ceil(threads);
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let sum = std::thread::scope(|scope| {
            let parts: Vec<_> = data
                .chunks(chunk)
                .map(|part| scope.spawn(move || read_streams(part)))
                .collect();
            parts
                .into_iter()
                .map(|p| p.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        let seconds = start.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max((words * 8) as f64 / seconds);
    }
    best
}

/// The wrapping sum of `part`, read as four interleaved streams, each prefetched 8 KiB ahead.
fn read_streams(part: &[u64]) -> u64 {
    const STREAMS: usize = 4;
    const LINE: usize = 8;
    #[cfg(target_arch = "x86_64")]
    const AHEAD: usize = 1024;
    let len = part.len() / STREAMS / LINE * LINE;
    let mut acc = [0u64; STREAMS];
    for i in (0..len).step_by(LINE) {
        for (s, acc) in acc.iter_mut().enumerate() {
            let at = s * len + i;
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch never faults, whatever the address.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch::<_MM_HINT_T0>(part.as_ptr().wrapping_add(at + AHEAD) as *const i8);
            }
            for &x in &part[at..at + LINE] {
                *acc = acc.wrapping_add(x);
            }
        }
    }
    part[STREAMS * len..]
        .iter()
        .chain(&acc)
        .fold(0u64, |sum, &x| sum.wrapping_add(x))
}

/// Prompt and decode rates of greedy generations (medians over the runs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationSpeed {
    /// Prompt tokens ÷ the time to the first new token.
    pub prompt_tokens_per_second: f64,
    /// New tokens after the first ÷ the time from the first to the last.
    pub decode_tokens_per_second: f64,
}

/// A prompt of `tokens` ids: text ids, then (ChatGLM-6B, whose positions count from them)
/// `[gMASK] <sop>`; ChatGLM2/3's causal positions need no such marks, so theirs is text only.
pub fn prompt_ids(config: &ChatGlmConfig, tokens: usize) -> Vec<u32> {
    prompt_ids_from(config, tokens, 20)
}

/// As [`prompt_ids`], the text ids counting from `first` (different prompts for streams).
fn prompt_ids_from(config: &ChatGlmConfig, tokens: usize, first: u32) -> Vec<u32> {
    let text = |n: usize| {
        (0..n as u32)
            .map(|i| 20 + (first.saturating_sub(20) + i) % 400)
            .collect::<Vec<u32>>()
    };
    if config.glm2().is_some() {
        return text(tokens);
    }
    let mut ids = text(tokens.saturating_sub(2));
    ids.extend([config.gmask_token_id, config.bos_token_id]);
    ids
}

/// Greedy decoding of `new_tokens`, never stopping early.
pub fn fixed_length(new_tokens: usize) -> GenerationOptions {
    GenerationOptions {
        max_new_tokens: Some(new_tokens),
        max_length: None,
        sampling: Sampling::Greedy,
        repetition_penalty: 1.0,
        stop_at_eos: false,
        stop_ids: Vec::new(),
    }
}

/// Times `runs` generations over a prompt of `prompt_tokens`: `generate_once` runs one, calling
/// its argument at every new token (any backend).
pub fn time_generations<E>(
    prompt_tokens: usize,
    runs: usize,
    mut generate_once: impl FnMut(&mut dyn FnMut()) -> std::result::Result<(), E>,
) -> std::result::Result<GenerationSpeed, E> {
    let (mut prompt_rates, mut decode_rates) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let start = Instant::now();
        let mut first = None;
        let mut produced = 0usize;
        generate_once(&mut || {
            first.get_or_insert_with(Instant::now);
            produced += 1;
        })?;
        let end = Instant::now();
        let first = first.unwrap_or(end);
        prompt_rates.push(prompt_tokens as f64 / (first - start).as_secs_f64());
        if produced > 1 {
            decode_rates.push((produced - 1) as f64 / (end - first).as_secs_f64());
        }
    }
    Ok(GenerationSpeed {
        prompt_tokens_per_second: median(prompt_rates),
        decode_tokens_per_second: median(decode_rates),
    })
}

/// The prompt and options of a speed measurement (any backend): `prompt_tokens` of text, then
/// `new_tokens` greedy ones with no early stop; refused below 2 of each or with no run.
pub fn speed_inputs(
    config: &ChatGlmConfig,
    prompt_tokens: usize,
    new_tokens: usize,
    runs: usize,
) -> Result<(Vec<u32>, GenerationOptions)> {
    if prompt_tokens < 2 || new_tokens < 2 || runs == 0 {
        return Err(EngineError::Input(
            "a speed measurement needs 2 prompt tokens, 2 new tokens and 1 run at least".into(),
        ));
    }
    Ok((prompt_ids(config, prompt_tokens), fixed_length(new_tokens)))
}

/// Greedy generations of `new_tokens` after a prompt of `prompt_tokens` (no early stop) on the
/// CPU, `runs` times.
pub fn generation_speed(
    model: &ChatGlmModel,
    prompt_tokens: usize,
    new_tokens: usize,
    runs: usize,
) -> Result<GenerationSpeed> {
    let (prompt, options) = speed_inputs(model.config(), prompt_tokens, new_tokens, runs)?;
    time_generations(prompt.len(), runs, |token| {
        generate(
            model,
            None,
            std::slice::from_ref(&prompt),
            &options,
            |_, _| {
                token();
                ControlFlow::Continue(())
            },
        )
        .map(|_| ())
    })
}

/// Decoding many streams together (see [`super::streams`]) against one stream alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamsSpeed {
    /// New tokens of every stream after each one's first ÷ the time from the first to the last.
    pub aggregate_decode_tokens_per_second: f64,
    /// Whether every stream's tokens are those of its prompt generated alone.
    pub identical_to_alone: bool,
}

/// `streams` greedy generations of `new_tokens` over different prompts of `prompt_tokens`,
/// admitted together and decoded in shared steps (the median of `runs`), and each prompt
/// generated alone to compare the tokens.
pub fn streams_speed(
    model: &ChatGlmModel,
    prompt_tokens: usize,
    new_tokens: usize,
    streams: usize,
    runs: usize,
) -> Result<StreamsSpeed> {
    if streams == 0 || new_tokens < 2 || runs == 0 {
        return Err(EngineError::Input(
            "a streams measurement needs 1 stream, 2 new tokens and 1 run at least".into(),
        ));
    }
    let prompts: Vec<Vec<u32>> = (0..streams)
        .map(|i| prompt_ids_from(model.config(), prompt_tokens, 20 + 37 * i as u32))
        .collect();
    let options = fixed_length(new_tokens);
    let mut rates = Vec::with_capacity(runs);
    let mut together = Vec::new();
    for _ in 0..runs {
        let mut batch = super::Streams::new(model);
        let mut order = Vec::with_capacity(streams);
        for prompt in &prompts {
            order.push(batch.admit(super::StreamRequest {
                prompt: prompt.clone(),
                options: options.clone(),
                prefix: None,
            })?);
        }
        batch.join_all()?;
        let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); streams];
        let mut first = None;
        let mut produced = 0usize;
        while !batch.is_empty() {
            batch.step(|stream, token| {
                first.get_or_insert_with(Instant::now);
                produced += 1;
                if let Some(slot) = order.iter().position(|&s| s == stream) {
                    tokens[slot].push(token);
                }
                ControlFlow::Continue(())
            })?;
        }
        let seconds = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
        rates.push(produced.saturating_sub(streams) as f64 / seconds.max(f64::MIN_POSITIVE));
        together = tokens;
    }
    let mut identical = true;
    for (prompt, tokens) in prompts.iter().zip(&together) {
        let alone = generate(
            model,
            None,
            std::slice::from_ref(prompt),
            &options,
            |_, _| ControlFlow::Continue(()),
        )?;
        identical &= alone.first() == Some(tokens);
    }
    Ok(StreamsSpeed {
        aggregate_decode_tokens_per_second: median(rates),
        identical_to_alone: identical,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_bytes_count_the_blocks_and_the_output_layer_in_their_storage() {
        let config = ChatGlmConfig::synthetic(512, 256, 2, 2, 1024);
        let (h, inner, vocab) = (256u64, 1024u64, 512u64);
        let matrices = 2 * (3 * h * h + h * h + 2 * h * inner);
        let vectors = 2 * (3 * h + h + inner + h) + 2 * 2 * (2 * h) + 2 * h;
        let f32_model = WeightFormat::F32.random_model(&config, 1).unwrap();
        assert_eq!(
            weight_bytes_per_token(&f32_model),
            4 * (matrices + vectors + vocab * h)
        );
        let q4 = WeightFormat::Q4_0.random_model(&config, 1).unwrap();
        // q4_0: 32 weights in 18 bytes; the tied output layer is the q8_0 embeddings (34 bytes).
        assert_eq!(
            weight_bytes_per_token(&q4),
            matrices / 32 * 18 + 4 * vectors + vocab * h / 32 * 34
        );
    }

    #[test]
    fn the_bandwidth_probe_reads_every_word() {
        for len in [0usize, 7, 64, 1000, 4099] {
            let part: Vec<u64> = (0..len as u64).map(|i| i * 2_654_435_761).collect();
            let sum = part.iter().fold(0u64, |a, &x| a.wrapping_add(x));
            assert_eq!(read_streams(&part), sum, "{len} words");
        }
    }

    #[test]
    fn cache_bytes_count_each_layers_key_value_heads() {
        // ChatGLM-6B-like: 2 layers, 2 heads of 128, f32; steps read 11, 12 and 13 positions.
        let glm = WeightFormat::F32
            .random_model(&ChatGlmConfig::synthetic(512, 256, 2, 2, 1024), 1)
            .unwrap();
        assert_eq!(cache_bytes_per_token(&glm, 10, 4), 2 * 2 * 2 * 128 * 4 * 12);
    }

    #[test]
    fn formats_parse_from_their_names() {
        for format in WeightFormat::ALL {
            assert_eq!(format.as_str().parse::<WeightFormat>(), Ok(format));
        }
        assert!("q5_0".parse::<WeightFormat>().is_err());
    }
}
