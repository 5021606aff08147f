//! LayerNorm, RMSNorm and softmax for the training path on the CPU: one pass forward, one pass
//! backward, each with the statistics in f32 (as the official code computes them).
//!
//! candle's fused `layer_norm`, `rms_norm` and `softmax_last_dim` have no backward, so training
//! composed each from five to nine tensor ops, and autograd kept every intermediate until the
//! backward: a quarter of a layer's saved activations and as many extra passes over them. Here only
//! the output is new; the backward recomputes the row statistics from the input. The frozen
//! weights get no gradient. Other devices keep the composed ops (see `norm.rs`, `chatglm.rs`).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::Result;

/// A float element the kernels read and write, computing in f32.
trait Elem: Copy + Send + Sync {
    fn get(self) -> f32;
    fn put(v: f32) -> Self;
}

impl Elem for f32 {
    fn get(self) -> f32 {
        self
    }
    fn put(v: f32) -> Self {
        v
    }
}

impl Elem for bf16 {
    fn get(self) -> f32 {
        self.to_f32()
    }
    fn put(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

impl Elem for f16 {
    fn get(self) -> f32 {
        self.to_f32()
    }
    fn put(v: f32) -> Self {
        f16::from_f32(v)
    }
}

/// Whether the fused kernels run for `x`: on the CPU, in a float dtype they handle.
pub(crate) fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16)
}

/// The contiguous slice of `storage` that `layout` covers.
fn slice<'a, T>(data: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(candle_core::Error::Msg(
            "fused op: operand is not contiguous".into(),
        )),
    }
}

/// A computation over the last dimension, row by row: `out = f(a, b)` for a row of each operand
/// (a forward reads its one operand as both).
trait RowKernel: Send + Sync {
    const NAME: &'static str;
    fn row<T: Elem>(&self, a: &[T], b: &[T], out: &mut [T]);
}

/// Runs `kernel` over the rows of two contiguous operands of one float dtype, rows in parallel.
fn run_rows<K: RowKernel>(
    kernel: &K,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> candle_core::Result<(CpuStorage, Shape)> {
    fn rows<T: Elem, K: RowKernel>(kernel: &K, a: &[T], b: &[T], width: usize) -> Vec<T> {
        let mut out = vec![T::put(0.); a.len()];
        out.par_chunks_mut(width)
            .zip(a.par_chunks(width))
            .zip(b.par_chunks(width))
            .for_each(|((o, a), b)| kernel.row(a, b, o));
        out
    }
    let width = l1.dims().last().copied().unwrap_or(1);
    let out = match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => {
            CpuStorage::F32(rows(kernel, slice(a, l1)?, slice(b, l2)?, width))
        }
        (CpuStorage::BF16(a), CpuStorage::BF16(b)) => {
            CpuStorage::BF16(rows(kernel, slice(a, l1)?, slice(b, l2)?, width))
        }
        (CpuStorage::F16(a), CpuStorage::F16(b)) => {
            CpuStorage::F16(rows(kernel, slice(a, l1)?, slice(b, l2)?, width))
        }
        _ => {
            return Err(candle_core::Error::Msg(format!(
                "{}: operands of different or unsupported dtypes",
                K::NAME
            )))
        }
    };
    Ok((out, l1.shape().clone()))
}

/// A forward kernel whose input gradient another kernel computes.
trait Differentiable: RowKernel {
    /// The gradient with respect to the input `arg`, from the output `res` and its gradient.
    fn backward(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor>;
}

/// A forward kernel as an op of its one operand.
struct Forward<K>(K);

impl<K: Differentiable> CustomOp1 for Forward<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        run_rows(&self.0, s, l, s, l)
    }

    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.0.backward(arg, res, grad)?))
    }
}

/// A backward kernel as an op of its two operands (it has no backward of its own).
struct Backward<K>(K);

impl<K: RowKernel> CustomOp2 for Backward<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        run_rows(&self.0, s1, l1, s2, l2)
    }
}

/// LayerNorm (`rms: false`, with bias) or RMSNorm over the last dimension with frozen f32
/// parameters.
struct Norm {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    eps: f32,
    rms: bool,
}

