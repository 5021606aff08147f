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
    pub(crate) pad: [u32; 2],
}

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
