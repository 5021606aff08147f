//! A trainer's log rows as run events: the message each row is told with, and [`LogMark`], which
//! says which rows were told already, so that a row sent again (a batch replayed after a lost
//! answer, the steps a resumed run logs again after its checkpoint) is told once.

use std::io::Write;
use std::path::Path;

use glmtune_shared::run_event::{Note, RunEventData};
use glmtune_shared::run_log::LogRow;

/// The event message of a row; `None` for an error row (told by the failure itself).
pub fn row_message(row: &LogRow) -> Option<String> {
    let step = row.step();
    Some(match row {
        LogRow::Step(row) => format!("step {step}: loss {:.4}", row.loss),
        LogRow::Eval(row) => format!("step {step}: eval_loss {:.4}", row.eval_loss),
        LogRow::Checkpoint(row) => format!("saved {}", row.checkpoint),
        LogRow::Finished(_) => "adapter written".to_owned(),
        LogRow::Error(_) => return None,
    })
}

/// The event of a line of a trainer's standard error: `None` for a blank line or a progress line
/// (`step …`, told by its log row); a `skipped …` line is a warning, the rest notes.
pub fn note_event(line: &str) -> Option<(String, RunEventData)> {
    let text = line.trim_end_matches('\r').trim();
    if text.is_empty() || text.starts_with("step ") {
        return None;
    }
    let text = text.strip_prefix("glmtune: ").unwrap_or(text).to_owned();
    let note = if text.starts_with("skipped") {
        Note::Warning
    } else {
        Note::Info
    };
    Some((text, RunEventData::Note(note)))
}

/// The last step a log told, and which kinds of row it told at that step. A log only moves
/// forward (each kind at most once a step), and a resumed run's log is cut back to its checkpoint
/// and written again identically, so a row is new exactly when it is past the mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogMark {
    step: u64,
    kinds: u8,
}

impl LogMark {
    fn bit(row: &LogRow) -> u8 {
        match row {
            LogRow::Step(_) => 1,
            LogRow::Eval(_) => 2,
            LogRow::Checkpoint(_) => 4,
            LogRow::Finished(_) => 8,
            LogRow::Error(_) => 16,
        }
    }

    /// As the database stores it: `step * 32 + kinds`.
    pub fn from_i64(value: i64) -> LogMark {
        let value = value.max(0) as u64;
        LogMark {
            step: value / 32,
            kinds: (value % 32) as u8,
        }
    }

    pub fn to_i64(self) -> i64 {
        i64::try_from(self.step * 32 + u64::from(self.kinds)).unwrap_or(i64::MAX)
    }

    /// Whether `row` was not told yet.
    pub fn admits(&self, row: &LogRow) -> bool {
        row.step() > self.step || (row.step() == self.step && self.kinds & Self::bit(row) == 0)
    }

    /// Records `row` as told.
    pub fn note(&mut self, row: &LogRow) {
        if row.step() > self.step {
            *self = LogMark {
                step: row.step(),
                kinds: Self::bit(row),
            };
        } else if row.step() == self.step {
            self.kinds |= Self::bit(row);
        }
    }

    /// The mark of a log file's rows (nothing told for a missing file).
    pub fn of_file(path: &Path) -> LogMark {
        let mut mark = LogMark::default();
        if let Ok(text) = std::fs::read_to_string(path) {
            for row in text.lines().filter_map(LogRow::parse) {
                mark.note(&row);
            }
        }
        mark
    }
}

/// Appends to the log at `path` the rows of `rows` past its own mark: the server's copy of a
/// worker's log, caught up after a crash between telling rows and writing them.
pub fn append_new_rows(path: &Path, rows: &[LogRow]) -> std::io::Result<()> {
    let mut mark = LogMark::of_file(path);
    let mut text = String::new();
    for row in rows {
        if mark.admits(row) {
            mark.note(row);
            let line = serde_json::to_string(row).map_err(std::io::Error::other)?;
            text.push_str(&line);
            text.push('\n');
        }
    }
    if text.is_empty() {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use glmtune_shared::run_log::{CheckpointRow, EvalRow};

    fn checkpoint(step: u64) -> LogRow {
        LogRow::Checkpoint(CheckpointRow {
            step,
            checkpoint: format!("checkpoint-{step}"),
        })
    }

    fn eval(step: u64) -> LogRow {
        LogRow::Eval(EvalRow {
            step,
            eval_loss: 1.0,
            best_step: None,
            forgetting_kl: None,
            forgetting_logprob_delta: None,
            forgetting_warning: false,
        })
    }

    #[test]
    fn rows_are_told_once_across_replays_and_resumes() {
        let mut mark = LogMark::default();
        // A best checkpoint is written before its evaluation's row, at the same step.
        let first = [checkpoint(10), eval(10), checkpoint(20)];
        for row in &first {
            assert!(mark.admits(row));
            mark.note(row);
        }
        // The same batch again, and a resumed run logging again from its checkpoint at 10.
        for row in first.iter().chain([eval(10), checkpoint(20)].iter()) {
            assert!(!mark.admits(row), "{row:?}");
        }
        assert!(mark.admits(&eval(20)));
        assert!(mark.admits(&checkpoint(21)));
        assert_eq!(LogMark::from_i64(mark.to_i64()), mark);
    }

    #[test]
    fn the_copy_of_a_log_gets_each_row_once() {
        let dir = std::env::temp_dir().join(format!("glmtune-log-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trainer_log.jsonl");
        let _ = std::fs::remove_file(&path);
        append_new_rows(&path, &[checkpoint(10), eval(10)]).unwrap();
        append_new_rows(&path, &[eval(10), checkpoint(20)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let steps: Vec<u64> = text
            .lines()
            .filter_map(LogRow::parse)
            .map(|r| r.step())
            .collect();
        assert_eq!(steps, [10, 10, 20]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
