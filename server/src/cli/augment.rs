//! `glmtune data augment FILE --out NEW.jsonl`: a new version of a dataset, its records followed
//! by new ones made by rule (`glmtune_engine::data::augment`), each new record naming where it
//! came from (`provenance`: the parent record's number in this file, the method, the copy, the
//! seed). Near-duplicates of the parent's records, of each other and of the validation prompts
//! (`--validation-file`) are dropped and counted. Without `--out` it only shows what each method
//! would make.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use glmtune_engine::data::augment::{augment, version_lines, AugmentOptions, Method};

use super::data::DatasetArgs;

#[derive(Debug, Args)]
pub struct AugmentArgs {
    /// The parent dataset: JSON lines, or one JSON array.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Where the new version goes (JSON lines); without it, a preview only.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    dataset: DatasetArgs,
    /// An operation on the prompt's words (repeat it; default: all of delete, swap, insert,
    /// punctuation).
    #[arg(long = "method", value_name = "METHOD", value_parser = parse_method)]
    methods: Vec<Method>,
    /// New prompts per record and method.
    #[arg(long, default_value_t = 1)]
    copies: usize,
    /// The share of a prompt's words each operation touches.
    #[arg(long, default_value_t = 0.1)]
    rate: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Two prompts whose character-3-gram similarity (MinHash) reaches this are the same.
    #[arg(long, default_value_t = 0.9)]
    threshold: f64,
    /// The validation set: a new prompt like one of its prompts is dropped (it would leak).
    #[arg(long, value_name = "FILE")]
    validation_file: Option<PathBuf>,
    /// Examples shown per method.
    #[arg(long, default_value_t = 3)]
    preview: usize,
}

fn parse_method(text: &str) -> Result<Method, String> {
    text.parse()
}

/// What `glmtune data augment` prints.
#[derive(serde::Serialize)]
struct Report {
    parent_records: usize,
    new_records: usize,
    dropped_duplicates: usize,
    dropped_leaking: usize,
    by_method: std::collections::BTreeMap<&'static str, usize>,
    out: Option<PathBuf>,
}

pub fn run(args: AugmentArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.rate) || !(0.0..=1.0).contains(&args.threshold) {
        anyhow::bail!("--rate and --threshold: give numbers from 0 to 1");
    }
    let (records, report) = args.dataset.read_usable(&args.file)?;
    let validation = match &args.validation_file {
        Some(path) => args.dataset.read_usable(path)?.0,
        None => Vec::new(),
    };
    let options = AugmentOptions {
        methods: if args.methods.is_empty() {
            Method::ALL.to_vec()
        } else {
            args.methods.clone()
        },
        copies: args.copies,
        rate: args.rate,
        seed: args.seed,
        threshold: args.threshold,
    };
    let made = augment(&records, &validation, &options);
    for method in &options.methods {
        let examples: Vec<_> = made
            .kept
            .iter()
            .filter(|k| k.provenance.method == *method)
            .take(args.preview)
            .collect();
        for example in examples {
            let parent = &records[example.provenance.parent - 1];
            eprintln!(
                "glmtune: {}: {} → {}",
                method.as_str(),
                parent.prompt,
                example.prompt
            );
        }
    }
    if let Some(out) = &args.out {
        std::fs::write(out, version_lines(&records, &made, report.history_column))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    let report = Report {
        parent_records: records.len(),
        new_records: made.kept.len(),
        dropped_duplicates: made.dropped_duplicates,
        dropped_leaking: made.dropped_leaking,
        by_method: made
            .by_method
            .iter()
            .map(|(m, n)| (m.as_str(), *n))
            .collect(),
        out: args.out,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
