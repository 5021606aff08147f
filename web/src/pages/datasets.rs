//! Datasets: a file picked or dropped is checked and measured in the browser first (the engine's
//! reader and the model's tokenizer, compiled to wasm), every bad record listed by line and field,
//! token-length histograms against the truncation limits; then uploaded with progress, previewed,
//! split into training and validation, and augmented into new versions (`dataset_versions`).

use std::sync::Arc;

use glmtune_engine::data::TokenStats;
use glmtune_shared::api::{
    tree_order, Dataset, Derivation, List, ModelInfo, SplitRequest, SplitResponse,
};
use leptos::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::api;
use crate::chart::Histogram;
use crate::measure::{self, Checked, MAX_LOCAL_BYTES};
use crate::pages::dataset_versions::{
    derivation_words, version_of, AugmentForm, TeachForm, VersionDiff,
};
use crate::pages::{loaded, model_options, ErrorNote, Table};

/// A file chosen for upload, with its bytes once read.
#[derive(Clone)]
struct Picked {
    file: web_sys::File,
    bytes: Option<Arc<Vec<u8>>>,
}

#[component]
pub fn Datasets() -> impl IntoView {
    let datasets = LocalResource::new(|| api::get::<List<Dataset>>("/api/v1/datasets"));
    let models = LocalResource::new(|| api::get::<List<ModelInfo>>("/api/v1/models"));
    let model = RwSignal::new(String::new());
    // The first registered model measures by default; "" means no statistics.
    let chosen_default = StoredValue::new(false);
    Effect::new(move |_| {
        if let Some(Ok(list)) = models.get() {
            if !chosen_default.get_value() {
                chosen_default.set_value(true);
                if let Some(first) = list.data.first() {
                    model.set(first.name.clone());
                }
            }
        }
    });
    let tokenizer = LocalResource::new(move || {
        let name = model.get();
        async move {
            if name.is_empty() {
                return Ok(None);
            }
            measure::tokenizer(&name).await.map(Some)
        }
    });
    let source_length = RwSignal::new("64".to_owned());
    let target_length = RwSignal::new("64".to_owned());
    let picked = RwSignal::new_local(None::<Picked>);
    let selected = RwSignal::new(None::<Dataset>);
    let error = RwSignal::new(None::<api::Failure>);
    let status = RwSignal::new(String::new());
    let progress = RwSignal::new(None::<(f64, f64)>);

    let limit = |text: String| text.trim().parse::<usize>().ok();
    let checked = Memo::new(move |_| -> Option<Result<Checked, api::Failure>> {
        let picked = picked.get()?;
        let bytes = picked.bytes?;
        let tokenizer = match tokenizer.get()? {
            Ok(tokenizer) => tokenizer,
            Err(failure) => return Some(Err(failure)),
        };
        let (Some(source), Some(target)) = (limit(source_length.get()), limit(target_length.get()))
        else {
            return Some(Err(api::Failure::local(
                "max_source_length and max_target_length must be whole numbers",
            )));
        };
        Some(measure::check(
            &bytes,
            &picked.file.name(),
            tokenizer.as_deref(),
            source,
            target,
        ))
    });

    let pick = move |file: web_sys::File| {
        error.set(None);
        progress.set(None);
        let large = file.size() > MAX_LOCAL_BYTES;
        status.set(if large {
            format!(
                "{} is {:.0} MB: too large to check in this tab; the server checks it on upload.",
                file.name(),
                file.size() / 1e6
            )
        } else {
            format!("Reading {}…", file.name())
        });
        picked.set(Some(Picked {
            file: file.clone(),
            bytes: None,
        }));
        if large {
            return;
        }
        leptos::task::spawn_local(async move {
            match JsFuture::from(file.array_buffer()).await {
                Ok(buffer) => {
                    let bytes = js_sys::Uint8Array::new(&buffer).to_vec();
                    status.set(format!(
                        "Checked {} ({} bytes) in this browser; nothing is uploaded yet.",
                        file.name(),
                        bytes.len()
                    ));
                    picked.set(Some(Picked {
                        file,
                        bytes: Some(Arc::new(bytes)),
                    }));
                }
                Err(e) => error.set(Some(e.into())),
            }
        });
    };
    let send = move |_| {
        let Some(Picked { file, .. }) = picked.get_untracked() else {
            return;
        };
        error.set(None);
        progress.set(Some((0.0, file.size())));
        leptos::task::spawn_local(async move {
            let mut path = format!("/api/v1/datasets?name={}", api::encode(&file.name()));
            let model = model.get_untracked();
            if !model.is_empty() {
                path.push_str(&format!(
                    "&model={}&max_source_length={}&max_target_length={}",
                    api::encode(&model),
                    api::encode(&source_length.get_untracked()),
                    api::encode(&target_length.get_untracked())
                ));
            }
            let on_progress = move |sent, total| progress.set(Some((sent, total)));
            match api::upload::<Dataset>(&path, &file, on_progress).await {
                Ok(dataset) => {
                    status.set(format!(
                        "Stored {} ({} records).",
                        dataset.name, dataset.records
                    ));
                    picked.set(None);
                    selected.set(Some(dataset));
                    datasets.refetch();
                }
                Err(failure) => error.set(Some(failure)),
            }
            progress.set(None);
        });
    };
    let on_pick = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        if let Some(file) = input.files().and_then(|files| files.get(0)) {
            pick(file);
        }
        input.set_value("");
    };
    let dragging = RwSignal::new(false);
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(false);
        if let Some(file) = ev
            .data_transfer()
            .and_then(|d| d.files())
            .and_then(|f| f.get(0))
        {
            pick(file);
        }
    };
    // Valid, or too large to check here: the server has the last word either way.
    let can_send = move || {
        let unchecked_large = picked.with(|p| {
            p.as_ref()
                .is_some_and(|p| p.bytes.is_none() && p.file.size() > MAX_LOCAL_BYTES)
        });
        progress.get().is_none() && (unchecked_large || matches!(checked.get(), Some(Ok(_))))
    };
    let split = move |dataset: Dataset| {
        leptos::task::spawn_local(async move {
            let request = SplitRequest {
                validation_fraction: 0.1,
                seed: 42,
            };
            match api::post::<_, SplitResponse>(
                &format!("/api/v1/datasets/{}/split", dataset.id),
                &request,
            )
            .await
            {
                Ok(parts) => {
                    status.set(format!(
                        "Split into {} training and {} validation records.",
                        parts.train.records, parts.validation.records
                    ));
                    datasets.refetch();
                }
                Err(failure) => error.set(Some(failure)),
            }
        });
    };

    view! {
        <section>
            <h1>"Datasets"</h1>
            <div class="card">
                <div class="row">
                    <label>"Measure tokens with"
                        <select prop:value=move || model.get() on:change=move |ev| model.set(event_target_value(&ev))>
                            <option value="">"(no model: skip statistics)"</option>
                            {model_options(models)}
                        </select>
                    </label>
                    <label>"max_source_length"<input type="number" min="3" bind:value=source_length /></label>
                    <label>"max_target_length"<input type="number" min="3" bind:value=target_length /></label>
                </div>
                <label class=move || if dragging.get() { "drop dragging" } else { "drop" }
                    on:dragover=move |ev: leptos::ev::DragEvent| { ev.prevent_default(); dragging.set(true); }
                    on:dragleave=move |_| dragging.set(false)
                    on:drop=on_drop>
                    "Drop a JSON-lines or JSON file here, or choose one. It is checked in this browser before anything is uploaded."
                    <input type="file" name="dataset" accept=".json,.jsonl,application/json" on:change=on_pick />
                </label>
                <p class="status" aria-live="polite">{move || status.get()}</p>
                {move || (!model.get().is_empty() && tokenizer.get().is_none()).then(|| view! {
                    <p class="muted">"Loading the tokenizer…"</p>
                })}
                {move || checked.get().map(|result| match result {
                    Ok(checked) => view! { <LocalCheck checked=checked /> }.into_any(),
                    Err(failure) => view! { <ErrorNote error=failure /> }.into_any(),
                })}
                <div class="row">
                    <button name="upload" disabled=move || !can_send() on:click=send>"Upload"</button>
                    {move || progress.get().map(|(sent, total)| {
                        let percent = if total > 0.0 { 100.0 * sent / total } else { 0.0 };
                        view! {
                            <progress max="100" value=percent></progress>
                            <span class="muted">{format!("Uploading {percent:.0}% ({sent:.0} of {total:.0} bytes)")}</span>
                        }
                    })}
                </div>
                {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
            </div>
            // The detail is made again only when another dataset is picked: the list's refetch
            // (after a version is made) updates the forms' dataset choices in place, so the
            // version's diff and the forms' inputs stay as they are.
            {move || selected.get().map(|d| {
                let id = d.id.clone();
                let others = Signal::derive(move || {
                    datasets
                        .get()
                        .and_then(Result::ok)
                        .map(|l| l.data.into_iter().filter(|o| o.id != id).collect())
                        .unwrap_or_default()
                });
                let on_made = Callback::new(move |made: Dataset| {
                    status.set(format!("Made {} ({} records).", made.name, made.records));
                    selected.set(Some(made));
                    datasets.refetch();
                });
                view! { <DatasetDetail dataset=d others=others on_made=on_made /> }
            })}
            <h2>"Stored datasets"</h2>
            {loaded(datasets, move |list| view! {
                    <Table class="datasets" headers=&["Name", "Version of", "Format", "Records", "Bytes", "Id", ""]>
                            // Each dataset's versions under it, indented by generation.
                            {tree_order(&list.data, |d| d.id.as_str(), |d| d.parent_id.as_deref()).into_iter().map(|(depth, i)| {
                                let d = &list.data[i];
                                let (show, cut) = (d.clone(), d.clone());
                                let version = version_of(d, &list.data);
                                let indent = format!("padding-left: {}em", 1.5 * depth as f64);
                                view! {
                                    <tr class:version={depth > 0}>
                                        <td style=indent>{(depth > 0).then_some("↳ ")}<button class="link" on:click=move |_| selected.set(Some(show.clone()))>{d.name.clone()}</button></td>
                                        <td>{version}</td>
                                        <td>{d.format.clone()}</td>
                                        <td>{d.records}</td>
                                        <td>{d.bytes}</td>
                                        <td class="mono">{d.id.clone()}</td>
                                        <td><button on:click=move |_| split(cut.clone())>"Split 90/10"</button></td>
                                    </tr>
                                }
                            }).collect_view()}
                        </Table>
                }.into_any())}
        </section>
    }
}

