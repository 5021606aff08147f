//! Datasets: upload (file picker or drag and drop), every bad record listed by line and field,
//! token-length histograms against the truncation limits, a preview, and a train/validation split.

use glmtune_shared::api::{Dataset, List, ModelInfo, SplitRequest, SplitResponse};
use leptos::prelude::*;

use crate::api;
use crate::chart::Histogram;
use crate::pages::{loaded, ErrorNote, Table};

#[component]
pub fn Datasets() -> impl IntoView {
    let datasets = LocalResource::new(|| api::get::<List<Dataset>>("/api/v1/datasets"));
    let models = LocalResource::new(|| api::get::<List<ModelInfo>>("/api/v1/models"));
    let model = RwSignal::new(String::new());
    let source_length = RwSignal::new("64".to_owned());
    let target_length = RwSignal::new("64".to_owned());
    let selected = RwSignal::new(None::<Dataset>);
    let error = RwSignal::new(None::<api::Failure>);
    let status = RwSignal::new(String::new());

    let send = move |file: web_sys::File| {
        error.set(None);
        status.set(format!(
            "Uploading {} ({} bytes)…",
            file.name(),
            file.size()
        ));
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
            match api::upload::<Dataset>(&path, &file).await {
                Ok(dataset) => {
                    status.set(format!(
                        "Stored {} ({} records).",
                        dataset.name, dataset.records
                    ));
                    selected.set(Some(dataset));
                    datasets.refetch();
                }
                Err(failure) => {
                    status.set(String::new());
                    error.set(Some(failure));
                }
            }
        });
    };
    let on_pick = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        if let Some(file) = input.files().and_then(|files| files.get(0)) {
            send(file);
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
            send(file);
        }
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
                        <select on:change=move |ev| model.set(event_target_value(&ev))>
                            <option value="">"(no model: skip statistics)"</option>
                            {move || models.get().and_then(Result::ok).map(|list| list.data.into_iter().map(|m| {
                                let name = m.name.clone();
                                view! { <option value=name.clone()>{name.clone()}</option> }
                            }).collect_view())}
                        </select>
                    </label>
                    <label>"max_source_length"<input type="number" min="3" bind:value=source_length /></label>
                    <label>"max_target_length"<input type="number" min="3" bind:value=target_length /></label>
                </div>
                <label class=move || if dragging.get() { "drop dragging" } else { "drop" }
                    on:dragover=move |ev: leptos::ev::DragEvent| { ev.prevent_default(); dragging.set(true); }
                    on:dragleave=move |_| dragging.set(false)
                    on:drop=on_drop>
                    "Drop a JSON-lines or JSON file here, or choose one"
                    <input type="file" name="dataset" accept=".json,.jsonl,application/json" on:change=on_pick />
                </label>
                <p class="status" aria-live="polite">{move || status.get()}</p>
                {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
            </div>
            {move || selected.get().map(|d| view! { <DatasetDetail dataset=d /> })}
            <h2>"Stored datasets"</h2>
            {loaded(datasets, move |list| view! {
                    <Table class="datasets" headers=&["Name", "Format", "Records", "Bytes", "Id", ""]>
                            {list.data.into_iter().map(|d| {
                                let (show, cut) = (d.clone(), d.clone());
                                view! {
                                    <tr>
                                        <td><button class="link" on:click=move |_| selected.set(Some(show.clone()))>{d.name.clone()}</button></td>
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

fn buckets(stats: &serde_json::Value) -> Vec<(f64, f64, f64)> {
    stats["histogram"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| Some((r[0].as_f64()?, r[1].as_f64()?, r[2].as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

#[component]
fn DatasetDetail(dataset: Dataset) -> impl IntoView {
    let stats = dataset.stats.clone();
    view! {
        <div class="card detail">
            <h2>{dataset.name.clone()}</h2>
            <p>{format!("{} records in format {}; {} skipped as empty; sha256 {}", dataset.records, dataset.format, dataset.skipped_empty, &dataset.sha256[..12])}</p>
            {stats.map(|s| {
                let source = s["max_source_length"].as_f64();
                let target = s["max_target_length"].as_f64();
                view! {
                    <div class="charts">
                        <Histogram title="Prompt tokens".into() buckets=buckets(&s["prompt_tokens"]) limit=source.map(|l| l - 1.0) />
                        <Histogram title="Answer tokens".into() buckets=buckets(&s["answer_tokens"]) limit=target.map(|l| l - 2.0) />
                    </div>
                    <p class="truncation">{format!(
                        "{} prompts and {} answers would be truncated.",
                        s["prompt_truncation"]["count"], s["answer_truncation"]["count"]
                    )}</p>
                }
            })}
            <Table class="preview" headers=&["Prompt", "Response", "History turns"]>
                    {dataset.preview.iter().map(|r| view! {
                        <tr>
                            <td>{r["prompt"].as_str().unwrap_or("").to_owned()}</td>
                            <td>{r["response"].as_str().unwrap_or("").to_owned()}</td>
                            <td>{r["history"].as_array().map_or(0, Vec::len)}</td>
                        </tr>
                    }).collect_view()}
                </Table>
        </div>
    }
}
