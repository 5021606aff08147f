//! P-Tuning v2 training: the prefix encoder learns, the model stays frozen.
//!
//! The loop follows the Hugging Face Trainer that THUDM's `ptuning/main.py` runs: epochs of
//! micro-batches, gradient accumulation counted across epochs, global-norm clipping, `adamw_hf` and
//! a linear schedule. With a teacher (`distill`) the prefix learns the teacher's next-token
//! distributions instead of the labels alone.

pub mod collective;
pub mod distill;
mod head;
pub mod loss;
#[cfg(feature = "cuda")]
pub mod nccl;
pub mod optimizer;
pub mod prefix_params;
pub mod scaler;
mod step;
pub mod trainer;

pub use collective::{Collective, InProcess, Single};
pub use distill::Teacher;
pub use loss::{causal_lm_loss, labelled_log_probs};
pub use optimizer::{decays, AdamW, AdamWConfig, Optim};
pub use prefix_params::PrefixParams;
pub use scaler::{LossScaling, ScalerState};
pub use trainer::{Example, StepLog, TrainOptions, Trainer, TrainerState};
