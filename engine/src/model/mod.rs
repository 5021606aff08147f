//! The ChatGLM networks (ChatGLM-6B, ChatGLM2/3), their inputs and their P-Tuning v2 prefix.

pub mod chatglm;
mod fused;
mod gemv;
pub(crate) mod gguf;
pub(crate) mod glm;
mod glm2;
pub mod init;
pub mod inputs;
mod names;
pub(crate) mod norm;
pub mod prefix;
pub mod rotary;
mod storage;
pub mod weights;

pub use chatglm::{ChatGlmModel, KvCache, LayerContext};
pub use inputs::{Batch, SequencePositions, Step};
pub use prefix::PrefixEncoder;
