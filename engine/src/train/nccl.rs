//! Data-parallel ranks on CUDA devices of one machine, summed with NCCL (`--nproc-per-node N`).
//! One process holds the N ranks as threads, a communicator each (`ncclCommInitAll`), which spares
//! the launcher torchrun needs to pass a unique id between processes. cudarc opens libnccl at run
//! time (`dynamic-loading`), like libcuda: the binary builds and starts without it.

use std::sync::Mutex;

use candle_core::cuda_backend::cudarc::driver::CudaContext;
use candle_core::cuda_backend::cudarc::nccl::{Comm, ReduceOp};

use super::collective::Collective;
use crate::error::{EngineError, Result};

/// One rank's communicator, used by its own thread only.
struct Owned(Comm);
// SAFETY: a communicator is a handle NCCL allows any one thread at a time to use; the mutex
// around it keeps uses one at a time, and only the rank's own thread makes them.
unsafe impl Send for Owned {}

/// One rank of a group made by [`Nccl::group`].
pub struct Nccl {
    rank: usize,
    world_size: usize,
    comm: Mutex<Owned>,
}

impl Nccl {
    /// A rank on each of `ordinals` (CUDA device numbers), rank `i` at index `i`.
    pub fn group(ordinals: &[usize]) -> Result<Vec<Nccl>> {
        let failed = |what: &str, e: String| EngineError::Input(format!("NCCL: {what}: {e}"));
        let streams = ordinals
            .iter()
            .map(|&o| {
                CudaContext::new(o)
                    .map(|c| c.default_stream())
                    .map_err(|e| failed(&format!("opening cuda:{o}"), format!("{e:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let comms = Comm::from_devices(streams)
            .map_err(|e| failed("creating the communicators", format!("{e:?}")))?;
        let world_size = comms.len();
        Ok(comms
            .into_iter()
            .enumerate()
            .map(|(rank, comm)| Nccl {
                rank,
                world_size,
                comm: Mutex::new(Owned(comm)),
            })
            .collect())
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()> {
        let failed = |e: String| EngineError::Input(format!("NCCL all-reduce: {e}"));
        let guard = self
            .comm
            .lock()
            .map_err(|_| failed("a rank failed during a sum".into()))?;
        let comm = &guard.0;
        let stream = comm.stream();
        let mut buffer = stream
            .clone_htod(values)
            .map_err(|e| failed(format!("{e:?}")))?;
        comm.all_reduce_in_place(&mut buffer, &ReduceOp::Sum)
            .map_err(|e| failed(format!("{e:?}")))?;
        stream
            .memcpy_dtoh(&buffer, values)
            .map_err(|e| failed(format!("{e:?}")))?;
        stream.synchronize().map_err(|e| failed(format!("{e:?}")))?;
        Ok(())
    }
}

/// What a group over `ranks` devices from `first` needs before it is made: a clear refusal.
pub fn check_devices(first: usize, ranks: usize) -> Result<Vec<usize>> {
    let count = CudaContext::device_count()
        .map_err(|e| EngineError::Input(format!("NCCL: counting CUDA devices: {e:?}")))?;
    let ordinals: Vec<usize> = (first..first + ranks).collect();
    if ordinals.last().is_some_and(|&o| o >= count as usize) {
        return Err(EngineError::Input(format!(
            "--nproc-per-node {ranks} from cuda:{first} needs devices up to cuda:{}, this machine has {count}",
            first + ranks - 1
        )));
    }
    Ok(ordinals)
}
