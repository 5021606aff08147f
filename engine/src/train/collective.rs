//! Data parallelism: one optimizer step's sequences split over several ranks (a process or a
//! thread per device), each rank computing the gradients of its share, the shares summed across
//! ranks before the update so every rank applies the same one.
//!
//! Why the result is the single-process run's: [`super::step`] weights every labelled token by
//! `1 / (accumulation · labelled tokens of its micro-batch)` wherever its row is run, so the step's
//! gradient is a plain sum over rows, and a sum split over ranks is the same sum reassociated. The
//! labelled counts are taken over the whole step (every rank sees every row's labels), prefix
//! dropout is seeded by a row's micro-batch and place (not by the rank), and the summed
//! gradients are bitwise the same on every rank, so their prefixes and optimizers never drift.

use std::sync::{Arc, Barrier, Mutex};

use crate::error::{EngineError, Result};

/// The ranks of one data-parallel run, as one rank sees them.
pub trait Collective: Send + Sync {
    /// This rank's number, `0..world_size()`.
    fn rank(&self) -> usize;
    /// Ranks in the run.
    fn world_size(&self) -> usize;
    /// Replaces `values` on every rank by their elementwise sum over the ranks. Every rank calls
    /// it with the same length, in the same order of calls.
    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()>;
}

/// The rows of a step of `rows` this rank runs: every `world_size`-th from its rank (round robin,
/// so micro-batches of unequal length spread evenly).
pub fn share(rows: usize, rank: usize, world_size: usize) -> impl Iterator<Item = usize> {
    (rank..rows).step_by(world_size.max(1))
}

/// One process alone: the sum is the values themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }
}

/// Ranks that are threads of one process (the CPU tests' stand-in for devices): each posts its
/// values, and once all have, each sums them in rank order, so the result is the same on every
/// rank and the same from run to run whatever order the threads arrive in.
pub struct InProcess {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    world_size: usize,
    posted: Mutex<Vec<Vec<f64>>>,
    barrier: Barrier,
}

impl InProcess {
    /// The `world_size` ranks of one group, rank `i` at index `i`: hand one to each thread.
    pub fn group(world_size: usize) -> Result<Vec<InProcess>> {
        if world_size == 0 {
            return Err(EngineError::Input(
                "a data-parallel group needs at least one rank".into(),
            ));
        }
        let shared = Arc::new(Shared {
            world_size,
            posted: Mutex::new(vec![Vec::new(); world_size]),
            barrier: Barrier::new(world_size),
        });
        Ok((0..world_size)
            .map(|rank| InProcess {
                rank,
                shared: shared.clone(),
            })
            .collect())
    }
}

impl Collective for InProcess {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world_size
    }

    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()> {
        let poisoned = || EngineError::Input("a data-parallel rank failed during a sum".into());
        self.shared.posted.lock().map_err(|_| poisoned())?[self.rank] = values.to_vec();
        self.shared.barrier.wait();
        let mismatch = {
            let posted = self.shared.posted.lock().map_err(|_| poisoned())?;
            let mismatch = posted.iter().position(|p| p.len() != values.len());
            if mismatch.is_none() {
                values.fill(0.0);
                for part in posted.iter() {
                    values.iter_mut().zip(part).for_each(|(v, p)| *v += p);
                }
            }
            mismatch
        };
        // Nobody posts the next call's values before every rank has read this call's.
        self.shared.barrier.wait();
        match mismatch {
            Some(rank) => Err(EngineError::Input(format!(
                "data-parallel ranks summed different lengths (rank {rank} differs from rank {})",
                self.rank
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_gets_the_sum_in_rank_order() {
        let ranks = InProcess::group(3).unwrap();
        let sums: Vec<Vec<f64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = ranks
                .iter()
                .map(|rank| {
                    scope.spawn(move || {
                        let mut values = vec![rank.rank() as f64 + 1.0, 1e16, -1e16];
                        rank.all_reduce_sum(&mut values).unwrap();
                        let mut again = vec![0.5; 2];
                        rank.all_reduce_sum(&mut again).unwrap();
                        values.extend(again);
                        values
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for sum in &sums {
            // Rank order: 1e16 + 1e16 + 1e16 and the negatives cancel exactly.
            assert_eq!(sum, &vec![6.0, 3e16, -3e16, 1.5, 1.5]);
        }
        assert_eq!(ranks[2].world_size(), 3);
    }

    #[test]
    fn shares_cover_every_row_once() {
        let mut seen: Vec<usize> = (0..4).flat_map(|rank| share(10, rank, 4)).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(share(3, 0, 1).count(), 3);
        assert!(InProcess::group(0).is_err());
    }
}
