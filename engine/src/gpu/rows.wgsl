// Row-wise and element-wise kernels: LayerNorm, RMSNorm, the residual `a·α + b`, tanh GeLU,
// SwiGLU, and the 8-bit rounding of activations before block-quantized products.

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

// One workgroup per row: `x / sqrt(mean(x²) + eps) · weight (row_a)`.
@compute @workgroup_size(64)
fn rms_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let base = wg.x * rp.cols;
    var squares = 0.0;
    for (var c = lane; c < rp.cols; c = c + LANES) {
        let x = row_in[base + c];
        squares = squares + x * x;
    }
    let inv = 1.0 / sqrt(reduce_sum(lane, squares) / f32(rp.cols) + rp.eps);
    for (var c = lane; c < rp.cols; c = c + LANES) {
        row_out[base + c] = row_in[base + c] * inv * row_a[c];
    }
}

// ChatGLM2/3's MLP activation: each row of `row_in` is `[gate | up]` (2 · cols), each row of
// `row_out` gets `silu(gate) · up`.
@compute @workgroup_size(64)
fn swiglu(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x + id.y * 65535u * 64u;
    if (i < rp.rows * rp.cols) {
        let r = i / rp.cols;
        let c = i % rp.cols;
        let gate = row_in[r * 2u * rp.cols + c];
        let up = row_in[r * 2u * rp.cols + rp.cols + c];
        row_out[i] = gate / (1.0 + exp(-gate)) * up;
    }
}

// `a / b` rounded as IEEE division (WGSL's may be 2.5 ulp off): one fma correction step.
fn divide(a: f32, b: f32) -> f32 {
    let q = a / b;
    return fma(fma(-q, b, a), 1.0 / b, q);
}

// Activations as the CPU's quantized products see them: each block of 32 rounded to GGML's q8_0
// (scale max|x| / 127 kept as f16, values round(x / scale) rounded half away from zero), written
// back as value · scale. One invocation per block.
@compute @workgroup_size(64)
fn round_activations(@builtin(global_invocation_id) id: vec3<u32>) {
    let block = id.x + id.y * 65535u * 64u;
    if (block >= rp.rows * rp.cols / 32u) {
        return;
    }
    let base = block * 32u;
    var amax = 0.0;
    for (var j = 0u; j < 32u; j = j + 1u) {
        amax = max(amax, abs(row_in[base + j]));
    }
    let d = divide(amax, 127.0);
    var inverse = 0.0;
    if (d != 0.0) {
        inverse = divide(1.0, d);
    }
    let stored = unpack2x16float(pack2x16float(vec2<f32>(d, 0.0))).x;
    for (var j = 0u; j < 32u; j = j + 1u) {
        let v = row_in[base + j] * inverse;
        let q = sign(v) * floor(abs(v) + 0.5);
        row_out[base + j] = q * stored;
    }
}
