//! The ChatGLM-6B network, its inputs and its P-Tuning v2 prefix.

pub mod chatglm;
mod gemv;
pub mod init;
pub mod inputs;
pub mod prefix;
pub mod rotary;
mod storage;
pub mod weights;

pub use chatglm::{ChatGlmModel, KvCache};
pub use inputs::{Batch, SequencePositions, Step};
pub use prefix::PrefixEncoder;
