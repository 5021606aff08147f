//! `glmtune score`: the official P-Tuning evaluation metrics (BLEU-4, ROUGE-1/2/L, ×100) of a
//! predictions file against a references file, one example a line, as JSON on stdout.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use glmtune_engine::metrics::{score_corpus, Scores};

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Predictions, one a line (UTF-8).
    #[arg(long, value_name = "P.txt")]
    pub predictions: PathBuf,
    /// References, one a line, paired with the predictions by line number.
    #[arg(long, value_name = "R.txt")]
    pub references: PathBuf,
    /// Also print each example's scores, in order, under "per_example".
    #[arg(long)]
    pub per_example: bool,
}

/// The lines of a UTF-8 text file: split at `\n`, a `\r` before it dropped (CRLF files), and
/// no empty last line for the final newline. Lines are not trimmed: the official
/// `compute_metrics` scores the texts as they are.
fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(index, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            String::from_utf8(line.to_vec()).map_err(|e| {
                anyhow::anyhow!(
                    "{}: line {}: invalid UTF-8 ({})",
                    path.display(),
                    index + 1,
                    e.utf8_error()
                )
            })
        })
        .collect()
}

/// `{"bleu-4": .., "rouge-1": .., "rouge-2": .., "rouge-l": ..}`, with `"per_example"` last.
/// Written by hand around the serialized scores so the keys keep this order (a
/// `serde_json::Map` would sort them).
fn render(mean: &Scores, per_example: Option<&[Scores]>) -> anyhow::Result<String> {
    let mut text = serde_json::to_string(mean)?;
    if let Some(per_example) = per_example {
        text.pop(); // the closing brace
        text.push_str(",\"per_example\":");
        text.push_str(&serde_json::to_string(per_example)?);
        text.push('}');
    }
    Ok(text)
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let predictions = read_lines(&args.predictions)?;
    let references = read_lines(&args.references)?;
    if predictions.len() != references.len() {
        bail!(
            "{} has {} lines but {} has {}: each prediction needs the reference on the same line",
            args.predictions.display(),
            predictions.len(),
            args.references.display(),
            references.len()
        );
    }
    let (mean, per_example, warnings) = score_corpus(&predictions, &references)
        .with_context(|| format!("cannot score {}", args.predictions.display()))?;
    for warning in &warnings {
        eprintln!(
            "glmtune: warning: {}: {warning}",
            args.predictions.display()
        );
    }
    println!(
        "{}",
        render(&mean, args.per_example.then_some(&per_example[..]))?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("glmtune-score-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("write temp file");
        path
    }

    #[test]
    fn lines_drop_terminators_only() {
        let path = temp_file("lines", b"a \r\n\nb\n");
        assert_eq!(read_lines(&path).expect("lines"), ["a ", "", "b"]);
        let path = temp_file("no-newline", b"a\nb");
        assert_eq!(read_lines(&path).expect("lines"), ["a", "b"]);
        let path = temp_file("empty", b"");
        assert!(read_lines(&path).expect("lines").is_empty());
        let path = temp_file("blank", b"\n");
        assert_eq!(read_lines(&path).expect("lines"), [""]);
    }

    #[test]
    fn invalid_utf8_names_file_and_line() {
        let path = temp_file("bad", b"ok\n\xff\xfe\n");
        let error = read_lines(&path).expect_err("invalid");
        let message = error.to_string();
        assert!(
            message.contains(&path.display().to_string()) && message.contains("line 2"),
            "{message}"
        );
    }

    #[test]
    fn output_keeps_official_key_order() {
        let scores = Scores {
            bleu_4: 1.5,
            rouge_1: 2.0,
            rouge_2: 3.0,
            rouge_l: 4.0,
        };
        assert_eq!(
            render(&scores, None).expect("json"),
            r#"{"bleu-4":1.5,"rouge-1":2.0,"rouge-2":3.0,"rouge-l":4.0}"#
        );
        let with = render(&scores, Some(&[scores])).expect("json");
        assert!(with.ends_with(
            r#""per_example":[{"bleu-4":1.5,"rouge-1":2.0,"rouge-2":3.0,"rouge-l":4.0}]}"#
        ));
    }

    #[test]
    fn mismatched_line_counts_name_both_files() {
        let predictions = temp_file("p", b"a\nb\n");
        let references = temp_file("r", b"a\n");
        let error = run(ScoreArgs {
            predictions: predictions.clone(),
            references: references.clone(),
            per_example: false,
        })
        .expect_err("mismatch");
        let message = error.to_string();
        assert!(
            message.contains(&format!("{} has 2 lines", predictions.display())),
            "{message}"
        );
        assert!(
            message.contains(&format!("{} has 1", references.display())),
            "{message}"
        );
    }
}
