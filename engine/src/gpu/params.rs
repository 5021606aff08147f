//! The kernels' uniform parameters, laid out as the WGSL structs of the same names.

use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct MatParams {
    pub(crate) rows: u32,
    pub(crate) cols: u32,
    pub(crate) tokens: u32,
    pub(crate) has_bias: u32,
    pub(crate) row_offset: u32,
    pub(crate) out_stride: u32,
    pub(crate) pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct RowParams {
    pub(crate) cols: u32,
    pub(crate) rows: u32,
    pub(crate) eps: f32,
    pub(crate) alpha: f32,
    pub(crate) pad: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct GatherParams {
    pub(crate) cols: u32,
    pub(crate) tokens: u32,
    pub(crate) layout: u32,
    pub(crate) row_start: u32,
    pub(crate) rows: u32,
    pub(crate) pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct AttnParams {
    pub(crate) tokens: u32,
    pub(crate) heads: u32,
    pub(crate) head_dim: u32,
    pub(crate) rotary_dim: u32,
    pub(crate) segments: u32,
    pub(crate) past: u32,
    pub(crate) capacity: u32,
    pub(crate) has_mask: u32,
    pub(crate) query_scale: f32,
    pub(crate) score_scale: f32,
    pub(crate) kv_heads: u32,
    /// [`GROUPED_QKV`] | [`INTERLEAVED_ROTARY`].
    pub(crate) flags: u32,
    /// Columns of the cos/sin tables.
    pub(crate) table_width: u32,
    pub(crate) pad: [u32; 3],
}

/// `query_key_value` yields all query heads, then the key groups, then the value groups
/// (ChatGLM2/3 multi-query attention) instead of q, k, v side by side per head.
pub(crate) const GROUPED_QKV: u32 = 1;
/// Rotary pairs are `(2i, 2i + 1)` (ChatGLM2/3) instead of `(i, i + rotary_dim / 2)`.
pub(crate) const INTERLEAVED_ROTARY: u32 = 2;

impl RowParams {
    pub(crate) fn new(cols: u32, rows: u32, eps: f32, alpha: f32) -> Self {
        RowParams {
            cols,
            rows,
            eps,
            alpha,
            pad: [0; 4],
        }
    }
}
