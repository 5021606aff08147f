//! `glmtune data teach FILE --out NEW.jsonl --teacher-url URL --teacher-model NAME`: a teacher
//! behind an OpenAI-compatible endpoint makes a new dataset from a parent's prompts —
//! `--task answer`, its answers to them (sequence-level distillation: a student's prefix then
//! trains on what the teacher says), or `--task paraphrase`, `--samples` rewordings of each prompt
//! with the parent's answer kept. Every record names its parent record, the task, the teacher and
//! the template.
//!
//! The job survives interruptions: each record is one line appended whole and flushed as its
//! answer arrives, and a run on an existing `--out` first drops a half-written last line, then
//! asks only what the file does not hold yet; nothing is lost or asked twice. The key comes from
//! `--teacher-key` or `GLMTUNE_TEACHER_KEY` and is never printed.

mod client;

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use glmtune_engine::data::augment::record_line;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::data::DatasetArgs;
use client::Teacher;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// The teacher answers each prompt: the answers are the new records' responses.
    Answer,
    /// The teacher rewords each prompt: the rewordings are new prompts, the answer kept.
    Paraphrase,
}

impl Task {
    fn default_template(self) -> &'static str {
        match self {
            Task::Answer => "{prompt}",
            Task::Paraphrase => {
                "请换一种说法改写下面的问题，意思不变，只输出改写后的问题：\n{prompt}"
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct TeachArgs {
    /// The parent dataset: JSON lines, or one JSON array.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The new dataset (JSON lines); an existing one is continued.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    dataset: DatasetArgs,
    /// The teacher's OpenAI-compatible base URL, up to `/v1`.
    #[arg(long, value_name = "URL")]
    teacher_url: String,
    /// The teacher's model name (a base, an `ft:` model, or the service's own).
    #[arg(long, value_name = "NAME")]
    teacher_model: String,
    /// The teacher's API key.
    #[arg(
        long,
        value_name = "KEY",
        env = "GLMTUNE_TEACHER_KEY",
        hide_env_values = true
    )]
    teacher_key: Option<String>,
    #[arg(long, value_enum, default_value_t = Task::Answer)]
    task: Task,
    /// What the teacher is asked, `{prompt}` standing for the record's prompt (default: the
    /// prompt alone to answer it; a Chinese instruction to reword it).
    #[arg(long, value_name = "TEXT")]
    template: Option<String>,
    /// Questions per record (sampled with a seed each beyond the first).
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// Questions in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// At most this many requests a minute (all threads together).
    #[arg(long, value_name = "N")]
    requests_per_minute: Option<f64>,
    /// Tries after the first for a 429, a 5xx or a broken connection, with exponential backoff.
    #[arg(long, default_value_t = 5)]
    max_retries: u32,
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature (default: 0 to answer, 0.8 to reword).
    #[arg(long)]
    temperature: Option<f32>,
}

/// Where a new record came from.
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
}

/// What `glmtune data teach` prints.
#[derive(Serialize)]
struct Report {
    parent_records: usize,
    /// Records the file held before this run (an interrupted job's).
    already_done: usize,
    written: usize,
    retries: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// The (parent, copy) pairs `out` already holds, after dropping a half-written last line.
fn done_so_far(out: &std::path::Path) -> anyhow::Result<HashSet<(usize, usize)>> {
    let Ok(text) = std::fs::read_to_string(out) else {
        return Ok(HashSet::new());
    };
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(out)
            .with_context(|| format!("opening {}", out.display()))?;
        file.set_len(whole as u64)
            .with_context(|| format!("truncating {}", out.display()))?;
        eprintln!(
            "glmtune: dropped a half-written last line of {}",
            out.display()
        );
    }
    let mut done = HashSet::new();
    for (n, line) in text[..whole].lines().enumerate() {
        #[derive(Deserialize)]
        struct Line {
            provenance: TeacherProvenance,
        }
        let line: Line = serde_json::from_str(line).with_context(|| {
            format!(
                "{} line {}: not a record this command wrote (its provenance)",
                out.display(),
                n + 1
            )
        })?;
        done.insert((line.provenance.parent, line.provenance.copy));
    }
    Ok(done)
}

