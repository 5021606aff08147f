//! The Hugging Face Trainer's AdamW optimizers — `adamw_hf` (transformers' own `AdamW`, the default of
//! the 4.27 Trainer that ChatGLM-6B's `ptuning/main.py` runs) and `adamw_torch` (`torch.optim.AdamW`,
//! the default of the 4.40 Trainer that ChatGLM3's `finetune_hf.py` runs) — global-norm gradient
//! clipping and the linear learning-rate schedule, on f32 master weights.
//!
//! The prefix is small (at most a few hundred thousand values per layer), so the update runs as
//! plain loops over host vectors: bitwise deterministic, and identical to torch's elementwise order.

/// Which AdamW, by the Trainer's `--optim` name. The two differ in where ε goes and when the
/// weight decay applies, so each official recipe is reproduced only by its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Optim {
    /// transformers' `AdamW`: ε added to the uncorrected √v, bias correction folded into the step
    /// size, decay `p -= lr·wd·p` after the update.
    #[default]
    AdamwHf,
    /// `torch.optim.AdamW`: decay `p *= 1 - lr·wd` before the update, ε added to √v / √(1-β2ᵗ).
    AdamwTorch,
}

impl Optim {
    /// The Trainer's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Optim::AdamwHf => "adamw_hf",
            Optim::AdamwTorch => "adamw_torch",
        }
    }

    /// Parses the Trainer's name.
    /// The optimizer of the generation's official P-Tuning v2 script: ChatGLM-6B's and ChatGLM2's
    /// `ptuning/main.py` run the transformers 4.27 Trainer (default `adamw_hf`); ChatGLM3's
    /// `finetune_demo/finetune_hf.py` runs the 4.40 Trainer (default `adamw_torch`).
    pub fn official(family: crate::family::Family) -> Self {
        use crate::family::Family;
        match family {
            Family::ChatGlm | Family::ChatGlm2 => Optim::AdamwHf,
            Family::ChatGlm3 => Optim::AdamwTorch,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Optim::AdamwHf, Optim::AdamwTorch]
            .into_iter()
            .find(|o| o.name() == name)
    }
}

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub optim: Optim,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            optim: Optim::default(),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Moments of one parameter tensor.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Moments {
    pub exp_avg: Vec<f32>,
    pub exp_avg_sq: Vec<f32>,
}

/// transformers' `AdamW` with `correct_bias=True`: ε is added to the uncorrected √v and the bias
/// correction is folded into the step size; decoupled weight decay comes after the update, and only
/// on the parameters the Trainer puts in its decay group (see [`decays`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub step: u64,
    pub moments: Vec<Moments>,
    /// Per parameter: whether `weight_decay` applies to it.
    pub decay: Vec<bool>,
}

/// The Trainer's two parameter groups (`Trainer.create_optimizer`): weight decay applies to every
/// trainable parameter except biases and LayerNorm weights. A projected prefix has two biases; the
/// prefix encoder has no LayerNorm.
pub fn decays(name: &str) -> bool {
    !name.contains("bias") && !name.contains("layernorm")
}

impl AdamW {
    /// `sizes` and `decay` have one entry per parameter tensor.
    pub fn new(config: AdamWConfig, sizes: &[usize], decay: &[bool]) -> Self {
        assert_eq!(sizes.len(), decay.len(), "one decay flag per parameter");
        Self {
            config,
            step: 0,
            decay: decay.to_vec(),
            moments: sizes
                .iter()
                .map(|&n| Moments {
                    exp_avg: vec![0.0; n],
                    exp_avg_sq: vec![0.0; n],
                })
                .collect(),
        }
    }

    /// Applies one update with learning rate `lr` to each parameter given its gradient.
    pub fn update(&mut self, lr: f64, params: &mut [Vec<f32>], grads: &[Vec<f32>]) {
        self.step += 1;
        let c = self.config;
        let bias_correction1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias_correction2 = 1.0 - c.beta2.powi(self.step as i32);
        for (((param, grad), moments), &decays) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.moments)
            .zip(&self.decay)
        {
            let weight_decay = if decays { c.weight_decay } else { 0.0 };
            match c.optim {
                Optim::AdamwHf => {
                    let step_size = (lr * bias_correction2.sqrt() / bias_correction1) as f32;
                    adamw_hf(
                        c,
                        step_size,
                        (lr * weight_decay) as f32,
                        param,
                        grad,
                        moments,
                    )
                }
                Optim::AdamwTorch => {
                    // torch casts each Python-float scalar to the tensor's f32 inside its kernels.
                    let scalars = TorchScalars {
                        keep: (1.0 - lr * weight_decay) as f32,
                        step_size: (lr / bias_correction1) as f32,
                        bias_correction2_sqrt: bias_correction2.sqrt() as f32,
                    };
                    adamw_torch(c, scalars, param, grad, moments)
                }
            }
        }
    }
}

/// transformers' `AdamW.step` on one tensor, in its order of operations.
fn adamw_hf(
    c: AdamWConfig,
    step_size: f32,
    decay: f32,
    param: &mut [f32],
    grad: &[f32],
    moments: &mut Moments,
) {
    let k = Coefficients::of(c);
    for i in 0..param.len() {
        let g = grad[i];
        // `exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)`
        let m = &mut moments.exp_avg[i];
        *m = *m * k.beta1 + k.one_minus_beta1 * g;
        let v = &mut moments.exp_avg_sq[i];
        // `exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)`: (value · g) · g
        *v = *v * k.beta2 + k.one_minus_beta2 * g * g;
        let denom = v.sqrt() + k.eps;
        // `p.addcdiv_(exp_avg, denom, value=-step_size)`: (value · m) / denom
        param[i] += -step_size * *m / denom;
        if decay > 0.0 {
            param[i] += param[i] * -decay;
        }
    }
}

