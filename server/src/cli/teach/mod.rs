//! `glmtune data teach FILE --out NEW.jsonl --teacher-url URL --teacher-model NAME`: a teacher
//! behind an OpenAI-compatible endpoint makes a new dataset from a parent's prompts —
//! `--task answer`, its answers to them (sequence-level distillation: a student's prefix then
//! trains on what the teacher says); `--task paraphrase`, `--samples` rewordings of each prompt
//! with the parent's answer kept; `--task backtranslate`, each prompt into English and back;
//! `--task rewrite`, each answer rewritten in the domain's style; or,
//! from a text or Markdown document (FILE, or a folder of them), `--task questions`: a question
//! about each passage and its answer from the passage. Every record names its parent record (or
//! passage and document), the task, the teacher and the templates.
//!
//! Tasks that make new prompts (paraphrase, backtranslate, questions) give a new version: the
//! parent's records (`--parent` for questions) and the new ones, none a near-duplicate (MinHash
//! over character 3-grams) of a parent's prompt, of another new one or of a `--validation-file`
//! prompt. Tasks that answer the parent's prompts anew (answer, rewrite) give those answers alone.
//!
//! The job survives interruptions: each answer is one line of `OUT.journal`, appended whole and
//! flushed as it arrives; a run again with the same `--out` first drops a half-written last line,
//! then asks only what the journal does not hold yet, so nothing is lost or asked twice. `--out`
//! is written when every question is answered. The key comes from `--teacher-key` or
//! `GLMTUNE_TEACHER_KEY` and is never printed.

mod client;
mod documents;
mod task;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use anyhow::{bail, Context};
use clap::Args;
use glmtune_engine::data::augment::record_line;
use glmtune_engine::data::Record;
use glmtune_shared::teach::{TeachReport, JUDGE_TEMPLATE};
use parking_lot::Mutex;

use super::data::DatasetArgs;
use client::Teacher;
use glmtune::teach_journal::{self as journal, Journaled};
use task::{ask, pick, Keep, Picked, Task, TeacherProvenance};

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
    /// With `--task answer` and several `--samples`: keep one answer a prompt, the one closest to
    /// the record's own answer (`rouge`: ROUGE-L) or the one the teacher judges best (`judge`).
    #[arg(long, value_enum, default_value_t = Keep::All)]
    keep: Keep,
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
    /// The second question of `backtranslate` and `questions`, `{first}` standing for the first
    /// answer and `{prompt}` for the record's prompt or the passage (default: a Chinese
    /// instruction: translate it back; answer the question from the passage).
    #[arg(long, value_name = "TEXT")]
    then_template: Option<String>,
    /// What the teacher is asked to pick the best answer with (`--keep judge`): `{prompt}` the
    /// prompt, `{answers}` the answers numbered from 1; the first number of its reply is taken.
    #[arg(long, value_name = "TEXT")]
    judge_template: Option<String>,
    /// Ask about the first N records (or passages) only: a preview of what the task makes.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// With `--task questions`: the dataset the questions join (its records head the output,
    /// and a question like one of its prompts is dropped).
    #[arg(long, value_name = "FILE")]
    parent: Option<PathBuf>,
    /// The validation set: a new prompt like one of its prompts is dropped (it would leak).
    #[arg(long, value_name = "FILE")]
    validation_file: Option<PathBuf>,
    /// Two prompts whose character-3-gram similarity (MinHash) reaches this are the same.
    #[arg(long, default_value_t = 0.9)]
    threshold: f64,
}

