//! `glmtune serve` as teams use it, over real HTTP on 127.0.0.1, on SQLite and on PostgreSQL:
//! datasets, runs with live progress, chats, the OpenAI API, users and keys, restarts, and attacks.

mod harness;

mod auth_matrix;
mod dashboard;
mod distill;
mod lifecycle;
mod openai_client;
mod restart;
mod security;
mod soak;
mod sweeps;
mod teach;
mod uploads;
mod versions;
mod workers;
