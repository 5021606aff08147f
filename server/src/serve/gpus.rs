//! `glmtune serve --gpus`: the GPUs training runs take, one run each, and where chats load.
//!
//! A queued run starts when a GPU is free and holds it, training and evaluating there, until it
//! ends. A chat model is loaded onto a GPU that no run holds (the last such, so that the first
//! free one stays for the next run), else onto `--device`. A loaded model stays where it was
//! loaded; a run that later takes that GPU shares it.

use parking_lot::Mutex;
use std::collections::BTreeSet;

use candle_core::Device;

pub struct Gpus {
    devices: Vec<(usize, Device)>,
    held: Mutex<BTreeSet<usize>>,
}

impl Gpus {
    /// The opened GPUs by ordinal (none: runs train on the CPU).
    pub fn new(devices: Vec<(usize, Device)>) -> Self {
        Self {
            devices,
            held: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    fn held(&self) -> parking_lot::MutexGuard<'_, BTreeSet<usize>> {
        self.held.lock()
    }

    /// The first GPU no run holds, now held; `None` while every one is (the run waits).
    pub fn take(&self) -> Option<usize> {
        let mut held = self.held();
        let free = self
            .devices
            .iter()
            .map(|(ordinal, _)| *ordinal)
            .find(|ordinal| !held.contains(ordinal))?;
        held.insert(free);
        Some(free)
    }

    /// A run is done with its GPU.
    pub fn release(&self, ordinal: usize) {
        self.held().remove(&ordinal);
    }

    /// Where a chat model loads: the last GPU no run holds, `None` when runs hold them all.
    pub fn for_chat(&self) -> Option<Device> {
        let held = self.held();
        self.devices
            .iter()
            .rev()
            .find(|(ordinal, _)| !held.contains(ordinal))
            .map(|(_, device)| device.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bookkeeping needs no GPU: CPU devices stand in for them.
    fn three() -> Gpus {
        Gpus::new(vec![(0, Device::Cpu), (1, Device::Cpu), (3, Device::Cpu)])
    }

    #[test]
    fn one_run_a_gpu_and_the_next_waits() {
        let gpus = three();
        assert_eq!(
            (gpus.take(), gpus.take(), gpus.take()),
            (Some(0), Some(1), Some(3))
        );
        assert_eq!(gpus.take(), None, "a fourth run waits");
        gpus.release(1);
        assert_eq!(gpus.take(), Some(1), "the freed GPU goes to the next run");
    }

    #[test]
    fn chats_use_a_gpu_no_run_holds_else_none() {
        let gpus = three();
        assert!(gpus.for_chat().is_some());
        let held: Vec<_> = (0..3).filter_map(|_| gpus.take()).collect();
        assert_eq!(held.len(), 3);
        assert!(
            gpus.for_chat().is_none(),
            "every GPU runs training: chats go to --device"
        );
        gpus.release(3);
        assert!(gpus.for_chat().is_some());
        assert!(Gpus::new(Vec::new()).for_chat().is_none());
    }
}