/// Where a new record came from.
pub fn run(args: TeachArgs) -> anyhow::Result<()> {
    let template = args
        .template
        .clone()
        .unwrap_or_else(|| args.task.shared().default_template().to_owned());
    let then_template = match (&args.then_template, args.task.shared().then_template()) {
        (Some(_), None) => bail!("--then-template: only backtranslate and questions ask twice"),
        (Some(then), Some(_)) if !then.contains("{first}") => {
            bail!("--then-template: it must hold {{first}}, where the first answer goes")
        }
        (then, default) => then.clone().or(default.map(str::to_owned)),
    };
    let judge_template = args
        .judge_template
        .clone()
        .unwrap_or_else(|| JUDGE_TEMPLATE.to_owned());
    if args.keep == Keep::Judge && !judge_template.contains("{answers}") {
        bail!("--judge-template: it must hold {{answers}}, where the numbered answers go");
    }
    if !template.contains("{prompt}") {
        bail!("--template: it must hold {{prompt}}, where each record's prompt goes");
    }
    if args.samples == 0 || args.concurrency == 0 {
        bail!("--samples and --concurrency: give 1 or more");
    }
    if args.keep != Keep::All && (args.task != Task::Answer || args.samples < 2) {
        bail!("--keep: picks one of several --samples answers of --task answer");
    }
    if args.parent.is_some() && args.task != Task::Questions {
        bail!("--parent: only --task questions takes one (the others' FILE is the parent)");
    }
    if !(0.0..=1.0).contains(&args.threshold) {
        bail!("--threshold: give a number from 0 to 1");
    }
    // The records the output starts with (tasks that make prompts), and whether the dataset has a
    // history column (every new record then keeps one).
    let (parent, with_history) = match (args.task, &args.parent) {
        (Task::Questions, None) => (Vec::new(), false),
        (Task::Questions, Some(path)) | (_, Some(path)) => {
            let (records, report) = args.dataset.read_usable(path)?;
            (records, report.history_column)
        }
        (_, None) => {
            let (records, report) = args.dataset.read_usable(&args.file)?;
            (records, report.history_column)
        }
    };
    let validation = match &args.validation_file {
        Some(path) => args.dataset.read_usable(path)?.0,
        None => Vec::new(),
    };
    // What each question is about: the parent's records, or a document's passages (as records
    // whose prompt is the passage, conversations when the parent's are; `questions` replaces both
    // prompt and answer).
    let (records, documents): (Vec<Record>, Vec<Option<String>>) = match args.task {
        Task::Questions => {
            let conversations = parent.iter().any(|r| !r.messages.is_empty());
            documents::document_passages(&args.file)?
                .into_iter()
                .map(|(document, passage)| {
                    let mut record = Record {
                        prompt: passage,
                        response: String::new(),
                        history: Vec::new(),
                        messages: Vec::new(),
                    };
                    if conversations {
                        record.messages = record.conversation();
                    }
                    (record, Some(document))
                })
                .unzip()
        }
        _ => {
            let none = vec![None; parent.len()];
            (parent.clone(), none)
        }
    };
    let (mut records, mut documents) = (records, documents);
    if let Some(limit) = args.limit {
        records.truncate(limit);
        documents.truncate(limit);
    }
    let journal_path = journal::journal_path(&args.out);
    // Every answer so far: the journal's, then this run's as they come; the output is made
    // from them without reading the journal again.
    let mut entries = journal::read(&journal_path)?;
    let done = journal::answered(&entries);
    let before = journal::earlier_report(&args.out, &entries);
    let mut teacher = Teacher::new(
        &args.teacher_url,
        args.teacher_key.clone(),
        &args.teacher_model,
        args.requests_per_minute,
    );
    teacher.max_tokens = args.max_tokens;
    teacher.max_retries = args.max_retries;
    teacher.temperature = args.temperature.unwrap_or(match args.task {
        Task::Paraphrase => 0.8,
        _ => 0.0,
    });
    let second = then_template.as_deref();
    let provenance_template = match second {
        Some(second) => format!("{template}\n---\n{second}"),
        None => template.clone(),
    };
    let copies = if args.keep == Keep::All {
        args.samples
    } else {
        1
    };
    let work: VecDeque<(usize, usize)> = (1..=records.len())
        // Picking one answer of several asks for them all in one piece of work.
        .flat_map(|parent| (1..=copies).map(move |copy| (parent, copy)))
        .filter(|key| !done.contains(key))
        .collect();
    let work = Mutex::new(work);
    let mut journal_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&journal_path)
        .with_context(|| format!("opening {}", journal_path.display()))?;
    let mut report = TeachReport {
        parent_records: records.len() as u64,
        already_done: entries.len() as u64,
        ..TeachReport::default()
    };
    // Tokens and retries over every run of the job.
    let tally = |report: &mut TeachReport| {
        report.retries = before.retries + teacher.retries.load(Ordering::Relaxed);
        report.prompt_tokens = before.prompt_tokens + teacher.prompt_tokens.load(Ordering::Relaxed);
        report.completion_tokens =
            before.completion_tokens + teacher.completion_tokens.load(Ordering::Relaxed);
    };
    let (sender, receiver) = mpsc::channel::<anyhow::Result<Journaled>>();
    let outcome = std::thread::scope(|scope| -> anyhow::Result<()> {
        for _ in 0..args.concurrency {
            let sender = sender.clone();
            let (work, teacher, records, template) = (&work, &teacher, &records, &template);
            let (documents, provenance_template) = (&documents, &provenance_template);
            let (keep, samples, judge_template) = (args.keep, args.samples, &judge_template);
            let (file, task) = (&args.file, args.task);
            scope.spawn(move || loop {
                let Some((parent, copy)) = work.lock().pop_front() else {
                    return;
                };
                let record = &records[parent - 1];
                let seed = (copy > 1).then_some(copy as u64);
                let asked = if keep == Keep::All {
                    ask(teacher, task, template, second, record, seed).map(|a| (a, None))
                } else {
                    (1..=samples)
                        .map(|i| {
                            let seed = (i > 1).then_some(i as u64);
                            ask(teacher, task, template, second, record, seed)
                                .map(|(_, answer)| answer.unwrap_or_default())
                        })
                        .collect::<anyhow::Result<Vec<String>>>()
                        .and_then(|answers| {
                            let best = pick(teacher, keep, judge_template, record, &answers)?;
                            let picked = Picked {
                                answer: best + 1,
                                of: answers.len(),
                                by: format!("{keep:?}").to_lowercase(),
                            };
                            Ok((
                                (record.prompt.clone(), Some(answers[best].clone())),
                                Some(picked),
                            ))
                        })
                };
                let entry = asked
                    .map(|((prompt, response), picked)| {
                        let provenance = TeacherProvenance {
                            parent,
                            method: task.method().to_owned(),
                            copy,
                            teacher: teacher.model.clone(),
                            template: provenance_template.clone(),
                            document: documents[parent - 1].clone(),
                            picked,
                        };
                        let line = record_line(
                            record,
                            &prompt,
                            response.as_deref(),
                            Some(&provenance),
                            with_history,
                        );
                        Journaled {
                            parent,
                            copy,
                            prompt,
                            line,
                        }
                    })
                    .with_context(|| format!("{} record {parent}", file.display()));
                let failed = entry.is_err();
                if sender.send(entry).is_err() || failed {
                    // The writer stopped, or this record failed: the others stop too.
                    work.lock().clear();
                    return;
                }
            });
        }
        drop(sender);
        // Each answer one whole line, flushed at once: an interruption loses at most the line
        // being written, which the next run drops and asks again.
        for entry in receiver {
            let entry = entry?;
            journal::append(&mut journal_file, &journal_path, &entry)?;
            entries.push(entry);
            report.written += 1;
            tally(&mut report);
            journal::write_report(&args.out, &report)?;
        }
        Ok(())
    });
    tally(&mut report);
    if outcome.is_ok() {
        let made = journal::compose(
            entries,
            args.task
                .shared()
                .makes_prompts()
                .then_some((parent.as_slice(), with_history)),
            &validation,
            args.threshold,
        );
        journal::write_output(&args.out, &made.lines)?;
        report.kept = made.kept;
        report.dropped_duplicates = made.dropped_duplicates;
        report.dropped_leaking = made.dropped_leaking;
        report.parent_included = made.lines.len() as u64 - made.kept;
        report.finished = true;
    }
    journal::write_report(&args.out, &report)?;
    println!("{}", serde_json::to_string(&report)?);
    outcome
}
