//! glmtune's engine: ChatGLM-6B with P-Tuning v2 prefixes, from the official checkpoint layout.
//!
//! - [`config`] reads `config.json` of a model or an adapter;
//! - [`checkpoint`] finds tensors in torch pickles and safetensors, sharded or not;
//! - [`tokenizer`] reads `ice_text.model` and tokenizes exactly as `tokenization_chatglm.py`;
//! - [`model`] is the network, its masks and positions, and the prefix encoder;
//! - [`kernels`] multiplies block-quantized weights on the CPU at the memory's speed;
//! - [`quant`] writes and reads block-quantized (q8_0, q4_0) checkpoints;
//! - `gpu` (feature `gpu`) runs the forward in WGSL on wgpu;
//! - [`generation`] decodes (greedy or sampled), streams, and holds the official chat prompt.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod family;
pub mod generation;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod quant;
pub mod tokenizer;
pub mod train;

pub use config::{AdapterConfig, ChatGlmConfig, PrefixConfig};
pub use error::{EngineError, Result};
