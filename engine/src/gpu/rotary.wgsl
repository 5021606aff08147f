// Attention over a GPU-resident key/value cache that starts with the P-Tuning prefix.
//
// `qkv` is `[tokens, heads, 3, head_dim]` as ChatGLM-6B's query_key_value gives it (query, key and
// value side by side within each head). The rotary embedding turns each `rotary_dim` segment of
// the query and key by its position (2D encoding: the first segment by the position, the second by
// the block position); the keys and values then go into the caches `[heads, capacity, head_dim]`
// at `past`, and every new query attends to the `past + tokens` cached ones.

@group(0) @binding(1) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> cos_table: array<f32>;
@group(0) @binding(4) var<storage, read> sin_table: array<f32>;
@group(0) @binding(5) var<storage, read_write> key_cache: array<f32>;
@group(0) @binding(6) var<storage, read_write> value_cache: array<f32>;

// One invocation per (token, head, segment, pair i < rotary_dim / 2).
@compute @workgroup_size(64)
fn rotate_and_cache(@builtin(global_invocation_id) id: vec3<u32>) {
    let half = ap.rotary_dim / 2u;
    let per_token = ap.heads * ap.segments * half;
    let index = id.x + id.y * 65535u * 64u;
    if (index >= ap.tokens * per_token) {
        return;
    }
    let t = index / per_token;
    let rest = index % per_token;
    let h = rest / (ap.segments * half);
    let segment = (rest / half) % ap.segments;
    let i = rest % half;
    let position = positions[segment * ap.tokens + t];
    let c = cos_table[position * ap.rotary_dim + i];
    let s = sin_table[position * ap.rotary_dim + i];
    let head_base = (t * ap.heads + h) * 3u * ap.head_dim;
    let offset = segment * ap.rotary_dim;
    let cache_base = (h * ap.capacity + ap.past + t) * ap.head_dim;
    // Query in place.
    let q = head_base + offset;
    let q1 = qkv[q + i];
    let q2 = qkv[q + i + half];
    qkv[q + i] = q1 * c - q2 * s;
    qkv[q + i + half] = q2 * c + q1 * s;
    // Key into the cache.
    let k = head_base + ap.head_dim + offset;
    let k1 = qkv[k + i];
    let k2 = qkv[k + i + half];
    key_cache[cache_base + offset + i] = k1 * c - k2 * s;
    key_cache[cache_base + offset + i + half] = k2 * c + k1 * s;
    value_cache[cache_base + offset + i] = qkv[head_base + 2u * ap.head_dim + offset + i];
    value_cache[cache_base + offset + i + half] =
        qkv[head_base + 2u * ap.head_dim + offset + i + half];
    // Dimensions past the rotated segments (none for ChatGLM-6B) are copied as they are.
    if (i == 0u && segment == ap.segments - 1u) {
        for (var d = ap.segments * ap.rotary_dim; d < ap.head_dim; d = d + 1u) {
            key_cache[cache_base + d] = qkv[head_base + ap.head_dim + d];
            value_cache[cache_base + d] = qkv[head_base + 2u * ap.head_dim + d];
        }
    }
}

