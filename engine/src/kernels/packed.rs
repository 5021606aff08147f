//! Block-quantized matrices repacked in tiles of 16 rows for AVX-512 VNNI, the layout decoding
//! and prompt processing both run fastest on.
//!
//! In GGML's layout one `vpdpbusd` covers two blocks of one row, and every block then needs its
//! own float scaling (convert, multiply, add) per activation row. In a tile, block `b` of 16 rows
//! is stored together: their 16 scales, then their values four at a time, row after row, so one
//! `vpdpbusd` multiplies four values of all 16 rows by the same four activations (broadcast), the
//! 16 lanes are the 16 rows' sums, and a block is scaled once for 16 rows. A tile is read as one
//! sequential stream. The bytes are GGML's, reordered (q8_0 values offset by 128 to be the
//! unsigned operand), so the matrix takes the same memory and unpacks back exactly.
//!
//! A tile block of q4_0: 16 f16 scales, then four 64-byte groups; byte `4r + j` of group `g`
//! is byte `4g + j` of row `r`'s block (its low nibble is value `4g + j`, its high nibble value
//! `16 + 4g + j`). Of q8_0: 16 scales, then eight groups; byte `4r + j` of group `g` is value
//! `4g + j` of row `r` plus 128.

use super::blocks::quantize_block;
use super::blocks::{BlockFormat, BLOCK};
#[cfg(target_arch = "x86_64")]
use super::KernelError;

/// Rows of a tile.
pub const TILE: usize = 16;

/// A block-quantized `n × k` matrix in 16-row tiles.
#[derive(Debug)]
pub struct Packed {
    format: BlockFormat,
    n: usize,
    k: usize,
    data: Vec<u8>,
}

/// Bytes of one tile block (16 rows × one block): exactly 16 GGML blocks.
const fn tile_block_bytes(format: BlockFormat) -> usize {
    TILE * format.block_bytes()
}

/// Calls `visit(ggml_at, packed_at, len, flip)` for every run of bytes of an `n × k` matrix: the
/// run at `ggml_at` in GGML's layout is at `packed_at` in the tiles, each byte xor `flip`. The one
/// map both directions of the repacking follow.
fn each_run(
    format: BlockFormat,
    n: usize,
    k: usize,
    mut visit: impl FnMut(usize, usize, usize, u8),
) {
    let nb = k / BLOCK;
    let bytes = format.block_bytes();
    let (groups, flip) = match format {
        BlockFormat::Q4_0 => (4, 0),
        BlockFormat::Q8_0 => (8, 0x80),
    };
    for t in 0..n / TILE {
        for b in 0..nb {
            let tile_block = (t * nb + b) * tile_block_bytes(format);
            for r in 0..TILE {
                let block = ((t * TILE + r) * nb + b) * bytes;
                visit(block, tile_block + 2 * r, 2, 0);
                for g in 0..groups {
                    let packed = tile_block + 2 * TILE + 64 * g + 4 * r;
                    visit(block + 2 + 4 * g, packed, 4, flip);
                }
            }
        }
    }
}

impl Packed {
    /// Repacks GGML blocks (`n` rows of `k / 32` blocks); `None` when `n` is not a multiple of 16.
    pub fn pack(format: BlockFormat, ggml: &[u8], n: usize, k: usize) -> Option<Packed> {
        let bytes = format.block_bytes();
        if !n.is_multiple_of(TILE)
            || !k.is_multiple_of(BLOCK)
            || ggml.len() != n * k / BLOCK * bytes
        {
            return None;
        }
        let mut data = vec![0u8; ggml.len()];
        each_run(format, n, k, |from, to, len, flip| {
            for (o, &i) in data[to..to + len].iter_mut().zip(&ggml[from..from + len]) {
                *o = i ^ flip;
            }
        });
        Some(Packed { format, n, k, data })
    }

    /// The GGML blocks back, byte for byte.
    pub fn unpack(&self) -> Vec<u8> {
        let mut ggml = vec![0u8; self.data.len()];
        each_run(self.format, self.n, self.k, |to, from, len, flip| {
            for (o, &i) in ggml[to..to + len]
                .iter_mut()
                .zip(&self.data[from..from + len])
            {
                *o = i ^ flip;
            }
        });
        ggml
    }

    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// `(n, k)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Bytes of the blocks (as many as in GGML's layout).
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// `row` rounded to activation blocks the portable way, one block at a time: what
/// [`super::avx512::round_row`] is tested against.
pub fn round_row(row: &[f32], blocks: &mut [ActBlock]) {
    for (values, block) in row.chunks(BLOCK).zip(blocks.iter_mut()) {
        let (d, qs) = quantize_block(values);
        block.qs = qs;
        block.d = d.to_f32();
        block.sum = qs.iter().map(|&q| i32::from(q)).sum();
    }
}

/// One activation block as the tile kernels read it.
#[derive(Clone, Copy, Default)]
#[repr(C, align(8))]
pub struct ActBlock {
    pub qs: [i8; BLOCK],
    /// The f16-rounded scale, as f32.
    pub d: f32,
    /// Σ values: the weights' offset (8 for q4_0, 128 for q8_0) times it comes back out.
    pub sum: i32,
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    static ACTS: std::cell::RefCell<Vec<ActBlock>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
/// `out[i, j] = x[i, ·] · w[j, ·]` for the packed `w`, activations rounded to q8_0 blocks as in
/// [`super::matmul`]; runs on AVX-512 VNNI only ([`super::Isa::Avx512Vnni`]).
pub fn matmul(packed: &Packed, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    let (n, k) = packed.dims();
    let shape = |detail: String| KernelError::Shape {
        format: packed.format,
        n,
        k,
        detail,
    };
    if !super::Isa::Avx512Vnni.supported() {
        return Err(KernelError::Unsupported {
            isa: super::Isa::Avx512Vnni,
        });
    }
    let m = super::activation_rows(x.len(), k, out.len(), n).map_err(shape)?;
    let nb = k / BLOCK;
    ACTS.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let acts = super::rounded_rows(&mut scratch, x, k, nb, |row, blocks| {
            // SAFETY: the CPU supports AVX-512 VNNI (checked above), which `round_row` needs
            // less of; `blocks` has a place for each of the row's blocks.
            unsafe { super::avx512::round_row(row, blocks) }
        });
        let out = super::Shared(out.as_mut_ptr());
        let tile_bytes = nb * tile_block_bytes(packed.format);
        super::parallel(n / TILE, |t| {
            let tile = &packed.data[t * tile_bytes..(t + 1) * tile_bytes];
            for first in (0..m).step_by(super::avx512::ACTS) {
                let count = super::avx512::ACTS.min(m - first);
                let mut sums = [[0f32; TILE]; super::avx512::ACTS];
                // SAFETY: the CPU supports the kernel (checked above); the tile holds nb blocks
                // and every activation row nb blocks.
                unsafe {
                    super::avx512::packed_tile(
                        packed.format,
                        tile,
                        nb,
                        &acts[first * nb..(first + count) * nb],
                        count,
                        &mut sums[..count],
                    )
                };
                for (c, row) in sums[..count].iter().enumerate() {
                    for (r, &v) in row.iter().enumerate() {
                        // SAFETY: tile t's columns belong to this task alone.
                        unsafe { out.write((first + c) * n + t * TILE + r, v) };
                    }
                }
            }
        });
    });
    Ok(())
}
