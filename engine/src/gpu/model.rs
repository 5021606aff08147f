//! The forward on the GPU, the same computation as `model::chatglm` for one sequence: ChatGLM-6B's
//! LayerNorm, query/key/value product, 2D rotary, attention with the official scaling and -10000
//! fill, α-scaled residuals, tanh GeLU, final LayerNorm and output layer; or ChatGLM2/3's RMSNorm,
//! grouped query/key/value with interleaved rotary on half of each head, multi-query attention,
//! plain residuals and SwiGLU (`model::glm2`).
//!
//! Weights are uploaded from a loaded [`ChatGlmModel`] one matrix at a time. The key/value cache
//! lives on the GPU and starts with the P-Tuning prefix; only the last token's logits come back.

use super::cache::GpuCache;
use super::params::{
    AttnParams, GatherParams, MatParams, RowParams, GROUPED_QKV, INTERLEAVED_ROTARY,
};
use super::scratch::Scratch;
use super::weights::{GpuMatrix, Layout};
use super::{gpu_error, grid, Gpu};
use crate::config::ChatGlmConfig;
use crate::error::Result;
use crate::model::glm::RESIDUAL_ALPHA;

pub(super) struct GpuLinear {
    pub(super) weight: GpuMatrix,
    pub(super) bias: Option<wgpu::Buffer>,
}

pub(super) struct GpuNorm {
    pub(super) weight: wgpu::Buffer,
    /// LayerNorm's shift; `None` for RMSNorm.
    pub(super) bias: Option<wgpu::Buffer>,
    pub(super) eps: f32,
}

pub(super) struct GpuBlock {
    pub(super) input_layernorm: GpuNorm,
    pub(super) query_key_value: GpuLinear,
    pub(super) dense: GpuLinear,
    pub(super) post_attention_layernorm: GpuNorm,
    pub(super) dense_h_to_4h: GpuLinear,
    pub(super) dense_4h_to_h: GpuLinear,
}

/// Which tokens' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// The last token's only (decoding).
    Last,
    /// Every token's (`glmtune logits`).
    Every,
}

/// A model whose weights live on the GPU.
pub struct GpuModel {
    pub(super) gpu: Gpu,
    pub(crate) config: ChatGlmConfig,
    pub(super) word_embeddings: GpuMatrix,
    pub(super) blocks: Vec<GpuBlock>,
    pub(super) final_layernorm: Option<GpuNorm>,
    /// The word embeddings' buffers again when the output layer is tied to them.
    pub(super) lm_head: GpuMatrix,
    pub(super) cos: wgpu::Buffer,
    pub(super) sin: wgpu::Buffer,
    /// Channels each rotary segment turns.
    pub(super) rotary_dim: usize,
    /// Columns of the cos/sin tables (ChatGLM-6B repeats each frequency; ChatGLM2/3 do not).
    pub(super) table_width: usize,
    pub(super) max_positions: usize,
    pub(crate) vocab: usize,
    /// Bound where a kernel's optional input is absent.
    pub(super) empty: wgpu::Buffer,
    /// The buffers of the last forward pass, taken by the next (a pass running beside it makes
    /// its own).
    pub(super) scratch: std::sync::Mutex<Option<Scratch>>,
}

impl GpuModel {
    pub fn config(&self) -> &ChatGlmConfig {
        &self.config
    }

    pub fn description(&self) -> &str {
        &self.gpu.description
    }

