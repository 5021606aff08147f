//! Decoding: token choice, the generation loop and the chat conventions.

pub mod chat;
pub mod generate;
pub mod sampling;

pub use chat::{build_prompt, process_response, stable_response, TextStream, Turn};
pub use generate::{generate, sequence_logits, Flow, GenerationOptions};
pub use sampling::{Sampler, Sampling};
