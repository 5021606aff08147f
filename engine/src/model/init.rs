//! Seeded random initialisation, reproducible on every device (candle's CPU RNG cannot be seeded).

use candle_core::{DType, Device, Shape, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

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

/// Samples are drawn in runs of this many, in parallel, each run seeking to its own place in the
/// seed's one stream: the same numbers as one sequential draw (ChatGLM-6B's six billion samples
/// took nine minutes on one core that way).
const RUN: usize = 1 << 20;

/// `count` samples of [`normal_samples_from`] word 0, run by run, each converted by `convert`.
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
            // Two samples come from two u32 words of the stream and RUN is even, so the run starting
            // at sample `run · RUN` starts at that word.
            let samples = normal_samples_from(chunk.len(), std, seed, (run * RUN) as u128);
            for (slot, value) in chunk.iter_mut().zip(samples) {
                *slot = convert(value);
            }
        });
    out
}

/// `count` normal samples (Box–Muller: two uniforms give two independent normals) of the seed's
/// stream from its word `word` on. `StdRng` is ChaCha12 seeded the same way, but only
/// `ChaCha12Rng` can seek.
fn normal_samples_from(count: usize, std: f32, seed: u64, word: u128) -> impl Iterator<Item = f32> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    rng.set_word_pos(word);
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
    fn large_tensors_drawn_in_parallel_runs_are_the_one_sequence_of_the_seed() {
        let count = 2 * RUN + 7;
        let drawn = draw(count, 1.0, 9, |x| x);
        // The sequential draw with the generator every other sampler here uses.
        let mut rng = StdRng::seed_from_u64(9);
        let mut sequential = Vec::with_capacity(count);
        while sequential.len() < count {
            let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let u2: f32 = rng.random();
            let radius = (-2.0 * u1.ln()).sqrt();
            let angle = std::f32::consts::TAU * u2;
            sequential.extend([radius * angle.cos(), radius * angle.sin()]);
        }
        sequential.truncate(count);
        assert_eq!(drawn, sequential);
        assert_ne!(drawn[RUN..RUN + 100], drawn[..100]);
    }
}
