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
    // Key/value heads (multi-query groups; all heads for ChatGLM-6B).
    kv_heads: u32,
    // 1: grouped q | k | v layout; 2: interleaved rotary pairs (ChatGLM2/3).
    flags: u32,
    // Columns of the cos/sin tables.
    table_width: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Where head `h`'s query, and group `g`'s key and value, start in `qkv` for token `t`.
fn query_at(t: u32, h: u32) -> u32 {
    if ((ap.flags & 1u) != 0u) {
        return t * (ap.heads + 2u * ap.kv_heads) * ap.head_dim + h * ap.head_dim;
    }
    return (t * ap.heads + h) * 3u * ap.head_dim;
}

fn key_at(t: u32, g: u32) -> u32 {
    if ((ap.flags & 1u) != 0u) {
        return t * (ap.heads + 2u * ap.kv_heads) * ap.head_dim + (ap.heads + g) * ap.head_dim;
    }
    return (t * ap.heads + g) * 3u * ap.head_dim + ap.head_dim;
}

fn value_at(t: u32, g: u32) -> u32 {
    if ((ap.flags & 1u) != 0u) {
        return t * (ap.heads + 2u * ap.kv_heads) * ap.head_dim
            + (ap.heads + ap.kv_heads + g) * ap.head_dim;
    }
    return (t * ap.heads + g) * 3u * ap.head_dim + 2u * ap.head_dim;
}

@group(0) @binding(0) var<uniform> ap: AttnParams;
