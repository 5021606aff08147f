//! glmtune patch: gelu (tanh approximation) and its gradient over slices of f32, in a form the
//! compiler vectorizes. Upstream calls libm's `tanhf` per element (itself an `expm1f` call): in a
//! P-Tuning step of ChatGLM-6B's architecture on the CPU, a tenth of the time went to those calls.
//!
//! `0.5·x·(1 + tanh u)` is written `x·σ(2u)` (the same function: `1 + tanh u = 2σ(2u)`), which
//! needs one `exp` and no cancellation where `tanh u` is near −1, and `exp` is the usual range
//! reduction to `[−ln2/2, ln2/2]` with Cephes' `expf` polynomial (within 2 ulp). The loops are
//! compiled three times — AVX-512, AVX2+FMA and the baseline — and the CPU's best is picked at run
//! time. NaN stays NaN (for f16 loss scaling, an overflow must show).

const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in two so `n·ln2` is exact in its high part (Cephes' constants).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
// 1.5·2^23: adding it rounds an f32 of magnitude below 2^22 to an integer held in its low bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `e^x`, for vectorizable loops: within 2 ulp of the exact value on `[−87, 88]`; the argument is
/// clamped there (so the result stays a normal f32), NaN gives NaN.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND_MAGIC;
    let n = shifted - ROUND_MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_2e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let p = p * r * r + r + 1.0;
    // The integer n sits in the low bits of `shifted`; 2^n is n + 127 in the exponent field.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    p * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// `σ(2u) = 1 / (1 + e^(−2u))` for gelu's `u(x)`.
#[inline(always)]
fn sigmoid_2u(u: f32) -> f32 {
    1.0 / (1.0 + exp(-2.0 * u))
}

/// gelu with upstream's constants: `0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²)))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    x * sigmoid_2u(SQRT_TWO_OVER_PI * x * (1.0 + 0.044_715 * x * x))
}

/// gelu's derivative with the constants of upstream's backward: with `t = tanh(u)`,
/// `0.5·t + (0.0535161·x³ + 0.398942·x)·(1 − t²) + 0.5`, here `s + 4·x·s·(1 − s)·(0.398942 +
/// 0.0535161·x²)` where `s = σ(2u) = (1 + t)/2`, and `1 − s = e·s` with `e = e^(−2u)` (no
/// cancellation where `s` is near 1).
#[inline(always)]
pub fn gelu_derivative(x: f32) -> f32 {
    let x2 = x * x;
    let e = exp(-2.0 * (0.797_885 * x + 0.035_677_4 * x2 * x));
    let s = 1.0 / (1.0 + e);
    s + 4.0 * x * s * (e * s) * (0.398_942 + 0.053_516_1 * x2)
}

#[inline(always)]
fn forward_loop(xs: &[f32], ys: &mut [f32]) {
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = gelu(x);
    }
}

