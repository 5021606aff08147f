//! Types on the wire between `glmtune serve` and its clients (the web app, scripts, the `openai`
//! package). Kept free of server dependencies so the wasm web app can use them too.

pub mod api;
pub mod chat_stream;
pub mod error;
pub mod openai;
pub mod pages;
pub mod run_event;
pub mod run_layout;
pub mod run_log;
pub mod run_settings;
pub mod sweep;
pub mod teach;
pub mod train_job;
pub mod worker;
