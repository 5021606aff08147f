//! `glmtune data augment FILE --out NEW.jsonl`: a new version of a dataset, its records followed
//! by new ones made by rule (`glmtune_engine::data::augment`), each new record naming where it
//! came from (`provenance`: the parent record's number in this file, the method, the copy, the
//! seed). Near-duplicates of the parent's records, of each other and of the validation prompts
//! (`--validation-file`) are dropped and counted. Without `--out` it only shows what each method
//! would make.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use glmtune_engine::data::augment::{augment, AugmentOptions, Method, Provenance};
use glmtune_engine::data::Record;
use glmtune_engine::generation::ChatMessage;
use glmtune_engine::tokenizer::Role;

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

/// A record as the new file holds it: the `content`/`summary` (and `history`) columns, or the
/// `messages` of a conversation; a new record also has its `provenance`.
#[derive(serde::Serialize)]
struct Row<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<&'a [(String, String)]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<ChatMessage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<&'a Provenance>,
}

/// `record` as a row, with `prompt` as its (last user) prompt.
fn row<'a>(record: &'a Record, prompt: &'a str, provenance: Option<&'a Provenance>) -> Row<'a> {
    if record.messages.is_empty() {
        return Row {
            content: Some(prompt),
            summary: Some(&record.response),
            history: (!record.history.is_empty()).then_some(record.history.as_slice()),
            messages: None,
            provenance,
        };
    }
    let mut messages = record.messages.clone();
    // The prompt is the last user message before the answer.
    if let Some(last) = messages.iter_mut().rev().find(|m| m.role == Role::User) {
        last.content = prompt.to_owned();
    }
    Row {
        content: None,
        summary: None,
        history: None,
        messages: Some(messages),
        provenance,
    }
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
    let (records, _) = args.dataset.read_usable(&args.file)?;
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
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
        );
        let mut write = |row: Row| -> anyhow::Result<()> {
            serde_json::to_writer(&mut file, &row)?;
            file.write_all(b"\n")?;
            Ok(())
        };
        for record in &records {
            write(row(record, &record.prompt, None))?;
        }
        for kept in &made.kept {
            let parent = &records[kept.provenance.parent - 1];
            write(row(parent, &kept.prompt, Some(&kept.provenance)))?;
        }
        file.flush()
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
