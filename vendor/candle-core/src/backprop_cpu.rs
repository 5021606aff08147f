//! glmtune patch: backward kernels fused into one pass over the data on the CPU, where upstream
//! composes them from tensor ops (each a full-size buffer and a pass of its own).

use crate::cpu::gelu;
use crate::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

/// Elements a rayon task takes at once: large enough that scheduling is noise.
const CHUNK: usize = 1 << 14;

/// `grad · gelu'(x)` for candle's tanh-approximated gelu, with the derivative upstream's backward
/// uses (same constants), computed in f32 per element and rounded once to the tensors' dtype.
/// Upstream built it from nine tensor ops, two of them `powf`, and computed `tanh` twice per
/// element: a fifth of the non-matmul time of a P-Tuning backward. Other devices keep the
/// composed form.
pub(crate) fn gelu_backward(arg: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
    let fused = arg.device().is_cpu()
        && arg.dtype() == grad.dtype()
        && matches!(arg.dtype(), DType::F32 | DType::BF16 | DType::F16);
    if !fused {
        return Ok(None);
    }
    let arg = arg.contiguous()?;
    let grad = grad.contiguous()?;
    Ok(Some(arg.apply_op2_no_bwd(&grad, &GeluBackward)?))
}

struct GeluBackward;

/// `g · gelu'(x)` a chunk per rayon task, by the vectorized kernel of `cpu::gelu`.
fn map<T: Copy + Default + Send + Sync>(
    x: &[T],
    g: &[T],
    kernel: impl Fn(&[T], &[T], &mut [T]) + Sync,
) -> Vec<T> {
    let mut out = vec![T::default(); x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
        .for_each(|(out, (x, g))| kernel(x, g, out));
    out
}

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "gelu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        // Both operands were made contiguous by `gelu_backward`.
        let (a, b) = (l1.start_offset(), l2.start_offset());
        let n = l1.shape().elem_count();
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                CpuStorage::F32(map(&x[a..a + n], &g[b..b + n], gelu::gelu_backward_slice))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(g)) => {
                CpuStorage::BF16(map(&x[a..a + n], &g[b..b + n], |x, g, out| {
                    gelu::backward_through_f32(x, g, out, bf16::to_f32, bf16::from_f32)
                }))
            }
            (CpuStorage::F16(x), CpuStorage::F16(g)) => {
                CpuStorage::F16(map(&x[a..a + n], &g[b..b + n], |x, g, out| {
                    gelu::backward_through_f32(x, g, out, f16::to_f32, f16::from_f32)
                }))
            }
            _ => crate::bail!("gelu-backward: unsupported dtypes"),
        };
        Ok((out, l1.shape().clone()))
    }
}
