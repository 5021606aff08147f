//! The ChatGLM networks (ChatGLM-6B, ChatGLM2/3), their inputs and their P-Tuning v2 prefix.

mod attend;
pub mod chatglm;
mod fused;
mod gemv;
pub(crate) mod gguf;
pub(crate) mod glm;
mod glm2;
pub mod init;
pub mod inputs;
pub mod kv_cache;
mod names;
pub(crate) mod norm;
pub mod prefix;
pub mod rotary;
mod storage;
pub mod weights;

pub use chatglm::{ChatGlmModel, LayerContext, Slot};
pub use inputs::{Batch, SequencePositions, Step};
pub use kv_cache::{KvCache, LayerCache};
pub use prefix::PrefixEncoder;
