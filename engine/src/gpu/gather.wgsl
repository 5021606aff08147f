// Embedding rows by token id, dequantized from a table in any of the matmul layouts. A table split
// into row chunks is gathered chunk by chunk: each dispatch writes the ids its rows hold.

struct GatherParams {
    cols: u32,
    tokens: u32,
    // 0 f32, 1 f16, 2 q8_0, 3 q4_0.
    table_layout: u32,
    row_start: u32,
    rows: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> gp: GatherParams;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> gathered: array<f32>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
@group(0) @binding(4) var<storage, read> quants: array<u32>;

fn weight(row: u32, c: u32) -> f32 {
    switch gp.table_layout {
        case 0u: {
            return scales[row * gp.cols + c];
        }
        case 1u: {
            let pair = unpack2x16float(quants[(row * gp.cols + c) / 2u]);
            return select(pair.x, pair.y, (c & 1u) == 1u);
        }
        case 2u: {
            let block = row * (gp.cols / 32u) + c / 32u;
            let j = c % 32u;
            let word = bitcast<i32>(quants[block * 8u + j / 4u]);
            return scales[block] * f32(extractBits(word, (j % 4u) * 8u, 8u));
        }
        default: {
            let block = row * (gp.cols / 32u) + c / 32u;
            let j = c % 32u;
            let byte_index = j % 16u;
            let byte = (quants[block * 4u + byte_index / 4u] >> ((byte_index % 4u) * 8u)) & 0xffu;
            let nibble = select(byte & 0xfu, byte >> 4u, j >= 16u);
            return scales[block] * (f32(nibble) - 8.0);
        }
    }
}

@compute @workgroup_size(64)
fn gather(@builtin(global_invocation_id) id: vec3<u32>) {
    let c = id.x;
    let t = id.y;
    if (c < gp.cols && t < gp.tokens) {
        let id = ids[t];
        if (id >= gp.row_start && id < gp.row_start + gp.rows) {
            gathered[t * gp.cols + c] = weight(id - gp.row_start, c);
        }
    }
}
