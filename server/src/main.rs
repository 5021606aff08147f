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
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("glmtune: {}", cli::one_line(&error));
            ExitCode::FAILURE
        }
    }
}
