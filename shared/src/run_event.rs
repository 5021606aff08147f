//! What a run's events carry: the `data` of each [`RunEvent`] as one typed value, by the event's
//! `kind`. The server's supervisor and database write them through [`RunEventData`], and the
//! dashboard reads them back with [`RunEvent::data`]; no side looks a field up by name.

use serde::{Deserialize, Serialize};

use crate::api::{RunEvent, RunState, ScoreTable};
use crate::run_log::LogRow;

/// The data of a run event.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEventData {
    /// A row of the trainer's log: kind `metrics` (a step or an evaluation), `checkpoint`,
    /// `finished` or `trainer-error`.
    Log(LogRow),
    /// The run moved to another state: kind `state`, or `error` when it failed (with why).
    State(StateChange),
    /// BLEU-4 and ROUGE-1/2/L (×100, by their official names) of the run's evaluation: kind
    /// `scores`.
    Scores(EvalScores),
    /// No training step for a while: kind `stall`.
    Stall(Stall),
    /// A line the trainer wrote: kind `info` or `warning`; the message is all of it.
    Note(Note),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    pub state: RunState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalScores {
    pub scores: ScoreTable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stall {
    pub seconds: u64,
    pub step: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    Info,
    Warning,
}

/// Nothing: the data of a note.
#[derive(Serialize, Deserialize)]
struct Empty {}

impl RunEventData {
    /// The event's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            RunEventData::Log(LogRow::Step(_) | LogRow::Eval(_)) => "metrics",
            RunEventData::Log(LogRow::Checkpoint(_)) => "checkpoint",
            RunEventData::Log(LogRow::Finished(_)) => "finished",
            RunEventData::Log(LogRow::Error(_)) => "trainer-error",
            RunEventData::State(change) if change.error.is_some() => "error",
            RunEventData::State(_) => "state",
            RunEventData::Scores(_) => "scores",
            RunEventData::Stall(_) => "stall",
            RunEventData::Note(Note::Info) => "info",
            RunEventData::Note(Note::Warning) => "warning",
        }
    }

    /// The event's data as stored and sent.
    pub fn to_value(&self) -> serde_json::Value {
        let value = match self {
            RunEventData::Log(row) => serde_json::to_value(row),
            RunEventData::State(change) => serde_json::to_value(change),
            RunEventData::Scores(scores) => serde_json::to_value(scores),
            RunEventData::Stall(stall) => serde_json::to_value(stall),
            RunEventData::Note(_) => serde_json::to_value(Empty {}),
        };
        // Plain structs of numbers and strings: serializing cannot fail (a NaN is `null`).
        value.unwrap_or_default()
    }

    /// Reads an event's data by its kind; `None` for an unknown kind or data that does not fit it.
    pub fn parse(kind: &str, data: &serde_json::Value) -> Option<Self> {
        let data = data.clone();
        match kind {
            "metrics" | "checkpoint" | "finished" | "trainer-error" => {
                serde_json::from_value(data).ok().map(RunEventData::Log)
            }
            "state" | "error" => serde_json::from_value(data).ok().map(RunEventData::State),
            "scores" => serde_json::from_value(data).ok().map(RunEventData::Scores),
            "stall" => serde_json::from_value(data).ok().map(RunEventData::Stall),
            "info" => Some(RunEventData::Note(Note::Info)),
            "warning" => Some(RunEventData::Note(Note::Warning)),
            _ => None,
        }
    }
}

impl RunEvent {
    /// The event's data, typed by its kind.
    pub fn data(&self) -> Option<RunEventData> {
        RunEventData::parse(&self.kind, &self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_log::{CheckpointRow, EvalRow, FinishedRow};

    #[test]
    fn every_kind_reads_back_as_written() {
        let events = [
            RunEventData::Log(LogRow::Eval(EvalRow {
                step: 2,
                eval_loss: 1.5,
                best_step: None,
                forgetting_kl: None,
                forgetting_logprob_delta: None,
                forgetting_warning: false,
            })),
            RunEventData::Log(LogRow::Checkpoint(CheckpointRow {
                step: 2,
                checkpoint: "checkpoint-2".into(),
            })),
            RunEventData::Log(LogRow::Finished(FinishedRow {
                step: 4,
                adapter: "pytorch_model.bin".into(),
                best_step: None,
                adapter_step: None,
                stopped_early: false,
            })),
            RunEventData::State(StateChange {
                state: RunState::Running,
                error: None,
            }),
            RunEventData::State(StateChange {
                state: RunState::Failed,
                error: Some("out of memory".into()),
            }),
            RunEventData::Scores(EvalScores {
                scores: [("bleu-4".to_owned(), 12.5)].into_iter().collect(),
            }),
            RunEventData::Stall(Stall {
                seconds: 600,
                step: 3,
            }),
            RunEventData::Note(Note::Info),
            RunEventData::Note(Note::Warning),
        ];
        for event in events {
            let kind = event.kind();
            assert_eq!(
                RunEventData::parse(kind, &event.to_value()),
                Some(event),
                "{kind}"
            );
        }
        assert_eq!(
            RunEventData::parse("state", &serde_json::json!({"state": "sleeping"})),
            None
        );
        assert_eq!(RunEventData::parse("gossip", &serde_json::json!({})), None);
    }
}
