//! Seeded random initialisation, reproducible on every device (candle's CPU RNG cannot be seeded).

use candle_core::{DType, Device, Shape, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::Result;

/// A tensor of normal samples with mean 0 and standard deviation `std`, the same for a seed.
pub fn normal(shape: impl Into<Shape>, std: f32, seed: u64, device: &Device) -> Result<Tensor> {
    normal_as(shape, std, seed, DType::F32, device)
}

/// [`normal`]'s samples rounded to `dtype` as they are drawn (f32, f16 or bf16; anything else
/// drawn as f32 and converted), so a 6B model in half precision never holds an f32 matrix.
pub fn normal_as(
    shape: impl Into<Shape>,
    std: f32,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let count = shape.elem_count();
    Ok(match dtype {
        DType::F16 => Tensor::from_vec(draw(count, std, seed, half::f16::from_f32), shape, device)?,
        DType::BF16 => {
            Tensor::from_vec(draw(count, std, seed, half::bf16::from_f32), shape, device)?
        }
        _ => Tensor::from_vec(draw(count, std, seed, |x| x), shape, device)?.to_dtype(dtype)?,
    })
}

/// Samples are drawn in runs of this many, each run from its own seed and the runs in parallel:
/// ChatGLM-6B's six billion samples took nine minutes on one core. A tensor of at most one run
/// (every test model's) draws the one sequence of its seed.
const RUN: usize = 1 << 20;

/// `count` samples of [`normal_samples`], run by run, each converted by `convert`.
fn draw<T: Copy + Default + Send>(
    count: usize,
    std: f32,
    seed: u64,
    convert: impl Fn(f32) -> T + Sync,
) -> Vec<T> {
    use rayon::prelude::*;

    let mut out = vec![T::default(); count];
    out.par_chunks_mut(RUN)
        .enumerate()
        .for_each(|(run, chunk)| {
            let seed = if run == 0 {
                seed
            } else {
                // Distinct, well-mixed seeds for the later runs (SplitMix64's finaliser).
                let mut z = seed ^ (run as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            };
            let samples = normal_samples(chunk.len(), std, seed);
            for (slot, value) in chunk.iter_mut().zip(samples) {
                *slot = convert(value);
            }
        });
    out
}

/// `count` normal samples (Box–Muller: two uniforms give two independent normals).
fn normal_samples(count: usize, std: f32, seed: u64) -> impl Iterator<Item = f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut spare: Option<f32> = None;
    (0..count).map(move |_| {
        if let Some(value) = spare.take() {
            return value;
        }
        let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
        let u2: f32 = rng.random();
        let radius = (-2.0 * u1.ln()).sqrt() * std;
        let angle = std::f32::consts::TAU * u2;
        spare = Some(radius * angle.sin());
        radius * angle.cos()
    })
}

/// A tensor of uniform samples in `[-bound, bound)`, the same for a seed.
pub fn uniform(shape: impl Into<Shape>, bound: f32, seed: u64, device: &Device) -> Result<Tensor> {
    let shape = shape.into();
    let mut rng = StdRng::seed_from_u64(seed);
    let values: Vec<f32> = (0..shape.elem_count())
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * bound)
        .collect();
    Ok(Tensor::from_vec(values, shape, device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_tensors_draw_run_by_run_the_same_for_a_seed() {
        let count = 2 * RUN + 7;
        let drawn = draw(count, 1.0, 9, |x| x);
        assert_eq!(drawn, draw(count, 1.0, 9, |x| x), "the same for a seed");
        // The first run is the single sequence of the seed; the later runs are others.
        let single: Vec<f32> = normal_samples(count, 1.0, 9).collect();
        assert_eq!(drawn[..RUN], single[..RUN]);
        assert_ne!(drawn[RUN..2 * RUN], single[RUN..2 * RUN]);
        assert_ne!(drawn[RUN..RUN + 100], drawn[..100]);
        // Still standard normal samples.
        let mean = drawn.iter().map(|&x| x as f64).sum::<f64>() / count as f64;
        let var = drawn
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / count as f64;
        assert!(
            mean.abs() < 5e-3 && (var - 1.0).abs() < 5e-3,
            "{mean} {var}"
        );
    }
}
