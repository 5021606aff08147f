//! `glmtune`: one binary for every job — tokenize, score, generate and chat with ChatGLM-6B and
//! its P-Tuning v2 adapters.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let argv = match cli::config_file::expand(std::env::args().collect()) {
        Ok(argv) => argv,
        Err(error) => {
            eprintln!("glmtune: {}", cli::one_line(&error));
            return ExitCode::from(2);
        }
    };
    let args = match cli::Cli::try_parse_from(argv) {
        Ok(args) => args,
        Err(error) => return cli::report_usage_error(error),
    };
    if matches!(args.command, cli::Command::Serve(_)) {
        // The server logs through `tracing`, to stderr; RUST_LOG chooses what (default: info).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_env_filter(filter)
            .init();
    }
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("glmtune: {}", cli::one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// mimalloc rather than glibc's malloc: a training step allocates and frees activation buffers of
/// tens to hundreds of MB thousands of times, and glibc maps each one over 32 MiB afresh, the kernel
/// faulting in and zeroing every page of it on each use; mimalloc keeps freed memory a while for
/// reuse. See `memory::reuse_freed_memory`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
