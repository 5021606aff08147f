//! What a teacher is asked for each record: the tasks, their questions (`ask`), the pick of one
//! answer of several (`pick`), and the provenance a new record carries.

use anyhow::bail;
use clap::ValueEnum;
use glmtune_engine::data::Record;
use glmtune_engine::metrics::score_pair;
use glmtune_shared::teach::TeachTask;
use serde::{Deserialize, Serialize};

use super::client::Teacher;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// The teacher answers each prompt: the answers are the new records' responses.
    Answer,
    /// The teacher rewords each prompt: the rewordings are new prompts, the answer kept.
    Paraphrase,
    /// The teacher translates each prompt into English and back: a new prompt, the answer kept.
    Backtranslate,
    /// The teacher rewrites each answer in the domain's style (`{response}` in the template): the
    /// prompt kept, the rewritten answer its response.
    Rewrite,
    /// FILE is a text or Markdown document (or a folder of them): for each passage the teacher
    /// writes a question, then answers it from the passage.
    Questions,
}

impl Task {
    /// The server's name for it.
    pub fn shared(self) -> TeachTask {
        match self {
            Task::Answer => TeachTask::Answer,
            Task::Paraphrase => TeachTask::Paraphrase,
            Task::Backtranslate => TeachTask::Backtranslate,
            Task::Rewrite => TeachTask::Rewrite,
            Task::Questions => TeachTask::Questions,
        }
    }

    pub fn method(self) -> &'static str {
        match self {
            Task::Answer => "teacher_answer",
            Task::Paraphrase => "teacher_paraphrase",
            Task::Backtranslate => "teacher_backtranslation",
            Task::Rewrite => "teacher_rewrite",
            Task::Questions => "teacher_questions",
        }
    }
}

/// Which of a prompt's sampled answers become records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Keep {
    All,
    Rouge,
    Judge,
}

/// The answer `keep` picks of `answers` to `record` (its index).
pub fn pick(
    teacher: &Teacher,
    keep: Keep,
    judge_template: &str,
    record: &Record,
    answers: &[String],
) -> anyhow::Result<usize> {
    Ok(match keep {
        Keep::All => 0,
        Keep::Rouge => {
            answers
                .iter()
                .enumerate()
                .map(|(i, a)| (i, score_pair(a, &record.response).rouge_l))
                // The first of the best, so a tie keeps the greedy answer.
                .fold(
                    (0, f64::NEG_INFINITY),
                    |b, (i, v)| if v > b.1 { (i, v) } else { b },
                )
                .0
        }
        Keep::Judge => {
            let listed: Vec<String> = answers
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{}. {a}", i + 1))
                .collect();
            let question = judge_template
                .replace("{prompt}", &record.prompt)
                .replace("{answers}", &listed.join("\n"));
            let verdict = teacher.ask(&question, None)?;
            // The first number in the verdict; one out of range or none keeps the first answer.
            let number: Option<usize> = verdict
                .split(|c: char| !c.is_ascii_digit())
                .find(|t| !t.is_empty())
                .and_then(|t| t.parse().ok());
            number
                .filter(|n| (1..=answers.len()).contains(n))
                .map_or(0, |n| n - 1)
        }
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherProvenance {
    /// The parent record's number (from 1) in the parent dataset.
    pub parent: usize,
    /// `teacher_answer` or `teacher_paraphrase`.
    pub method: String,
    /// Which of the parent's questions (from 1).
    pub copy: usize,
    pub teacher: String,
    pub template: String,
    /// The document the passage came from (`questions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// With `--keep`: which sampled answer (from 1) of how many was kept, and how it was picked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picked: Option<Picked>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Picked {
    pub answer: usize,
    pub of: usize,
    /// `rouge` or `judge`.
    pub by: String,
}

/// Asks what `task` needs about `record`: the new record's prompt, and its response when the task
/// makes one (`None`: the record's own).
pub fn ask(
    teacher: &Teacher,
    task: Task,
    template: &str,
    second: Option<&str>,
    record: &Record,
    seed: Option<u64>,
) -> anyhow::Result<(String, Option<String>)> {
    let question = template
        .replace("{prompt}", &record.prompt)
        .replace("{response}", &record.response);
    let first = teacher.ask(&question, seed)?;
    let first = first.trim().to_owned();
    let then = |second: &str| -> anyhow::Result<String> {
        let question = second
            .replace("{prompt}", &record.prompt)
            .replace("{first}", &first);
        Ok(teacher.ask(&question, seed)?.trim().to_owned())
    };
    Ok(match (task, second) {
        (Task::Answer, _) => (record.prompt.clone(), Some(first)),
        (Task::Paraphrase, _) => (first, None),
        (Task::Rewrite, _) => (record.prompt.clone(), Some(first)),
        (Task::Backtranslate, Some(second)) => (then(second)?, None),
        (Task::Questions, Some(second)) => {
            let answer = then(second)?;
            (first, Some(answer))
        }
        (_, None) => bail!("{task:?} needs a second question"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use glmtune_shared::teach::JUDGE_TEMPLATE;

    #[test]
    fn rouge_keeps_the_answer_closest_to_the_records_own() {
        let teacher = Teacher::new("http://127.0.0.1:9/v1", None, "unused", None);
        let record = Record {
            prompt: "高血压患者饮食要注意什么？".into(),
            response: "少盐少油，多吃蔬菜水果，控制体重。".into(),
            history: Vec::new(),
            messages: Vec::new(),
        };
        let answers = [
            "多喝水，注意休息。".to_owned(),
            "少盐少油，多吃蔬菜水果。".to_owned(),
            "按时服药。".to_owned(),
        ];
        assert_eq!(
            pick(&teacher, Keep::Rouge, JUDGE_TEMPLATE, &record, &answers).unwrap(),
            1
        );
    }
}
