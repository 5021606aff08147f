// Matrix products with the weights dequantized in the kernel, f32 arithmetic throughout (no
// shader-f16 needed). Weight matrices `[rows, cols]` come in four layouts (see gpu/weights.rs): f32,
// f16 packed two to a u32, and GGML's q8_0 / q4_0 with their 32-weight blocks split into one f32
// scale per block (`scales`) and the packed quants (`quants`: q8_0 four i8 a word, q4_0 eight nibbles
// a word, byte j of a block holding weight j in its low nibble and weight j + 16 in its high one).
// Activations are `[tokens, cols]` row-major; outputs `[tokens, out_stride]`.

struct MatParams {
    rows: u32,
    cols: u32,
    tokens: u32,
    has_bias: u32,
    // Rows of this chunk start at this row of the whole output (matrices split across buffers).
    row_offset: u32,
    out_stride: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> mp: MatParams;
@group(0) @binding(1) var<storage, read> mat_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> mat_y: array<f32>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
@group(0) @binding(4) var<storage, read> quants: array<u32>;
@group(0) @binding(5) var<storage, read> mat_bias: array<f32>;

// Workgroups along x at most (the limit is 65535); larger row counts go on along y.
const GRID_X: u32 = 32768u;

fn finish_row(lane: u32, row: u32, t: u32, sum: f32) {
    let total = reduce_sum(lane, sum);
    if (lane == 0u) {
        var value = total;
        if (mp.has_bias == 1u) {
            value = value + mat_bias[mp.row_offset + row];
        }
        mat_y[t * mp.out_stride + mp.row_offset + row] = value;
    }
}

// Row `row` against token `t`'s activations, over columns (or pairs, or blocks) first, first +
// step, …: the lanes of a workgroup share a row, or one invocation takes it whole.
fn row_dot(kind: u32, row: u32, t: u32, first: u32, step: u32) -> f32 {
    var sum = 0.0;
    switch kind {
        case 0u: {
            for (var k = first; k < mp.cols; k = k + step) {
                sum = sum + scales[row * mp.cols + k] * mat_x[t * mp.cols + k];
            }
        }
        case 1u: {
            let pairs = mp.cols / 2u;
            for (var k = first; k < pairs; k = k + step) {
                let w = unpack2x16float(quants[row * pairs + k]);
                let xi = t * mp.cols + 2u * k;
                sum = sum + w.x * mat_x[xi] + w.y * mat_x[xi + 1u];
            }
        }
        default: {
            let blocks = mp.cols / 32u;
            for (var b = first; b < blocks; b = b + step) {
                let block = row * blocks + b;
                sum = sum + scales[block] * block_dot(kind, block, t * mp.cols + b * 32u);
            }
        }
    }
    return sum;
}

// One 32-weight block against `mat_x[xb..xb + 32]`, before its scale.
fn block_dot(kind: u32, block: u32, xb: u32) -> f32 {
    var acc = 0.0;
    if (kind == 2u) {
        for (var w = 0u; w < 8u; w = w + 1u) {
            let word = bitcast<i32>(quants[block * 8u + w]);
            for (var i = 0u; i < 4u; i = i + 1u) {
                acc = acc + f32(extractBits(word, i * 8u, 8u)) * mat_x[xb + w * 4u + i];
            }
        }
    } else {
        for (var w = 0u; w < 4u; w = w + 1u) {
            let word = quants[block * 4u + w];
            for (var i = 0u; i < 4u; i = i + 1u) {
                let byte = (word >> (i * 8u)) & 0xffu;
                let j = w * 4u + i;
                acc = acc + (f32(byte & 0xfu) - 8.0) * mat_x[xb + j]
                    + (f32(byte >> 4u) - 8.0) * mat_x[xb + j + 16u];
            }
        }
    }
    return acc;
}

// One workgroup per (output row, token); one entry point per layout.
fn matmul(kind: u32, wg: vec3<u32>, lane: u32) {
    let row = wg.x + wg.y * GRID_X;
    if (row < mp.rows) {
        finish_row(lane, row, wg.z, row_dot(kind, row, wg.z, lane, LANES));
    }
}

@compute @workgroup_size(64)
fn matmul_f32(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    matmul(0u, wg, lane);
}

@compute @workgroup_size(64)
fn matmul_f16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    matmul(1u, wg, lane);
}

@compute @workgroup_size(64)
fn matmul_q8_0(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    matmul(2u, wg, lane);
}

@compute @workgroup_size(64)
fn matmul_q4_0(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    matmul(3u, wg, lane);
}

// On CPU adapters (lavapipe, SwiftShader) a barrier costs more than reads that do not coalesce: one
// invocation per (output row, token), the whole row in one loop, no reduction.
fn matmul_by_row(kind: u32, wg: vec3<u32>, lane: u32) {
    let row = (wg.x + wg.y * 65535u) * LANES + lane;
    if (row < mp.rows) {
        var value = row_dot(kind, row, wg.z, 0u, 1u);
        if (mp.has_bias == 1u) {
            value = value + mat_bias[mp.row_offset + row];
        }
        mat_y[wg.z * mp.out_stride + mp.row_offset + row] = value;
    }
}

@compute @workgroup_size(64)
fn matmul_rows_f32(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    matmul_by_row(0u, wg, lane);
}

@compute @workgroup_size(64)
fn matmul_rows_f16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    matmul_by_row(1u, wg, lane);
}

@compute @workgroup_size(64)
fn matmul_rows_q8_0(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    matmul_by_row(2u, wg, lane);
}

@compute @workgroup_size(64)
fn matmul_rows_q4_0(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    matmul_by_row(3u, wg, lane);
}