impl Norm {
    /// The row's mean (0 for RMSNorm) and 1/σ.
    fn stats<T: Elem>(&self, x: &[T]) -> (f32, f32) {
        let n = x.len() as f32;
        let mean = if self.rms {
            0.
        } else {
            x.iter().map(|v| v.get()).sum::<f32>() / n
        };
        let var = x
            .iter()
            .map(|v| {
                let c = v.get() - mean;
                c * c
            })
            .sum::<f32>()
            / n;
        (mean, 1. / (var + self.eps).sqrt())
    }

    fn forward_row<T: Elem>(&self, x: &[T], out: &mut [T]) {
        let (mean, rstd) = self.stats(x);
        for (i, (o, v)) in out.iter_mut().zip(x).enumerate() {
            let y = (v.get() - mean) * rstd * self.weight[i];
            *o = T::put(match &self.bias {
                Some(b) => y + b[i],
                None => y,
            });
        }
    }

    /// dx = (1/σ) · (g·w − mean(g·w) − x̂ · mean(g·w·x̂)), without the mean(g·w) term for RMSNorm.
    fn backward_row<T: Elem>(&self, x: &[T], g: &[T], dx: &mut [T]) {
        let n = x.len() as f32;
        let (mean, rstd) = self.stats(x);
        let (mut sum_gw, mut sum_gwx) = (0f32, 0f32);
        for (i, (v, g)) in x.iter().zip(g).enumerate() {
            let gw = g.get() * self.weight[i];
            sum_gw += gw;
            sum_gwx += gw * (v.get() - mean) * rstd;
        }
        let mean_gw = if self.rms { 0. } else { sum_gw / n };
        let mean_gwx = sum_gwx / n;
        for (i, (d, (v, g))) in dx.iter_mut().zip(x.iter().zip(g)).enumerate() {
            let xhat = (v.get() - mean) * rstd;
            *d = T::put(rstd * (g.get() * self.weight[i] - mean_gw - xhat * mean_gwx));
        }
    }
}

struct NormForward(Arc<Norm>);
struct NormBackward(Arc<Norm>);

impl RowKernel for NormForward {
    const NAME: &'static str = "glmtune-norm";
    fn row<T: Elem>(&self, x: &[T], _: &[T], out: &mut [T]) {
        self.0.forward_row(x, out)
    }
}

impl RowKernel for NormBackward {
    const NAME: &'static str = "glmtune-norm-backward";
    fn row<T: Elem>(&self, x: &[T], g: &[T], dx: &mut [T]) {
        self.0.backward_row(x, g, dx)
    }
}

impl Differentiable for NormForward {
    fn backward(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
        let grad = grad.to_dtype(arg.dtype())?.contiguous()?;
        arg.apply_op2_no_bwd(&grad, &Backward(NormBackward(self.0.clone())))
    }
}

