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

/// mimalloc's `purge_delay` option (its index in `mi_option_e` of the mimalloc 3 that
/// libmimalloc-sys 0.1.49 builds, which the crate does not name) and that build's default
/// (`MIMALLOC_VERBOSE=1` prints it). `reuse_freed_memory` checks the default before setting the
/// option, so another mimalloc is left alone rather than mis-set; a test fails if it is.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_PURGE_DELAY_DEFAULT_MS: std::os::raw::c_long = 1000;

/// How long a training process keeps memory it freed before handing it back to the kernel.
const TRAINING_PURGE_DELAY_MS: std::os::raw::c_long = 10_000;

/// Keeps the memory a training process frees for its next allocations for 10 s instead of mimalloc's
/// default second. A step frees and reallocates the same activation-sized buffers thousands of
/// times, each reused within seconds; handed back, each was faulted in and zeroed page by page on
/// its next use (a fifth of a CPU step, more the larger the forward: `bench train` at hidden 1024,
/// 12 layers, forwards of 8: 112 → 144 tokens/s on this project's CPU). Never handing memory back
/// was as fast but let a quantized 6B base's dequantized matrices pile up (7.2 GB instead of 6.4).
/// Only for `train` and `bench train`: a server hands memory back as usual.
pub fn reuse_freed_memory() {
    // SAFETY: mi_option_get/mi_option_set read and write one of mimalloc's settings; the index is
    // checked against its documented default first.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT_MS {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, TRAINING_PURGE_DELAY_MS);
        }
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

    /// The option index and default are the bundled mimalloc's: a libmimalloc-sys that moves them
    /// would make `reuse_freed_memory` do nothing, silently, without this test.
    #[test]
    fn reuse_freed_memory_delays_purging() {
        // SAFETY: reads one of mimalloc's settings.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(get(), MI_PURGE_DELAY_DEFAULT_MS);
        reuse_freed_memory();
        assert_eq!(get(), TRAINING_PURGE_DELAY_MS);
    }
}
