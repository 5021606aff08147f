//! Peak memory of a run, for `bench train` and the training log: on the CPU the process's peak
//! resident set (Linux `VmHWM`); on a GPU the device's used memory (total − free, as the driver
//! and `nvidia-smi` see it: the CUDA context and any other process on that GPU included), sampled
//! by a thread every few milliseconds, as candle keeps no count of its own.

use candle_core::Device;

/// Watches one device's memory from `watch` until dropped.
pub struct PeakMemory {
    #[cfg(feature = "cuda")]
    gpu: Option<gpu::Sampler>,
}

impl PeakMemory {
    pub fn watch(device: &Device) -> Self {
        #[cfg(not(feature = "cuda"))]
        let _ = device;
        Self {
            #[cfg(feature = "cuda")]
            gpu: gpu::Sampler::start(device),
        }
    }

    /// The peak so far, `None` where the platform reports none.
    pub fn bytes(&self) -> Option<u64> {
        #[cfg(feature = "cuda")]
        if let Some(gpu) = &self.gpu {
            return gpu.peak();
        }
        peak_rss_bytes()
    }
}

/// Lets glibc's malloc keep freed memory for the next allocation instead of handing it back to the
/// kernel, for a training process. A step allocates and frees the same activation-sized buffers
/// thousands of times; by default each one over 128 KiB is its own `mmap`, so every step faulted
/// its memory in again page by page and zeroed it (a fifth of a CPU step in the profile). Buffers
/// up to 32 MiB (glibc's largest threshold) now come from the heap, and the heap's top is not
/// trimmed: memory already counted in the peak is reused, so the peak does not grow, while larger
/// buffers (the output layer's) are still mapped and unmapped. `bench train` at hidden 1024,
/// 12 layers: 65 → 79 tokens/s on this machine (README, Benchmarks).
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's thresholds; called before the run allocates.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Peak resident memory of this process so far (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(feature = "cuda")]
mod gpu {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use candle_core::Device;

    /// Short enough to catch a step's peak (a 6B layer's forward takes tens of milliseconds).
    const PERIOD: Duration = Duration::from_millis(2);

    pub struct Sampler {
        peak: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Sampler {
        pub fn start(device: &Device) -> Option<Self> {
            let Device::Cuda(cuda) = device else {
                return None;
            };
            let context = cuda.cuda_stream().context().clone();
            let (free, total) = context.mem_get_info().ok()?;
            let peak = Arc::new(AtomicU64::new((total - free) as u64));
            let stop = Arc::new(AtomicBool::new(false));
            let (p, s) = (peak.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name("glmtune-gpu-memory".into())
                .spawn(move || {
                    while !s.load(Ordering::Relaxed) {
                        if let Ok((free, total)) = context.mem_get_info() {
                            p.fetch_max((total - free) as u64, Ordering::Relaxed);
                        }
                        std::thread::sleep(PERIOD);
                    }
                })
                .ok()?;
            Some(Self {
                peak,
                stop,
                thread: Some(thread),
            })
        }

        pub fn peak(&self) -> Option<u64> {
            Some(self.peak.load(Ordering::Relaxed))
        }
    }

    impl Drop for Sampler {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_peak_covers_what_was_touched() {
        let watch = PeakMemory::watch(&Device::Cpu);
        // 64 MiB written page by page must show in the resident peak.
        let block = vec![1u8; 64 << 20];
        let peak = watch.bytes().expect("Linux reports VmHWM");
        assert!(peak >= block.len() as u64, "{peak}");
        assert_eq!(
            block.iter().map(|&b| b as usize).sum::<usize>(),
            block.len()
        );
    }
}
