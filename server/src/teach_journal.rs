//! Where a teaching job keeps what it has so far, so that an interrupted one goes on: its
//! journal (`OUT.journal`, one JSON line an answer, appended whole and flushed as it arrives) and
//! its report (`OUT.report.json`, rewritten after each answer). The output itself is made from the
//! journal once every question is answered: near-duplicates and validation leaks are dropped
//! there, and dropped answers stay in the journal, so a later run does not ask them again.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use glmtune_engine::data::augment::{record_as_it_was, NearDuplicates, Verdict};
use glmtune_engine::data::Record;
use glmtune_shared::teach::TeachReport;
use serde::{Deserialize, Serialize};

/// Why a journal, report or output could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: not an answer `glmtune data teach` wrote: {source}")]
    Line {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One answer: which parent record and question it is, the new record's prompt (what duplicates
/// are judged on) and the record's line as the output holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journaled {
    pub parent: usize,
    pub copy: usize,
    pub prompt: String,
    pub line: String,
}

fn beside(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The job's journal, beside its output.
pub fn journal_path(out: &Path) -> PathBuf {
    beside(out, ".journal")
}

/// The job's report, beside its output.
pub fn report_path(out: &Path) -> PathBuf {
    beside(out, ".report.json")
}

/// The journal's answers, after dropping a half-written last line (an interrupted write).
pub fn read(journal: &Path) -> Result<Vec<Journaled>, JournalError> {
    let text = match std::fs::read_to_string(journal) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(journal)(e)),
    };
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(journal)
            .and_then(|file| file.set_len(whole as u64))
            .map_err(io(journal))?;
        eprintln!(
            "glmtune: dropped a half-written last line of {}",
            journal.display()
        );
    }
    text[..whole]
        .lines()
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|source| JournalError::Line {
                path: journal.to_path_buf(),
                line: n + 1,
                source,
            })
        })
        .collect()
}

/// The (parent, question) pairs answered.
pub fn answered(entries: &[Journaled]) -> HashSet<(usize, usize)> {
    entries.iter().map(|e| (e.parent, e.copy)).collect()
}

/// The report an earlier run left, when its journal is still there to go on from.
pub fn earlier_report(out: &Path, entries: &[Journaled]) -> TeachReport {
    if entries.is_empty() {
        return TeachReport::default();
    }
    read_report(out).unwrap_or_default()
}

/// Writes `report` whole (a reader never sees half of it).
pub fn write_report(out: &Path, report: &TeachReport) -> Result<(), JournalError> {
    let path = report_path(out);
    let temporary = beside(&path, ".tmp");
    // Numbers and a flag: serializing cannot fail.
    let bytes = serde_json::to_vec(report).unwrap_or_default();
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(io(&path))
}

/// The report a job's command last wrote, if any.
pub fn read_report(out: &Path) -> Option<TeachReport> {
    serde_json::from_slice(&std::fs::read(report_path(out)).ok()?).ok()
}

/// Appends one answer and flushes it.
pub fn append(
    file: &mut std::fs::File,
    journal: &Path,
    entry: &Journaled,
) -> Result<(), JournalError> {
    // Strings and numbers: serializing cannot fail.
    let mut line = serde_json::to_string(entry).unwrap_or_default();
    line.push('\n');
    file.write_all(line.as_bytes())
        .and_then(|()| file.flush())
        .map_err(io(journal))
}

/// What the output holds and what was dropped from it.
pub struct Composed {
    pub lines: Vec<String>,
    pub kept: u64,
    pub dropped_duplicates: u64,
    pub dropped_leaking: u64,
}

/// The output from every answer, in record order: with `parent`, the parent's records first, then
/// each new record whose prompt is no near-duplicate of theirs, of one kept before or (a leak) of
/// a `validation` prompt. Without it every answer is kept: the prompts are the parent's own.
pub fn compose(
    mut entries: Vec<Journaled>,
    parent: Option<(&[Record], bool)>,
    validation: &[Record],
    threshold: f64,
) -> Composed {
    entries.sort_by_key(|e| (e.parent, e.copy));
    let Some((records, with_history)) = parent else {
        return Composed {
            kept: entries.len() as u64,
            lines: entries.into_iter().map(|e| e.line).collect(),
            dropped_duplicates: 0,
            dropped_leaking: 0,
        };
    };
    let mut novelty = NearDuplicates::new(
        // The seed `glmtune data augment` checks with by default.
        42,
        threshold,
        records.iter().map(|r| r.prompt.as_str()),
        validation.iter().map(|r| r.prompt.as_str()),
    );
    let mut out = Composed {
        lines: records
            .iter()
            .map(|r| record_as_it_was(r, with_history))
            .collect(),
        kept: 0,
        dropped_duplicates: 0,
        dropped_leaking: 0,
    };
    for entry in entries {
        match novelty.admit(&entry.prompt) {
            Verdict::New => {
                out.kept += 1;
                out.lines.push(entry.line);
            }
            Verdict::Duplicate => out.dropped_duplicates += 1,
            Verdict::Leaking => out.dropped_leaking += 1,
        }
    }
    out
}

/// Writes the output whole.
pub fn write_output(out: &Path, lines: &[String]) -> Result<(), JournalError> {
    let temporary = beside(out, ".tmp");
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, out))
        .map_err(io(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(prompt: &str) -> Record {
        Record {
            prompt: prompt.into(),
            response: "答".into(),
            history: Vec::new(),
            messages: Vec::new(),
        }
    }

    fn entry(parent: usize, copy: usize, prompt: &str) -> Journaled {
        Journaled {
            parent,
            copy,
            prompt: prompt.into(),
            line: format!("{parent}.{copy}"),
        }
    }

    #[test]
    fn the_output_keeps_the_parent_then_new_prompts_in_record_order() {
        let parent = [record("高血压患者日常饮食应该注意什么问题")];
        let validation = [record("糖尿病患者可以吃水果吗，哪些比较合适")];
        let entries = vec![
            entry(2, 1, "感冒发烧时应该怎么护理才好"),
            // The parent's prompt again, a validation prompt, and the first new one again.
            entry(1, 2, "高血压患者日常饮食应该注意什么问题"),
            entry(1, 3, "糖尿病患者可以吃水果吗，哪些比较合适"),
            entry(3, 1, "感冒发烧时应该怎么护理才好"),
            entry(1, 1, "高血压病人平时吃东西要当心哪些方面"),
        ];
        let made = compose(entries.clone(), Some((&parent, false)), &validation, 0.9);
        assert_eq!(
            (made.kept, made.dropped_duplicates, made.dropped_leaking),
            (2, 2, 1)
        );
        assert_eq!(made.lines[1..], ["1.1".to_owned(), "2.1".to_owned()]);
        assert!(made.lines[0].contains("高血压患者日常饮食"));
        // New answers to the parent's prompts are all kept, in record order.
        let answers = compose(entries, None, &validation, 0.9);
        assert_eq!(answers.lines, ["1.1", "1.2", "1.3", "2.1", "3.1"]);
    }
}
