//! Dynamic loss scaling for an f16 base, as torch's `GradScaler` does it under the HF Trainer's
//! `--fp16`: the loss is multiplied by the scale before the backward, the gradients divided by it
//! after; a step whose gradients are not all finite is skipped (no optimizer update, no scheduler
//! step) and halves the scale; `growth_interval` good steps in a row double it.

use serde::{Deserialize, Serialize};

/// `GradScaler`'s settings (its defaults in [`Default`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScaling {
    pub init_scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: u64,
}

impl Default for LossScaling {
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

/// The scaler's state, saved with a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    pub scale: f64,
    /// Good steps since the scale last changed.
    pub growth_tracker: u64,
}

impl ScalerState {
    pub fn new(settings: &LossScaling) -> Self {
        Self {
            scale: settings.init_scale,
            growth_tracker: 0,
        }
    }

    /// Divides `grads` by the scale (`unscale_`: a multiplication by the f32 reciprocal) and says
    /// whether they are all finite.
    pub fn unscale(&self, grads: &mut [Vec<f32>]) -> bool {
        let inverse = (1.0 / self.scale) as f32;
        let mut finite = true;
        for g in grads.iter_mut().flatten() {
            *g *= inverse;
            finite &= g.is_finite();
        }
        finite
    }

    /// `GradScaler.update`: back off after an overflow, grow after enough good steps.
    pub fn update(&mut self, settings: &LossScaling, found_inf: bool) {
        if found_inf {
            self.scale *= settings.backoff_factor;
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker == settings.growth_interval {
                self.scale *= settings.growth_factor;
                self.growth_tracker = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_on_overflow_and_grows_after_the_interval() {
        let settings = LossScaling {
            growth_interval: 2,
            ..LossScaling::default()
        };
        let mut state = ScalerState::new(&settings);
        let mut grads = vec![vec![65536.0f32, f32::INFINITY]];
        assert!(!state.unscale(&mut grads));
        assert_eq!(grads[0][0], 1.0);
        state.update(&settings, true);
        assert_eq!(state.scale, 32768.0);
        state.update(&settings, false);
        assert_eq!(state.scale, 32768.0);
        state.update(&settings, false);
        assert_eq!((state.scale, state.growth_tracker), (65536.0, 0));
    }
}
