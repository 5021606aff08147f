// The parameters of the rotary and attention kernels (prepended to both files).

struct AttnParams {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    rotary_dim: u32,
    // Rotated segments per head: 2 with 2D positions, 1 without.
    segments: u32,
    past: u32,
    capacity: u32,
    has_mask: u32,
    // 1 / (sqrt(head_dim) · (layer + 1)) and layer + 1, as the official code scales.
    query_scale: f32,
    score_scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> ap: AttnParams;
