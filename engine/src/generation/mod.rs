//! Decoding: token choice, the generation loop, the chat conventions of each generation and the
//! answer a chat streams.

pub mod answer;
pub mod batcher;
pub mod chat;
pub mod cleanup;
pub mod detokenize;
pub mod forgetting;
pub mod generate;
pub mod sampling;
pub mod speed;
pub mod streams;
mod text;

pub use answer::{answer, answer_blocking, Answer, AnswerStream, Backend, Finish};
pub use batcher::Batcher;
pub use chat::{
    build_prompt, build_prompt_glm2, chat_format, chat_ids, chat_prompt_ids, process_response,
    response_text, ChatFormat, ChatMessage, Turn,
};
pub use generate::{generate, sequence_logits, GenerationOptions};
pub use sampling::{Sampler, Sampling};
pub use streams::{Finished, StreamRequest, Streams};
