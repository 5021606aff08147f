//! The buffers a forward pass works in, made once per model and kept between passes: a decode
//! step runs one token after another through the same buffers instead of creating a dozen per
//! token. They grow (once) when a pass needs more tokens or cache positions than any before.

use super::Gpu;
use crate::config::ChatGlmConfig;

pub(super) struct Scratch {
    /// Tokens and cached positions the buffers hold.
    pub(super) tokens: usize,
    pub(super) positions: usize,
    /// Rows of logits `logits` holds.
    pub(super) logit_rows: usize,
    pub(super) ids: wgpu::Buffer,
    pub(super) position_ids: wgpu::Buffer,
    pub(super) mask: wgpu::Buffer,
    pub(super) hidden: wgpu::Buffer,
    pub(super) normed: wgpu::Buffer,
    pub(super) qkv: wgpu::Buffer,
    pub(super) context: wgpu::Buffer,
    pub(super) attended: wgpu::Buffer,
    pub(super) mixed: wgpu::Buffer,
    /// The MLP's up projection (SwiGLU's gate and up side by side), then its product.
    pub(super) wide: wgpu::Buffer,
    pub(super) gated: wgpu::Buffer,
    pub(super) rounded: wgpu::Buffer,
    pub(super) scores: wgpu::Buffer,
    pub(super) last: wgpu::Buffer,
    pub(super) logits: wgpu::Buffer,
    /// Where logits are copied to be read back.
    pub(super) readback: wgpu::Buffer,
}

/// Position segments at most (ChatGLM-6B's 2D positions).
const SEGMENTS: usize = 2;

impl Scratch {
    pub(super) fn new(
        gpu: &Gpu,
        config: &ChatGlmConfig,
        tokens: usize,
        positions: usize,
        logit_rows: usize,
    ) -> Self {
        let (h, inner) = (config.hidden_size, config.inner_hidden_size);
        let projection = config.num_attention_heads * config.head_dim();
        let qkv = projection + 2 * config.kv_heads() * config.head_dim();
        let vocab = config.vocab_size;
        let buffer = |label, floats| gpu.scratch(label, floats);
        Scratch {
            tokens,
            positions,
            logit_rows,
            ids: buffer("ids", tokens),
            position_ids: buffer("positions", SEGMENTS * tokens),
            mask: buffer("mask", tokens * positions),
            hidden: buffer("hidden", tokens * h),
            normed: buffer("normed", tokens * h),
            qkv: buffer("qkv", tokens * qkv),
            context: buffer("context", tokens * projection),
            attended: buffer("attended", tokens * h),
            mixed: buffer("mixed", tokens * h),
            wide: buffer("wide", tokens * 2 * inner),
            gated: buffer("gated", tokens * inner),
            rounded: buffer("rounded", tokens * h.max(inner).max(projection)),
            scores: buffer("scores", config.num_attention_heads * tokens * positions),
            last: buffer("last", h),
            logits: buffer("logits", logit_rows * vocab),
            readback: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: (logit_rows * vocab).max(1) as u64 * 4,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        }
    }

    /// Whether a pass over `tokens` tokens, `positions` cached positions and `logit_rows` rows of
    /// logits fits.
    pub(super) fn fits(&self, tokens: usize, positions: usize, logit_rows: usize) -> bool {
        tokens <= self.tokens && positions <= self.positions && logit_rows <= self.logit_rows
    }
}
