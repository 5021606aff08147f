//! glmtune engine
pub mod tokenizer;
