//! CPU kernels for the products of block-quantized (q4_0, q8_0) weight matrices by f32
//! activations: decoding (one activation row) and prompt processing (many rows) alike.
//!
//! Why our own: candle's CPU path multiplies q4_0 one row at a time with AVX2 only (a fifth of
//! this machine's read bandwidth when decoding), and its AVX-512 path for q8_0 rounds activations
//! to 256-value blocks, which changes the answers. Here the activations are rounded to q8_0 blocks
//! exactly as candle's reference path rounds them (so the integer sums are the same), then
//! multiplied with the widest integer dot products the CPU has, chosen at run time: AVX-512 VNNI,
//! AVX2, or the portable code every SIMD kernel is tested against. Work is split over the same
//! thread pool candle's CPU ops use, by groups of weight rows, with no allocation per product
//! once a thread's scratch has grown.
//!
//! On other architectures (aarch64's NEON dot products, wasm32's simd128) candle's own kernels
//! are used: see [`Isa::detected`].

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::horizontal_sum;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod blocks;
pub mod packed;
mod portable;

use std::cell::RefCell;
use std::sync::OnceLock;

pub use blocks::BlockFormat;
use blocks::{pairs, prepare_row, Pair, BLOCK};
pub use packed::Packed;

/// An instruction set the products can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Portable,
    Avx2,
    Avx512Vnni,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512Vnni];

    /// Whether this CPU runs it.
    pub fn supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::supported(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => avx512::supported(),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512Vnni => false,
        }
    }

    /// The widest this CPU has, when ours beat candle's there: on x86-64 always; elsewhere
    /// `None` (candle's NEON and simd128 kernels are used).
    pub fn detected() -> Option<Isa> {
        static DETECTED: OnceLock<Option<Isa>> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            if !cfg!(target_arch = "x86_64") {
                return None;
            }
            Isa::ALL.into_iter().rev().find(|isa| isa.supported())
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512-vnni",
        }
    }

    /// Activation rows a tile of this kernel takes: as many as the registers hold accumulators
    /// for beside two weight rows.
    fn tile_acts(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => avx512::ACTS,
            _ => 4,
        }
    }

    fn tile(self, format: BlockFormat, rows: &[&[u8]], acts: &[&[Pair]], out: &mut [f32]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `matmul` checked that the CPU supports the kernel and that every row holds
            // the blocks the activations' pairs cover.
            Isa::Avx512Vnni => unsafe { avx512::tile(format, rows, acts, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { avx2::tile(format, rows, acts, out) },
            _ => portable::tile(format, rows, acts, out),
        }
    }
}

/// Why a product cannot run.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{isa:?} kernels are not supported by this CPU")]
    Unsupported { isa: Isa },
    #[error("a {n}×{k} {format:?} matrix: {detail}")]
    Shape {
        format: BlockFormat,
        n: usize,
        k: usize,
        detail: String,
    },
}

/// Weight rows one task takes when decoding (a single activation row), and rows per tile.
const DECODE_ROWS: usize = 4;
/// Weight rows one task takes when processing a prompt: their blocks stay in the core's caches
/// while every activation row passes over them.
const PREFILL_ROWS: usize = 16;
/// Weight rows a prompt tile multiplies at once.
const TILE_ROWS: usize = 2;
/// Activation rows a prompt tile multiplies at once, at most (see [`Isa::tile_acts`]).
const MAX_TILE_ACTS: usize = 8;

thread_local! {
    /// The calling thread's rounded activations, grown to the largest product seen.
    static ACTIVATIONS: RefCell<Vec<Pair>> = const { RefCell::new(Vec::new()) };
}

