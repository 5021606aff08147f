// Scores of each new query against the cached keys, softmax, and the weighted values.

@group(0) @binding(1) var<storage, read> queries: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<u32>;
@group(0) @binding(3) var<storage, read> keys: array<f32>;
@group(0) @binding(4) var<storage, read> values: array<f32>;
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;
@group(0) @binding(6) var<storage, read_write> context: array<f32>;

// One workgroup per (token, head): scores against every cached key of the head's group, the
// masked ones filled with -10000 as ChatGLM-6B does (for ChatGLM2/3, whose masks are -inf, the
// same: nothing of it survives the softmax), softmax, then the weighted values into `context`
// `[tokens, heads · head_dim]`.
@compute @workgroup_size(64)
fn attend(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let t = wg.x;
    let h = wg.y;
    let length = ap.past + ap.tokens;
    let q = query_at(t, h);
    let g = h / (ap.heads / ap.kv_heads);
    let row = (h * ap.tokens + t) * ap.capacity;
    var best = -3.0e38;
    for (var j = lane; j < length; j = j + LANES) {
        var score = 0.0;
        let k = (g * ap.capacity + j) * ap.head_dim;
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
    let top = reduce_max(lane, best);
    var total = 0.0;
    for (var j = lane; j < length; j = j + LANES) {
        let e = exp(scores[row + j] - top);
        scores[row + j] = e;
        total = total + e;
    }
    let sum = reduce_sum(lane, total);
    storageBarrier();
    for (var d = lane; d < ap.head_dim; d = d + LANES) {
        var acc = 0.0;
        for (var j = 0u; j < length; j = j + 1u) {
            acc = acc + scores[row + j] * values[(g * ap.capacity + j) * ap.head_dim + d];
        }
        context[(t * ap.heads + h) * ap.head_dim + d] = acc / sum;
    }
}
