//! The vendored candle's bf16 matmul on the CPU (vendor/candle-core/PATCHED.md): a large weight is
//! widened to f32 a block of columns at a time instead of whole, so a bf16 ChatGLM-6B step does
//! not hold a 2.1 GB f32 copy of its output layer. The blocks must not change the numbers: each
//! product is compared with the unblocked one, widened by hand (f32 matmul, one rounding to bf16).

use candle_core::{DType, Device, Tensor};

/// Wide enough (k x n over 4M elements) that the weight is split into column blocks, with a last
/// block shorter than the others.
const K: usize = 4096;
const N: usize = 1100;

fn random(shape: &[usize], seed: u64) -> Tensor {
    // A fixed LCG: the same numbers on every machine, no RNG state shared between tests.
    let mut state = seed;
    let data: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(DType::BF16))
        .unwrap()
}

fn widened(lhs: &Tensor, rhs: &Tensor) -> Tensor {
    let lhs = lhs.to_dtype(DType::F32).unwrap();
    let rhs = rhs.to_dtype(DType::F32).unwrap();
    lhs.broadcast_matmul(&rhs)
        .and_then(|t| t.to_dtype(DType::BF16))
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .unwrap()
}

#[test]
fn a_transposed_weight_in_blocks_gives_the_unblocked_product() {
    // What `Linear` does: x (batch, seq, k) times the transpose of an (n, k) weight, broadcast
    // over the batch (a stride-0 batch on the right-hand side).
    let x = random(&[2, 7, K], 1);
    let w = random(&[N, K], 2);
    let wt = w.t().unwrap();
    let ours = x.broadcast_matmul(&wt).unwrap();
    assert_eq!(ours.dtype(), DType::BF16);
    assert_eq!(max_diff(&ours, &widened(&x, &wt)), 0.0);
}

#[test]
fn a_row_major_weight_in_blocks_gives_the_unblocked_product() {
    // The backward of `Linear` for its input: dy (rows, n_out) times the (n_out, k_in) weight.
    let dy = random(&[9, K], 3);
    let w = random(&[K, N], 4);
    let ours = dy.matmul(&w).unwrap();
    assert_eq!(max_diff(&ours, &widened(&dy, &w)), 0.0);
}

#[test]
fn a_view_into_a_larger_weight_reads_only_its_own_elements() {
    // A narrowed weight (rows 3.. of a taller one) and a non-contiguous lhs (every other row).
    let w = random(&[N + 5, K], 5).narrow(0, 3, N).unwrap();
    let x = random(&[12, K], 6)
        .reshape((6, 2, K))
        .and_then(|t| t.narrow(1, 0, 1))
        .and_then(|t| t.squeeze(1))
        .unwrap();
    let wt = w.t().unwrap();
    let ours = x.matmul(&wt).unwrap();
    assert_eq!(max_diff(&ours, &widened(&x, &wt)), 0.0);
}
