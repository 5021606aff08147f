//! Dataset versions on the datasets page: what a dataset is a version of, the forms that augment
//! one (new prompts by rule, near-duplicates and validation leaks dropped) or have a teacher make
//! a version (its answers, rewordings, back-translations, rewritten answers, or questions about
//! documents), and a version's new records beside the parent records they were made from.

use glmtune_shared::api::{
    AugmentPreview, AugmentRequest, Dataset, Derivation, List, PreviewRecord, VersionChanges,
};
use glmtune_shared::teach::{
    TeachDocument, TeachJob, TeachJobState, TeachKeep, TeachRequest, TeachTask, Teacher,
    JUDGE_TEMPLATE,
};
use leptos::prelude::*;

use crate::api;
use crate::pages::{ErrorNote, Table};

/// "augmented from NAME" or "train part of NAME", for the list.
pub fn version_of(dataset: &Dataset, all: &[Dataset]) -> Option<String> {
    let parent = dataset.parent_id.as_ref()?;
    let name = all
        .iter()
        .find(|d| &d.id == parent)
        .map_or(parent.clone(), |d| d.name.clone());
    Some(match &dataset.derivation {
        Some(Derivation::Augment { new_records, .. }) => {
            format!("augmented from {name} (+{new_records})")
        }
        Some(Derivation::Split { part, .. }) => format!("{part} part of {name}"),
        Some(Derivation::Teach {
            teacher, request, ..
        }) => format!("{} by {teacher} from {name}", request.task.as_str()),
        None => format!("from {name}"),
    })
}

/// How a version was made, in a sentence: what was kept and dropped, and a teacher's tokens.
pub fn derivation_words(dataset: &Dataset) -> Option<String> {
    Some(match dataset.derivation.as_ref()? {
        Derivation::Split {
            part,
            validation_fraction,
            seed,
        } => format!("The {part} part of a split ({validation_fraction} validation, seed {seed})."),
        Derivation::Augment {
            new_records,
            dropped_duplicates,
            dropped_leaking,
            ..
        } => format!(
            "{new_records} new records by rule; {dropped_duplicates} near-duplicates and {dropped_leaking} validation leaks dropped."
        ),
        Derivation::Teach {
            teacher,
            request,
            report,
            ..
        } => {
            let mut words = format!("Made by the teacher {teacher} ({}).", request.task.as_str());
            if let Some(r) = report {
                words.push_str(&format!(
                    " {} new records; {} near-duplicates and {} validation leaks dropped; {} prompt and {} completion tokens, {} retries.",
                    r.kept, r.dropped_duplicates, r.dropped_leaking, r.prompt_tokens, r.completion_tokens, r.retries
                ));
            }
            words
        }
    })
}

const METHODS: [&str; 4] = ["delete", "swap", "insert", "punctuation"];

