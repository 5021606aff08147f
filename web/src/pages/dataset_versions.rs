//! Dataset versions on the datasets page: what a dataset is a version of, the form that augments
//! one (new prompts by rule, near-duplicates and validation leaks dropped), and an augmented
//! version's new records beside the prompts they were made from.

use glmtune_shared::api::{AugmentRequest, Dataset, Derivation};
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
    let id = dataset.id.clone();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let request = AugmentRequest {
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
            <button type="submit">"Augment"</button>
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
