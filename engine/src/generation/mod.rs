//! Decoding: token choice, the generation loop and the chat conventions.

pub mod chat;
pub mod generate;
pub mod sampling;

pub use chat::{
    build_prompt, build_prompt_glm2, chat_ids, chat_prompt_ids, process_response, response_text,
    stable_response, stable_response_text, ChatMessage, TextStream, Turn,
};
pub use generate::{generate, sequence_logits, GenerationOptions};
pub use sampling::{Sampler, Sampling};
