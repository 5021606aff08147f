//! ChatGLM tokenizer (placeholder; being written).
