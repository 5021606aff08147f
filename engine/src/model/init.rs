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
    let samples = normal_samples(count, std, seed);
    Ok(match dtype {
        DType::F16 => Tensor::from_vec(samples.map(half::f16::from_f32).collect(), shape, device)?,
        DType::BF16 => {
            Tensor::from_vec(samples.map(half::bf16::from_f32).collect(), shape, device)?
        }
        _ => Tensor::from_vec(samples.collect::<Vec<f32>>(), shape, device)?.to_dtype(dtype)?,
    })
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
