//! The glmtune server as a library: its database layer and `glmtune serve` (router, handlers,
//! training supervisor). The `glmtune` binary's subcommands use it, and so do in-process callers
//! such as the fuzz target that sends hostile requests through the whole router.

pub mod best;
pub mod dataset;
pub mod db;
pub mod device;
pub mod memory;
pub mod precision;
pub mod run_folder;
pub mod serve;
pub mod sweep;
pub mod teach_journal;
pub mod worker;
