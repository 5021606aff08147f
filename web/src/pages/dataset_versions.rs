//! Dataset versions on the datasets page: what a dataset is a version of, the forms that augment
//! one (new prompts by rule, near-duplicates and validation leaks dropped) or have a teacher make
//! a version (its answers, rewordings or back-translations), and an augmented version's new
//! records beside the prompts they were made from.

use glmtune_shared::api::{AugmentPreview, AugmentRequest, Dataset, Derivation, List};
use glmtune_shared::teach::{TeachJob, TeachJobState, TeachRequest, TeachTask, Teacher};
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

const METHODS: [&str; 4] = ["delete", "swap", "insert", "punctuation"];

/// Augments `dataset`; `on_made` gets the new version.
#[component]
pub fn AugmentForm(
    dataset: Dataset,
    others: Vec<Dataset>,
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
                    <select name="augment_validation" on:change=move |ev| validation.set(event_target_value(&ev))>
                        <option value="">"no validation set"</option>
                        {others.into_iter().map(|d| view! { <option value=d.id.clone()>{d.name.clone()}</option> }).collect_view()}
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

/// A new record of an augmented version, as its file holds it.
#[derive(Clone, serde::Deserialize)]
struct Row {
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    provenance: Option<Provenance>,
}

#[derive(Clone, serde::Deserialize)]
struct Provenance {
    parent: usize,
    method: String,
}

/// An augmented version's new records beside the prompt each was made from.
#[component]
pub fn VersionDiff(dataset: Dataset) -> impl IntoView {
    let path = format!("/api/v1/datasets/{}/content", dataset.id);
    let rows = LocalResource::new(move || {
        let path = path.clone();
        async move {
            let bytes = api::get_bytes(&path).await?;
            let rows: Vec<Row> = String::from_utf8_lossy(&bytes)
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            Ok::<_, api::Failure>(rows)
        }
    });
    view! {
        {move || rows.get().map(|result| match result {
            Err(failure) => view! { <ErrorNote error=failure /> }.into_any(),
            Ok(rows) => {
                let changes: Vec<(String, String, String)> = rows.iter().filter_map(|r| {
                    let p = r.provenance.as_ref()?;
                    let parent = rows.get(p.parent.checked_sub(1)?)?;
                    Some((p.method.clone(), parent.prompt.clone(), r.prompt.clone()))
                }).take(50).collect();
                view! {
                    <h3>{format!("New records ({} shown)", changes.len())}</h3>
                    <Table class="version-diff" headers=&["Method", "Made from", "New prompt"]>
                        {changes.into_iter().map(|(method, from, to)| view! {
                            <tr><td>{method}</td><td>{from}</td><td>{to}</td></tr>
                        }).collect_view()}
                    </Table>
                }.into_any()
            }
        })}
    }
}

/// Has a registered teacher make a new version of `dataset`; follows the job and hands the
/// version to `on_made`.
#[component]
pub fn TeachForm(dataset: Dataset, on_made: Callback<Dataset>) -> impl IntoView {
    let teachers = LocalResource::new(|| api::get::<List<Teacher>>("/api/v1/teachers"));
    let teacher = RwSignal::new(String::new());
    let task = RwSignal::new("answer".to_owned());
    let max_tokens = RwSignal::new("64".to_owned());
    let progress = RwSignal::new(None::<String>);
    let error = RwSignal::new(None::<api::Failure>);
    let id = dataset.id.clone();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let request = TeachRequest {
            teacher: teacher.get_untracked(),
            task: match task.get_untracked().as_str() {
                "paraphrase" => TeachTask::Paraphrase,
                "backtranslate" => TeachTask::Backtranslate,
                "rewrite" => TeachTask::Rewrite,
                _ => TeachTask::Answer,
            },
            samples: 1,
            template: None,
            max_tokens: max_tokens.get_untracked().trim().parse().unwrap_or(256),
        };
        let path = format!("/api/v1/datasets/{id}/teach");
        leptos::task::spawn_local(async move {
            let job = match api::post::<_, TeachJob>(&path, &request).await {
                Ok(job) => job,
                Err(failure) => return error.set(Some(failure)),
            };
            error.set(None);
            // Followed until it ends: the records written so far, then the new version.
            loop {
                api::sleep(500).await;
                let now =
                    match api::get::<TeachJob>(&format!("/api/v1/teach-jobs/{}", job.id)).await {
                        Ok(now) => now,
                        Err(failure) => return error.set(Some(failure)),
                    };
                progress.set(Some(format!(
                    "{}: {} records",
                    now.state.as_str(),
                    now.written
                )));
                match now.state {
                    TeachJobState::Succeeded => {
                        if let Some(made) = now.made_dataset {
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
    };
    view! {
        <form class="teach" on:submit=submit>
            <h3>"Teach: a new version made by a teacher"</h3>
            <div class="row">
                <label>"Teacher"
                    <select name="teach_teacher" required on:change=move |ev| teacher.set(event_target_value(&ev))>
                        <option value="">"choose… (register one under Teachers)"</option>
                        {move || teachers.get().and_then(Result::ok).map(|list| list.data.into_iter()
                            .map(|t| view! { <option value=t.id.clone()>{format!("{} ({})", t.name, t.model)}</option> })
                            .collect_view())}
                    </select>
                </label>
                <label>"Task"
                    <select name="teach_task" on:change=move |ev| task.set(event_target_value(&ev))>
                        <option value="answer">"its answers (distillation)"</option>
                        <option value="paraphrase">"reworded prompts"</option>
                        <option value="backtranslate">"back-translated prompts"</option>
                        <option value="rewrite">"answers rewritten in the domain's style"</option>
                    </select>
                </label>
                <label>"Max tokens"<input name="teach_max_tokens" bind:value=max_tokens inputmode="numeric" /></label>
            </div>
            <button type="submit">"Teach"</button>
            <p class="status" aria-live="polite">{move || progress.get()}</p>
            {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
        </form>
    }
}