/// The histogram rows of a distribution.
fn buckets(stats: &glmtune_engine::data::LengthStats) -> Vec<(f64, f64, f64)> {
    stats
        .histogram
        .iter()
        .map(|&(low, high, count)| (low as f64, high as f64, count as f64))
        .collect()
}

/// Prompt and answer length histograms with the truncation limits marked.
#[component]
fn TokenCharts(stats: TokenStats) -> impl IntoView {
    view! {
        <div class="charts">
            <Histogram title="Prompt tokens".into() buckets=buckets(&stats.prompt_tokens)
                limit=Some(stats.prompt_truncation.limit as f64) />
            <Histogram title="Answer tokens".into() buckets=buckets(&stats.answer_tokens)
                limit=Some(stats.answer_truncation.limit as f64) />
        </div>
        <p class="truncation">{format!(
            "{} of {} prompts and {} answers would be truncated (max_source_length {}, max_target_length {}).",
            stats.prompt_truncation.count, stats.prompt_tokens.count, stats.answer_truncation.count,
            stats.max_source_length, stats.max_target_length
        )}</p>
    }
}

/// What the browser found in a picked file.
#[component]
fn LocalCheck(checked: Checked) -> impl IntoView {
    view! {
        <div class="local-check">
            <p>{format!(
                "{} records in format {}; {} skipped as empty.",
                checked.records, checked.format, checked.skipped_empty
            )}</p>
            {checked.stats.map(|stats| view! { <TokenCharts stats=stats /> })}
        </div>
    }
}