    /// `y = x · weightᵀ (+ bias)`. Block-quantized weights see the activations rounded to 8 bits
    /// first (into `rounded`, at least `tokens × cols`), as the CPU's quantized products do, so
    /// both backends compute the same numbers from the same file.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        weight: &GpuMatrix,
        bias: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
        tokens: usize,
        rounded: &wgpu::Buffer,
    ) {
        let quantized = matches!(weight.layout, Layout::Q8_0 | Layout::Q4_0);
        let x = if quantized && self.gpu.round_activations {
            let params = RowParams::new(weight.cols as u32, tokens as u32, 0.0, 0.0);
            self.gpu.dispatch(
                encoder,
                &self.gpu.kernels.round_activations,
                bytemuck::bytes_of(&params),
                &[(1, x), (2, rounded)],
                grid(tokens * weight.cols / 32),
            );
            rounded
        } else {
            x
        };
        let by_row = self.gpu.row_per_invocation;
        let pipeline = if by_row {
            &self.gpu.kernels.matmul_rows[weight.layout as usize]
        } else {
            &self.gpu.kernels.matmul[weight.layout as usize]
        };
        for chunk in &weight.chunks {
            let params = MatParams {
                rows: chunk.rows as u32,
                cols: weight.cols as u32,
                tokens: tokens as u32,
                has_bias: u32::from(bias.is_some()),
                row_offset: chunk.start as u32,
                out_stride: weight.rows as u32,
                pad: [0; 2],
            };
            let buffers = [
                (1, x),
                (2, y),
                (3, &chunk.scales),
                (4, &chunk.quants),
                (5, bias.unwrap_or(&self.empty)),
            ];
            let (x_groups, y_groups) = if by_row {
                let (x, y, _) = grid(chunk.rows);
                (x, y)
            } else {
                (
                    chunk.rows.min(32768) as u32,
                    chunk.rows.div_ceil(32768) as u32,
                )
            };
            self.gpu.dispatch(
                encoder,
                pipeline,
                bytemuck::bytes_of(&params),
                &buffers,
                (x_groups, y_groups, tokens as u32),
            );
        }
    }

    /// LayerNorm, or RMSNorm when the norm has no bias.
    fn layer_norm(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        norm: &GpuNorm,
        y: &wgpu::Buffer,
        tokens: usize,
    ) {
        let params = RowParams::new(self.config.hidden_size as u32, tokens as u32, norm.eps, 0.0);
        let (kernel, buffers) = match &norm.bias {
            Some(bias) => (
                &self.gpu.kernels.layer_norm,
                vec![(1, x), (2, y), (3, &norm.weight), (4, bias)],
            ),
            None => (
                &self.gpu.kernels.rms_norm,
                vec![(1, x), (2, y), (3, &norm.weight)],
            ),
        };
        self.gpu.dispatch(
            encoder,
            kernel,
            bytemuck::bytes_of(&params),
            &buffers,
            (tokens as u32, 1, 1),
        );
    }

    /// `out = a·α + b` over `tokens` rows of the hidden size (α = √56 in ChatGLM-6B, 1 after).
    fn residual(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        out: &wgpu::Buffer,
        tokens: usize,
    ) {
        let cols = self.config.hidden_size;
        let alpha = if self.config.glm2().is_some() {
            1.0
        } else {
            RESIDUAL_ALPHA as f32
        };
        let params = RowParams::new(cols as u32, tokens as u32, 0.0, alpha);
        self.gpu.dispatch(
            encoder,
            &self.gpu.kernels.scale_add,
            bytemuck::bytes_of(&params),
            &[(2, out), (3, a), (4, b)],
            grid(tokens * cols),
        );
    }

    /// Runs `ids` (positions `[segments][tokens]`, `mask` `[tokens][past + tokens]` with nonzero
    /// meaning masked) through the model, appending to `cache`; returns the logits `logits` asks
    /// for, `[rows × vocab]` row-major.
    pub async fn forward(
        &self,
        ids: &[u32],
        positions: &[Vec<u32>],
        mask: Option<&[u8]>,
        cache: &mut GpuCache,
        logits: Logits,
    ) -> Result<Vec<f32>> {
        let tokens = ids.len();
        let config = &self.config;
        let (h, inner) = (config.hidden_size, config.inner_hidden_size);
        let (heads, head_dim) = (config.num_attention_heads, config.head_dim());
        let glm2 = config.glm2();
        let kv_heads = config.kv_heads();
        let past = cache.len;
        let length = past + tokens;
        if tokens == 0 {
            return Err(gpu_error("no tokens to run"));
        }
        if length > cache.capacity {
            return Err(gpu_error(format!(
                "the cache holds {} positions; {length} are needed",
                cache.capacity
            )));
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= config.vocab_size) {
            return Err(gpu_error(format!(
                "token id {id} is outside the vocabulary of {}",
                config.vocab_size
            )));
        }
        let segments = positions.len();
        if positions.iter().any(|p| p.len() != tokens)
            || positions
                .iter()
                .flatten()
                .any(|&p| p as usize >= self.max_positions)
        {
            return Err(gpu_error(
                "positions must give one value per token, within the rotary table",
            ));
        }
        if mask.is_some_and(|m| m.len() != tokens * length) {
            return Err(gpu_error(format!("the mask must be {tokens}×{length}")));
        }
        let gpu = &self.gpu;
        let logit_rows = if logits == Logits::Every { tokens } else { 1 };
        let kept = self.scratch.lock().ok().and_then(|mut kept| kept.take());
        let scratch = match kept {
            Some(s) if s.fits(tokens, cache.capacity, logit_rows) => s,
            kept => {
                let (t, p, r) = kept.map_or((0, 0, 0), |s| (s.tokens, s.positions, s.logit_rows));
                Scratch::new(
                    gpu,
                    config,
                    tokens.max(t),
                    cache.capacity.max(p),
                    logit_rows.max(r),
                )
            }
        };
        let s = &scratch;
        gpu.queue.write_buffer(&s.ids, 0, bytemuck::cast_slice(ids));
        let flat_positions: Vec<u32> = positions.concat();
        gpu.queue
            .write_buffer(&s.position_ids, 0, bytemuck::cast_slice(&flat_positions));
        if let Some(m) = mask {
            let words: Vec<u32> = m.iter().map(|&v| u32::from(v != 0)).collect();
            gpu.queue
                .write_buffer(&s.mask, 0, bytemuck::cast_slice(&words));
        }
        let (ids_buffer, positions_buffer, mask_buffer) = (&s.ids, &s.position_ids, &s.mask);
        let (hidden, normed, qkv, context) = (&s.hidden, &s.normed, &s.qkv, &s.context);
        let (attended, mixed, wide, gated) = (&s.attended, &s.mixed, &s.wide, &s.gated);
        let (rounded, scores) = (&s.rounded, &s.scores);
        let mut encoder = gpu.device.create_command_encoder(&Default::default());

        let table = &self.word_embeddings;
        for chunk in &table.chunks {
            let params = GatherParams {
                cols: h as u32,
                tokens: tokens as u32,
                layout: table.layout as u32,
                row_start: chunk.start as u32,
                rows: chunk.rows as u32,
                pad: [0; 3],
            };
            let mut buffers = vec![(1, ids_buffer), (2, hidden)];
            buffers.extend([(3, &chunk.scales), (4, &chunk.quants)]);
            gpu.dispatch(
                &mut encoder,
                &gpu.kernels.gather,
                bytemuck::bytes_of(&params),
                &buffers,
                (h.div_ceil(64) as u32, tokens as u32, 1),
            );
        }

        for (layer, block) in self.blocks.iter().enumerate() {
            self.layer_norm(&mut encoder, hidden, &block.input_layernorm, normed, tokens);
            let qkv_layer = &block.query_key_value;
            self.matmul(
                &mut encoder,
                normed,
                &qkv_layer.weight,
                qkv_layer.bias.as_ref(),
                qkv,
                tokens,
                rounded,
            );
            // ChatGLM-6B scales the query by 1/(√d·(layer+1)) and the scores back by layer+1.
            let coeff = if glm2.is_some() {
                1.0
            } else {
                (layer + 1) as f32
            };
            let mut flags = 0;
            if glm2.is_some_and(|g| g.multi_query) {
                flags |= GROUPED_QKV;
            }
            if glm2.is_some() {
                flags |= INTERLEAVED_ROTARY;
            }
            let params = AttnParams {
                tokens: tokens as u32,
                heads: heads as u32,
                head_dim: head_dim as u32,
                rotary_dim: self.rotary_dim as u32,
                segments: segments as u32,
                past: past as u32,
                capacity: cache.capacity as u32,
                has_mask: u32::from(mask.is_some()),
                query_scale: 1.0 / ((head_dim as f32).sqrt() * coeff),
                score_scale: coeff,
                kv_heads: kv_heads as u32,
                flags,
                table_width: self.table_width as u32,
                pad: [0; 3],
            };
            let (keys, values) = (&cache.keys[layer], &cache.values[layer]);
            gpu.dispatch(
                &mut encoder,
                &gpu.kernels.rotate_and_cache,
                bytemuck::bytes_of(&params),
                &[
                    (1, qkv),
                    (2, positions_buffer),
                    (3, &self.cos),
                    (4, &self.sin),
                    (5, keys),
                    (6, values),
                ],
                grid(tokens * heads * segments * self.rotary_dim / 2),
            );
            gpu.dispatch(
                &mut encoder,
                &gpu.kernels.attend,
                bytemuck::bytes_of(&params),
                &[
                    (1, qkv),
                    (2, mask_buffer),
                    (3, keys),
                    (4, values),
                    (5, scores),
                    (6, context),
                ],
                (tokens as u32, heads as u32, 1),
            );
            self.matmul(
                &mut encoder,
                context,
                &block.dense.weight,
                block.dense.bias.as_ref(),
                attended,
                tokens,
                rounded,
            );
            // ChatGLM-6B adds the attention to the normed input (scaled), ChatGLM2/3 to the input.
            let residual_in = match glm2 {
                Some(g) if !g.apply_residual_connection_post_layernorm => hidden,
                _ => normed,
            };
            self.residual(&mut encoder, residual_in, attended, mixed, tokens);
            self.layer_norm(
                &mut encoder,
                mixed,
                &block.post_attention_layernorm,
                normed,
                tokens,
            );
            let up = &block.dense_h_to_4h;
            self.matmul(
                &mut encoder,
                normed,
                &up.weight,
                up.bias.as_ref(),
                wide,
                tokens,
                rounded,
            );
            let params = RowParams::new(inner as u32, tokens as u32, 0.0, 0.0);
            let activated = if glm2.is_some() {
                gpu.dispatch(
                    &mut encoder,
                    &gpu.kernels.swiglu,
                    bytemuck::bytes_of(&params),
                    &[(1, wide), (2, gated)],
                    grid(tokens * inner),
                );
                gated
            } else {
                gpu.dispatch(
                    &mut encoder,
                    &gpu.kernels.gelu,
                    bytemuck::bytes_of(&params),
                    &[(2, wide)],
                    grid(tokens * inner),
                );
                wide
            };
            let down = &block.dense_4h_to_h;
            self.matmul(
                &mut encoder,
                activated,
                &down.weight,
                down.bias.as_ref(),
                attended,
                tokens,
                rounded,
            );
            let residual_in = match glm2 {
                Some(g) if !g.apply_residual_connection_post_layernorm => mixed,
                _ => normed,
            };
            self.residual(&mut encoder, residual_in, attended, hidden, tokens);
        }
        match &self.final_layernorm {
            Some(norm) => self.layer_norm(&mut encoder, hidden, norm, normed, tokens),
            None => encoder.copy_buffer_to_buffer(hidden, 0, normed, 0, (tokens * h * 4) as u64),
        }
        let vocab = self.lm_head.rows;
        let rows = if logits == Logits::Every {
            self.matmul(
                &mut encoder,
                normed,
                &self.lm_head,
                None,
                &s.logits,
                tokens,
                rounded,
            );
            tokens
        } else {
            let at = ((tokens - 1) * h * 4) as u64;
            encoder.copy_buffer_to_buffer(normed, at, &s.last, 0, (h * 4) as u64);
            self.matmul(
                &mut encoder,
                &s.last,
                &self.lm_head,
                None,
                &s.logits,
                1,
                rounded,
            );
            1
        };
        gpu.queue.submit([encoder.finish()]);
        cache.len = length;
        let values = gpu.read_via(&s.logits, &s.readback, rows * vocab).await;
        if let Ok(mut kept) = self.scratch.lock() {
            *kept = Some(scratch);
        }
        values
    }
}
