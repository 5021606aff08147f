//! The block-quantized products alone, at the shapes of one decoded token of the "mid" model of
//! `performance.md` (hidden 2048, 16 layers, inner 8192: 64 matrices, larger than the caches), for
//! every instruction set this CPU runs and for candle's `QMatMul` as the baseline, set against the
//! read bandwidth measured in the same process with the same threads.
//!
//! `cargo bench -p glmtune-engine --bench kernels` (`RAYON_NUM_THREADS` sets the threads;
//! `GLMTUNE_BENCH_KERNELS=avx512-vnni,candle` keeps those rows).
//! Decode rows: weight bytes ÷ time per token, and that as a fraction of the read bandwidth.
//! Prompt rows: 146 activation rows through one layer's matrices, in tokens/s.

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use glmtune_engine::generation::speed::read_bandwidth;
use glmtune_engine::kernels::{self, BlockFormat, Isa};

const HIDDEN: usize = 2048;
const INNER: usize = 8192;
const LAYERS: usize = 16;
const PROMPT: usize = 146;

/// Random blocks: scales of 2⁻⁸, random bytes for the values.
fn random_blocks(format: BlockFormat, n: usize, k: usize, seed: u64) -> Vec<u8> {
    let bytes = format.block_bytes();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = vec![0u8; n * k / 32 * bytes];
    for block in data.chunks_mut(bytes) {
        block[..2].copy_from_slice(&half::f16::from_f32(1.0 / 256.0).to_bits().to_le_bytes());
        for byte in &mut block[2..] {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
    }
    data
}

fn layer_shapes() -> [(usize, usize); 4] {
    [
        (3 * HIDDEN, HIDDEN),
        (HIDDEN, HIDDEN),
        (INNER, HIDDEN),
        (HIDDEN, INNER),
    ]
}

fn best_of<F: FnMut()>(runs: usize, mut f: F) -> f64 {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads = candle_core::utils::get_num_threads();
    let bandwidth = read_bandwidth(1 << 30, threads);
    println!(
        "threads {threads}, read bandwidth {:.1} GB/s; detected kernels: {:?}",
        bandwidth / 1e9,
        Isa::detected()
    );
    for format in [BlockFormat::Q4_0, BlockFormat::Q8_0] {
        let dtype = match format {
            BlockFormat::Q4_0 => GgmlDType::Q4_0,
            BlockFormat::Q8_0 => GgmlDType::Q8_0,
        };
        let matrices: Vec<(usize, usize, Vec<u8>)> = (0..LAYERS)
            .flat_map(|layer| {
                layer_shapes()
                    .into_iter()
                    .enumerate()
                    .map(move |(i, (n, k))| {
                        (n, k, random_blocks(format, n, k, (layer * 4 + i) as u64))
                    })
            })
            .collect();
        let bytes: usize = matrices.iter().map(|(_, _, d)| d.len()).sum();
        let x: Vec<f32> = (0..PROMPT * INNER)
            .map(|i| ((i % 97) as f32 - 48.0) / 17.0)
            .collect();
        let mut out = vec![0f32; PROMPT * INNER];
        let report = |name: &str, decode: f64, prompt: f64| {
            let rate = bytes as f64 / decode;
            println!(
                "{format:?} {name:>12}: decode {:6.2} ms/token, {:5.1} GB/s = {:.2} of the bound; prompt {:7.1} tokens/s",
                decode * 1e3,
                rate / 1e9,
                rate / bandwidth,
                PROMPT as f64 / prompt
            );
        };
        let chosen = std::env::var("GLMTUNE_BENCH_KERNELS").ok();
        let wanted = |name: &str| {
            chosen
                .as_deref()
                .is_none_or(|c| c.split(',').any(|c| c == name))
        };
        for isa in Isa::ALL
            .into_iter()
            .filter(|isa| isa.supported() && wanted(isa.as_str()))
        {
            let decode = best_of(5, || {
                for (n, k, data) in &matrices {
                    kernels::matmul(isa, format, data, *n, *k, &x[..*k], &mut out[..*n])
                        .expect("shapes are consistent");
                }
            });
            let prompt = best_of(2, || {
                for (n, k, data) in &matrices[..4] {
                    kernels::matmul(
                        isa,
                        format,
                        data,
                        *n,
                        *k,
                        &x[..PROMPT * k],
                        &mut out[..PROMPT * n],
                    )
                    .expect("shapes are consistent");
                }
            }) * LAYERS as f64;
            report(isa.as_str(), decode, prompt);
            if isa == Isa::Avx512Vnni {
                let eight = best_of(3, || {
                    for (n, k, data) in &matrices {
                        kernels::matmul(isa, format, data, *n, *k, &x[..8 * k], &mut out[..8 * n])
                            .expect("shapes are consistent");
                    }
                });
                println!(
                    "{format:?}  avx512-vnni: 8 rows at once {:.2} ms/step = {:.2}× one row's rate",
                    eight * 1e3,
                    8.0 * decode / eight
                );
            }
        }
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx512Vnni.supported() && wanted("packed") {
            let packed: Vec<kernels::Packed> = matrices
                .iter()
                .map(|(n, k, data)| {
                    kernels::Packed::pack(format, data, *n, *k).expect("16-row tiles")
                })
                .collect();
            let decode = best_of(5, || {
                for p in &packed {
                    let (n, k) = p.dims();
                    kernels::packed::matmul(p, &x[..k], &mut out[..n]).expect("shapes");
                }
            });
            let prompt = best_of(2, || {
                for p in &packed[..4] {
                    let (n, k) = p.dims();
                    kernels::packed::matmul(p, &x[..PROMPT * k], &mut out[..PROMPT * n])
                        .expect("shapes");
                }
            }) * LAYERS as f64;
            report("packed", decode, prompt);
            let eight = best_of(3, || {
                for p in &packed {
                    let (n, k) = p.dims();
                    kernels::packed::matmul(p, &x[..8 * k], &mut out[..8 * n]).expect("shapes");
                }
            });
            println!(
                "{format:?}       packed: 8 rows at once {:.2} ms/step = {:.2}× one row's rate",
                eight * 1e3,
                8.0 * decode / eight
            );
        }
        if !wanted("candle") {
            continue;
        }
        // candle's QMatMul on the same blocks: the baseline.
        let device = Device::Cpu;
        let candle: Vec<(usize, QMatMul)> = matrices
            .iter()
            .map(|(n, k, data)| {
                let storage =
                    QStorage::from_data(std::borrow::Cow::Borrowed(data), &device, dtype)?;
                Ok((
                    *k,
                    QMatMul::QTensor(std::sync::Arc::new(QTensor::new(storage, (*n, *k))?)),
                ))
            })
            .collect::<candle_core::Result<_>>()?;
        let row = |k: usize, m: usize| Tensor::from_slice(&x[..m * k], (m, k), &device);
        let decode = best_of(5, || {
            for (k, q) in &candle {
                let _ = q
                    .forward(&row(*k, 1).expect("shape"))
                    .expect("candle matmul");
            }
        });
        let prompt = best_of(2, || {
            for (k, q) in &candle[..4] {
                let _ = q
                    .forward(&row(*k, PROMPT).expect("shape"))
                    .expect("candle matmul");
            }
        }) * LAYERS as f64;
        report("candle", decode, prompt);
    }
    Ok(())
}
