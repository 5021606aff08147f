//! bf16 matmul on the CPU (glmtune patch; see PATCHED.md).
//!
//! The gemm crate has no bf16 kernel, so the operands are widened to f32, multiplied, and the
//! product narrowed back to bf16 (one rounding, as a bf16 gemm accumulating in f32 does). Widening
//! a whole operand costs twice its bf16 size in f32: for ChatGLM-6B's 130528 x 4096 output layer
//! that is a 2.1 GB transient on top of a 12.4 GB model, which is what kept a bf16 training step
//! over its memory goal. A large batch-invariant right-hand side (a weight) is therefore widened a
//! block of columns at a time: every output element still comes from one f32 dot product over the
//! whole of k, so the result is bit for bit the one of the unblocked product.
use crate::{Layout, Result, StridedBlocks};
use half::{bf16, slice::HalfFloatSliceExt};

/// Right-hand sides with more elements than this are widened in column blocks of about this many
/// elements (16 MiB of f32)...
const BLOCK_ELEMS: usize = 1 << 22;
/// ...but of at least this many columns: every block makes gemm pack the whole left-hand side
/// again, so a deep product (the output layer's backward, k = 130528) must not be cut into
/// hundreds of narrow blocks (32 columns each took it from 3 to 30 seconds).
const MIN_COLS: usize = 256;

/// Copies the elements `l` addresses, in its logical order, into a contiguous f32 buffer.
fn widen(src: &[bf16], l: &Layout) -> Vec<f32> {
    let mut out = vec![0f32; l.shape().elem_count()];
    match l.strided_blocks() {
        StridedBlocks::SingleBlock { start_offset, len } => {
            src[start_offset..start_offset + len].convert_to_f32_slice(&mut out)
        }
        StridedBlocks::UniformBlocks {
            start_offset,
            block_len,
            count,
            src_stride,
        } => {
            for (i, dst) in out.chunks_exact_mut(block_len).take(count).enumerate() {
                let s = start_offset + i * src_stride;
                src[s..s + block_len].convert_to_f32_slice(dst)
            }
        }
        StridedBlocks::MultipleBlocks {
            block_start_index,
            block_len,
        } => {
            for (s, dst) in block_start_index.zip(out.chunks_exact_mut(block_len)) {
                src[s..s + block_len].convert_to_f32_slice(dst)
            }
        }
    }
    out
}

/// `dst (m, n) = lhs (m, k) · rhs (k, n)` in f32, all three described by their strides.
#[allow(clippy::too_many_arguments)]
fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    (dst_rs, dst_cs): (usize, usize),
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    let threads = crate::utils::get_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the three buffers hold m x n, m x k and k x n elements at the strides given (the
    // callers build them contiguous in exactly those shapes).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0f32,
            1f32,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// The bf16 product, or `None` when the right-hand side is small or differs between batches: the
/// caller then widens both operands whole (which is what this avoids for large weights).
pub(super) fn blocked(
    lhs: &[bf16],
    lhs_l: &Layout,
    rhs: &[bf16],
    rhs_l: &Layout,
    (b, m, n, k): (usize, usize, usize, usize),
    rhs_batch_stride: usize,
) -> Result<Option<Vec<bf16>>> {
    if k * n <= BLOCK_ELEMS || (b > 1 && rhs_batch_stride != 0) {
        return Ok(None);
    }
    let rank = rhs_l.dims().len();
    let (rhs_rs, rhs_cs) = (rhs_l.stride()[rank - 2], rhs_l.stride()[rank - 1]);
    // Every batch multiplies the same matrix: the batches of lhs stack into the rows of one.
    let rows = b * m;
    let lhs32 = widen(lhs, lhs_l);
    let rhs2 = Layout::new((k, n).into(), vec![rhs_rs, rhs_cs], rhs_l.start_offset());
    let cols = (BLOCK_ELEMS / k).max(MIN_COLS).min(n);
    let mut out = vec![bf16::ZERO; rows * n];
    let mut block = vec![0f32; rows * cols];
    for n0 in (0..n).step_by(cols) {
        let nc = cols.min(n - n0);
        let part = rhs2.narrow(1, n0, nc)?;
        // Read the weight in its memory order: a transposed (k, n) view of an (n, k) weight is
        // copied row by row of the weight, and handed to gemm transposed again.
        let (rhs32, strides) = if rhs_cs <= rhs_rs {
            (widen(rhs, &part), (nc, 1))
        } else {
            (widen(rhs, &part.transpose(0, 1)?), (1, k))
        };
        let block = &mut block[..rows * nc];
        gemm_f32(
            (rows, nc, k),
            block,
            (nc, 1),
            &lhs32,
            (k, 1),
            &rhs32,
            strides,
        );
        for (dst, src) in out.chunks_exact_mut(n).zip(block.chunks_exact(nc)) {
            dst[n0..n0 + nc].convert_from_f32_slice(src);
        }
    }
    Ok(Some(out))
}
