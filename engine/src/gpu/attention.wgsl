// Scores of each new query against the cached keys, softmax, and the weighted values.

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
@group(0) @binding(1) var<storage, read> queries: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<u32>;
@group(0) @binding(3) var<storage, read> keys: array<f32>;
@group(0) @binding(4) var<storage, read> values: array<f32>;
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;
@group(0) @binding(6) var<storage, read_write> context: array<f32>;

const LANES: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

fn reduce(lane: u32, value: f32, take_max: bool) -> f32 {
    partial[lane] = value;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride = stride >> 1u) {
        if (lane < stride) {
            if (take_max) {
                partial[lane] = max(partial[lane], partial[lane + stride]);
            } else {
                partial[lane] = partial[lane] + partial[lane + stride];
            }
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// One workgroup per (token, head): scores against every cached key, the masked ones filled with
// -10000 as the official code does, softmax, then the weighted values into `context`
// `[tokens, heads · head_dim]`.
@compute @workgroup_size(64)
fn attend(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let t = wg.x;
    let h = wg.y;
    let length = ap.past + ap.tokens;
    let q = (t * ap.heads + h) * 3u * ap.head_dim;
    let row = (h * ap.tokens + t) * ap.capacity;
    var best = -3.0e38;
    for (var j = lane; j < length; j = j + LANES) {
        var score = 0.0;
        let k = (h * ap.capacity + j) * ap.head_dim;
        for (var d = 0u; d < ap.head_dim; d = d + 1u) {
            score = score + queries[q + d] * ap.query_scale * keys[k + d];
        }
        if (ap.has_mask == 1u && mask[t * length + j] != 0u) {
            score = -10000.0;
        }
        score = score * ap.score_scale;
        scores[row + j] = score;
        best = max(best, score);
    }
    let top = reduce(lane, best, true);
    var total = 0.0;
    for (var j = lane; j < length; j = j + LANES) {
        let e = exp(scores[row + j] - top);
        scores[row + j] = e;
        total = total + e;
    }
    let sum = reduce(lane, total, false);
    storageBarrier();
    for (var d = lane; d < ap.head_dim; d = d + LANES) {
        var acc = 0.0;
        for (var j = 0u; j < length; j = j + 1u) {
            acc = acc + scores[row + j] * values[(h * ap.capacity + j) * ap.head_dim + d];
        }
        context[(t * ap.heads + h) * ap.head_dim + d] = acc / sum;
    }
}
