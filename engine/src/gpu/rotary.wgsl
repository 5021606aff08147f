// Attention over a GPU-resident key/value cache that starts with the P-Tuning prefix.
//
// `qkv` holds, per token, ChatGLM-6B's q, k, v side by side within each head, or ChatGLM2/3's query
// heads then key groups then value groups (`query_at`, `key_at`, `value_at`). The rotary embedding
// turns each `rotary_dim` segment of the query and key by its position (ChatGLM-6B's 2D encoding:
// the first segment by the position, the second by the block position; pairs `(i, i + half)`;
// ChatGLM2/3: one segment, the first half of the head, pairs `(2i, 2i + 1)`); the keys and values
// then go into the caches `[kv_heads, capacity, head_dim]` at `past`.

@group(0) @binding(1) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> cos_table: array<f32>;
@group(0) @binding(4) var<storage, read> sin_table: array<f32>;
@group(0) @binding(5) var<storage, read_write> key_cache: array<f32>;
@group(0) @binding(6) var<storage, read_write> value_cache: array<f32>;

// The two channels rotated together by pair `i` of a segment.
fn pair(i: u32, half: u32) -> vec2<u32> {
    if ((ap.flags & 2u) != 0u) {
        return vec2<u32>(2u * i, 2u * i + 1u);
    }
    return vec2<u32>(i, i + half);
}

// One invocation per (token, query head, segment, pair i < rotary_dim / 2); the invocations of
// heads below `kv_heads` also rotate that group's key and store its key and value.
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
    let c = cos_table[position * ap.table_width + i];
    let s = sin_table[position * ap.table_width + i];
    let offset = segment * ap.rotary_dim;
    let p = pair(i, half) + vec2<u32>(offset, offset);
    // Query in place.
    let q = query_at(t, h);
    let q1 = qkv[q + p.x];
    let q2 = qkv[q + p.y];
    qkv[q + p.x] = q1 * c - q2 * s;
    qkv[q + p.y] = q2 * c + q1 * s;
    if (h >= ap.kv_heads) {
        return;
    }
    // Key into the cache.
    let cache_base = (h * ap.capacity + ap.past + t) * ap.head_dim;
    let k = key_at(t, h);
    let v = value_at(t, h);
    let k1 = qkv[k + p.x];
    let k2 = qkv[k + p.y];
    key_cache[cache_base + p.x] = k1 * c - k2 * s;
    key_cache[cache_base + p.y] = k2 * c + k1 * s;
    value_cache[cache_base + p.x] = qkv[v + p.x];
    value_cache[cache_base + p.y] = qkv[v + p.y];
    // Dimensions past the rotated segments (ChatGLM2/3's second half) are copied as they are.
    if (i == 0u && segment == ap.segments - 1u) {
        for (var d = ap.segments * ap.rotary_dim; d < ap.head_dim; d = d + 1u) {
            key_cache[cache_base + d] = qkv[k + d];
            value_cache[cache_base + d] = qkv[v + d];
        }
    }
}
