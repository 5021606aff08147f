//! `glmtune bench`: speed at a model's real shape, with random weights drawn in the target
//! precision (no checkpoint needed), each as one JSON object.

mod generate;
mod train;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Training steps on a random model of a real shape; prints one JSON object.
    Train(train::TrainBenchArgs),
    /// Prompt and decode speed against this machine's memory bandwidth; prints one JSON object.
    Generate(generate::GenerateBenchArgs),
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        Bench::Train(args) => train::run(args),
        Bench::Generate(args) => generate::run(args),
    }
}