/// The optimizer's constants as torch's kernels see them: computed in Python's f64, then cast to
/// the tensors' f32 (so `1 - β1` is f32(0.1), not 1 - f32(0.9)).
struct Coefficients {
    beta1: f32,
    beta2: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    eps: f32,
}

impl Coefficients {
    fn of(c: AdamWConfig) -> Self {
        Self {
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            one_minus_beta1: (1.0 - c.beta1) as f32,
            one_minus_beta2: (1.0 - c.beta2) as f32,
            eps: c.eps as f32,
        }
    }
}

/// The scalars `torch.optim.AdamW` computes in Python (f64) and hands its kernels as f32.
struct TorchScalars {
    keep: f32,
    step_size: f32,
    bias_correction2_sqrt: f32,
}

/// `torch.optim.AdamW`'s single-tensor path (`_single_tensor_adamw`) on one tensor.
fn adamw_torch(
    c: AdamWConfig,
    s: TorchScalars,
    param: &mut [f32],
    grad: &[f32],
    moments: &mut Moments,
) {
    let k = Coefficients::of(c);
    for i in 0..param.len() {
        let g = grad[i];
        param[i] *= s.keep;
        // `exp_avg.lerp_(grad, 1 - beta1)`: torch's lerp for a weight below one half.
        let m = &mut moments.exp_avg[i];
        *m += k.one_minus_beta1 * (g - *m);
        let v = &mut moments.exp_avg_sq[i];
        *v = *v * k.beta2 + k.one_minus_beta2 * g * g;
        // `(exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)`
        let denom = v.sqrt() / s.bias_correction2_sqrt + k.eps;
        param[i] += -s.step_size * *m / denom;
    }
}

/// The global L2 norm of all gradients, before clipping (what the Trainer logs as `grad_norm`).
pub fn global_norm(grads: &[Vec<f32>]) -> f64 {
    grads
        .iter()
        .flatten()
        .map(|&g| (g as f64) * (g as f64))
        .sum::<f64>()
        .sqrt()
}

/// torch's `clip_grad_norm_`: scale by `max_norm / (norm + 1e-6)` when that is below 1.
pub fn clip(grads: &mut [Vec<f32>], norm: f64, max_norm: f64) {
    let coefficient = max_norm / (norm + 1e-6);
    if coefficient < 1.0 {
        let coefficient = coefficient as f32;
        for g in grads.iter_mut().flatten() {
            *g *= coefficient;
        }
    }
}

/// `get_linear_schedule_with_warmup`: the learning rate of 0-based optimizer step `step`.
pub fn linear_lr(base_lr: f64, step: u64, warmup_steps: u64, total_steps: u64) -> f64 {
    if step < warmup_steps {
        return base_lr * step as f64 / warmup_steps.max(1) as f64;
    }
    let remaining = total_steps.saturating_sub(step) as f64;
    base_lr * (remaining / total_steps.saturating_sub(warmup_steps).max(1) as f64).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_each_weight_by_about_lr() {
        let mut adam = AdamW::new(AdamWConfig::default(), &[2], &[true]);
        let mut params = vec![vec![1.0f32, -1.0]];
        adam.update(0.1, &mut params, &[vec![0.5, -2.0]]);
        // m̂/√v̂ = sign(g) on the first step.
        assert!(
            (params[0][0] - 0.9).abs() < 1e-5 && (params[0][1] + 0.9).abs() < 1e-5,
            "{params:?}"
        );
    }

    #[test]
    fn weight_decay_skips_the_no_decay_group() {
        assert!(decays("transformer.prefix_encoder.trans.0.weight"));
        assert!(!decays("transformer.prefix_encoder.trans.0.bias"));
        let config = AdamWConfig {
            weight_decay: 0.5,
            ..AdamWConfig::default()
        };
        let mut adam = AdamW::new(config, &[1, 1], &[true, false]);
        let mut params = vec![vec![1.0f32], vec![1.0f32]];
        adam.update(0.1, &mut params, &[vec![0.0], vec![0.0]]);
        // A zero gradient leaves only the decay: 1 - lr·wd on the decayed tensor, 1 on the other.
        assert!((params[0][0] - 0.95).abs() < 1e-7, "{params:?}");
        assert_eq!(params[1][0], 1.0);
    }

    #[test]
    fn schedule_and_clipping() {
        assert_eq!(linear_lr(0.02, 0, 0, 12), 0.02);
        assert!((linear_lr(0.02, 11, 0, 12) - 0.02 / 12.0).abs() < 1e-12);
        assert_eq!(linear_lr(1.0, 1, 4, 12), 0.25);
        let mut grads = vec![vec![3.0f32, 4.0]];
        let norm = global_norm(&grads);
        assert_eq!(norm, 5.0);
        clip(&mut grads, norm, 1.0);
        assert!((global_norm(&grads) - 1.0).abs() < 1e-5);
    }
}