/// Augments `dataset`; `on_made` gets the new version.
#[component]
pub fn AugmentForm(
    dataset: Dataset,
    others: Signal<Vec<Dataset>>,
    on_made: Callback<Dataset>,
) -> impl IntoView {
    let picked = METHODS.map(|m| (m, RwSignal::new(true)));
    let copies = RwSignal::new("1".to_owned());
    let seed = RwSignal::new("42".to_owned());
    let validation = RwSignal::new(String::new());
    let error = RwSignal::new(None::<api::Failure>);
    let previewed = RwSignal::new(None::<AugmentPreview>);
    let id = dataset.id.clone();
    let request = move || AugmentRequest {
        methods: picked
            .iter()
            .filter(|(_, on)| on.get_untracked())
            .map(|(m, _)| (*m).to_owned())
            .collect(),
        copies: copies.get_untracked().trim().parse().unwrap_or(1),
        rate: 0.1,
        seed: seed.get_untracked().trim().parse().unwrap_or(42),
        threshold: 0.9,
        validation_dataset: Some(validation.get_untracked()).filter(|v| !v.is_empty()),
    };
    let preview_path = format!("/api/v1/datasets/{id}/augment/preview");
    let preview = move |_| {
        let (path, request) = (preview_path.clone(), request());
        leptos::task::spawn_local(async move {
            match api::post::<_, AugmentPreview>(&path, &request).await {
                Ok(seen) => {
                    error.set(None);
                    previewed.set(Some(seen));
                }
                Err(failure) => error.set(Some(failure)),
            }
        });
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let request = request();
        let path = format!("/api/v1/datasets/{id}/augment");
        leptos::task::spawn_local(async move {
            match api::post::<_, Dataset>(&path, &request).await {
                Ok(made) => {
                    error.set(None);
                    on_made.run(made);
                }
                Err(failure) => error.set(Some(failure)),
            }
        });
    };
    view! {
        <form class="augment" on:submit=submit>
            <h3>"Augment: a new version with new prompts"</h3>
            <div class="row">
                {picked.iter().map(|(name, on)| {
                    let (name, on) = (*name, *on);
                    view! { <label>{name}<input type="checkbox" name=format!("augment_{name}") bind:checked=on /></label> }
                }).collect_view()}
                <label>"Copies"<input name="augment_copies" bind:value=copies inputmode="numeric" /></label>
                <label>"Seed"<input name="augment_seed" bind:value=seed inputmode="numeric" /></label>
                <label>"Drop what leaks into"
                    <select name="augment_validation" prop:value=move || validation.get() on:change=move |ev| validation.set(event_target_value(&ev))>
                        <option value="">"no validation set"</option>
                        <For each=move || others.get() key=|d| d.id.clone() let:d><option value=d.id.clone()>{d.name.clone()}</option></For>
                    </select>
                </label>
            </div>
            <div class="row">
                <button type="button" name="augment_preview" on:click=preview>"Preview"</button>
                <button type="submit">"Augment"</button>
            </div>
            {move || previewed.get().map(|p| view! {
                <p class="muted">{format!("Would add {} records; {} near-duplicates and {} leaks dropped.", p.new_records, p.dropped_duplicates, p.dropped_leaking)}</p>
                <Table class="augment-preview" headers=&["Method", "Made from", "New prompt"]>
                    {p.examples.into_iter().map(|e| view! {
                        <tr><td>{e.method}</td><td>{e.from}</td><td>{e.to}</td></tr>
                    }).collect_view()}
                </Table>
            })}
            {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
        </form>
    }
}

/// A version's new records beside the parent records they were made from (the server's
/// `/changes`): a new prompt beside the prompt it rewords, a new answer beside the answer it
/// replaces, a question beside its document.
#[component]
pub fn VersionDiff(dataset: Dataset) -> impl IntoView {
    let path = format!("/api/v1/datasets/{}/changes?limit=50", dataset.id);
    let changes = LocalResource::new(move || {
        let path = path.clone();
        async move { api::get::<VersionChanges>(&path).await }
    });
    view! {
        {move || changes.get().map(|result| match result {
            Err(failure) => view! { <ErrorNote error=failure /> }.into_any(),
            Ok(changes) => view! { <ChangesTable changes=changes /> }.into_any(),
        })}
    }
}

/// New records beside what they were made from.
#[component]
fn ChangesTable(changes: VersionChanges) -> impl IntoView {
    view! {
        <h3>{format!("New records ({} of {} shown)", changes.changes.len(), changes.total)}</h3>
        <Table class="version-diff" headers=&["Method", "Made from", "New record"]>
            {changes.changes.into_iter().map(|c| {
                let from = match (&c.before, &c.origin.document) {
                    (Some(before), _) => view! { <Side record=before.clone() other=c.after.clone() /> }.into_any(),
                    (None, Some(document)) => view! { <span class="muted">{format!("{document}, passage {}", c.origin.parent)}</span> }.into_any(),
                    (None, None) => view! { <span class="muted">{format!("record {}", c.origin.parent)}</span> }.into_any(),
                };
                let to = match &c.before {
                    Some(before) => view! { <Side record=c.after.clone() other=before.clone() /> }.into_any(),
                    None => view! { <Side record=c.after.clone() other=c.after.clone() /> }.into_any(),
                };
                view! { <tr><td>{c.origin.method.clone()}</td><td>{from}</td><td>{to}</td></tr> }
            }).collect_view()}
        </Table>
    }
}

/// A record's prompt and answer, the part that differs from `other`'s marked.
#[component]
fn Side(record: PreviewRecord, other: PreviewRecord) -> impl IntoView {
    let mark = |same: bool| if same { "same" } else { "changed" };
    view! {
        <div class=mark(record.prompt == other.prompt)>{record.prompt.clone()}</div>
        <div class=format!("answer {}", mark(record.response == other.response))>{format!("→ {}", record.response)}</div>
    }
}

/// What a finished or running teaching job reported, in words.
fn report_words(job: &TeachJob) -> String {
    let mut words = format!("{}: {} answers", job.state.as_str(), job.written);
    if let Some(r) = &job.report {
        words.push_str(&format!(
            "; {} prompt and {} completion tokens, {} retries",
            r.prompt_tokens, r.completion_tokens, r.retries
        ));
        if r.finished {
            words.push_str(&format!(
                "; kept {}, dropped {} near-duplicates and {} validation leaks",
                r.kept, r.dropped_duplicates, r.dropped_leaking
            ));
        }
    }
    words
}

/// Reads the picked text or Markdown files.
async fn read_documents(files: web_sys::FileList) -> Result<Vec<TeachDocument>, api::Failure> {
    let mut documents = Vec::new();
    for i in 0..files.length() {
        let Some(file) = files.get(i) else { continue };
        let text = wasm_bindgen_futures::JsFuture::from(file.text())
            .await
            .map_err(|_| api::Failure::local(format!("{}: not readable as text", file.name())))?;
        documents.push(TeachDocument {
            name: file.name(),
            text: text.as_string().unwrap_or_default(),
        });
    }
    Ok(documents)
}

/// The task a `teach_task` option names.
fn task_of(value: &str) -> TeachTask {
    match value {
        "paraphrase" => TeachTask::Paraphrase,
        "backtranslate" => TeachTask::Backtranslate,
        "rewrite" => TeachTask::Rewrite,
        "questions" => TeachTask::Questions,
        _ => TeachTask::Answer,
    }
}

/// A template as edited, sent only when it differs from the task's own.
fn edited(text: String, default: Option<&str>) -> Option<String> {
    (Some(text.as_str()) != default && !text.trim().is_empty()).then_some(text)
}

/// Has a registered teacher make a new version of `dataset` (its answers, rewordings,
/// back-translations, rewritten answers, or questions about documents), each question's
/// template shown and editable; "Preview" asks about the first 5 records and shows what they
/// make, "Teach" follows the whole job and hands the version to `on_made`.
#[component]
pub fn TeachForm(
    dataset: Dataset,
    others: Signal<Vec<Dataset>>,
    on_made: Callback<Dataset>,
) -> impl IntoView {
    let teachers = LocalResource::new(|| api::get::<List<Teacher>>("/api/v1/teachers"));
    let teacher = RwSignal::new(String::new());
    let task = RwSignal::new(TeachTask::Answer);
    let samples = RwSignal::new("1".to_owned());
    let keep = RwSignal::new("all".to_owned());
    let template = RwSignal::new(TeachTask::Answer.default_template().to_owned());
    let then_template = RwSignal::new(String::new());
    let judge_template = RwSignal::new(JUDGE_TEMPLATE.to_owned());
    let validation = RwSignal::new(String::new());
    let documents = RwSignal::new(Vec::<TeachDocument>::new());
    let max_tokens = RwSignal::new("64".to_owned());
    let progress = RwSignal::new(None::<String>);
    let previewed = RwSignal::new(None::<VersionChanges>);
    let error = RwSignal::new(None::<api::Failure>);
    let id = dataset.id.clone();
    let on_task = move |ev: leptos::ev::Event| {
        // A new task shows its own questions, ready to edit.
        let picked = task_of(&event_target_value(&ev));
        task.set(picked);
        template.set(picked.default_template().to_owned());
        then_template.set(picked.then_template().unwrap_or_default().to_owned());
    };
    let on_documents = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let Some(files) = input.files() else { return };
        leptos::task::spawn_local(async move {
            match read_documents(files).await {
                Ok(read) => documents.set(read),
                Err(failure) => error.set(Some(failure)),
            }
        });
    };
    let request = move |preview: Option<u64>| {
        let task = task.get_untracked();
        let keep = match keep.get_untracked().as_str() {
            "rouge" => TeachKeep::Rouge,
            "judge" => TeachKeep::Judge,
            _ => TeachKeep::All,
        };
        TeachRequest {
            teacher: teacher.get_untracked(),
            task,
            samples: samples.get_untracked().trim().parse().unwrap_or(1),
            template: edited(template.get_untracked(), Some(task.default_template())),
            max_tokens: max_tokens.get_untracked().trim().parse().unwrap_or(256),
            keep,
            documents: if task == TeachTask::Questions {
                documents.get_untracked()
            } else {
                Vec::new()
            },
            validation_dataset: Some(validation.get_untracked()).filter(|v| !v.is_empty()),
            threshold: 0.9,
            then_template: task
                .then_template()
                .and_then(|own| edited(then_template.get_untracked(), Some(own))),
            judge_template: (keep == TeachKeep::Judge)
                .then(|| edited(judge_template.get_untracked(), Some(JUDGE_TEMPLATE)))
                .flatten(),
            preview,
        }
    };
    let run = Callback::new(move |request: TeachRequest| {
        let path = format!("/api/v1/datasets/{id}/teach");
        leptos::task::spawn_local(async move {
            let job = match api::post::<_, TeachJob>(&path, &request).await {
                Ok(job) => job,
                Err(failure) => return error.set(Some(failure)),
            };
            error.set(None);
            previewed.set(None);
            // Followed until it ends: the answers so far and their tokens, then the new
            // version, or the preview's records.
            loop {
                api::sleep(500).await;
                let now =
                    match api::get::<TeachJob>(&format!("/api/v1/teach-jobs/{}", job.id)).await {
                        Ok(now) => now,
                        Err(failure) => return error.set(Some(failure)),
                    };
                progress.set(Some(report_words(&now)));
                match now.state {
                    TeachJobState::Succeeded => {
                        if let Some(preview) = now.preview {
                            previewed.set(Some(preview));
                        } else if let Some(made) = now.made_dataset {
                            match api::get::<Dataset>(&format!("/api/v1/datasets/{made}")).await {
                                Ok(made) => on_made.run(made),
                                Err(failure) => error.set(Some(failure)),
                            }
                        }
                        return;
                    }
                    TeachJobState::Failed => {
                        return error.set(Some(api::Failure::local(
                            now.error
                                .unwrap_or_else(|| "the teaching job failed".into()),
                        )));
                    }
                    _ => {}
                }
            }
        });
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        run.run(request(None));
    };
    let preview = move |_| run.run(request(Some(5)));
    let two_questions = move || task.get().then_template().is_some();
    view! {
        <form class="teach" on:submit=submit>
            <h3>"Teach: a new version made by a teacher"</h3>
            <div class="row">
                <label>"Teacher"
                    <select name="teach_teacher" required prop:value=move || teacher.get() on:change=move |ev| teacher.set(event_target_value(&ev))>
                        <option value="">"choose… (register one under Teachers)"</option>
                        {move || teachers.get().and_then(Result::ok).map(|list| list.data.into_iter()
                            .map(|t| view! { <option value=t.id.clone()>{format!("{} ({})", t.name, t.model)}</option> })
                            .collect_view())}
                    </select>
                </label>
                <label>"Task"
                    <select name="teach_task" prop:value=move || task.get().as_str() on:change=on_task>
                        <option value="answer">"its answers (distillation)"</option>
                        <option value="paraphrase">"reworded prompts"</option>
                        <option value="backtranslate">"back-translated prompts"</option>
                        <option value="rewrite">"answers rewritten in the domain's style"</option>
                        <option value="questions">"questions about documents"</option>
                    </select>
                </label>
                <label>"Samples"<input name="teach_samples" bind:value=samples inputmode="numeric" /></label>
                <label>"Keep"
                    <select name="teach_keep" prop:value=move || keep.get() on:change=move |ev| keep.set(event_target_value(&ev))>
                        <option value="all">"every sample"</option>
                        <option value="rouge">"the closest to the record's answer (ROUGE-L)"</option>
                        <option value="judge">"the one the teacher judges best"</option>
                    </select>
                </label>
                <label>"Max tokens"<input name="teach_max_tokens" bind:value=max_tokens inputmode="numeric" /></label>
                <label>"Drop what leaks into"
                    <select name="teach_validation" prop:value=move || validation.get() on:change=move |ev| validation.set(event_target_value(&ev))>
                        <option value="">"no validation set"</option>
                        <For each=move || others.get() key=|d| d.id.clone() let:d><option value=d.id.clone()>{d.name.clone()}</option></For>
                    </select>
                </label>
            </div>
            {move || (task.get() == TeachTask::Questions).then(|| view! {
                <label>"Documents (.md, .txt)"
                    <input type="file" name="teach_documents" multiple accept=".md,.txt,text/plain,text/markdown" on:change=on_documents />
                </label>
                <p class="muted">{move || format!("{} documents read", documents.get().len())}</p>
            })}
            <label class="wide">"What the teacher is asked ({prompt}: the record's prompt or the passage; {response}: its answer)"
                <textarea name="teach_template" rows="2" bind:value=template></textarea>
            </label>
            {move || two_questions().then(|| view! {
                <label class="wide">"Then ({first}: the first answer)"
                    <textarea name="teach_then_template" rows="2" bind:value=then_template></textarea>
                </label>
            })}
            {move || (keep.get() == "judge").then(|| view! {
                <label class="wide">"The judge's question ({answers}: the answers, numbered)"
                    <textarea name="teach_judge_template" rows="2" bind:value=judge_template></textarea>
                </label>
            })}
            <div class="row">
                <button type="button" name="teach_preview" on:click=preview>"Preview (5 records)"</button>
                <button type="submit">"Teach"</button>
            </div>
            <p class="status" aria-live="polite">{move || progress.get()}</p>
            {move || previewed.get().map(|changes| view! { <ChangesTable changes=changes /> })}
            {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
        </form>
    }
}