/// `out[i, j] = x[i, ·] · w[j, ·]` for `x` holding rows of `k` f32 values and `w` holding `n`
/// rows of `k / 32` blocks of `format` (GGML's layout): each activation row is rounded to q8_0
/// blocks first, as candle's quantized matmul does.
pub fn matmul(
    isa: Isa,
    format: BlockFormat,
    weights: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    out: &mut [f32],
) -> Result<(), KernelError> {
    if !isa.supported() {
        return Err(KernelError::Unsupported { isa });
    }
    let shape = |detail: String| KernelError::Shape {
        format,
        n,
        k,
        detail,
    };
    if k == 0 || !k.is_multiple_of(BLOCK) {
        return Err(shape(
            "the row length is not a positive multiple of 32".into(),
        ));
    }
    let row_bytes = k / BLOCK * format.block_bytes();
    if weights.len() != n * row_bytes {
        return Err(shape(format!("{} bytes of blocks", weights.len())));
    }
    let m = activation_rows(x.len(), k, out.len(), n).map_err(shape)?;
    let per_row = pairs(k);
    ACTIVATIONS.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let acts = rounded_rows(&mut scratch, x, k, per_row, |row, act| {
            prepare_row(row, format, act)
        });
        let act = |i: usize| &acts[i * per_row..(i + 1) * per_row];
        let row = |j: usize| &weights[j * row_bytes..(j + 1) * row_bytes];
        let out = Shared(out.as_mut_ptr());
        if m == 1 {
            parallel(n.div_ceil(DECODE_ROWS), |task| {
                let first = task * DECODE_ROWS;
                let count = DECODE_ROWS.min(n - first);
                let rows: [&[u8]; DECODE_ROWS] =
                    std::array::from_fn(|r| row((first + r).min(n - 1)));
                let mut dots = [0f32; DECODE_ROWS];
                isa.tile(format, &rows[..count], &[act(0)], &mut dots[..count]);
                for (j, &dot) in dots[..count].iter().enumerate() {
                    // SAFETY: each output column belongs to one task.
                    unsafe { out.write(first + j, dot) };
                }
            });
        } else {
            const ROWS: usize = TILE_ROWS;
            let tile_acts = isa.tile_acts();
            parallel(n.div_ceil(PREFILL_ROWS), |task| {
                let first = task * PREFILL_ROWS;
                let last = n.min(first + PREFILL_ROWS);
                let mut dots = [0f32; ROWS * MAX_TILE_ACTS];
                for i in (0..m).step_by(tile_acts) {
                    let count = tile_acts.min(m - i);
                    let tile: [&[Pair]; MAX_TILE_ACTS] =
                        std::array::from_fn(|c| act((i + c).min(m - 1)));
                    for j in (first..last).step_by(ROWS) {
                        let rows_count = ROWS.min(last - j);
                        let rows: [&[u8]; ROWS] = std::array::from_fn(|r| row((j + r).min(n - 1)));
                        let dots = &mut dots[..rows_count * count];
                        isa.tile(format, &rows[..rows_count], &tile[..count], dots);
                        for (r, chunk) in dots.chunks(count).enumerate() {
                            for (c, &dot) in chunk.iter().enumerate() {
                                // SAFETY: each output column belongs to one task.
                                unsafe { out.write((i + c) * n + j + r, dot) };
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(())
}

/// Activation rows of `k` in `x_len` values, checked against an output of `out_len` for `n`
/// columns; the reason when they do not fit.
fn activation_rows(x_len: usize, k: usize, out_len: usize, n: usize) -> Result<usize, String> {
    if k == 0 || !x_len.is_multiple_of(k) {
        return Err(format!("{x_len} activations"));
    }
    let m = x_len / k;
    if out_len != m * n {
        return Err(format!("{out_len} outputs for {m} rows"));
    }
    Ok(m)
}

/// `x`'s rows of `k` values rounded by `prepare` into `per_row` items each, in `scratch` (grown
/// as needed, so a thread allocates only for a larger product than any before); several rows
/// are rounded over the pool.
fn rounded_rows<'s, T: Clone + Default + Send>(
    scratch: &'s mut Vec<T>,
    x: &[f32],
    k: usize,
    per_row: usize,
    prepare: impl Fn(&[f32], &mut [T]) + Sync,
) -> &'s [T] {
    let m = x.len() / k;
    if scratch.len() < m * per_row {
        scratch.resize(m * per_row, T::default());
    }
    let rows = &mut scratch[..m * per_row];
    if m == 1 {
        prepare(x, rows);
    } else {
        let shared = Shared(rows.as_mut_ptr());
        parallel(m, |i| {
            // SAFETY: row i's items are written by task i alone.
            let row = unsafe { shared.slice(i * per_row, per_row) };
            prepare(&x[i * k..(i + 1) * k], row);
        });
    }
    rows
}

/// A buffer the tasks write at places no two tasks share.
pub(crate) struct Shared<T>(pub(crate) *mut T);
// A pointer is copied whatever it points at (a derive would ask `T: Copy`).
impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<T> {}
// SAFETY: tasks write disjoint places (see the callers) and the pool joins before `matmul` returns.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// # Safety
    /// `at` is inside the buffer, and no other task writes it.
    pub(crate) unsafe fn write(self, at: usize, value: T) {
        // SAFETY: the caller's.
        unsafe { *self.0.add(at) = value };
    }

    /// # Safety
    /// `start..start + len` is inside the buffer, and no other task touches it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [T] {
        // SAFETY: the caller's.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// `bias` (as long as a row) added to every row of `out`, the rows over the pool when there are
/// several: a product's bias, added where its f32 rows are made rather than by a tensor op.
pub(crate) fn add_to_rows(out: &mut [f32], bias: &[f32]) {
    let n = bias.len().max(1);
    let rows = out.len() / n;
    let shared = Shared(out.as_mut_ptr());
    let add = |row: usize| {
        // SAFETY: row `row`'s n values are written by this task alone.
        let row = unsafe { shared.slice(row * n, n) };
        row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
    };
    if rows > 1 {
        parallel(rows, add);
    } else {
        (0..rows).for_each(add);
    }
}

/// Runs `task(0..tasks)` over candle's CPU thread pool (inline on wasm32).
pub(crate) fn parallel(tasks: usize, task: impl Fn(usize) + Sync) {
    #[cfg(not(target_arch = "wasm32"))]
    candle_core::utils::barrier_pool().execute_chunked(tasks, |range| range.for_each(&task));
    #[cfg(target_arch = "wasm32")]
    (0..tasks).for_each(task);
}

#[cfg(test)]
mod tests;