pub fn run(args: TeachArgs) -> anyhow::Result<()> {
    let template = args
        .template
        .clone()
        .unwrap_or_else(|| args.task.default_template().to_owned());
    if !template.contains("{prompt}") {
        bail!("--template: it must hold {{prompt}}, where each record's prompt goes");
    }
    if args.samples == 0 || args.concurrency == 0 {
        bail!("--samples and --concurrency: give 1 or more");
    }
    let (records, _) = args.dataset.read_usable(&args.file)?;
    let done = done_so_far(&args.out)?;
    let mut teacher = Teacher::new(
        &args.teacher_url,
        args.teacher_key.clone(),
        &args.teacher_model,
        args.requests_per_minute,
    );
    teacher.max_tokens = args.max_tokens;
    teacher.max_retries = args.max_retries;
    teacher.temperature = args.temperature.unwrap_or(match args.task {
        Task::Answer => 0.0,
        Task::Paraphrase => 0.8,
    });
    let method = match args.task {
        Task::Answer => "teacher_answer",
        Task::Paraphrase => "teacher_paraphrase",
    };
    let work: VecDeque<(usize, usize)> = (1..=records.len())
        .flat_map(|parent| (1..=args.samples).map(move |copy| (parent, copy)))
        .filter(|key| !done.contains(key))
        .collect();
    let work = Mutex::new(work);
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    let (sender, receiver) = mpsc::channel::<anyhow::Result<String>>();
    let mut written = 0;
    let outcome = std::thread::scope(|scope| -> anyhow::Result<()> {
        for _ in 0..args.concurrency {
            let sender = sender.clone();
            let (work, teacher, records, template) = (&work, &teacher, &records, &template);
            let (file, task) = (&args.file, args.task);
            scope.spawn(move || loop {
                let Some((parent, copy)) = work.lock().pop_front() else {
                    return;
                };
                let record = &records[parent - 1];
                let question = template.replace("{prompt}", &record.prompt);
                let seed = (copy > 1).then_some(copy as u64);
                let line = teacher
                    .ask(&question, seed)
                    .map(|answer| {
                        let answer = answer.trim();
                        let provenance = TeacherProvenance {
                            parent,
                            method: method.to_owned(),
                            copy,
                            teacher: teacher.model.clone(),
                            template: template.clone(),
                        };
                        match task {
                            Task::Answer => {
                                record_line(record, &record.prompt, Some(answer), Some(&provenance))
                            }
                            Task::Paraphrase => {
                                record_line(record, answer, None, Some(&provenance))
                            }
                        }
                    })
                    .with_context(|| format!("{} record {parent}", file.display()));
                let failed = line.is_err();
                if sender.send(line).is_err() || failed {
                    // The writer stopped, or this record failed: the others stop too.
                    work.lock().clear();
                    return;
                }
            });
        }
        drop(sender);
        // Each answer one whole line, flushed at once: an interruption loses at most the line
        // being written, which the next run drops and asks again.
        for line in receiver {
            let mut line = line?;
            line.push('\n');
            out.write_all(line.as_bytes())
                .and_then(|()| out.flush())
                .with_context(|| format!("writing {}", args.out.display()))?;
            written += 1;
        }
        Ok(())
    });
    let report = Report {
        parent_records: records.len(),
        already_done: done.len(),
        written,
        retries: teacher.retries.load(Ordering::Relaxed),
        prompt_tokens: teacher.prompt_tokens.load(Ordering::Relaxed),
        completion_tokens: teacher.completion_tokens.load(Ordering::Relaxed),
    };
    println!("{}", serde_json::to_string(&report)?);
    outcome
}
