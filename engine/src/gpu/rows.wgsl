// Row-wise and element-wise kernels: LayerNorm, the residual `a·α + b`, tanh GeLU.

struct RowParams {
    cols: u32,
    rows: u32,
    eps: f32,
    alpha: f32,
    _pad3: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> rp: RowParams;
@group(0) @binding(1) var<storage, read> row_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> row_out: array<f32>;
@group(0) @binding(3) var<storage, read> row_a: array<f32>;
@group(0) @binding(4) var<storage, read> row_b: array<f32>;

// One workgroup per row: `(x - mean) / sqrt(var + eps) · weight (row_a) + bias (row_b)`.
@compute @workgroup_size(64)
fn layer_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let base = wg.x * rp.cols;
    var sum = 0.0;
    for (var c = lane; c < rp.cols; c = c + LANES) {
        sum = sum + row_in[base + c];
    }
    let mean = reduce_sum(lane, sum) / f32(rp.cols);
    var squares = 0.0;
    for (var c = lane; c < rp.cols; c = c + LANES) {
        let d = row_in[base + c] - mean;
        squares = squares + d * d;
    }
    let inv = 1.0 / sqrt(reduce_sum(lane, squares) / f32(rp.cols) + rp.eps);
    for (var c = lane; c < rp.cols; c = c + LANES) {
        row_out[base + c] = (row_in[base + c] - mean) * inv * row_a[c] + row_b[c];
    }
}

// `out = a·α + b`, element-wise over `rows × cols`.
@compute @workgroup_size(64)
fn scale_add(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x + id.y * 65535u * 64u;
    if (i < rp.rows * rp.cols) {
        row_out[i] = row_a[i] * rp.alpha + row_b[i];
    }
}

// The official tanh approximation, in place on `row_out`.
@compute @workgroup_size(64)
fn gelu(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x + id.y * 65535u * 64u;
    if (i < rp.rows * rp.cols) {
        let x = row_out[i];
        row_out[i] = 0.5 * x * (1.0 + tanh(0.7978845608028654 * x * (1.0 + 0.044715 * x * x)));
    }
}