#[inline(always)]
fn backward_loop(xs: &[f32], grads: &[f32], out: &mut [f32]) {
    for ((o, &x), &g) in out.iter_mut().zip(xs).zip(grads) {
        *o = g * gelu_derivative(x);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn forward_avx512(xs: &[f32], ys: &mut [f32]) {
        super::forward_loop(xs, ys)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward_avx2(xs: &[f32], ys: &mut [f32]) {
        super::forward_loop(xs, ys)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn backward_avx512(xs: &[f32], grads: &[f32], out: &mut [f32]) {
        super::backward_loop(xs, grads, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn backward_avx2(xs: &[f32], grads: &[f32], out: &mut [f32]) {
        super::backward_loop(xs, grads, out)
    }
}

/// `ys[i] = gelu(xs[i])` over the shorter of the two slices.
pub fn gelu_slice(xs: &[f32], ys: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: each function is called only where the CPU has the features it was compiled for.
        if is_x86_feature_detected!("avx512f") {
            return unsafe { x86::forward_avx512(xs, ys) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return unsafe { x86::forward_avx2(xs, ys) };
        }
    }
    forward_loop(xs, ys)
}

/// `out[i] = grads[i] · gelu'(xs[i])` over the shortest of the three slices.
pub fn gelu_backward_slice(xs: &[f32], grads: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: as in `gelu_slice`.
        if is_x86_feature_detected!("avx512f") {
            return unsafe { x86::backward_avx512(xs, grads, out) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return unsafe { x86::backward_avx2(xs, grads, out) };
        }
    }
    backward_loop(xs, grads, out)
}

/// Elements converted to f32 at a time for the half-precision dtypes (on the stack).
const BLOCK: usize = 256;

/// `gelu_slice` for a half-precision dtype: computed in f32, rounded once (as torch computes
/// its half-precision gelu).
pub fn through_f32<T: Copy>(xs: &[T], ys: &mut [T], to: fn(T) -> f32, from: fn(f32) -> T) {
    let (mut x32, mut y32) = ([0f32; BLOCK], [0f32; BLOCK]);
    for (xs, ys) in xs.chunks(BLOCK).zip(ys.chunks_mut(BLOCK)) {
        let n = xs.len().min(ys.len());
        for (a, &x) in x32.iter_mut().zip(xs) {
            *a = to(x);
        }
        gelu_slice(&x32[..n], &mut y32[..n]);
        for (y, &b) in ys.iter_mut().zip(&y32[..n]) {
            *y = from(b);
        }
    }
}

/// `gelu_backward_slice` for a half-precision dtype: computed in f32, rounded once.
pub fn backward_through_f32<T: Copy>(
    xs: &[T],
    grads: &[T],
    out: &mut [T],
    to: fn(T) -> f32,
    from: fn(f32) -> T,
) {
    let (mut x32, mut g32, mut o32) = ([0f32; BLOCK], [0f32; BLOCK], [0f32; BLOCK]);
    for ((xs, grads), out) in xs
        .chunks(BLOCK)
        .zip(grads.chunks(BLOCK))
        .zip(out.chunks_mut(BLOCK))
    {
        let n = xs.len().min(grads.len()).min(out.len());
        for ((a, &x), (b, &g)) in x32.iter_mut().zip(xs).zip(g32.iter_mut().zip(grads)) {
            *a = to(x);
            *b = to(g);
        }
        gelu_backward_slice(&x32[..n], &g32[..n], &mut o32[..n]);
        for (o, &c) in out.iter_mut().zip(&o32[..n]) {
            *o = from(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        (-200_000..=200_000).map(|i| i as f32 * 1e-4)
    }

    #[test]
    fn exp_within_two_ulp() {
        for x in (-8_700..=8_800).map(|i| i as f32 * 1e-2) {
            let exact = (x as f64).exp();
            let ulp = (exact as f32).abs() * f32::EPSILON;
            assert!((exp(x) as f64 - exact).abs() <= 2.0 * ulp as f64, "{x}");
        }
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn gelu_and_derivative_match_f64() {
        let xs: Vec<f32> = grid().collect();
        let mut ys = vec![0.0; xs.len()];
        gelu_slice(&xs, &mut ys);
        let ones = vec![1.0; xs.len()];
        let mut ds = vec![0.0; xs.len()];
        gelu_backward_slice(&xs, &ones, &mut ds);
        for ((&x, &y), &d) in xs.iter().zip(&ys).zip(&ds) {
            let v = x as f64;
            let u = 0.7978845608028654 * v * (1.0 + 0.044715 * v * v);
            let exact = v / (1.0 + (-2.0 * u).exp()); // = 0.5·v·(1 + tanh u), without its cancellation
            // Relative to the value: the f32 rounding of u alone moves e^(-2u) by ~|2u| ulp.
            let bound = 2e-7 * (2.0 + 2.0 * u.abs()) * exact.abs() + 1e-36;
            assert!((y as f64 - exact).abs() <= bound, "gelu({x}) = {y}, not {exact}");
            let t = (0.797885 * v + 0.0356774 * v * v * v).tanh();
            let exact = 0.5 * t + (0.0535161 * v * v * v + 0.398942 * v) * (1.0 - t * t) + 0.5;
            assert!((d as f64 - exact).abs() <= 1e-6, "gelu'({x})");
        }
        let mut nan = [0.0];
        gelu_slice(&[f32::NAN], &mut nan);
        assert!(nan[0].is_nan());
        gelu_backward_slice(&[f32::NAN], &[1.0], &mut nan);
        assert!(nan[0].is_nan());
    }
}