#[component]
fn DatasetDetail(
    dataset: Dataset,
    others: Signal<Vec<Dataset>>,
    on_made: Callback<Dataset>,
) -> impl IntoView {
    // Versions with new records made from the parent's: augmented and taught ones.
    let augmented = matches!(
        dataset.derivation,
        Some(Derivation::Augment { .. } | Derivation::Teach { .. })
    );
    let (diffed, augmenting, teaching) = (dataset.clone(), dataset.clone(), dataset.clone());
    let stats = dataset
        .stats
        .clone()
        .and_then(|s| serde_json::from_value::<TokenStats>(s).ok());
    view! {
        <div class="card detail">
            <h2>{dataset.name.clone()}</h2>
            <p>{format!("{} records in format {}; {} skipped as empty; sha256 {}", dataset.records, dataset.format, dataset.skipped_empty, &dataset.sha256[..12])}</p>
            {derivation_words(&dataset).map(|words| view! { <p class="derivation">{words}</p> })}
            {stats.map(|stats| view! { <TokenCharts stats=stats /> })}
            <Table class="preview" headers=&["Prompt", "Response", "History turns"]>
                    {dataset.preview.iter().map(|r| view! {
                        <tr>
                            <td>{r.prompt.clone()}</td>
                            <td>{r.response.clone()}</td>
                            <td>{r.history.len()}</td>
                        </tr>
                    }).collect_view()}
                </Table>
            {augmented.then(|| view! { <VersionDiff dataset=diffed /> })}
            <AugmentForm dataset=augmenting others=others on_made=on_made />
            <TeachForm dataset=teaching others=others on_made=on_made />
        </div>
    }
}
