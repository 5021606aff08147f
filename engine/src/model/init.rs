//! Seeded random initialisation, reproducible on every device (candle's CPU RNG cannot be seeded).

use candle_core::{Device, Shape, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::Result;

/// A tensor of normal samples with mean 0 and standard deviation `std`, the same for a seed.
pub fn normal(shape: impl Into<Shape>, std: f32, seed: u64, device: &Device) -> Result<Tensor> {
    let shape = shape.into();
    let mut rng = StdRng::seed_from_u64(seed);
    let count = shape.elem_count();
    let mut values = Vec::with_capacity(count);
    while values.len() < count {
        // Box–Muller: two uniforms give two independent normals.
        let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
        let u2: f32 = rng.random();
        let radius = (-2.0 * u1.ln()).sqrt() * std;
        let angle = std::f32::consts::TAU * u2;
        values.push(radius * angle.cos());
        if values.len() < count {
            values.push(radius * angle.sin());
        }
    }
    Ok(Tensor::from_vec(values, shape, device)?)
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
