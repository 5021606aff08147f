//! Runs: the list, and a new-run form with the server's presets (the official recipe, a quick
//! try, domain templates with a suggested system prompt) and every official flag under "Advanced"
//! (`settings_form`).

use glmtune_shared::api::{CreateRun, List, Run, RunState};
use glmtune_shared::worker::Worker;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_navigate;

use crate::api;
use crate::pages::settings_form::{DataPicker, PresetPicker, SettingsForm};
use crate::pages::{loaded, ErrorNote, Table};

#[component]
pub fn Runs() -> impl IntoView {
    let runs = LocalResource::new(|| api::get::<List<Run>>("/api/v1/runs"));
    // Which machine trained each run: this server, or a worker by its name.
    let workers = LocalResource::new(|| api::get::<List<Worker>>("/api/v1/workers"));
    let trained_on = move |worker: &Option<String>| match worker {
        None => "this server".to_owned(),
        Some(id) => workers
            .get()
            .and_then(Result::ok)
            .and_then(|list| list.data.into_iter().find(|w| &w.id == id))
            .map_or_else(|| id.clone(), |w| format!("worker {}", w.name)),
    };
    let data = DataPicker::new();
    let presets = PresetPicker::new();
    let form = SettingsForm::new();
    // Distil from a finished run (its adapter on the base, unquantized, is the teacher).
    let teacher = RwSignal::new(String::new());
    let error = RwSignal::new(None::<api::Failure>);
    // Runs ticked for the compare view.
    let picked = RwSignal::new(Vec::<String>::new());
    let values = form.clone();
    let navigate = use_navigate();
    let compare = {
        let navigate = navigate.clone();
        move |_| {
            let ids = picked.get_untracked().join(",");
            navigate(&format!("/compare/{ids}"), Default::default());
        }
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let settings = values.settings(presets.system_prompt());
        let request = CreateRun {
            model: data.model.get_untracked(),
            train_dataset: data.train.get_untracked(),
            validation_dataset: Some(data.validation.get_untracked()).filter(|v| !v.is_empty()),
            preset: Some(presets.name()),
            settings,
            init_run: None,
            teacher_run: Some(teacher.get_untracked()).filter(|t| !t.is_empty()),
        };
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            match api::post::<_, Run>("/api/v1/runs", &request).await {
                Ok(run) => navigate(&format!("/runs/{}", run.id), Default::default()),
                Err(failure) => error.set(Some(failure)),
            }
        });
    };
    view! {
        <section>
            <h1>"Runs"</h1>
            <form class="card" on:submit=submit>
                <h2>"New run"</h2>
                <div class="row">
                    {data.view(false)}
                    {presets.select()}
                    <label>"Distil from (teacher)"
                        <select name="teacher_run" on:change=move |ev| teacher.set(event_target_value(&ev))>
                            <option value="">"none: learn the labels"</option>
                            {move || runs.get().and_then(Result::ok).map(|list| list.data.into_iter()
                                .filter(|r| r.state == RunState::Succeeded)
                                .map(|r| view! { <option value=r.id.clone()>{format!("{} ({})", r.id, r.model)}</option> })
                                .collect_view())}
                        </select>
                    </label>
                </div>
                {presets.system_prompt_field()}
                {form.view(presets.placeholder())}
                <button type="submit">"Start run"</button>
                {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
            </form>
            <h2>"All runs"</h2>
            {loaded(runs, move |list| view! {
                    <Table headers=&["", "Run", "Model", "Preset", "State", "Step", "Trained on"]>
                            {list.data.into_iter().map(|r| {
                                let id = r.id.clone();
                                let toggle = move |ev: leptos::ev::Event| {
                                    let on = event_target_checked(&ev);
                                    picked.update(|p| {
                                        p.retain(|x| *x != id);
                                        if on { p.push(id.clone()); }
                                    });
                                };
                                view! {
                                <tr>
                                    <td><input type="checkbox" name="compare_run" aria-label=format!("compare {}", r.id) on:change=toggle /></td>
                                    <td><A href=format!("/runs/{}", r.id)>{r.id.clone()}</A></td>
                                    <td>{r.model.clone()}</td>
                                    <td>{r.settings.source_prefix.clone().filter(|s| !s.is_empty()).map(|s| format!("system: {s}"))}</td>
                                    <td><span class=format!("state {}", r.state.as_str())>{r.state.as_str()}</span></td>
                                    <td>{format!("{} / {}", r.step, r.max_steps.map_or("?".into(), |m| m.to_string()))}</td>
                                    <td class="trained-on">{let worker = r.worker.clone(); move || trained_on(&worker)}</td>
                                </tr>
                            }}).collect_view()}
                        </Table>
                }.into_any())}
            <button name="compare" disabled=move || picked.with(|p| p.len() < 2)
                on:click=compare>
                "Compare selected runs"
            </button>
        </section>
    }
}