/// LayerNorm (with `bias`) or RMSNorm (without) of `x` over its last dimension, differentiable
/// with respect to `x`; `weight` and `bias` are frozen.
pub(crate) fn norm(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    eps: f64,
    rms: bool,
) -> Result<Tensor> {
    let params = |t: &Tensor| -> Result<Vec<f32>> {
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let norm = Norm {
        weight: params(weight)?,
        bias: bias.map(params).transpose()?,
        eps: eps as f32,
        rms,
    };
    Ok(x.contiguous()?
        .apply_op1(Forward(NormForward(Arc::new(norm))))?)
}

/// Softmax over the last dimension, as the composed form: subtract the row's max, exponentiate,
/// divide by the sum.
struct Softmax;
/// dx = y · (g − Σ g·y), from the softmax's output y.
struct SoftmaxBackward;

impl RowKernel for Softmax {
    const NAME: &'static str = "glmtune-softmax";
    fn row<T: Elem>(&self, x: &[T], _: &[T], out: &mut [T]) {
        let max = x.iter().map(|v| v.get()).fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for (o, v) in out.iter_mut().zip(x) {
            let e = (v.get() - max).exp();
            sum += e;
            *o = T::put(e);
        }
        for o in out.iter_mut() {
            *o = T::put(o.get() / sum);
        }
    }
}

impl RowKernel for SoftmaxBackward {
    const NAME: &'static str = "glmtune-softmax-backward";
    fn row<T: Elem>(&self, y: &[T], g: &[T], dx: &mut [T]) {
        let dot: f32 = y.iter().zip(g).map(|(y, g)| y.get() * g.get()).sum();
        for (d, (y, g)) in dx.iter_mut().zip(y.iter().zip(g)) {
            *d = T::put(y.get() * (g.get() - dot));
        }
    }
}

impl Differentiable for Softmax {
    fn backward(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
        let grad = grad.to_dtype(res.dtype())?.contiguous()?;
        res.apply_op2_no_bwd(&grad, &Backward(SoftmaxBackward))
    }
}

/// Softmax of `scores` over the last dimension, differentiable with respect to them.
pub(crate) fn softmax(scores: &Tensor) -> Result<Tensor> {
    Ok(scores.contiguous()?.apply_op1(Forward(Softmax))?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var, D};

    use super::*;

    /// The composed form the other devices run (norm.rs), as autograd differentiates it.
    fn composed_norm(x: &Tensor, w: &Tensor, b: Option<&Tensor>, eps: f64) -> Tensor {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32).unwrap();
        let centered = match b {
            Some(_) => x
                .broadcast_sub(&x.mean_keepdim(D::Minus1).unwrap())
                .unwrap(),
            None => x,
        };
        let var = centered.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let normed = centered
            .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
            .unwrap();
        let mut out = normed.broadcast_mul(w).unwrap();
        if let Some(b) = b {
            out = out.broadcast_add(b).unwrap();
        }
        out.to_dtype(dtype).unwrap()
    }

    fn composed_softmax(x: &Tensor) -> Tensor {
        let max = x.max_keepdim(D::Minus1).unwrap().detach();
        let exp = x.broadcast_sub(&max).unwrap().exp().unwrap();
        exp.broadcast_div(&exp.sum_keepdim(D::Minus1).unwrap())
            .unwrap()
    }

    /// Output and input gradient (under a fixed random upstream) of `f` at `x`, as f32.
    fn run(x: &Var, upstream: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Vec<f32>, Vec<f32>) {
        let y = f(x.as_tensor());
        let store = y
            .to_dtype(DType::F32)
            .unwrap()
            .mul(upstream)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let flat = |t: &Tensor| {
            t.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        (flat(&y), flat(store.get(x.as_tensor()).unwrap()))
    }

    fn close(a: &[f32], b: &[f32], tolerance: f32, what: &str) {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            assert!(
                (a - b).abs() <= tolerance * scale,
                "{what}[{i}]: {a} vs {b} (scale {scale})"
            );
        }
    }

    /// f32: the fused kernels equal the composed ops to float reassociation; bf16 (the norms): to
    /// bf16's rounding (the composed form rounds between its ops, the fused one only at the end).
    #[test]
    fn fused_ops_match_the_composed_ops_forward_and_backward() {
        let dev = Device::Cpu;
        for (dtype, tolerance) in [(DType::F32, 2e-5), (DType::BF16, 2e-2)] {
            let x = Var::from_tensor(
                &Tensor::randn(0.5f32, 2., (3, 5, 96), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let upstream = Tensor::randn(0f32, 1., (3, 5, 96), &dev).unwrap();
            let w = Tensor::randn(1f32, 0.3, 96, &dev).unwrap();
            let b = Tensor::randn(0f32, 0.3, 96, &dev).unwrap();
            for bias in [Some(&b), None] {
                let fused = run(&x, &upstream, |x| {
                    norm(x, &w, bias, 1e-5, bias.is_none()).unwrap()
                });
                let composed = run(&x, &upstream, |x| composed_norm(x, &w, bias, 1e-5));
                let what = format!("{dtype:?} norm (bias: {})", bias.is_some());
                close(&fused.0, &composed.0, tolerance, &what);
                close(&fused.1, &composed.1, tolerance, &what);
            }
            // The models' scores are f32 on every path; in bf16 the composed form's own roundings
            // (of the exponentials, of their sum) are larger than any tolerance would mean.
            if dtype == DType::F32 {
                let fused = run(&x, &upstream, |x| softmax(x).unwrap());
                let composed = run(&x, &upstream, composed_softmax);
                close(&fused.0, &composed.0, tolerance, "softmax");
                close(&fused.1, &composed.1, tolerance, "softmax");
            }
        }
    }
}
